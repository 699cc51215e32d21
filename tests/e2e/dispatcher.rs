//! The outbox dispatcher: idempotency, crash recovery, per-conversation order, the error
//! classification (transient / rate-limited / permanent / auth), graceful drain.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_core::Store;
use switchboard_core::store::{NewOutbound, Recipient, StoreOptions};
use switchboard_e2e::*;

fn text(bot: &str, chat: &str, t: &str) -> Value {
    json!({"bot_id": bot, "to": {"chat_id": chat}, "content": {"type": "text", "text": t}})
}

async fn ready(t: &TestGateway, bot: &str, extra: Value) {
    t.create_bot(ACME_KEY, bot, extra).await;
    t.wait_state(ACME_KEY, bot, "running", Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn an_idempotency_key_sends_once() {
    let t = TestGateway::start(Options::default()).await;
    ready(&t, "idem", json!({})).await;
    let send = |body: Value| {
        t.http
            .post(t.url("/v1/messages"))
            .bearer_auth(ACME_KEY)
            .header("idempotency-key", "order-42")
            .json(&body)
            .send()
    };
    let first = send(text("idem", "1", "once")).await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let second = send(text("idem", "1", "once")).await.unwrap();
    assert_eq!(second.status(), 202);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    let conflict = send(text("idem", "1", "something else")).await.unwrap();
    assert_eq!(conflict.status(), 409);
    t.wait_message(
        ACME_KEY,
        first["id"].as_str().unwrap(),
        "sent",
        Duration::from_secs(5),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(t.world.sent_to("idem").len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn messages_left_sending_by_a_killed_process_are_sent_at_start_up() {
    for backend in backends() {
        let t = TestGateway::start(Options {
            backend: Some(backend),
            ..Default::default()
        })
        .await;
        ready(&t, "crashy", json!({})).await;
        let (dir, url, key, world) = (
            t.dir.clone(),
            t.storage_url.clone(),
            t.master_key.clone(),
            t.world.clone(),
        );
        t.stop().await;
        // What a SIGKILL mid-send leaves behind: one row `sending`, one `queued`.
        let store = Store::open(&url, StoreOptions::default()).await.unwrap();
        let enqueue = |text: &str| NewOutbound {
            tenant: "acme".into(),
            bot_id: "crashy".into(),
            to: Recipient::Chat("77".into()),
            content: switchboard_core::model::Content::Text { text: text.into() },
            reply_to: None,
            idempotency: None,
            reply_window: None,
            chat_kind: None,
            segments: None,
        };
        let in_flight = store
            .enqueue(enqueue("in flight"))
            .await
            .unwrap()
            .message
            .id;
        store.mark_sending(&in_flight).await.unwrap();
        let queued = store.enqueue(enqueue("queued")).await.unwrap().message.id;
        store.close().await;
        let t = TestGateway::start_with(dir, url, key, world, Options::default()).await;
        let m = t
            .wait_message(ACME_KEY, &in_flight, "sent", Duration::from_secs(5))
            .await;
        assert_eq!(
            m["attempts"], 2,
            "{backend:?}: the crashed attempt counts: {m}"
        );
        t.wait_message(ACME_KEY, &queued, "sent", Duration::from_secs(5))
            .await;
        let texts: Vec<String> = t
            .world
            .sent_to("crashy")
            .iter()
            .map(|s| s.text.clone())
            .collect();
        assert_eq!(texts, ["in flight", "queued"], "{backend:?}: order kept");
        t.stop().await;
    }
}

#[tokio::test]
async fn per_conversation_order_is_kept_under_concurrency_and_retries() {
    let t = TestGateway::start(Options::default()).await;
    ready(&t, "order", json!({})).await;
    t.world.set_send_delay("order", Duration::from_millis(2));
    t.world.script(
        "order",
        vec![
            SendOutcome::Transient,
            SendOutcome::Ok,
            SendOutcome::RateLimited(Duration::from_millis(50)),
            SendOutcome::Transient,
        ],
    );
    let mut tasks = Vec::new();
    for c in 0..4 {
        for w in 0..3 {
            let http = t.http.clone();
            let url = t.url("/v1/messages");
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..10 {
                    let r = http
                        .post(&url)
                        .bearer_auth(ACME_KEY)
                        .json(&text("order", &format!("chat{c}"), &format!("w{w}-{i}")))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202);
                    let v: Value = r.json().await.unwrap();
                    ids.push(v["id"].as_str().unwrap().to_string());
                }
                ids
            }));
        }
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    for id in &all {
        t.wait_message(ACME_KEY, id, "sent", Duration::from_secs(10))
            .await;
    }
    // Message ids are assigned in commit order, so per chat the sends must be in id order.
    let mut per_chat: HashMap<String, Vec<String>> = HashMap::new();
    for s in t.world.sent_to("order") {
        per_chat.entry(s.chat).or_default().push(s.message_id);
    }
    assert_eq!(per_chat.len(), 4);
    for (chat, sent) in per_chat {
        let mut sorted = sent.clone();
        sorted.sort();
        assert_eq!(sent, sorted, "chat {chat} sent out of order");
        assert_eq!(sent.len(), 30);
    }
    t.stop().await;
}

#[tokio::test]
async fn transient_errors_are_retried_up_to_three_attempts() {
    let t = TestGateway::start(Options::default()).await;
    ready(&t, "retry", json!({})).await;
    t.world.script(
        "retry",
        vec![SendOutcome::Transient, SendOutcome::Transient],
    );
    let (_, m) = t
        .post(
            ACME_KEY,
            "/v1/messages",
            text("retry", "1", "third time lucky"),
        )
        .await;
    let m = t
        .wait_message(
            ACME_KEY,
            m["id"].as_str().unwrap(),
            "sent",
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(m["attempts"], 3);
    assert!(m["error"].is_null());
    t.world.script("retry", vec![SendOutcome::Transient; 3]);
    let (_, m) = t
        .post(ACME_KEY, "/v1/messages", text("retry", "1", "never"))
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    let m = t
        .wait_message(ACME_KEY, &id, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(m["attempts"], 3);
    assert_eq!(m["error"]["code"], "transient");
    assert!(
        m["error"]["message"]
            .as_str()
            .unwrap()
            .contains("3 attempts"),
        "{m}"
    );
    assert_eq!(t.world.attempts_of(&id), 3);
    let (_, ev) = t.get(ACME_KEY, "/v1/events?types=message.failed").await;
    assert_eq!(ev["items"][0]["data"]["id"], id.as_str());
    let (_, b) = t.get(ACME_KEY, "/v1/bots/retry").await;
    assert_eq!(b["counters"]["failed"], 1);
    assert_eq!(b["counters"]["sent"], 1);
    t.stop().await;
}

#[tokio::test]
async fn rate_limited_sends_wait_retry_after_without_counting_attempts() {
    let t = TestGateway::start(Options::default()).await;
    ready(&t, "limited", json!({})).await;
    t.world.script(
        "limited",
        vec![
            SendOutcome::RateLimited(Duration::from_millis(300)),
            SendOutcome::RateLimited(Duration::from_millis(300)),
        ],
    );
    let started = Instant::now();
    let (_, m) = t
        .post(ACME_KEY, "/v1/messages", text("limited", "5", "patience"))
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    let m = t
        .wait_message(ACME_KEY, &id, "sent", Duration::from_secs(5))
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "waited retry_after twice"
    );
    assert_eq!(m["attempts"], 1, "rate limits are not attempts: {m}");
    let tries = t
        .world
        .attempts
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, _)| *m == id)
        .map(|(_, at)| *at)
        .collect::<Vec<_>>();
    assert!(tries[1] - tries[0] >= Duration::from_millis(290));
    let (_, b) = t.get(ACME_KEY, "/v1/bots/limited").await;
    assert_eq!(b["counters"]["rate_limited"], 2);
    t.stop().await;
}

#[tokio::test]
async fn permanent_errors_fail_the_message_with_the_platform_code() {
    let t = TestGateway::start(Options::default()).await;
    ready(&t, "perm", json!({})).await;
    t.world.script("perm", vec![SendOutcome::Permanent]);
    let (_, m) = t
        .post(ACME_KEY, "/v1/messages", text("perm", "404", "nobody"))
        .await;
    let m = t
        .wait_message(
            ACME_KEY,
            m["id"].as_str().unwrap(),
            "failed",
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(m["attempts"], 1);
    assert_eq!(
        m["error"],
        json!({"code": "permanent", "message": "Bad Request: chat not found", "platform_code": "400"})
    );
    t.stop().await;
}

#[tokio::test]
async fn rejected_credentials_fail_the_bot_and_keep_the_message_queued() {
    let t = TestGateway::start(Options::default()).await;
    ready(&t, "auth", json!({})).await;
    t.world.script("auth", vec![SendOutcome::Auth]);
    let (_, m) = t
        .post(
            ACME_KEY,
            "/v1/messages",
            text("auth", "1", "waits for a fix"),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    t.wait_state(ACME_KEY, "auth", "failed", Duration::from_secs(5))
        .await;
    let m = t
        .wait_message(ACME_KEY, &id, "queued", Duration::from_secs(5))
        .await;
    assert_eq!(m["error"]["code"], "auth");
    // The operator fixes the token: the bot starts and the message goes out.
    let (s, _) = t
        .patch(ACME_KEY, "/v1/bots/auth", json!({"token": "fixed"}))
        .await;
    assert_eq!(s, 200);
    t.wait_message(ACME_KEY, &id, "sent", Duration::from_secs(5))
        .await;
    t.stop().await;
}

#[tokio::test]
async fn shutdown_waits_for_sends_in_flight() {
    let t = TestGateway::start(Options::default()).await;
    ready(&t, "drain", json!({})).await;
    t.world.set_send_delay("drain", Duration::from_millis(500));
    let (_, m) = t
        .post(ACME_KEY, "/v1/messages", text("drain", "1", "finish me"))
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    while t.world.attempts_of(&id) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (dir, url, key, world) = (
        t.dir.clone(),
        t.storage_url.clone(),
        t.master_key.clone(),
        t.world.clone(),
    );
    t.stop().await;
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    let m = store
        .get_message(&switchboard_core::store::Scope::All, &id)
        .await
        .unwrap();
    assert_eq!(
        m.status,
        switchboard_core::model::MessageStatus::Sent,
        "the in-flight send finished before exit"
    );
    store.close().await;
    drop((dir, key, world));
}
