//! SMS end to end: the real connector's three providers (Twilio, Africa's Talking, BulkSMS)
//! against the SMS simulator, with delivery reports and inbound SMS over real sockets.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_e2e::*;
use switchboard_sim::sms::{Provider, SmsConfig, SmsSim};

const TW_SID: &str = "AC0123456789abcdef0123456789abcdef";
const TW_TOKEN: &str = "twilio-auth-token-0123456789";
const TW_FROM: &str = "+14155550100";
const AT_USER: &str = "acme-at";
const AT_KEY: &str = "atsk_0123456789abcdef";
const BS_USER: &str = "acme-bulk";
const BS_PASS: &str = "bulk-password-0123";
const KE_USER: &str = "+254711000001";
const US_USER: &str = "+14155552671";

struct Setup {
    sim: SmsSim,
    t: TestGateway,
}

/// A gateway with one bot per provider (`tw`, `at`, `bs`), all pointed at one simulator.
async fn setup(config: SmsConfig, extra: &str, balances: (f64, f64, f64)) -> Setup {
    let sim = SmsSim::start(config).await.expect("simulator starts");
    sim.add_twilio_account(TW_SID, TW_TOKEN, balances.0);
    sim.add_twilio_number(TW_SID, TW_FROM);
    sim.add_at_account(AT_USER, AT_KEY, balances.1);
    sim.add_bulksms_account(BS_USER, BS_PASS, balances.2);
    let base = sim.base_url();
    let bots = format!(
        "\
         [[bots]]\nid = \"tw\"\ntenant = \"acme\"\nplatform = \"sms\"\nprovider = \"twilio\"\n\
         account_sid = \"{TW_SID}\"\nauth_token = \"{TW_TOKEN}\"\nfrom = \"{TW_FROM}\"\n\
         api_base = \"{base}\"\nthroughput_per_second = 50\n{extra}\n\
         [[bots]]\nid = \"at\"\ntenant = \"acme\"\nplatform = \"sms\"\nprovider = \"africastalking\"\n\
         username = \"{AT_USER}\"\napi_key = \"{AT_KEY}\"\ndefault_region = \"KE\"\n\
         api_base = \"{base}\"\n{extra}\n\
         [[bots]]\nid = \"bs\"\ntenant = \"acme\"\nplatform = \"sms\"\nprovider = \"bulksms\"\n\
         username = \"{BS_USER}\"\npassword = \"{BS_PASS}\"\napi_base = \"{base}\"\n{extra}\n"
    );
    let t = TestGateway::start(Options {
        extra_toml: bots,
        real_connectors: true,
        public_url: true,
        ..Default::default()
    })
    .await;
    sim.set_twilio_sms_url(TW_FROM, &t.url("/webhooks/sms/tw/inbound"));
    sim.set_at_callbacks(
        AT_USER,
        &t.url("/webhooks/sms/at/status"),
        &t.url("/webhooks/sms/at/inbound"),
    );
    sim.set_bulksms_webhook(BS_USER, &t.url("/webhooks/sms/bs/status"));
    for bot in ["tw", "at", "bs"] {
        t.wait_state(ACME_KEY, bot, "running", Duration::from_secs(10))
            .await;
    }
    Setup { sim, t }
}

async fn send(t: &TestGateway, bot: &str, to: &str, text: &str) -> (u16, Value) {
    t.post(
        ACME_KEY,
        "/v1/messages",
        json!({"bot_id": bot, "to": {"phone": to}, "content": {"type": "text", "text": text}}),
    )
    .await
}

async fn delivered(t: &TestGateway, id: &str) -> Value {
    t.wait_message(ACME_KEY, id, "delivered", Duration::from_secs(15))
        .await
}

#[tokio::test]
async fn every_provider_sends_and_reports_delivery() {
    let Setup { sim, t } = setup(SmsConfig::default(), "", (10.0, 1000.0, 100.0)).await;
    let mut ids = Vec::new();
    for (bot, to) in [("tw", US_USER), ("at", KE_USER), ("bs", KE_USER)] {
        let (status, m) = send(&t, bot, to, "Your order has shipped").await;
        assert_eq!(status, 202, "{m}");
        assert_eq!(m["segments"], 1, "{m}");
        ids.push((bot, m["id"].as_str().unwrap().to_owned()));
    }
    for (bot, id) in &ids {
        let m = delivered(&t, id).await;
        assert!(m["external_id"].is_string(), "{bot}: {m}");
        let statuses: Vec<&str> = m["status_history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses.last(), Some(&"delivered"), "{bot}: {statuses:?}");
    }
    // Africa's Talking and BulkSMS say what a send cost.
    let (_, at) = t.get(ACME_KEY, &format!("/v1/messages/{}", ids[1].1)).await;
    assert_eq!(at["cost"], "KES 0.8000", "{at}");
    let (_, bs) = t.get(ACME_KEY, &format!("/v1/messages/{}", ids[2].1)).await;
    assert!(bs["cost"].as_str().unwrap().contains("credits"), "{bs}");
    assert_eq!(sim.sent(Provider::Twilio, TW_SID).len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn numbers_are_validated_and_national_forms_read_in_the_default_region() {
    let Setup { sim, t } = setup(SmsConfig::default(), "", (10.0, 1000.0, 100.0)).await;
    let (status, problem) = send(&t, "tw", "+254 12", "hi").await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("+254 12"),
        "{problem}"
    );
    let (status, problem) = t
        .post(
            ACME_KEY,
            "/v1/messages",
            json!({"bot_id": "at", "to": {"chat_id": "12345"}, "content": {"type": "text", "text": "hi"}}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, m) = send(&t, "at", "0711 000 001", "hi").await;
    assert_eq!(status, 202, "{m}");
    delivered(&t, m["id"].as_str().unwrap()).await;
    assert_eq!(sim.sent(Provider::AfricasTalking, AT_USER)[0].to, KE_USER);
    let (status, problem) = t
        .post(
            ACME_KEY,
            "/v1/messages",
            json!({"bot_id": "at", "to": {"phone": KE_USER}, "content": {"type": "location", "latitude": 1.0, "longitude": 2.0}}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    t.stop().await;
}

#[tokio::test]
async fn segments_are_counted_before_sending_and_long_texts_refused() {
    let Setup { sim, t } = setup(
        SmsConfig::default(),
        "max_segments = 3",
        (10.0, 1000.0, 100.0),
    )
    .await;
    let gsm = "a".repeat(200);
    let mut emoji = "b".repeat(69);
    emoji.push('😀');
    let (_, m1) = send(&t, "bs", KE_USER, &gsm).await;
    let (_, m2) = send(&t, "bs", KE_USER, &emoji).await;
    assert_eq!(m1["segments"], 2, "a 200-character GSM text: {m1}");
    assert_eq!(
        m2["segments"], 2,
        "71 characters with an emoji, UCS-2: {m2}"
    );
    delivered(&t, m1["id"].as_str().unwrap()).await;
    delivered(&t, m2["id"].as_str().unwrap()).await;
    let sent = sim.sent(Provider::BulkSms, BS_USER);
    assert_eq!((sent[0].segments, sent[1].segments), (2, 2));
    assert_eq!(sent[1].encoding, "UCS-2");
    assert_eq!(sent[0].body, gsm, "never truncated");
    let (status, problem) = send(&t, "bs", KE_USER, &"c".repeat(460)).await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("max_segments"),
        "{problem}"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_redelivered_report_is_stored_once() {
    let config = SmsConfig {
        redeliver_reports: true,
        ..SmsConfig::default()
    };
    let Setup { sim, t } = setup(config, "", (10.0, 1000.0, 100.0)).await;
    let (_, m) = send(&t, "tw", US_USER, "twice?").await;
    let id = m["id"].as_str().unwrap();
    delivered(&t, id).await;
    assert!(sim.settle(Duration::from_secs(10)).await);
    let (_, m) = t.get(ACME_KEY, &format!("/v1/messages/{id}")).await;
    let delivered_entries = m["status_history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "delivered")
        .count();
    assert_eq!(delivered_entries, 1, "{m}");
    t.stop().await;
}

#[tokio::test]
async fn a_forged_twilio_signature_is_refused_and_stores_nothing() {
    let Setup { sim, t } = setup(SmsConfig::default(), "", (10.0, 1000.0, 100.0)).await;
    let form = "MessageSid=SM00000000000000000000000000000001&From=%2B14155552671&To=%2B14155550100&Body=forged";
    let r = t
        .http
        .post(t.url("/webhooks/sms/tw/inbound"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", "bm90IGEgc2lnbmF0dXJl")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = t
        .http
        .post(t.url("/webhooks/sms/tw/inbound"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a missing signature");
    // A genuine one, signed by the simulator, is stored.
    assert_eq!(
        sim.twilio_inbound(TW_SID, US_USER, TW_FROM, "genuine")
            .await
            .unwrap(),
        200
    );
    let (_, page) = t
        .get(ACME_KEY, "/v1/messages?bot=tw&direction=inbound")
        .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["content"]["text"], "genuine");
    t.stop().await;
}

#[tokio::test]
async fn an_inbound_sms_creates_the_contact_and_conversation() {
    let Setup { sim, t } = setup(SmsConfig::default(), "", (10.0, 1000.0, 100.0)).await;
    assert_eq!(
        sim.at_inbound(AT_USER, KE_USER, "40404", "STOP please")
            .await
            .unwrap(),
        200
    );
    assert_eq!(
        sim.bulksms_inbound(BS_USER, KE_USER, "+447700900000", "hello bulk")
            .await
            .unwrap(),
        200
    );
    let (_, page) = t.get(ACME_KEY, "/v1/messages?direction=inbound").await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    for m in items {
        assert!(m["contact_id"].is_string(), "{m}");
    }
    let (_, convs) = t.get(ACME_KEY, "/v1/conversations?bot=at").await;
    let c = &convs["items"][0];
    assert_eq!(c["external_chat_id"], KE_USER);
    assert_eq!(c["kind"], "direct");
    // The same person on two providers is one contact (by phone).
    assert_eq!(items[0]["contact_id"], items[1]["contact_id"]);
    t.stop().await;
}

#[tokio::test]
async fn an_exhausted_balance_pauses_the_bot_and_a_top_up_delivers_the_rest_once() {
    // Africa's Talking at KES 0.80 per segment: 4 messages' worth.
    let Setup { sim, t } = setup(SmsConfig::default(), "", (10.0, 3.2, 100.0)).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let (status, m) = send(&t, "at", KE_USER, &format!("notice {i}")).await;
        assert_eq!(status, 202, "{m}");
        ids.push(m["id"].as_str().unwrap().to_owned());
    }
    let bot = t
        .wait_state(ACME_KEY, "at", "paused", Duration::from_secs(10))
        .await;
    assert!(
        bot["state_reason"].as_str().unwrap().contains("balance"),
        "{bot}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sim.sent(Provider::AfricasTalking, AT_USER).len(), 4);
    let (_, queued) = t.get(ACME_KEY, "/v1/messages?bot=at&status=queued").await;
    assert_eq!(queued["items"].as_array().unwrap().len(), 6, "{queued}");
    let (_, balance) = t.get(ACME_KEY, "/v1/bots/at/balance").await;
    assert_eq!(balance["currency"], "KES", "{balance}");
    sim.set_balance(Provider::AfricasTalking, AT_USER, 100.0);
    t.wait_state(ACME_KEY, "at", "running", Duration::from_secs(10))
        .await;
    for id in &ids {
        delivered(&t, id).await;
    }
    let sent = sim.sent(Provider::AfricasTalking, AT_USER);
    assert_eq!(sent.len(), 10, "no message sent twice");
    t.stop().await;
}

#[tokio::test]
async fn the_test_endpoint_sends_one_sms_and_the_balance_is_served() {
    let Setup { sim, t } = setup(SmsConfig::default(), "", (12.5, 1000.0, 100.0)).await;
    let (status, m) = t
        .post(ACME_KEY, "/v1/bots/tw/test", json!({"to": US_USER}))
        .await;
    assert_eq!(status, 202, "{m}");
    delivered(&t, m["id"].as_str().unwrap()).await;
    assert!(
        sim.sent(Provider::Twilio, TW_SID)[0]
            .body
            .contains("test message")
    );
    let (status, b) = t.get(ACME_KEY, "/v1/bots/tw/balance").await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["currency"], "USD");
    assert!(b["amount"].as_str().unwrap().parse::<f64>().unwrap() <= 12.5);
    t.stop().await;
}

#[tokio::test]
async fn a_failed_delivery_records_the_providers_code() {
    let Setup { sim, t } = setup(SmsConfig::default(), "", (10.0, 1000.0, 100.0)).await;
    let unreachable = "+14155552672";
    sim.fail_number(unreachable, "30003");
    let (_, m) = send(&t, "tw", unreachable, "are you there?").await;
    let m = t
        .wait_message(
            ACME_KEY,
            m["id"].as_str().unwrap(),
            "failed",
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(m["error"]["platform_code"], "30003", "{m}");
    assert!(
        m["error"]["message"]
            .as_str()
            .unwrap()
            .contains("undelivered"),
        "{m}"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_twilio_account_out_of_balance_pauses_rather_than_fails() {
    // USD 0.0079 per segment: two messages' worth, then Twilio refuses with 20003.
    let Setup { sim, t } = setup(SmsConfig::default(), "", (0.02, 1000.0, 100.0)).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let (_, m) = send(&t, "tw", US_USER, &format!("reminder {i}")).await;
        ids.push(m["id"].as_str().unwrap().to_owned());
    }
    let bot = t
        .wait_state(ACME_KEY, "tw", "paused", Duration::from_secs(10))
        .await;
    assert!(
        bot["state_reason"].as_str().unwrap().contains("balance"),
        "{bot}"
    );
    sim.set_balance(Provider::Twilio, TW_SID, 5.0);
    for id in &ids {
        delivered(&t, id).await;
    }
    assert_eq!(sim.sent(Provider::Twilio, TW_SID).len(), 4);
    t.stop().await;
}

#[tokio::test]
async fn without_a_public_url_twilio_signatures_are_checked_against_the_request_url() {
    let sim = SmsSim::start(SmsConfig::default()).await.unwrap();
    sim.add_twilio_account(TW_SID, TW_TOKEN, 10.0);
    sim.add_twilio_number(TW_SID, TW_FROM);
    let bot = format!(
        "[[bots]]\nid = \"tw\"\ntenant = \"acme\"\nplatform = \"sms\"\nprovider = \"twilio\"\n\
         account_sid = \"{TW_SID}\"\nauth_token = \"{TW_TOKEN}\"\nfrom = \"{TW_FROM}\"\n\
         api_base = \"{}\"\n",
        sim.base_url()
    );
    let t = TestGateway::start(Options {
        extra_toml: bot,
        real_connectors: true,
        ..Default::default()
    })
    .await;
    t.wait_state(ACME_KEY, "tw", "running", Duration::from_secs(10))
        .await;
    sim.set_twilio_sms_url(TW_FROM, &t.url("/webhooks/sms/tw/inbound"));
    assert_eq!(
        sim.twilio_inbound(TW_SID, US_USER, TW_FROM, "hello")
            .await
            .unwrap(),
        200
    );
    let forged = t
        .http
        .post(t.url("/webhooks/sms/tw/inbound"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", "bm90IGEgc2lnbmF0dXJl")
        .body("MessageSid=SM1&From=%2B14155552671&To=%2B14155550100&Body=x")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let (_, page) = t
        .get(ACME_KEY, "/v1/messages?bot=tw&direction=inbound")
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    t.stop().await;
}

#[tokio::test]
async fn contacts_made_by_inbound_sms_are_listed_searched_and_read() {
    let Setup { sim, t } = setup(SmsConfig::default(), "", (10.0, 1000.0, 100.0)).await;
    for (from, text) in [(KE_USER, "first"), ("+254711000002", "second")] {
        assert_eq!(
            sim.at_inbound(AT_USER, from, "40404", text).await.unwrap(),
            200
        );
    }
    let (status, all) = t.get(ACME_KEY, "/v1/contacts?limit=1").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    let cursor = all["next_cursor"].as_str().expect("a second page");
    let (_, next) = t
        .get(ACME_KEY, &format!("/v1/contacts?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(next["items"].as_array().unwrap().len(), 1);
    assert!(next["next_cursor"].is_null());
    let (_, found) = t.get(ACME_KEY, "/v1/contacts?q=000002").await;
    let items = found["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{found}");
    let contact = &items[0];
    assert_eq!(contact["phone"], "+254711000002");
    assert_eq!(contact["identities"][0]["bot_id"], "at");
    assert_eq!(contact["identities"][0]["platform"], "sms");
    assert_eq!(contact["tags"], json!([]));
    let (status, one) = t
        .get(
            ACME_KEY,
            &format!("/v1/contacts/{}", contact["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["id"], contact["id"]);
    let (status, _) = t
        .get(
            GLOBEX_KEY,
            &format!("/v1/contacts/{}", contact["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, 404, "another tenant's contact");
    t.stop().await;
}

#[tokio::test]
async fn malformed_provider_callbacks_get_a_4xx_problem_and_store_nothing() {
    let Setup { sim, t } = setup(SmsConfig::default(), "", (10.0, 1000.0, 100.0)).await;
    let form = "application/x-www-form-urlencoded";
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("/webhooks/sms/at/inbound", form, b"text=hello".to_vec()),
        (
            "/webhooks/sms/at/inbound",
            form,
            b"from=%2B254711000001".to_vec(),
        ),
        (
            "/webhooks/sms/at/inbound",
            "application/json",
            b"[]".to_vec(),
        ),
        ("/webhooks/sms/at/status", form, b"id=&status=".to_vec()),
        ("/webhooks/sms/at/status", form, b"status=Success".to_vec()),
        (
            "/webhooks/sms/bs/status",
            "application/json",
            br#"[{"id": "#.to_vec(),
        ),
        (
            "/webhooks/sms/bs/status",
            "application/json",
            br#"{"id": ["x"], "status": 5}"#.to_vec(),
        ),
        (
            "/webhooks/sms/bs/status",
            "application/json",
            b"[\"\xff\"]".to_vec(),
        ),
    ];
    for (path, ctype, body) in cases {
        let r = t
            .http
            .post(t.url(path))
            .header("content-type", ctype)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!(
            (400..500).contains(&status),
            "{path}: {status} for {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let (_, msgs) = t.get(ACME_KEY, "/v1/messages").await;
    assert!(msgs["items"].as_array().unwrap().is_empty(), "{msgs}");
    let (_, contacts) = t.get(ACME_KEY, "/v1/contacts").await;
    assert!(
        contacts["items"].as_array().unwrap().is_empty(),
        "{contacts}"
    );
    t.stop().await;
    sim.shutdown();
}
