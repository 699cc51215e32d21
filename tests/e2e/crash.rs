//! The gateway as a child process, killed with SIGKILL in the middle of a 5,000-recipient
//! broadcast and started again on the same store: no recipient is lost, and a recipient is
//! sent twice only if its message was in flight at the kill.
//!
//! The child is this test binary re-run with only [`child_gateway`] selected: it starts a
//! gateway from the config file named in `SWITCHBOARD_E2E_CHILD_CONFIG` and waits to be
//! killed.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_e2e::*;
use switchboard_sim::sms::{Provider, SmsConfig, SmsSim};

const CHILD_ENV: &str = "SWITCHBOARD_E2E_CHILD_CONFIG";
const AT_USER: &str = "acme-at";
const AT_KEY: &str = "atsk_0123456789abcdef";
const RECIPIENTS: usize = 5000;
/// The outbox's sends in flight for the bot: the most that a kill can leave unrecorded.
const IN_FLIGHT: usize = 16;

/// Not a test of its own: the child process of the crash test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the crash test as its child process"]
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

fn spawn_child(config: &Path) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "crash::child_gateway",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("child starts")
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
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

async fn call(
    http: &reqwest::Client,
    method: &str,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = match method {
        "POST" => http.post(url),
        _ => http.get(url),
    }
    .bearer_auth(ACME_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every item of a paginated list of the child gateway, following its cursors.
async fn pages(http: &reqwest::Client, url: &str) -> Vec<Value> {
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page_url = match &cursor {
            Some(c) => format!("{url}{sep}cursor={c}"),
            None => url.to_owned(),
        };
        let (status, page) = call(http, "GET", page_url, None).await;
        assert_eq!(status, 200, "{page}");
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
    }
}

#[tokio::test]
async fn a_broadcast_killed_mid_way_resumes_after_restart_losing_no_recipient() {
    let sim = SmsSim::start(SmsConfig {
        at_messages_per_second: 1500.0,
        delivery_delay: Duration::from_millis(20),
        ..SmsConfig::without_rate_limits()
    })
    .await
    .expect("simulator starts");
    sim.add_at_account(AT_USER, AT_KEY, 1e9);
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
public_url = "{base}"
tenant_rate_limit = "none"
[storage]
url = "sqlite://{store}/switchboard.db"
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
            store = dir.path().display(),
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
    let http = reqwest::Client::new();
    let mut child = spawn_child(&config);
    wait_ready(&http, &base).await;

    let contacts: Vec<Value> = (0..RECIPIENTS)
        .map(|i| json!({"phone": format!("+2547111{i:05}")}))
        .collect();
    let (status, bulk) = call(
        &http,
        "POST",
        format!("{base}/v1/contacts/bulk"),
        Some(json!(contacts)),
    )
    .await;
    assert_eq!(status, 200, "{bulk}");
    let ids: Vec<String> = pages(&http, &format!("{base}/v1/contacts?limit=500"))
        .await
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), RECIPIENTS);
    let (status, g) = call(
        &http,
        "POST",
        format!("{base}/v1/groups"),
        Some(json!({"name": "All"})),
    )
    .await;
    assert_eq!(status, 201, "{g}");
    let gid = g["id"].as_str().unwrap().to_owned();
    let (status, g) = call(
        &http,
        "POST",
        format!("{base}/v1/groups/{gid}/members"),
        Some(json!({"contact_ids": ids})),
    )
    .await;
    assert_eq!(status, 200, "{g}");
    let (status, b) = call(
        &http,
        "POST",
        format!("{base}/v1/broadcasts"),
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
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let at_kill = sim.sent(Provider::AfricasTalking, AT_USER).len();
    assert!(at_kill < RECIPIENTS, "killed too late to prove anything");

    let mut child = spawn_child(&config);
    wait_ready(&http, &base).await;
    let started = Instant::now();
    let b = loop {
        let (status, b) = call(&http, "GET", format!("{base}/v1/broadcasts/{id}"), None).await;
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
    let attempts: HashMap<String, u64> = pages(
        &http,
        &format!("{base}/v1/messages?direction=outbound&limit=500"),
    )
    .await
    .iter()
    .map(|m| {
        (
            m["id"].as_str().unwrap().to_owned(),
            m["attempts"].as_u64().unwrap(),
        )
    })
    .collect();
    let message_of: HashMap<String, String> = pages(
        &http,
        &format!("{base}/v1/broadcasts/{id}/recipients?limit=500"),
    )
    .await
    .iter()
    .map(|r| {
        (
            r["platform_id"].as_str().unwrap().to_owned(),
            r["message_id"].as_str().unwrap().to_owned(),
        )
    })
    .collect();
    child.kill().ok();
    child.wait().ok();
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
    // In flight: the sends under way (the outbox's limit) and those whose outcome was
    // waiting for its commit.
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
