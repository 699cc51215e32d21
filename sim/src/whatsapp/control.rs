//! The WhatsApp simulator's control routes, under `/_sim/whatsapp/` (JSON):
//!
//! - `POST phones {phone_number_id, access_token, app_secret, callback_url?,
//!   display_phone_number?, waba_id?, verified_name?}`
//! - `POST callback {phone_number_id, callback_url}`, `POST verify {phone_number_id,
//!   verify_token}` → `{verified}`
//! - `POST messages {phone_number_id, from, profile_name?, text?, media_id?, media_type?,
//!   caption?, filename?, button_reply_id?, button_reply_title?, context?}` → `{wamid}`
//! - `POST media` (raw body; its Content-Type is the MIME type) → `{id}`
//! - `POST revoke {access_token}`, `POST clock {advance_secs}`
//! - `GET sent?phone_number_id=`, `GET deliveries`, `GET error_codes`, `GET pending`

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{PhoneNumber, WaInbound, WaUserMessage, WhatsAppSim, WhatsAppSimError};
use crate::control::{ControlError, ControlResult};

impl From<WhatsAppSimError> for ControlError {
    fn from(error: WhatsAppSimError) -> Self {
        ControlError(StatusCode::NOT_FOUND, error.to_string())
    }
}

pub(super) fn routes(sim: WhatsAppSim) -> Router {
    Router::new()
        .route("/_sim/whatsapp/phones", post(add_phone))
        .route("/_sim/whatsapp/callback", post(set_callback))
        .route("/_sim/whatsapp/verify", post(verify))
        .route("/_sim/whatsapp/messages", post(user_message))
        .route("/_sim/whatsapp/media", post(add_media))
        .route("/_sim/whatsapp/revoke", post(revoke))
        .route("/_sim/whatsapp/clock", post(advance_clock))
        .route("/_sim/whatsapp/sent", get(sent))
        .route("/_sim/whatsapp/deliveries", get(deliveries))
        .route("/_sim/whatsapp/error_codes", get(error_codes))
        .route("/_sim/whatsapp/pending", get(pending))
        .with_state(sim)
}

fn bad_request(message: &str) -> ControlError {
    ControlError(StatusCode::BAD_REQUEST, message.to_owned())
}

#[derive(Debug, Deserialize)]
struct PhoneBody {
    phone_number_id: String,
    access_token: String,
    app_secret: String,
    callback_url: Option<String>,
    display_phone_number: Option<String>,
    waba_id: Option<String>,
    verified_name: Option<String>,
}

async fn add_phone(State(sim): State<WhatsAppSim>, Json(body): Json<PhoneBody>) -> ControlResult {
    if body.phone_number_id.is_empty() || body.access_token.is_empty() {
        return Err(bad_request("phone_number_id and access_token are required"));
    }
    let mut phone = PhoneNumber::new(&body.phone_number_id, &body.access_token, &body.app_secret);
    phone.callback_url = body.callback_url;
    if let Some(display) = body.display_phone_number {
        phone.display_phone_number = display;
    }
    if let Some(waba_id) = body.waba_id {
        phone.waba_id = waba_id;
    }
    if let Some(name) = body.verified_name {
        phone.verified_name = name;
    }
    sim.add_phone_number(phone);
    Ok(Json(json!({ "phone_number_id": body.phone_number_id })))
}

#[derive(Debug, Deserialize)]
struct CallbackBody {
    phone_number_id: String,
    callback_url: String,
}

async fn set_callback(
    State(sim): State<WhatsAppSim>,
    Json(body): Json<CallbackBody>,
) -> ControlResult {
    sim.try_set_callback(&body.phone_number_id, &body.callback_url)?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct VerifyBody {
    phone_number_id: String,
    verify_token: String,
}

async fn verify(State(sim): State<WhatsAppSim>, Json(body): Json<VerifyBody>) -> ControlResult {
    let verified = sim
        .verify_callback(&body.phone_number_id, &body.verify_token)
        .await
        .map_err(|e| ControlError(StatusCode::BAD_GATEWAY, format!("{e:#}")))?;
    Ok(Json(json!({ "verified": verified })))
}

#[derive(Debug, Deserialize)]
struct MessageBody {
    phone_number_id: String,
    from: String,
    profile_name: Option<String>,
    text: Option<String>,
    media_id: Option<String>,
    /// image (default), document, audio, video or sticker.
    media_type: Option<String>,
    caption: Option<String>,
    filename: Option<String>,
    button_reply_id: Option<String>,
    button_reply_title: Option<String>,
    context: Option<String>,
}

fn inbound_kind(body: &MessageBody) -> Result<WaInbound, ControlError> {
    if let Some(media_id) = body.media_id.clone() {
        let caption = body.caption.clone();
        return match body.media_type.as_deref().unwrap_or("image") {
            "image" => Ok(WaInbound::Image { media_id, caption }),
            "document" => Ok(WaInbound::Document {
                media_id,
                filename: body.filename.clone().unwrap_or_else(|| "file".to_owned()),
                caption,
            }),
            "audio" => Ok(WaInbound::Audio { media_id }),
            "video" => Ok(WaInbound::Video { media_id, caption }),
            "sticker" => Ok(WaInbound::Sticker { media_id }),
            _ => Err(bad_request("unknown media_type")),
        };
    }
    if let Some(id) = body.button_reply_id.clone() {
        let title = body
            .button_reply_title
            .clone()
            .unwrap_or_else(|| id.clone());
        return Ok(WaInbound::ButtonReply { id, title });
    }
    body.text
        .clone()
        .map(WaInbound::Text)
        .ok_or_else(|| bad_request("one of text, media_id, button_reply_id is required"))
}

async fn user_message(
    State(sim): State<WhatsAppSim>,
    Json(body): Json<MessageBody>,
) -> ControlResult {
    let message = WaUserMessage {
        from: body.from.clone(),
        profile_name: body
            .profile_name
            .clone()
            .unwrap_or_else(|| format!("User {}", body.from)),
        kind: inbound_kind(&body)?,
        context: body.context.clone(),
    };
    let wamid = sim.try_user_message(&body.phone_number_id, message)?;
    Ok(Json(json!({ "wamid": wamid })))
}

async fn add_media(
    State(sim): State<WhatsAppSim>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ControlResult {
    let mime = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    Ok(Json(json!({ "id": sim.add_media(bytes.to_vec(), mime) })))
}

#[derive(Debug, Deserialize)]
struct RevokeBody {
    access_token: String,
}

async fn revoke(State(sim): State<WhatsAppSim>, Json(body): Json<RevokeBody>) -> ControlResult {
    sim.revoke_token(&body.access_token);
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct ClockBody {
    advance_secs: u64,
}

async fn advance_clock(
    State(sim): State<WhatsAppSim>,
    Json(body): Json<ClockBody>,
) -> ControlResult {
    sim.advance_clock(Duration::from_secs(body.advance_secs));
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct PhoneQuery {
    phone_number_id: String,
}

async fn sent(State(sim): State<WhatsAppSim>, Query(q): Query<PhoneQuery>) -> Json<Value> {
    Json(json!(sim.sent(&q.phone_number_id)))
}

async fn deliveries(State(sim): State<WhatsAppSim>) -> Json<Value> {
    let list: Vec<Value> = sim
        .deliveries()
        .iter()
        .map(|d| {
            json!({
                "url": d.url,
                "status": d.status,
                "redelivery": d.redelivery,
                "signature": d.signature,
                "body": d.json(),
            })
        })
        .collect();
    Json(Value::Array(list))
}

async fn error_codes(State(sim): State<WhatsAppSim>) -> Json<Value> {
    let codes: serde_json::Map<String, Value> = sim
        .error_codes()
        .into_iter()
        .map(|(code, n)| (code.to_string(), json!(n)))
        .collect();
    Json(Value::Object(codes))
}

async fn pending(State(sim): State<WhatsAppSim>) -> Json<Value> {
    Json(json!({ "pending": sim.pending_webhooks() }))
}
