//! Bad input on every API endpoint the OpenAPI document lists: truncated JSON, wrong types,
//! invalid UTF-8, a body over the limit, a wrong key. Each gets a 4xx problem+json, nothing
//! is stored (the event log and the rows do not move) and the gateway keeps answering.

use serde_json::{Value, json};
use switchboard_e2e::*;

/// What a request may carry as a body that no endpoint accepts.
fn bad_bodies() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        ("truncated JSON", "application/json", br#"{"bot_id": "tg", "to": {"#.to_vec()),
        ("wrong types", "application/json", br#"{"bot_id": 7, "to": [], "content": "x", "name": {"a": 1}, "contact_ids": "x", "title": false}"#.to_vec()),
        ("a JSON array", "application/json", b"[1, 2, 3]".to_vec()),
        ("invalid UTF-8", "application/json", b"{\"name\": \"\xff\xfe\xfd\"}".to_vec()),
        ("not JSON at all", "text/plain", b"hello".to_vec()),
    ]
}

/// The counts that must not move: events, messages, contacts, groups, broadcasts, bots.
async fn footprint(t: &TestGateway) -> Vec<usize> {
    let mut out = Vec::new();
    for path in [
        "/v1/events?limit=500",
        "/v1/messages?limit=500",
        "/v1/contacts?limit=500",
        "/v1/groups?limit=500",
        "/v1/broadcasts?limit=500",
        "/v1/bots?limit=500",
    ] {
        out.push(t.get_all(ACME_KEY, path).await.len());
    }
    out
}

fn concrete(path: &str) -> String {
    // Every path parameter names something that exists where it matters ("tg" is a bot),
    // or nothing at all: either way the body is what is refused.
    path.replace("{id}", "tg")
        .replace("{contact_id}", "nobody")
        .replace("{key_id}", "nokey")
}

#[tokio::test]
async fn every_endpoint_refuses_bad_bodies_with_problem_json_and_stores_nothing() {
    let t = TestGateway::start(Options::default()).await;
    // Something in every table, so that "nothing stored" is not trivially true.
    let (status, c) = t
        .post(
            ACME_KEY,
            "/v1/contacts",
            json!({"name": "Ada", "phone": "+254711000001"}),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    let (status, g) = t.post(ACME_KEY, "/v1/groups", json!({"name": "G"})).await;
    assert_eq!(status, 201, "{g}");
    let before = footprint(&t).await;

    let spec: Value = reqwest::get(t.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in ["post", "patch", "put"] {
            if item.get(method).is_none() || path.contains("/feed") {
                continue;
            }
            let url = t.url(&concrete(path));
            for (what, content_type, body) in bad_bodies() {
                let r = t
                    .http
                    .request(method.to_uppercase().parse().unwrap(), &url)
                    .bearer_auth(ACME_KEY)
                    .header("content-type", content_type)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let ctype = r
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap_or("").to_owned())
                    .unwrap_or_default();
                let text = r.text().await.unwrap_or_default();
                if path == "/v1/contacts/bulk" && what == "a JSON array" {
                    // The right shape with wrong items: each item's error, nothing created.
                    let out: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!((status, &out["created"]), (200, &json!(0)), "{text}");
                    assert_eq!(out["errors"].as_array().map(Vec::len), Some(3), "{text}");
                    continue;
                }
                assert!(
                    (400..500).contains(&status),
                    "{method} {path} with {what}: {status} {text}"
                );
                assert_eq!(
                    ctype, "application/problem+json",
                    "{method} {path} with {what}: {text}"
                );
                let p: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(p["status"], status, "{method} {path}: {p}");
                assert!(
                    p["detail"].as_str().is_some_and(|d| !d.is_empty()),
                    "{method} {path}: {p}"
                );
                checked += 1;
            }
            // Over the body limit (1 MiB by default).
            let r = t
                .http
                .request(method.to_uppercase().parse().unwrap(), &url)
                .bearer_auth(ACME_KEY)
                .header("content-type", "application/json")
                .body(vec![b' '; 6 << 20])
                .send()
                .await
                .unwrap();
            assert!(
                r.status() == 413 || r.status() == 404 || r.status() == 415,
                "{method} {path} with a huge body: {}",
                r.status()
            );
            // No key, a wrong key.
            for key in [None, Some("sk_wrong_key_000000000000")] {
                let mut req = t
                    .http
                    .request(method.to_uppercase().parse().unwrap(), &url)
                    .json(&json!({}));
                if let Some(k) = key {
                    req = req.bearer_auth(k);
                }
                let r = req.send().await.unwrap();
                assert_eq!(r.status(), 401, "{method} {path} with key {key:?}");
            }
        }
    }
    assert!(checked > 90, "only {checked} requests checked");
    assert_eq!(
        footprint(&t).await,
        before,
        "a refused request stored something"
    );
    // Still answering.
    assert_eq!(t.get(ACME_KEY, "/v1/bots").await.0, 200);
    t.stop().await;
}
