//! The REST API's contract: health, problem+json errors, bots, messages, events, OpenAPI.

use serde_json::json;
use switchboard_e2e::*;

#[tokio::test]
async fn health_readiness_metrics_and_openapi_answer() {
    let t = TestGateway::start(Options::default()).await;
    let r = reqwest::get(t.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"status": "ok"})
    );
    assert_eq!(reqwest::get(t.url("/readyz")).await.unwrap().status(), 200);
    let metrics = reqwest::get(t.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("switchboard_http_request_duration_seconds"),
        "{metrics}"
    );
    let spec: serde_json::Value = reqwest::get(t.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/bots",
        "/v1/messages",
        "/v1/events",
        "/v1/feed",
        "/v1/conversations/{id}/messages",
    ] {
        assert!(spec["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    t.stop().await;
}

#[tokio::test]
async fn errors_are_problem_json_with_the_right_status() {
    let t = TestGateway::start(Options::default()).await;
    // No credentials.
    let r = t.http.get(t.url("/v1/bots")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: serde_json::Value = r.json().await.unwrap();
    assert_eq!(p["status"], 401);
    assert!(p["title"].is_string() && p["type"].is_string() && p["detail"].is_string());
    // A wrong key.
    assert_eq!(t.get("sk_wrong_key_000000000000", "/v1/bots").await.0, 401);
    // Malformed JSON, wrong shape, unknown content type, unknown route.
    let r = t
        .http
        .post(t.url("/v1/messages"))
        .bearer_auth(ACME_KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (s, p) = t.post(ACME_KEY, "/v1/messages", json!({"bot_id": 7})).await;
    assert_eq!(s, 422, "{p}");
    t.create_bot(ACME_KEY, "acme-bot", json!({})).await;
    let (s, p) = t
        .post(ACME_KEY, "/v1/messages", json!({"bot_id": "acme-bot", "to": {"chat_id": "1"}, "content": {"type": "fax", "text": "x"}}))
        .await;
    assert_eq!(s, 422);
    assert!(p["detail"].as_str().unwrap().contains("fax"), "{p}");
    let (s, p) = t
        .post(ACME_KEY, "/v1/messages", json!({"bot_id": "acme-bot", "to": {"chat_id": "1"}, "content": {"type": "template", "name": "x", "language": "en"}}))
        .await;
    assert_eq!(s, 422);
    assert!(
        p["detail"].as_str().unwrap().contains("telegram"),
        "names the platform: {p}"
    );
    let (s, p) = t
        .post(ACME_KEY, "/v1/messages", json!({"bot_id": "acme-bot", "to": {"phone": "12"}, "content": {"type": "text", "text": "x"}}))
        .await;
    assert_eq!(s, 422);
    assert!(
        p["detail"].as_str().unwrap().contains("\"12\""),
        "names the number: {p}"
    );
    assert_eq!(t.get(ACME_KEY, "/v1/nothing-here").await.0, 404);
    assert_eq!(t.get(ACME_KEY, "/v1/messages/does-not-exist").await.0, 404);
    assert_eq!(t.get(ACME_KEY, "/v1/messages?since=yesterday").await.0, 400);
    // Bodies over 1 MiB.
    let big = "x".repeat((1 << 20) + 10);
    let r = t
        .http
        .post(t.url("/v1/messages"))
        .bearer_auth(ACME_KEY)
        .header("content-type", "application/json")
        .body(format!("{{\"pad\":\"{big}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    t.stop().await;
}

#[tokio::test]
async fn bots_are_created_listed_patched_and_deleted() {
    let t = TestGateway::start(Options::default()).await;
    let bot = t
        .create_bot(
            ACME_KEY,
            "acme-tg",
            json!({"mode": "polling", "rate_limit": {"per_chat": "2/s"}}),
        )
        .await;
    assert_eq!(bot["tenant"], "acme");
    assert_eq!(bot["credential_fields"], json!(["token"]));
    assert!(bot.get("token").is_none() && bot["settings"].get("token").is_none());
    t.wait_state(
        ACME_KEY,
        "acme-tg",
        "running",
        std::time::Duration::from_secs(5),
    )
    .await;
    // Duplicate id, bad id, bad settings.
    let (s, _) = t
        .post(
            ACME_KEY,
            "/v1/bots",
            json!({"id": "acme-tg", "platform": "telegram", "token": "x"}),
        )
        .await;
    assert_eq!(s, 409);
    let (s, p) = t
        .post(
            ACME_KEY,
            "/v1/bots",
            json!({"id": "Bad Id", "platform": "telegram", "token": "x"}),
        )
        .await;
    assert_eq!(s, 422);
    assert!(p["detail"].as_str().unwrap().starts_with("id:"), "{p}");
    let (s, p) = t
        .post(
            ACME_KEY,
            "/v1/bots",
            json!({"id": "b2", "platform": "telegram", "token": "x", "mode": "carrier-pigeon"}),
        )
        .await;
    assert_eq!(s, 422);
    assert!(p["detail"].as_str().unwrap().contains("mode"), "{p}");
    let (s, p) = t.post(ACME_KEY, "/v1/bots", json!({"id": "b3", "platform": "telegram", "token": "x", "rate_limit": {"per_chat": "lots"}})).await;
    assert_eq!(s, 422);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("rate_limit.per_chat"),
        "{p}"
    );
    // Patch restarts it with the new settings; credentials stay write-only.
    let runs_before = t.world.runs("acme-tg").len();
    let (s, b) = t
        .patch(
            ACME_KEY,
            "/v1/bots/acme-tg",
            json!({"mode": "webhook", "webhook_secret": "abc123"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["settings"]["mode"], "webhook");
    assert_eq!(b["credential_fields"], json!(["token", "webhook_secret"]));
    t.wait_state(
        ACME_KEY,
        "acme-tg",
        "running",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(
        t.world.runs("acme-tg").len() > runs_before,
        "patch restarted the bot"
    );
    let (s, _) = t
        .patch(ACME_KEY, "/v1/bots/acme-tg", json!({"platform": "discord"}))
        .await;
    assert_eq!(s, 422);
    // List shape and counters.
    let (s, list) = t.get(ACME_KEY, "/v1/bots").await;
    assert_eq!(s, 200);
    let item = &list["items"][0];
    for field in [
        "id",
        "tenant",
        "platform",
        "state",
        "state_reason",
        "last_error",
        "last_seen_at",
        "counters",
        "enabled",
    ] {
        assert!(item.get(field).is_some(), "bot lacks {field}: {item}");
    }
    for c in ["sent", "received", "failed", "rate_limited"] {
        assert!(item["counters"][c].is_u64());
    }
    assert!(list["next_cursor"].is_null());
    // Delete.
    assert_eq!(t.delete(ACME_KEY, "/v1/bots/acme-tg").await.0, 204);
    assert_eq!(t.get(ACME_KEY, "/v1/bots/acme-tg").await.0, 404);
    t.stop().await;
}

#[tokio::test]
async fn bot_actions_stop_start_and_restart_bots() {
    let t = TestGateway::start(Options::default()).await;
    for id in ["a1", "a2", "a3"] {
        t.create_bot(ACME_KEY, id, json!({})).await;
        t.wait_state(ACME_KEY, id, "running", std::time::Duration::from_secs(5))
            .await;
    }
    let (s, b) = t.post(ACME_KEY, "/v1/bots/a1/stop", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(b["state"], "stopped");
    assert_eq!(b["enabled"], false);
    let (s, b) = t.post(ACME_KEY, "/v1/bots/a1/start", json!({})).await;
    assert_eq!(s, 200, "{b}");
    t.wait_state(ACME_KEY, "a1", "running", std::time::Duration::from_secs(5))
        .await;
    let (s, r) = t
        .post(
            ACME_KEY,
            "/v1/bots/actions",
            json!({"action": "stop", "bots": "all"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(r["results"].as_array().unwrap().len(), 3);
    for id in ["a1", "a2", "a3"] {
        t.wait_state(ACME_KEY, id, "stopped", std::time::Duration::from_secs(5))
            .await;
    }
    let (s, r) = t
        .post(
            ACME_KEY,
            "/v1/bots/actions",
            json!({"action": "restart", "bots": ["a2", "nope"]}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(r["results"][0]["ok"], true);
    assert_eq!(r["results"][1]["ok"], false);
    t.wait_state(ACME_KEY, "a2", "running", std::time::Duration::from_secs(5))
        .await;
    let (s, _) = t
        .post(
            ACME_KEY,
            "/v1/bots/actions",
            json!({"action": "explode", "bots": "all"}),
        )
        .await;
    assert_eq!(s, 422);
    t.stop().await;
}

#[tokio::test]
async fn messages_and_conversations_are_listed_with_cursors() {
    let t = TestGateway::start(Options::default()).await;
    t.create_bot(ACME_KEY, "acme-bot", json!({})).await;
    t.wait_state(
        ACME_KEY,
        "acme-bot",
        "running",
        std::time::Duration::from_secs(5),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (s, m) = t
            .post(ACME_KEY, "/v1/messages", json!({"bot_id": "acme-bot", "to": {"chat_id": (100 + (i % 2))}, "content": {"type": "text", "text": format!("m{i}")}}))
            .await;
        assert_eq!(s, 202, "{m}");
        assert_eq!(m["status"], "queued");
        assert_eq!(m["direction"], "outbound");
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let m = t
            .wait_message(ACME_KEY, id, "sent", std::time::Duration::from_secs(5))
            .await;
        assert!(
            m["external_id"].is_string(),
            "platform ids are strings: {m}"
        );
        assert!(m["sent_at"].is_string());
        let hist: Vec<_> = m["status_history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["status"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(hist, ["queued", "sending", "sent"]);
    }
    let (_, page1) = t.get(ACME_KEY, "/v1/messages?limit=2").await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = t
        .get(ACME_KEY, &format!("/v1/messages?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 2);
    assert_ne!(page1["items"][0]["id"], page2["items"][0]["id"]);
    let (_, convs) = t.get(ACME_KEY, "/v1/conversations?bot=acme-bot").await;
    assert_eq!(convs["items"].as_array().unwrap().len(), 2);
    let conv = &convs["items"][0];
    assert_eq!(conv["kind"], "direct");
    assert!(conv["external_chat_id"].is_string());
    let (_, msgs) = t
        .get(
            ACME_KEY,
            &format!(
                "/v1/conversations/{}/messages",
                conv["id"].as_str().unwrap()
            ),
        )
        .await;
    assert!(!msgs["items"].as_array().unwrap().is_empty());
    let (_, out) = t
        .get(ACME_KEY, "/v1/messages?direction=outbound&status=sent")
        .await;
    assert_eq!(out["items"].as_array().unwrap().len(), 5);
    let (_, events) = t.get(ACME_KEY, "/v1/events?types=message.sent").await;
    assert_eq!(events["items"].as_array().unwrap().len(), 5);
    let (s, _) = t.get(ACME_KEY, "/v1/events?types=message.bogus").await;
    assert_eq!(s, 400);
    t.stop().await;
}

#[tokio::test]
async fn a_tenant_over_its_api_rate_gets_429_with_retry_after() {
    let t = TestGateway::start(Options {
        env: vec![(
            "SWITCHBOARD_SERVER__TENANT_RATE_LIMIT".into(),
            "1/min burst 3".into(),
        )],
        ..Default::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(t.get(ACME_KEY, "/v1/bots").await.0, 200);
    }
    let r = t
        .http
        .get(t.url("/v1/bots"))
        .bearer_auth(ACME_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // Other tenants and the operator are not slowed by Acme's traffic.
    assert_eq!(t.get(GLOBEX_KEY, "/v1/bots").await.0, 200);
    assert_eq!(t.get(ADMIN_TOKEN, "/v1/bots").await.0, 200);
    t.stop().await;
}

#[tokio::test]
async fn a_full_outbox_answers_429_instead_of_growing_without_bound() {
    let t = TestGateway::start(Options {
        env: vec![("SWITCHBOARD_OUTBOX__MAX_QUEUED_PER_BOT".into(), "2".into())],
        ..Default::default()
    })
    .await;
    t.create_bot(ACME_KEY, "slow", json!({})).await;
    t.wait_state(
        ACME_KEY,
        "slow",
        "running",
        std::time::Duration::from_secs(5),
    )
    .await;
    t.world
        .set_send_delay("slow", std::time::Duration::from_secs(2));
    let body =
        json!({"bot_id": "slow", "to": {"chat_id": "1"}, "content": {"type": "text", "text": "x"}});
    assert_eq!(t.post(ACME_KEY, "/v1/messages", body.clone()).await.0, 202);
    assert_eq!(t.post(ACME_KEY, "/v1/messages", body.clone()).await.0, 202);
    let (s, p) = t.post(ACME_KEY, "/v1/messages", body).await;
    assert_eq!(s, 429, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("waiting"), "{p}");
    t.stop().await;
}

#[tokio::test]
async fn a_cursor_this_api_did_not_hand_out_is_a_400_on_every_list() {
    let t = TestGateway::start(Options::default()).await;
    for list in [
        "/v1/messages",
        "/v1/conversations",
        "/v1/contacts",
        "/v1/groups",
        "/v1/broadcasts",
        "/v1/bots",
        "/v1/webhooks",
    ] {
        let (status, problem) = t.get(ACME_KEY, &format!("{list}?cursor=%21%21nope")).await;
        assert_eq!(status, 400, "{list}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("cursor"),
            "{list}: {problem}"
        );
    }
    // The event log's lists follow API.md's limits too: 0 is refused, 500 at most.
    let (status, _) = t.get(ACME_KEY, "/v1/events?limit=0").await;
    assert_eq!(status, 400);
    t.stop().await;
}
