//! switchboard-core: what every part of Switchboard shares and nothing platform-specific.
//!
//! - [`model`]: the unified conversation model (tenants, bots, contacts, conversations,
//!   messages, events).
//! - [`store`]: durable storage (SQLite or PostgreSQL), the outbox and the event log.
//! - [`connector`]: the contract every platform connector implements.
//! - [`error`]: the one error classification (rate-limited / transient / permanent / auth).
//! - [`rate`]: rate policies and the pacer hook of the dispatcher.
//! - [`secret`]: secrets that never print, credentials sealed at rest, hashed API keys.
//! - [`metrics`]: the metric names.

pub mod connector;
pub mod error;
pub mod metrics;
pub mod model;
pub mod phone;
pub mod rate;
pub mod secret;
pub mod store;

pub use error::{ConnectorError, ErrorClass, StoreError};
pub use store::Store;
