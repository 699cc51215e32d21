//! The supervisor: restarts with growing delays, survives panics, stops on permanent errors,
//! and never lets one bot's trouble touch another.

use std::time::Duration;

use serde_json::json;
use switchboard_e2e::*;

#[tokio::test]
async fn a_failing_connector_is_restarted_with_growing_delays_until_it_runs() {
    let t = TestGateway::start(Options::default()).await;
    t.create_bot(ACME_KEY, "healthy", json!({})).await;
    t.create_bot(ACME_KEY, "flaky", json!({"fail_runs": 3}))
        .await;
    t.wait_state(ACME_KEY, "flaky", "running", Duration::from_secs(10))
        .await;
    let runs = t.world.runs("flaky");
    assert_eq!(runs.len(), 4, "3 failures then a run that stays up");
    let gaps: Vec<Duration> = runs.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[0] >= Duration::from_millis(80),
        "first restart waits ~100 ms: {gaps:?}"
    );
    assert!(
        gaps[1] > gaps[0] && gaps[2] > gaps[1],
        "delays grow: {gaps:?}"
    );
    assert!(
        gaps[2] >= Duration::from_millis(320),
        "third restart waits ~400 ms: {gaps:?}"
    );
    // The healthy bot ran once, undisturbed.
    assert_eq!(t.world.runs("healthy").len(), 1);
    // Every state change is an event.
    let (_, ev) = t
        .get(ACME_KEY, "/v1/events?types=bot.state&bot=flaky&limit=100")
        .await;
    let states: Vec<String> = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        states.iter().filter(|s| *s == "backoff").count(),
        3,
        "{states:?}"
    );
    assert_eq!(states.last().map(String::as_str), Some("running"));
    let (_, b) = t.get(ACME_KEY, "/v1/bots/flaky").await;
    assert!(
        b["last_error"]
            .as_str()
            .unwrap()
            .contains("connection reset"),
        "{b}"
    );
    let metrics = reqwest::get(t.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchboard_bot_restarts_total{")
                && l.contains("bot=\"flaky\"")
                && l.ends_with(" 3")),
        "restart metric: {metrics}"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_panicking_connector_is_restarted() {
    let t = TestGateway::start(Options::default()).await;
    t.create_bot(ACME_KEY, "panicky", json!({"panic_runs": 2}))
        .await;
    t.wait_state(ACME_KEY, "panicky", "running", Duration::from_secs(10))
        .await;
    assert_eq!(t.world.runs("panicky").len(), 3);
    let (_, b) = t.get(ACME_KEY, "/v1/bots/panicky").await;
    assert!(
        b["last_error"].as_str().unwrap().contains("panicked"),
        "{b}"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_permanent_error_marks_the_bot_failed_without_retrying_while_others_keep_working() {
    let t = TestGateway::start(Options::default()).await;
    t.create_bot(ACME_KEY, "worker", json!({})).await;
    t.wait_state(ACME_KEY, "worker", "running", Duration::from_secs(5))
        .await;
    t.create_bot(ACME_KEY, "bad-token", json!({"fatal": true}))
        .await;
    t.create_bot(ACME_KEY, "flapping", json!({"fail_runs": 1000}))
        .await;
    let b = t
        .wait_state(ACME_KEY, "bad-token", "failed", Duration::from_secs(5))
        .await;
    assert!(
        b["state_reason"]
            .as_str()
            .unwrap()
            .contains("token was rejected"),
        "{b}"
    );
    // While one bot is failed and another restarts in a loop, the worker sends.
    let (_, m) = t
        .post(ACME_KEY, "/v1/messages", json!({"bot_id": "worker", "to": {"chat_id": "9"}, "content": {"type": "text", "text": "still here"}}))
        .await;
    t.wait_message(
        ACME_KEY,
        m["id"].as_str().unwrap(),
        "sent",
        Duration::from_secs(5),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        t.world.runs("bad-token").len(),
        1,
        "no retry loop after a permanent error"
    );
    assert!(t.world.runs("flapping").len() >= 3);
    let (_, w) = t.get(ACME_KEY, "/v1/bots/worker").await;
    assert_eq!(w["state"], "running");
    assert_eq!(t.world.runs("worker").len(), 1);
    let metrics = reqwest::get(t.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchboard_bot_state{")
                && l.contains("bot=\"bad-token\"")
                && l.contains("state=\"failed\"")
                && l.ends_with(" 1")),
        "state gauge: {metrics}"
    );
    // Fixing the bot (a PATCH) starts it again.
    let (s, _) = t
        .patch(
            ACME_KEY,
            "/v1/bots/bad-token",
            json!({"fatal": false, "token": "new-token"}),
        )
        .await;
    assert_eq!(s, 200);
    t.wait_state(ACME_KEY, "bad-token", "running", Duration::from_secs(5))
        .await;
    t.stop().await;
}

#[tokio::test]
async fn a_probe_that_finds_rejected_credentials_fails_the_bot() {
    let t = TestGateway::start(Options {
        env: vec![(
            "SWITCHBOARD_SUPERVISOR__PROBE_INTERVAL_MS".into(),
            "50".into(),
        )],
        ..Default::default()
    })
    .await;
    t.create_bot(ACME_KEY, "probed", json!({"probe_fatal": true}))
        .await;
    let b = t
        .wait_state(ACME_KEY, "probed", "failed", Duration::from_secs(5))
        .await;
    assert!(b["state_reason"].as_str().unwrap().contains("probe"), "{b}");
    t.stop().await;
}

#[tokio::test]
async fn config_bots_start_at_boot_and_a_reload_changes_only_what_changed() {
    let bots = r#"
[[bots]]
id = "cfg-a"
tenant = "acme"
platform = "telegram"
token = "env:CFG_A_TOKEN"

[[bots]]
id = "cfg-b"
tenant = "acme"
platform = "telegram"
token = "literal-b-token"
"#;
    let mut t = TestGateway::start(Options {
        extra_toml: bots.into(),
        env: vec![("CFG_A_TOKEN".into(), "token-a-123".into())],
        ..Default::default()
    })
    .await;
    t.wait_state(ACME_KEY, "cfg-a", "running", Duration::from_secs(5))
        .await;
    t.wait_state(ACME_KEY, "cfg-b", "running", Duration::from_secs(5))
        .await;
    // A restart on the same store keeps config bots (no duplicates, same ids).
    t.restart().await;
    t.wait_state(ACME_KEY, "cfg-a", "running", Duration::from_secs(5))
        .await;
    t.wait_state(ACME_KEY, "cfg-b", "running", Duration::from_secs(5))
        .await;
    let (_, list) = t.get(ACME_KEY, "/v1/bots").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    // Reload: cfg-a's token changes, cfg-b is unchanged, cfg-c is new, nothing is removed yet.
    let a_runs = t.world.runs("cfg-a").len();
    let b_runs = t.world.runs("cfg-b").len();
    let reloaded = format!(
        "{bots}\n[[bots]]\nid = \"cfg-c\"\ntenant = \"acme\"\nplatform = \"telegram\"\ntoken = \"c-token\"\n"
    );
    t.reload(
        &reloaded,
        vec![("CFG_A_TOKEN".into(), "token-a-456".into())],
    )
    .await;
    t.wait_state(ACME_KEY, "cfg-c", "running", Duration::from_secs(5))
        .await;
    t.wait_state(ACME_KEY, "cfg-a", "running", Duration::from_secs(5))
        .await;
    assert_eq!(
        t.world.runs("cfg-a").len(),
        a_runs + 1,
        "changed bot restarted"
    );
    assert_eq!(
        t.world.runs("cfg-b").len(),
        b_runs,
        "unchanged bot untouched"
    );
    // A bot removed from the file is stopped and deleted.
    let only_b = "[[bots]]\nid = \"cfg-b\"\ntenant = \"acme\"\nplatform = \"telegram\"\ntoken = \"literal-b-token\"\n";
    t.reload(only_b, vec![]).await;
    assert_eq!(t.get(ACME_KEY, "/v1/bots/cfg-a").await.0, 404);
    assert_eq!(t.world.runs("cfg-b").len(), b_runs);
    t.stop().await;
}

#[tokio::test]
async fn concurrent_starts_and_restarts_leave_exactly_one_run() {
    let t = TestGateway::start(Options::default()).await;
    t.create_bot(ACME_KEY, "busy", json!({})).await;
    t.wait_state(ACME_KEY, "busy", "running", Duration::from_secs(5))
        .await;
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let http = t.http.clone();
            let url = t.url(if i % 2 == 0 {
                "/v1/bots/busy/start"
            } else {
                "/v1/bots/busy/restart"
            });
            tokio::spawn(async move {
                http.post(url)
                    .bearer_auth(ACME_KEY)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    t.wait_state(ACME_KEY, "busy", "running", Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(t.world.active_runs("busy"), 1, "one connector run per bot");
    t.post(ACME_KEY, "/v1/bots/busy/stop", json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(t.world.active_runs("busy"), 0, "stop stops every run");
    t.stop().await;
}
