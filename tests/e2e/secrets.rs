//! Secrets never appear in logs or API responses.

use std::time::Duration;

use serde_json::json;
use switchboard_e2e::*;

#[tokio::test]
async fn credentials_never_appear_in_logs_or_responses() {
    let config_secret = format!("cfg-secret-{}", uuid::Uuid::now_v7().simple());
    let api_secret = format!("api-secret-{}", uuid::Uuid::now_v7().simple());
    let hook_secret = format!("hook-secret-{}", uuid::Uuid::now_v7().simple());
    let bots = "[[bots]]\nid = \"cfg-secret-bot\"\ntenant = \"acme\"\nplatform = \"telegram\"\ntoken = \"env:SECRET_TOKEN\"\nfail_runs = 1\n";
    let t = TestGateway::start(Options {
        extra_toml: bots.into(),
        env: vec![("SECRET_TOKEN".into(), config_secret.clone())],
        ..Default::default()
    })
    .await;
    let mut responses = String::new();
    let bot = t
        .create_bot(
            ACME_KEY,
            "api-secret-bot",
            json!({"token": api_secret, "webhook_secret": hook_secret, "fatal": true}),
        )
        .await;
    responses.push_str(&bot.to_string());
    t.wait_state(ACME_KEY, "api-secret-bot", "failed", Duration::from_secs(5))
        .await;
    t.wait_state(
        ACME_KEY,
        "cfg-secret-bot",
        "running",
        Duration::from_secs(5),
    )
    .await;
    let (_, p) = t
        .patch(
            ACME_KEY,
            "/v1/bots/api-secret-bot",
            json!({"token": format!("{api_secret}-2"), "mode": "bogus"}),
        )
        .await;
    responses.push_str(&p.to_string());
    for path in [
        "/v1/bots",
        "/v1/bots/api-secret-bot",
        "/v1/bots/cfg-secret-bot",
        "/v1/events?limit=1000",
        "/openapi.json",
    ] {
        let (_, body) = t.get(ACME_KEY, path).await;
        responses.push_str(&body.to_string());
    }
    let (_, body) = t.get(ADMIN_TOKEN, "/v1/bots").await;
    responses.push_str(&body.to_string());
    responses.push_str(
        &reqwest::get(t.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    t.stop().await;
    let logs = captured_logs();
    assert!(logs.contains("api-secret-bot"), "the log capture works");
    for secret in [
        &config_secret,
        &api_secret,
        &hook_secret,
        &ACME_KEY.to_string(),
        &ADMIN_TOKEN.to_string(),
    ] {
        assert!(
            !responses.contains(secret.as_str()),
            "a response leaks {secret}"
        );
        assert!(!logs.contains(secret.as_str()), "the log leaks {secret}");
    }
}
