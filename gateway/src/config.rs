//! Configuration: TOML file, `SWITCHBOARD_<SECTION>__<KEY>` environment overrides, `env:` /
//! `file:` secret references, and validation that names the key of every problem.
//!
//! Loading never stops at the first problem: it collects them all (`check-config` prints
//! every one). Secrets are resolved into [`Secret`] values at load time and never printed.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};
use switchboard_core::connector::{CREDENTIAL_FIELDS, ConnectorRegistry, Credentials};
use switchboard_core::model::Platform;
use switchboard_core::rate::RatePolicy;
use switchboard_core::secret::{Cipher, Secret};
use toml::Value;

/// One thing wrong with the configuration, at a TOML key like `bots[1].token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub redis: Option<RedisConfig>,
    pub security: SecurityConfig,
    pub supervisor: SupervisorConfig,
    pub outbox: OutboxConfig,
    pub feed: FeedConfig,
    pub webhooks: WebhooksConfig,
    pub log: LogConfig,
    pub tenants: Vec<TenantConfig>,
    pub bots: Vec<BotConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Base URL the platforms reach us at (webhook registration).
    pub public_url: Option<String>,
    pub body_limit_bytes: usize,
    /// How long shutdown waits for in-flight sends.
    pub shutdown_grace_ms: u64,
    /// API requests per tenant key (`none` for no limit).
    pub tenant_rate_limit: Option<switchboard_core::rate::Rate>,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub url: Secret,
    pub max_connections: u32,
    pub sqlite_synchronous: String,
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: Secret,
}

#[derive(Debug, Clone, Default)]
pub struct SecurityConfig {
    pub master_key: Option<Secret>,
    /// Keys of earlier rotations, still accepted for reading.
    pub previous_master_keys: Vec<Secret>,
    pub admin_token: Option<Secret>,
    /// Let connectors fetch media URLs on loopback and private networks (SSRF guard off).
    pub allow_private_media_urls: bool,
    /// Hosts (names or addresses) outbound webhooks may reach although they resolve to a
    /// private or local address. Default: this machine (`localhost`, `127.0.0.1`, `::1`).
    pub webhook_allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub restart_initial_ms: u64,
    pub restart_max_ms: u64,
    pub healthy_reset_ms: u64,
    pub probe_interval_ms: u64,
    /// How often a bot paused for an exhausted balance checks whether it is back.
    pub paused_recheck_ms: u64,
}

#[derive(Debug, Clone)]
pub struct OutboxConfig {
    pub max_attempts: u32,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    pub send_timeout_ms: u64,
    pub max_in_flight_per_bot: usize,
    /// Messages a bot's outbox may hold before new sends get 429.
    pub max_queued_per_bot: usize,
}

#[derive(Debug, Clone)]
pub struct FeedConfig {
    pub buffer: usize,
    pub ping_interval_ms: u64,
    pub send_timeout_ms: u64,
    pub write_gap_ms: u64,
}

/// Outbound webhooks to the business's app.
#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    /// Per delivery: the app must answer 2xx within it.
    pub timeout_ms: u64,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// How long a failed delivery is retried before it is a dead letter.
    pub retry_for_s: u64,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: String,
    pub level: String,
}

#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub id: String,
    pub name: String,
    pub time_zone: String,
    pub api_keys: Vec<Secret>,
}

/// A bot from the config file: common fields, non-secret settings, resolved credentials.
#[derive(Debug, Clone)]
pub struct BotConfig {
    pub id: String,
    pub tenant: String,
    pub platform: Platform,
    pub enabled: bool,
    pub settings: Map<String, Json>,
    pub credentials: Credentials,
}

/// Where secrets and overrides come from (the process environment, or a test's map).
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
    fn vars(&self) -> Vec<(String, String)>;
}

pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

impl Environment for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

pub const ENV_PREFIX: &str = "SWITCHBOARD_";

/// Reads and validates the config file at `path`.
pub fn load(
    path: &Path,
    env: &dyn Environment,
    registry: &ConnectorRegistry,
) -> Result<Config, Vec<ConfigProblem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigProblem {
            key: "(file)".into(),
            message: format!("cannot read {}: {e}", path.display()),
        }]
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &base, env, registry)
}

/// Parses and validates config text; `base` resolves relative `file:` references.
pub fn parse(
    text: &str,
    base: &Path,
    env: &dyn Environment,
    registry: &ConnectorRegistry,
) -> Result<Config, Vec<ConfigProblem>> {
    let mut root: Value = toml::from_str(text).map_err(|e| {
        vec![ConfigProblem {
            key: "(file)".into(),
            message: format!("not valid TOML: {}", e.message()),
        }]
    })?;
    let mut problems = Vec::new();
    apply_env_overrides(&mut root, env, &mut problems);
    let mut r = Reader {
        env,
        base,
        problems,
    };
    let config = r.config(&root, registry);
    if r.problems.is_empty() {
        Ok(config)
    } else {
        Err(r.problems)
    }
}

/// `SWITCHBOARD_SERVER__LISTEN=...` sets `server.listen`; `SWITCHBOARD_BOTS__0__TOKEN` sets
/// `bots[0].token`. Values are read as TOML when they parse as a TOML value (numbers,
/// booleans, arrays), else as strings; a value with a leading `+` (a phone number) is always
/// a string, and string settings take an all-digit value as the string it was written as.
fn apply_env_overrides(root: &mut Value, env: &dyn Environment, problems: &mut Vec<ConfigProblem>) {
    let mut vars = env.vars();
    vars.sort();
    for (name, raw) in vars {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if !path.contains("__") {
            continue; // SWITCHBOARD_MASTER_KEY and friends are secrets referenced by env:, not overrides.
        }
        let segments: Vec<String> = path.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let value = if raw.starts_with('+') {
            None
        } else {
            toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
        }
        .unwrap_or_else(|| Value::String(raw.clone()));
        if let Err(message) = set_path(root, &segments, value) {
            problems.push(ConfigProblem {
                key: name.clone(),
                message,
            });
        }
    }
}

/// A value read as text: a string, or an integer as the digits it was written as (an
/// all-digit token or id given by an environment override parses as a TOML integer).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

fn set_path(node: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let (head, rest) = path.split_first().ok_or("empty key")?;
    let child = match node {
        Value::Table(t) => {
            if rest.is_empty() {
                t.insert(head.clone(), value);
                return Ok(());
            }
            let next_is_index = rest[0].parse::<usize>().is_ok();
            t.entry(head.clone()).or_insert_with(|| {
                if next_is_index {
                    Value::Array(Vec::new())
                } else {
                    Value::Table(toml::Table::new())
                }
            })
        }
        Value::Array(a) => {
            let i: usize = head
                .parse()
                .map_err(|_| format!("`{head}` is not an array index"))?;
            if i > a.len() {
                return Err(format!(
                    "index {i} skips entries (the array has {})",
                    a.len()
                ));
            }
            if i == a.len() {
                a.push(Value::Table(toml::Table::new()));
            }
            if rest.is_empty() {
                a[i] = value;
                return Ok(());
            }
            &mut a[i]
        }
        _ => return Err(format!("`{head}` is under a value that is not a table")),
    };
    set_path(child, rest, value)
}

struct Reader<'a> {
    env: &'a dyn Environment,
    base: &'a Path,
    problems: Vec<ConfigProblem>,
}

fn key(parent: &str, k: &str) -> String {
    if parent.is_empty() {
        k.to_string()
    } else {
        format!("{parent}.{k}")
    }
}

pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Reader<'_> {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn table<'v>(
        &mut self,
        root: &'v Value,
        name: &str,
        known: &[&str],
    ) -> Option<&'v toml::Table> {
        match root.get(name) {
            None => None,
            Some(Value::Table(t)) => {
                for k in t.keys() {
                    if !known.contains(&k.as_str()) {
                        self.problem(
                            key(name, k),
                            format!("unknown key (expected one of: {})", known.join(", ")),
                        );
                    }
                }
                Some(t)
            }
            Some(_) => {
                self.problem(name, "expected a table");
                None
            }
        }
    }

    fn string(&mut self, t: Option<&toml::Table>, parent: &str, k: &str) -> Option<String> {
        let v = t.and_then(|t| t.get(k))?;
        let s = text(v);
        if s.is_none() {
            self.problem(
                key(parent, k),
                format!("expected a string, got {}", v.type_str()),
            );
        }
        s
    }

    fn int(
        &mut self,
        t: Option<&toml::Table>,
        parent: &str,
        k: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> u64 {
        match t.and_then(|t| t.get(k)) {
            None => default,
            Some(Value::Integer(i)) if *i >= min as i64 && *i <= max as i64 => *i as u64,
            Some(Value::Integer(i)) => {
                self.problem(
                    key(parent, k),
                    format!("must be between {min} and {max}, got {i}"),
                );
                default
            }
            Some(other) => {
                self.problem(
                    key(parent, k),
                    format!("expected an integer, got {}", other.type_str()),
                );
                default
            }
        }
    }

    fn bool(&mut self, t: Option<&toml::Table>, parent: &str, k: &str, default: bool) -> bool {
        match t.and_then(|t| t.get(k)) {
            None => default,
            Some(Value::Boolean(b)) => *b,
            Some(other) => {
                self.problem(
                    key(parent, k),
                    format!("expected true or false, got {}", other.type_str()),
                );
                default
            }
        }
    }

    /// Resolves a secret: `env:VAR`, `file:PATH` (relative to the config file) or a literal.
    fn secret(&mut self, at: &str, raw: &str) -> Option<Secret> {
        if let Some(var) = raw.strip_prefix("env:") {
            match self.env.var(var) {
                Some(v) if !v.is_empty() => Some(Secret::new(v)),
                Some(_) => {
                    self.problem(at, format!("environment variable {var} is empty"));
                    None
                }
                None => {
                    self.problem(at, format!("environment variable {var} is not set"));
                    None
                }
            }
        } else if let Some(file) = raw.strip_prefix("file:") {
            let path = if Path::new(file).is_absolute() {
                PathBuf::from(file)
            } else {
                self.base.join(file)
            };
            match std::fs::read_to_string(&path) {
                Ok(v) if !v.trim().is_empty() => {
                    Some(Secret::new(v.trim_end_matches(['\n', '\r'])))
                }
                Ok(_) => {
                    self.problem(at, format!("secret file {} is empty", path.display()));
                    None
                }
                Err(e) => {
                    self.problem(
                        at,
                        format!("cannot read secret file {}: {e}", path.display()),
                    );
                    None
                }
            }
        } else if raw.is_empty() {
            self.problem(at, "must not be empty");
            None
        } else {
            Some(Secret::new(raw))
        }
    }

    fn secret_field(&mut self, t: Option<&toml::Table>, parent: &str, k: &str) -> Option<Secret> {
        let raw = self.string(t, parent, k)?;
        self.secret(&key(parent, k), &raw)
    }

    fn config(&mut self, root: &Value, registry: &ConnectorRegistry) -> Config {
        const SECTIONS: &[&str] = &[
            "server",
            "storage",
            "redis",
            "security",
            "supervisor",
            "outbox",
            "feed",
            "webhooks",
            "log",
            "tenants",
            "bots",
        ];
        if let Value::Table(t) = root {
            for k in t.keys() {
                if !SECTIONS.contains(&k.as_str()) {
                    self.problem(
                        k.clone(),
                        format!("unknown section (expected one of: {})", SECTIONS.join(", ")),
                    );
                }
            }
        }
        let server = self.server(root);
        let storage = self.storage(root);
        let redis = self.table(root, "redis", &["url"]).cloned();
        let redis = redis.and_then(|t| {
            let url = self.secret_field(Some(&t), "redis", "url");
            if url.is_none() && t.get("url").is_none() {
                self.problem("redis.url", "is required when [redis] is present");
            }
            url.map(|url| RedisConfig { url })
        });
        let security = self.security(root);
        let s = self
            .table(
                root,
                "supervisor",
                &[
                    "restart_initial_ms",
                    "restart_max_ms",
                    "healthy_reset_ms",
                    "probe_interval_ms",
                    "paused_recheck_ms",
                ],
            )
            .cloned();
        let s = s.as_ref();
        let supervisor = SupervisorConfig {
            restart_initial_ms: self.int(
                s,
                "supervisor",
                "restart_initial_ms",
                1_000,
                1,
                3_600_000,
            ),
            restart_max_ms: self.int(s, "supervisor", "restart_max_ms", 300_000, 1, 86_400_000),
            healthy_reset_ms: self.int(s, "supervisor", "healthy_reset_ms", 60_000, 1, 86_400_000),
            probe_interval_ms: self.int(
                s,
                "supervisor",
                "probe_interval_ms",
                60_000,
                10,
                86_400_000,
            ),
            paused_recheck_ms: self.int(
                s,
                "supervisor",
                "paused_recheck_ms",
                60_000,
                10,
                86_400_000,
            ),
        };
        let o = self
            .table(
                root,
                "outbox",
                &[
                    "max_attempts",
                    "retry_initial_ms",
                    "retry_max_ms",
                    "send_timeout_ms",
                    "max_in_flight_per_bot",
                    "max_queued_per_bot",
                ],
            )
            .cloned();
        let o = o.as_ref();
        let outbox = OutboxConfig {
            max_attempts: self.int(o, "outbox", "max_attempts", 3, 1, 100) as u32,
            retry_initial_ms: self.int(o, "outbox", "retry_initial_ms", 1_000, 1, 3_600_000),
            retry_max_ms: self.int(o, "outbox", "retry_max_ms", 60_000, 1, 86_400_000),
            send_timeout_ms: self.int(o, "outbox", "send_timeout_ms", 30_000, 100, 600_000),
            max_in_flight_per_bot: self.int(o, "outbox", "max_in_flight_per_bot", 64, 1, 10_000)
                as usize,
            max_queued_per_bot: self.int(o, "outbox", "max_queued_per_bot", 100_000, 1, 100_000_000)
                as usize,
        };
        let f = self
            .table(
                root,
                "feed",
                &[
                    "buffer",
                    "ping_interval_ms",
                    "send_timeout_ms",
                    "write_gap_ms",
                ],
            )
            .cloned();
        let f = f.as_ref();
        let feed = FeedConfig {
            buffer: self.int(f, "feed", "buffer", 4096, 16, 1_000_000) as usize,
            ping_interval_ms: self.int(f, "feed", "ping_interval_ms", 20_000, 10, 3_600_000),
            send_timeout_ms: self.int(f, "feed", "send_timeout_ms", 10_000, 10, 600_000),
            write_gap_ms: self.int(f, "feed", "write_gap_ms", 5, 0, 1_000),
        };
        let w = self
            .table(
                root,
                "webhooks",
                &[
                    "timeout_ms",
                    "retry_initial_ms",
                    "retry_max_ms",
                    "retry_for_s",
                ],
            )
            .cloned();
        let w = w.as_ref();
        let webhooks = WebhooksConfig {
            timeout_ms: self.int(w, "webhooks", "timeout_ms", 10_000, 100, 120_000),
            retry_initial_ms: self.int(w, "webhooks", "retry_initial_ms", 1_000, 10, 3_600_000),
            retry_max_ms: self.int(w, "webhooks", "retry_max_ms", 3_600_000, 10, 86_400_000),
            retry_for_s: self.int(w, "webhooks", "retry_for_s", 86_400, 1, 30 * 86_400),
        };
        let l = self.table(root, "log", &["format", "level"]).cloned();
        let format = self
            .string(l.as_ref(), "log", "format")
            .unwrap_or_else(|| "text".into());
        if format != "text" && format != "json" {
            self.problem(
                "log.format",
                format!("must be \"text\" or \"json\", got {format:?}"),
            );
        }
        let log = LogConfig {
            format,
            level: self
                .string(l.as_ref(), "log", "level")
                .unwrap_or_else(|| "info".into()),
        };
        let tenants = self.tenants(root);
        let bots = self.bots(root, &tenants, registry);
        if security.master_key.is_none() && bots.iter().any(|b| !b.credentials.is_empty()) {
            self.problem(
                "security.master_key",
                "is required to store bot credentials (32 random bytes, base64; e.g. `openssl rand -base64 32`)",
            );
        }
        Config {
            server,
            storage,
            redis,
            security,
            supervisor,
            outbox,
            feed,
            webhooks,
            log,
            tenants,
            bots,
        }
    }

    fn server(&mut self, root: &Value) -> ServerConfig {
        let t = self
            .table(
                root,
                "server",
                &[
                    "listen",
                    "public_url",
                    "body_limit_bytes",
                    "shutdown_grace_ms",
                    "tenant_rate_limit",
                ],
            )
            .cloned();
        let t = t.as_ref();
        let listen = self
            .string(t, "server", "listen")
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen.parse().unwrap_or_else(|_| {
            self.problem(
                "server.listen",
                format!("expected host:port like \"127.0.0.1:8080\", got {listen:?}"),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let public_url = self.string(t, "server", "public_url");
        if let Some(u) = &public_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            self.problem(
                "server.public_url",
                format!("must be an http(s) URL, got {u:?}"),
            );
        }
        ServerConfig {
            listen,
            public_url: public_url.map(|u| u.trim_end_matches('/').to_string()),
            body_limit_bytes: self.int(t, "server", "body_limit_bytes", 1 << 20, 1024, 64 << 20)
                as usize,
            shutdown_grace_ms: self.int(t, "server", "shutdown_grace_ms", 10_000, 0, 600_000),
            tenant_rate_limit: match self.string(t, "server", "tenant_rate_limit").as_deref() {
                Some("none") => None,
                Some(r) => match switchboard_core::rate::Rate::parse(r) {
                    Ok(rate) => Some(rate),
                    Err(e) => {
                        self.problem("server.tenant_rate_limit", e);
                        None
                    }
                },
                None => switchboard_core::rate::Rate::parse("100/s burst 200").ok(),
            },
        }
    }

    fn storage(&mut self, root: &Value) -> StorageConfig {
        let t = self
            .table(
                root,
                "storage",
                &["url", "max_connections", "sqlite_synchronous"],
            )
            .cloned();
        let t = t.as_ref();
        let url = self
            .secret_field(t, "storage", "url")
            .unwrap_or_else(|| Secret::new("sqlite://data/switchboard.db"));
        let u = url.expose();
        if !(u.starts_with("sqlite:")
            || u.starts_with("postgres://")
            || u.starts_with("postgresql://"))
        {
            self.problem("storage.url", "must start with sqlite:// or postgres://");
        }
        let sync = self
            .string(t, "storage", "sqlite_synchronous")
            .unwrap_or_else(|| "FULL".into());
        if !["FULL", "NORMAL", "EXTRA"].contains(&sync.to_ascii_uppercase().as_str()) {
            self.problem(
                "storage.sqlite_synchronous",
                format!("must be FULL, NORMAL or EXTRA, got {sync:?}"),
            );
        }
        StorageConfig {
            url,
            max_connections: self.int(t, "storage", "max_connections", 8, 2, 1000) as u32,
            sqlite_synchronous: sync,
        }
    }

    fn security(&mut self, root: &Value) -> SecurityConfig {
        let t = self
            .table(
                root,
                "security",
                &[
                    "master_key",
                    "previous_master_keys",
                    "admin_token",
                    "allow_private_media_urls",
                    "webhook_allowed_hosts",
                ],
            )
            .cloned();
        let t = t.as_ref();
        let master_key = self.secret_field(t, "security", "master_key");
        if let Some(k) = &master_key
            && let Err(e) = Cipher::from_base64(k.expose())
        {
            self.problem("security.master_key", e.to_string());
        }
        let mut previous = Vec::new();
        match t.and_then(|t| t.get("previous_master_keys")) {
            None => {}
            Some(Value::Array(a)) => {
                for (i, v) in a.iter().enumerate() {
                    let at = format!("security.previous_master_keys[{i}]");
                    match v.as_str() {
                        Some(raw) => {
                            if let Some(s) = self.secret(&at, raw) {
                                if let Err(e) = Cipher::from_base64(s.expose()) {
                                    self.problem(at, e.to_string());
                                }
                                previous.push(s);
                            }
                        }
                        None => self.problem(at, "expected a string"),
                    }
                }
            }
            Some(_) => self.problem(
                "security.previous_master_keys",
                "expected an array of strings",
            ),
        }
        let admin_token = self.secret_field(t, "security", "admin_token");
        if let Some(tok) = &admin_token
            && tok.expose().len() < 16
        {
            self.problem("security.admin_token", "must be at least 16 characters");
        }
        let webhook_allowed_hosts = match t.and_then(|t| t.get("webhook_allowed_hosts")) {
            None => vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            Some(Value::Array(a)) => {
                let mut hosts = Vec::new();
                for (i, v) in a.iter().enumerate() {
                    match v.as_str() {
                        Some(h) if !h.trim().is_empty() => hosts.push(h.trim().to_owned()),
                        _ => self.problem(
                            format!("security.webhook_allowed_hosts[{i}]"),
                            "expected a host name or an IP address",
                        ),
                    }
                }
                hosts
            }
            Some(_) => {
                self.problem(
                    "security.webhook_allowed_hosts",
                    "expected an array of host names or IP addresses",
                );
                Vec::new()
            }
        };
        SecurityConfig {
            master_key,
            previous_master_keys: previous,
            admin_token,
            allow_private_media_urls: self.bool(t, "security", "allow_private_media_urls", false),
            webhook_allowed_hosts,
        }
    }

    fn tenants(&mut self, root: &Value) -> Vec<TenantConfig> {
        let mut out: Vec<TenantConfig> = Vec::new();
        let list = match root.get("tenants") {
            None => return out,
            Some(Value::Array(a)) => a.clone(),
            Some(_) => {
                self.problem("tenants", "expected [[tenants]] entries");
                return out;
            }
        };
        for (i, v) in list.iter().enumerate() {
            let at = format!("tenants[{i}]");
            let Value::Table(t) = v else {
                self.problem(at, "expected a table");
                continue;
            };
            for k in t.keys() {
                if !["id", "name", "time_zone", "api_keys"].contains(&k.as_str()) {
                    self.problem(
                        key(&at, k),
                        "unknown key (expected one of: id, name, time_zone, api_keys)",
                    );
                }
            }
            let id = self.string(Some(t), &at, "id").unwrap_or_default();
            if !valid_id(&id) {
                self.problem(
                    key(&at, "id"),
                    format!("must match [a-z0-9-]{{1,64}}, got {id:?}"),
                );
            } else if out.iter().any(|o| o.id == id) {
                self.problem(key(&at, "id"), format!("tenant {id:?} is defined twice"));
            }
            let name = self
                .string(Some(t), &at, "name")
                .unwrap_or_else(|| id.clone());
            let time_zone = self
                .string(Some(t), &at, "time_zone")
                .unwrap_or_else(|| "UTC".into());
            if switchboard_core::store::parse_time_zone(&time_zone).is_none() {
                self.problem(
                    key(&at, "time_zone"),
                    format!("{time_zone:?} is not an IANA time zone (like \"Africa/Nairobi\")"),
                );
            }
            let mut api_keys = Vec::new();
            match t.get("api_keys") {
                None => {}
                Some(Value::Array(a)) => {
                    for (j, k) in a.iter().enumerate() {
                        let kat = format!("{at}.api_keys[{j}]");
                        match k.as_str() {
                            Some(raw) => {
                                if let Some(s) = self.secret(&kat, raw) {
                                    if s.expose().len() < 16 {
                                        self.problem(
                                            kat,
                                            "API keys must be at least 16 characters",
                                        );
                                    } else {
                                        api_keys.push(s);
                                    }
                                }
                            }
                            None => self.problem(kat, "expected a string"),
                        }
                    }
                }
                Some(_) => self.problem(key(&at, "api_keys"), "expected an array of strings"),
            }
            out.push(TenantConfig {
                id,
                name,
                time_zone,
                api_keys,
            });
        }
        out
    }

    fn bots(
        &mut self,
        root: &Value,
        tenants: &[TenantConfig],
        registry: &ConnectorRegistry,
    ) -> Vec<BotConfig> {
        let mut out: Vec<BotConfig> = Vec::new();
        let list = match root.get("bots") {
            None => return out,
            Some(Value::Array(a)) => a.clone(),
            Some(_) => {
                self.problem("bots", "expected [[bots]] entries");
                return out;
            }
        };
        for (i, v) in list.iter().enumerate() {
            let at = format!("bots[{i}]");
            let Value::Table(t) = v else {
                self.problem(at, "expected a table");
                continue;
            };
            let id = self.string(Some(t), &at, "id").unwrap_or_default();
            if !valid_id(&id) {
                self.problem(
                    key(&at, "id"),
                    format!("must match [a-z0-9-]{{1,64}}, got {id:?}"),
                );
            } else if out.iter().any(|o| o.id == id) {
                self.problem(key(&at, "id"), format!("bot {id:?} is defined twice"));
            }
            let tenant = self.string(Some(t), &at, "tenant").unwrap_or_default();
            if !tenants.iter().any(|x| x.id == tenant) {
                self.problem(
                    key(&at, "tenant"),
                    format!("names tenant {tenant:?}, which no [[tenants]] entry defines"),
                );
            }
            let platform_raw = self.string(Some(t), &at, "platform").unwrap_or_default();
            let Some(platform) = Platform::parse(&platform_raw) else {
                let all: Vec<&str> = Platform::ALL.iter().map(|p| p.as_str()).collect();
                self.problem(
                    key(&at, "platform"),
                    format!("must be one of {}, got {platform_raw:?}", all.join(", ")),
                );
                continue;
            };
            let enabled = self.bool(Some(t), &at, "enabled", true);
            let mut settings = Map::new();
            let mut credentials = BTreeMap::new();
            for (k, v) in t {
                match k.as_str() {
                    "id" | "tenant" | "platform" | "enabled" => {}
                    k if CREDENTIAL_FIELDS.contains(&k) => match text(v) {
                        Some(raw) => {
                            if let Some(s) = self.secret(&key(&at, k), &raw) {
                                credentials.insert(k.to_string(), s);
                            }
                        }
                        None => self.problem(
                            key(&at, k),
                            "expected a string (a literal, env:VAR or file:PATH)",
                        ),
                    },
                    _ => {
                        settings.insert(k.clone(), toml_to_json(v));
                    }
                }
            }
            if let Some(rl) = settings.get("rate_limit") {
                match rl.as_object() {
                    Some(m) => {
                        if let Err(errs) = RatePolicy::default().with_overrides(m) {
                            for (k, e) in errs {
                                self.problem(format!("{at}.rate_limit.{k}"), e);
                            }
                        }
                    }
                    None => self.problem(
                        key(&at, "rate_limit"),
                        "expected a table like { per_chat = \"1/s\" }",
                    ),
                }
            }
            if let Some(factory) = registry.get(platform) {
                for (k, e) in factory.validate(&settings, &credentials) {
                    self.problem(key(&at, &k), e);
                }
            }
            out.push(BotConfig {
                id,
                tenant,
                platform,
                enabled,
                settings,
                credentials,
            });
        }
        out
    }
}

/// TOML values as JSON (settings are stored and served as JSON).
pub fn toml_to_json(v: &Value) -> Json {
    match v {
        Value::String(s) => Json::String(s.clone()),
        Value::Integer(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Value::Boolean(b) => Json::Bool(*b),
        Value::Datetime(d) => Json::String(d.to_string()),
        Value::Array(a) => Json::Array(a.iter().map(toml_to_json).collect()),
        Value::Table(t) => Json::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn problems(text: &str, e: &HashMap<String, String>) -> Vec<String> {
        parse(text, Path::new("."), e, &ConnectorRegistry::new())
            .err()
            .unwrap_or_default()
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn empty_config_gets_the_documented_defaults() {
        let c = parse("", Path::new("."), &env(&[]), &ConnectorRegistry::new()).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.storage.url.expose(), "sqlite://data/switchboard.db");
        assert_eq!(c.server.body_limit_bytes, 1 << 20);
        assert_eq!(c.supervisor.restart_initial_ms, 1000);
        assert_eq!(c.outbox.max_attempts, 3);
        assert!(c.bots.is_empty());
    }

    #[test]
    fn env_overrides_keep_phone_numbers_and_all_digit_secrets_as_strings() {
        let e = env(&[("SWITCHBOARD_SECURITY__ADMIN_TOKEN", "12345678901234567890")]);
        let c = parse("", Path::new("."), &e, &ConnectorRegistry::new()).unwrap();
        assert_eq!(
            c.security
                .admin_token
                .as_ref()
                .map(|s| s.expose().to_owned()),
            Some("12345678901234567890".to_owned())
        );
        let mut root = Value::Table(toml::Table::new());
        let mut problems = Vec::new();
        apply_env_overrides(
            &mut root,
            &env(&[("SWITCHBOARD_BOTS__0__FROM", "+15550001111")]),
            &mut problems,
        );
        assert_eq!(
            root["bots"][0]["from"],
            Value::String("+15550001111".into())
        );
    }

    #[test]
    fn env_overrides_replace_file_values_by_section_and_key() {
        let e = env(&[
            ("SWITCHBOARD_SERVER__LISTEN", "0.0.0.0:9999"),
            ("SWITCHBOARD_OUTBOX__MAX_ATTEMPTS", "5"),
            ("SWITCHBOARD_MASTER_KEY", "not-an-override"),
        ]);
        let c = parse(
            "[server]\nlisten = \"127.0.0.1:1\"\n",
            Path::new("."),
            &e,
            &ConnectorRegistry::new(),
        )
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:9999");
        assert_eq!(c.outbox.max_attempts, 5);
    }

    #[test]
    fn bad_values_are_reported_with_their_keys() {
        let text = r#"
            [server]
            listen = "nowhere"
            [outbox]
            max_attempts = 0
            [[tenants]]
            id = "Acme Ltd"
            [[bots]]
            id = "b1"
            tenant = "ghost"
            platform = "pager"
        "#;
        let p = problems(text, &env(&[]));
        assert!(
            p.iter()
                .any(|p| p.starts_with("server.listen: expected host:port")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("outbox.max_attempts: must be between 1")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.starts_with("tenants[0].id: must match")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("bots[0].tenant: names tenant \"ghost\"")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("bots[0].platform: must be one of")),
            "{p:?}"
        );
    }

    #[test]
    fn secret_references_resolve_and_missing_ones_name_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "from-file-123\n").unwrap();
        let key = Cipher::generate_key();
        let text = r#"
            [security]
            master_key = "env:MK"
            [[tenants]]
            id = "acme"
            api_keys = ["env:ACME_KEY"]
            [[bots]]
            id = "acme-tg"
            tenant = "acme"
            platform = "telegram"
            token = "file:tok"
            webhook_secret = "env:MISSING_SECRET"
            mode = "webhook"
        "#;
        let e = env(&[("MK", &key), ("ACME_KEY", "sk_0123456789abcdef")]);
        let err = parse(text, dir.path(), &e, &ConnectorRegistry::new()).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].key, "bots[0].webhook_secret");
        assert!(err[0].message.contains("MISSING_SECRET is not set"));
        let e = env(&[
            ("MK", &key),
            ("ACME_KEY", "sk_0123456789abcdef"),
            ("MISSING_SECRET", "s3cr3t"),
        ]);
        let c = parse(text, dir.path(), &e, &ConnectorRegistry::new()).unwrap();
        let bot = &c.bots[0];
        assert_eq!(bot.credentials["token"].expose(), "from-file-123");
        assert_eq!(bot.settings["mode"], "webhook");
        assert!(!bot.settings.contains_key("token"));
        assert!(
            !format!("{c:?}").contains("from-file-123"),
            "Debug output leaks a secret"
        );
    }

    #[test]
    fn credentials_without_master_key_are_refused() {
        let text = "[[tenants]]\nid = \"a\"\n[[bots]]\nid = \"b\"\ntenant = \"a\"\nplatform = \"telegram\"\ntoken = \"123:abc\"\n";
        let p = problems(text, &env(&[]));
        assert!(
            p.iter()
                .any(|p| p.starts_with("security.master_key: is required")),
            "{p:?}"
        );
    }

    #[test]
    fn bad_rate_limit_override_names_the_level() {
        let text = "[[tenants]]\nid = \"a\"\n[[bots]]\nid = \"b\"\ntenant = \"a\"\nplatform = \"sms\"\nrate_limit = { per_chat = \"fast\" }\n";
        let p = problems(text, &env(&[]));
        assert!(
            p.iter()
                .any(|p| p.starts_with("bots[0].rate_limit.per_chat:")),
            "{p:?}"
        );
    }

    #[test]
    fn unknown_keys_are_reported() {
        let p = problems("[server]\nlisten_addr = \"x\"\n[serverr]\n", &env(&[]));
        assert!(
            p.iter()
                .any(|p| p.starts_with("server.listen_addr: unknown key")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.starts_with("serverr: unknown section")),
            "{p:?}"
        );
    }
}
