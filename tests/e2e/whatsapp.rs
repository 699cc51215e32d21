//! WhatsApp Cloud API end to end: the real connector against the WhatsApp simulator, which
//! signs and redelivers webhooks like Meta, over real sockets.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use switchboard_e2e::*;
use switchboard_sim::whatsapp::{
    PhoneNumber, WaInbound, WaUserMessage, WhatsAppConfig, WhatsAppSim,
};

const PHONE_ID: &str = "106540352242922";
const TOKEN: &str = "EAAG-test-access-token";
const APP_SECRET: &str = "app-secret-0123456789";
const VERIFY: &str = "verify-me-please";

async fn setup(config: WhatsAppConfig, extra: &str) -> (WhatsAppSim, TestGateway) {
    let sim = WhatsAppSim::start(config).await.expect("simulator starts");
    sim.add_phone_number(PhoneNumber {
        phone_number_id: PHONE_ID.into(),
        display_phone_number: "15550001111".into(),
        waba_id: "102290129340398".into(),
        access_token: TOKEN.into(),
        app_secret: APP_SECRET.into(),
        callback_url: None,
        verified_name: "Acme".into(),
    });
    let bot = format!(
        "[[bots]]\nid = \"wa\"\ntenant = \"acme\"\nplatform = \"whatsapp\"\nphone_number_id = \"{PHONE_ID}\"\n\
         access_token = \"{TOKEN}\"\napp_secret = \"{APP_SECRET}\"\nverify_token = \"{VERIFY}\"\napi_base = \"{}\"\n{extra}\n",
        sim.base_url()
    );
    let t = TestGateway::start(Options {
        extra_toml: bot,
        real_connectors: true,
        ..Default::default()
    })
    .await;
    sim.set_callback(PHONE_ID, &t.url("/webhooks/whatsapp/wa"));
    t.wait_state(ACME_KEY, "wa", "running", Duration::from_secs(10))
        .await;
    (sim, t)
}

async fn inbound(t: &TestGateway, n: usize) -> Vec<Value> {
    t.wait_inbound(ACME_KEY, None, n, Duration::from_secs(15))
        .await
}

async fn send(t: &TestGateway, body: Value) -> (u16, Value) {
    t.post(ACME_KEY, "/v1/messages", body).await
}

#[tokio::test]
async fn the_verification_handshake_answers_only_the_right_token() {
    let (sim, t) = setup(WhatsAppConfig::default(), "").await;
    assert!(sim.verify_callback(PHONE_ID, VERIFY).await.unwrap());
    assert!(!sim.verify_callback(PHONE_ID, "wrong").await.unwrap());
    let r = t
        .http
        .get(t.url(
            "/webhooks/whatsapp/wa?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=123",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A wrong or missing token is 403 even when the rest of the request is malformed.
    for query in ["hub.verify_token=wrong", "hub.challenge=123", ""] {
        let r = t
            .http
            .get(t.url(&format!("/webhooks/whatsapp/wa?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{query}");
    }
    t.stop().await;
}

#[tokio::test]
async fn signed_batches_are_stored_once_even_when_redelivered() {
    let config = WhatsAppConfig {
        redelivery_rate: 1.0,
        ..WhatsAppConfig::default()
    };
    let (sim, t) = setup(config, "").await;
    let media = sim.add_media(b"JPEGDATA".to_vec(), "image/jpeg");
    sim.user_message(PHONE_ID, WaUserMessage::text("15551234567", "Ada", "hello"));
    sim.user_message(
        PHONE_ID,
        WaUserMessage {
            from: "15551234567".into(),
            profile_name: "Ada".into(),
            kind: WaInbound::Image {
                media_id: media,
                caption: Some("pic".into()),
            },
            context: None,
        },
    );
    sim.user_message(
        PHONE_ID,
        WaUserMessage {
            from: "15557654321".into(),
            profile_name: "Bo".into(),
            kind: WaInbound::Location {
                latitude: -1.28,
                longitude: 36.82,
                name: Some("Nairobi".into()),
                address: None,
            },
            context: None,
        },
    );
    assert!(sim.settle(Duration::from_secs(10)).await);
    assert!(
        sim.deliveries().iter().any(|d| d.redelivery),
        "the simulator redelivered"
    );
    let msgs = inbound(&t, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(inbound(&t, 3).await.len(), 3, "stored once each");
    assert_eq!(msgs[0]["content"], json!({"type": "text", "text": "hello"}));
    assert_eq!(msgs[1]["content"]["kind"], "image");
    assert_eq!(msgs[2]["content"]["type"], "location");
    // Contacts are linked by phone; the media is fetched through the gateway.
    let (_, contact_conv) = t
        .get(
            ACME_KEY,
            &format!(
                "/v1/conversations/{}",
                msgs[0]["conversation_id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(contact_conv["title"], "Ada");
    let r = t
        .http
        .get(t.url(&format!(
            "/v1/messages/{}/media",
            msgs[1]["id"].as_str().unwrap()
        )))
        .bearer_auth(ACME_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"JPEGDATA");
    t.stop().await;
}

#[tokio::test]
async fn a_flipped_byte_in_the_body_gets_401_and_stores_nothing() {
    let (_sim, t) = setup(WhatsAppConfig::default(), "").await;
    let body = json!({"object":"whatsapp_business_account","entry":[{"id":"W","changes":[{"field":"messages","value":{
        "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":PHONE_ID},
        "contacts":[{"profile":{"name":"Eve"},"wa_id":"15550000000"}],
        "messages":[{"from":"15550000000","id":"wamid.FORGED","timestamp":"1700000000","type":"text","text":{"body":"forged"}}]}}]}]})
    .to_string();
    use hmac_sig::sign;
    let sig = sign(APP_SECRET, body.as_bytes());
    let mut flipped = body.clone().into_bytes();
    let i = flipped.iter().position(|b| *b == b'f').unwrap();
    flipped[i] = b'F';
    for (bytes, sig) in [
        (flipped, sig.clone()),
        (body.clone().into_bytes(), "sha256=00".to_string()),
    ] {
        let r = t
            .http
            .post(t.url("/webhooks/whatsapp/wa"))
            .header("content-type", "application/json")
            .header("X-Hub-Signature-256", sig)
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let (_, msgs) = t.get(ACME_KEY, "/v1/messages").await;
    assert!(msgs["items"].as_array().unwrap().is_empty());
    // The same body, correctly signed, is accepted.
    let r = t
        .http
        .post(t.url("/webhooks/whatsapp/wa"))
        .header("X-Hub-Signature-256", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    t.stop().await;
}

/// HMAC-SHA256 as Meta signs, for hand-made requests.
mod hmac_sig {
    use hmac::{Hmac, KeyInit, Mac};

    pub fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

#[tokio::test]
async fn statuses_move_sent_messages_to_delivered_and_read_and_failures_carry_metas_code() {
    let (sim, t) = setup(WhatsAppConfig::default(), "").await;
    sim.user_message(PHONE_ID, WaUserMessage::text("15551112222", "Ada", "hi"));
    let q = inbound(&t, 1).await.remove(0);
    let (s, m) = send(
        &t,
        json!({"bot_id": "wa", "to": {"conversation_id": q["conversation_id"]}, "reply_to": q["id"],
        "content": {"type": "text", "text": "hello back"}}),
    )
    .await;
    assert_eq!(s, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_string();
    let m = t
        .wait_message(ACME_KEY, &id, "read", Duration::from_secs(10))
        .await;
    assert!(
        m["delivered_at"].is_string() && m["read_at"].is_string(),
        "{m}"
    );
    let sent = sim.sent(PHONE_ID);
    assert_eq!(sent[0].context.as_deref(), q["external_id"].as_str());
    assert_eq!(sent[0].to, "15551112222");
    // Outside the window: a free-form send is refused at the API; a template goes out.
    sim.advance_clock(Duration::from_secs(25 * 3600));
    let (s, p) = send(&t, json!({"bot_id": "wa", "to": {"phone": "+15559998888"}, "content": {"type": "text", "text": "promo"}})).await;
    assert_eq!(s, 422, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("24"), "{p}");
    let (s, m) = send(&t, json!({"bot_id": "wa", "to": {"phone": "+15559998888"},
        "content": {"type": "template", "name": "hello_world", "language": "en_US", "params": ["Ada"]}})).await;
    assert_eq!(s, 202, "{m}");
    t.wait_message(
        ACME_KEY,
        m["id"].as_str().unwrap(),
        "delivered",
        Duration::from_secs(10),
    )
    .await;
    // The gateway thinks the window is open (the user wrote 10 s ago on our clock) but the
    // platform's clock says otherwise: the failure arrives by status with Meta's code.
    let (s, m) = send(
        &t,
        json!({"bot_id": "wa", "to": {"conversation_id": q["conversation_id"]},
        "content": {"type": "text", "text": "too late"}}),
    )
    .await;
    assert_eq!(s, 202);
    let m = t
        .wait_message(
            ACME_KEY,
            m["id"].as_str().unwrap(),
            "failed",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(m["error"]["platform_code"], "131047");
    let (_, ev) = t.get(ACME_KEY, "/v1/events?types=message.failed").await;
    assert_eq!(ev["items"].as_array().unwrap().len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn content_whatsapp_cannot_carry_is_refused_with_422() {
    let (sim, t) = setup(WhatsAppConfig::default(), "").await;
    sim.user_message(PHONE_ID, WaUserMessage::text("15553334444", "Ada", "hi"));
    inbound(&t, 1).await;
    let buttons: Vec<Value> = (0..4)
        .map(|i| json!({"id": format!("b{i}"), "title": format!("B{i}")}))
        .collect();
    let (s, p) = send(
        &t,
        json!({"bot_id": "wa", "to": {"phone": "+15553334444"},
        "content": {"type": "buttons", "text": "pick", "buttons": buttons}}),
    )
    .await;
    assert_eq!(s, 422);
    assert!(p["detail"].as_str().unwrap().contains("whatsapp"), "{p}");
    let (s, m) = send(
        &t,
        json!({"bot_id": "wa", "to": {"phone": "+15553334444"},
        "content": {"type": "buttons", "text": "pick", "buttons": [{"id": "y", "title": "Yes"}]}}),
    )
    .await;
    assert_eq!(s, 202);
    t.wait_message(
        ACME_KEY,
        m["id"].as_str().unwrap(),
        "sent",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(sim.sent(PHONE_ID)[0].kind, "interactive");
    t.stop().await;
}

#[tokio::test]
async fn two_thousand_recipients_get_their_message_without_a_throughput_error() {
    // Throughput scaled to 400/s on both sides (the ratio to Meta's 80/s is the point).
    let config = WhatsAppConfig {
        throughput: switchboard_sim::framework::rate::Rate::new(400, Duration::from_secs(1), 400),
        read_receipts: false,
        ..WhatsAppConfig::default()
    };
    let (sim, t) = setup(config, "throughput_per_second = 400").await;
    // Templates need no open window, so no user has to write first.
    let started = std::time::Instant::now();
    let ids: Vec<String> = futures::stream::iter(0..2000u64)
        .map(|i| {
            let t = &t;
            async move {
                let (s, m) = send(
                    t,
                    json!({"bot_id": "wa", "to": {"phone": format!("+1555{:07}", i)},
                    "content": {"type": "template", "name": "order_shipped", "language": "en_US"}}),
                )
                .await;
                assert_eq!(s, 202, "{m}");
                m["id"].as_str().unwrap().to_string()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(ids.len(), 2000);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while sim.sent(PHONE_ID).len() < 2000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of 2000 sent",
            sim.sent(PHONE_ID).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    assert_eq!(
        sim.counters().responses_429,
        0,
        "zero 130429/131056: {:?}",
        sim.error_codes()
    );
    assert_eq!(sim.sent(PHONE_ID).len(), 2000);
    eprintln!("2000 sends in {elapsed:?}");
    t.stop().await;
}

#[tokio::test]
async fn a_rejected_access_token_fails_the_bot() {
    let (sim, t) = setup(WhatsAppConfig::default(), "").await;
    sim.revoke_token(TOKEN);
    t.post(ACME_KEY, "/v1/bots/wa/restart", json!({})).await;
    let b = t
        .wait_state(ACME_KEY, "wa", "failed", Duration::from_secs(10))
        .await;
    assert!(
        b["state_reason"].as_str().unwrap().contains("190")
            || b["last_error"].to_string().contains("access token"),
        "{b}"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_broadcast_skips_recipients_outside_the_window_unless_it_is_a_template() {
    let (sim, t) = setup(WhatsAppConfig::default(), "").await;
    sim.user_message(PHONE_ID, WaUserMessage::text("15551234567", "Ada", "hello"));
    inbound(&t, 1).await;
    let ada = t.get_all(ACME_KEY, "/v1/contacts?q=Ada").await;
    let ada = ada[0]["id"].as_str().unwrap().to_owned();
    let (status, bo) = t
        .post(
            ACME_KEY,
            "/v1/contacts",
            json!({"name": "Bo", "phone": "+15557654321"}),
        )
        .await;
    assert_eq!(status, 201, "{bo}");
    let bo = bo["id"].as_str().unwrap().to_owned();
    let broadcast = |content: Value| json!({"bot_id": "wa", "title": "News", "content": content, "to": {"contact_ids": [ada, bo]}});
    let (status, b) = t
        .post(
            ACME_KEY,
            "/v1/broadcasts",
            broadcast(json!({"type": "text", "text": "Free-form"})),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    assert_eq!(b["counts"]["skipped"], 1, "{b}");
    let recipients = t
        .get_all(
            ACME_KEY,
            &format!("/v1/broadcasts/{}/recipients", b["id"].as_str().unwrap()),
        )
        .await;
    let skipped = recipients
        .iter()
        .find(|r| r["status"] == "skipped")
        .unwrap();
    assert_eq!(skipped["contact_id"], bo.as_str());
    assert!(
        skipped["skip_reason"].as_str().unwrap().contains("window"),
        "{skipped}"
    );
    let (status, b) = t
        .post(
            ACME_KEY,
            "/v1/broadcasts",
            broadcast(
                json!({"type": "template", "name": "hello_world", "language": "en_US", "params": ["you"]}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    assert_eq!(b["counts"]["skipped"], 0, "{b}");
    let started = std::time::Instant::now();
    while sim.sent(PHONE_ID).len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            sim.sent(PHONE_ID).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let to: Vec<String> = sim.sent(PHONE_ID).iter().map(|s| s.to.clone()).collect();
    assert_eq!(
        to.iter().filter(|n| n.ends_with("15557654321")).count(),
        1,
        "{to:?}"
    );
    assert_eq!(
        to.iter().filter(|n| n.ends_with("15551234567")).count(),
        2,
        "{to:?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn correctly_signed_garbage_gets_a_4xx_problem_and_stores_nothing() {
    let (_sim, t) = setup(WhatsAppConfig::default(), "").await;
    let bodies: Vec<Vec<u8>> = vec![
        br#"{"object":"whatsapp_business_account","entry":[{"id":"W","changes":[{"#.to_vec(),
        br#"{"object":"whatsapp_business_account","entry":"not a list"}"#.to_vec(),
        b"{\"object\":\"whatsapp_business_account\",\"x\":\"\xff\xfe\"}".to_vec(),
        b"[]".to_vec(),
    ];
    // A well-formed notification with one unreadable item is answered 200 (Meta would
    // redeliver the whole batch forever otherwise); the item is skipped.
    let odd = br#"{"object":"whatsapp_business_account","entry":[{"id":"W","changes":[{"field":"messages","value":{"messages":[{"from":7,"id":["x"],"type":"text"}]}}]}]}"#;
    let r = t
        .http
        .post(t.url("/webhooks/whatsapp/wa"))
        .header("content-type", "application/json")
        .header("X-Hub-Signature-256", hmac_sig::sign(APP_SECRET, odd))
        .body(odd.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for body in bodies {
        let sig = hmac_sig::sign(APP_SECRET, &body);
        let r = t
            .http
            .post(t.url("/webhooks/whatsapp/wa"))
            .header("content-type", "application/json")
            .header("X-Hub-Signature-256", sig)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let ctype = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            (400..500).contains(&status),
            "{status} for {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(ctype, "application/problem+json");
    }
    let (_, msgs) = t.get(ACME_KEY, "/v1/messages").await;
    assert!(msgs["items"].as_array().unwrap().is_empty());
    let (_, events) = t.get(ACME_KEY, "/v1/events").await;
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] == "bot.state"),
        "{events}"
    );
    t.stop().await;
}
