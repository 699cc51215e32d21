//! Telegram Bot API connector (teloxide-core for the requests and types; pacing is ours).
//!
//! Settings: `mode` (`polling`, default, or `webhook`), `api_base` (default
//! `https://api.telegram.org`), `poll_timeout_s` (long-poll seconds, default 25),
//! `webhook_url` (default `{server.public_url}/webhooks/telegram/{bot_id}`), `allowed_updates`,
//! `upload_media` (fetch media URLs here and upload the bytes, for URLs Telegram cannot reach;
//! guarded against SSRF).
//! Credentials: `token`; `webhook_secret` in webhook mode.
//!
//! Policy: 30/s per bot, 1/s per chat, 20/min per group chat, spread evenly (no bursts), so the
//! platform's own tolerance for short bursts is never needed. Probe: getMe.

mod inbound;
mod outbound;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use switchboard_core::connector::*;
use switchboard_core::error::ConnectorError;
use switchboard_core::model::{Bot, Content, ConversationKind, Platform};
use switchboard_core::rate::{Rate, RatePolicy};
use switchboard_core::secret::Secret;
use teloxide_core::Bot as TgBot;
use teloxide_core::requests::Requester;

pub const DEFAULT_API_BASE: &str = "https://api.telegram.org";
/// Telegram's limit on a message text, in characters.
pub const MAX_TEXT: usize = 4096;
/// Telegram's limit on a caption, in characters.
pub const MAX_CAPTION: usize = 1024;
const DEFAULT_POLL_TIMEOUT_S: u64 = 25;
const ALLOWED_UPDATES: &[&str] = &[
    "message",
    "edited_message",
    "channel_post",
    "callback_query",
    "my_chat_member",
];

/// Builds Telegram connectors; shares one HTTP client (connection pool) among all bots.
#[derive(Default)]
pub struct TelegramFactory {
    client: OnceLock<reqwest012::Client>,
    options: crate::ConnectorOptions,
}

impl TelegramFactory {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_options(options: crate::ConnectorOptions) -> Self {
        TelegramFactory {
            client: OnceLock::new(),
            options,
        }
    }

    fn client(&self) -> reqwest012::Client {
        self.client
            .get_or_init(|| {
                // The total timeout must exceed the longest long poll (`poll_timeout_s` ≤ 50).
                teloxide_core::net::default_reqwest_settings()
                    .timeout(Duration::from_secs(65))
                    .build()
                    .unwrap_or_default()
            })
            .clone()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Polling,
    Webhook,
}

struct Settings {
    mode: Mode,
    api_base: url::Url,
    poll_timeout_s: u64,
    webhook_url: Option<String>,
    allowed_updates: Vec<String>,
    /// Fetch media URLs ourselves and upload the bytes (for URLs Telegram cannot reach).
    upload_media: bool,
}

fn settings(map: &Map<String, Value>) -> Result<Settings, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let mode = match map.get("mode").map(|v| v.as_str()) {
        None | Some(Some("polling")) => Mode::Polling,
        Some(Some("webhook")) => Mode::Webhook,
        Some(other) => {
            problems.push((
                "mode".to_string(),
                format!("must be \"polling\" or \"webhook\", got {other:?}"),
            ));
            Mode::Polling
        }
    };
    let base = map
        .get("api_base")
        .and_then(|v| v.as_str())
        .unwrap_or(DEFAULT_API_BASE);
    let api_base = match url::Url::parse(base) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => u,
        _ => {
            problems.push((
                "api_base".into(),
                format!("must be an http(s) URL, got {base:?}"),
            ));
            url::Url::parse(DEFAULT_API_BASE).expect("constant URL parses")
        }
    };
    let poll_timeout_s = match map.get("poll_timeout_s") {
        None => DEFAULT_POLL_TIMEOUT_S,
        Some(v) => match v.as_u64() {
            Some(n) if n <= 50 => n,
            _ => {
                problems.push((
                    "poll_timeout_s".into(),
                    format!("must be an integer from 0 to 50, got {v}"),
                ));
                DEFAULT_POLL_TIMEOUT_S
            }
        },
    };
    let webhook_url = match map.get("webhook_url") {
        None => None,
        Some(Value::String(u)) if u.starts_with("https://") || u.starts_with("http://") => {
            Some(u.clone())
        }
        Some(v) => {
            problems.push((
                "webhook_url".into(),
                format!("must be an http(s) URL, got {v}"),
            ));
            None
        }
    };
    let allowed_updates = match map.get("allowed_updates") {
        None => ALLOWED_UPDATES.iter().map(|s| s.to_string()).collect(),
        Some(Value::Array(a)) if a.iter().all(|v| v.is_string()) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(v) => {
            problems.push((
                "allowed_updates".into(),
                format!("must be a list of update types, got {v}"),
            ));
            Vec::new()
        }
    };
    let upload_media = match map.get("upload_media") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            problems.push((
                "upload_media".into(),
                format!("must be true or false, got {v}"),
            ));
            false
        }
    };
    if problems.is_empty() {
        Ok(Settings {
            mode,
            api_base,
            poll_timeout_s,
            webhook_url,
            allowed_updates,
            upload_media,
        })
    } else {
        Err(problems)
    }
}

/// A bot token looks like `<bot id>:<secret>`.
fn token_looks_valid(t: &str) -> bool {
    match t.split_once(':') {
        Some((id, rest)) => {
            !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty()
        }
        None => false,
    }
}

impl ConnectorFactory for TelegramFactory {
    fn platform(&self) -> Platform {
        Platform::Telegram
    }

    fn validate(
        &self,
        map: &Map<String, Value>,
        credentials: &Credentials,
    ) -> Vec<(String, String)> {
        let mut problems = match settings(map) {
            Ok(s) => {
                let mut p = Vec::new();
                if s.mode == Mode::Webhook && !credentials.contains_key("webhook_secret") {
                    p.push((
                        "webhook_secret".into(),
                        "is required in webhook mode".into(),
                    ));
                }
                p
            }
            Err(p) => p,
        };
        match credentials.get("token") {
            None => problems.push((
                "token".into(),
                "is required (the token from @BotFather)".into(),
            )),
            Some(t) if !token_looks_valid(t.expose()) => problems.push((
                "token".into(),
                "does not look like a bot token (<digits>:<secret>)".into(),
            )),
            Some(_) => {}
        }
        if let Some(s) = credentials.get("webhook_secret") {
            let v = s.expose();
            if v.is_empty()
                || v.len() > 256
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                problems.push((
                    "webhook_secret".into(),
                    "must be 1-256 characters of A-Z, a-z, 0-9, _ and -".into(),
                ));
            }
        }
        problems
    }

    fn check_content(&self, content: &Content, options: &SendOptions) -> Result<(), String> {
        match content {
            Content::Text { text } if !options.allow_split && text.chars().count() > MAX_TEXT => {
                Err(format!(
                    "the text has {} characters, over Telegram's {MAX_TEXT}, and allow_split is false",
                    text.chars().count()
                ))
            }
            Content::Media {
                caption: Some(c), ..
            } if c.chars().count() > MAX_CAPTION => Err(format!(
                "the caption has {} characters, over Telegram's {MAX_CAPTION}",
                c.chars().count()
            )),
            Content::Buttons { text, .. } if text.chars().count() > MAX_TEXT => Err(format!(
                "the buttons text is over Telegram's {MAX_TEXT} characters"
            )),
            Content::Buttons { buttons, .. } if buttons.iter().any(|b| b.id.len() > 64) => {
                Err("a button id is over Telegram's 64-byte callback_data limit".into())
            }
            Content::Template { .. } => {
                Err("templates are a WhatsApp feature; send text, media or buttons".into())
            }
            _ => Ok(()),
        }
    }

    /// Telegram's group, supergroup and channel ids are negative; users' are positive.
    fn chat_kind(&self, chat_id: &str) -> ConversationKind {
        if chat_id.starts_with('-') {
            ConversationKind::Group
        } else {
            ConversationKind::Direct
        }
    }

    fn rate_policy(&self, _settings: &Map<String, Value>) -> RatePolicy {
        RatePolicy {
            per_bot: Some(Rate {
                burst: 1,
                ..Rate::per_second(30)
            }),
            per_chat: Some(Rate {
                burst: 1,
                ..Rate::per_second(1)
            }),
            per_group: Some(Rate {
                burst: 1,
                ..Rate::per_minute(20)
            }),
            default_retry_after: Duration::from_secs(1),
        }
    }

    fn build(
        &self,
        bot: &Bot,
        credentials: Credentials,
        _public_url: Option<&str>,
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        let s = settings(&bot.settings).map_err(|p| ConnectorError::config(&p))?;
        let token = credentials
            .get("token")
            .ok_or_else(|| ConnectorError::Config("token: is required".into()))?
            .clone();
        let api = TgBot::with_client(token.expose(), self.client()).set_api_url(s.api_base.clone());
        Ok(Arc::new(TelegramConnector {
            bot_id: bot.id.clone(),
            api,
            token,
            webhook_secret: credentials.get("webhook_secret").cloned(),
            settings: s,
            split: crate::SplitProgress::default(),
            options: self.options.clone(),
        }))
    }
}

pub struct TelegramConnector {
    bot_id: String,
    api: TgBot,
    token: Secret,
    webhook_secret: Option<Secret>,
    settings: Settings,
    split: crate::SplitProgress,
    options: crate::ConnectorOptions,
}

#[async_trait]
impl Connector for TelegramConnector {
    async fn run(&self, ctx: RunContext) -> Result<(), ConnectorError> {
        match self.settings.mode {
            Mode::Polling => self.poll(ctx).await,
            Mode::Webhook => self.register_webhook(ctx).await,
        }
    }

    async fn send(&self, request: &OutboundRequest) -> Result<SendReceipt, ConnectorError> {
        let upload = self.settings.upload_media.then_some(&self.options);
        outbound::send(&self.api, &self.split, upload, request).await
    }

    async fn probe(&self) -> Result<(), ConnectorError> {
        self.api
            .get_me()
            .await
            .map(|_| ())
            .map_err(outbound::classify)
    }

    async fn fetch_media(&self, content: &Content) -> Result<MediaDownload, ConnectorError> {
        outbound::fetch_media(&self.api, content).await
    }

    async fn handle_webhook(
        &self,
        request: WebhookRequest,
        sink: &dyn InboundSink,
    ) -> WebhookResponse {
        self.webhook(request, sink).await
    }
}

impl std::fmt::Debug for TelegramConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TelegramConnector({}, token={})",
            self.bot_id, self.token
        )
    }
}
