//! Media (upload, metadata, download, delete), injected faults, the request log and the
//! control API.

use std::time::Duration;

use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sha2::Digest;
use switchboard_sim::{Faults, PhoneNumber};

use super::*;

async fn upload(sim: &WhatsAppSim, bytes: &[u8], mime: &str) -> (u16, Value) {
    let file = Part::bytes(bytes.to_vec())
        .file_name("photo.jpg")
        .mime_str(mime)
        .unwrap();
    let form = Form::new()
        .text("messaging_product", "whatsapp")
        .text("type", mime.to_owned())
        .part("file", file);
    let response = reqwest::Client::new()
        .post(format!("{}/v21.0/{PHONE_ID}/media", sim.base_url()))
        .bearer_auth(TOKEN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn uploaded_media_has_metadata_and_downloads_only_with_the_owners_token() {
    let (sim, _receiver) = start().await;
    sim.add_phone_number(PhoneNumber::new("200000000000001", "EAAG-other", "s"));
    let bytes = b"\xff\xd8\xff\xe0 fake jpeg".to_vec();
    let (status, answer) = upload(&sim, &bytes, "image/jpeg").await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["id"].as_str().unwrap().to_owned();
    assert!(id.chars().all(|c| c.is_ascii_digit()));

    let (status, meta) = graph_as(&sim, Method::GET, &id, Some(TOKEN), None).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["messaging_product"], "whatsapp");
    assert_eq!(meta["mime_type"], "image/jpeg");
    assert_eq!(meta["sha256"], hex::encode(sha2::Sha256::digest(&bytes)));
    assert_eq!(meta["file_size"], bytes.len());
    assert_eq!(meta["id"], id.as_str());
    let url = meta["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/media-download/", sim.base_url())));

    let client = reqwest::Client::new();
    let download = client.get(url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-type"], "image/jpeg");
    assert_eq!(download.bytes().await.unwrap().as_ref(), bytes.as_slice());
    assert_eq!(client.get(url).send().await.unwrap().status(), 401);
    let foreign = client
        .get(url)
        .bearer_auth("EAAG-other")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 401, "another number's token");
    let (status, _) = graph_as(&sim, Method::GET, &id, Some("EAAG-other"), None).await;
    assert_eq!(status, 400, "another number cannot see the metadata");

    let template = json!({"messaging_product": "whatsapp", "to": USER, "type": "template",
        "template": {"name": "photo", "language": {"code": "en"}}});
    assert_eq!(send(&sim, template).await.0, 200);
    let by_id = json!({"messaging_product": "whatsapp", "to": USER, "type": "image",
        "image": {"id": id, "caption": "look"}});
    assert_eq!(send(&sim, by_id.clone()).await.0, 200);
    assert_eq!(sim.sent(PHONE_ID)[1].kind, "image");

    let (status, answer) = graph_as(&sim, Method::DELETE, &id, Some(TOKEN), None).await;
    assert_eq!((status, answer), (200, json!({"success": true})));
    let (status, _) = graph_as(&sim, Method::GET, &id, Some(TOKEN), None).await;
    assert_eq!(status, 400);
    assert_eq!(
        send(&sim, by_id).await.0,
        400,
        "a deleted media id cannot be sent"
    );
}

#[tokio::test]
async fn media_a_user_sends_is_readable_by_the_receiving_number() {
    let (sim, receiver) = start().await;
    let id = sim.add_media(b"OggS voice".to_vec(), "audio/ogg");
    let voice = WaUserMessage {
        from: USER.into(),
        profile_name: "Ada".into(),
        kind: switchboard_sim::WaInbound::Audio {
            media_id: id.clone(),
        },
        context: None,
    };
    sim.user_message(PHONE_ID, voice);
    assert!(sim.settle(Duration::from_secs(5)).await);
    assert_eq!(receiver.messages()[0]["audio"]["id"], id.as_str());
    let (_, meta) = graph_as(&sim, Method::GET, &id, Some(TOKEN), None).await;
    let bytes = reqwest::Client::new()
        .get(meta["url"].as_str().unwrap())
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.as_ref(), b"OggS voice");
}

#[tokio::test]
async fn an_upload_without_messaging_product_or_of_an_unknown_type_is_refused() {
    let (sim, _receiver) = start().await;
    let (status, answer) = upload(&sim, b"x", "model/gltf").await;
    assert_eq!((status, answer["error"]["code"].as_i64()), (400, Some(100)));
    let form = Form::new().part("file", Part::bytes(b"x".to_vec()).file_name("a.txt"));
    let response = reqwest::Client::new()
        .post(format!("{}/v21.0/{PHONE_ID}/media", sim.base_url()))
        .bearer_auth(TOKEN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn error_rate_one_answers_metas_transient_5xx_and_has_no_effect() {
    let (sim, _receiver) = start().await;
    user_writes(&sim, "hi");
    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let mut json_errors = 0;
    for _ in 0..8 {
        let (status, answer) = send(&sim, text_to(USER, "x")).await;
        assert!(status == 500 || status == 502, "{status}");
        if status == 500 {
            json_errors += 1;
            assert_eq!(answer["error"]["code"], 2);
            assert_eq!(answer["error"]["is_transient"], true);
        }
    }
    assert!(json_errors > 0);
    assert_eq!(sim.counters().responses_5xx, 8);
    assert!(sim.sent(PHONE_ID).is_empty());
    sim.set_faults(Faults::default());
    assert_eq!(send(&sim, text_to(USER, "x")).await.0, 200);
}

#[tokio::test]
async fn drop_rate_one_closes_the_connection_without_an_answer() {
    let (sim, _receiver) = start().await;
    user_writes(&sim, "hi");
    sim.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let error = client
        .post(format!("{}/v21.0/{PHONE_ID}/messages", sim.base_url()))
        .bearer_auth(TOKEN)
        .json(&text_to(USER, "x"))
        .send()
        .await
        .unwrap_err();
    assert!(!error.is_timeout(), "expected a closed connection: {error}");
    assert_eq!(sim.counters().dropped_connections, 1);
    assert!(sim.sent(PHONE_ID).is_empty());
}

#[tokio::test]
async fn requests_are_logged_in_order_with_download_urls_hidden() {
    let (sim, _receiver) = start().await;
    graph_as(&sim, Method::GET, PHONE_ID, Some(TOKEN), None).await;
    send(&sim, template_to(USER)).await;
    let id = sim.add_media(b"x".to_vec(), "image/png");
    let (_, meta) = graph_as(&sim, Method::GET, &id, Some(TOKEN), None).await;
    reqwest::get(meta["url"].as_str().unwrap()).await.unwrap();
    let seen: Vec<(String, String, Option<String>, u16)> = sim
        .requests()
        .iter()
        .map(|r| {
            (
                r.method.clone(),
                r.path.clone(),
                r.api_method.clone(),
                r.status,
            )
        })
        .collect();
    let node = Some("node".to_owned());
    assert_eq!(
        seen,
        [
            // The phone number's own node is not offered (PLATFORMS.md lists media nodes).
            (
                "GET".into(),
                format!("/v21.0/{PHONE_ID}"),
                node.clone(),
                400
            ),
            (
                "POST".into(),
                format!("/v21.0/{PHONE_ID}/messages"),
                Some("messages".into()),
                200
            ),
            ("GET".into(), format!("/v21.0/{id}"), node, 200),
            (
                "GET".into(),
                "/media-download/***".into(),
                Some("media_download".into()),
                401
            ),
        ]
    );
}

#[tokio::test]
async fn the_control_api_adds_phone_numbers_and_plays_users() {
    let sim = WhatsAppSim::start(switchboard_sim::WhatsAppConfig::default())
        .await
        .unwrap();
    let receiver = Receiver::start(0).await;
    let client = reqwest::Client::new();
    let control = |path: &str| format!("{}/_sim/whatsapp/{path}", sim.base_url());
    let phone = json!({"phone_number_id": PHONE_ID, "access_token": TOKEN,
        "app_secret": APP_SECRET, "callback_url": receiver.url});
    let response = client
        .post(control("phones"))
        .json(&phone)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let message = json!({"phone_number_id": PHONE_ID, "from": USER, "text": "via control"});
    let answer: Value = client
        .post(control("messages"))
        .json(&message)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["wamid"].as_str().unwrap().starts_with("wamid."));
    assert!(sim.settle(Duration::from_secs(5)).await);
    assert_eq!(receiver.messages()[0]["text"]["body"], "via control");
    let deliveries: Value = client
        .get(control("deliveries"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deliveries[0]["status"], 200);
    let unknown = json!({"phone_number_id": "1", "from": USER, "text": "x"});
    let response = client
        .post(control("messages"))
        .json(&unknown)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let counters: Value = client
        .get(format!("{}/_sim/counters", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["webhook_deliveries"], 1);
    assert!(sim.requests().is_empty(), "control calls are not logged");
}
