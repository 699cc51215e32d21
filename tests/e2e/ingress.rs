//! Platform webhook ingress: verification before anything is stored, dedup of redeliveries,
//! 2xx only after the commit, size limit.

use std::time::Duration;

use serde_json::json;
use switchboard_e2e::*;

async fn hook(t: &TestGateway, bot: &str, secret: &str, body: serde_json::Value) -> u16 {
    t.http
        .post(t.url(&format!("/webhooks/telegram/{bot}")))
        .header("x-fake-secret", secret)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_webhook_failing_verification_gets_401_and_stores_nothing() {
    let t = TestGateway::start(Options::default()).await;
    t.create_bot(ACME_KEY, "hooked", json!({"webhook_secret": "right"}))
        .await;
    t.wait_state(ACME_KEY, "hooked", "running", Duration::from_secs(5))
        .await;
    assert_eq!(
        hook(
            &t,
            "hooked",
            "wrong",
            json!({"update_id": 1, "chat": "1", "text": "forged"})
        )
        .await,
        401
    );
    assert_eq!(
        hook(
            &t,
            "hooked",
            "",
            json!({"update_id": 1, "chat": "1", "text": "forged"})
        )
        .await,
        401
    );
    let (_, msgs) = t.get(ACME_KEY, "/v1/messages").await;
    assert!(msgs["items"].as_array().unwrap().is_empty());
    assert_eq!(hook(&t, "nobody", "right", json!({})).await, 404);
    t.stop().await;
}

#[tokio::test]
async fn a_redelivered_update_is_acknowledged_and_stored_once() {
    let t = TestGateway::start(Options::default()).await;
    t.create_bot(ACME_KEY, "hooked", json!({"webhook_secret": "right"}))
        .await;
    t.wait_state(ACME_KEY, "hooked", "running", Duration::from_secs(5))
        .await;
    let body = json!({"update_id": 9, "chat": "42", "user": "7", "name": "Ada", "text": "hello"});
    for _ in 0..3 {
        assert_eq!(hook(&t, "hooked", "right", body.clone()).await, 200);
    }
    let (_, msgs) = t.get(ACME_KEY, "/v1/messages").await;
    let items = msgs["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let m = &items[0];
    assert_eq!(m["direction"], "inbound");
    assert_eq!(m["status"], "received");
    assert_eq!(m["content"], json!({"type": "text", "text": "hello"}));
    assert_eq!(m["external_id"], "m9");
    assert!(m["contact_id"].is_string());
    let (_, b) = t.get(ACME_KEY, "/v1/bots/hooked").await;
    assert_eq!(b["counters"]["received"], 1);
    assert!(b["last_seen_at"].is_string());
    t.stop().await;
}

#[tokio::test]
async fn oversized_webhook_bodies_get_413() {
    let t = TestGateway::start(Options::default()).await;
    t.create_bot(ACME_KEY, "hooked", json!({"webhook_secret": "right"}))
        .await;
    t.wait_state(ACME_KEY, "hooked", "running", Duration::from_secs(5))
        .await;
    let r = t
        .http
        .post(t.url("/webhooks/telegram/hooked"))
        .header("x-fake-secret", "right")
        .body(vec![b'x'; (1 << 20) + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    t.stop().await;
}

#[tokio::test]
async fn a_stopped_bot_answers_webhooks_with_a_retryable_503() {
    let t = TestGateway::start(Options::default()).await;
    t.create_bot(ACME_KEY, "hooked", json!({"webhook_secret": "right"}))
        .await;
    t.wait_state(ACME_KEY, "hooked", "running", Duration::from_secs(5))
        .await;
    t.post(ACME_KEY, "/v1/bots/hooked/stop", json!({})).await;
    assert_eq!(
        hook(
            &t,
            "hooked",
            "right",
            json!({"update_id": 1, "chat": "1", "text": "x"})
        )
        .await,
        503
    );
    t.stop().await;
}
