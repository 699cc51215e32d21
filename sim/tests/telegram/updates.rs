//! Updates: long polling, offsets, conflicts, webhooks, and the shapes of each update kind.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use switchboard_sim::{ChatType, TelegramConfig, UserMessage};

use super::*;

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

/// What a webhook receiver saw: (secret header, update) per call.
type Deliveries = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// A webhook receiver that fails its first call with 500, then accepts.
async fn flaky_receiver() -> (String, Deliveries) {
    let calls: Deliveries = Arc::default();
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

    // Wait for the retry to arrive and for the simulator to record its success.
    let deadline = Instant::now() + Duration::from_secs(5);
    while (calls.lock().unwrap().len() < 2
        || sim.webhook_info(TOKEN).map(|i| i.pending_update_count) != Some(0))
        && Instant::now() < deadline
    {
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
