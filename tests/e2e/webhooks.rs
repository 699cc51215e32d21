//! Outbound webhooks to the business's app: signed deliveries of the feed's events, retries
//! with backoff, dead letters visible in the API, the subscription API's refusals.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use switchboard_e2e::*;

/// What the app received: headers and body of each POST.
type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// An app on 127.0.0.1 that answers the first `failures` POSTs with `failure` and the rest 200.
async fn app(failures: usize, failure: StatusCode) -> (String, Received) {
    let received: Received = Arc::default();
    let seen = received.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move {
                let mut all = seen.lock().unwrap();
                all.push((headers, body));
                if all.len() <= failures {
                    failure
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}/hook"), received)
}

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let sig = headers["x-switchboard-signature"].to_str().unwrap();
    let (t, v1) = sig
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .expect("t=<unix>,v1=<hex>");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let t: i64 = t.parse().unwrap();
    (chrono::Utc::now().timestamp() - t).abs() < 60
        && hex::encode(mac.finalize().into_bytes()) == v1
}

#[tokio::test]
async fn events_reach_the_app_signed_with_the_subscriptions_secret() {
    for backend in backends() {
        delivers_signed_events(backend).await;
    }
}

async fn delivers_signed_events(backend: Backend) {
    let t = TestGateway::start(Options {
        backend: Some(backend),
        ..Default::default()
    })
    .await;
    t.create_bot(ACME_KEY, "wh-bot", json!({"webhook_secret": "s1"}))
        .await;
    t.wait_state(ACME_KEY, "wh-bot", "running", Duration::from_secs(5))
        .await;
    let (url, received) = app(0, StatusCode::OK).await;
    const SECRET: &str = "whsec_e2e_0123456789abcdef";
    let (status, created) = t
        .post(
            ACME_KEY,
            "/v1/webhooks",
            json!({"url": url, "types": ["message.received"], "secret": SECRET}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["secret"], SECRET);
    assert_eq!(created["types"], json!(["message.received"]));
    let id = created["id"].as_str().unwrap().to_owned();
    for u in 0..3 {
        t.fake_update("wh-bot", "s1", u).await;
    }
    wait_for("three deliveries", Duration::from_secs(10), || {
        received.lock().unwrap().len() >= 3
    })
    .await;
    let all = received.lock().unwrap().clone();
    let mut texts = Vec::new();
    for (headers, body) in &all {
        assert!(
            verify(SECRET, headers, body),
            "a bad signature: {headers:?}"
        );
        assert_eq!(headers["content-type"], "application/json");
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["type"], "message.received");
        assert_eq!(event["tenant"], "acme");
        assert!(event["seq"].is_i64());
        texts.push(
            event["data"]["content"]["text"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    texts.sort();
    assert_eq!(texts, ["t0", "t1", "t2"], "each event once, no other type");
    // The body is the feed's event: the same JSON `GET /v1/events` lists.
    let (_, events) = t.get(ACME_KEY, "/v1/events?since=0&limit=500").await;
    let first: Value = serde_json::from_slice(&all[0].1).unwrap();
    assert!(events["items"].as_array().unwrap().contains(&first));
    // The secret is never shown again; another tenant does not see the subscription.
    let (status, got) = t.get(ACME_KEY, &format!("/v1/webhooks/{id}")).await;
    assert_eq!(status, 200);
    assert!(got.get("secret").is_none(), "{got}");
    assert_eq!(got["url"], url.as_str());
    let (_, list) = t.get(ACME_KEY, "/v1/webhooks").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(SECRET));
    let (status, _) = t.get(GLOBEX_KEY, &format!("/v1/webhooks/{id}")).await;
    assert_eq!(status, 404);
    // A new secret signs the next deliveries.
    const NEW_SECRET: &str = "whsec_e2e_rotated_0123456789";
    let (status, patched) = t
        .patch(
            ACME_KEY,
            &format!("/v1/webhooks/{id}"),
            json!({"secret": NEW_SECRET}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert!(patched.get("secret").is_none());
    t.fake_update("wh-bot", "s1", 3).await;
    wait_for("the fourth delivery", Duration::from_secs(10), || {
        received.lock().unwrap().len() >= 4
    })
    .await;
    let (headers, body) = received.lock().unwrap()[3].clone();
    assert!(verify(NEW_SECRET, &headers, &body));
    assert!(!verify(SECRET, &headers, &body));
    let (status, _) = t
        .patch(
            ACME_KEY,
            &format!("/v1/webhooks/{id}"),
            json!({"url": "gopher://x"}),
        )
        .await;
    assert_eq!(status, 422);
    // Deleted: nothing more is delivered.
    let (status, _) = t.delete(ACME_KEY, &format!("/v1/webhooks/{id}")).await;
    assert_eq!(status, 204);
    t.fake_update("wh-bot", "s1", 4).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(received.lock().unwrap().len(), 4);
    t.stop().await;
}

#[tokio::test]
async fn a_failing_app_is_retried_with_backoff_and_then_dead_lettered() {
    let t = TestGateway::start(Options {
        extra_toml: "[webhooks]\nretry_initial_ms = 100\nretry_max_ms = 400\nretry_for_s = 2\n"
            .into(),
        ..Default::default()
    })
    .await;
    t.create_bot(ACME_KEY, "wh-bot", json!({"webhook_secret": "s1"}))
        .await;
    t.wait_state(ACME_KEY, "wh-bot", "running", Duration::from_secs(5))
        .await;
    // One app recovers after two failures, the other never does.
    let (flaky_url, flaky) = app(2, StatusCode::SERVICE_UNAVAILABLE).await;
    let (down_url, down) = app(usize::MAX, StatusCode::INTERNAL_SERVER_ERROR).await;
    let subscribe = |url: String| {
        let t = &t;
        async move {
            let (status, created) = t
                .post(
                    ACME_KEY,
                    "/v1/webhooks",
                    json!({"url": url, "types": ["message.received"]}),
                )
                .await;
            assert_eq!(status, 201, "{created}");
            assert!(created["secret"].as_str().unwrap().len() >= 16);
            created["id"].as_str().unwrap().to_owned()
        }
    };
    let flaky_id = subscribe(flaky_url).await;
    let down_id = subscribe(down_url).await;
    let started = Instant::now();
    t.fake_update("wh-bot", "s1", 1).await;
    // The flaky app gets the event on the third attempt.
    wait_for("the retried delivery", Duration::from_secs(10), || {
        flaky.lock().unwrap().len() >= 3
    })
    .await;
    // The other is given up on after the retry period and listed as a dead letter.
    let mut dead = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let (_, d) = t
            .get(ACME_KEY, &format!("/v1/webhooks/{down_id}/dead-letters"))
            .await;
        if !d["items"].as_array().unwrap().is_empty() {
            dead = d;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let letter = &dead["items"][0];
    assert_eq!(letter["state"], "dead", "{dead}");
    assert_eq!(letter["last_status"], 500);
    let attempts = letter["attempts"].as_u64().unwrap();
    let elapsed = started.elapsed();
    // Backed off (100, 200, 400, 400... ms), not a hot loop: in the ~2 s retry period at most
    // a dozen attempts.
    assert!((3..=12).contains(&attempts), "{attempts} attempts");
    assert!(down.lock().unwrap().len() as u64 <= attempts + 1);
    assert!(
        elapsed >= Duration::from_secs(2),
        "given up too soon: {elapsed:?}"
    );
    let (_, sub) = t.get(ACME_KEY, &format!("/v1/webhooks/{down_id}")).await;
    assert_eq!(sub["dead_letters"], 1, "{sub}");
    // The flaky app's delivery went through once, with nothing left to retry.
    let (_, flaky_sub) = t.get(ACME_KEY, &format!("/v1/webhooks/{flaky_id}")).await;
    assert_eq!(flaky_sub["retrying"], 0, "{flaky_sub}");
    assert_eq!(flaky_sub["dead_letters"], 0);
    assert_eq!(flaky.lock().unwrap().len(), 3);
    t.stop().await;
}

#[tokio::test]
async fn bad_subscriptions_are_refused_with_what_is_wrong() {
    let t = TestGateway::start(Options::default()).await;
    for (body, needle) in [
        (json!({"url": "ftp://example.com/x"}), "http"),
        (json!({"url": "not a url"}), "url"),
        (json!({"url": "http://10.1.2.3/hook"}), "private"),
        (json!({"url": "http://169.254.169.254/latest"}), "private"),
        (
            json!({"url": "http://127.0.0.1:9/hook", "types": ["message.nope"]}),
            "message.nope",
        ),
        (
            json!({"url": "http://127.0.0.1:9/hook", "secret": "short"}),
            "secret",
        ),
        (json!({"types": []}), "url"),
    ] {
        let (status, problem) = t.post(ACME_KEY, "/v1/webhooks", body.clone()).await;
        assert!(
            (400..500).contains(&status),
            "{body} was accepted: {status} {problem}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{body}: {problem}"
        );
    }
    let (_, list) = t.get(ACME_KEY, "/v1/webhooks").await;
    assert_eq!(list["items"], json!([]), "nothing was stored");
    t.stop().await;
}
