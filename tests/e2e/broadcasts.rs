//! Broadcasts end to end, on SQLite and PostgreSQL: a group of contacts messaged through an
//! Africa's Talking bot against the SMS simulator (delivery reports included), scheduling,
//! editing, cancelling, a schedule missed while the gateway was down.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_e2e::*;
use switchboard_sim::sms::{Provider, SmsConfig, SmsSim};

const AT_USER: &str = "acme-at";
const AT_KEY: &str = "atsk_0123456789abcdef";

async fn setup(backend: Backend) -> (SmsSim, TestGateway) {
    setup_paced(backend, 1000).await
}

async fn setup_paced(backend: Backend, per_second: u32) -> (SmsSim, TestGateway) {
    let sim = SmsSim::start(SmsConfig {
        delivery_delay: Duration::from_millis(50),
        ..SmsConfig::without_rate_limits()
    })
    .await
    .expect("simulator starts");
    sim.add_at_account(AT_USER, AT_KEY, 1e9);
    let base = sim.base_url();
    let t = TestGateway::start(Options {
        backend: Some(backend),
        extra_toml: format!(
            "[[bots]]\nid = \"at\"\ntenant = \"acme\"\nplatform = \"sms\"\nprovider = \"africastalking\"\n\
             username = \"{AT_USER}\"\napi_key = \"{AT_KEY}\"\napi_base = \"{base}\"\n\
             throughput_per_second = {per_second}\n"
        ),
        real_connectors: true,
        public_url: true,
        ..Default::default()
    })
    .await;
    sim.set_at_callbacks(
        AT_USER,
        &t.url("/webhooks/sms/at/status"),
        &t.url("/webhooks/sms/at/inbound"),
    );
    t.wait_state(ACME_KEY, "at", "running", Duration::from_secs(10))
        .await;
    (sim, t)
}

/// A group of `n` contacts with Kenyan numbers from `first`; returns the group id.
async fn group(t: &TestGateway, name: &str, first: usize, n: usize) -> String {
    let contacts: Vec<Value> = (first..first + n)
        .map(|i| json!({"name": format!("Contact {i}"), "phone": format!("+2547110{i:05}")}))
        .collect();
    let (status, bulk) = t.post(ACME_KEY, "/v1/contacts/bulk", json!(contacts)).await;
    assert_eq!(status, 200, "{bulk}");
    let ids: Vec<String> = t
        .get_all(ACME_KEY, "/v1/contacts?limit=500")
        .await
        .iter()
        .filter(|c| {
            let phone = c["phone"].as_str().unwrap_or("");
            let i: usize = phone
                .trim_start_matches("+2547110")
                .parse()
                .unwrap_or(usize::MAX);
            (first..first + n).contains(&i)
        })
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), n);
    let (status, g) = t.post(ACME_KEY, "/v1/groups", json!({"name": name})).await;
    assert_eq!(status, 201, "{g}");
    let gid = g["id"].as_str().unwrap().to_owned();
    let (status, g) = t
        .post(
            ACME_KEY,
            &format!("/v1/groups/{gid}/members"),
            json!({"contact_ids": ids}),
        )
        .await;
    assert_eq!(status, 200, "{g}");
    assert_eq!(g["contact_count"], n);
    gid
}

async fn wait_broadcast(
    t: &TestGateway,
    id: &str,
    done: impl Fn(&Value) -> bool,
    within: Duration,
) -> Value {
    let started = Instant::now();
    loop {
        let (status, b) = t.get(ACME_KEY, &format!("/v1/broadcasts/{id}")).await;
        assert_eq!(status, 200, "{b}");
        if done(&b) {
            return b;
        }
        assert!(started.elapsed() < within, "broadcast never got there: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn all_recipients(t: &TestGateway, id: &str) -> Vec<Value> {
    t.get_all(
        ACME_KEY,
        &format!("/v1/broadcasts/{id}/recipients?limit=200"),
    )
    .await
}

async fn progress_events(t: &TestGateway) -> Vec<Value> {
    let (status, events) = t
        .get(ACME_KEY, "/v1/events?types=broadcast.progress&limit=500")
        .await;
    assert_eq!(status, 200, "{events}");
    events["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_broadcast_to_a_500_contact_group_reaches_each_recipient_once_with_its_report() {
    for backend in backends() {
        let (sim, t) = setup(backend).await;
        let gid = group(&t, "Customers", 0, 500).await;
        let (status, b) = t
            .post(
                ACME_KEY,
                "/v1/broadcasts",
                json!({"bot_id": "at", "title": "November offer",
                       "content": {"type": "text", "text": "20% off this week"},
                       "to": {"group_id": gid}}),
            )
            .await;
        assert_eq!(status, 201, "{b}");
        assert_eq!(b["status"], "sending", "{b}");
        assert_eq!(b["recipient_count"], 500);
        let id = b["id"].as_str().unwrap().to_owned();
        let b = wait_broadcast(
            &t,
            &id,
            |b| b["status"] == "completed" && b["counts"]["delivered"] == 500,
            Duration::from_secs(90),
        )
        .await;
        assert_eq!(
            b["counts"],
            json!({"queued": 0, "sent": 0, "delivered": 500, "failed": 0, "cancelled": 0, "skipped": 0})
        );
        assert_eq!(b["segments"], 500);
        assert!(b["cost"].as_str().unwrap().starts_with("KES "), "{b}");
        // Exactly one SMS per recipient.
        let sent = sim.sent(Provider::AfricasTalking, AT_USER);
        let mut per_number: HashMap<String, usize> = HashMap::new();
        for s in &sent {
            *per_number.entry(s.to.clone()).or_default() += 1;
        }
        assert_eq!(sent.len(), 500);
        assert_eq!(per_number.len(), 500);
        let recipients = all_recipients(&t, &id).await;
        assert_eq!(recipients.len(), 500);
        for r in &recipients {
            assert_eq!(r["status"], "delivered", "{r}");
            assert_eq!(per_number.get(r["platform_id"].as_str().unwrap()), Some(&1));
            assert!(
                r["sent_at"].is_string() && r["delivered_at"].is_string(),
                "{r}"
            );
        }
        let events = progress_events(&t).await;
        assert!(
            events.iter().any(|e| e["data"]["status"] == "completed"),
            "{events:?}"
        );
        let (status, list) = t.get(ACME_KEY, "/v1/broadcasts?status=completed").await;
        assert_eq!(status, 200);
        assert_eq!(list["items"][0]["id"], id.as_str());
        // Nothing failed: a resend sends nothing.
        let (status, again) = t
            .post(
                ACME_KEY,
                &format!("/v1/broadcasts/{id}/resend-failed"),
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "{again}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sim.sent(Provider::AfricasTalking, AT_USER).len(), 500);
        t.stop().await;
        sim.shutdown();
    }
}

#[tokio::test]
async fn a_scheduled_broadcast_starts_on_time_and_a_cancelled_one_sends_nothing() {
    for backend in backends() {
        let (sim, t) = setup(backend).await;
        let gid = group(&t, "Team", 600, 3).await;
        let at = chrono::Utc::now() + chrono::Duration::seconds(2);
        let body = |title: &str| {
            json!({"bot_id": "at", "title": title,
                   "content": {"type": "text", "text": "Meeting at 10"},
                   "to": {"group_id": gid}, "scheduled_at": at.to_rfc3339()})
        };
        let (status, kept) = t.post(ACME_KEY, "/v1/broadcasts", body("kept")).await;
        assert_eq!(status, 201, "{kept}");
        assert_eq!(kept["status"], "scheduled");
        assert_eq!(kept["counts"]["queued"], 3);
        let kept_id = kept["id"].as_str().unwrap().to_owned();
        let (status, dropped) = t.post(ACME_KEY, "/v1/broadcasts", body("dropped")).await;
        assert_eq!(status, 201, "{dropped}");
        let dropped_id = dropped["id"].as_str().unwrap().to_owned();
        // Edit while scheduled; cancel; a cancelled one cannot be edited or cancelled again.
        let (status, edited) = t
            .patch(
                ACME_KEY,
                &format!("/v1/broadcasts/{kept_id}"),
                json!({"content": {"type": "text", "text": "Meeting at 11"}}),
            )
            .await;
        assert_eq!(status, 200, "{edited}");
        let (status, cancelled) = t
            .delete(ACME_KEY, &format!("/v1/broadcasts/{dropped_id}"))
            .await;
        assert_eq!(status, 200, "{cancelled}");
        assert_eq!(cancelled["status"], "cancelled");
        assert_eq!(cancelled["counts"]["cancelled"], 3);
        let (status, p) = t
            .patch(
                ACME_KEY,
                &format!("/v1/broadcasts/{dropped_id}"),
                json!({"title": "x"}),
            )
            .await;
        assert_eq!(status, 409, "{p}");
        let (status, p) = t
            .delete(ACME_KEY, &format!("/v1/broadcasts/{dropped_id}"))
            .await;
        assert_eq!(status, 409, "{p}");
        assert!(sim.sent(Provider::AfricasTalking, AT_USER).is_empty());
        let b = wait_broadcast(
            &t,
            &kept_id,
            |b| b["status"] != "scheduled",
            Duration::from_secs(10),
        )
        .await;
        let started: chrono::DateTime<chrono::Utc> =
            b["started_at"].as_str().unwrap().parse().unwrap();
        let lag = (started - at).num_milliseconds();
        assert!((0..1000).contains(&lag), "started {lag} ms after its time");
        assert_eq!(b["started_late"], false);
        let (status, p) = t
            .patch(
                ACME_KEY,
                &format!("/v1/broadcasts/{kept_id}"),
                json!({"title": "too late"}),
            )
            .await;
        assert_eq!(status, 409, "{p}");
        wait_broadcast(
            &t,
            &kept_id,
            |b| b["counts"]["delivered"] == 3,
            Duration::from_secs(20),
        )
        .await;
        let sent = sim.sent(Provider::AfricasTalking, AT_USER);
        assert_eq!(sent.len(), 3, "only the kept broadcast was sent");
        assert!(sent.iter().all(|s| s.body == "Meeting at 11"));
        t.stop().await;
        sim.shutdown();
    }
}

#[tokio::test]
async fn a_schedule_missed_while_the_gateway_was_down_starts_at_start_up_and_says_so() {
    let (sim, mut t) = setup(Backend::Sqlite).await;
    let gid = group(&t, "Night shift", 700, 2).await;
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(500);
    let (status, b) = t
        .post(
            ACME_KEY,
            "/v1/broadcasts",
            json!({"bot_id": "at", "title": "Shift change", "content": {"type": "text", "text": "Swap"},
                   "to": {"group_id": gid}, "scheduled_at": at.to_rfc3339()}),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    if let Some(g) = t.gateway.take() {
        g.shutdown().await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(sim.sent(Provider::AfricasTalking, AT_USER).is_empty());
    t.restart().await;
    let b = wait_broadcast(
        &t,
        &id,
        |b| b["counts"]["delivered"] == 2,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(b["started_late"], true, "{b}");
    let events = progress_events(&t).await;
    assert!(
        events
            .iter()
            .any(|e| e["data"]["id"] == id.as_str() && e["data"]["started_late"] == true),
        "{events:?}"
    );
    assert_eq!(sim.sent(Provider::AfricasTalking, AT_USER).len(), 2);
    t.stop().await;
    sim.shutdown();
}

#[tokio::test]
async fn stats_agree_with_the_rows() {
    for backend in backends() {
        let (sim, t) = setup(backend).await;
        let gid = group(&t, "Five", 800, 5).await;
        sim.fail_number("+254711000804", "FailedAtNetwork");
        let (status, b) = t
            .post(
                ACME_KEY,
                "/v1/broadcasts",
                json!({"bot_id": "at", "title": "Five", "content": {"type": "text", "text": "Hello"},
                       "to": {"group_id": gid}}),
            )
            .await;
        assert_eq!(status, 201, "{b}");
        let id = b["id"].as_str().unwrap().to_owned();
        wait_broadcast(
            &t,
            &id,
            |b| b["counts"]["delivered"] == 4 && b["counts"]["failed"] == 1,
            Duration::from_secs(20),
        )
        .await;
        let failed = all_recipients(&t, &id)
            .await
            .into_iter()
            .find(|r| r["status"] == "failed")
            .unwrap();
        assert_eq!(failed["platform_id"], "+254711000804");
        assert!(failed["error"].is_object(), "{failed}");
        assert_eq!(
            sim.at_inbound(AT_USER, "+254711000800", "12345", "thanks")
                .await
                .unwrap(),
            200
        );
        t.wait_inbound(ACME_KEY, Some("at"), 1, Duration::from_secs(10))
            .await;
        // Every figure is the count of the rows it stands for.
        let (status, stats) = t.get(ACME_KEY, "/v1/stats").await;
        assert_eq!(status, 200, "{stats}");
        let (_, messages) = t
            .get(ACME_KEY, "/v1/messages?direction=outbound&limit=100")
            .await;
        let outbound = messages["items"].as_array().unwrap();
        let sent_rows = outbound.iter().filter(|m| m["sent_at"].is_string()).count();
        let failed_rows = outbound.iter().filter(|m| m["status"] == "failed").count();
        assert_eq!(stats["total_sent"], sent_rows, "{stats}");
        assert_eq!(stats["failed"], failed_rows, "{stats}");
        assert_eq!(failed_rows, 1);
        assert_eq!(stats["total_received"], 1, "{stats}");
        assert_eq!(stats["sent_today"], stats["total_sent"]);
        assert_eq!(stats["sent_this_week"], stats["total_sent"]);
        assert_eq!(stats["sent_this_month"], stats["total_sent"]);
        assert_eq!(stats["total_contacts"], 5);
        assert_eq!(stats["total_groups"], 1);
        assert_eq!(stats["time_zone"], "UTC");
        assert_eq!(stats["per_bot"][0]["bot_id"], "at");
        assert_eq!(stats["per_bot"][0]["sent"], stats["total_sent"]);
        assert_eq!(stats["balances"][0]["bot_id"], "at");
        assert_eq!(stats["balances"][0]["currency"], "KES", "{stats}");
        // A restart changes nothing (the counts are stored, not counted in memory).
        let mut t = t;
        t.restart().await;
        let (_, again) = t.get(ACME_KEY, "/v1/stats").await;
        assert_eq!(again["total_sent"], stats["total_sent"]);
        assert_eq!(again["total_received"], 1);
        t.stop().await;
        sim.shutdown();
    }
}

#[tokio::test]
async fn recipients_without_a_number_are_skipped_and_bad_requests_are_refused() {
    let (sim, t) = setup(Backend::Sqlite).await;
    let mut ids = Vec::new();
    for body in [
        json!({"name": "Ann", "phone": "+254711000901"}),
        json!({"name": "No number"}),
        json!({"name": "Ben", "phone": "+254711000902"}),
    ] {
        let (status, c) = t.post(ACME_KEY, "/v1/contacts", body).await;
        assert_eq!(status, 201, "{c}");
        ids.push(c["id"].as_str().unwrap().to_owned());
    }
    let send = |to: Value| json!({"bot_id": "at", "title": "Hi", "content": {"type": "text", "text": "Hi"}, "to": to});
    let (status, b) = t
        .post(
            ACME_KEY,
            "/v1/broadcasts",
            send(json!({"contact_ids": [ids[0], ids[1], ids[2], ids[0]]})),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    assert_eq!(b["recipient_count"], 3, "a repeated contact counts once");
    assert_eq!(b["counts"]["skipped"], 1, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    let recipients = all_recipients(&t, &id).await;
    let skipped: Vec<&Value> = recipients
        .iter()
        .filter(|r| r["status"] == "skipped")
        .collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["contact_id"], ids[1].as_str());
    assert!(
        skipped[0]["skip_reason"]
            .as_str()
            .unwrap()
            .contains("no phone"),
        "{:?}",
        skipped[0]
    );
    wait_broadcast(
        &t,
        &id,
        |b| b["counts"]["delivered"] == 2,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(sim.sent(Provider::AfricasTalking, AT_USER).len(), 2);
    for (to, what) in [
        (json!({"contact_ids": ["nope"]}), "nope"),
        (json!({"contact_ids": []}), "contact_ids"),
        (json!({"group_id": "nope"}), "nope"),
        (
            json!({"group_id": "g", "contact_ids": [ids[0]]}),
            "exactly one",
        ),
    ] {
        let (status, p) = t.post(ACME_KEY, "/v1/broadcasts", send(to)).await;
        assert_eq!(status, 422, "{p}");
        assert!(p["detail"].as_str().unwrap().contains(what), "{p}");
    }
    let mut bad = send(json!({"contact_ids": [ids[0]]}));
    bad["scheduled_at"] = json!("tomorrow");
    let (status, p) = t.post(ACME_KEY, "/v1/broadcasts", bad).await;
    assert_eq!(status, 422, "{p}");
    let mut bad = send(json!({"contact_ids": [ids[0]]}));
    bad["bot_id"] = json!("ghost");
    let (status, p) = t.post(ACME_KEY, "/v1/broadcasts", bad).await;
    assert_eq!(status, 422, "{p}");
    let (status, p) = t.get(ACME_KEY, "/v1/broadcasts/nope").await;
    assert_eq!(status, 404, "{p}");
    let (status, p) = t.get(GLOBEX_KEY, &format!("/v1/broadcasts/{id}")).await;
    assert_eq!(status, 404, "another tenant's broadcast: {p}");
    assert_eq!(sim.sent(Provider::AfricasTalking, AT_USER).len(), 2);
    t.stop().await;
    sim.shutdown();
}

#[tokio::test]
async fn cancelling_a_sending_broadcast_stops_the_rest() {
    for backend in backends() {
        let (sim, t) = setup_paced(backend, 20).await;
        let gid = group(&t, "Slow", 900, 100).await;
        let (status, b) = t
            .post(
                ACME_KEY,
                "/v1/broadcasts",
                json!({"bot_id": "at", "title": "Slow", "content": {"type": "text", "text": "Hi"},
                       "to": {"group_id": gid}}),
            )
            .await;
        assert_eq!(status, 201, "{b}");
        let id = b["id"].as_str().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (status, c) = t.delete(ACME_KEY, &format!("/v1/broadcasts/{id}")).await;
        assert_eq!(status, 200, "{c}");
        assert_eq!(c["status"], "cancelled");
        let cancelled = c["counts"]["cancelled"].as_u64().unwrap();
        assert!((50..100).contains(&cancelled), "{c}");
        tokio::time::sleep(Duration::from_millis(800)).await;
        let sent = sim.sent(Provider::AfricasTalking, AT_USER).len() as u64;
        assert!(
            sent + cancelled <= 100 && sent < 50,
            "{sent} sent after cancelling {cancelled}"
        );
        let recipients = all_recipients(&t, &id).await;
        let stopped = recipients
            .iter()
            .find(|r| r["status"] == "cancelled")
            .unwrap();
        let (_, m) = t
            .get(
                ACME_KEY,
                &format!("/v1/messages/{}", stopped["message_id"].as_str().unwrap()),
            )
            .await;
        let history: Vec<&str> = m["status_history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["status"].as_str().unwrap())
            .collect();
        assert_eq!(history, ["queued", "cancelled"], "{m}");
        t.stop().await;
        sim.shutdown();
    }
}

#[tokio::test]
async fn a_scheduled_broadcast_patched_to_a_null_time_starts_now() {
    let (sim, t) = setup(Backend::Sqlite).await;
    let gid = group(&t, "Later", 900, 2).await;
    let at = chrono::Utc::now() + chrono::Duration::hours(1);
    let (status, b) = t
        .post(
            ACME_KEY,
            "/v1/broadcasts",
            json!({"bot_id": "at", "title": "Later", "content": {"type": "text", "text": "Soon"},
                   "to": {"group_id": gid}, "scheduled_at": at.to_rfc3339()}),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    assert_eq!(b["status"], "scheduled");
    let id = b["id"].as_str().unwrap().to_owned();
    let (status, patched) = t
        .patch(
            ACME_KEY,
            &format!("/v1/broadcasts/{id}"),
            json!({"scheduled_at": null}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    let b = wait_broadcast(
        &t,
        &id,
        |b| b["counts"]["delivered"] == 2,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(b["started_late"], false, "{b}");
    t.stop().await;
    sim.shutdown();
}
