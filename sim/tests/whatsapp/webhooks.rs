//! Webhooks: the payload shapes of user messages, batching, retries, redelivery, and the
//! verification handshake.

use std::time::Duration;

use base64::Engine;
use serde_json::json;
use sha2::Digest;
use switchboard_sim::{WaInbound, WaUserMessage, WhatsAppConfig};

use super::*;

#[tokio::test]
async fn a_user_message_arrives_signed_and_in_metas_shape() {
    let (sim, receiver) = start().await;
    let wamid = user_writes(&sim, "hi there");
    assert!(sim.settle(Duration::from_secs(5)).await);
    let posts = receiver.posts();
    assert_eq!(posts.len(), 1);
    assert!(posts[0].signature_valid, "X-Hub-Signature-256 must verify");
    assert_eq!(posts[0].content_type.as_deref(), Some("application/json"));
    let body = &posts[0].json;
    assert_eq!(body["object"], "whatsapp_business_account");
    let entry = &body["entry"][0];
    assert_eq!(entry["id"], "102290129340398");
    assert_eq!(entry["changes"][0]["field"], "messages");
    let value = &entry["changes"][0]["value"];
    assert_eq!(value["messaging_product"], "whatsapp");
    assert_eq!(
        value["metadata"],
        json!({"display_phone_number": "15550001111", "phone_number_id": PHONE_ID})
    );
    assert_eq!(
        value["contacts"],
        json!([{"profile": {"name": "Ada"}, "wa_id": USER}])
    );
    let message = &value["messages"][0];
    assert_eq!(message["from"], USER);
    assert_eq!(message["id"], wamid.as_str());
    assert_eq!(message["type"], "text");
    assert_eq!(message["text"], json!({"body": "hi there"}));
    let timestamp = message["timestamp"].as_str().unwrap();
    assert!(timestamp.parse::<i64>().unwrap() > 1_600_000_000);
    assert!(value.get("statuses").is_none());

    let delivery = &sim.deliveries()[0];
    assert_eq!(
        delivery.body, posts[0].body,
        "deliveries() holds the exact bytes"
    );
    assert_eq!((delivery.status, delivery.redelivery), (200, false));
    assert_eq!(sim.counters().webhook_deliveries, 1);
}

#[tokio::test]
async fn bodies_escape_non_ascii_so_only_the_raw_bytes_verify() {
    let (sim, receiver) = start().await;
    user_writes(&sim, "café https://x.y/z 😀");
    assert!(sim.settle(Duration::from_secs(5)).await);
    let post = &receiver.posts()[0];
    let raw = String::from_utf8(post.body.clone()).unwrap();
    assert!(
        raw.contains(r"caf\u00e9 https:\/\/x.y\/z \ud83d\ude00"),
        "{raw}"
    );
    assert_eq!(
        post.json["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"],
        "café https://x.y/z 😀"
    );
    assert!(post.signature_valid);
}

#[tokio::test]
async fn media_location_interactive_and_reply_messages_have_metas_objects() {
    let (sim, receiver) = start().await;
    let bytes = b"%PDF-1.4 test".to_vec();
    let media = sim.add_media(bytes.clone(), "application/pdf");
    let (_, answer) = send(&sim, template_to(USER)).await;
    let business = answer["messages"][0]["id"].as_str().unwrap().to_owned();
    let message = |kind, context: Option<&str>| WaUserMessage {
        from: USER.into(),
        profile_name: "Ada".into(),
        kind,
        context: context.map(str::to_owned),
    };
    let document = WaInbound::Document {
        media_id: media.clone(),
        filename: "terms.pdf".into(),
        caption: Some("signed".into()),
    };
    sim.user_message(PHONE_ID, message(document, None));
    let location = WaInbound::Location {
        latitude: -1.28,
        longitude: 36.82,
        name: Some("Nairobi".into()),
        address: None,
    };
    sim.user_message(PHONE_ID, message(location, None));
    let button = WaInbound::ButtonReply {
        id: "yes".into(),
        title: "Yes".into(),
    };
    sim.user_message(PHONE_ID, message(button, Some(&business)));
    let quick = WaInbound::TemplateButton {
        payload: "STOP".into(),
        text: "Stop".into(),
    };
    sim.user_message(PHONE_ID, message(quick, Some(&business)));
    let list = WaInbound::ListReply {
        id: "r1".into(),
        title: "Row".into(),
        description: None,
    };
    sim.user_message(PHONE_ID, message(list, None));
    assert!(sim.settle(Duration::from_secs(5)).await);

    let messages = receiver.messages();
    assert_eq!(messages.len(), 5);
    let sha = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&bytes));
    assert_eq!(messages[0]["type"], "document");
    assert_eq!(
        messages[0]["document"],
        json!({"caption": "signed", "filename": "terms.pdf", "mime_type": "application/pdf",
            "sha256": sha, "id": media})
    );
    assert_eq!(
        messages[1]["location"],
        json!({"latitude": -1.28, "longitude": 36.82, "name": "Nairobi"})
    );
    assert_eq!(messages[2]["type"], "interactive");
    assert_eq!(
        messages[2]["interactive"],
        json!({"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}})
    );
    assert_eq!(
        messages[2]["context"],
        json!({"from": "15550001111", "id": business})
    );
    assert_eq!(messages[3]["type"], "button");
    assert_eq!(
        messages[3]["button"],
        json!({"payload": "STOP", "text": "Stop"})
    );
    assert_eq!(
        messages[4]["interactive"]["list_reply"],
        json!({"id": "r1", "title": "Row"})
    );
}

#[tokio::test]
async fn messages_queued_together_share_one_post() {
    let (sim, receiver) = start().await;
    for text in ["one", "two", "three"] {
        user_writes(&sim, text);
    }
    sim.user_message(PHONE_ID, WaUserMessage::text("15557654321", "Bo", "four"));
    assert!(sim.settle(Duration::from_secs(5)).await);
    let posts = receiver.posts();
    assert_eq!(
        posts.len(),
        1,
        "one POST for messages queued within the batch window"
    );
    let value = &posts[0].json["entry"][0]["changes"][0]["value"];
    let texts: Vec<&str> = value["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["one", "two", "three", "four"]);
    assert_eq!(
        value["contacts"].as_array().unwrap().len(),
        2,
        "one contact per sender"
    );
    assert_eq!(sim.counters().updates_delivered, 4);
}

#[tokio::test]
async fn a_batch_carries_at_most_batch_max_items() {
    let config = WhatsAppConfig {
        batch_max: 2,
        ..WhatsAppConfig::default()
    };
    let (sim, receiver) = start_with(config, 0).await;
    for n in 0..5 {
        user_writes(&sim, &n.to_string());
    }
    assert!(sim.settle(Duration::from_secs(5)).await);
    let sizes: Vec<usize> = receiver
        .values()
        .iter()
        .map(|v| v["messages"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [2, 2, 1]);
    let texts: Vec<String> = receiver
        .messages()
        .iter()
        .map(|m| m["text"]["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["0", "1", "2", "3", "4"], "in order");
}

#[tokio::test]
async fn a_500_from_the_receiver_is_retried_with_the_same_bytes_until_2xx() {
    let config = WhatsAppConfig {
        retry_delay: Duration::from_millis(50),
        ..WhatsAppConfig::default()
    };
    let (sim, receiver) = start_with(config, 2).await;
    user_writes(&sim, "persistent");
    assert!(sim.settle(Duration::from_secs(5)).await);
    let posts = receiver.posts();
    assert_eq!(posts.len(), 3);
    assert!(posts.iter().all(|p| p.body == posts[0].body));
    let statuses: Vec<u16> = sim.deliveries().iter().map(|d| d.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
    let gaps: Vec<Duration> = sim
        .deliveries()
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect();
    assert!(gaps[1] >= gaps[0], "backoff doubles: {gaps:?}");
    let counters = sim.counters();
    assert_eq!(
        (counters.webhook_failures, counters.webhook_deliveries),
        (2, 1)
    );
}

#[tokio::test]
async fn an_unreachable_callback_is_retried_and_pending_until_it_answers() {
    let config = WhatsAppConfig {
        retry_delay: Duration::from_millis(20),
        ..WhatsAppConfig::default()
    };
    let (sim, _) = start_with(config, 0).await;
    sim.set_callback(PHONE_ID, "http://127.0.0.1:9/hook");
    user_writes(&sim, "anyone?");
    assert!(!sim.settle(Duration::from_millis(300)).await);
    assert!(sim.deliveries().iter().all(|d| d.status == 0));
    let receiver = Receiver::start(0).await;
    sim.set_callback(PHONE_ID, &receiver.url);
    assert!(sim.settle(Duration::from_secs(12)).await);
    assert_eq!(receiver.messages()[0]["text"]["body"], "anyone?");
}

#[tokio::test]
async fn redelivery_rate_one_posts_each_payload_twice() {
    let config = WhatsAppConfig {
        redelivery_rate: 1.0,
        retry_delay: Duration::from_millis(50),
        ..WhatsAppConfig::default()
    };
    let (sim, receiver) = start_with(config, 0).await;
    let wamid = user_writes(&sim, "once, really");
    assert!(sim.settle(Duration::from_secs(5)).await);
    let posts = receiver.posts();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0].body, posts[1].body);
    let flags: Vec<bool> = sim.deliveries().iter().map(|d| d.redelivery).collect();
    assert_eq!(flags, [false, true]);
    let ids: Vec<String> = receiver
        .messages()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [wamid.clone(), wamid]);
}

#[tokio::test]
async fn webhooks_wait_for_a_callback_and_then_flow() {
    let sim = WhatsAppSim::start(WhatsAppConfig::default()).await.unwrap();
    sim.add_phone_number(phone(None));
    user_writes(&sim, "early");
    assert!(!sim.settle(Duration::from_millis(100)).await);
    assert!(sim.deliveries().is_empty());
    let receiver = Receiver::start(0).await;
    sim.set_callback(PHONE_ID, &receiver.url);
    assert!(sim.settle(Duration::from_secs(5)).await);
    assert_eq!(receiver.messages()[0]["text"]["body"], "early");
}

#[tokio::test]
async fn verify_callback_is_true_only_for_the_right_verify_token() {
    let (sim, _receiver) = start().await;
    assert!(sim.verify_callback(PHONE_ID, VERIFY_TOKEN).await.unwrap());
    assert!(!sim.verify_callback(PHONE_ID, "wrong").await.unwrap());
    sim.set_callback(PHONE_ID, "http://127.0.0.1:9/hook");
    assert!(sim.verify_callback(PHONE_ID, VERIFY_TOKEN).await.is_err());
}

#[tokio::test]
async fn a_backlog_drains_in_full_batches_without_waiting_for_the_window() {
    let config = WhatsAppConfig {
        batch_window: Duration::from_millis(200),
        ..WhatsAppConfig::default()
    };
    let (sim, receiver) = start_with(config, 0).await;
    for n in 0..100 {
        user_writes(&sim, &n.to_string());
    }
    let started = std::time::Instant::now();
    assert!(sim.settle(Duration::from_secs(5)).await);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "ten POSTs took {:?}",
        started.elapsed()
    );
    let sizes: Vec<usize> = receiver
        .values()
        .iter()
        .map(|v| v["messages"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [10; 10]);
}
