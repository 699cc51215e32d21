//! The simulator's control API: JSON over HTTP under `/_sim/`, on the same port as the
//! simulated platform, for the demo, benchmarks and anything not written in Rust.
//!
//! Shared by every platform: `GET /_sim/counters`, `GET|PUT /_sim/faults`
//! (`{error_rate, latency_ms, timeout_rate, drop_rate}`), `GET /_sim/requests`.
//! Telegram, under `/_sim/telegram/`: `POST bots {token, username}`, `POST messages {token,
//! chat_id, from_id, text?, ...}` → `{update_id}`, `POST edits`, `POST buttons`, `POST block`,
//! `POST revoke {token}`, `GET sent?token=`, `GET webhook?token=`.
//! WhatsApp, under `/_sim/whatsapp/`: see `whatsapp::control`. Discord, under `/_sim/discord/`:
//! see `discord::control`.
//! Control calls are neither recorded in the request log nor subject to faults.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::framework::{Faults, SimCore};
use crate::telegram::{ChatType, SimError, TelegramSim, UserMessage};

/// A control call that cannot be carried out: `{"error": "..."}`.
#[derive(Debug)]
pub(crate) struct ControlError(pub StatusCode, pub String);

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<SimError> for ControlError {
    fn from(error: SimError) -> Self {
        ControlError(StatusCode::NOT_FOUND, error.to_string())
    }
}

pub(crate) type ControlResult = Result<Json<Value>, ControlError>;

/// Routes every platform's simulator serves.
pub fn core_routes(core: Arc<SimCore>) -> Router {
    Router::new()
        .route(
            "/_sim/counters",
            get(|State(core): State<Arc<SimCore>>| async move { Json(core.counters().snapshot()) }),
        )
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route("/_sim/requests", get(requests))
        .with_state(core)
}

#[derive(Debug, Deserialize)]
struct FaultsBody {
    #[serde(default)]
    error_rate: f64,
    #[serde(default)]
    latency_ms: u64,
    #[serde(default)]
    timeout_rate: f64,
    #[serde(default)]
    drop_rate: f64,
}

fn faults_json(faults: &Faults) -> Value {
    json!({
        "error_rate": faults.error_rate,
        "latency_ms": faults.latency.as_millis() as u64,
        "timeout_rate": faults.timeout_rate,
        "drop_rate": faults.drop_rate,
    })
}

async fn get_faults(State(core): State<Arc<SimCore>>) -> Json<Value> {
    Json(faults_json(&core.faults()))
}

async fn put_faults(
    State(core): State<Arc<SimCore>>,
    Json(body): Json<FaultsBody>,
) -> ControlResult {
    let rates = [body.error_rate, body.timeout_rate, body.drop_rate];
    if rates.iter().any(|r| !(0.0..=1.0).contains(r)) {
        let message = "rates must be between 0 and 1".to_owned();
        return Err(ControlError(StatusCode::BAD_REQUEST, message));
    }
    let faults = Faults {
        error_rate: body.error_rate,
        latency: Duration::from_millis(body.latency_ms),
        timeout_rate: body.timeout_rate,
        drop_rate: body.drop_rate,
    };
    core.set_faults(faults.clone());
    Ok(Json(faults_json(&faults)))
}

async fn requests(State(core): State<Arc<SimCore>>) -> Json<Value> {
    let started = core.started();
    let list: Vec<Value> = core
        .requests()
        .iter()
        .map(|r| {
            json!({
                "method": r.method,
                "path": r.path,
                "api_method": r.api_method,
                "status": r.status,
                "at_ms": r.at.saturating_duration_since(started).as_millis() as u64,
            })
        })
        .collect();
    Json(Value::Array(list))
}

/// The Telegram simulator's control routes.
pub fn telegram_routes(sim: TelegramSim) -> Router {
    Router::new()
        .route("/_sim/telegram/bots", post(add_bot))
        .route("/_sim/telegram/messages", post(user_message))
        .route("/_sim/telegram/edits", post(user_edits))
        .route("/_sim/telegram/buttons", post(button_press))
        .route("/_sim/telegram/block", post(block))
        .route("/_sim/telegram/revoke", post(revoke))
        .route("/_sim/telegram/sent", get(sent))
        .route("/_sim/telegram/webhook", get(webhook))
        .with_state(sim)
}

#[derive(Debug, Deserialize)]
struct BotBody {
    token: String,
    #[serde(default)]
    username: String,
}

async fn add_bot(State(sim): State<TelegramSim>, Json(body): Json<BotBody>) -> ControlResult {
    if body.token.is_empty() {
        return Err(ControlError(
            StatusCode::BAD_REQUEST,
            "token is empty".into(),
        ));
    }
    let username = if body.username.is_empty() {
        "sim_bot"
    } else {
        &body.username
    };
    Ok(Json(json!({ "id": sim.add_bot(&body.token, username) })))
}

async fn revoke(State(sim): State<TelegramSim>, Json(body): Json<BotBody>) -> ControlResult {
    sim.revoke_token(&body.token);
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct MessageBody {
    token: String,
    chat_id: i64,
    #[serde(default)]
    chat_type: ChatType,
    chat_title: Option<String>,
    from_id: i64,
    from_first_name: Option<String>,
    from_username: Option<String>,
    text: Option<String>,
    caption: Option<String>,
    photo_file_id: Option<String>,
    document_file_id: Option<String>,
    reply_to_message_id: Option<i64>,
}

async fn user_message(
    State(sim): State<TelegramSim>,
    Json(body): Json<MessageBody>,
) -> ControlResult {
    let message = UserMessage {
        chat_id: body.chat_id,
        chat_type: body.chat_type,
        chat_title: body.chat_title,
        from_id: body.from_id,
        from_first_name: body
            .from_first_name
            .unwrap_or_else(|| format!("User{}", body.from_id)),
        from_username: body.from_username,
        text: body.text,
        caption: body.caption,
        photo_file_id: body.photo_file_id,
        document_file_id: body.document_file_id,
        location: None,
        reply_to_message_id: body.reply_to_message_id,
    };
    let update_id = sim.try_user_message(&body.token, message)?;
    Ok(Json(json!({ "update_id": update_id })))
}

#[derive(Debug, Deserialize)]
struct EditBody {
    token: String,
    chat_id: i64,
    message_id: i64,
    text: String,
}

async fn user_edits(State(sim): State<TelegramSim>, Json(b): Json<EditBody>) -> ControlResult {
    let update_id = sim.try_user_edits(&b.token, b.chat_id, b.message_id, &b.text)?;
    Ok(Json(json!({ "update_id": update_id })))
}

#[derive(Debug, Deserialize)]
struct ButtonBody {
    token: String,
    chat_id: i64,
    user_id: i64,
    message_id: i64,
    data: String,
}

async fn button_press(State(sim): State<TelegramSim>, Json(b): Json<ButtonBody>) -> ControlResult {
    let update_id =
        sim.try_user_presses_button(&b.token, b.chat_id, b.user_id, b.message_id, &b.data)?;
    Ok(Json(json!({ "update_id": update_id })))
}

#[derive(Debug, Deserialize)]
struct BlockBody {
    token: String,
    user_id: i64,
    #[serde(default = "yes")]
    blocked: bool,
}

fn yes() -> bool {
    true
}

async fn block(State(sim): State<TelegramSim>, Json(b): Json<BlockBody>) -> ControlResult {
    let update_id = sim.try_set_blocked(&b.token, b.user_id, b.blocked)?;
    Ok(Json(json!({ "update_id": update_id })))
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: String,
}

async fn sent(State(sim): State<TelegramSim>, Query(q): Query<TokenQuery>) -> Json<Value> {
    Json(json!(sim.sent(&q.token)))
}

async fn webhook(State(sim): State<TelegramSim>, Query(q): Query<TokenQuery>) -> Json<Value> {
    Json(json!(sim.webhook_info(&q.token)))
}
