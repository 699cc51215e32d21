//! Injected faults, the request log, and the control API.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_sim::{Faults, TelegramConfig, TelegramSim};

use super::*;

#[tokio::test]
async fn error_rate_one_answers_5xx_and_has_no_effect() {
    let sim = sim().await;
    user_writes(&sim, "hi");
    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    for _ in 0..4 {
        let url = format!("{}/bot{TOKEN}/sendMessage", sim.base_url());
        let response = reqwest::Client::new()
            .post(url)
            .json(&json!({"chat_id": USER, "text": "x"}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_server_error());
    }
    assert_eq!(sim.counters().responses_5xx, 4);
    assert!(sim.sent(TOKEN).is_empty());
    sim.set_faults(Faults::default());
    assert_eq!(call(&sim, "getMe", json!({})).await.0, 200);
}

#[tokio::test]
async fn drop_rate_one_closes_the_connection_without_an_answer() {
    let sim = sim().await;
    user_writes(&sim, "hi");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let get_me = format!("{}/bot{TOKEN}/getMe", sim.base_url());
    let pooled = client.get(&get_me).send().await.unwrap();
    assert_eq!(pooled.status(), 200, "keeps a pooled connection");
    sim.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    let url = format!("{}/bot{TOKEN}/sendMessage", sim.base_url());
    let error = client
        .post(url)
        .json(&json!({"chat_id": USER, "text": "x"}))
        .send()
        .await
        .unwrap_err();
    assert!(
        !error.is_timeout(),
        "expected a closed connection, got a timeout: {error}"
    );
    assert!(error.status().is_none());
    assert_eq!(sim.counters().dropped_connections, 1);
    assert!(sim.sent(TOKEN).is_empty());
    sim.set_faults(Faults::default());
    assert_eq!(client.get(&get_me).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn timeout_rate_one_leaves_the_client_to_time_out() {
    let sim = sim().await;
    sim.set_faults(Faults {
        timeout_rate: 1.0,
        ..Faults::default()
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let error = client
        .get(format!("{}/bot{TOKEN}/getMe", sim.base_url()))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert_eq!(sim.counters().hung_requests, 1);
}

#[tokio::test]
async fn latency_delays_every_api_answer() {
    let sim = sim().await;
    sim.set_faults(Faults {
        latency: Duration::from_millis(250),
        ..Faults::default()
    });
    let started = Instant::now();
    assert_eq!(call(&sim, "getMe", json!({})).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn requests_are_logged_in_order_with_the_token_redacted() {
    let sim = sim().await;
    call(&sim, "getMe", json!({})).await;
    call(&sim, "sendMessage", json!({"chat_id": 1, "text": "x"})).await;
    reqwest::get(format!("{}/nowhere", sim.base_url()))
        .await
        .unwrap();
    let log = sim.requests();
    let seen: Vec<(String, Option<String>, u16)> = log
        .iter()
        .map(|r| (r.path.clone(), r.api_method.clone(), r.status))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "/bot123456:***/getMe".to_owned(),
                Some("getme".to_owned()),
                200
            ),
            (
                "/bot123456:***/sendMessage".to_owned(),
                Some("sendmessage".to_owned()),
                400
            ),
            ("/nowhere".to_owned(), None, 404),
        ]
    );
    assert!(log.iter().all(|r| !r.path.contains("secret")));
    assert_eq!(sim.counters().requests, 3);
}

#[tokio::test]
async fn the_control_api_drives_the_simulator_over_http() {
    let sim = TelegramSim::start(TelegramConfig::default()).await.unwrap();
    let base = sim.base_url();
    let http = reqwest::Client::new();
    let bot: Value = http
        .post(format!("{base}/_sim/telegram/bots"))
        .json(&json!({"token": "77:x", "username": "ctl_bot"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bot["id"], 77);
    let created: Value = http
        .post(format!("{base}/_sim/telegram/messages"))
        .json(&json!({"token": "77:x", "chat_id": 5, "from_id": 5, "text": "from curl"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["update_id"], 1);
    let unknown = http
        .post(format!("{base}/_sim/telegram/messages"))
        .json(&json!({"token": "nobody", "chat_id": 5, "from_id": 5, "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    http.post(format!("{base}/bot77:x/sendMessage"))
        .json(&json!({"chat_id": 5, "text": "reply"}))
        .send()
        .await
        .unwrap();
    let sent: Value = http
        .get(format!("{base}/_sim/telegram/sent?token=77:x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent[0]["text"], "reply");
    assert!(sent[0].get("at").is_none());

    let faults = http
        .put(format!("{base}/_sim/faults"))
        .json(&json!({"error_rate": 1.0, "latency_ms": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(faults.status(), 200);
    assert_eq!(sim.faults().error_rate, 1.0);
    let counters: Value = http
        .get(format!("{base}/_sim/counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        counters["requests"], 1,
        "control calls must not count as platform requests"
    );
    let requests: Value = http
        .get(format!("{base}/_sim/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(requests[0]["path"], "/bot77:***/sendMessage");

    http.post(format!("{base}/_sim/telegram/revoke"))
        .json(&json!({"token": "77:x"}))
        .send()
        .await
        .unwrap();
    sim.set_faults(Faults::default());
    let status = http
        .get(format!("{base}/bot77:x/getMe"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
}
