//! Messages: send (into the outbox), list, fetch with status history.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_core::model::{Content, Direction, Message, MessageStatus};
use switchboard_core::secret::sha256_hex;
use switchboard_core::store::{MessageFilter, NewOutbound, Recipient};
use utoipa::ToSchema;

use super::{List, parse_time};
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, Pagination};
use crate::{ApiError, ApiState};

/// Who to send to: exactly one of the fields.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct To {
    pub conversation_id: Option<String>,
    pub contact_id: Option<String>,
    /// The platform's chat id (a string; numbers are accepted).
    #[schema(value_type = Option<String>)]
    pub chat_id: Option<Value>,
    /// E.164, for SMS and WhatsApp bots.
    pub phone: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    pub bot_id: String,
    pub to: To,
    pub content: Content,
    /// Id of a message of the same conversation to reply to.
    pub reply_to: Option<String>,
    /// A text over the platform's length limit is sent as several messages unless this is
    /// false, in which case it is refused with 422 (default true).
    pub allow_split: Option<bool>,
}

/// Checks a phone number's form; the bot's connector normalizes it (an SMS bot may take
/// numbers in its default region's national form).
pub fn normalize_e164(raw: &str) -> Result<String, ApiError> {
    switchboard_core::model::normalize_e164(raw)
        .map_err(|e| ApiError::unprocessable(format!("to.phone: {e}")))
}

pub(crate) fn recipient(to: &To) -> Result<Recipient, ApiError> {
    let mut found = Vec::new();
    if let Some(c) = &to.conversation_id {
        found.push(Recipient::Conversation(c.clone()));
    }
    if let Some(c) = &to.contact_id {
        found.push(Recipient::Contact(c.clone()));
    }
    if let Some(c) = &to.chat_id {
        let chat = match c {
            Value::String(s) if !s.is_empty() => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(ApiError::unprocessable(
                    "to.chat_id must be a non-empty string or a number",
                ));
            }
        };
        found.push(Recipient::Chat(chat));
    }
    if let Some(p) = &to.phone {
        if p.trim().is_empty() {
            return Err(ApiError::unprocessable("to.phone must not be empty"));
        }
        found.push(Recipient::Phone(p.trim().to_owned()));
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(ApiError::unprocessable(
            "to needs one of conversation_id, contact_id, chat_id or phone",
        )),
        _ => Err(ApiError::unprocessable(
            "to takes exactly one of conversation_id, contact_id, chat_id or phone",
        )),
    }
}

/// Queues a message for sending: 202 with the message (`status: queued`). With an
/// `Idempotency-Key`, a repeat within 24 h returns the first message and sends nothing.
#[utoipa::path(post, path = "/v1/messages", tag = "messages", request_body = SendMessage,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes retries safe for 24 h")),
    responses((status = 202, body = Message), (status = 409, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn create(
    State(s): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let idempotency = crate::idempotency::key(&headers)?
        .map(|key| (key, sha256_hex(body.to_string().as_bytes())));
    let req: SendMessage =
        serde_json::from_value(body).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    req.content.validate().map_err(ApiError::unprocessable)?;
    let to = recipient(&req.to)?;
    // The bot decides the tenant for the admin token; an API key only reaches its own bots.
    let bot = match s.store.get_bot_recent(&caller.scope, &req.bot_id).await {
        Ok(b) => b,
        Err(switchboard_core::StoreError::NotFound) => {
            return Err(ApiError::unprocessable(format!(
                "bot_id: no bot {:?}",
                req.bot_id
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let options = switchboard_core::connector::SendOptions {
        allow_split: req.allow_split.unwrap_or(true),
    };
    let enqueued = s
        .control
        .submit(
            &bot,
            NewOutbound {
                tenant: bot.tenant.clone(),
                bot_id: req.bot_id,
                to,
                content: req.content,
                reply_to: req.reply_to,
                idempotency,
                reply_window: None,
                chat_kind: None,
                segments: None,
            },
            options,
        )
        .await?;
    let mut resp = (StatusCode::ACCEPTED, Json(&enqueued.message)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/messages/{}", enqueued.message.id)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    if enqueued.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct MessageQuery {
    pub bot: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: Option<String>,
    pub status: Option<String>,
    /// RFC 3339, inclusive.
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    pub until: Option<String>,
}

/// Messages, newest first.
#[utoipa::path(get, path = "/v1/messages", tag = "messages", params(MessageQuery, Pagination),
    responses((status = 200, body = List<Message>)), security(("bearer" = [])))]
pub async fn list(
    State(s): State<ApiState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<MessageQuery>,
    ApiQuery(p): ApiQuery<Pagination>,
) -> Result<Json<List<Message>>, ApiError> {
    let direction = match q.direction.as_deref().filter(|d| !d.is_empty()) {
        None => None,
        Some(d) => Some(Direction::parse(d).ok_or_else(|| {
            ApiError::bad_request(format!("direction must be inbound or outbound, got {d:?}"))
        })?),
    };
    let status = match q.status.as_deref().filter(|d| !d.is_empty()) {
        None => None,
        Some(st) => Some(
            MessageStatus::parse(st)
                .ok_or_else(|| ApiError::bad_request(format!("status: unknown status {st:?}")))?,
        ),
    };
    let filter = MessageFilter {
        bot: q.bot.filter(|b| !b.is_empty()),
        conversation: None,
        direction,
        status,
        since: parse_time("since", &q.since)?,
        until: parse_time("until", &q.until)?,
    };
    let page = s
        .store
        .list_messages(&caller.scope, &filter, &p.page()?)
        .await?;
    Ok(Json(page.into()))
}

/// One message with its status history and error.
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages",
    responses((status = 200, body = Message), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn get(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    Ok(Json(s.store.get_message(&caller.scope, &id).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct MediaQuery {
    /// Which attachment (0-based); a message carries one today.
    pub n: Option<u32>,
}

/// The message's attachment, streamed from the platform through the gateway (the bot's token
/// never reaches the client).
#[utoipa::path(get, path = "/v1/messages/{id}/media", tag = "messages", params(MediaQuery),
    responses((status = 200, description = "the media bytes"), (status = 404, body = crate::problem::Problem),
        (status = 502, body = crate::problem::Problem), (status = 503, body = crate::problem::Problem)),
    security(("bearer" = [])))]
pub async fn media(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<MediaQuery>,
) -> Result<Response, ApiError> {
    let message = s.store.get_message(&caller.scope, &id).await?;
    // A message carries one attachment: the first whether counted from 0 or from 1.
    if q.n.unwrap_or(0) > 1 {
        return Err(ApiError::not_found(
            "this message has one attachment (n=0 or n=1, or no n)",
        ));
    }
    let download = s.control.fetch_media(&message).await?;
    use futures::StreamExt;
    let body = axum::body::Body::from_stream(download.body.map(|chunk| {
        chunk
            .map(axum::body::Bytes::from)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }));
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&download.content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Some(len) = download.length
        && let Ok(v) = HeaderValue::from_str(&len.to_string())
    {
        headers.insert(header::CONTENT_LENGTH, v);
    }
    if let Some(name) = download.file_name {
        let safe: String = name
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
            .collect();
        if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{safe}\"")) {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_normalize_to_e164_or_name_the_number() {
        assert_eq!(normalize_e164("+1 (555) 123-4567").unwrap(), "+15551234567");
        let err = normalize_e164("0551234").unwrap_err();
        assert!(err.detail.contains("\"0551234\""));
        assert!(normalize_e164("+0123456789").is_err());
        // No country uses +999.
        assert!(normalize_e164("+99912345678").is_err());
    }
}
