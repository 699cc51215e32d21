//! The WhatsApp simulator over real HTTP: what a business sees through reqwest, and what its
//! webhook receiver (a tiny axum app here, which checks every signature) gets.
//!
//! Helpers here; the Graph API's sends, limits and errors in `sending`; webhooks (shapes,
//! batching, retries, redelivery, verification) in `webhooks`; media and faults in `media`.

#[path = "whatsapp/media.rs"]
mod media;
#[path = "whatsapp/sending.rs"]
mod sending;
#[path = "whatsapp/webhooks.rs"]
mod webhooks;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use switchboard_sim::{PhoneNumber, WaUserMessage, WhatsAppConfig, WhatsAppSim};

const PHONE_ID: &str = "106540352242922";
const TOKEN: &str = "EAAG-test-token";
const APP_SECRET: &str = "app-secret-0123";
const VERIFY_TOKEN: &str = "verify-me";
const USER: &str = "15551234567";

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Post {
    body: Vec<u8>,
    json: Value,
    signature_valid: bool,
    content_type: Option<String>,
}

/// A webhook receiver that checks signatures and answers 500 to its first `fail_first` POSTs.
#[derive(Clone)]
struct Receiver {
    url: String,
    posts: Arc<Mutex<Vec<Post>>>,
    fail_first: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let receiver = Receiver {
            url: String::new(),
            posts: Arc::default(),
            fail_first: Arc::new(AtomicUsize::new(fail_first)),
        };
        let app = axum::Router::new()
            .route("/hook", post(receive).get(handshake))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, ..receiver }
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    /// Every `value` of every POST, in order.
    fn values(&self) -> Vec<Value> {
        self.posts()
            .iter()
            .flat_map(|p| {
                let changes = p.json["entry"][0]["changes"].as_array().cloned();
                changes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| c["value"].clone())
            })
            .collect()
    }

    fn items(&self, key: &str) -> Vec<Value> {
        self.values()
            .iter()
            .flat_map(|v| v[key].as_array().cloned().unwrap_or_default())
            .collect()
    }

    fn messages(&self) -> Vec<Value> {
        self.items("messages")
    }

    fn statuses(&self) -> Vec<Value> {
        self.items("statuses")
    }

    /// The statuses of one message, in order of arrival: e.g. `["sent", "delivered"]`.
    fn statuses_of(&self, wamid: &str) -> Vec<String> {
        self.statuses()
            .iter()
            .filter(|s| s["id"] == wamid)
            .map(|s| s["status"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(APP_SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    r.posts.lock().unwrap().push(Post {
        body: body.to_vec(),
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        signature_valid: signature == expected,
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    let failing = r
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

async fn handshake(Query(q): Query<Vec<(String, String)>>) -> (StatusCode, String) {
    let get = |key: &str| {
        q.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if get("hub.mode") == "subscribe" && get("hub.verify_token") == VERIFY_TOKEN {
        (StatusCode::OK, get("hub.challenge"))
    } else {
        (StatusCode::FORBIDDEN, String::new())
    }
}

fn phone(callback: Option<&str>) -> PhoneNumber {
    PhoneNumber {
        phone_number_id: PHONE_ID.into(),
        display_phone_number: "15550001111".into(),
        waba_id: "102290129340398".into(),
        access_token: TOKEN.into(),
        app_secret: APP_SECRET.into(),
        callback_url: callback.map(str::to_owned),
        verified_name: "Acme".into(),
    }
}

/// A simulator with one phone number whose callback is a fresh receiver.
async fn start_with(config: WhatsAppConfig, fail_first: usize) -> (WhatsAppSim, Receiver) {
    let sim = WhatsAppSim::start(config).await.unwrap();
    let receiver = Receiver::start(fail_first).await;
    sim.add_phone_number(phone(Some(&receiver.url)));
    (sim, receiver)
}

async fn start() -> (WhatsAppSim, Receiver) {
    start_with(WhatsAppConfig::default(), 0).await
}

/// A Graph API call with `token`; returns (HTTP status, JSON body).
async fn graph_as(
    sim: &WhatsAppSim,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}/v21.0/{path}", sim.base_url());
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// POST /{PHONE_ID}/messages with the phone number's token.
async fn send(sim: &WhatsAppSim, body: Value) -> (u16, Value) {
    let path = format!("{PHONE_ID}/messages");
    graph_as(sim, reqwest::Method::POST, &path, Some(TOKEN), Some(body)).await
}

fn text_to(to: &str, body: &str) -> Value {
    json!({"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": body}})
}

fn template_to(to: &str) -> Value {
    json!({"messaging_product": "whatsapp", "to": to, "type": "template",
        "template": {"name": "hello_world", "language": {"code": "en_US"}}})
}

/// The user writes, opening the 24 h window; returns the wamid.
fn user_writes(sim: &WhatsAppSim, text: &str) -> String {
    sim.user_message(PHONE_ID, WaUserMessage::text(USER, "Ada", text))
}

/// Polls `condition` every 20 ms for up to 5 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
