//! What a bot sends: messages, replies, flood control, photos and documents.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_sim::{Rate, TelegramConfig};

use super::*;

#[tokio::test]
async fn send_message_needs_a_known_chat_and_an_unblocked_user() {
    let sim = sim().await;
    let (status, body) = call(&sim, "sendMessage", json!({"chat_id": 777, "text": "hi"})).await;
    assert_eq!(
        (status, body["description"].clone()),
        (400, json!("Bad Request: chat not found"))
    );

    user_writes(&sim, "hello bot");
    let (status, body) = call(&sim, "sendMessage", json!({"chat_id": USER, "text": ""})).await;
    assert_eq!(
        (status, body["description"].clone()),
        (400, json!("Bad Request: message text is empty"))
    );
    let long = "x".repeat(4097);
    let (status, body) = call(&sim, "sendMessage", json!({"chat_id": USER, "text": long})).await;
    assert_eq!(
        (status, body["description"].clone()),
        (400, json!("Bad Request: message is too long"))
    );

    sim.block_bot(TOKEN, USER);
    let (status, body) = call(
        &sim,
        "sendMessage",
        json!({"chat_id": USER, "text": "still there?"}),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        body["description"],
        "Forbidden: bot was blocked by the user"
    );
    assert!(sim.sent(TOKEN).is_empty());
}

#[tokio::test]
async fn send_message_returns_the_message_and_replies_embed_the_original() {
    let sim = sim().await;
    user_writes(&sim, "question");
    let keyboard = json!({"inline_keyboard": [[{"text": "Yes", "callback_data": "yes"}]]});
    // Form encoding, as many clients send it: markup and reply parameters arrive as JSON strings.
    let url = format!("{}/bot{TOKEN}/sendMessage", sim.base_url());
    let form = [
        ("chat_id", USER.to_string()),
        ("text", "answer".to_owned()),
        ("reply_markup", keyboard.to_string()),
        ("reply_parameters", json!({"message_id": 1}).to_string()),
    ];
    let body: Value = reqwest::Client::new()
        .post(url)
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let message = &body["result"];
    assert_eq!(message["message_id"], 2);
    assert_eq!(message["from"]["id"], 123456);
    assert_eq!(message["chat"]["id"], USER);
    assert_eq!(message["text"], "answer");
    assert_eq!(message["reply_to_message"]["text"], "question");
    assert_eq!(message["reply_markup"], keyboard);

    let sent = sim.sent(TOKEN);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method, "sendmessage");
    assert_eq!((sent[0].chat_id, sent[0].message_id), (USER, 2));
    assert_eq!(sent[0].reply_to_message_id, Some(1));
    assert_eq!(sent[0].reply_markup.as_ref(), Some(&keyboard));
    assert_eq!(sent[0].params["text"], "answer");
}

#[tokio::test]
async fn a_burst_into_one_chat_ends_in_429_with_retry_after() {
    let sim = sim().await;
    user_writes(&sim, "hi");
    // Default per-chat limit: 1/s with bursts of 3. Sends refilled by a slow machine are
    // tolerated; the burst itself must pass and a refusal must come.
    let mut accepted = 0;
    let (status, body) = loop {
        let text = format!("m{accepted}");
        let (status, body) =
            call(&sim, "sendMessage", json!({"chat_id": USER, "text": text})).await;
        if status != 200 || accepted == 10 {
            break (status, body);
        }
        accepted += 1;
    };
    assert!(accepted >= 3, "the burst of 3 was refused after {accepted}");
    assert_eq!(status, 429);
    assert_eq!(body["error_code"], 429);
    let retry_after = body["parameters"]["retry_after"].as_u64().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(
        body["description"],
        format!("Too Many Requests: retry after {retry_after}")
    );
    assert_eq!(sim.counters().responses_429, 1);
    assert_eq!(
        sim.sent(TOKEN).len(),
        accepted,
        "the refused send had an effect"
    );
}

#[tokio::test]
async fn a_group_chat_has_its_own_budget_on_top_of_the_chat_limit() {
    // An hour-long window keeps the test independent of how fast this machine sends.
    let config = TelegramConfig {
        per_chat: Rate::unlimited(),
        per_group: Rate::new(20, Duration::from_secs(3600), 20),
        ..Default::default()
    };
    let sim = start(config).await;
    sim.bot_added_to_group(TOKEN, -100, "Team", USER);
    for i in 0..20 {
        let (status, _) = call(&sim, "sendMessage", json!({"chat_id": -100, "text": "x"})).await;
        assert_eq!(status, 200, "group send {i} was refused");
    }
    let (status, body) = call(&sim, "sendMessage", json!({"chat_id": -100, "text": "x"})).await;
    assert_eq!(status, 429);
    assert!(body["parameters"]["retry_after"].as_u64().unwrap() >= 100);
}

#[tokio::test]
async fn an_uploaded_photo_can_be_fetched_back_with_get_file() {
    let sim = sim().await;
    user_writes(&sim, "send me a picture");
    let bytes = b"\x89PNG fake image bytes".to_vec();
    let form = reqwest::multipart::Form::new()
        .text("chat_id", USER.to_string())
        .text("caption", "a picture")
        .part(
            "photo",
            reqwest::multipart::Part::bytes(bytes.clone())
                .file_name("cat.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let url = format!("{}/bot{TOKEN}/sendPhoto", sim.base_url());
    let body: Value = reqwest::Client::new()
        .post(url)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["ok"], true, "{body}");
    let sizes = body["result"]["photo"].as_array().unwrap();
    assert_eq!(sizes.len(), 3);
    assert!(
        sizes[2]["width"].as_u64() > sizes[0]["width"].as_u64(),
        "largest size must come last"
    );
    assert_eq!(body["result"]["caption"], "a picture");
    let file_id = sizes[2]["file_id"].as_str().unwrap();

    let (_, file) = call(&sim, "getFile", json!({"file_id": file_id})).await;
    assert_eq!(file["result"]["file_size"], bytes.len());
    let path = file["result"]["file_path"].as_str().unwrap();
    let download = reqwest::get(format!("{}/file/bot{TOKEN}/{path}", sim.base_url()))
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.bytes().await.unwrap().to_vec(), bytes);

    let bad_token = reqwest::get(format!("{}/file/bot1:bad/{path}", sim.base_url()))
        .await
        .unwrap();
    assert_eq!(bad_token.status(), 401);
    let unknown = reqwest::get(format!(
        "{}/file/bot{TOKEN}/photos/nothing.jpg",
        sim.base_url()
    ))
    .await
    .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(sim.sent(TOKEN)[0].media.as_deref(), Some("upload:cat.png"));
}

#[tokio::test]
async fn documents_by_url_and_captions_over_1024_characters() {
    let sim = sim().await;
    user_writes(&sim, "hi");
    let url = "https://example.com/report.pdf";
    let (status, body) = call(
        &sim,
        "sendDocument",
        json!({"chat_id": USER, "document": url}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["document"]["file_name"], "report.pdf");
    let (status, body) = call(
        &sim,
        "sendDocument",
        json!({"chat_id": USER, "document": url, "caption": "c".repeat(1025)}),
    )
    .await;
    assert_eq!(
        (status, body["description"].clone()),
        (400, json!("Bad Request: message caption is too long"))
    );
}
