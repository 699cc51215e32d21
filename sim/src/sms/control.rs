//! The SMS simulator's control routes, under `/_sim/sms/` (JSON). `provider` is `twilio`,
//! `africastalking` or `bulksms`; `account` an account SID or username.
//!
//! - `POST accounts {provider, account, secret, balance}` (secret: auth token, API key or
//!   password)
//! - `POST twilio/numbers {account_sid, number}`, `POST twilio/services {account_sid,
//!   service_sid, numbers}`, `POST twilio/sms_url {number, url}`
//! - `POST africastalking/callbacks {username, delivery_url, incoming_url}`,
//!   `POST bulksms/webhook {username, url}`
//! - `POST balance {provider, account, amount}`, `GET balance?provider=&account=` → `{balance}`
//! - `POST fail {number, code?}` (no code: the number is healed)
//! - `POST inbound {provider, account, from, to, body}` → `{status}` (the app's answer)
//! - `GET sent?provider=&account=`, `GET deliveries`, `GET pending` → `{in_progress}`

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{Provider, SmsSim, SmsSimError};
use crate::control::{ControlError, ControlResult};

impl From<SmsSimError> for ControlError {
    fn from(error: SmsSimError) -> Self {
        let status = match error {
            SmsSimError::UnknownProvider(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::NOT_FOUND,
        };
        ControlError(status, error.to_string())
    }
}

pub(super) fn routes(sim: SmsSim) -> Router {
    Router::new()
        .route("/_sim/sms/accounts", post(add_account))
        .route("/_sim/sms/twilio/numbers", post(add_number))
        .route("/_sim/sms/twilio/services", post(add_service))
        .route("/_sim/sms/twilio/sms_url", post(set_sms_url))
        .route("/_sim/sms/africastalking/callbacks", post(set_at_callbacks))
        .route("/_sim/sms/bulksms/webhook", post(set_bulksms_webhook))
        .route("/_sim/sms/balance", get(balance).post(set_balance))
        .route("/_sim/sms/fail", post(fail))
        .route("/_sim/sms/inbound", post(inbound))
        .route("/_sim/sms/sent", get(sent))
        .route("/_sim/sms/deliveries", get(deliveries))
        .route("/_sim/sms/pending", get(pending))
        .with_state(sim)
}

#[derive(Debug, Deserialize)]
struct AccountBody {
    provider: String,
    account: String,
    secret: String,
    #[serde(default)]
    balance: f64,
}

async fn add_account(State(sim): State<SmsSim>, Json(b): Json<AccountBody>) -> ControlResult {
    match b.provider.parse::<Provider>()? {
        Provider::Twilio => sim.add_twilio_account(&b.account, &b.secret, b.balance),
        Provider::AfricasTalking => sim.add_at_account(&b.account, &b.secret, b.balance),
        Provider::BulkSms => sim.add_bulksms_account(&b.account, &b.secret, b.balance),
    }
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct NumberBody {
    account_sid: String,
    number: String,
}

async fn add_number(State(sim): State<SmsSim>, Json(b): Json<NumberBody>) -> ControlResult {
    sim.try_add_twilio_number(&b.account_sid, &b.number)?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct ServiceBody {
    account_sid: String,
    service_sid: String,
    numbers: Vec<String>,
}

async fn add_service(State(sim): State<SmsSim>, Json(b): Json<ServiceBody>) -> ControlResult {
    let numbers: Vec<&str> = b.numbers.iter().map(String::as_str).collect();
    sim.try_add_twilio_messaging_service(&b.account_sid, &b.service_sid, &numbers)?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct SmsUrlBody {
    number: String,
    url: String,
}

async fn set_sms_url(State(sim): State<SmsSim>, Json(b): Json<SmsUrlBody>) -> ControlResult {
    sim.set_twilio_sms_url(&b.number, &b.url);
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct AtCallbacksBody {
    username: String,
    delivery_url: String,
    incoming_url: String,
}

async fn set_at_callbacks(
    State(sim): State<SmsSim>,
    Json(b): Json<AtCallbacksBody>,
) -> ControlResult {
    sim.try_set_at_callbacks(&b.username, &b.delivery_url, &b.incoming_url)?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct WebhookBody {
    username: String,
    url: String,
}

async fn set_bulksms_webhook(
    State(sim): State<SmsSim>,
    Json(b): Json<WebhookBody>,
) -> ControlResult {
    sim.try_set_bulksms_webhook(&b.username, &b.url)?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct AccountQuery {
    provider: String,
    account: String,
}

async fn balance(State(sim): State<SmsSim>, Query(q): Query<AccountQuery>) -> ControlResult {
    let provider = q.provider.parse::<Provider>()?;
    Ok(Json(
        json!({ "balance": sim.balance(provider, &q.account) }),
    ))
}

#[derive(Debug, Deserialize)]
struct BalanceBody {
    provider: String,
    account: String,
    amount: f64,
}

async fn set_balance(State(sim): State<SmsSim>, Json(b): Json<BalanceBody>) -> ControlResult {
    sim.try_set_balance(b.provider.parse()?, &b.account, b.amount)?;
    Ok(Json(json!({ "balance": b.amount })))
}

#[derive(Debug, Deserialize)]
struct FailBody {
    number: String,
    code: Option<String>,
}

async fn fail(State(sim): State<SmsSim>, Json(b): Json<FailBody>) -> ControlResult {
    match b.code.as_deref() {
        Some(code) if !code.is_empty() => sim.fail_number(&b.number, code),
        _ => sim.heal_number(&b.number),
    }
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct InboundBody {
    provider: String,
    account: String,
    from: String,
    to: String,
    body: String,
}

async fn inbound(State(sim): State<SmsSim>, Json(b): Json<InboundBody>) -> ControlResult {
    let answered = match b.provider.parse::<Provider>()? {
        Provider::Twilio => {
            sim.twilio_inbound(&b.account, &b.from, &b.to, &b.body)
                .await
        }
        Provider::AfricasTalking => sim.at_inbound(&b.account, &b.from, &b.to, &b.body).await,
        Provider::BulkSms => {
            sim.bulksms_inbound(&b.account, &b.from, &b.to, &b.body)
                .await
        }
    };
    let status = answered.map_err(|e| match e.downcast::<SmsSimError>() {
        Ok(mistake) => ControlError::from(mistake),
        Err(e) => ControlError(StatusCode::BAD_GATEWAY, format!("{e:#}")),
    })?;
    Ok(Json(json!({ "status": status })))
}

async fn sent(State(sim): State<SmsSim>, Query(q): Query<AccountQuery>) -> ControlResult {
    let provider = q.provider.parse::<Provider>()?;
    Ok(Json(json!(sim.sent(provider, &q.account))))
}

async fn deliveries(State(sim): State<SmsSim>) -> ControlResult {
    Ok(Json(json!(sim.deliveries())))
}

async fn pending(State(sim): State<SmsSim>) -> ControlResult {
    Ok(Json(json!({ "in_progress": sim.in_progress() })))
}
