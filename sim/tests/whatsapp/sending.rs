//! Sending through the Graph API: authentication, the accepted answer, status webhooks, the
//! 24 h window, validation envelopes and throughput limits.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use switchboard_sim::framework::rate::Rate;
use switchboard_sim::{PhoneNumber, WhatsAppConfig};

use super::*;

#[tokio::test]
async fn a_missing_unknown_or_revoked_token_is_401_with_code_190() {
    let (sim, _receiver) = start().await;
    let path = format!("{PHONE_ID}/messages");
    let body = Some(text_to(USER, "hi"));
    for token in [None, Some("EAAG-nope")] {
        let (status, answer) = graph_as(&sim, Method::POST, &path, token, body.clone()).await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["error"]["code"], 190);
        assert_eq!(answer["error"]["type"], "OAuthException");
        assert!(answer["error"]["fbtrace_id"].is_string());
    }
    sim.revoke_token(TOKEN);
    let (status, answer) = graph_as(&sim, Method::POST, &path, Some(TOKEN), body.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"]["code"], 190);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Error validating access token")
    );
    assert!(sim.sent(PHONE_ID).is_empty());
    assert_eq!(sim.error_codes()[&190], 3);
}

#[tokio::test]
async fn a_token_acts_only_on_its_own_phone_number() {
    let (sim, _receiver) = start().await;
    sim.add_phone_number(PhoneNumber::new("200000000000001", "EAAG-other", "s"));
    let (status, answer) = graph_as(
        &sim,
        Method::POST,
        "200000000000001/messages",
        Some(TOKEN),
        Some(text_to(USER, "hi")),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], 100);
    assert_eq!(answer["error"]["error_subcode"], 33);
    assert!(sim.sent("200000000000001").is_empty());
}

#[tokio::test]
async fn the_phone_number_node_is_not_offered() {
    // PLATFORMS.md lists only the messages, media and media nodes: a gateway must not depend
    // on reading the phone number's own node.
    let (sim, _receiver) = start().await;
    let (status, answer) = graph_as(&sim, Method::GET, PHONE_ID, Some(TOKEN), None).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], 100);
}

#[tokio::test]
async fn a_text_send_returns_a_wamid_then_signed_sent_delivered_and_read_statuses() {
    let (sim, receiver) = start().await;
    let inbound = user_writes(&sim, "hi");
    let mut body = text_to("+1 555 123 4567", "hello back");
    body["context"] = json!({"message_id": inbound});
    let (status, answer) = send(&sim, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["messaging_product"], "whatsapp");
    assert_eq!(
        answer["contacts"],
        json!([{"input": "+1 555 123 4567", "wa_id": USER}])
    );
    let wamid = answer["messages"][0]["id"].as_str().unwrap().to_owned();
    assert!(wamid.starts_with("wamid."));
    assert!(answer["messages"][0].get("message_status").is_none());

    eventually("three statuses", || receiver.statuses_of(&wamid).len() == 3).await;
    assert_eq!(receiver.statuses_of(&wamid), ["sent", "delivered", "read"]);
    assert!(receiver.posts().iter().all(|p| p.signature_valid));
    let statuses = receiver.statuses();
    let sent = statuses.iter().find(|s| s["status"] == "sent").unwrap();
    assert_eq!(sent["recipient_id"], USER);
    assert!(sent["timestamp"].as_str().unwrap().parse::<i64>().unwrap() > 1_600_000_000);
    assert_eq!(sent["conversation"]["origin"]["type"], "service");
    assert!(sent["conversation"]["expiration_timestamp"].is_string());
    assert_eq!(
        sent["pricing"],
        json!({"billable": true, "pricing_model": "CBP", "category": "service"})
    );
    let delivered = statuses
        .iter()
        .find(|s| s["status"] == "delivered")
        .unwrap();
    assert_eq!(delivered["conversation"]["id"], sent["conversation"]["id"]);

    let recorded = sim.sent(PHONE_ID);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].wamid, wamid);
    assert_eq!(recorded[0].kind, "text");
    assert_eq!(recorded[0].context.as_deref(), Some(inbound.as_str()));
    assert_eq!(recorded[0].body["text"]["body"], "hello back");
    assert!(sim.settle(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn without_read_receipts_delivered_is_the_last_status() {
    let config = WhatsAppConfig {
        read_receipts: false,
        ..WhatsAppConfig::default()
    };
    let (sim, receiver) = start_with(config, 0).await;
    user_writes(&sim, "hi");
    let (_, answer) = send(&sim, text_to(USER, "x")).await;
    let wamid = answer["messages"][0]["id"].as_str().unwrap().to_owned();
    assert!(sim.settle(Duration::from_secs(5)).await);
    assert_eq!(receiver.statuses_of(&wamid), ["sent", "delivered"]);
}

#[tokio::test]
async fn a_free_form_send_without_a_window_fails_with_131047_but_a_template_is_delivered() {
    let (sim, receiver) = start().await;
    let (status, answer) = send(&sim, text_to(USER, "cold")).await;
    assert_eq!(status, 200, "accepted first, failed later");
    let cold = answer["messages"][0]["id"].as_str().unwrap().to_owned();
    let (status, answer) = send(&sim, template_to(USER)).await;
    assert_eq!(status, 200);
    assert_eq!(answer["messages"][0]["message_status"], "accepted");
    let template = answer["messages"][0]["id"].as_str().unwrap().to_owned();

    assert!(sim.settle(Duration::from_secs(5)).await);
    assert_eq!(receiver.statuses_of(&cold), ["failed"]);
    let failed = receiver
        .statuses()
        .into_iter()
        .find(|s| s["id"] == cold.as_str())
        .unwrap();
    let error = &failed["errors"][0];
    assert_eq!(error["code"], 131047);
    assert_eq!(error["title"], "Re-engagement message");
    assert!(
        error["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("24 hours")
    );
    assert!(error["href"].as_str().unwrap().contains("error-codes"));
    assert_eq!(
        receiver.statuses_of(&template),
        ["sent", "delivered", "read"]
    );
    assert_eq!(sim.error_codes()[&131047], 1);
    assert_eq!(sim.sent(PHONE_ID).len(), 2);
}

#[tokio::test]
async fn advancing_the_clock_25_hours_closes_an_open_window() {
    let (sim, receiver) = start().await;
    user_writes(&sim, "hi");
    let (_, answer) = send(&sim, text_to(USER, "in time")).await;
    let in_time = answer["messages"][0]["id"].as_str().unwrap().to_owned();
    sim.advance_clock(Duration::from_secs(25 * 3600));
    let (_, answer) = send(&sim, text_to(USER, "too late")).await;
    let too_late = answer["messages"][0]["id"].as_str().unwrap().to_owned();
    assert!(sim.settle(Duration::from_secs(5)).await);
    assert_eq!(receiver.statuses_of(&in_time)[0], "sent");
    assert_eq!(receiver.statuses_of(&too_late), ["failed"]);

    user_writes(&sim, "back again");
    let (_, answer) = send(&sim, text_to(USER, "welcome back")).await;
    let reopened = answer["messages"][0]["id"].as_str().unwrap().to_owned();
    assert!(sim.settle(Duration::from_secs(5)).await);
    assert_eq!(receiver.statuses_of(&reopened)[0], "sent");
}

#[tokio::test]
async fn invalid_sends_get_metas_error_envelope_and_have_no_effect() {
    let (sim, _receiver) = start().await;
    user_writes(&sim, "hi");
    let buttons: Vec<Value> = (0..4)
        .map(|i| json!({"type": "reply", "reply": {"id": format!("b{i}"), "title": format!("B{i}")}}))
        .collect();
    let four_buttons = json!({"messaging_product": "whatsapp", "to": USER, "type": "interactive",
        "interactive": {"type": "button", "body": {"text": "Pick"}, "action": {"buttons": buttons}}});
    let (status, answer) = send(&sim, four_buttons).await;
    assert_eq!(status, 400);
    let error = &answer["error"];
    assert_eq!(error["code"], 131009);
    assert_eq!(error["message"], "(#131009) Parameter value is not valid");
    assert_eq!(error["type"], "OAuthException");
    assert_eq!(error["error_data"]["messaging_product"], "whatsapp");
    assert!(
        error["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("buttons")
    );

    let cases = [
        (json!({"to": USER, "text": {"body": "x"}}), 100),
        (
            json!({"messaging_product": "whatsapp", "text": {"body": "x"}}),
            100,
        ),
        (
            json!({"messaging_product": "whatsapp", "to": USER, "type": "hologram"}),
            100,
        ),
        (text_to(USER, &"x".repeat(4097)), 100),
        (
            json!({"messaging_product": "whatsapp", "to": USER, "type": "image",
            "image": {"id": "999999"}}),
            100,
        ),
        (
            json!({"messaging_product": "whatsapp", "to": USER, "type": "template",
            "template": {"name": "hello_world"}}),
            131008,
        ),
    ];
    for (body, code) in cases {
        let (status, answer) = send(&sim, body.clone()).await;
        assert_eq!(
            (status, answer["error"]["code"].as_i64()),
            (400, Some(code)),
            "{body}"
        );
    }
    assert!(sim.sent(PHONE_ID).is_empty());
    assert_eq!(sim.error_codes()[&100], 5);
    assert_eq!(sim.counters().responses_4xx, 7);
}

#[tokio::test]
async fn mark_as_read_answers_success_for_a_received_message() {
    let (sim, _receiver) = start().await;
    let inbound = user_writes(&sim, "hi");
    let read = json!({"messaging_product": "whatsapp", "status": "read", "message_id": inbound});
    assert_eq!(send(&sim, read).await, (200, json!({"success": true})));
    assert_eq!(sim.marked_read(PHONE_ID), [inbound]);
    let unknown =
        json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X"});
    assert_eq!(send(&sim, unknown).await.0, 400);
}

#[tokio::test]
async fn throughput_over_the_limit_answers_130429_and_is_counted_as_a_rate_limit() {
    let config = WhatsAppConfig {
        throughput: Rate::new(5, Duration::from_secs(60), 5),
        ..WhatsAppConfig::default()
    };
    let (sim, _receiver) = start_with(config, 0).await;
    for n in 0..5 {
        let (status, _) = send(&sim, template_to(&format!("1555000000{n}"))).await;
        assert_eq!(status, 200);
    }
    let (status, answer) = send(&sim, template_to("15550000009")).await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], 130429);
    assert_eq!(answer["error"]["message"], "(#130429) Rate limit hit");
    assert_eq!(
        answer["error"]["error_data"]["details"],
        "Cloud API message throughput has been reached."
    );
    assert_eq!(sim.sent(PHONE_ID).len(), 5, "a rejected send has no effect");
    let counters = sim.counters();
    assert_eq!((counters.responses_429, counters.responses_4xx), (1, 1));
    assert_eq!(sim.error_codes()[&130429], 1);
}

#[tokio::test]
async fn the_pair_rate_limits_one_recipient_with_131056() {
    let config = WhatsAppConfig {
        pair_rate: Rate::new(1, Duration::from_secs(6), 3),
        ..WhatsAppConfig::default()
    };
    let (sim, _receiver) = start_with(config, 0).await;
    for _ in 0..3 {
        assert_eq!(send(&sim, template_to(USER)).await.0, 200);
    }
    let (status, answer) = send(&sim, template_to(USER)).await;
    assert_eq!(
        (status, answer["error"]["code"].as_i64()),
        (400, Some(131056))
    );
    assert_eq!(
        send(&sim, template_to("15559990000")).await.0,
        200,
        "another user is fine"
    );
    assert_eq!(sim.counters().responses_429, 1);
    assert_eq!(sim.error_codes()[&131056], 1);
}
