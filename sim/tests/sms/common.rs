//! What the three providers share: at-least-once reports, webhook retries, faults, the
//! webhook log and the control API.

use std::time::Duration;

use serde_json::json;
use switchboard_sim::{Faults, Provider, SmsConfig, WebhookKind};

use super::*;

#[tokio::test]
async fn sms_redeliver_reports_posts_every_report_twice() {
    let config = SmsConfig {
        redeliver_reports: true,
        ..fast()
    };
    let (sim, receiver) = start_with(config, 0).await;
    let callback = receiver.url("/twilio");
    let form = [
        ("To", USER),
        ("From", TWILIO_NUMBER),
        ("Body", "x"),
        ("StatusCallback", &callback),
    ];
    assert_eq!(twilio_create(&sim, &form).await.0, 201);
    at_send(&sim, USER, "x").await;
    assert_eq!(
        bulksms_send(&sim, json!({"to": USER, "body": "x"})).await.0,
        201
    );
    assert!(sim.settle(Duration::from_secs(2)).await);

    let count = |posts: Vec<Post>, field: &str, value: &str| {
        posts.iter().filter(|p| p.param(field) == value).count()
    };
    assert_eq!(
        count(receiver.posts_to("/twilio"), "MessageStatus", "sent"),
        2
    );
    assert_eq!(
        count(receiver.posts_to("/twilio"), "MessageStatus", "delivered"),
        2
    );
    assert_eq!(count(receiver.posts_to("/status"), "status", "Sent"), 2);
    assert_eq!(count(receiver.posts_to("/status"), "status", "Success"), 2);
    let bulk = receiver.posts_to("/bulksms");
    assert_eq!(bulk.len(), 2);
    assert_eq!(bulk[0].body, bulk[1].body);
    let redeliveries = sim.deliveries().iter().filter(|d| d.redelivery).count();
    assert_eq!(redeliveries, 5);
}

#[tokio::test]
async fn sms_failing_webhooks_are_retried_until_a_2xx_and_every_attempt_is_logged() {
    let (sim, _receiver) = start_with(fast(), 2).await;
    assert_eq!(
        bulksms_send(&sim, json!({"to": USER, "body": "x"})).await.0,
        201
    );
    assert!(sim.settle(Duration::from_secs(2)).await);
    let attempts: Vec<(u32, u16)> = sim
        .deliveries()
        .iter()
        .map(|d| (d.attempt, d.status))
        .collect();
    assert_eq!(attempts, [(1, 500), (2, 500), (3, 200)]);
    let delivery = &sim.deliveries()[2];
    assert_eq!(
        (delivery.provider, delivery.kind),
        (Provider::BulkSms, WebhookKind::Status)
    );
    assert_eq!(delivery.json()[0]["status"]["type"], "DELIVERED");
    let counters = sim.counters();
    assert_eq!(
        (counters.webhook_failures, counters.webhook_deliveries),
        (2, 1)
    );
}

#[tokio::test]
async fn sms_a_webhook_that_keeps_failing_is_given_up_after_the_configured_attempts() {
    let config = SmsConfig {
        webhook_attempts: 3,
        ..fast()
    };
    let (sim, _receiver) = start_with(config, usize::MAX).await;
    at_send(&sim, USER, "x").await;
    assert!(sim.settle(Duration::from_secs(2)).await);
    // Two reports (Sent, Success), three attempts each.
    assert_eq!(sim.deliveries().len(), 6);
    assert!(sim.deliveries().iter().all(|d| d.status == 500));
    let success = sim
        .deliveries()
        .iter()
        .filter(|d| d.param("status").as_deref() == Some("Success"))
        .count();
    assert_eq!(success, 3);
}

#[tokio::test]
async fn sms_injected_server_errors_answer_the_providers_way_and_change_nothing() {
    let (sim, _receiver) = start().await;
    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let form = [("To", USER), ("From", TWILIO_NUMBER), ("Body", "x")];
    let (status, _) = twilio_create(&sim, &form).await;
    assert!(matches!(status, 500 | 502), "{status}");
    let (status, _) = at_send(&sim, USER, "x").await;
    assert!(matches!(status, 500 | 502));
    assert!(sim.sent(Provider::Twilio, TWILIO_SID).is_empty());
    assert!(sim.sent(Provider::AfricasTalking, AT_USER).is_empty());
    assert_eq!(sim.balance(Provider::AfricasTalking, AT_USER), 100.0);
    let requests = sim.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].api_method.as_deref(),
        Some("africastalking/messaging")
    );
    assert_eq!(sim.counters().responses_5xx, 2);
}

#[tokio::test]
async fn sms_control_api_creates_accounts_sets_balances_and_posts_inbound() {
    let sim = SmsSim::start(fast()).await.unwrap();
    let receiver = Receiver::start(0).await;
    let client = reqwest::Client::new();
    let control = |path: &str| format!("{}/_sim/sms/{path}", sim.base_url());
    let post = |path: &str, body: Value| client.post(control(path)).json(&body).send();
    let account =
        json!({"provider": "africastalking", "account": "ctl", "secret": "k", "balance": 5});
    assert_eq!(post("accounts", account).await.unwrap().status(), 200);
    let callbacks = json!({"username": "ctl", "delivery_url": receiver.url("/d"), "incoming_url": receiver.url("/i")});
    assert_eq!(
        post("africastalking/callbacks", callbacks)
            .await
            .unwrap()
            .status(),
        200
    );
    let top_up = json!({"provider": "africastalking", "account": "ctl", "amount": 7.5});
    assert_eq!(post("balance", top_up).await.unwrap().status(), 200);
    assert_eq!(sim.balance(Provider::AfricasTalking, "ctl"), 7.5);
    let inbound = json!({"provider": "africastalking", "account": "ctl", "from": USER, "to": "123", "body": "hi"});
    let answer: Value = post("inbound", inbound)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], 200);
    assert_eq!(receiver.posts_to("/i").len(), 1);
    let unknown = json!({"provider": "bulksms", "account": "nobody", "amount": 1});
    assert_eq!(post("balance", unknown).await.unwrap().status(), 404);
    let wrong = json!({"provider": "pigeon", "account": "x", "secret": "y"});
    assert_eq!(post("accounts", wrong).await.unwrap().status(), 400);
    let query = control("balance?provider=africastalking&account=ctl");
    let balance: Value = client
        .get(query)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(balance["balance"], 7.5);
    assert!(sim.requests().is_empty(), "control calls are not recorded");
}
