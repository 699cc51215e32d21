//! WhatsApp Cloud API connector (Meta Graph API over reqwest).
//!
//! Settings: `phone_number_id` (required), `api_base` (default `https://graph.facebook.com`),
//! `api_version` (default `v21.0`), `throughput_per_second` (the number's tier, default 80).
//! Credentials: `access_token`, `app_secret` (webhook signatures), `verify_token` (webhook
//! verification handshake).
//!
//! Conversations are keyed by the contact's number in E.164 (`+` and the wa_id).
//! Inbound is webhook-only: `GET /webhooks/whatsapp/{bot}` answers Meta's handshake,
//! `POST` verifies `X-Hub-Signature-256` over the raw bytes before parsing. Policy: the
//! number's throughput spread evenly, plus the pair rate per recipient (1 per 6 s, bursts of
//! up to 40 of the 45 Meta lends). Free-form messages need the contact to have written in the
//! last 24 h; templates do not. Probe: the phone number object.

mod inbound;
mod outbound;

pub use inbound::{sign, signature_valid};

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use switchboard_core::connector::*;
use switchboard_core::error::ConnectorError;
use switchboard_core::model::{Bot, Content, Platform};
use switchboard_core::rate::{Rate, RatePolicy};
use switchboard_core::secret::Secret;

pub const DEFAULT_API_BASE: &str = "https://graph.facebook.com";
pub const DEFAULT_API_VERSION: &str = "v21.0";
/// Meta's limit on a text body, in characters.
pub const MAX_TEXT: usize = 4096;
pub const MAX_CAPTION: usize = 1024;
/// Reply buttons per interactive message, and characters per button title.
pub const MAX_BUTTONS: usize = 3;
pub const MAX_BUTTON_TITLE: usize = 20;
/// The customer-service window.
pub const REPLY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Builds WhatsApp connectors; one HTTP client (connection pool) for all numbers.
#[derive(Default)]
pub struct WhatsAppFactory {
    client: OnceLock<reqwest::Client>,
}

impl WhatsAppFactory {
    pub fn new() -> Self {
        Self::default()
    }

    fn client(&self) -> reqwest::Client {
        self.client
            .get_or_init(|| {
                reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(30))
                    .pool_max_idle_per_host(64)
                    .build()
                    .unwrap_or_default()
            })
            .clone()
    }
}

struct Settings {
    phone_number_id: String,
    /// `{api_base}/{api_version}`
    graph: String,
    throughput: u32,
}

fn settings(map: &Map<String, Value>) -> Result<Settings, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let phone_number_id = match map.get("phone_number_id") {
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.clone()
        }
        Some(Value::Number(n)) => n.to_string(),
        Some(v) => {
            problems.push((
                "phone_number_id".into(),
                format!("must be the numeric id of the business number, got {v}"),
            ));
            String::new()
        }
        None => {
            problems.push((
                "phone_number_id".into(),
                "is required (WhatsApp Manager, API Setup)".into(),
            ));
            String::new()
        }
    };
    let base = map
        .get("api_base")
        .and_then(|v| v.as_str())
        .unwrap_or(DEFAULT_API_BASE);
    if !(base.starts_with("https://") || base.starts_with("http://")) {
        problems.push((
            "api_base".into(),
            format!("must be an http(s) URL, got {base:?}"),
        ));
    }
    let version = map
        .get("api_version")
        .and_then(|v| v.as_str())
        .unwrap_or(DEFAULT_API_VERSION);
    let version_ok = version
        .strip_prefix('v')
        .and_then(|v| v.split_once('.'))
        .is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && (a.to_string() + b).bytes().all(|c| c.is_ascii_digit())
        });
    if !version_ok {
        problems.push((
            "api_version".into(),
            format!("must look like \"v21.0\", got {version:?}"),
        ));
    }
    let throughput = match map.get("throughput_per_second") {
        None => 80,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=10_000).contains(&n) => n as u32,
            _ => {
                problems.push((
                    "throughput_per_second".into(),
                    format!("must be 1 to 10000, got {v}"),
                ));
                80
            }
        },
    };
    if problems.is_empty() {
        Ok(Settings {
            phone_number_id,
            graph: format!("{}/{version}", base.trim_end_matches('/')),
            throughput,
        })
    } else {
        Err(problems)
    }
}

impl ConnectorFactory for WhatsAppFactory {
    fn platform(&self) -> Platform {
        Platform::Whatsapp
    }

    fn validate(
        &self,
        map: &Map<String, Value>,
        credentials: &Credentials,
    ) -> Vec<(String, String)> {
        let mut problems = settings(map).err().unwrap_or_default();
        for (field, why) in [
            ("access_token", "the Graph API token (a system user token)"),
            ("app_secret", "the Meta app secret (webhook signatures)"),
            (
                "verify_token",
                "the token Meta sends in the webhook verification",
            ),
        ] {
            if !credentials.contains_key(field) {
                problems.push((field.into(), format!("is required: {why}")));
            }
        }
        problems
    }

    fn check_content(&self, content: &Content, options: &SendOptions) -> Result<(), String> {
        match content {
            Content::Text { text } if !options.allow_split && text.chars().count() > MAX_TEXT => {
                Err(format!(
                    "the text has {} characters, over WhatsApp's {MAX_TEXT}, and allow_split is false",
                    text.chars().count()
                ))
            }
            Content::Media {
                caption: Some(c), ..
            } if c.chars().count() > MAX_CAPTION => Err(format!(
                "the caption is over WhatsApp's {MAX_CAPTION} characters"
            )),
            Content::Media {
                kind,
                caption: Some(_),
                ..
            } if *kind == switchboard_core::model::MediaKind::Audio => {
                Err("audio messages cannot have a caption on WhatsApp".into())
            }
            Content::Buttons { buttons, .. } if buttons.len() > MAX_BUTTONS => Err(format!(
                "WhatsApp allows at most {MAX_BUTTONS} reply buttons, got {}",
                buttons.len()
            )),
            Content::Buttons { buttons, .. }
                if buttons
                    .iter()
                    .any(|b| b.title.chars().count() > MAX_BUTTON_TITLE) =>
            {
                Err(format!(
                    "a button title is over WhatsApp's {MAX_BUTTON_TITLE} characters"
                ))
            }
            Content::Buttons { buttons, .. } if buttons.iter().any(|b| b.id.len() > 256) => {
                Err("a button id is over WhatsApp's 256 characters".into())
            }
            Content::Buttons { text, .. } if text.chars().count() > 1024 => {
                Err("the buttons text is over WhatsApp's 1024 characters".into())
            }
            _ => Ok(()),
        }
    }

    fn reply_window(&self, content: &Content) -> Option<Duration> {
        match content {
            Content::Template { .. } => None,
            _ => Some(REPLY_WINDOW),
        }
    }

    fn rate_policy(&self, map: &Map<String, Value>) -> RatePolicy {
        let throughput = settings(map).map(|s| s.throughput).unwrap_or(80);
        RatePolicy {
            per_bot: Some(Rate {
                burst: 1,
                ..Rate::per_second(throughput)
            }),
            per_chat: Some(Rate {
                count: 1,
                per: Duration::from_secs(6),
                burst: 40,
            }),
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
        let s = settings(&bot.settings).map_err(|p| ConnectorError::config(&p))?;
        let get = |k: &str| {
            credentials
                .get(k)
                .cloned()
                .ok_or_else(|| ConnectorError::Config(format!("{k}: is required")))
        };
        Ok(Arc::new(WhatsAppConnector {
            bot_id: bot.id.clone(),
            http: self.client(),
            access_token: get("access_token")?,
            app_secret: get("app_secret")?,
            verify_token: get("verify_token")?,
            settings: s,
            split: crate::SplitProgress::default(),
        }))
    }
}

pub struct WhatsAppConnector {
    bot_id: String,
    http: reqwest::Client,
    access_token: Secret,
    app_secret: Secret,
    verify_token: Secret,
    settings: Settings,
    split: crate::SplitProgress,
}

impl std::fmt::Debug for WhatsAppConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WhatsAppConnector({}, number {})",
            self.bot_id, self.settings.phone_number_id
        )
    }
}

#[async_trait]
impl Connector for WhatsAppConnector {
    /// Webhook-only: check the credentials once, then wait. Only a refused token (or a
    /// config error) stops the bot: the webhook works without the Graph API, and a Graph API
    /// that cannot be reached now is reported by the periodic probe and by the sends.
    async fn run(&self, ctx: RunContext) -> Result<(), ConnectorError> {
        let checked = tokio::select! {
            r = self.probe() => r,
            _ = ctx.cancel.cancelled() => return Ok(()),
        };
        match checked {
            Err(e) if e.is_fatal_for_bot() => return Err(e),
            Err(e) => {
                tracing::warn!(bot = %self.bot_id, error = %e, "WhatsApp: the Graph API could not be reached to check the number; receiving anyway");
            }
            Ok(()) => {}
        }
        ctx.health.running();
        ctx.cancel.cancelled().await;
        Ok(())
    }

    async fn send(&self, request: &OutboundRequest) -> Result<SendReceipt, ConnectorError> {
        self.send_message(request).await
    }

    /// `GET /{phone_number_id}`: a refused token is an error; an answer that only says the
    /// node cannot be read (a Graph API or a model without that endpoint, a token scoped to
    /// sending) proves the API is up and says nothing against the token.
    async fn probe(&self) -> Result<(), ConnectorError> {
        let url = format!("{}/{}", self.settings.graph, self.settings.phone_number_id);
        match self.graph_get(&url).await {
            Ok(_) | Err(ConnectorError::Permanent { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn fetch_media(&self, content: &Content) -> Result<MediaDownload, ConnectorError> {
        self.download(content).await
    }

    async fn handle_webhook(
        &self,
        request: WebhookRequest,
        sink: &dyn InboundSink,
    ) -> WebhookResponse {
        self.webhook(request, sink).await
    }
}
