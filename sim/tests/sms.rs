//! The SMS simulator over real HTTP: what an app sees of Twilio, Africa's Talking and BulkSMS
//! through reqwest, and what its webhook receiver (a tiny axum app here, which checks Twilio
//! signatures) gets.
//!
//! Helpers here; each provider's sends, errors, balances and webhooks in its own module;
//! what they share (redelivery, retries, faults, control API) in `sms_common`.

#[path = "sms/africastalking.rs"]
mod sms_africastalking;
#[path = "sms/bulksms.rs"]
mod sms_bulksms;
#[path = "sms/common.rs"]
mod sms_common;
#[path = "sms/twilio.rs"]
mod sms_twilio;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;
use switchboard_sim::{SmsConfig, SmsSim, twilio_signature};

const TWILIO_SID: &str = "AC00000000000000000000000000000001";
const TWILIO_TOKEN: &str = "twilio-auth-token";
const TWILIO_NUMBER: &str = "+15550001111";
const AT_USER: &str = "switchboard";
const AT_KEY: &str = "at-api-key";
const BULK_USER: &str = "bulk-user";
const BULK_PASSWORD: &str = "bulk-password";
const USER: &str = "+254711000000";

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Post {
    /// Path and query, e.g. `/status?x=1`.
    path: String,
    body: String,
    content_type: String,
    /// Whether `X-Twilio-Signature` verified (None when absent).
    signature_valid: Option<bool>,
}

impl Post {
    fn params(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.body.as_bytes())
            .into_owned()
            .collect()
    }

    /// A form field ("" when absent).
    fn param(&self, name: &str) -> String {
        self.params()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A webhook receiver on every path that answers 500 to its first `fail_first` POSTs.
#[derive(Clone)]
struct Receiver {
    base: String,
    posts: Arc<Mutex<Vec<Post>>>,
    fail_first: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            base: format!("http://{}", listener.local_addr().unwrap()),
            posts: Arc::default(),
            fail_first: Arc::new(AtomicUsize::new(fail_first)),
        };
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn posts_to(&self, path: &str) -> Vec<Post> {
        let posts = self.posts.lock().unwrap();
        posts.iter().filter(|p| p.path == path).cloned().collect()
    }

    /// Waits (up to 3 s) until `path` got at least `n` POSTs; returns them all.
    async fn wait_for(&self, path: &str, n: usize) -> Vec<Post> {
        eventually(&format!("{n} POSTs to {path}"), || {
            self.posts_to(path).len() >= n
        })
        .await;
        self.posts_to(path)
    }
}

async fn receive(
    State(r): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let body = String::from_utf8_lossy(&body).into_owned();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let path = uri.to_string();
    let signature_valid = header("x-twilio-signature").map(|signature| {
        let params: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        twilio_signature(TWILIO_TOKEN, &format!("{}{path}", r.base), &params) == signature
    });
    r.posts.lock().unwrap().push(Post {
        path,
        body,
        content_type: header("content-type").unwrap_or_default(),
        signature_valid,
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

/// Fast Twilio senders, so tests that are not about throughput do not wait for it.
fn fast() -> SmsConfig {
    SmsConfig {
        twilio_segments_per_second: 1000.0,
        delivery_delay: Duration::from_millis(20),
        retry_delay: Duration::from_millis(20),
        ..SmsConfig::default()
    }
}

/// A simulator with one account per provider (Twilio 10 USD with one number, AT 100 KES,
/// BulkSMS 100 credits) whose webhooks go to a fresh receiver's `/status`, `/inbound`,
/// `/bulksms`.
async fn start_with(config: SmsConfig, fail_first: usize) -> (SmsSim, Receiver) {
    let sim = SmsSim::start(config).await.unwrap();
    let receiver = Receiver::start(fail_first).await;
    sim.add_twilio_account(TWILIO_SID, TWILIO_TOKEN, 10.0);
    sim.add_twilio_number(TWILIO_SID, TWILIO_NUMBER);
    sim.set_twilio_sms_url(TWILIO_NUMBER, &receiver.url("/inbound?number=1"));
    sim.add_at_account(AT_USER, AT_KEY, 100.0);
    sim.set_at_callbacks(AT_USER, &receiver.url("/status"), &receiver.url("/inbound"));
    sim.add_bulksms_account(BULK_USER, BULK_PASSWORD, 100.0);
    sim.set_bulksms_webhook(BULK_USER, &receiver.url("/bulksms"));
    (sim, receiver)
}

async fn start() -> (SmsSim, Receiver) {
    start_with(fast(), 0).await
}

/// `POST Messages.json` with the given credentials and form; (status, JSON).
async fn twilio_create_as(sim: &SmsSim, token: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let url = format!(
        "{}/2010-04-01/Accounts/{TWILIO_SID}/Messages.json",
        sim.base_url()
    );
    let response = reqwest::Client::new()
        .post(url)
        .basic_auth(TWILIO_SID, Some(token))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn twilio_create(sim: &SmsSim, form: &[(&str, &str)]) -> (u16, Value) {
    twilio_create_as(sim, TWILIO_TOKEN, form).await
}

/// A GET of a Twilio resource under the account; (status, JSON).
async fn twilio_get(sim: &SmsSim, resource: &str) -> (u16, Value) {
    let url = format!(
        "{}/2010-04-01/Accounts/{TWILIO_SID}/{resource}",
        sim.base_url()
    );
    let client = reqwest::Client::new();
    let response = client.get(url).basic_auth(TWILIO_SID, Some(TWILIO_TOKEN));
    let response = response.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `POST /version1/messaging` with `key`; (status, body text).
async fn at_send_as(sim: &SmsSim, key: &str, form: &[(&str, &str)]) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{}/version1/messaging", sim.base_url()))
        .header("apiKey", key)
        .header("Accept", "application/json")
        .form(form)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// An AT send with the right key, to `to` (comma-separated); (status, JSON).
async fn at_send(sim: &SmsSim, to: &str, message: &str) -> (u16, Value) {
    let form = [
        ("username", AT_USER),
        ("to", to),
        ("message", message),
        ("from", "SWITCH"),
    ];
    let (status, text) = at_send_as(sim, AT_KEY, &form).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `POST /v1/messages{query}` as `user`; (status, JSON).
async fn bulksms_send_as(sim: &SmsSim, user: &str, query: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/messages{query}", sim.base_url()))
        .basic_auth(user, Some(BULK_PASSWORD))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn bulksms_send(sim: &SmsSim, body: Value) -> (u16, Value) {
    bulksms_send_as(sim, BULK_USER, "", body).await
}

/// Polls `condition` every 10 ms for up to 3 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
