//! The two kinds of failure in the WhatsApp simulator: answers the Graph API gives a business
//! ([`GraphError`], Meta's error envelope) and mistakes in driving the simulator
//! ([`WhatsAppSimError`], e.g. a test naming a phone number it never added).
//!
//! Meta's envelope: `{"error":{"message","type","code","error_subcode"?,"error_data"?
//! {"messaging_product":"whatsapp","details"},"fbtrace_id"}}`. Cloud API errors answer HTTP 400
//! in most cases, including the throughput errors 130429 and 131056 (Meta's error-code
//! reference lists "400 Bad Request" for them); token errors answer 401.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ids;

/// Where Meta's error codes are explained; status webhooks link to it.
pub(crate) const ERROR_CODES_HREF: &str =
    "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/";

/// A Graph API error answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GraphError {
    pub status: u16,
    pub code: i64,
    pub message: String,
    pub kind: &'static str,
    pub subcode: Option<i64>,
    /// `error_data.details`, for Cloud API (WhatsApp) errors.
    pub details: Option<String>,
    pub is_transient: bool,
}

impl GraphError {
    fn new(status: u16, code: i64, message: impl Into<String>) -> Self {
        GraphError {
            status,
            code,
            message: message.into(),
            kind: "OAuthException",
            subcode: None,
            details: None,
            is_transient: false,
        }
    }

    /// A Cloud API error: `(#code) title` with `error_data.details`.
    fn cloud(code: i64, title: &str, details: impl Into<String>) -> Self {
        GraphError {
            details: Some(details.into()),
            ..Self::new(400, code, format!("(#{code}) {title}"))
        }
    }

    /// Missing, unknown or malformed access token.
    pub fn invalid_token() -> Self {
        Self::new(
            401,
            190,
            "Invalid OAuth access token - Cannot parse access token",
        )
    }

    /// A token that was valid and has been revoked (subcode 460: session invalidated).
    pub fn revoked_token() -> Self {
        GraphError {
            subcode: Some(460),
            ..Self::new(
                401,
                190,
                "Error validating access token: The session has been invalidated because the user changed their password or Facebook has changed the session for security reasons.",
            )
        }
    }

    /// An object the token may not see or that does not support the call (Graph's code 100,
    /// subcode 33). `verb` is `get`, `post` or `delete`.
    pub fn unsupported(verb: &str, id: &str) -> Self {
        GraphError {
            kind: "GraphMethodException",
            subcode: Some(33),
            ..Self::new(
                400,
                100,
                format!(
                    "Unsupported {verb} request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api"
                ),
            )
        }
    }

    /// A path the Graph API does not know.
    pub fn unknown_path(path: &str) -> Self {
        Self::new(400, 2500, format!("Unknown path components: {path}"))
    }

    /// A required top-level parameter is absent (`(#100) The parameter to is required.`).
    pub fn required_parameter(name: &str) -> Self {
        Self::new(
            400,
            100,
            format!("(#100) The parameter {name} is required."),
        )
    }

    /// Code 100 with details naming the field.
    pub fn invalid_parameter(details: impl Into<String>) -> Self {
        Self::cloud(100, "Invalid parameter", details)
    }

    /// Code 131008: a nested required parameter is absent.
    pub fn missing_parameter(details: impl Into<String>) -> Self {
        Self::cloud(131008, "Required parameter is missing", details)
    }

    /// Code 131009: a value is out of range or malformed.
    pub fn value_not_valid(details: impl Into<String>) -> Self {
        Self::cloud(131009, "Parameter value is not valid", details)
    }

    pub fn throughput_reached() -> Self {
        Self::cloud(
            130429,
            "Rate limit hit",
            "Cloud API message throughput has been reached.",
        )
    }

    pub fn pair_rate_limit() -> Self {
        Self::cloud(
            131056,
            "(Business Account, Consumer Account) pair rate limit hit",
            "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time.",
        )
    }

    /// Meta's transient server error (code 2), the answer of an injected 500.
    pub fn service_unavailable() -> Self {
        GraphError {
            is_transient: true,
            ..Self::new(
                500,
                2,
                "An unexpected error has occurred. Please retry your request later.",
            )
        }
    }

    /// Whether this is one of the Cloud API's throughput errors.
    pub fn is_rate_limit(&self) -> bool {
        matches!(self.code, 130429 | 131056)
    }

    pub fn body(&self) -> Value {
        let mut error = json!({
            "message": self.message,
            "type": self.kind,
            "code": self.code,
        });
        if let Some(subcode) = self.subcode {
            error["error_subcode"] = json!(subcode);
        }
        if self.is_transient {
            error["is_transient"] = json!(true);
        }
        if let Some(details) = &self.details {
            error["error_data"] = json!({ "messaging_product": "whatsapp", "details": details });
        }
        error["fbtrace_id"] = json!(ids::fbtrace_id());
        json!({ "error": error })
    }
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response = (status, Json(self.body())).into_response();
        if self.status == 401 {
            let challenge = format!(
                "OAuth \"Facebook Platform\" \"invalid_token\" \"{}\"",
                self.message.replace('"', "'")
            );
            if let Ok(value) = challenge.parse() {
                response
                    .headers_mut()
                    .insert(axum::http::header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

/// A request to the simulator's own API that cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhatsAppSimError {
    #[error("no phone number with id {0} was added to the simulator")]
    UnknownPhoneNumber(String),
    #[error("media {0} is not known to the simulator")]
    UnknownMedia(String),
    #[error("the phone number {0} has no webhook callback URL")]
    NoCallback(String),
}
