//! switchboard-connectors: one module per platform, each implementing the connector contract
//! of `switchboard_core::connector` (a `ConnectorFactory` plus a `Connector` per bot).
//!
//! [`registry`] lists the platforms compiled into this build. Adding a platform means adding
//! a folder here and one line in [`registry`]; the gateway does not change.

use std::sync::Arc;

use switchboard_core::connector::ConnectorRegistry;

pub mod telegram;
mod text;
pub mod whatsapp;

/// Every connector of this build.
pub fn registry() -> ConnectorRegistry {
    let mut r = ConnectorRegistry::new();
    r.register(Arc::new(telegram::TelegramFactory::new()));
    r.register(Arc::new(whatsapp::WhatsAppFactory::new()));
    r
}

pub use text::{SplitProgress, split_text};
