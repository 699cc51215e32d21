//! switchboard-connectors: one module per platform, each implementing the connector contract
//! of `switchboard_core::connector` (a `ConnectorFactory` plus a `Connector` per bot).
//!
//! [`registry`] lists the platforms compiled into this build. Adding a platform means adding
//! a folder here and one line in [`registry`]; the gateway does not change.

use std::sync::Arc;

use switchboard_core::connector::ConnectorRegistry;

pub mod discord;
mod fetch;
pub mod sms;
pub mod telegram;
mod text;
pub mod whatsapp;

pub use fetch::{ConnectorOptions, fetch_media, is_private, resolve_public};

/// Every connector of this build, with the default options.
pub fn registry() -> ConnectorRegistry {
    registry_with(ConnectorOptions::default())
}

/// Every connector of this build, with the operator's options.
pub fn registry_with(options: ConnectorOptions) -> ConnectorRegistry {
    let mut r = ConnectorRegistry::new();
    r.register(Arc::new(telegram::TelegramFactory::with_options(
        options.clone(),
    )));
    r.register(Arc::new(whatsapp::WhatsAppFactory::new()));
    r.register(Arc::new(discord::DiscordFactory::new(options)));
    r.register(Arc::new(sms::SmsFactory::new()));
    r
}

pub use text::{SplitProgress, split_text};

/// A request that got no answer, as a transient error naming only what failed: reqwest's
/// own message prints the URL, which may hold a token.
pub(crate) fn network_error(
    platform: &str,
    e: reqwest::Error,
) -> switchboard_core::error::ConnectorError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    switchboard_core::error::ConnectorError::transient(format!("{platform}: {kind}"))
}
