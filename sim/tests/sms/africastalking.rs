//! Africa's Talking: per-recipient verdicts, delivery reports, authentication, balance and
//! incoming messages.

use std::time::Duration;

use switchboard_sim::Provider;

use super::*;

#[tokio::test]
async fn at_send_gives_each_recipient_a_verdict_and_reports_sent_then_success() {
    let (sim, receiver) = start().await;
    let (status, answer) = at_send(&sim, "+254711000000, 0711000001", "hello").await;
    assert_eq!(status, 201, "{answer}");
    let data = &answer["SMSMessageData"];
    assert_eq!(data["Message"], "Sent to 1/2 Total Cost: KES 0.8000");
    let recipients = data["Recipients"].as_array().unwrap();
    assert_eq!(recipients[0]["statusCode"], 101);
    assert_eq!(recipients[0]["status"], "Success");
    assert_eq!(recipients[0]["number"], "+254711000000");
    assert_eq!(recipients[0]["cost"], "KES 0.8000");
    let id = recipients[0]["messageId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ATXid_"), "{id}");
    assert_eq!(recipients[1]["statusCode"], 403);
    assert_eq!(recipients[1]["status"], "InvalidPhoneNumber");
    assert_eq!(
        (
            recipients[1]["cost"].as_str(),
            recipients[1]["messageId"].as_str()
        ),
        (Some("0"), Some("None"))
    );

    let reports = receiver.wait_for("/status", 2).await;
    let statuses: Vec<String> = reports.iter().map(|p| p.param("status")).collect();
    assert_eq!(statuses, ["Sent", "Success"]);
    for report in &reports {
        assert_eq!(report.param("id"), id);
        assert_eq!(report.param("phoneNumber"), USER);
        assert_eq!(
            (report.param("networkCode"), report.param("retryCount")),
            ("63902".into(), "0".into())
        );
        assert_eq!(report.signature_valid, None);
    }
    let sent = sim.sent(Provider::AfricasTalking, AT_USER);
    assert_eq!(
        (sent.len(), sent[0].from.as_str(), sent[0].cost),
        (1, "SWITCH", 0.8)
    );
}

#[tokio::test]
async fn at_wrong_api_key_or_username_is_401_with_text() {
    let (sim, _receiver) = start().await;
    let form = [("username", AT_USER), ("to", USER), ("message", "x")];
    let (status, text) = at_send_as(&sim, "wrong", &form).await;
    assert_eq!(
        (status, text.as_str()),
        (401, "The supplied authentication is invalid")
    );
    let form = [("username", "nobody"), ("to", USER), ("message", "x")];
    assert_eq!(at_send_as(&sim, AT_KEY, &form).await.0, 401);
    let url = format!("{}/version1/user?username={AT_USER}", sim.base_url());
    let response = reqwest::Client::new()
        .get(url)
        .header("apiKey", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(sim.balance(Provider::AfricasTalking, AT_USER), 100.0);
}

#[tokio::test]
async fn at_balance_runs_out_mid_send_with_405_and_a_top_up_resumes_sending() {
    let (sim, _receiver) = start().await;
    sim.set_balance(Provider::AfricasTalking, AT_USER, 2.0);
    let (_, answer) = at_send(&sim, "+254711000001,+254711000002,+254711000003", "x").await;
    let codes: Vec<u64> = answer["SMSMessageData"]["Recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["statusCode"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [101, 101, 405]);
    let refused = &answer["SMSMessageData"]["Recipients"][2];
    assert_eq!(
        (refused["status"].as_str(), refused["messageId"].as_str()),
        (Some("InsufficientBalance"), Some("None"))
    );
    assert_eq!(
        answer["SMSMessageData"]["Message"],
        "Sent to 2/3 Total Cost: KES 1.6000"
    );

    let url = format!("{}/version1/user?username={AT_USER}", sim.base_url());
    let client = reqwest::Client::new();
    let response = client
        .get(&url)
        .header("apiKey", AT_KEY)
        .send()
        .await
        .unwrap();
    let user: Value = response.json().await.unwrap();
    assert_eq!(user["UserData"]["balance"], "KES 0.4000");

    let (_, answer) = at_send(&sim, "+254711000004", "x").await;
    assert_eq!(answer["SMSMessageData"]["Recipients"][0]["statusCode"], 405);
    assert_eq!(
        answer["SMSMessageData"]["Message"],
        "Sent to 0/1 Total Cost: 0"
    );
    sim.set_balance(Provider::AfricasTalking, AT_USER, 10.0);
    // A 2-segment message costs 1.6.
    let (_, answer) = at_send(&sim, "+254711000004", &"y".repeat(200)).await;
    let recipient = &answer["SMSMessageData"]["Recipients"][0];
    assert_eq!(
        (recipient["statusCode"].as_u64(), recipient["cost"].as_str()),
        (Some(101), Some("KES 1.6000"))
    );
    assert!((sim.balance(Provider::AfricasTalking, AT_USER) - 8.4).abs() < 1e-9);
    assert_eq!(sim.sent(Provider::AfricasTalking, AT_USER).len(), 3);
}

#[tokio::test]
async fn at_failed_number_reports_failed_with_its_reason() {
    let (sim, receiver) = start().await;
    sim.fail_number("+254722000000", "UserInBlacklist");
    at_send(&sim, "+254722000000", "x").await;
    assert!(sim.settle(Duration::from_secs(2)).await);
    let reports = receiver.posts_to("/status");
    let last = reports.last().unwrap();
    assert_eq!(
        (last.param("status"), last.param("failureReason")),
        ("Failed".into(), "UserInBlacklist".into())
    );
    assert_eq!(reports[0].param("failureReason"), "");
}

#[tokio::test]
async fn at_inbound_posts_the_incoming_form_to_the_accounts_callback() {
    let (sim, receiver) = start().await;
    let status = sim
        .at_inbound(AT_USER, USER, "21525", "STOP")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let posts = receiver.posts_to("/inbound");
    assert_eq!(posts.len(), 1);
    let post = &posts[0];
    assert_eq!(
        (post.param("from"), post.param("to"), post.param("text")),
        (USER.into(), "21525".into(), "STOP".into())
    );
    assert_eq!(post.param("networkCode"), "63902");
    for field in ["date", "id", "linkId"] {
        assert!(!post.param(field).is_empty(), "{field}");
    }
    assert!(sim.at_inbound("nobody", USER, "21525", "x").await.is_err());
}
