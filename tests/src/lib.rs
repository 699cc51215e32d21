//! The end-to-end harness: a real gateway on 127.0.0.1 (SQLite file or a fresh PostgreSQL
//! schema), a scriptable connector double standing in for a platform, an HTTP client with the
//! test tenants' keys, and a log capture. Tests build on [`TestGateway::start`] and don't
//! repeat setup.

pub mod fake;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use switchboard_core::connector::ConnectorRegistry;
use switchboard_core::secret::Cipher;
use switchboard_gateway::Gateway;
use switchboard_gateway::config;

pub use fake::{FakeWorld, SendOutcome};

/// Which store a test gateway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// SQLite always; PostgreSQL too when `SWITCHBOARD_TEST_POSTGRES_URL` is set.
pub fn backends() -> Vec<Backend> {
    match std::env::var("SWITCHBOARD_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => vec![Backend::Sqlite, Backend::Postgres],
        _ => {
            eprintln!("SWITCHBOARD_TEST_POSTGRES_URL not set: skipped the PostgreSQL backend");
            vec![Backend::Sqlite]
        }
    }
}

/// Everything the test's log lines were written to (one buffer per test process).
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_process() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let buf = log_buffer().clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,sqlx=warn,hyper=info,tower_http=info,h2=info,reqwest=info")
            .with_writer(move || BufWriter(buf.clone()))
            .with_ansi(false)
            .try_init();
    });
}

/// Test gateway options: extra TOML appended to the base config.
#[derive(Default, Clone)]
pub struct Options {
    pub backend: Option<Backend>,
    /// TOML for `[supervisor]`, `[outbox]`, `[feed]`, `[[bots]]`... appended to the base.
    pub extra_toml: String,
    /// Extra environment (secret references in `extra_toml`).
    pub env: Vec<(String, String)>,
    /// Use the real platform connectors instead of the connector double.
    pub real_connectors: bool,
    /// With the real connectors: keep their guard against media URLs on private addresses
    /// (off by default, since the simulators and test media servers live on 127.0.0.1).
    pub guard_private_media: bool,
    /// Listen on a port chosen before start and set `server.public_url` to it (platforms
    /// that call back, like Telegram in webhook mode, need the URL in the config).
    pub public_url: bool,
    /// More `[outbox]` settings (`key = value` lines; the base sets fast retries).
    pub outbox_toml: String,
}

pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
pub const ACME_KEY: &str = "sk_acme_test_key_0123456789abcdef";
pub const GLOBEX_KEY: &str = "sk_globex_test_key_0123456789abcdef";

/// A running gateway under test.
pub struct TestGateway {
    pub gateway: Option<Gateway>,
    pub base: String,
    pub world: Arc<FakeWorld>,
    pub http: reqwest::Client,
    pub dir: Arc<tempfile::TempDir>,
    pub storage_url: String,
    pub master_key: String,
    env: HashMap<String, String>,
    toml: String,
    server: String,
    outbox: String,
    real: Connectors,
}

/// Which connectors a test gateway runs.
#[derive(Clone, Copy)]
enum Connectors {
    Double,
    Real { allow_private_media: bool },
}

impl TestGateway {
    pub async fn start(opts: Options) -> TestGateway {
        init_process();
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let storage_url = match opts.backend.unwrap_or(Backend::Sqlite) {
            Backend::Sqlite => format!("sqlite://{}/switchboard.db", dir.path().display()),
            Backend::Postgres => postgres_schema_url().await,
        };
        let master_key = Cipher::generate_key();
        let world = FakeWorld::new();
        Self::start_with(dir, storage_url, master_key, world, opts).await
    }

    /// Starts a gateway on an existing data set (a restart after a crash, for instance).
    pub async fn start_with(
        dir: Arc<tempfile::TempDir>,
        storage_url: String,
        master_key: String,
        world: Arc<FakeWorld>,
        opts: Options,
    ) -> TestGateway {
        init_process();
        let listen = if opts.public_url {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("local addr").to_string()
        } else {
            "127.0.0.1:0".to_string()
        };
        let server = if opts.public_url {
            format!("listen = \"{listen}\"\npublic_url = \"http://{listen}\"")
        } else {
            format!("listen = \"{listen}\"")
        };
        let toml = base_toml(&server, &opts.outbox_toml, &opts.extra_toml);
        let mut env: HashMap<String, String> = opts.env.iter().cloned().collect();
        env.insert("TEST_STORAGE_URL".into(), storage_url.clone());
        env.insert("TEST_MASTER_KEY".into(), master_key.clone());
        let real = match (opts.real_connectors, opts.guard_private_media) {
            (false, _) => Connectors::Double,
            (true, guard) => Connectors::Real {
                allow_private_media: !guard,
            },
        };
        let gateway = launch(&toml, &env, dir.path(), &world, real).await;
        let base = format!("http://{}", gateway.addr);
        TestGateway {
            gateway: Some(gateway),
            base,
            world,
            http: reqwest::Client::new(),
            dir,
            storage_url,
            master_key,
            env,
            toml,
            server,
            outbox: opts.outbox_toml,
            real,
        }
    }

    /// Applies a changed config to the running gateway, as SIGHUP does.
    pub async fn reload(&mut self, extra_toml: &str, env: Vec<(String, String)>) {
        self.toml = base_toml(&self.server, &self.outbox, extra_toml);
        self.env.extend(env);
        let registry = registry(&self.world, self.real);
        let config = config::parse(&self.toml, self.dir.path(), &self.env, &registry)
            .unwrap_or_else(|p| panic!("test config invalid: {p:?}"));
        self.gateway
            .as_mut()
            .expect("gateway running")
            .reload(config)
            .await
            .expect("reload");
    }
}

fn base_toml(server: &str, outbox_toml: &str, extra_toml: &str) -> String {
    format!(
        r#"
[server]
{server}
shutdown_grace_ms = 3000
tenant_rate_limit = "none"

[storage]
url = "env:TEST_STORAGE_URL"

[security]
master_key = "env:TEST_MASTER_KEY"
admin_token = "{ADMIN_TOKEN}"

[supervisor]
restart_initial_ms = 100
restart_max_ms = 2000
healthy_reset_ms = 60000
probe_interval_ms = 60000
paused_recheck_ms = 200

[outbox]
retry_initial_ms = 50
retry_max_ms = 200
{outbox_toml}

[[tenants]]
id = "acme"
name = "Acme Ltd"
api_keys = ["{ACME_KEY}"]

[[tenants]]
id = "globex"
name = "Globex"
api_keys = ["{GLOBEX_KEY}"]
{extra_toml}
"#
    )
}

impl TestGateway {
    /// Shuts the gateway down gracefully and starts it again on the same store.
    pub async fn restart(&mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown().await;
        }
        let g = launch(
            &self.toml,
            &self.env,
            self.dir.path(),
            &self.world,
            self.real,
        )
        .await;
        self.base = format!("http://{}", g.addr);
        self.gateway = Some(g);
    }

    pub async fn stop(mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown().await;
        }
    }

    pub fn gw(&self) -> &Gateway {
        self.gateway.as_ref().expect("gateway running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        split(r).await
    }

    /// Every item of a paginated list (`items`, `next_cursor`), following its cursors.
    pub async fn get_all(&self, key: &str, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page_path = match &cursor {
                Some(c) => format!("{path}{sep}cursor={c}"),
                None => path.to_owned(),
            };
            let (status, page) = self.get(key, &page_path).await;
            assert_eq!(status, 200, "{page_path}: {page}");
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return items,
            }
        }
    }

    pub async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("request");
        split(r).await
    }

    pub async fn patch(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .patch(self.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("request");
        split(r).await
    }

    pub async fn delete(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self
            .http
            .delete(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        split(r).await
    }

    /// Creates a bot of the fake platform through the API.
    /// Posts update `update` (text `t<update>`, one of seven chats) to the connector double's
    /// webhook of `bot`, signed with `secret`, and checks that it was stored (200).
    pub async fn fake_update(&self, bot: &str, secret: &str, update: i64) {
        let r = self
            .http
            .post(self.url(&format!("/webhooks/telegram/{bot}")))
            .header("x-fake-secret", secret)
            .json(
                &serde_json::json!({"update_id": update, "chat": format!("c{}", update % 7),
                "user": "u1", "text": format!("t{update}")}),
            )
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200);
    }

    pub async fn create_bot(&self, key: &str, id: &str, extra: Value) -> Value {
        let mut body = serde_json::json!({"id": id, "platform": "telegram", "token": format!("tok-{id}-secret")});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let (status, bot) = self.post(key, "/v1/bots", body).await;
        assert_eq!(status, 201, "create bot {id}: {bot}");
        bot
    }

    /// Polls a bot until its state is `state` (or panics after `within`).
    pub async fn wait_state(&self, key: &str, bot: &str, state: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (s, b) = self.get(key, &format!("/v1/bots/{bot}")).await;
            if s == 200 && b["state"] == state {
                return b;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("bot {bot} did not reach {state} within {within:?}: {b}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls a message until its status is `status` (or, for sent/delivered, a later one).
    /// Inbound messages (of `bot`, or of every bot), oldest first, once at least `n` are
    /// stored; panics after `within`.
    pub async fn wait_inbound(
        &self,
        key: &str,
        bot: Option<&str>,
        n: usize,
        within: Duration,
    ) -> Vec<Value> {
        let path = match bot {
            Some(b) => format!("/v1/messages?bot={b}&direction=inbound&limit=500"),
            None => "/v1/messages?direction=inbound&limit=500".to_string(),
        };
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (_, page) = self.get(key, &path).await;
            let mut items = page["items"].as_array().cloned().unwrap_or_default();
            if items.len() >= n {
                items.reverse();
                return items;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} inbound messages arrived",
                items.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_message(&self, key: &str, id: &str, status: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (_, m) = self.get(key, &format!("/v1/messages/{id}")).await;
            // A message that went further along sent -> delivered -> read has passed `status`.
            let chain = ["sent", "delivered", "read"];
            let rank = |s: &str| chain.iter().position(|c| *c == s);
            let reached = match (rank(status), m["status"].as_str().and_then(rank)) {
                (Some(want), Some(got)) => got >= want,
                _ => m["status"] == status,
            };
            if reached {
                return m;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("message {id} did not reach {status} within {within:?}: {m}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn registry(world: &Arc<FakeWorld>, connectors: Connectors) -> ConnectorRegistry {
    if let Connectors::Real {
        allow_private_media,
    } = connectors
    {
        return switchboard_connectors::registry_with(switchboard_connectors::ConnectorOptions {
            allow_private_media,
            ..Default::default()
        });
    }
    let mut registry = ConnectorRegistry::new();
    registry.register(world.factory());
    registry
}

async fn launch(
    toml: &str,
    env: &HashMap<String, String>,
    dir: &Path,
    world: &Arc<FakeWorld>,
    real: Connectors,
) -> Gateway {
    let registry = registry(world, real);
    let config = config::parse(toml, dir, env, &registry)
        .unwrap_or_else(|p| panic!("test config invalid: {p:?}"));
    Gateway::start(config, registry)
        .await
        .expect("gateway starts")
}

async fn split(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// A fresh schema in the test PostgreSQL database, as a URL with its search_path.
pub async fn postgres_schema_url() -> String {
    let base =
        std::env::var("SWITCHBOARD_TEST_POSTGRES_URL").expect("SWITCHBOARD_TEST_POSTGRES_URL");
    let schema = format!("e2e_{}", uuid::Uuid::now_v7().simple());
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&base)
        .await
        .expect("postgres reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .expect("create schema");
    admin.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}
