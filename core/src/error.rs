//! The one error classification every connector uses, so the dispatcher and the supervisor
//! treat all platforms alike: wait and retry (rate-limited), retry with backoff (transient),
//! give up on the message (permanent), or stop the bot (auth / config).

use std::time::Duration;

use crate::model::MessageError;

/// What went wrong talking to a platform, classified by what the caller should do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectorError {
    /// The platform asked us to slow down. Not counted as an attempt; wait `retry_after`
    /// (or the policy's default) and retry.
    #[error("rate limited by the platform{}: {message}", fmt_retry(.retry_after))]
    RateLimited {
        retry_after: Option<Duration>,
        /// The limit is the bot's (or phone number's) as a whole, not the chat's.
        whole_bot: bool,
        message: String,
        platform_code: Option<String>,
    },
    /// A failure that may succeed later (5xx, timeout, dropped connection).
    #[error("transient failure: {message}")]
    Transient {
        message: String,
        platform_code: Option<String>,
    },
    /// The platform refused this message for good (chat not found, blocked by user...).
    #[error("refused by the platform: {message}")]
    Permanent {
        message: String,
        platform_code: Option<String>,
    },
    /// The bot's credentials are rejected: the bot is marked `failed` and not retried.
    #[error("credentials rejected by the platform: {message}")]
    Auth {
        message: String,
        platform_code: Option<String>,
    },
    /// The bot's configuration cannot work (missing field, unsupported mode...): `failed`.
    #[error("bot configuration: {0}")]
    Config(String),
    /// The account cannot pay for sends (SMS balance or credits exhausted): the bot's sending
    /// pauses, its messages stay queued, and it resumes when the balance is back.
    #[error("insufficient balance: {message}")]
    InsufficientFunds {
        message: String,
        platform_code: Option<String>,
    },
}

fn fmt_retry(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!(" (retry after {:.1}s)", d.as_secs_f64()),
        None => String::new(),
    }
}

/// The class of a [`ConnectorError`], used as the `code` of a message error and in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    RateLimited,
    Transient,
    Permanent,
    Auth,
    Config,
    InsufficientFunds,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Auth => "auth",
            ErrorClass::Config => "config",
            ErrorClass::InsufficientFunds => "insufficient_funds",
        }
    }
}

impl ConnectorError {
    pub fn transient(message: impl Into<String>) -> Self {
        ConnectorError::Transient {
            message: message.into(),
            platform_code: None,
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        ConnectorError::Permanent {
            message: message.into(),
            platform_code: None,
        }
    }
    /// A configuration error listing `(key, problem)` pairs.
    pub fn config(problems: &[(String, String)]) -> Self {
        ConnectorError::Config(
            problems
                .iter()
                .map(|(k, m)| format!("{k}: {m}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    pub fn auth(message: impl Into<String>) -> Self {
        ConnectorError::Auth {
            message: message.into(),
            platform_code: None,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            ConnectorError::RateLimited { .. } => ErrorClass::RateLimited,
            ConnectorError::Transient { .. } => ErrorClass::Transient,
            ConnectorError::Permanent { .. } => ErrorClass::Permanent,
            ConnectorError::Auth { .. } => ErrorClass::Auth,
            ConnectorError::Config(_) => ErrorClass::Config,
            ConnectorError::InsufficientFunds { .. } => ErrorClass::InsufficientFunds,
        }
    }

    /// True when the bot itself cannot work until someone changes its configuration.
    pub fn is_fatal_for_bot(&self) -> bool {
        matches!(
            self,
            ConnectorError::Auth { .. } | ConnectorError::Config(_)
        )
    }

    pub fn platform_code(&self) -> Option<&str> {
        match self {
            ConnectorError::RateLimited { platform_code, .. }
            | ConnectorError::Transient { platform_code, .. }
            | ConnectorError::Permanent { platform_code, .. }
            | ConnectorError::Auth { platform_code, .. }
            | ConnectorError::InsufficientFunds { platform_code, .. } => platform_code.as_deref(),
            ConnectorError::Config(_) => None,
        }
    }

    fn message(&self) -> &str {
        match self {
            ConnectorError::RateLimited { message, .. }
            | ConnectorError::Transient { message, .. }
            | ConnectorError::Permanent { message, .. }
            | ConnectorError::Auth { message, .. }
            | ConnectorError::InsufficientFunds { message, .. }
            | ConnectorError::Config(message) => message,
        }
    }

    /// The error as recorded on a message.
    pub fn to_message_error(&self) -> MessageError {
        MessageError {
            code: self.class().as_str().to_string(),
            message: self.message().to_string(),
            platform_code: self.platform_code().map(str::to_string),
        }
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A malformed request parameter (a cursor this API did not hand out): 400, not 422.
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the store is shutting down")]
    Closed,
    /// The database refused a write that may succeed later (busy, connection lost).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    pub fn corrupt(what: impl std::fmt::Display) -> Self {
        StoreError::Corrupt(what.to_string())
    }

    /// True when the same request may succeed shortly: the store is unreachable, restarting
    /// or busy (answered 503 with Retry-After, not 500).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(d) => d.code().is_some_and(|c| {
                    // PostgreSQL: connection exceptions (08...), shutting down or starting
                    // (57P01-57P03); SQLite: busy, locked.
                    c.starts_with("08") || c.starts_with("57P0") || c == "5" || c == "6"
                }),
                _ => false,
            },
            _ => false,
        }
    }
}
