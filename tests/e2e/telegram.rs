//! Telegram end to end: the real connector (teloxide) against the Telegram simulator over
//! real sockets, through the gateway's REST API and feed.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use switchboard_e2e::*;
use switchboard_sim::framework::Faults;
use switchboard_sim::framework::rate::Rate;
use switchboard_sim::telegram::{ChatType, TelegramConfig, TelegramSim, UserMessage};
use tokio_tungstenite::tungstenite::Message as Ws;

const TOKEN: &str = "111111:test-token-abc";
const SECRET: &str = "whsec_0123456789";

fn bot_toml(sim: &TelegramSim, mode: &str, extra: &str) -> String {
    format!(
        "[[bots]]\nid = \"tg\"\ntenant = \"acme\"\nplatform = \"telegram\"\nmode = \"{mode}\"\npoll_timeout_s = 5\n\
         token = \"{TOKEN}\"\nwebhook_secret = \"{SECRET}\"\napi_base = \"{}\"\n{extra}\n",
        sim.base_url()
    )
}

async fn setup(mode: &str, sim_config: TelegramConfig, extra: &str) -> (TelegramSim, TestGateway) {
    let sim = TelegramSim::start(sim_config)
        .await
        .expect("simulator starts");
    sim.add_bot(TOKEN, "test_bot");
    let t = TestGateway::start(Options {
        extra_toml: bot_toml(&sim, mode, extra),
        real_connectors: true,
        public_url: mode == "webhook",
        ..Default::default()
    })
    .await;
    t.wait_state(ACME_KEY, "tg", "running", Duration::from_secs(10))
        .await;
    (sim, t)
}

fn user(chat: i64, text: &str) -> UserMessage {
    let mut m = UserMessage::text(chat, chat, text);
    m.from_first_name = "Ada".into();
    m
}

/// Inbound messages of the bot, oldest first, once `n` are there.
async fn inbound(t: &TestGateway, n: usize) -> Vec<Value> {
    t.wait_inbound(ACME_KEY, None, n, Duration::from_secs(15))
        .await
}

async fn send(t: &TestGateway, body: Value) -> String {
    let (s, m) = t.post(ACME_KEY, "/v1/messages", body).await;
    assert_eq!(s, 202, "{m}");
    m["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn polling_delivers_user_messages_to_rest_and_the_feed() {
    let (sim, t) = setup("polling", TelegramConfig::default(), "").await;
    let url = format!(
        "{}/v1/feed?types=message.received&access_token={ACME_KEY}",
        t.base.replace("http://", "ws://")
    );
    let (mut feed, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    sim.user_message(TOKEN, user(501, "hello from Ada"));
    let mut group = UserMessage::text(-777, 502, "hi group");
    group.chat_type = ChatType::Supergroup;
    group.chat_title = Some("Team".into());
    group.from_first_name = "Bo".into();
    sim.user_message(TOKEN, group);
    let msgs = inbound(&t, 2).await;
    assert_eq!(
        msgs[0]["content"],
        json!({"type": "text", "text": "hello from Ada"})
    );
    assert_eq!(msgs[0]["status"], "received");
    assert!(msgs[0]["external_id"].is_string());
    let (_, convs) = t.get(ACME_KEY, "/v1/conversations?bot=tg").await;
    let kinds: Vec<(String, String)> = convs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["external_chat_id"].as_str().unwrap().to_string(),
                c["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("501".into(), "direct".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("-777".into(), "group".into())),
        "{kinds:?}"
    );
    let frame = tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Ws::Text(text) = frame else {
        panic!("{frame:?}")
    };
    let e: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(e["type"], "message.received");
    assert_eq!(e["data"]["bot_id"], "tg");
    t.stop().await;
}

#[tokio::test]
async fn a_restart_neither_loses_nor_repeats_polled_updates() {
    let (sim, mut t) = setup("polling", TelegramConfig::default(), "").await;
    for i in 0..5 {
        sim.user_message(TOKEN, user(600 + i, &format!("before {i}")));
    }
    inbound(&t, 5).await;
    t.restart().await;
    for i in 0..5 {
        sim.user_message(TOKEN, user(600 + i, &format!("after {i}")));
    }
    let msgs = inbound(&t, 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let msgs_later = inbound(&t, 10).await;
    assert_eq!(msgs.len(), 10);
    assert_eq!(msgs_later.len(), 10, "nothing repeated after the restart");
    t.stop().await;
}

#[tokio::test]
async fn dropped_connections_mid_poll_lose_and_repeat_nothing() {
    let (sim, t) = setup("polling", TelegramConfig::default(), "").await;
    sim.user_message(TOKEN, user(700, "m0"));
    inbound(&t, 1).await;
    sim.set_faults(Faults {
        drop_rate: 0.5,
        ..Default::default()
    });
    for i in 1..20 {
        sim.user_message(TOKEN, user(700, &format!("m{i}")));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    sim.set_faults(Faults::default());
    let msgs = inbound(&t, 20).await;
    let texts: Vec<&str> = msgs
        .iter()
        .map(|m| m["content"]["text"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected, "every update once, in order");
    t.stop().await;
}

#[tokio::test]
async fn webhook_mode_registers_the_secret_and_stores_each_update_once() {
    let (sim, t) = setup("webhook", TelegramConfig::default(), "").await;
    let info = sim.webhook_info(TOKEN).expect("setWebhook was called");
    assert_eq!(info.url, format!("{}/webhooks/telegram/tg", t.base));
    sim.user_message(TOKEN, user(801, "via webhook"));
    let msgs = inbound(&t, 1).await;
    assert_eq!(msgs[0]["content"]["text"], "via webhook");
    // A redelivery of the same update is acknowledged and stored once.
    let update = json!({"update_id": 999001, "message": {"message_id": 77, "date": 1700000000,
        "chat": {"id": 801, "type": "private", "first_name": "Ada"},
        "from": {"id": 801, "is_bot": false, "first_name": "Ada"}, "text": "twice"}});
    for _ in 0..2 {
        let r = t
            .http
            .post(t.url("/webhooks/telegram/tg"))
            .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
            .json(&update)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A wrong secret is refused and stores nothing.
    let r = t
        .http
        .post(t.url("/webhooks/telegram/tg"))
        .header("X-Telegram-Bot-Api-Secret-Token", "guess")
        .json(
            &json!({"update_id": 999002, "message": {"message_id": 78, "date": 1700000000,
            "chat": {"id": 801, "type": "private", "first_name": "Ada"}, "text": "forged"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let msgs = inbound(&t, 2).await;
    let texts: Vec<&str> = msgs
        .iter()
        .map(|m| m["content"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["via webhook", "twice"]);
    t.stop().await;
}

#[tokio::test]
async fn outbound_messages_reach_telegram_with_chat_text_buttons_and_reply() {
    let (sim, t) = setup("polling", TelegramConfig::default(), "").await;
    sim.user_message(TOKEN, user(901, "question"));
    let q = inbound(&t, 1).await.remove(0);
    let conv = q["conversation_id"].as_str().unwrap();
    let reply = send(
        &t,
        json!({"bot_id": "tg", "to": {"conversation_id": conv}, "reply_to": q["id"],
        "content": {"type": "text", "text": "answer"}}),
    )
    .await;
    let buttons = send(&t, json!({"bot_id": "tg", "to": {"chat_id": "901"},
        "content": {"type": "buttons", "text": "Pick one", "buttons": [{"id": "y", "title": "Yes"}, {"id": "n", "title": "No"}]}})).await;
    let photo = send(&t, json!({"bot_id": "tg", "to": {"chat_id": 901},
        "content": {"type": "media", "kind": "image", "url": "https://example.com/cat.jpg", "caption": "a cat"}})).await;
    let long = send(&t, json!({"bot_id": "tg", "to": {"chat_id": "901"}, "content": {"type": "text", "text": "z".repeat(5000)}})).await;
    for id in [&reply, &buttons, &photo, &long] {
        let m = t
            .wait_message(ACME_KEY, id, "sent", Duration::from_secs(10))
            .await;
        assert!(m["external_id"].is_string());
    }
    let sent = sim.sent(TOKEN);
    assert_eq!(
        sent.len(),
        5,
        "the long text went out as two messages: {sent:?}"
    );
    assert_eq!(sent[0].chat_id, 901);
    assert_eq!(sent[0].text.as_deref(), Some("answer"));
    assert_eq!(
        sent[0].reply_to_message_id.map(|r| r.to_string()),
        q["external_id"].as_str().map(str::to_string)
    );
    let markup = sent[1].reply_markup.clone().expect("inline keyboard");
    assert_eq!(markup["inline_keyboard"][0][0]["callback_data"], "y");
    assert_eq!(markup["inline_keyboard"][1][0]["text"], "No");
    assert_eq!(sent[2].method, "sendphoto");
    assert_eq!(sent[2].caption.as_deref(), Some("a cat"));
    assert_eq!(
        sent[3].text.as_ref().unwrap().len() + sent[4].text.as_ref().unwrap().len(),
        5000
    );
    // The user presses a button: a button_reply that replies to the bot's message.
    sim.user_presses_button(TOKEN, 901, 901, sent[1].message_id, "y");
    let msgs = inbound(&t, 2).await;
    assert_eq!(
        msgs[1]["content"],
        json!({"type": "button_reply", "id": "y", "title": "Yes"})
    );
    assert_eq!(msgs[1]["reply_to"], buttons.as_str());
    // The press is answered (the user's spinner stops), once it is stored.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !sim
        .sent(TOKEN)
        .iter()
        .any(|s| s.method == "answercallbackquery")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the callback query was never answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Refused before it is queued: splitting forbidden, templates.
    let (s, p) = t
        .post(
            ACME_KEY,
            "/v1/messages",
            json!({"bot_id": "tg", "to": {"chat_id": "901"}, "allow_split": false,
            "content": {"type": "text", "text": "z".repeat(5000)}}),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("4096"));
    let (s, _) = t
        .post(
            ACME_KEY,
            "/v1/messages",
            json!({"bot_id": "tg", "to": {"chat_id": "901"},
            "content": {"type": "template", "name": "x", "language": "en"}}),
        )
        .await;
    assert_eq!(s, 422);
    t.stop().await;
}

#[tokio::test]
async fn sends_to_unknown_or_blocking_chats_fail_with_telegrams_reason() {
    let (sim, t) = setup("polling", TelegramConfig::default(), "").await;
    let id = send(&t, json!({"bot_id": "tg", "to": {"chat_id": "424242"}, "content": {"type": "text", "text": "anyone?"}})).await;
    let m = t
        .wait_message(ACME_KEY, &id, "failed", Duration::from_secs(10))
        .await;
    assert_eq!(m["error"]["code"], "permanent");
    assert!(
        m["error"]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("chat not found"),
        "{m}"
    );
    sim.user_message(TOKEN, user(902, "bye"));
    inbound(&t, 1).await;
    sim.block_bot(TOKEN, 902);
    let id = send(&t, json!({"bot_id": "tg", "to": {"chat_id": "902"}, "content": {"type": "text", "text": "hello?"}})).await;
    let m = t
        .wait_message(ACME_KEY, &id, "failed", Duration::from_secs(10))
        .await;
    assert_eq!(m["error"]["platform_code"], "403");
    t.stop().await;
}

#[tokio::test]
async fn a_429_is_waited_out_and_the_message_delivered() {
    // The simulator allows 1 message per second per chat, no burst; the bot is told 5/s.
    let config = TelegramConfig {
        per_chat: Rate::new(1, Duration::from_secs(1), 1),
        ..TelegramConfig::default()
    };
    let (sim, t) = setup("polling", config, "rate_limit = { per_chat = \"5/s\" }").await;
    sim.user_message(TOKEN, user(950, "hi"));
    inbound(&t, 1).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(send(&t, json!({"bot_id": "tg", "to": {"chat_id": "950"}, "content": {"type": "text", "text": format!("r{i}")}})).await);
    }
    for id in &ids {
        let m = t
            .wait_message(ACME_KEY, id, "sent", Duration::from_secs(15))
            .await;
        assert_eq!(m["attempts"], 1, "rate limits are not attempts: {m}");
    }
    assert!(sim.counters().responses_429 >= 1, "the simulator did limit");
    let texts: Vec<String> = sim
        .sent(TOKEN)
        .iter()
        .filter_map(|s| s.text.clone())
        .collect();
    assert_eq!(texts, ["r0", "r1", "r2"]);
    let (_, b) = t.get(ACME_KEY, "/v1/bots/tg").await;
    assert!(b["counters"]["rate_limited"].as_u64().unwrap() >= 1);
    t.stop().await;
}

#[tokio::test]
async fn five_hundred_messages_to_fifty_chats_keep_order_without_a_single_429() {
    // Limits scaled up 10x on both sides so the test is quick; the ratio is Telegram's.
    let config = TelegramConfig {
        per_bot: Rate::new(300, Duration::from_secs(1), 30),
        per_chat: Rate::new(10, Duration::from_secs(1), 3),
        ..TelegramConfig::default()
    };
    let (sim, t) = setup(
        "polling",
        config,
        "rate_limit = { per_bot = \"300/s\", per_chat = \"10/s\" }",
    )
    .await;
    for c in 0..50 {
        sim.user_message(TOKEN, user(2000 + c, "hi"));
    }
    inbound(&t, 50).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        for c in 0..50 {
            ids.push(
                send(
                    &t,
                    json!({"bot_id": "tg", "to": {"chat_id": (2000 + c).to_string()},
                "content": {"type": "text", "text": format!("{c}:{i}")}}),
                )
                .await,
            );
        }
    }
    for id in &ids {
        t.wait_message(ACME_KEY, id, "sent", Duration::from_secs(30))
            .await;
    }
    assert_eq!(
        sim.counters().responses_429,
        0,
        "the pacer kept within Telegram's limits"
    );
    let sent = sim.sent(TOKEN);
    assert_eq!(sent.len(), 500);
    for c in 0..50 {
        let order: Vec<String> = sent
            .iter()
            .filter(|s| s.chat_id == 2000 + c)
            .filter_map(|s| s.text.clone())
            .collect();
        let expected: Vec<String> = (0..10).map(|i| format!("{c}:{i}")).collect();
        assert_eq!(order, expected, "chat {c} out of order");
    }
    t.stop().await;
}

#[tokio::test]
async fn a_revoked_token_fails_the_bot_without_a_retry_loop() {
    let (sim, t) = setup("polling", TelegramConfig::default(), "").await;
    sim.revoke_token(TOKEN);
    let (s, _) = t.post(ACME_KEY, "/v1/bots/tg/restart", json!({})).await;
    assert_eq!(s, 200);
    let b = t
        .wait_state(ACME_KEY, "tg", "failed", Duration::from_secs(10))
        .await;
    assert!(b["state_reason"].as_str().unwrap().contains("token"), "{b}");
    let before = sim.requests().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        sim.requests().len(),
        before,
        "no retries after a rejected token"
    );
    t.stop().await;
    // The token never reaches the logs, even in the errors about it being rejected.
    let secret_part = TOKEN.split(':').nth(1).unwrap();
    assert!(
        !captured_logs().contains(secret_part),
        "a log line carries the bot token"
    );
}

#[tokio::test]
async fn media_edits_and_joins_are_normalized_and_media_is_proxied() {
    let (sim, t) = setup("polling", TelegramConfig::default(), "").await;
    let bytes = b"\x89PNG fake image bytes".to_vec();
    let file_id = sim.add_file(TOKEN, bytes.clone(), "cat.png", "image/png");
    let mut photo = user(990, "");
    photo.text = None;
    photo.photo_file_id = Some(file_id);
    photo.caption = Some("my cat".into());
    sim.user_message(TOKEN, photo);
    let m = inbound(&t, 1).await.remove(0);
    assert_eq!(m["content"]["type"], "media");
    assert_eq!(m["content"]["kind"], "image");
    assert_eq!(m["content"]["caption"], "my cat");
    let r = t
        .http
        .get(t.url(&format!("/v1/messages/{}/media", m["id"].as_str().unwrap())))
        .bearer_auth(ACME_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let headers = format!("{:?}", r.headers());
    let body = r.bytes().await.unwrap();
    assert!(!body.is_empty());
    assert!(!headers.contains(TOKEN) && !String::from_utf8_lossy(&body).contains(TOKEN));
    // Edits update the stored message and publish message.updated.
    sim.user_message(TOKEN, user(990, "tpyo"));
    let msgs = inbound(&t, 2).await;
    let ext: i64 = msgs[1]["external_id"].as_str().unwrap().parse().unwrap();
    sim.user_edits(TOKEN, 990, ext, "typo");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, m) = t
            .get(
                ACME_KEY,
                &format!("/v1/messages/{}", msgs[1]["id"].as_str().unwrap()),
            )
            .await;
        if m["content"]["text"] == "typo" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "edit not applied: {m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, ev) = t.get(ACME_KEY, "/v1/events?types=message.updated").await;
    assert_eq!(ev["items"][0]["data"]["previous_content"]["text"], "tpyo");
    // The bot is added to a group: the conversation appears with its title.
    sim.bot_added_to_group(TOKEN, -5555, "Ops room", 990);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, convs) = t.get(ACME_KEY, "/v1/conversations?q=ops").await;
        if let Some(c) = convs["items"].as_array().and_then(|a| a.first()) {
            assert_eq!(c["kind"], "group");
            assert_eq!(c["title"], "Ops room");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "join not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.stop().await;
}

#[tokio::test]
async fn with_upload_media_the_gateway_fetches_the_url_and_uploads_the_bytes() {
    // A media server only the gateway can reach (Telegram could not fetch a private URL).
    let app = axum_lite::router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let media = format!("http://{}/cat.png", listener.local_addr().unwrap());
    tokio::spawn(async move { axum_lite::serve(listener, app).await });
    let (sim, t) = setup("polling", TelegramConfig::default(), "upload_media = true").await;
    sim.user_message(TOKEN, user(3001, "send me a cat"));
    inbound(&t, 1).await;
    let id = send(
        &t,
        json!({"bot_id": "tg", "to": {"chat_id": "3001"},
        "content": {"type": "media", "kind": "image", "url": media, "caption": "cat"}}),
    )
    .await;
    t.wait_message(ACME_KEY, &id, "sent", Duration::from_secs(10))
        .await;
    let sent = sim.sent(TOKEN);
    assert_eq!(sent[0].method, "sendphoto");
    assert_eq!(sent[0].media.as_deref(), Some("upload:cat.png"), "{sent:?}");
    t.stop().await;
}

/// A one-route HTTP server for media files.
mod axum_lite {
    pub fn router() -> axum::Router {
        axum::Router::new().route(
            "/cat.png",
            axum::routing::get(|| async {
                ([("content-type", "image/png")], b"\x89PNG cat".to_vec())
            }),
        )
    }
    pub async fn serve(listener: tokio::net::TcpListener, app: axum::Router) {
        let _ = axum::serve(listener, app).await;
    }
}

#[tokio::test]
async fn sending_to_a_group_chat_id_opens_a_group_conversation_paced_as_a_group() {
    let (sim, t) = setup("polling", TelegramConfig::default(), "").await;
    sim.add_chat(TOKEN, -100_777, ChatType::Supergroup, Some("Crew"));
    let id = send(&t, json!({"bot_id": "tg", "to": {"chat_id": "-100777"}, "content": {"type": "text", "text": "hello crew"}})).await;
    let m = t
        .wait_message(ACME_KEY, &id, "sent", Duration::from_secs(10))
        .await;
    let (_, c) = t
        .get(
            ACME_KEY,
            &format!(
                "/v1/conversations/{}",
                m["conversation_id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(c["kind"], "group");
    t.stop().await;
}

#[tokio::test]
async fn webhook_garbage_with_the_right_secret_gets_a_4xx_problem_and_stores_nothing() {
    let (_sim, t) = setup("webhook", TelegramConfig::default(), "").await;
    for body in [
        br#"{"update_id": 1, "message": {"#.to_vec(),
        br#"{"update_id": "one", "message": []}"#.to_vec(),
        b"[]".to_vec(),
        b"{\"update_id\": 5, \"message\": {\"text\": \"\xff\"}}".to_vec(),
    ] {
        let r = t
            .http
            .post(t.url("/webhooks/telegram/tg"))
            .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!(
            (400..500).contains(&status),
            "{status} for {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    // And the wrong secret, with a good body.
    let r = t
        .http
        .post(t.url("/webhooks/telegram/tg"))
        .header("X-Telegram-Bot-Api-Secret-Token", "wrong")
        .body(r#"{"update_id": 9}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (_, msgs) = t.get(ACME_KEY, "/v1/messages").await;
    assert!(msgs["items"].as_array().unwrap().is_empty(), "{msgs}");
    t.stop().await;
}

#[tokio::test]
async fn a_fifth_of_sends_failing_delivers_each_message_once_with_bounded_retries() {
    let sim = TelegramSim::start(TelegramConfig::default())
        .await
        .expect("simulator starts");
    sim.add_bot(TOKEN, "test_bot");
    let t = TestGateway::start(Options {
        extra_toml: bot_toml(&sim, "webhook", ""),
        outbox_toml: "max_attempts = 12\nsend_timeout_ms = 500".into(),
        real_connectors: true,
        public_url: true,
        ..Default::default()
    })
    .await;
    t.wait_state(ACME_KEY, "tg", "running", Duration::from_secs(10))
        .await;
    const CHATS: i64 = 60;
    for chat in 0..CHATS {
        sim.user_message(TOKEN, user(9000 + chat, "hi"));
    }
    inbound(&t, CHATS as usize).await;
    sim.set_faults(Faults {
        error_rate: 0.12,
        timeout_rate: 0.03,
        drop_rate: 0.05,
        ..Faults::default()
    });
    futures::stream::iter(0..2 * CHATS)
        .map(|i| {
            let t = &t;
            async move {
                send(
                    t,
                    json!({"bot_id": "tg", "to": {"chat_id": 9000 + i % CHATS},
                           "content": {"type": "text", "text": format!("m{i}")}}),
                )
                .await
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let started = std::time::Instant::now();
    while sim.sent(TOKEN).len() < 2 * CHATS as usize {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {} sent",
            sim.sent(TOKEN).len(),
            2 * CHATS
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = sim.sent(TOKEN);
    let mut texts: Vec<String> = sent.iter().filter_map(|m| m.text.clone()).collect();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), sent.len(), "a message sent twice");
    assert_eq!(sent.len(), 2 * CHATS as usize);
    let requests = sim
        .requests()
        .iter()
        .filter(|r| {
            r.api_method
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case("sendMessage"))
        })
        .count();
    let ratio = requests as f64 / sent.len() as f64;
    assert!(
        (1.05..1.6).contains(&ratio),
        "{requests} sendMessage requests for {} messages",
        sent.len()
    );
    eprintln!("{requests} sendMessage requests in {:?}", started.elapsed());
    t.stop().await;
}

#[tokio::test]
async fn a_webhook_to_a_bot_without_a_secret_fails_verification_with_401() {
    let sim = TelegramSim::start(TelegramConfig::default())
        .await
        .expect("simulator starts");
    sim.add_bot(TOKEN, "test_bot");
    let bot = format!(
        "[[bots]]\nid = \"tg\"\ntenant = \"acme\"\nplatform = \"telegram\"\nmode = \"polling\"\n\
         poll_timeout_s = 5\ntoken = \"{TOKEN}\"\napi_base = \"{}\"\n",
        sim.base_url()
    );
    let t = TestGateway::start(Options {
        extra_toml: bot,
        real_connectors: true,
        ..Default::default()
    })
    .await;
    t.wait_state(ACME_KEY, "tg", "running", Duration::from_secs(10))
        .await;
    let r = t
        .http
        .post(t.url("/webhooks/telegram/tg"))
        .header("x-telegram-bot-api-secret-token", "anything")
        .json(
            &json!({"update_id": 1, "message": {"message_id": 1, "date": 0,
            "chat": {"id": 1, "type": "private"}, "text": "forged"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (_, messages) = t.get(ACME_KEY, "/v1/messages").await;
    assert_eq!(messages["items"], json!([]), "nothing stored");
    t.stop().await;
}
