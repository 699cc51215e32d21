//! The connector contract: what every platform implements, and what the gateway gives it.
//!
//! A platform is a [`ConnectorFactory`] (validates a bot's settings and content, builds a
//! connector) plus a [`Connector`] per running bot: `run` (the inbound loop: long-poll, gateway
//! session, or nothing for webhook-only platforms), `send`, `probe`, `pacer` and
//! `handle_webhook`. Connectors hold platform knowledge only: pacing, retries, persistence,
//! restarts and metrics are the gateway's, identical for every platform.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::error::{ConnectorError, StoreError};
use crate::model::{
    Bot, Content, ConversationKind, Message, MessageError, MessageStatus, Platform,
};
use crate::rate::{GovernorPacer, Pacer, RatePolicy};
use crate::secret::Secret;

/// Config keys that hold credentials, for every platform: encrypted at rest, write-only in
/// the API, resolvable from `env:`/`file:` references in the config file.
pub const CREDENTIAL_FIELDS: &[&str] = &[
    "token",
    "access_token",
    "app_secret",
    "verify_token",
    "webhook_secret",
    "auth_token",
    "api_key",
    "password",
    "client_secret",
    "signing_secret",
];

/// A bot's decrypted credentials by field name.
pub type Credentials = BTreeMap<String, Secret>;

/// Builds connectors of one platform.
pub trait ConnectorFactory: Send + Sync + 'static {
    fn platform(&self) -> Platform;

    /// Checks a bot's settings and credentials; returns `(key, problem)` pairs.
    fn validate(
        &self,
        settings: &serde_json::Map<String, serde_json::Value>,
        credentials: &Credentials,
    ) -> Vec<(String, String)>;

    /// Refuses content this platform cannot carry, saying why (answered as 422).
    fn check_content(&self, content: &Content, options: &SendOptions) -> Result<(), String>;

    /// The platform's customer-service window for this content (WhatsApp: 24 h for anything
    /// but a template); `None` when the platform has none.
    fn reply_window(&self, content: &Content) -> Option<std::time::Duration> {
        let _ = content;
        None
    }

    /// What a chat id the bot never saw is, for a send to `{"chat_id"}` (Telegram: negative
    /// ids are groups and channels); default direct.
    fn chat_kind(&self, chat_id: &str) -> ConversationKind {
        let _ = chat_id;
        ConversationKind::Direct
    }

    /// Normalizes a phone number a message is addressed to (`to.phone`; on SMS also
    /// `to.chat_id`) for this bot; the error names the number. Default: E.164 as written.
    fn normalize_phone(
        &self,
        settings: &serde_json::Map<String, serde_json::Value>,
        raw: &str,
    ) -> Result<String, String> {
        let _ = settings;
        crate::model::normalize_e164(raw)
    }

    /// The segments a message will be billed as (SMS), or `None`; an error (answered 422)
    /// when it needs more than the bot allows.
    fn segments(
        &self,
        settings: &serde_json::Map<String, serde_json::Value>,
        content: &Content,
    ) -> Result<Option<u32>, String> {
        let _ = (settings, content);
        Ok(None)
    }

    /// The platform's default limits, before the bot's `rate_limit` overrides.
    fn rate_policy(&self, settings: &serde_json::Map<String, serde_json::Value>) -> RatePolicy;

    /// A connector for the bot. `public_url` is the gateway's `server.public_url` (callback
    /// URLs given to the platform, webhook signatures over the URL).
    fn build(
        &self,
        bot: &Bot,
        credentials: Credentials,
        public_url: Option<&str>,
    ) -> Result<Arc<dyn Connector>, ConnectorError>;
}

/// One running bot on one platform.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// The inbound loop. Calls `ctx.health.running()` once it receives (poll loop started,
    /// session ready, webhook registered): until then the bot is `starting`. Returns
    /// `Ok(())` once `ctx.cancel` fires; an `Err` makes the supervisor restart it (or stop for
    /// good when the error is fatal for the bot). Webhook-only connectors register what they
    /// need, report running and wait for cancellation.
    async fn run(&self, ctx: RunContext) -> Result<(), ConnectorError>;

    /// Sends one message. Called by the dispatcher after the pacer granted a slot.
    async fn send(&self, request: &OutboundRequest) -> Result<SendReceipt, ConnectorError>;

    /// A cheap health check (getMe, phone number lookup, balance...). An
    /// `InsufficientFunds` answer pauses the bot's sending; `Ok` after it resumes sending.
    async fn probe(&self) -> Result<(), ConnectorError>;

    /// The account's balance, from a cache at most an hour old unless `fresh`.
    async fn balance(&self, fresh: bool) -> Result<Balance, ConnectorError> {
        let _ = fresh;
        Err(ConnectorError::permanent(
            "this platform has no account balance",
        ))
    }

    /// The pacer for this bot; by default the policy enforced with governor.
    fn pacer(&self, policy: RatePolicy) -> Arc<dyn Pacer> {
        Arc::new(GovernorPacer::new(policy))
    }

    /// Downloads a media item a message carries (`file_id` of inbound media) through the
    /// bot's credentials, which never reach the API client.
    async fn fetch_media(&self, content: &Content) -> Result<MediaDownload, ConnectorError> {
        let _ = content;
        Err(ConnectorError::permanent(
            "this platform offers no media download",
        ))
    }

    /// A platform webhook for this bot (`/webhooks/{platform}/{bot_id}/...`). Verify before
    /// parsing, deliver what it carried to `sink`, answer only after the sink returned.
    async fn handle_webhook(
        &self,
        request: WebhookRequest,
        sink: &dyn InboundSink,
    ) -> WebhookResponse {
        let _ = (request, sink);
        WebhookResponse::text(404, "this bot takes no webhooks")
    }
}

/// How a caller wants a message sent.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// A text over the platform's length limit may be sent as several messages (default);
    /// when false it is refused.
    pub allow_split: bool,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions { allow_split: true }
    }
}

/// A media download, streamed from the platform.
pub struct MediaDownload {
    pub content_type: String,
    pub file_name: Option<String>,
    pub length: Option<u64>,
    pub body: futures::stream::BoxStream<'static, Result<Vec<u8>, ConnectorError>>,
}

/// What a connector's `run` gets from the gateway.
#[derive(Clone)]
pub struct RunContext {
    pub bot: Bot,
    /// The gateway's `server.public_url` (webhook registration).
    pub public_url: Option<String>,
    pub inbound: Arc<dyn InboundSink>,
    pub cursors: Arc<dyn CursorStore>,
    pub health: Arc<dyn HealthReporter>,
    pub cancel: CancellationToken,
}

/// Where normalized inbound events go. Returns once they are durably stored.
#[async_trait]
pub trait InboundSink: Send + Sync {
    async fn deliver(
        &self,
        bot_id: &str,
        events: Vec<InboundEvent>,
    ) -> Result<Vec<IngestOutcome>, StoreError>;
}

/// Small durable per-bot values (a polling offset, a gateway session id).
#[async_trait]
pub trait CursorStore: Send + Sync {
    async fn get(&self, bot_id: &str, name: &str) -> Result<Option<String>, StoreError>;
    async fn set(&self, bot_id: &str, name: &str, value: &str) -> Result<(), StoreError>;
}

/// A connector's report on its own health between probes.
pub trait HealthReporter: Send + Sync {
    /// The connector is connected and working (e.g. the gateway session is READY).
    fn running(&self);
    /// Working but impaired (reconnecting, slow); the reason is shown in the API.
    fn degraded(&self, reason: &str);
}

/// The chat a message belongs to, as the platform names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRef {
    pub external_chat_id: String,
    pub kind: ConversationKind,
    pub title: Option<String>,
}

/// The person who sent an inbound message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SenderRef {
    pub external_id: String,
    pub name: Option<String>,
    /// E.164 phone when the platform identifies people by phone (SMS, WhatsApp).
    pub phone: Option<String>,
}

/// One normalized inbound event.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // moved once into a batch; boxing buys nothing
pub enum InboundEvent {
    Message(InboundMessage),
    Status(StatusReport),
    /// The sender edited an earlier message.
    Edit(EditReport),
    /// The bot joined a chat, or a chat changed its title.
    Chat(ChatRef),
}

/// A new version of an earlier inbound message, matched by chat and platform message id.
#[derive(Debug, Clone)]
pub struct EditReport {
    /// Stable id of this edit (a redelivery carries the same one).
    pub dedup_key: String,
    pub chat_external_id: String,
    pub external_id: String,
    pub content: Content,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct InboundMessage {
    /// Stable id of this platform event; a redelivery carries the same one and is stored once.
    pub dedup_key: String,
    pub chat: ChatRef,
    pub sender: Option<SenderRef>,
    pub external_id: Option<String>,
    pub content: Content,
    /// The platform id of the message this one replies to.
    pub reply_to_external_id: Option<String>,
    pub at: DateTime<Utc>,
}

/// A delivery report for an outbound message, matched by its platform id.
#[derive(Debug, Clone)]
pub struct StatusReport {
    pub external_id: String,
    pub status: MessageStatus,
    pub at: DateTime<Utc>,
    pub error: Option<MessageError>,
}

/// What storing an inbound event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored; the id of the new message.
    Stored(String),
    /// Already stored earlier (a redelivery); the id of the first copy.
    Duplicate(String),
    /// A status report was applied to this message.
    StatusApplied(String),
    /// A status report that changed nothing (already known, or not newer).
    StatusIgnored,
    /// A status report for a platform id we do not know (kept for when it appears).
    StatusUnmatched,
}

/// Everything a connector needs to send one message.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    pub message: Message,
    pub chat: ChatRef,
    /// Platform id of the message being replied to.
    pub reply_to_external_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendReceipt {
    pub external_id: String,
    /// What the send cost, as the platform reported it (SMS providers).
    pub cost: Option<String>,
}

impl SendReceipt {
    pub fn new(external_id: impl Into<String>) -> Self {
        SendReceipt {
            external_id: external_id.into(),
            cost: None,
        }
    }
}

/// An account balance as the platform reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Balance {
    /// The amount as the platform wrote it (`"1785.50"`).
    pub amount: String,
    /// ISO 4217 code, or the platform's unit (`"credits"`).
    pub currency: String,
    /// When it was read from the platform.
    pub checked_at: DateTime<Utc>,
}

/// A platform's HTTP request to `/webhooks/{platform}/{bot_id}[/rest]`, raw bytes intact.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    pub method: String,
    /// What follows `/webhooks/{platform}/{bot_id}`, e.g. `/inbound`, or empty.
    pub subpath: String,
    pub query: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl WebhookRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl WebhookResponse {
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        WebhookResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        WebhookResponse {
            status,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
        }
    }
}

/// The factories compiled into this build, by platform.
#[derive(Clone, Default)]
pub struct ConnectorRegistry {
    factories: BTreeMap<&'static str, Arc<dyn ConnectorFactory>>,
}

impl ConnectorRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, factory: Arc<dyn ConnectorFactory>) -> &mut Self {
        self.factories.insert(factory.platform().as_str(), factory);
        self
    }

    pub fn get(&self, platform: Platform) -> Option<&Arc<dyn ConnectorFactory>> {
        self.factories.get(platform.as_str())
    }

    pub fn platforms(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories.keys().copied()
    }
}
