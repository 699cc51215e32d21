//! BulkSMS: the send answer, JSON webhooks, problem errors, credits, encodings, the profile
//! and inbound messages.

use std::time::Duration;

use serde_json::json;
use switchboard_sim::Provider;

use super::*;

#[tokio::test]
async fn bulksms_send_answers_a_201_array_and_the_webhook_gets_delivered() {
    let (sim, receiver) = start().await;
    let body = json!({"to": USER, "body": "hello", "from": "Switch", "userSuppliedId": "m-1"});
    let (status, answer) = bulksms_send(&sim, body).await;
    assert_eq!(status, 201, "{answer}");
    let message = &answer[0];
    assert_eq!(answer.as_array().unwrap().len(), 1);
    assert_eq!(
        (message["type"].as_str(), message["to"].as_str()),
        (Some("SENT"), Some(USER))
    );
    assert_eq!(
        (
            message["encoding"].as_str(),
            message["numberOfParts"].as_u64()
        ),
        (Some("TEXT"), Some(1))
    );
    assert_eq!(
        message["status"],
        json!({"id": "ACCEPTED.null", "type": "ACCEPTED", "subtype": null})
    );
    assert_eq!(
        (
            message["creditCost"].as_f64(),
            message["userSuppliedId"].as_str()
        ),
        (Some(1.0), Some("m-1"))
    );
    assert!(message["submission"]["id"].is_string() && message["submission"]["date"].is_string());
    let id = message["id"].as_str().unwrap().to_owned();

    let posts = receiver.wait_for("/bulksms", 1).await;
    assert!(posts[0].content_type.starts_with("application/json"));
    let report = posts[0].json();
    assert_eq!(report[0]["id"], id.as_str());
    assert_eq!(report[0]["status"]["id"], "DELIVERED.null");
    assert_eq!(report[0]["status"]["type"], "DELIVERED");
    assert!(sim.settle(Duration::from_secs(2)).await);
    assert_eq!(receiver.posts_to("/bulksms").len(), 1);
    assert_eq!(sim.balance(Provider::BulkSms, BULK_USER), 99.0);
}

#[tokio::test]
async fn bulksms_bad_credentials_are_401_and_an_invalid_to_is_400_problem_json() {
    let (sim, _receiver) = start().await;
    let (status, problem) =
        bulksms_send_as(&sim, "intruder", "", json!({"to": USER, "body": "x"})).await;
    assert_eq!(
        (status, problem["status"].as_u64()),
        (401, Some(401)),
        "{problem}"
    );
    assert_eq!(problem["title"], "Authentication Failed");
    // One bad message refuses the whole request.
    let batch = json!([{"to": USER, "body": "ok"}, {"to": "07x1", "body": "bad"}]);
    let (status, problem) = bulksms_send(&sim, batch).await;
    assert_eq!(
        (status, problem["title"].as_str()),
        (400, Some("Invalid Request"))
    );
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .starts_with("https://developer.bulksms.com/json/v1/errors#")
    );
    assert!(problem["detail"].as_str().unwrap().contains("07x1"));
    assert!(sim.sent(Provider::BulkSms, BULK_USER).is_empty());
    assert_eq!(sim.balance(Provider::BulkSms, BULK_USER), 100.0);
}

#[tokio::test]
async fn bulksms_insufficient_credits_refuse_the_whole_request_with_403_until_a_top_up() {
    let (sim, _receiver) = start().await;
    sim.set_balance(Provider::BulkSms, BULK_USER, 3.0);
    let two = json!([{"to": USER, "body": "a"}, {"to": "+254711000002", "body": "b"}]);
    assert_eq!(bulksms_send(&sim, two.clone()).await.0, 201);
    let (status, problem) = bulksms_send(&sim, two.clone()).await;
    assert_eq!(
        (status, problem["title"].as_str()),
        (403, Some("Insufficient Credits")),
        "{problem}"
    );
    assert_eq!(problem["status"], 403);
    assert_eq!(sim.balance(Provider::BulkSms, BULK_USER), 1.0);
    sim.set_balance(Provider::BulkSms, BULK_USER, 2.0);
    let (status, answer) = bulksms_send(&sim, two).await;
    assert_eq!((status, answer.as_array().map(Vec::len)), (201, Some(2)));
    assert_eq!(sim.balance(Provider::BulkSms, BULK_USER), 0.0);
    let url = format!("{}/v1/profile", sim.base_url());
    let client = reqwest::Client::new();
    let response = client
        .get(url)
        .basic_auth(BULK_USER, Some(BULK_PASSWORD))
        .send()
        .await
        .unwrap();
    let profile: Value = response.json().await.unwrap();
    assert_eq!(
        (
            profile["username"].as_str(),
            profile["credits"]["balance"].as_f64()
        ),
        (Some(BULK_USER), Some(0.0))
    );
    assert_eq!(profile["credits"]["limit"], 0);
    assert!(
        profile["quota"]["remaining"].as_u64().unwrap()
            < profile["quota"]["size"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn bulksms_auto_unicode_switches_encoding_and_parts_cost_credits() {
    let (sim, _receiver) = start().await;
    let russian = "Привет".repeat(12); // 72 characters outside GSM-7.
    let (_, answer) = bulksms_send_as(
        &sim,
        BULK_USER,
        "?auto-unicode=true",
        json!({"to": USER, "body": russian}),
    )
    .await;
    assert_eq!(
        (
            answer[0]["encoding"].as_str(),
            answer[0]["numberOfParts"].as_u64()
        ),
        (Some("UNICODE"), Some(2))
    );
    assert_eq!(answer[0]["creditCost"], 2.0);
    let (_, answer) = bulksms_send(&sim, json!({"to": USER, "body": russian})).await;
    assert_eq!(
        (
            answer[0]["encoding"].as_str(),
            answer[0]["numberOfParts"].as_u64()
        ),
        (Some("TEXT"), Some(1))
    );
    let sent = sim.sent(Provider::BulkSms, BULK_USER);
    assert_eq!(
        (sent[0].encoding.as_str(), sent[1].encoding.as_str()),
        ("UCS-2", "GSM-7")
    );
    let (status, _) = bulksms_send(
        &sim,
        json!({"to": USER, "body": "z".repeat(400), "longMessageMaxParts": 2}),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn bulksms_failed_numbers_post_failed_and_reports_follow_delivery_reports_scope() {
    let (sim, receiver) = start().await;
    sim.fail_number("+254733000000", "ABSENT_SUBSCRIBER");
    let batch = json!([
        {"to": "+254733000000", "body": "fails"},
        {"to": USER, "body": "errors only", "deliveryReports": "ERRORS"},
        {"to": "+254733000000", "body": "silent", "deliveryReports": "NONE"},
    ]);
    assert_eq!(bulksms_send(&sim, batch).await.0, 201);
    assert!(sim.settle(Duration::from_secs(2)).await);
    let posts = receiver.posts_to("/bulksms");
    assert_eq!(posts.len(), 1, "{posts:?}");
    let report = posts[0].json();
    assert_eq!(
        (
            report[0]["body"].as_str(),
            report[0]["status"]["type"].as_str()
        ),
        (Some("fails"), Some("FAILED"))
    );
    assert_eq!(report[0]["status"]["id"], "FAILED.null");
}

#[tokio::test]
async fn bulksms_inbound_posts_an_array_with_one_received_message() {
    let (sim, receiver) = start().await;
    let status = sim
        .bulksms_inbound(BULK_USER, USER, "+447700900000", "yes")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let posts = receiver.posts_to("/bulksms");
    let message = &posts[0].json()[0];
    assert_eq!(
        (message["type"].as_str(), message["body"].as_str()),
        (Some("RECEIVED"), Some("yes"))
    );
    assert_eq!(
        (message["from"].as_str(), message["to"].as_str()),
        (Some(USER), Some("+447700900000"))
    );
    assert!(message["id"].is_string() && message["receivedAt"].is_string());
}
