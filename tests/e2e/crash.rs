//! The gateway as a child process, killed with SIGKILL and started again on the same store:
//! in the middle of a 5,000-recipient broadcast, and at random moments of mixed inbound and
//! outbound traffic. Nothing accepted is lost; an outbound message is sent twice only if it
//! was in flight at a kill (it then has two attempts), and an inbound one is stored once.
//!
//! The child is this test binary re-run with only [`child_gateway`] selected: it starts a
//! gateway from the config file named in `SWITCHBOARD_E2E_CHILD_CONFIG` and waits to be
//! killed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_e2e::*;
use switchboard_sim::sms::{Provider, SmsConfig, SmsSim};

const CHILD_ENV: &str = "SWITCHBOARD_E2E_CHILD_CONFIG";
const AT_USER: &str = "acme-at";
const AT_KEY: &str = "atsk_0123456789abcdef";
/// The outbox's sends in flight for the bot: what a kill can leave unrecorded, with the
/// outcomes waiting for their commit.
const IN_FLIGHT: usize = 16;

/// Not a test of its own: the child process of the crash tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the crash tests as their child process"]
async fn child_gateway() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let toml = std::fs::read_to_string(&path).expect("child config");
    let dir = Path::new(&path).parent().expect("config dir");
    let env: HashMap<String, String> = std::env::vars().collect();
    let registry = switchboard_connectors::registry();
    let config = switchboard_gateway::config::parse(&toml, dir, &env, &registry)
        .unwrap_or_else(|p| panic!("child config invalid: {p:?}"));
    let _gateway = switchboard_gateway::Gateway::start(config, registry)
        .await
        .expect("child gateway starts");
    // Killed by the parent; a bound in case the parent dies first.
    tokio::time::sleep(Duration::from_secs(300)).await;
}

/// A gateway in a child process with an Africa's Talking bot `at` on the simulator.
struct ChildGateway {
    config: PathBuf,
    base: String,
    http: reqwest::Client,
    process: Option<std::process::Child>,
    _dir: tempfile::TempDir,
}

impl ChildGateway {
    async fn start(sim: &SmsSim, backend: Backend) -> ChildGateway {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let config = dir.path().join("switchboard.toml");
        let store_url = match backend {
            Backend::Sqlite => format!("sqlite://{}/switchboard.db", dir.path().display()),
            Backend::Postgres => postgres_schema_url().await,
        };
        std::fs::write(
            &config,
            format!(
                r#"
[server]
listen = "127.0.0.1:{port}"
public_url = "{base}"
tenant_rate_limit = "none"
[storage]
url = "{store}"
[security]
admin_token = "{ADMIN_TOKEN}"
master_key = "{master_key}"
[outbox]
max_in_flight_per_bot = {IN_FLIGHT}
retry_initial_ms = 50
retry_max_ms = 200
[[tenants]]
id = "acme"
api_keys = ["{ACME_KEY}"]
[[bots]]
id = "at"
tenant = "acme"
platform = "sms"
provider = "africastalking"
username = "{AT_USER}"
api_key = "{AT_KEY}"
api_base = "{sim}"
throughput_per_second = 1500
"#,
                store = store_url,
                master_key = switchboard_core::secret::Cipher::generate_key(),
                sim = sim.base_url(),
            ),
        )
        .unwrap();
        sim.set_at_callbacks(
            AT_USER,
            &format!("{base}/webhooks/sms/at/status"),
            &format!("{base}/webhooks/sms/at/inbound"),
        );
        let mut g = ChildGateway {
            config,
            base,
            http: reqwest::Client::new(),
            process: None,
            _dir: dir,
        };
        g.restart().await;
        g
    }

    /// Starts the child again on the same store and waits until it is ready.
    async fn restart(&mut self) {
        self.process = Some(
            Command::new(std::env::current_exe().expect("test binary"))
                .args([
                    "--exact",
                    "crash::child_gateway",
                    "--ignored",
                    "--nocapture",
                ])
                .env(CHILD_ENV, &self.config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("child starts"),
        );
        let started = Instant::now();
        loop {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "child gateway never got ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, and wait for it to be gone.
    fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill().expect("SIGKILL");
            p.wait().expect("reaped");
        }
    }

    /// A request with the tenant key; `None` when the gateway did not answer.
    async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "POST" => self.http.post(url),
            _ => self.http.get(url),
        }
        .bearer_auth(ACME_KEY)
        .timeout(Duration::from_secs(10));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.ok()?;
        let status = r.status().as_u16();
        let body = r.json().await.ok()?;
        Some((status, body))
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|| panic!("{method} {path}: no answer"))
    }

    /// Every item of a paginated list, following its cursors.
    async fn pages(&self, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page_path = match &cursor {
                Some(c) => format!("{path}{sep}cursor={c}"),
                None => path.to_owned(),
            };
            let (status, page) = self.call("GET", &page_path, None).await;
            assert_eq!(status, 200, "{page}");
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return items,
            }
        }
    }

    /// Outbound message id -> attempts.
    async fn attempts(&self) -> HashMap<String, u64> {
        self.pages("/v1/messages?direction=outbound&limit=500")
            .await
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap().to_owned(),
                    m["attempts"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        self.kill();
    }
}

fn simulator_config() -> SmsConfig {
    SmsConfig {
        at_messages_per_second: 1500.0,
        delivery_delay: Duration::from_millis(20),
        ..SmsConfig::without_rate_limits()
    }
}

#[tokio::test]
async fn a_broadcast_killed_mid_way_resumes_after_restart_losing_no_recipient() {
    for backend in backends() {
        killed_broadcast(backend).await;
    }
}

async fn killed_broadcast(backend: Backend) {
    const RECIPIENTS: usize = 5000;
    let sim = SmsSim::start(simulator_config())
        .await
        .expect("simulator starts");
    sim.add_at_account(AT_USER, AT_KEY, 1e9);
    let mut g = ChildGateway::start(&sim, backend).await;

    let contacts: Vec<Value> = (0..RECIPIENTS)
        .map(|i| json!({"phone": format!("+2547111{i:05}")}))
        .collect();
    let (status, bulk) = g
        .call("POST", "/v1/contacts/bulk", Some(json!(contacts)))
        .await;
    assert_eq!(status, 200, "{bulk}");
    let ids: Vec<String> = g
        .pages("/v1/contacts?limit=500")
        .await
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), RECIPIENTS);
    let (status, group) = g
        .call("POST", "/v1/groups", Some(json!({"name": "All"})))
        .await;
    assert_eq!(status, 201, "{group}");
    let gid = group["id"].as_str().unwrap().to_owned();
    let (status, group) = g
        .call(
            "POST",
            &format!("/v1/groups/{gid}/members"),
            Some(json!({"contact_ids": ids})),
        )
        .await;
    assert_eq!(status, 200, "{group}");
    let (status, b) = g
        .call(
            "POST",
            "/v1/broadcasts",
            Some(
                json!({"bot_id": "at", "title": "Crash", "content": {"type": "text", "text": "Hi"},
                        "to": {"group_id": gid}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();

    // Kill it once a fifth of the recipients were sent to.
    let started = Instant::now();
    while sim.sent(Provider::AfricasTalking, AT_USER).len() < RECIPIENTS / 5 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "sending never got going"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    g.kill();
    let at_kill = sim.sent(Provider::AfricasTalking, AT_USER).len();
    assert!(at_kill < RECIPIENTS, "killed too late to prove anything");

    g.restart().await;
    let started = Instant::now();
    let b = loop {
        let (status, b) = g.call("GET", &format!("/v1/broadcasts/{id}"), None).await;
        assert_eq!(status, 200, "{b}");
        if b["counts"]["queued"] == 0 {
            break b;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "broadcast never finished: {b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The messages that were in flight at the kill: marked `sending` before it, their
    // outcome never recorded, so marked again after the restart (two attempts).
    let attempts = g.attempts().await;
    let message_of: HashMap<String, String> = g
        .pages(&format!("/v1/broadcasts/{id}/recipients?limit=500"))
        .await
        .iter()
        .map(|r| {
            (
                r["platform_id"].as_str().unwrap().to_owned(),
                r["message_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    g.kill();
    assert_eq!(attempts.len(), RECIPIENTS);
    let in_flight = attempts.values().filter(|a| **a > 1).count();

    let sent = sim.sent(Provider::AfricasTalking, AT_USER);
    let mut per_number: HashMap<&str, usize> = HashMap::new();
    for s in &sent {
        *per_number.entry(s.to.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_number.len(),
        RECIPIENTS,
        "every recipient got the message"
    );
    let duplicates: usize = per_number.values().map(|n| n - 1).sum();
    for (number, n) in &per_number {
        if *n > 1 {
            let message = &message_of[*number];
            assert!(
                *n == 2 && attempts[message] == 2,
                "{number} got {n} messages, its message was not in flight at the kill"
            );
        }
    }
    assert!(
        duplicates <= in_flight && in_flight <= IN_FLIGHT * 4,
        "{duplicates} sent twice, {in_flight} in flight at the kill"
    );
    assert_eq!(b["counts"]["failed"], 0, "{b}");
    eprintln!(
        "killed after {at_kill} of {RECIPIENTS} sends; {in_flight} in flight; {duplicates} sent twice; counts {}",
        b["counts"]
    );
    sim.shutdown();
}

#[tokio::test]
async fn three_kills_during_mixed_traffic_lose_nothing_accepted() {
    let sim = SmsSim::start(simulator_config())
        .await
        .expect("simulator starts");
    sim.add_at_account(AT_USER, AT_KEY, 1e9);
    let mut g = ChildGateway::start(&sim, Backend::Sqlite).await;
    // Random moments, reproducible from the printed seed.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash seed {seed}");
    let mut random_ms = |lo: u64, hi: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        lo + seed % (hi - lo)
    };
    let mut accepted_out: HashMap<String, String> = HashMap::new(); // text -> message id
    let mut accepted_in: HashSet<String> = HashSet::new(); // texts
    let mut n = 0usize;
    for kill in 0..3 {
        let until = Instant::now() + Duration::from_millis(random_ms(300, 1200));
        // At least three rounds per run between kills, however slow the machine (a loaded CI
        // host managed one round per window, too little traffic to prove anything).
        let mut rounds = 0;
        while rounds < 3 || Instant::now() < until {
            rounds += 1;
            // Eight outbound and eight inbound messages at a time, each with a unique text.
            let round: Vec<usize> = (n + 1..=n + 8).collect();
            n += 8;
            let outbound = futures::future::join_all(round.iter().map(|i| {
                let text = format!("out {i}");
                let to = format!("+2547112{:05}", i % 300);
                let g = &g;
                async move {
                    let body = json!({"bot_id": "at", "to": {"phone": to}, "content": {"type": "text", "text": text}});
                    match g.try_call("POST", "/v1/messages", Some(body)).await {
                        Some((202, m)) => Some((text, m["id"].as_str().unwrap().to_owned())),
                        _ => None,
                    }
                }
            }));
            let inbound = futures::future::join_all(round.iter().map(|i| {
                let text = format!("in {i}");
                let from = format!("+2547113{:05}", i % 50);
                let sim = &sim;
                async move {
                    match sim.at_inbound(AT_USER, &from, "12345", &text).await {
                        Ok(200) => Some(text),
                        _ => None,
                    }
                }
            }));
            let (outbound, inbound) = tokio::join!(outbound, inbound);
            accepted_out.extend(outbound.into_iter().flatten());
            accepted_in.extend(inbound.into_iter().flatten());
        }
        g.kill();
        eprintln!("kill {}: after {n} messages each way", kill + 1);
        g.restart().await;
    }
    // Everything accepted before a kill gets sent after the restarts.
    let started = Instant::now();
    loop {
        let (_, queued) = g
            .call(
                "GET",
                "/v1/messages?direction=outbound&status=queued&limit=1",
                None,
            )
            .await;
        let (_, sending) = g
            .call(
                "GET",
                "/v1/messages?direction=outbound&status=sending&limit=1",
                None,
            )
            .await;
        if queued["items"].as_array().unwrap().is_empty()
            && sending["items"].as_array().unwrap().is_empty()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the outbox never drained"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let inbound = g.pages("/v1/messages?direction=inbound&limit=500").await;
    let outbound: HashMap<String, Value> = g
        .pages("/v1/messages?direction=outbound&limit=500")
        .await
        .into_iter()
        .map(|m| (m["id"].as_str().unwrap().to_owned(), m))
        .collect();
    let attempts: HashMap<&String, u64> = outbound
        .iter()
        .map(|(id, m)| (id, m["attempts"].as_u64().unwrap()))
        .collect();
    g.kill();

    // Inbound: every accepted message stored exactly once.
    let mut stored: HashMap<String, usize> = HashMap::new();
    for m in &inbound {
        *stored
            .entry(m["content"]["text"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for text in &accepted_in {
        assert_eq!(stored.get(text), Some(&1), "inbound {text:?}");
    }
    assert!(
        stored.values().all(|c| *c == 1),
        "an inbound message stored twice"
    );
    // Outbound: every accepted message reached the provider; twice only if in flight.
    let mut sent: HashMap<String, usize> = HashMap::new();
    for s in sim.sent(Provider::AfricasTalking, AT_USER) {
        *sent.entry(s.body.clone()).or_default() += 1;
    }
    // Every send to the provider follows a `sending` mark, which counts an attempt: a
    // message is sent at most as many times as it has attempts, and it has more than one
    // only if a kill caught it in flight (nothing else fails here).
    let mut duplicates = 0;
    for (text, id) in &accepted_out {
        let times = sent.get(text).copied().unwrap_or(0) as u64;
        assert!(times >= 1, "accepted {text:?} never reached the provider");
        let copies: Vec<String> = sim
            .sent(Provider::AfricasTalking, AT_USER)
            .iter()
            .filter(|s| &s.body == text)
            .map(|s| format!("{} to {}", s.id, s.to))
            .collect();
        assert!(
            times <= attempts[id],
            "{text:?} sent {times} times ({copies:?}) with fewer attempts: {}",
            outbound[id]
        );
        duplicates += times - 1;
    }
    let retried: u64 = attempts.values().map(|a| a.saturating_sub(1)).sum();
    assert!(
        duplicates <= retried && retried <= 3 * IN_FLIGHT as u64 * 4,
        "{duplicates} extra sends, {retried} attempts after a kill"
    );
    assert!(
        accepted_out.len() > 20 && accepted_in.len() > 20,
        "too little traffic to prove anything: {} out, {} in",
        accepted_out.len(),
        accepted_in.len()
    );
    eprintln!(
        "{} outbound and {} inbound accepted; {retried} attempts repeated after the kills; {duplicates} extra sends",
        accepted_out.len(),
        accepted_in.len()
    );
    sim.shutdown();
}
