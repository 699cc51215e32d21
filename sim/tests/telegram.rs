//! The Telegram simulator over real HTTP: what a bot sees through reqwest.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use switchboard_sim::{ChatType, Faults, Rate, TelegramConfig, TelegramSim, UserMessage};

const TOKEN: &str = "123456:AAE-secret";
const USER: i64 = 4242;

async fn start(config: TelegramConfig) -> TelegramSim {
    let sim = TelegramSim::start(config).await.unwrap();
    sim.add_bot(TOKEN, "switchboard_test_bot");
    sim
}

async fn sim() -> TelegramSim {
    start(TelegramConfig::default()).await
}

/// POSTs JSON parameters to a Bot API method; returns (HTTP status, body).
async fn call(sim: &TelegramSim, method: &str, params: Value) -> (u16, Value) {
    call_as(sim, TOKEN, method, params).await
}

async fn call_as(sim: &TelegramSim, token: &str, method: &str, params: Value) -> (u16, Value) {
    let url = format!("{}/bot{token}/{method}", sim.base_url());
    let response = reqwest::Client::new()
        .post(url)
        .json(&params)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A user has written, so the bot may post in their private chat.
fn user_writes(sim: &TelegramSim, text: &str) -> i64 {
    sim.user_message(TOKEN, UserMessage::text(USER, USER, text))
}

#[tokio::test]
async fn get_me_describes_the_bot_and_a_bad_token_is_unauthorized() {
    let sim = sim().await;
    let (status, body) = call(&sim, "getMe", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["ok"], true);
    assert_eq!(body["result"]["id"], 123456);
    assert_eq!(body["result"]["is_bot"], true);
    assert_eq!(body["result"]["username"], "switchboard_test_bot");
    assert!(body["result"]["can_join_groups"].is_boolean());

    let (status, body) = call_as(&sim, "999:nope", "getMe", json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
    );
}

#[tokio::test]
async fn method_names_are_case_insensitive_and_unknown_methods_are_404() {
    let sim = sim().await;
    let url = format!("{}/bot{TOKEN}/GETME", sim.base_url());
    let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(body["ok"], true);

    let (status, body) = call(&sim, "sendTelepathy", json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 404, "description": "Not Found"})
    );
}

#[tokio::test]
async fn a_revoked_token_is_unauthorized_everywhere() {
    let sim = sim().await;
    sim.revoke_token(TOKEN);
    let (status, _) = call(&sim, "getMe", json!({})).await;
    assert_eq!(status, 401);
    let (status, _) = call(&sim, "getUpdates", json!({})).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn long_poll_returns_when_a_user_writes() {
    let sim = sim().await;
    let poller = sim.clone();
    let started = Instant::now();
    let poll =
        tokio::spawn(async move { call(&poller, "getUpdates", json!({"timeout": 10})).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let update_id = user_writes(&sim, "hello");

    let (status, body) = poll.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the poll waited for its timeout"
    );
    let updates = body["result"].as_array().unwrap();
    assert_eq!(updates.len(), 1);
    let message = &updates[0]["message"];
    assert_eq!(updates[0]["update_id"], update_id);
    assert_eq!(message["text"], "hello");
    assert_eq!(
        message["chat"],
        json!({"id": USER, "type": "private", "first_name": "User4242"})
    );
    assert_eq!(message["from"]["is_bot"], false);
    assert!(message["date"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(sim.counters().updates_delivered, 1);
}

#[tokio::test]
async fn a_long_poll_without_updates_answers_empty_at_its_timeout() {
    let sim = sim().await;
    let started = Instant::now();
    let (status, body) = call(&sim, "getUpdates", json!({"timeout": 1})).await;
    assert_eq!((status, body["result"].clone()), (200, json!([])));
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn offset_confirms_updates_and_unconfirmed_ones_come_again() {
    let sim = sim().await;
    let first = user_writes(&sim, "one");
    let (_, body) = call(&sim, "getUpdates", json!({})).await;
    assert_eq!(body["result"][0]["update_id"], first);

    let (_, again) = call(&sim, "getUpdates", json!({})).await;
    assert_eq!(
        again["result"][0]["update_id"], first,
        "unconfirmed update not returned again"
    );

    let second = user_writes(&sim, "two");
    assert!(second > first);
    let (_, body) = call(&sim, "getUpdates", json!({"offset": first + 1})).await;
    let ids: Vec<i64> = body["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["update_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![second]);

    let (_, body) = call(&sim, "getUpdates", json!({"offset": second + 1})).await;
    assert_eq!(body["result"], json!([]));
    assert_eq!(sim.pending_updates(TOKEN), 0);
}

#[tokio::test]
async fn limit_and_allowed_updates_shape_the_batch() {
    let sim = sim().await;
    for text in ["a", "b", "c"] {
        user_writes(&sim, text);
    }
    let (_, body) = call(&sim, "getUpdates", json!({"limit": 2})).await;
    assert_eq!(body["result"].as_array().unwrap().len(), 2);

    let (_, body) = call(
        &sim,
        "getUpdates",
        json!({"offset": -1, "allowed_updates": ["callback_query"]}),
    )
    .await;
    assert_eq!(body["result"][0]["message"]["text"], "c");
    user_writes(&sim, "filtered out");
    let (_, body) = call(&sim, "getUpdates", json!({"offset": -1})).await;
    assert_eq!(
        body["result"][0]["message"]["text"], "c",
        "a message update was created despite allowed_updates"
    );
}

#[tokio::test]
async fn get_updates_conflicts_while_a_webhook_is_set() {
    let sim = sim().await;
    let (_, body) = call(
        &sim,
        "setWebhook",
        json!({"url": "http://127.0.0.1:9/hook"}),
    )
    .await;
    assert_eq!(body["result"], true);
    let (status, body) = call(&sim, "getUpdates", json!({})).await;
    assert_eq!(status, 409);
    assert_eq!(
        body["description"],
        "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
    );
    call(&sim, "deleteWebhook", json!({})).await;
    let (status, _) = call(&sim, "getUpdates", json!({})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_second_poller_terminates_the_older_one() {
    let sim = sim().await;
    let older = sim.clone();
    let first =
        tokio::spawn(async move { call(&older, "getUpdates", json!({"timeout": 10})).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let newer = sim.clone();
    let second =
        tokio::spawn(async move { call(&newer, "getUpdates", json!({"timeout": 10})).await });

    let (status, body) = tokio::time::timeout(Duration::from_secs(3), first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 409);
    assert_eq!(
        body["description"],
        "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
    );
    user_writes(&sim, "for the newer poller");
    let (status, body) = second.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["result"][0]["message"]["text"], "for the newer poller");
}

/// A webhook receiver that fails its first call with 500, then accepts.
async fn flaky_receiver() -> (String, Arc<Mutex<Vec<(Option<String>, Value)>>>) {
    let calls: Arc<Mutex<Vec<(Option<String>, Value)>>> = Arc::default();
    let seen = calls.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: HeaderMap, axum::Json(update): axum::Json<Value>| {
                let seen = seen.clone();
                async move {
                    let secret = headers
                        .get("x-telegram-bot-api-secret-token")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let mut calls = seen.lock().unwrap();
                    calls.push((secret, update));
                    if calls.len() == 1 {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

#[tokio::test]
async fn webhook_delivers_with_the_secret_header_and_retries_after_a_500() {
    let config = TelegramConfig {
        webhook_retry_delay: Duration::from_millis(100),
        ..Default::default()
    };
    let sim = start(config).await;
    let (url, calls) = flaky_receiver().await;
    let (_, body) = call(
        &sim,
        "setWebhook",
        json!({"url": url, "secret_token": "s3cr3t_-X"}),
    )
    .await;
    assert_eq!(body["result"], true);
    let update_id = user_writes(&sim, "via webhook");

    let deadline = Instant::now() + Duration::from_secs(5);
    while calls.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "expected one failed delivery and one retry");
    for (secret, update) in &calls {
        assert_eq!(secret.as_deref(), Some("s3cr3t_-X"));
        assert_eq!(update["update_id"], update_id);
        assert_eq!(update["message"]["text"], "via webhook");
    }
    let info = sim.webhook_info(TOKEN).unwrap();
    assert_eq!(info.url, url);
    assert_eq!(info.pending_update_count, 0);
    assert!(info.last_error_message.unwrap().contains("500"));
    assert!(info.last_error_date.is_some());
    let counters = sim.counters();
    assert_eq!(
        (counters.webhook_failures, counters.webhook_deliveries),
        (1, 1)
    );

    let (_, body) = call(&sim, "getWebhookInfo", json!({})).await;
    assert_eq!(body["result"]["url"], url.as_str());
    assert_eq!(body["result"]["has_custom_certificate"], false);
}

#[tokio::test]
async fn set_webhook_rejects_a_secret_with_unallowed_characters() {
    let sim = sim().await;
    let (status, body) = call(
        &sim,
        "setWebhook",
        json!({"url": "http://127.0.0.1:9/h", "secret_token": "no spaces"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["description"]
            .as_str()
            .unwrap()
            .starts_with("Bad Request: ")
    );
    assert!(sim.webhook_info(TOKEN).is_none());
}

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
    for i in 0..3 {
        let (status, _) = call(
            &sim,
            "sendMessage",
            json!({"chat_id": USER, "text": format!("m{i}")}),
        )
        .await;
        assert_eq!(status, 200, "send {i} of the burst was refused");
    }
    let (status, body) = call(
        &sim,
        "sendMessage",
        json!({"chat_id": USER, "text": "one too many"}),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(body["error_code"], 429);
    let retry_after = body["parameters"]["retry_after"].as_u64().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(
        body["description"],
        format!("Too Many Requests: retry after {retry_after}")
    );
    assert_eq!(sim.counters().responses_429, 1);
    assert_eq!(sim.sent(TOKEN).len(), 3, "the refused send had an effect");
}

#[tokio::test]
async fn a_group_allows_twenty_messages_a_minute() {
    let config = TelegramConfig {
        per_chat: Rate::unlimited(),
        ..Default::default()
    };
    let sim = start(config).await;
    sim.bot_added_to_group(TOKEN, -100, "Team", USER);
    for _ in 0..20 {
        assert_eq!(
            call(&sim, "sendMessage", json!({"chat_id": -100, "text": "x"}))
                .await
                .0,
            200
        );
    }
    let (status, body) = call(&sim, "sendMessage", json!({"chat_id": -100, "text": "x"})).await;
    assert_eq!(status, 429);
    assert!(body["parameters"]["retry_after"].as_u64().unwrap() >= 2);
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

#[tokio::test]
async fn callback_queries_and_edits_have_telegram_shapes() {
    let sim = sim().await;
    user_writes(&sim, "menu please");
    let keyboard = json!({"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]});
    let (_, sent) = call(
        &sim,
        "sendMessage",
        json!({"chat_id": USER, "text": "menu", "reply_markup": keyboard}),
    )
    .await;
    let bot_message_id = sent["result"]["message_id"].as_i64().unwrap();

    let press = sim.user_presses_button(TOKEN, USER, USER, bot_message_id, "go");
    let edit = sim.user_edits(TOKEN, USER, 1, "menu please!");
    let (_, body) = call(&sim, "getUpdates", json!({"offset": press})).await;
    let updates = body["result"].as_array().unwrap();
    assert_eq!(updates.len(), 2);

    let query = &updates[0]["callback_query"];
    assert!(query["id"].is_string());
    assert_eq!(query["from"]["id"], USER);
    assert_eq!(query["data"], "go");
    assert!(query["chat_instance"].is_string());
    assert_eq!(query["message"]["message_id"], bot_message_id);
    assert_eq!(query["message"]["reply_markup"], keyboard);

    assert_eq!(updates[1]["update_id"], edit);
    let edited = &updates[1]["edited_message"];
    assert_eq!(
        (edited["message_id"].clone(), edited["text"].clone()),
        (json!(1), json!("menu please!"))
    );
    assert!(edited["edit_date"].is_i64());

    let answer = json!({"callback_query_id": query["id"], "text": "Done"});
    assert_eq!(
        call(&sim, "answerCallbackQuery", answer.clone()).await.1["result"],
        true
    );
    let (status, _) = call(&sim, "answerCallbackQuery", answer).await;
    assert_eq!(status, 400, "a callback query can be answered once");

    let (_, edited) = call(
        &sim,
        "editMessageText",
        json!({"chat_id": USER, "message_id": bot_message_id, "text": "chosen"}),
    )
    .await;
    assert_eq!(edited["result"]["text"], "chosen");
    assert!(
        edited["result"].get("reply_markup").is_none(),
        "editing without markup removes the keyboard"
    );
    let (status, body) = call(
        &sim,
        "editMessageText",
        json!({"chat_id": USER, "message_id": 99, "text": "x"}),
    )
    .await;
    assert_eq!(
        (status, body["description"].clone()),
        (400, json!("Bad Request: message to edit not found"))
    );

    let methods: Vec<String> = sim.sent(TOKEN).into_iter().map(|s| s.method).collect();
    assert_eq!(
        methods,
        ["sendmessage", "answercallbackquery", "editmessagetext"]
    );
}

#[tokio::test]
async fn channel_posts_groups_and_rich_user_messages() {
    let sim = sim().await;
    let added = sim.bot_added_to_group(TOKEN, -5001, "Team", USER);
    let post = sim.channel_post(TOKEN, -1_001_234_567_890, "News", "breaking");
    let doc = sim.add_file(TOKEN, b"%PDF".to_vec(), "a.pdf", "application/pdf");
    let rich = sim.user_message(
        TOKEN,
        UserMessage {
            chat_type: ChatType::Group,
            chat_title: Some("Team".into()),
            document_file_id: Some(doc.clone()),
            caption: Some("see attached".into()),
            location: Some((52.5, 13.4)),
            text: None,
            ..UserMessage::text(-5001, USER, "")
        },
    );
    let (_, body) = call(&sim, "getUpdates", json!({})).await;
    let updates = body["result"].as_array().unwrap();
    assert_eq!(
        updates
            .iter()
            .map(|u| u["update_id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [added, post, rich]
    );

    let member = &updates[0]["my_chat_member"];
    assert_eq!(
        member["chat"],
        json!({"id": -5001, "type": "group", "title": "Team"})
    );
    assert_eq!(member["old_chat_member"]["status"], "left");
    assert_eq!(member["new_chat_member"]["status"], "member");
    assert_eq!(member["new_chat_member"]["user"]["id"], 123456);

    let channel = &updates[1]["channel_post"];
    assert_eq!(channel["chat"]["type"], "channel");
    assert!(channel.get("from").is_none());

    let message = &updates[2]["message"];
    assert_eq!(message["document"]["file_id"], doc.as_str());
    assert_eq!(message["document"]["mime_type"], "application/pdf");
    assert_eq!(message["caption"], "see attached");
    assert_eq!(
        message["location"],
        json!({"latitude": 52.5, "longitude": 13.4})
    );
}

#[tokio::test]
async fn error_rate_one_answers_5xx_and_has_no_effect() {
    let sim = sim().await;
    user_writes(&sim, "hi");
    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    for _ in 0..4 {
        let url = format!("{}/bot{TOKEN}/sendMessage", sim.base_url());
        let response = reqwest::Client::new()
            .post(url)
            .json(&json!({"chat_id": USER, "text": "x"}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_server_error());
    }
    assert_eq!(sim.counters().responses_5xx, 4);
    assert!(sim.sent(TOKEN).is_empty());
    sim.set_faults(Faults::default());
    assert_eq!(call(&sim, "getMe", json!({})).await.0, 200);
}

#[tokio::test]
async fn drop_rate_one_closes_the_connection_without_an_answer() {
    let sim = sim().await;
    user_writes(&sim, "hi");
    sim.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    let url = format!("{}/bot{TOKEN}/sendMessage", sim.base_url());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let error = client
        .post(url)
        .json(&json!({"chat_id": USER, "text": "x"}))
        .send()
        .await
        .unwrap_err();
    assert!(
        !error.is_timeout(),
        "expected a closed connection, got a timeout: {error}"
    );
    assert!(error.status().is_none());
    assert_eq!(sim.counters().dropped_connections, 1);
    assert!(sim.sent(TOKEN).is_empty());
}

#[tokio::test]
async fn timeout_rate_one_leaves_the_client_to_time_out() {
    let sim = sim().await;
    sim.set_faults(Faults {
        timeout_rate: 1.0,
        ..Faults::default()
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let error = client
        .get(format!("{}/bot{TOKEN}/getMe", sim.base_url()))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert_eq!(sim.counters().hung_requests, 1);
}

#[tokio::test]
async fn latency_delays_every_api_answer() {
    let sim = sim().await;
    sim.set_faults(Faults {
        latency: Duration::from_millis(250),
        ..Faults::default()
    });
    let started = Instant::now();
    assert_eq!(call(&sim, "getMe", json!({})).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn requests_are_logged_in_order_with_the_token_redacted() {
    let sim = sim().await;
    call(&sim, "getMe", json!({})).await;
    call(&sim, "sendMessage", json!({"chat_id": 1, "text": "x"})).await;
    reqwest::get(format!("{}/nowhere", sim.base_url()))
        .await
        .unwrap();
    let log = sim.requests();
    let seen: Vec<(String, Option<String>, u16)> = log
        .iter()
        .map(|r| (r.path.clone(), r.api_method.clone(), r.status))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "/bot123456:***/getMe".to_owned(),
                Some("getme".to_owned()),
                200
            ),
            (
                "/bot123456:***/sendMessage".to_owned(),
                Some("sendmessage".to_owned()),
                400
            ),
            ("/nowhere".to_owned(), None, 404),
        ]
    );
    assert!(log.iter().all(|r| !r.path.contains("secret")));
    assert_eq!(sim.counters().requests, 3);
}

#[tokio::test]
async fn the_control_api_drives_the_simulator_over_http() {
    let sim = TelegramSim::start(TelegramConfig::default()).await.unwrap();
    let base = sim.base_url();
    let http = reqwest::Client::new();
    let bot: Value = http
        .post(format!("{base}/_sim/telegram/bots"))
        .json(&json!({"token": "77:x", "username": "ctl_bot"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bot["id"], 77);
    let created: Value = http
        .post(format!("{base}/_sim/telegram/messages"))
        .json(&json!({"token": "77:x", "chat_id": 5, "from_id": 5, "text": "from curl"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["update_id"], 1);
    let unknown = http
        .post(format!("{base}/_sim/telegram/messages"))
        .json(&json!({"token": "nobody", "chat_id": 5, "from_id": 5, "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    http.post(format!("{base}/bot77:x/sendMessage"))
        .json(&json!({"chat_id": 5, "text": "reply"}))
        .send()
        .await
        .unwrap();
    let sent: Value = http
        .get(format!("{base}/_sim/telegram/sent?token=77:x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent[0]["text"], "reply");
    assert!(sent[0].get("at").is_none());

    let faults = http
        .put(format!("{base}/_sim/faults"))
        .json(&json!({"error_rate": 1.0, "latency_ms": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(faults.status(), 200);
    assert_eq!(sim.faults().error_rate, 1.0);
    let counters: Value = http
        .get(format!("{base}/_sim/counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        counters["requests"], 1,
        "control calls must not count as platform requests"
    );
    let requests: Value = http
        .get(format!("{base}/_sim/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(requests[0]["path"], "/bot77:***/sendMessage");

    http.post(format!("{base}/_sim/telegram/revoke"))
        .json(&json!({"token": "77:x"}))
        .send()
        .await
        .unwrap();
    sim.set_faults(Faults::default());
    let status = http
        .get(format!("{base}/bot77:x/getMe"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
}
