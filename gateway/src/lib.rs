//! switchboard-gateway: the `switchboard` daemon.
//!
//! - [`config`]: TOML + environment, validated with the key of every problem.
//! - [`app`]: wiring, config reconciliation, ordered shutdown.
//! - [`supervisor`]: one task per bot, lifecycle states, restarts with backoff, probes.
//! - [`outbox`]: the dispatcher: per-bot, FIFO per conversation, paced, classified retries.
//! - [`ingress`]: platform webhooks to connectors.
//! - [`inbound`]: connectors' inbound events to the store.
//! - [`control`]: what the REST API asks of the running gateway.
//! - [`scheduler`]: starts scheduled broadcasts and publishes their progress.
//! - [`webhooks`]: signed outbound webhooks to the business's app, retried, dead-lettered.
//! - [`counters`], [`telemetry`]: metrics and logs.
//! - [`demo`]: `switchboard demo` (gateway + simulator + simulated users).

pub mod app;
pub mod config;
pub mod control;
pub mod counters;
pub mod demo;
pub mod inbound;
pub mod ingress;
pub mod outbox;
pub mod scheduler;
pub mod supervisor;
pub mod telemetry;
pub mod webhooks;

pub use app::Gateway;
