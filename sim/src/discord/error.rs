//! Discord's JSON error answers: `{"message": "...", "code": N}`, with `errors` for invalid
//! form bodies (code 50035); and [`DiscordSimError`], the mistakes in driving the simulator.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A REST error answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DiscordError {
    pub status: u16,
    pub code: u64,
    pub message: String,
    pub errors: Option<Value>,
}

impl DiscordError {
    pub fn new(status: u16, code: u64, message: impl Into<String>) -> Self {
        DiscordError {
            status,
            code,
            message: message.into(),
            errors: None,
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(401, 0, "401: Unauthorized")
    }

    pub fn not_found() -> Self {
        Self::new(404, 0, "404: Not Found")
    }

    pub fn unknown_channel() -> Self {
        Self::new(404, 10003, "Unknown Channel")
    }

    pub fn unknown_interaction() -> Self {
        Self::new(404, 10062, "Unknown interaction")
    }

    pub fn already_acknowledged() -> Self {
        Self::new(400, 40060, "Interaction has already been acknowledged.")
    }

    pub fn empty_message() -> Self {
        Self::new(400, 50006, "Cannot send an empty message")
    }

    pub fn invalid_json() -> Self {
        Self::new(400, 50109, "The request body contains invalid JSON.")
    }

    /// Code 50035 with one field error.
    pub fn form_body(field: &str, code: &str, message: &str) -> Self {
        DiscordError {
            errors: Some(json!({ field: { "_errors": [{ "code": code, "message": message }] } })),
            ..Self::new(400, 50035, "Invalid Form Body")
        }
    }
}

impl IntoResponse for DiscordError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut body = json!({ "message": self.message, "code": self.code });
        if let Some(errors) = self.errors {
            body["errors"] = errors;
        }
        (status, Json(body)).into_response()
    }
}

/// A request to the simulator's own API that cannot be carried out (a test's mistake).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscordSimError {
    #[error("no channel {0} was added to the simulator")]
    UnknownChannel(String),
    #[error("no message {0} in that channel")]
    UnknownMessage(String),
    #[error("message {0} was not posted by a bot")]
    NotABotMessage(String),
}
