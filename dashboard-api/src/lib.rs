//! switchboard-dashboard-api: the REST API and the WebSocket feed, as axum routers.
//!
//! Handlers are short: authentication is the [`auth::Caller`] extractor, errors are
//! [`problem::ApiError`] (problem+json), reads go to the store, and everything that needs the
//! running gateway (sending, bot lifecycle) goes through the [`Control`] trait that the
//! gateway implements. This crate depends on switchboard-core only.

pub mod auth;
pub mod extract;
pub mod feed;
pub mod idempotency;
pub mod openapi;
pub mod problem;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use metrics_exporter_prometheus::PrometheusHandle;
use switchboard_core::Store;
use switchboard_core::connector::{MediaDownload, SendOptions};
use switchboard_core::model::{Bot, BotCounters, Message};
use switchboard_core::store::{Enqueued, NewOutbound, Scope};

pub use problem::{ApiError, ApiResult};

/// A lifecycle action on a bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BotAction {
    Start,
    Stop,
    Restart,
}

/// What the API needs from the running gateway.
#[async_trait]
pub trait Control: Send + Sync + 'static {
    /// Validates an outbound message for its bot's platform and puts it in the outbox. `bot`
    /// is the bot `new.bot_id` names, already read in the caller's scope.
    async fn submit(
        &self,
        bot: &Bot,
        new: NewOutbound,
        options: SendOptions,
    ) -> Result<Enqueued, ApiError>;
    /// Checks a broadcast's content for its bot's platform: the segments each message will
    /// be billed as (SMS) and the platform's reply window, if it has one for this content.
    fn check_broadcast(
        &self,
        bot: &Bot,
        content: &switchboard_core::model::Content,
    ) -> Result<(Option<u32>, Option<Duration>), ApiError>;
    /// Streams the media a message carries, fetched with the bot's credentials.
    async fn fetch_media(&self, message: &Message) -> Result<MediaDownload, ApiError>;
    /// Creates a bot from an API body (the config file's bot fields) in `tenant`.
    async fn create_bot(
        &self,
        tenant: &str,
        body: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Bot, ApiError>;
    /// Applies a partial update (`null` removes a setting) and restarts the bot if needed.
    async fn update_bot(
        &self,
        scope: &Scope,
        id: &str,
        patch: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Bot, ApiError>;
    async fn delete_bot(&self, scope: &Scope, id: &str) -> Result<(), ApiError>;
    async fn bot_action(&self, bot_id: &str, action: BotAction) -> Result<(), ApiError>;
    /// The bot's account balance at its platform (cached up to an hour).
    async fn balance(&self, bot: &Bot) -> Result<switchboard_core::connector::Balance, ApiError>;
    /// Counters of a bot since the gateway started, seeded from the store.
    fn counters(&self, bot_id: &str) -> BotCounters;
    /// A secret as it is stored (sealed with the master key when one is configured).
    fn seal_secret(&self, plain: &str) -> String;
    /// What [`Control::seal_secret`] stored.
    fn open_secret(&self, stored: &str) -> Result<String, ApiError>;
    /// Refuses an outbound webhook URL whose host resolves to a loopback, private,
    /// link-local or metadata address the operator did not allow (422 naming it).
    async fn check_webhook_url(&self, url: &str) -> Result<(), ApiError>;
}

/// Feed tuning.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    pub ping_interval: Duration,
    pub send_timeout: Duration,
    /// Least time between two writes to one client while events keep coming: what arrives
    /// meanwhile goes out in the next write.
    pub write_gap: Duration,
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<Store>,
    pub control: Arc<dyn Control>,
    pub auth: Arc<auth::Authenticator>,
    pub metrics: Option<PrometheusHandle>,
    pub feed: FeedSettings,
    /// Cancelled when the gateway shuts down: feed connections close (1001 going away).
    pub closing: tokio_util::sync::CancellationToken,
}

/// The API router (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`, `/v1/...`).
pub fn router(state: ApiState) -> axum::Router {
    routes::router()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::layer,
        ))
        .with_state(state)
}
