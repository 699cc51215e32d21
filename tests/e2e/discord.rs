//! Discord end to end: the real connector (twilight gateway session, REST, interactions)
//! against the Discord simulator over real sockets.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use switchboard_e2e::*;
use switchboard_sim::discord::{DiscordConfig, DiscordSim};
use switchboard_sim::framework::rate::Rate;
use tokio_tungstenite::tungstenite::Message as Ws;

const TOKEN: &str = "MTA5ODc2.discord-bot-token.0123456789";
const GUILD: &str = "300000000000000001";
const GENERAL: &str = "400000000000000001";
const DM: &str = "400000000000000099";
const ADA: &str = "500000000000000001";

struct Setup {
    sim: DiscordSim,
    t: TestGateway,
    bot_user: String,
}

async fn setup(config: DiscordConfig, extra: &str) -> Setup {
    setup_with(config, extra, false).await
}

async fn setup_with(config: DiscordConfig, extra: &str, guard_private_media: bool) -> Setup {
    let sim = DiscordSim::start(config).await.expect("simulator starts");
    let bot_user = sim.add_bot(TOKEN, "switchbot");
    sim.add_guild_channel(GUILD, GENERAL, "general");
    sim.add_dm_channel(DM, ADA);
    let key = sim.public_key(TOKEN).unwrap();
    let bot = format!(
        "[[bots]]\nid = \"dc\"\ntenant = \"acme\"\nplatform = \"discord\"\ntoken = \"{TOKEN}\"\n\
         application_public_key = \"{key}\"\napi_base = \"{}\"\n{extra}\n",
        sim.base_url()
    );
    let t = TestGateway::start(Options {
        extra_toml: bot,
        real_connectors: true,
        guard_private_media,
        ..Default::default()
    })
    .await;
    sim.set_interactions_endpoint(TOKEN, &t.url("/webhooks/discord/dc/interactions"));
    t.wait_state(ACME_KEY, "dc", "running", Duration::from_secs(15))
        .await;
    Setup { sim, t, bot_user }
}

async fn inbound(t: &TestGateway, n: usize) -> Vec<Value> {
    t.wait_inbound(ACME_KEY, Some("dc"), n, Duration::from_secs(20))
        .await
}

fn texts(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["content"]["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn guild_and_dm_messages_reach_rest_and_the_feed() {
    let Setup { sim, t, bot_user } = setup(DiscordConfig::default(), "").await;
    let url = format!(
        "{}/v1/feed?types=message.received&access_token={ACME_KEY}",
        t.base.replace("http://", "ws://")
    );
    let (mut feed, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let first = sim.user_message(GENERAL, ADA, "ada", &format!("hello <@{bot_user}>"), None);
    sim.user_message(DM, ADA, "ada", "a private word", Some(&first));
    let msgs = inbound(&t, 2).await;
    assert_eq!(
        msgs[0]["content"],
        json!({"type": "text", "text": "hello @switchbot"})
    );
    assert_eq!(msgs[0]["external_id"], first.as_str());
    assert_eq!(msgs[1]["content"]["text"], "a private word");
    let (_, convs) = t.get(ACME_KEY, "/v1/conversations?bot=dc").await;
    let kinds: HashSet<(String, String)> = convs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["external_chat_id"].as_str().unwrap().to_owned(),
                c["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&(GENERAL.into(), "group".into())),
        "{kinds:?}"
    );
    assert!(kinds.contains(&(DM.into(), "direct".into())), "{kinds:?}");
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
    assert_eq!(e["data"]["bot_id"], "dc");

    // A reply goes out as a message reference; the bot's own message (which the gateway
    // dispatches back) is not taken for an inbound one.
    let (status, queued) = t
        .post(
            ACME_KEY,
            "/v1/messages",
            json!({"bot_id": "dc", "to": {"conversation_id": msgs[0]["conversation_id"]},
                   "content": {"type": "text", "text": "hi Ada"}, "reply_to": msgs[0]["id"]}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    let sent = t
        .wait_message(
            ACME_KEY,
            queued["id"].as_str().unwrap(),
            "sent",
            Duration::from_secs(10),
        )
        .await;
    let out = sim.sent(GENERAL);
    assert_eq!(out.len(), 1);
    assert_eq!(sent["external_id"], out[0].message_id.as_str());
    assert_eq!(out[0].body["content"], "hi Ada");
    assert_eq!(
        out[0].body["message_reference"]["message_id"],
        first.as_str()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        inbound(&t, 2).await.len(),
        2,
        "the bot's own message was ingested"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_dropped_socket_is_resumed_and_missed_events_arrive_exactly_once() {
    let Setup { sim, t, .. } = setup(DiscordConfig::default(), "").await;
    sim.user_message(GENERAL, ADA, "ada", "before", None);
    inbound(&t, 1).await;
    sim.drop_socket(TOKEN);
    for i in 0..5 {
        sim.user_message(GENERAL, ADA, "ada", &format!("while away {i}"), None);
    }
    wait_for("a resume", Duration::from_secs(15), || {
        sim.resumes(TOKEN) >= 1
    })
    .await;
    sim.user_message(GENERAL, ADA, "ada", "after", None);
    let msgs = inbound(&t, 7).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let msgs_later = inbound(&t, 7).await;
    assert_eq!(msgs_later.len(), 7, "duplicates: {:?}", texts(&msgs_later));
    assert_eq!(
        texts(&msgs),
        vec![
            "before",
            "while away 0",
            "while away 1",
            "while away 2",
            "while away 3",
            "while away 4",
            "after"
        ]
    );
    assert_eq!(sim.identifies(TOKEN), 1, "resumed, not re-identified");
    t.stop().await;
}

#[tokio::test]
async fn a_zombie_connection_is_detected_and_resumed() {
    let Setup { sim, t, .. } = setup(DiscordConfig::default(), "").await;
    sim.stop_acking_heartbeats(TOKEN, true);
    // Heartbeats every 2 s: a beat without ACK is noticed at the next one.
    wait_for("a resume after the zombie", Duration::from_secs(15), || {
        sim.resumes(TOKEN) >= 1
    })
    .await;
    sim.stop_acking_heartbeats(TOKEN, false);
    sim.user_message(GENERAL, ADA, "ada", "still there?", None);
    let msgs = inbound(&t, 1).await;
    assert_eq!(texts(&msgs), vec!["still there?"]);
    assert_eq!(sim.identifies(TOKEN), 1);
    t.stop().await;
}

#[tokio::test]
async fn a_reconnect_request_resumes_and_a_non_resumable_invalid_session_identifies_anew() {
    let Setup { sim, t, .. } = setup(DiscordConfig::default(), "").await;
    sim.send_reconnect(TOKEN);
    wait_for("a resume after op 7", Duration::from_secs(10), || {
        sim.resumes(TOKEN) >= 1
    })
    .await;
    assert_eq!(sim.identifies(TOKEN), 1);
    sim.invalidate_session(TOKEN, false);
    wait_for(
        "a fresh identify after op 9",
        Duration::from_secs(15),
        || sim.identifies(TOKEN) >= 2,
    )
    .await;
    wait_for("connected again", Duration::from_secs(10), || {
        sim.connected_sessions(TOKEN) == 1
    })
    .await;
    sim.user_message(DM, ADA, "ada", "new session", None);
    assert_eq!(texts(&inbound(&t, 1).await), vec!["new session"]);
    t.stop().await;
}

#[tokio::test]
async fn close_4004_fails_the_bot_after_a_single_identify() {
    let Setup { sim, t, .. } = setup(DiscordConfig::default(), "").await;
    sim.revoke_token(TOKEN);
    let bot = t
        .wait_state(ACME_KEY, "dc", "failed", Duration::from_secs(10))
        .await;
    assert!(
        bot["state_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("4004")
            || bot["last_error"].to_string().contains("4004"),
        "{bot}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.identifies(TOKEN), 1, "no retry loop after 4004");
    let (_, bot) = t.get(ACME_KEY, "/v1/bots/dc").await;
    assert_eq!(bot["state"], "failed");
    t.stop().await;
}

#[tokio::test]
async fn a_gateway_restart_resumes_the_saved_session() {
    let Setup { sim, mut t, .. } = setup(DiscordConfig::default(), "").await;
    sim.user_message(GENERAL, ADA, "ada", "one", None);
    inbound(&t, 1).await;
    t.restart().await;
    t.wait_state(ACME_KEY, "dc", "running", Duration::from_secs(15))
        .await;
    sim.user_message(GENERAL, ADA, "ada", "two", None);
    assert_eq!(texts(&inbound(&t, 2).await), vec!["one", "two"]);
    assert_eq!(sim.identifies(TOKEN), 1, "the restart resumed");
    assert!(sim.resumes(TOKEN) >= 1);
    t.stop().await;
}

#[tokio::test]
async fn a_thousand_messages_to_ten_channels_draw_no_429() {
    // Buckets of 10 per second per channel, which the connector only learns from the
    // headers (the global 180/s it is told would let 18/s go to each channel), and a global
    // limit of 200/s.
    let config = DiscordConfig {
        global_per_second: 200,
        channel_bucket: Rate::new(10, Duration::from_secs(1), 10),
        ..DiscordConfig::default()
    };
    let Setup { sim, t, .. } = setup(config, "rate_limit = { per_bot = \"180/s\" }").await;
    let channels: Vec<String> = (0..10).map(|i| format!("4100000000000000{i:02}")).collect();
    for (i, c) in channels.iter().enumerate() {
        sim.add_guild_channel(GUILD, c, &format!("room-{i}"));
    }
    let mut ids = Vec::new();
    for n in 0..1000 {
        let chat = &channels[n % 10];
        let (status, body) = t
            .post(
                ACME_KEY,
                "/v1/messages",
                json!({"bot_id": "dc", "to": {"chat_id": chat},
                       "content": {"type": "text", "text": format!("message {n}")}}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let all_sent = || channels.iter().map(|c| sim.sent(c).len()).sum::<usize>() == 1000;
    wait_for("1000 messages sent", Duration::from_secs(60), all_sent).await;
    assert_eq!(
        sim.counters().responses_429,
        0,
        "the simulator answered 429"
    );
    for c in &channels {
        let sent = sim.sent(c);
        let order: Vec<usize> = sent
            .iter()
            .map(|s| {
                s.body["content"].as_str().unwrap()["message ".len()..]
                    .parse()
                    .unwrap()
            })
            .collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "FIFO per channel");
    }
    t.wait_message(
        ACME_KEY,
        ids.last().unwrap(),
        "sent",
        Duration::from_secs(10),
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn long_texts_split_at_2000_or_are_refused_when_splitting_is_off() {
    let Setup { sim, t, .. } = setup(DiscordConfig::default(), "").await;
    let long = "word ".repeat(500); // 2,500 characters
    let (status, problem) = t
        .post(
            ACME_KEY,
            "/v1/messages",
            json!({"bot_id": "dc", "to": {"chat_id": GENERAL}, "allow_split": false,
                   "content": {"type": "text", "text": long}}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("2000"),
        "{problem}"
    );
    let (status, queued) = t
        .post(
            ACME_KEY,
            "/v1/messages",
            json!({"bot_id": "dc", "to": {"chat_id": GENERAL},
                   "content": {"type": "text", "text": long}}),
        )
        .await;
    assert_eq!(status, 202);
    t.wait_message(
        ACME_KEY,
        queued["id"].as_str().unwrap(),
        "sent",
        Duration::from_secs(10),
    )
    .await;
    let parts: Vec<String> = sim
        .sent(GENERAL)
        .iter()
        .map(|s| s.body["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(parts.len(), 2);
    assert!(parts.iter().all(|p| p.chars().count() <= 2000));
    assert_eq!(parts.concat(), long);
    t.stop().await;
}

#[tokio::test]
async fn buttons_go_out_as_components_and_a_press_comes_back_acknowledged() {
    let Setup { sim, t, .. } = setup(DiscordConfig::default(), "").await;
    let (status, queued) = t
        .post(
            ACME_KEY,
            "/v1/messages",
            json!({"bot_id": "dc", "to": {"chat_id": DM},
                   "content": {"type": "buttons", "text": "Ship it?",
                               "buttons": [{"id": "yes", "title": "Yes"}, {"id": "no", "title": "No"}]}}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    let sent = t
        .wait_message(
            ACME_KEY,
            queued["id"].as_str().unwrap(),
            "sent",
            Duration::from_secs(10),
        )
        .await;
    let out = sim.sent(DM);
    assert_eq!(
        out[0].body["components"][0]["components"][1]["custom_id"],
        "no"
    );
    sim.press_button(DM, ADA, sent["external_id"].as_str().unwrap(), "yes");
    let msgs = inbound(&t, 1).await;
    assert_eq!(
        msgs[0]["content"],
        json!({"type": "button_reply", "id": "yes", "title": "Yes"})
    );
    wait_for("the press acknowledged", Duration::from_secs(5), || {
        sim.sent(DM).iter().any(|s| s.body["type"] == 6)
    })
    .await;
    t.stop().await;
}

#[tokio::test]
async fn interactions_are_verified_pinged_and_answered_within_three_seconds() {
    let Setup { sim, t, .. } = setup(DiscordConfig::default(), "").await;
    // Discord's own check: a signed PING gets PONG, a forged one 401.
    assert!(sim.verify_interactions_endpoint(TOKEN).await.unwrap());
    let forged = t
        .http
        .post(t.url("/webhooks/discord/dc/interactions"))
        .header("x-signature-ed25519", "00".repeat(64))
        .header(
            "x-signature-timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .body(r#"{"type":2,"id":"1","channel_id":"2","data":{"name":"x"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let reply = sim
        .slash_command(TOKEN, GENERAL, ADA, "status")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["type"], 4, "an answer at once: {}", reply.body);
    assert_eq!(reply.body["data"]["flags"], 64, "only its user sees it");
    assert!(reply.took < Duration::from_secs(3));
    let msgs = inbound(&t, 1).await;
    assert_eq!(msgs.len(), 1, "the forged interaction stored nothing");
    assert_eq!(msgs[0]["content"]["text"], "/status");
    t.stop().await;
}

#[tokio::test]
async fn an_edit_updates_the_stored_message() {
    let Setup { sim, t, .. } = setup(DiscordConfig::default(), "").await;
    let id = sim.user_message(GENERAL, ADA, "ada", "teh typo", None);
    let first = inbound(&t, 1).await;
    sim.user_edits(GENERAL, &id, "the typo");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, m) = t
            .get(
                ACME_KEY,
                &format!("/v1/messages/{}", first[0]["id"].as_str().unwrap()),
            )
            .await;
        if m["content"]["text"] == "the typo" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "edit not applied: {m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        inbound(&t, 1).await.len(),
        1,
        "an edit is not a new message"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_global_429_is_waited_out_not_hammered() {
    // The simulator allows 5 requests/s per bot; the bot is told 100/s, so it meets the
    // global limit and must wait each 429's retry_after instead of resending at once.
    let config = DiscordConfig {
        global_per_second: 5,
        ..DiscordConfig::default()
    };
    let Setup { sim, t, .. } = setup(config, "rate_limit = { per_bot = \"100/s\" }").await;
    let channels: Vec<String> = (0..20).map(|i| format!("4200000000000000{i:02}")).collect();
    for (i, c) in channels.iter().enumerate() {
        sim.add_guild_channel(GUILD, c, &format!("room-{i}"));
    }
    let mut ids = Vec::new();
    for c in &channels {
        let (status, body) = t
            .post(
                ACME_KEY,
                "/v1/messages",
                json!({"bot_id": "dc", "to": {"chat_id": c}, "content": {"type": "text", "text": "hi"}}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        t.wait_message(ACME_KEY, id, "sent", Duration::from_secs(20))
            .await;
    }
    let limited = sim.counters().responses_429;
    assert!(limited >= 1, "the test never met the global limit");
    // Each 429 freezes the whole bot for retry_after. Sends already on the wire when the
    // first 429 came cannot be recalled, so each one-second window costs a wave (15, then
    // 10, then 5 at most); a client that resent at once would draw thousands.
    assert!(limited <= 40, "{limited} answers 429 for 20 messages");
    let (_, bot) = t.get(ACME_KEY, "/v1/bots/dc").await;
    assert!(
        bot["counters"]["rate_limited"].as_u64().unwrap() >= 1,
        "{bot}"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_fifth_of_sends_failing_delivers_each_message_once_in_order() {
    let sim = DiscordSim::start(DiscordConfig {
        channel_bucket: Rate::new(10, Duration::from_secs(1), 10),
        ..DiscordConfig::default()
    })
    .await
    .expect("simulator starts");
    sim.add_bot(TOKEN, "switchbot");
    sim.add_guild_channel(GUILD, GENERAL, "general");
    let channels: Vec<String> = (0..10).map(|i| format!("4200000000000000{i:02}")).collect();
    for (i, c) in channels.iter().enumerate() {
        sim.add_guild_channel(GUILD, c, &format!("room-{i}"));
    }
    let t = TestGateway::start(Options {
        extra_toml: format!(
            "[[bots]]\nid = \"dc\"\ntenant = \"acme\"\nplatform = \"discord\"\ntoken = \"{TOKEN}\"\napi_base = \"{}\"\n",
            sim.base_url()
        ),
        outbox_toml: "max_attempts = 12\nsend_timeout_ms = 500".into(),
        real_connectors: true,
        ..Default::default()
    })
    .await;
    t.wait_state(ACME_KEY, "dc", "running", Duration::from_secs(15))
        .await;
    sim.set_faults(switchboard_sim::framework::Faults {
        error_rate: 0.12,
        timeout_rate: 0.03,
        drop_rate: 0.05,
        ..Default::default()
    });
    for n in 0..200 {
        let (status, body) = t
            .post(
                ACME_KEY,
                "/v1/messages",
                json!({"bot_id": "dc", "to": {"chat_id": channels[n % 10]},
                       "content": {"type": "text", "text": format!("message {n}")}}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let all_sent = || channels.iter().map(|c| sim.sent(c).len()).sum::<usize>() >= 200;
    wait_for("200 messages sent", Duration::from_secs(60), all_sent).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for c in &channels {
        let order: Vec<usize> = sim
            .sent(c)
            .iter()
            .map(|s| {
                s.body["content"].as_str().unwrap()["message ".len()..]
                    .parse()
                    .unwrap()
            })
            .collect();
        let mut once = order.clone();
        once.sort();
        once.dedup();
        assert_eq!(order, once, "each message once, in order, in {c}");
        assert_eq!(order.len(), 20);
    }
    let requests = sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/messages"))
        .count();
    let ratio = requests as f64 / 200.0;
    assert!(
        (1.05..1.6).contains(&ratio),
        "{requests} message requests for 200 messages"
    );
    t.stop().await;
}

#[tokio::test]
async fn an_attached_file_is_streamed_from_the_platform() {
    // With the private-address guard on, as in production: the attachment is on the
    // configured platform's own host (here 127.0.0.1), which is not a URL to guard.
    let s = setup_with(DiscordConfig::default(), "", true).await;
    let png = b"\x89PNG\r\n\x1a\n-discord-attachment".to_vec();
    s.sim.user_message_with_attachment(
        GENERAL,
        ADA,
        "ada",
        "look",
        ("cat.png", "image/png", png.clone()),
    );
    let m = inbound(&s.t, 1).await.remove(0);
    assert_eq!(m["content"]["type"], "media", "{m}");
    let r =
        s.t.http
            .get(s.t.url(&format!("/v1/messages/{}/media", m["id"].as_str().unwrap())))
            .bearer_auth(ACME_KEY)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.bytes().await.unwrap().to_vec(), png);
    // The one attachment is the n-th for n = 0 or 1 (counted either way); there is no other.
    let id = m["id"].as_str().unwrap();
    for (n, status) in [(0, 200), (1, 200), (2, 404)] {
        let (got, _) =
            s.t.get(ACME_KEY, &format!("/v1/messages/{id}/media?n={n}"))
                .await;
        assert_eq!(got, status, "n={n}");
    }
    s.t.stop().await;
}
