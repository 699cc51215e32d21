//! PostgreSQL stopped and started under traffic: the gateway reports not-ready while the database is
//! gone, refuses what it cannot store (503, nothing half-written), and recovers by itself;
//! every message it accepted is sent.
//!
//! It restarts the machine's PostgreSQL server, so it is ignored in the main run; `.ci/run`
//! runs it alone afterwards (`--run-ignored only`), when `SWITCHBOARD_TEST_POSTGRES_URL` is
//! set.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_e2e::*;
use switchboard_sim::sms::{Provider, SmsConfig, SmsSim};

const AT_USER: &str = "acme-at";
const AT_KEY: &str = "atsk_0123456789abcdef";

/// `pg_ctlcluster <version> main <action>` (`stop` or `start`).
fn postgres(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian PostgreSQL cluster")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .expect("a PostgreSQL version");
    let status = std::process::Command::new("pg_ctlcluster")
        .args([
            "--skip-systemctl-redirect",
            &version,
            "main",
            action,
            "-m",
            "fast",
        ])
        .status()
        .expect("pg_ctlcluster runs");
    assert!(status.success(), "pg_ctlcluster {action}: {status}");
}

#[tokio::test]
#[ignore = "restarts the PostgreSQL server; .ci/run runs it alone"]
async fn a_postgres_restart_under_traffic_loses_nothing_accepted() {
    if std::env::var("SWITCHBOARD_TEST_POSTGRES_URL").is_err() {
        eprintln!("SWITCHBOARD_TEST_POSTGRES_URL not set: skipped");
        return;
    }
    let sim = SmsSim::start(SmsConfig::without_rate_limits())
        .await
        .unwrap();
    sim.add_at_account(AT_USER, AT_KEY, 1e9);
    let t = TestGateway::start(Options {
        backend: Some(Backend::Postgres),
        extra_toml: format!(
            "[[bots]]\nid = \"at\"\ntenant = \"acme\"\nplatform = \"sms\"\nprovider = \"africastalking\"\n\
             username = \"{AT_USER}\"\napi_key = \"{AT_KEY}\"\napi_base = \"{}\"\nthroughput_per_second = 500\n",
            sim.base_url()
        ),
        real_connectors: true,
        ..Default::default()
    })
    .await;
    t.wait_state(ACME_KEY, "at", "running", Duration::from_secs(10))
        .await;

    // Traffic throughout: 4 senders, each message with its own text.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for s in 0..4 {
        let (http, url, stop) = (t.http.clone(), t.url("/v1/messages"), stop.clone());
        senders.push(tokio::spawn(async move {
            let (mut accepted, mut refused) = (Vec::new(), 0usize);
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let text = format!("s{s} m{n}");
                let r = http
                    .post(&url)
                    .bearer_auth(ACME_KEY)
                    .timeout(Duration::from_secs(20))
                    .json(
                        &json!({"bot_id": "at", "to": {"phone": format!("+2547117{:05}", n % 500)},
                                  "content": {"type": "text", "text": text}}),
                    )
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 202 => accepted.push(text),
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let problem: serde_json::Value = r.json().await.unwrap_or_default();
                        assert_eq!(status, 503, "{problem}");
                        assert!(problem["detail"].is_string(), "{problem}");
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(_) => refused += 1,
                }
            }
            (accepted, refused)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ready = |t: &TestGateway| {
        let (http, url) = (t.http.clone(), t.url("/readyz"));
        async move {
            http.get(&url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(ready(&t).await, 200);
    // Stop the server and watch the gateway notice; then start it again.
    tokio::task::spawn_blocking(|| postgres("stop"))
        .await
        .unwrap();
    let started = Instant::now();
    let mut saw_not_ready = false;
    while started.elapsed() < Duration::from_secs(20) {
        if ready(&t).await == 503 {
            saw_not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::spawn_blocking(|| postgres("start"))
        .await
        .unwrap();
    let started = Instant::now();
    while ready(&t).await != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the gateway never became ready again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for s in senders {
        let (a, r) = s.await.unwrap();
        accepted.extend(a);
        refused += r;
    }
    // Every accepted message is sent, once.
    let started = Instant::now();
    let wanted: HashSet<&String> = accepted.iter().collect();
    loop {
        let sent: Vec<String> = sim
            .sent(Provider::AfricasTalking, AT_USER)
            .into_iter()
            .map(|s| s.body)
            .collect();
        let got: HashSet<&String> = sent.iter().filter(|b| wanted.contains(b)).collect();
        if got.len() == wanted.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {} accepted messages sent",
            got.len(),
            wanted.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{} accepted, {refused} refused while the database was away; not-ready seen: {saw_not_ready}",
        accepted.len()
    );
    assert!(saw_not_ready, "/readyz never reported the database gone");
    assert!(accepted.len() > 50, "too little traffic to prove anything");
    t.stop().await;
    sim.shutdown();
}
