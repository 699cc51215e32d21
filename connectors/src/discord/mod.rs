//! Discord connector: a twilight gateway session for inbound, REST for outbound, HTTP
//! interactions through the ingress.
//!
//! Settings: `api_base` (default `https://discord.com`), `command_ack`, `intents` (names, default
//! `["guild_messages", "direct_messages", "message_content"]`), `application_public_key` (hex,
//! for `/webhooks/discord/{bot}/interactions`). Credential: `token`.
//!
//! - `gateway`: the session. twilight-gateway heartbeats (with the first beat jittered),
//!   detects zombie connections, resumes after drops and op 7, re-identifies only when the
//!   session is invalid; identifies wait in a queue sized by `GET /gateway/bot`. The session
//!   (id, sequence, resume URL) is persisted as the bot's `discord.session` cursor once the
//!   events up to that sequence are stored, so a restart resumes instead of identifying.
//!   Close codes 4004 (token) and 4010-4014 (shard, version, intents) end the bot in `failed`.
//! - `rest`: every REST call. twilight-http builds and validates the requests; they are sent
//!   here, so that every response's `X-RateLimit-*` headers feed the [`ratelimit`] pacer and a
//!   429 reaches the dispatcher (twilight-http would resend it at once).
//! - `inbound`: MESSAGE_CREATE / MESSAGE_UPDATE / INTERACTION_CREATE to inbound events. Guild
//!   channels and threads are `group` conversations, DMs `direct`. The bot's own messages are
//!   ignored.
//! - `outbound`: content to `POST /channels/{id}/messages`; texts over 2,000 characters split
//!   (or 422 with `allow_split: false`), media by URL as an image embed or a link Discord
//!   unfurls, buttons as components, replies as message references. Mentions of users only
//!   (`@everyone`, `@here` and roles in a text stay inert).
//! - `interactions`: Ed25519 over timestamp + raw body, stale timestamps refused, PING/PONG,
//!   commands and button presses stored, then answered (`command_ack`, ephemeral; buttons silently).

mod gateway;
mod inbound;
mod interactions;
mod outbound;
mod ratelimit;
mod rest;

pub use interactions::sign_interaction;
pub use ratelimit::DiscordPacer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ed25519_dalek::VerifyingKey;
use serde_json::{Map, Value};
use switchboard_core::connector::*;
use switchboard_core::error::ConnectorError;
use switchboard_core::model::{Bot, Content, ConversationKind, MediaKind, Platform};
use switchboard_core::rate::{Pacer, Rate, RatePolicy};
use switchboard_core::secret::Secret;

pub const DEFAULT_API_BASE: &str = "https://discord.com";
/// Discord's limit on a message's content, in characters.
pub const MAX_TEXT: usize = 2000;
/// Buttons per message (5 action rows of 5), characters per label and per custom id.
pub const MAX_BUTTONS: usize = 25;
pub const MAX_BUTTON_LABEL: usize = 80;
pub const MAX_CUSTOM_ID: usize = 100;
/// The global REST limit Discord documents is 50 requests/s per bot; we stay under it by a
/// margin so network jitter cannot push 51 requests into one of Discord's one-second windows.
pub const DEFAULT_GLOBAL_RATE: u32 = 48;

/// Gateway intents by the names the config uses.
pub const INTENTS: &[(&str, u64)] = &[
    ("guilds", 1 << 0),
    ("guild_members", 1 << 1),
    ("guild_messages", 1 << 9),
    ("guild_message_reactions", 1 << 10),
    ("direct_messages", 1 << 12),
    ("direct_message_reactions", 1 << 13),
    ("message_content", 1 << 15),
];
/// What a user sees at once after a slash command, only them (ephemeral).
pub const DEFAULT_COMMAND_ACK: &str = "Received. The answer follows in this channel.";
const DEFAULT_INTENTS: &[&str] = &["guild_messages", "direct_messages", "message_content"];

/// Builds Discord connectors; one HTTP client (connection pool) for all bots.
pub struct DiscordFactory {
    http: reqwest::Client,
    /// twilight-http, as the request builder of every bot.
    builder: std::sync::OnceLock<Arc<twilight_http::Client>>,
    options: crate::ConnectorOptions,
}

impl DiscordFactory {
    pub fn new(options: crate::ConnectorOptions) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()
            .unwrap_or_default();
        DiscordFactory {
            http,
            builder: std::sync::OnceLock::new(),
            options,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `{api_base}/api/v10`
    pub api: String,
    pub intents: u64,
    pub public_key: Option<VerifyingKey>,
    /// The ephemeral answer a slash command gets at once (the reply follows as a message).
    pub command_ack: String,
}

fn settings(map: &Map<String, Value>) -> Result<Settings, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let base = map
        .get("api_base")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_API_BASE);
    if !(base.starts_with("https://") || base.starts_with("http://")) {
        problems.push((
            "api_base".into(),
            format!("must be an http(s) URL, got {base:?}"),
        ));
    }
    let mut intents = 0;
    match map.get("intents") {
        None => {
            for name in DEFAULT_INTENTS {
                intents |= intent_bit(name).unwrap_or(0);
            }
        }
        Some(Value::Array(names)) if !names.is_empty() => {
            for name in names {
                match name.as_str().and_then(intent_bit) {
                    Some(bit) => intents |= bit,
                    None => problems.push((
                        "intents".into(),
                        format!(
                            "unknown intent {name}; known: {}",
                            INTENTS
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )),
                }
            }
        }
        Some(v) => problems.push((
            "intents".into(),
            format!("must be a non-empty list of intent names, got {v}"),
        )),
    }
    let public_key = match map.get("application_public_key") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_str().and_then(parse_public_key) {
            Some(key) => Some(key),
            None => {
                problems.push((
                    "application_public_key".into(),
                    "must be the application's Ed25519 public key: 64 hex digits (developer portal, General Information)".into(),
                ));
                None
            }
        },
    };
    let command_ack = match map.get("command_ack") {
        None => DEFAULT_COMMAND_ACK.to_owned(),
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= MAX_TEXT => {
            s.clone()
        }
        Some(v) => {
            problems.push((
                "command_ack".into(),
                format!("must be a text of 1 to {MAX_TEXT} characters, got {v}"),
            ));
            String::new()
        }
    };
    if problems.is_empty() {
        Ok(Settings {
            api: format!("{}/api/v10", base.trim_end_matches('/')),
            intents,
            public_key,
            command_ack,
        })
    } else {
        Err(problems)
    }
}

fn intent_bit(name: &str) -> Option<u64> {
    INTENTS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

fn parse_public_key(hex_key: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim()).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// Discord ids are snowflakes: decimal u64, never 0.
pub(crate) fn snowflake(id: &str) -> Option<u64> {
    id.parse::<u64>().ok().filter(|n| *n != 0)
}

impl ConnectorFactory for DiscordFactory {
    fn platform(&self) -> Platform {
        Platform::Discord
    }

    fn validate(
        &self,
        map: &Map<String, Value>,
        credentials: &Credentials,
    ) -> Vec<(String, String)> {
        let mut problems = settings(map).err().unwrap_or_default();
        match credentials.get("token") {
            None => problems.push((
                "token".into(),
                "is required: the bot token (developer portal, Bot)".into(),
            )),
            Some(t) if t.expose().trim().is_empty() || t.expose().contains(char::is_whitespace) => {
                problems.push(("token".into(), "must be a bot token without spaces".into()))
            }
            Some(_) => {}
        }
        problems
    }

    fn check_content(&self, content: &Content, options: &SendOptions) -> Result<(), String> {
        outbound::check(content, options)
    }

    /// A channel id says nothing about its kind; a bot addressed by id is most often posting
    /// to a guild channel.
    fn chat_kind(&self, _chat_id: &str) -> ConversationKind {
        ConversationKind::Group
    }

    fn rate_policy(&self, _map: &Map<String, Value>) -> RatePolicy {
        RatePolicy {
            per_bot: Some(Rate {
                burst: 1,
                ..Rate::per_second(DEFAULT_GLOBAL_RATE)
            }),
            // Per-channel limits are learned from the X-RateLimit-* headers (DiscordPacer).
            per_chat: None,
            per_group: None,
            default_retry_after: Duration::from_secs(1),
        }
    }

    fn build(
        &self,
        bot: &Bot,
        credentials: Credentials,
        _public_url: Option<&str>,
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        let settings = settings(&bot.settings).map_err(|p| ConnectorError::config(&p))?;
        let token = credentials
            .get("token")
            .cloned()
            .ok_or_else(|| ConnectorError::Config("token: is required".into()))?;
        let builder = self
            .builder
            .get_or_init(|| Arc::new(twilight_http::Client::builder().ratelimiter(None).build()))
            .clone();
        let rest = rest::Rest::new(
            self.http.clone(),
            builder,
            settings.api.clone(),
            token.clone(),
        );
        Ok(Arc::new(DiscordConnector {
            bot_id: bot.id.clone(),
            settings,
            token,
            rest: Arc::new(rest),
            queue: twilight_gateway::queue::InMemoryQueue::default(),
            own_user_id: Mutex::new(None),
            session: Mutex::new(None),
            split: crate::SplitProgress::default(),
            options: self.options.clone(),
        }))
    }
}

pub struct DiscordConnector {
    bot_id: String,
    settings: Settings,
    token: Secret,
    rest: Arc<rest::Rest>,
    /// Identifies of every run of this bot wait here (`max_concurrency` per 5 s and the
    /// daily session starts, as `GET /gateway/bot` reports them).
    queue: twilight_gateway::queue::InMemoryQueue,
    /// The bot's own user id (from READY): its own messages are not inbound.
    own_user_id: Mutex<Option<String>>,
    /// The gateway session to resume, as far as its events are stored.
    session: Mutex<Option<gateway::SavedSession>>,
    split: crate::SplitProgress,
    options: crate::ConnectorOptions,
}

impl std::fmt::Debug for DiscordConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DiscordConnector({})", self.bot_id)
    }
}

impl DiscordConnector {
    /// The bot's own user id, once READY (or a saved session) named it.
    pub(crate) fn known_user_id(&self) -> Option<String> {
        self.own_user_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_user_id(&self, id: &str) {
        let mut own = self.own_user_id.lock().unwrap_or_else(|e| e.into_inner());
        if own.as_deref() != Some(id) {
            *own = Some(id.to_owned());
        }
    }
}

#[async_trait]
impl Connector for DiscordConnector {
    async fn run(&self, ctx: RunContext) -> Result<(), ConnectorError> {
        gateway::run(self, ctx).await
    }

    async fn send(&self, request: &OutboundRequest) -> Result<SendReceipt, ConnectorError> {
        outbound::send(self, request).await
    }

    /// `GET /gateway/bot`: the token is accepted (401 otherwise) and REST answers.
    async fn probe(&self) -> Result<(), ConnectorError> {
        self.rest.gateway_bot().await.map(|_| ())
    }

    fn pacer(&self, policy: RatePolicy) -> Arc<dyn Pacer> {
        self.rest.pacer(policy)
    }

    async fn fetch_media(&self, content: &Content) -> Result<MediaDownload, ConnectorError> {
        match content {
            Content::Media {
                url: Some(url),
                filename,
                mime_type,
                kind,
                ..
            } => {
                // An attachment on the configured platform's own host (a self-hosted or
                // test Discord on a private address) is the platform's, not a URL to guard.
                let own_host = |u: &str| {
                    url::Url::parse(u)
                        .ok()
                        .map(|u| (u.host_str().map(str::to_owned), u.port_or_known_default()))
                };
                let options =
                    if own_host(url).is_some_and(|h| Some(h) == own_host(&self.settings.api)) {
                        crate::ConnectorOptions {
                            allow_private_media: true,
                            ..self.options.clone()
                        }
                    } else {
                        self.options.clone()
                    };
                let fetched = crate::fetch_media(url, &options).await?;
                let content_type = mime_type.clone().unwrap_or_else(|| {
                    match kind {
                        MediaKind::Image => "image/*",
                        MediaKind::Video => "video/*",
                        MediaKind::Audio => "audio/*",
                        MediaKind::Document => "application/octet-stream",
                    }
                    .to_owned()
                });
                let length = fetched.bytes.len() as u64;
                Ok(MediaDownload {
                    content_type,
                    file_name: filename.clone().or(Some(fetched.file_name)),
                    length: Some(length),
                    body: Box::pin(futures::stream::once(async move { Ok(fetched.bytes) })),
                })
            }
            _ => Err(ConnectorError::permanent(
                "the message carries no Discord attachment",
            )),
        }
    }

    async fn handle_webhook(
        &self,
        request: WebhookRequest,
        sink: &dyn InboundSink,
    ) -> WebhookResponse {
        interactions::handle(self, request, sink).await
    }
}
