//! The two kinds of failure in the Telegram simulator: answers the Bot API gives a bot
//! ([`ApiError`], Telegram's error envelope) and mistakes in driving the simulator
//! ([`SimError`], e.g. a test naming a bot it never added).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A Bot API error answer: `{"ok":false,"error_code":N,"description":...}` with HTTP status N.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub code: u16,
    pub description: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: u16, description: impl Into<String>) -> Self {
        ApiError {
            code,
            description: description.into(),
            retry_after: None,
        }
    }

    /// 400 with Telegram's "Bad Request: " prefix.
    pub fn bad_request(what: &str) -> Self {
        Self::new(400, format!("Bad Request: {what}"))
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized")
    }

    pub fn not_found() -> Self {
        Self::new(404, "Not Found")
    }

    pub fn chat_not_found() -> Self {
        Self::bad_request("chat not found")
    }

    pub fn too_many_requests(retry_after: u64) -> Self {
        ApiError {
            code: 429,
            description: format!("Too Many Requests: retry after {retry_after}"),
            retry_after: Some(retry_after),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "ok": false,
            "error_code": self.code,
            "description": self.description,
        });
        if let Some(retry_after) = self.retry_after {
            body["parameters"] = json!({ "retry_after": retry_after });
        }
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(body)).into_response()
    }
}

/// A request to the simulator's own API that cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("no bot with this token was added to the simulator")]
    UnknownBot,
    #[error("chat {0} is not known to the bot")]
    UnknownChat(i64),
    #[error("message {message_id} in chat {chat_id} is not known to the bot")]
    UnknownMessage { chat_id: i64, message_id: i64 },
    #[error("file {0} is not known to the simulator")]
    UnknownFile(String),
}
