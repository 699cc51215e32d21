//! Platform faults: the simulators (WhatsApp and SMS in one run, Telegram and Discord in
//! another) answer a fifth of the send requests with a 5xx, a dropped connection or no
//! answer at all. Every message still gets through exactly once, retries
//! stay bounded (the request count), and a bot on a healthy provider is not slowed or touched
//! by another bot's faults.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use switchboard_e2e::*;
use switchboard_sim::discord::{DiscordConfig, DiscordSim};
use switchboard_sim::framework::Faults;
use switchboard_sim::framework::rate::Rate;
use switchboard_sim::sms::{Provider, SmsConfig, SmsSim};
use switchboard_sim::telegram::{TelegramConfig, TelegramSim, UserMessage};
use switchboard_sim::whatsapp::{PhoneNumber, WhatsAppConfig, WhatsAppSim};

const PHONE_ID: &str = "106540352242922";
const WA_TOKEN: &str = "EAAG-test-access-token";
const APP_SECRET: &str = "app-secret-0123456789";
const FAULTY_AT: &str = "faulty-at";
const HEALTHY_AT: &str = "healthy-at";
const AT_KEY: &str = "atsk_0123456789abcdef";

const WA_MESSAGES: usize = 600;
const FAULTY_SMS: usize = 1000;
const HEALTHY_SMS: usize = 500;

fn faults() -> Faults {
    Faults {
        error_rate: 0.12,
        timeout_rate: 0.03,
        drop_rate: 0.05,
        ..Faults::default()
    }
}

/// Submits `body(i)` for each `i`, 16 at a time; every one must be accepted.
async fn submit(
    t: &TestGateway,
    range: std::ops::Range<usize>,
    body: impl Fn(usize) -> serde_json::Value,
) {
    futures::stream::iter(range.map(body))
        .map(|b| async move {
            let (s, m) = t.post(ACME_KEY, "/v1/messages", b).await;
            assert_eq!(s, 202, "{m}");
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

#[tokio::test]
async fn a_fifth_of_sends_failing_delivers_everything_once_with_bounded_retries() {
    let wa = WhatsAppSim::start(WhatsAppConfig {
        throughput: switchboard_sim::framework::rate::Rate::new(400, Duration::from_secs(1), 400),
        read_receipts: false,
        ..WhatsAppConfig::default()
    })
    .await
    .unwrap();
    wa.add_phone_number(PhoneNumber {
        phone_number_id: PHONE_ID.into(),
        display_phone_number: "15550001111".into(),
        waba_id: "102290129340398".into(),
        access_token: WA_TOKEN.into(),
        app_secret: APP_SECRET.into(),
        callback_url: None,
        verified_name: "Acme".into(),
    });
    let faulty = SmsSim::start(SmsConfig::without_rate_limits())
        .await
        .unwrap();
    faulty.add_at_account(FAULTY_AT, AT_KEY, 1e9);
    let healthy = SmsSim::start(SmsConfig::without_rate_limits())
        .await
        .unwrap();
    healthy.add_at_account(HEALTHY_AT, AT_KEY, 1e9);
    let t = TestGateway::start(Options {
        extra_toml: format!(
            "[[bots]]\nid = \"wa\"\ntenant = \"acme\"\nplatform = \"whatsapp\"\nphone_number_id = \"{PHONE_ID}\"\n\
             access_token = \"{WA_TOKEN}\"\napp_secret = \"{APP_SECRET}\"\nverify_token = \"verify\"\n\
             api_base = \"{}\"\nthroughput_per_second = 400\n\
             [[bots]]\nid = \"faulty\"\ntenant = \"acme\"\nplatform = \"sms\"\nprovider = \"africastalking\"\n\
             username = \"{FAULTY_AT}\"\napi_key = \"{AT_KEY}\"\napi_base = \"{}\"\nthroughput_per_second = 1000\n\
             [[bots]]\nid = \"healthy\"\ntenant = \"acme\"\nplatform = \"sms\"\nprovider = \"africastalking\"\n\
             username = \"{HEALTHY_AT}\"\napi_key = \"{AT_KEY}\"\napi_base = \"{}\"\nthroughput_per_second = 1000\n",
            wa.base_url(),
            faulty.base_url(),
            healthy.base_url()
        ),
        outbox_toml: "max_attempts = 12\nsend_timeout_ms = 500".into(),
        real_connectors: true,
        ..Default::default()
    })
    .await;
    for bot in ["wa", "faulty", "healthy"] {
        t.wait_state(ACME_KEY, bot, "running", Duration::from_secs(10))
            .await;
    }
    wa.set_faults(faults());
    faulty.set_faults(faults());

    // The healthy bot's messages alone first, as the baseline of how long they take.
    let healthy_batch = |range: std::ops::Range<usize>| {
        submit(&t, range, |i| {
            json!({"bot_id": "healthy", "to": {"phone": format!("+2547115{i:05}")},
                   "content": {"type": "text", "text": format!("healthy {i}")}})
        })
    };
    let wait_sent = |sim: &SmsSim, account: &'static str, n: usize| {
        let sim = sim.clone();
        async move {
            let started = Instant::now();
            while sim.sent(Provider::AfricasTalking, account).len() < n {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "{account}: {} of {n} sent",
                    sim.sent(Provider::AfricasTalking, account).len()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            started.elapsed()
        }
    };
    let t0 = Instant::now();
    healthy_batch(0..HEALTHY_SMS / 2).await;
    wait_sent(&healthy, HEALTHY_AT, HEALTHY_SMS / 2).await;
    let alone = t0.elapsed();

    // Then everything at once: the faulty bots' messages and the healthy bot's second half.
    let t0 = Instant::now();
    let faulty_sends = submit(&t, 0..FAULTY_SMS, |i| {
        json!({"bot_id": "faulty", "to": {"phone": format!("+2547116{i:05}")},
               "content": {"type": "text", "text": format!("faulty {i}")}})
    });
    let wa_sends = submit(&t, 0..WA_MESSAGES, |i| {
        json!({"bot_id": "wa", "to": {"phone": format!("+1555{i:07}")},
               "content": {"type": "template", "name": "order_shipped", "language": "en_US"}})
    });
    let healthy_started = Instant::now();
    tokio::join!(
        faulty_sends,
        wa_sends,
        healthy_batch(HEALTHY_SMS / 2..HEALTHY_SMS)
    );
    wait_sent(&healthy, HEALTHY_AT, HEALTHY_SMS).await;
    let beside_faults = healthy_started.elapsed();
    wait_sent(&faulty, FAULTY_AT, FAULTY_SMS).await;
    let started = Instant::now();
    while wa.sent(PHONE_ID).len() < WA_MESSAGES {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "whatsapp: {} of {WA_MESSAGES} sent",
            wa.sent(PHONE_ID).len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Exactly once at each platform: a faulty request has no effect there.
    let mut per_number: HashMap<String, usize> = HashMap::new();
    for s in faulty.sent(Provider::AfricasTalking, FAULTY_AT) {
        *per_number.entry(s.to).or_default() += 1;
    }
    assert_eq!(per_number.len(), FAULTY_SMS);
    assert!(per_number.values().all(|n| *n == 1), "an SMS sent twice");
    let mut per_wa: HashMap<String, usize> = HashMap::new();
    for s in wa.sent(PHONE_ID) {
        *per_wa.entry(s.to).or_default() += 1;
    }
    assert_eq!(per_wa.len(), WA_MESSAGES);
    assert!(
        per_wa.values().all(|n| *n == 1),
        "a WhatsApp message sent twice"
    );
    // Every message is `sent` (or further) in the store, none failed.
    let outbound = t
        .get_all(ACME_KEY, "/v1/messages?direction=outbound&limit=500")
        .await;
    assert_eq!(outbound.len(), WA_MESSAGES + FAULTY_SMS + HEALTHY_SMS);
    for m in &outbound {
        assert!(
            ["sent", "delivered", "read"].contains(&m["status"].as_str().unwrap()),
            "{m}"
        );
    }
    // Bounded retries: about 1 / (1 - 0.2) requests per message, never a hot loop.
    let sms_requests = faulty
        .requests()
        .iter()
        .filter(|r| r.path.contains("/version1/messaging"))
        .count();
    let wa_requests = wa
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/messages"))
        .count();
    for (what, requests, messages) in [
        ("Africa's Talking", sms_requests, FAULTY_SMS),
        ("WhatsApp", wa_requests, WA_MESSAGES),
    ] {
        let ratio = requests as f64 / messages as f64;
        assert!(
            (1.1..1.6).contains(&ratio),
            "{what}: {requests} send requests for {messages} messages ({ratio:.2} each)"
        );
    }
    // The healthy provider saw one request per message, and its bot kept its pace.
    let healthy_requests = healthy
        .requests()
        .iter()
        .filter(|r| r.path.contains("/version1/messaging"))
        .count();
    assert_eq!(healthy_requests, HEALTHY_SMS);
    let (_, bot) = t.get(ACME_KEY, "/v1/bots/healthy").await;
    assert_eq!(bot["state"], "running", "{bot}");
    eprintln!(
        "healthy half alone {alone:?}, beside the faults {beside_faults:?}; all {all:?}; \
         {sms_requests} SMS and {wa_requests} WhatsApp send requests"
    );
    t.stop().await;
}

#[tokio::test]
async fn telegram_and_discord_sends_survive_a_fifth_failing_with_bounded_retries() {
    const TG_TOKEN: &str = "222222:fault-token";
    const TG_SECRET: &str = "whsec_fault_0123456789";
    const DC_TOKEN: &str = "fault.discord.token";
    const GUILD: &str = "300000000000000009";
    const CHATS: i64 = 20;
    const CHANNELS: usize = 10;
    const MESSAGES: usize = 300;
    // Limits scaled up so the run is quick; the faults, not the limits, are under test.
    let tg = TelegramSim::start(TelegramConfig {
        per_bot: Rate::new(300, Duration::from_secs(1), 30),
        per_chat: Rate::new(10, Duration::from_secs(1), 3),
        ..TelegramConfig::default()
    })
    .await
    .unwrap();
    tg.add_bot(TG_TOKEN, "fault_bot");
    let dc = DiscordSim::start(DiscordConfig {
        global_per_second: 200,
        channel_bucket: Rate::new(10, Duration::from_secs(1), 10),
        ..DiscordConfig::default()
    })
    .await
    .unwrap();
    dc.add_bot(DC_TOKEN, "faultbot");
    let channels: Vec<String> = (0..CHANNELS)
        .map(|i| format!("4200000000000000{i:02}"))
        .collect();
    for (i, c) in channels.iter().enumerate() {
        dc.add_guild_channel(GUILD, c, &format!("room-{i}"));
    }
    let key = dc.public_key(DC_TOKEN).unwrap();
    let t = TestGateway::start(Options {
        extra_toml: format!(
            "[[bots]]\nid = \"tg\"\ntenant = \"acme\"\nplatform = \"telegram\"\nmode = \"webhook\"\n\
             token = \"{TG_TOKEN}\"\nwebhook_secret = \"{TG_SECRET}\"\napi_base = \"{}\"\n\
             rate_limit = {{ per_bot = \"300/s\", per_chat = \"10/s\" }}\n\
             [[bots]]\nid = \"dc\"\ntenant = \"acme\"\nplatform = \"discord\"\ntoken = \"{DC_TOKEN}\"\n\
             application_public_key = \"{key}\"\napi_base = \"{}\"\n\
             rate_limit = {{ per_bot = \"180/s\" }}\n",
            tg.base_url(),
            dc.base_url()
        ),
        outbox_toml: "max_attempts = 12\nsend_timeout_ms = 500".into(),
        real_connectors: true,
        public_url: true,
        ..Default::default()
    })
    .await;
    for bot in ["tg", "dc"] {
        t.wait_state(ACME_KEY, bot, "running", Duration::from_secs(15))
            .await;
    }
    // Telegram answers only chats that wrote to the bot first.
    for c in 0..CHATS {
        tg.user_message(TG_TOKEN, UserMessage::text(3000 + c, 3000 + c, "hi"));
    }
    t.wait_inbound(
        ACME_KEY,
        Some("tg"),
        CHATS as usize,
        Duration::from_secs(15),
    )
    .await;
    tg.set_faults(faults());
    dc.set_faults(faults());

    let tg_sends = submit(&t, 0..MESSAGES, |i| {
        json!({"bot_id": "tg", "to": {"chat_id": (3000 + i as i64 % CHATS).to_string()},
               "content": {"type": "text", "text": format!("tg {i}")}})
    });
    let dc_sends = submit(&t, 0..MESSAGES, |i| {
        json!({"bot_id": "dc", "to": {"chat_id": channels[i % CHANNELS]},
               "content": {"type": "text", "text": format!("dc {i}")}})
    });
    tokio::join!(tg_sends, dc_sends);
    let dc_sent = || {
        channels
            .iter()
            .flat_map(|c| dc.sent(c))
            .map(|s| s.body["content"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    let started = Instant::now();
    while tg.sent(TG_TOKEN).len() < MESSAGES || dc_sent().len() < MESSAGES {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "telegram {} and discord {} of {MESSAGES} sent",
            tg.sent(TG_TOKEN).len(),
            dc_sent().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Exactly once at each platform: a faulty request has no effect there.
    let tg_texts: Vec<String> = tg
        .sent(TG_TOKEN)
        .into_iter()
        .filter_map(|s| s.text)
        .collect();
    for (what, texts) in [("Telegram", tg_texts), ("Discord", dc_sent())] {
        let unique: std::collections::HashSet<&String> = texts.iter().collect();
        assert_eq!(texts.len(), MESSAGES, "{what}: a message sent twice");
        assert_eq!(unique.len(), MESSAGES, "{what}: a message sent twice");
    }
    let outbound = t
        .get_all(ACME_KEY, "/v1/messages?direction=outbound&limit=500")
        .await;
    assert_eq!(outbound.len(), 2 * MESSAGES);
    for m in &outbound {
        assert!(
            ["sent", "delivered", "read"].contains(&m["status"].as_str().unwrap()),
            "{m}"
        );
    }
    // Bounded retries: about 1 / (1 - 0.2) requests per message, never a hot loop.
    let tg_requests = tg
        .requests()
        .iter()
        .filter(|r| r.api_method.as_deref() == Some("sendmessage"))
        .count();
    let dc_requests = dc
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/messages"))
        .count();
    for (what, requests) in [("Telegram", tg_requests), ("Discord", dc_requests)] {
        let ratio = requests as f64 / MESSAGES as f64;
        assert!(
            (1.1..1.6).contains(&ratio),
            "{what}: {requests} send requests for {MESSAGES} messages ({ratio:.2} each)"
        );
    }
    for bot in ["tg", "dc"] {
        let (_, b) = t.get(ACME_KEY, &format!("/v1/bots/{bot}")).await;
        assert_eq!(b["state"], "running", "{b}");
    }
    t.stop().await;
}
