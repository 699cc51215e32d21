//! SMS connector: one bot is one sender (a number, a messaging service or a sender id) at
//! one provider. The provider (`twilio`, `africastalking`, `bulksms`) is a [`Provider`]; adding
//! one is one file implementing it.
//!
//! Settings (all providers): `provider`, `api_base`, `default_region` (ISO code; numbers in
//! national form are read in it), `max_segments` (default 10: a longer text is refused with
//! 422, never truncated), `throughput_per_second` (segments per second, the provider's
//! default), `min_balance` (sending pauses at or below it, default 0). Per provider:
//! - twilio: `account_sid`, `from` or `messaging_service_sid`; credential `auth_token`.
//! - africastalking: `username`, `from` (sender id or short code, optional); credential `api_key`.
//! - bulksms: `username`, `from` (optional); credential `password`.
//!
//! Optional credential `webhook_secret`: providers that do not sign their callbacks
//! (Africa's Talking, BulkSMS) must then add `?secret=<it>` to the callback URLs.
//!
//! Webhooks: `POST /webhooks/sms/{bot}/inbound` (an SMS from a user: contact by phone, then the
//! conversation) and `/status` (delivery reports, matched to the message by the provider's id;
//! a redelivered report changes nothing). Twilio's `X-Twilio-Signature` is checked against
//! `server.public_url` + the path exactly as Twilio was given it.
//!
//! Texts only. The segments (GSM-7 or UCS-2) are computed when the message is queued and
//! stored with it; the cost is stored when the provider reports it. An exhausted balance
//! (Africa's Talking 405, BulkSMS 403 Insufficient Credits, Twilio refusing while the balance
//! is at zero) is `InsufficientFunds`: the gateway pauses the bot's sending until a probe
//! (the balance) says it is back.

mod africastalking;
mod bulksms;
mod segments;
mod twilio;

pub use segments::{Encoding, Segmentation, segment};
pub use twilio::signature as twilio_signature;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Map, Value};
use switchboard_core::connector::*;
use switchboard_core::error::ConnectorError;
use switchboard_core::model::{Bot, Content, ConversationKind, Platform};
use switchboard_core::phone;
use switchboard_core::rate::{GovernorPacer, PaceKey, Pacer, Rate, RatePolicy};
use switchboard_core::secret::Secret;

/// A balance older than this is read again.
const BALANCE_MAX_AGE: Duration = Duration::from_secs(3600);

/// An SMS to send.
pub(crate) struct Outgoing<'a> {
    pub to: &'a str,
    pub body: &'a str,
    pub encoding: Encoding,
    /// Where the provider should report delivery (providers that take it per message).
    pub status_callback: Option<String>,
    /// Our message id (providers that take a reference of ours).
    pub reference: &'a str,
}

/// What the gateway needs from an SMS provider.
#[async_trait]
pub(crate) trait Provider: Send + Sync {
    /// Sends one text; the provider's message id and, when it says, the cost.
    async fn send(&self, sms: &Outgoing<'_>) -> Result<SendReceipt, ConnectorError>;
    /// The account's balance.
    async fn balance(&self) -> Result<Balance, ConnectorError>;
    /// Checks a webhook's signature; `url` is the public URL it was posted to.
    fn verify(&self, request: &WebhookRequest, url: Option<&str>) -> Result<(), String>;
    /// An SMS a user sent.
    fn parse_inbound(&self, request: &WebhookRequest) -> Result<Vec<InboundEvent>, String>;
    /// Delivery reports.
    fn parse_status(&self, request: &WebhookRequest) -> Result<Vec<InboundEvent>, String>;
    /// The answer a stored inbound webhook gets.
    fn inbound_answer(&self) -> WebhookResponse {
        WebhookResponse::text(200, "")
    }
    /// Whether this provider's refusal means the balance may be exhausted (Twilio does not
    /// say so in its error): the connector then reads the balance to tell.
    fn may_be_funds(&self, _error: &ConnectorError) -> bool {
        false
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Twilio,
    AfricasTalking,
    BulkSms,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        match s {
            "twilio" => Some(Kind::Twilio),
            "africastalking" => Some(Kind::AfricasTalking),
            "bulksms" => Some(Kind::BulkSms),
            _ => None,
        }
    }

    fn default_base(self) -> &'static str {
        match self {
            Kind::Twilio => "https://api.twilio.com",
            Kind::AfricasTalking => "https://api.africastalking.com",
            Kind::BulkSms => "https://api.bulksms.com",
        }
    }

    /// Segments per second a sender is allowed by default.
    fn default_throughput(self) -> f64 {
        match self {
            // A US long code: 1 segment per second.
            Kind::Twilio => 1.0,
            Kind::AfricasTalking => 20.0,
            Kind::BulkSms => 10.0,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Twilio => "twilio",
            Kind::AfricasTalking => "africastalking",
            Kind::BulkSms => "bulksms",
        }
    }

    /// Whether the provider signs its webhooks (then `webhook_secret` is not used).
    fn signs_webhooks(self) -> bool {
        self == Kind::Twilio
    }

    fn secret(self) -> &'static str {
        match self {
            Kind::Twilio => "auth_token",
            Kind::AfricasTalking => "api_key",
            Kind::BulkSms => "password",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    kind: Kind,
    pub api_base: String,
    pub region: Option<phonenumber::country::Id>,
    pub max_segments: u32,
    pub throughput: f64,
    pub min_balance: f64,
    pub map: Map<String, Value>,
}

impl Settings {
    pub fn str(&self, key: &str) -> Option<&str> {
        self.map
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }
}

fn settings(map: &Map<String, Value>) -> Result<Settings, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let kind = match map.get("provider").and_then(Value::as_str) {
        Some(p) => Kind::parse(p).unwrap_or_else(|| {
            problems.push((
                "provider".into(),
                format!("must be twilio, africastalking or bulksms, got {p:?}"),
            ));
            Kind::Twilio
        }),
        None => {
            problems.push((
                "provider".into(),
                "is required: twilio, africastalking or bulksms".into(),
            ));
            Kind::Twilio
        }
    };
    let api_base = map
        .get("api_base")
        .and_then(Value::as_str)
        .unwrap_or(kind.default_base())
        .trim_end_matches('/')
        .to_owned();
    if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
        problems.push((
            "api_base".into(),
            format!("must be an http(s) URL, got {api_base:?}"),
        ));
    }
    let region = match map.get("default_region") {
        None => None,
        Some(v) => match v.as_str().and_then(phone::region) {
            Some(r) => Some(r),
            None => {
                problems.push((
                    "default_region".into(),
                    format!("must be an ISO 3166 country code like \"KE\", got {v}"),
                ));
                None
            }
        },
    };
    let mut number = |key: &str, default: f64, min: f64, max: f64| match map.get(key) {
        None => default,
        Some(v) => match v.as_f64() {
            Some(n) if (min..=max).contains(&n) => n,
            _ => {
                problems.push((
                    key.into(),
                    format!("must be a number from {min} to {max}, got {v}"),
                ));
                default
            }
        },
    };
    let max_segments = number("max_segments", 10.0, 1.0, 255.0) as u32;
    let throughput = number(
        "throughput_per_second",
        kind.default_throughput(),
        0.01,
        10_000.0,
    );
    let min_balance = number("min_balance", 0.0, -1e9, 1e9);
    let required: &[&str] = match kind {
        Kind::Twilio => &["account_sid"],
        Kind::AfricasTalking | Kind::BulkSms => &["username"],
    };
    for key in required {
        if map
            .get(*key)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            problems.push((
                (*key).into(),
                format!("is required for {} bots", kind.name()),
            ));
        }
    }
    if kind == Kind::Twilio {
        let from = map.get("from").and_then(Value::as_str);
        let service = map.get("messaging_service_sid").and_then(Value::as_str);
        match (from, service) {
            (None, None) => problems.push((
                "from".into(),
                "is required (or messaging_service_sid) for twilio bots".into(),
            )),
            (Some(f), _) if phone::normalize(f, None).is_err() => problems.push((
                "from".into(),
                format!("must be the sending number in E.164, got {f:?}"),
            )),
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(Settings {
            kind,
            api_base,
            region,
            max_segments,
            throughput,
            min_balance,
            map: map.clone(),
        })
    } else {
        Err(problems)
    }
}

/// Builds SMS connectors; one HTTP client for every bot.
pub struct SmsFactory {
    http: reqwest::Client,
}

impl Default for SmsFactory {
    fn default() -> Self {
        Self::new()
    }
}

impl SmsFactory {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()
            .unwrap_or_default();
        SmsFactory { http }
    }
}

impl ConnectorFactory for SmsFactory {
    fn platform(&self) -> Platform {
        Platform::Sms
    }

    fn validate(
        &self,
        map: &Map<String, Value>,
        credentials: &Credentials,
    ) -> Vec<(String, String)> {
        match settings(map) {
            Err(problems) => problems,
            Ok(s) if !credentials.contains_key(s.kind.secret()) => vec![(
                s.kind.secret().into(),
                format!("is required for {} bots", s.kind.name()),
            )],
            Ok(_) => Vec::new(),
        }
    }

    fn check_content(&self, content: &Content, _options: &SendOptions) -> Result<(), String> {
        match content {
            Content::Text { .. } => Ok(()),
            other => Err(format!("SMS carries text only, not {}", other.type_name())),
        }
    }

    fn normalize_phone(&self, map: &Map<String, Value>, raw: &str) -> Result<String, String> {
        let region = map
            .get("default_region")
            .and_then(Value::as_str)
            .and_then(phone::region);
        phone::normalize(raw, region)
    }

    fn segments(&self, map: &Map<String, Value>, content: &Content) -> Result<Option<u32>, String> {
        let Content::Text { text } = content else {
            return Ok(None);
        };
        let (max, kind) = settings(map)
            .map(|s| (s.max_segments, s.kind))
            .unwrap_or((10, Kind::Twilio));
        if kind == Kind::Twilio && text.chars().count() > 1600 {
            return Err(format!(
                "the text has {} characters, over Twilio's 1600",
                text.chars().count()
            ));
        }
        let s = segment(text);
        if s.segments > max {
            return Err(format!(
                "the text is {} {} units, {} SMS segments, over this bot's max_segments of {max}",
                s.units,
                s.encoding.as_str(),
                s.segments
            ));
        }
        Ok(Some(s.segments))
    }

    fn rate_policy(&self, map: &Map<String, Value>) -> RatePolicy {
        let per_second = settings(map).map(|s| s.throughput).unwrap_or(1.0);
        RatePolicy {
            per_bot: Some(rate(per_second)),
            per_chat: None,
            per_group: None,
            default_retry_after: Duration::from_secs(1),
        }
    }

    fn build(
        &self,
        bot: &Bot,
        credentials: Credentials,
        public_url: Option<&str>,
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        let s = settings(&bot.settings).map_err(|p| ConnectorError::config(&p))?;
        let secret = credentials
            .get(s.kind.secret())
            .cloned()
            .ok_or_else(|| ConnectorError::Config(format!("{}: is required", s.kind.secret())))?;
        let provider: Box<dyn Provider> = match s.kind {
            Kind::Twilio => Box::new(twilio::Twilio::new(self.http.clone(), &s, secret)),
            Kind::AfricasTalking => Box::new(africastalking::AfricasTalking::new(
                self.http.clone(),
                &s,
                secret,
            )),
            Kind::BulkSms => Box::new(bulksms::BulkSms::new(self.http.clone(), &s, secret)),
        };
        Ok(Arc::new(SmsConnector {
            bot_id: bot.id.clone(),
            settings: s,
            provider,
            webhook_secret: credentials.get("webhook_secret").cloned(),
            public_url: public_url.map(str::to_owned),
            balance: Mutex::new(None),
            funds_floor: Mutex::new(Floor::None),
            pacer: Mutex::new(None),
        }))
    }
}

/// `per_second` as an even rate (fractions become "1 per N s").
fn rate(per_second: f64) -> Rate {
    if per_second >= 1.0 {
        Rate {
            burst: 1,
            ..Rate::per_second(per_second.round() as u32)
        }
    } else {
        Rate {
            count: 1,
            per: Duration::from_secs_f64(1.0 / per_second),
            burst: 1,
        }
    }
}

pub struct SmsConnector {
    bot_id: String,
    settings: Settings,
    provider: Box<dyn Provider>,
    webhook_secret: Option<Secret>,
    /// `server.public_url` (Twilio signs the URL it posts to; status callbacks go to it).
    public_url: Option<String>,
    balance: Mutex<Option<Balance>>,
    /// Below what balance sending stays paused, after a send was refused for funds.
    funds_floor: Mutex<Floor>,
    pacer: Mutex<Option<Arc<GovernorPacer>>>,
}

impl std::fmt::Debug for SmsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SmsConnector({}, {:?})", self.bot_id, self.settings.kind)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a paused bot's balance must exceed to resume.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Floor {
    /// Not paused by a refusal.
    None,
    /// Refused for funds, but the balance could not be read then: the next read is the floor.
    Unknown,
    At(f64),
}

/// The number in a balance like "KES 1785.50" or "12.34".
fn amount(balance: &Balance) -> Option<f64> {
    balance.amount.trim().parse().ok()
}

impl SmsConnector {
    /// The webhook URL of `subpath` under `server.public_url`.
    fn webhook_url(&self, subpath: &str) -> Option<String> {
        let base = self.public_url.as_deref()?;
        Some(format!(
            "{}/webhooks/sms/{}{subpath}",
            base.trim_end_matches('/'),
            self.bot_id
        ))
    }

    /// After a refusal for funds: read the balance now, and resume only above it.
    async fn refused_for_funds(&self, e: ConnectorError) -> ConnectorError {
        let floor = match self.balance(true).await.ok().as_ref().and_then(amount) {
            Some(a) => Floor::At(a),
            None => Floor::Unknown,
        };
        *lock(&self.funds_floor) = floor;
        e
    }

    /// Waits for the segments beyond the first (the dispatcher paced one).
    async fn pace_segments(&self, segments: u32, to: &str) {
        let pacer = lock(&self.pacer).clone();
        if let Some(p) = pacer {
            let key = PaceKey {
                chat: to.to_owned(),
                kind: ConversationKind::Direct,
            };
            for _ in 1..segments {
                p.acquire(&key).await;
            }
        }
    }

    fn secret_ok(&self, request: &WebhookRequest) -> bool {
        let Some(secret) = &self.webhook_secret else {
            return true;
        };
        if self.settings.kind.signs_webhooks() {
            return true;
        }
        url::form_urlencoded::parse(request.query.as_bytes())
            .any(|(k, v)| k == "secret" && secret.matches(v.as_bytes()))
    }
}

#[async_trait]
impl Connector for SmsConnector {
    /// Webhook-only: check the account, then wait.
    async fn run(&self, ctx: RunContext) -> Result<(), ConnectorError> {
        if self.webhook_secret.is_none() && !self.settings.kind.signs_webhooks() {
            tracing::warn!(bot = %self.bot_id, provider = self.settings.kind.name(), "this provider does not sign its callbacks and the bot has no webhook_secret: anyone who knows the URL can post delivery reports and inbound SMS");
        }
        if self.public_url.is_none() {
            tracing::warn!(bot = %self.bot_id, "server.public_url is not set: no delivery reports from providers that take a callback URL per message; Twilio signatures are checked against the URL the request names (Host)");
        }
        let checked = tokio::select! {
            r = self.balance(true) => r,
            _ = ctx.cancel.cancelled() => return Ok(()),
        };
        match checked {
            Err(e) if e.is_fatal_for_bot() => return Err(e),
            Err(e) => ctx
                .health
                .degraded(&format!("cannot read the balance: {e}")),
            Ok(_) => ctx.health.running(),
        }
        ctx.cancel.cancelled().await;
        Ok(())
    }

    async fn send(&self, request: &OutboundRequest) -> Result<SendReceipt, ConnectorError> {
        let Content::Text { text } = &request.message.content else {
            return Err(ConnectorError::permanent("SMS carries text only"));
        };
        let to = &request.chat.external_chat_id;
        let seg = segment(text);
        self.pace_segments(seg.segments, to).await;
        let sms = Outgoing {
            to,
            body: text,
            encoding: seg.encoding,
            status_callback: self.webhook_url("/status"),
            reference: &request.message.id,
        };
        match self.provider.send(&sms).await {
            Ok(receipt) => Ok(receipt),
            Err(e @ ConnectorError::InsufficientFunds { .. }) => {
                Err(self.refused_for_funds(e).await)
            }
            // Twilio refuses with an authentication error when the balance is exhausted: if
            // the same credentials still read the balance, they are fine and it is the funds.
            Err(e) if self.provider.may_be_funds(&e) => match self.balance(true).await {
                Ok(b) => {
                    *lock(&self.funds_floor) = amount(&b).map_or(Floor::Unknown, Floor::At);
                    Err(ConnectorError::InsufficientFunds {
                        message: format!(
                            "the provider refused the send ({e}) with a balance of {} {}",
                            b.amount, b.currency
                        ),
                        platform_code: e.platform_code().map(str::to_owned),
                    })
                }
                Err(_) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// The balance: at or below `min_balance` (or not above the balance a send was refused
    /// at) it is `InsufficientFunds`.
    async fn probe(&self) -> Result<(), ConnectorError> {
        let balance = self.balance(true).await?;
        let Some(a) = amount(&balance) else {
            return Ok(());
        };
        let exhausted = || ConnectorError::InsufficientFunds {
            message: format!("balance {} {}", balance.amount, balance.currency),
            platform_code: None,
        };
        let mut floor = lock(&self.funds_floor);
        let at = match *floor {
            Floor::Unknown => {
                // Paused without knowing the balance then: this read is the floor.
                *floor = Floor::At(a);
                return Err(exhausted());
            }
            Floor::At(f) => f.max(self.settings.min_balance),
            Floor::None => self.settings.min_balance,
        };
        if a <= at {
            return Err(exhausted());
        }
        *floor = Floor::None;
        Ok(())
    }

    fn pacer(&self, policy: RatePolicy) -> Arc<dyn Pacer> {
        let pacer = Arc::new(GovernorPacer::new(policy));
        *lock(&self.pacer) = Some(pacer.clone());
        pacer
    }

    async fn balance(&self, fresh: bool) -> Result<Balance, ConnectorError> {
        if !fresh
            && let Some(b) = lock(&self.balance).clone()
            && (Utc::now() - b.checked_at).to_std().unwrap_or_default() < BALANCE_MAX_AGE
        {
            return Ok(b);
        }
        let b = self.provider.balance().await?;
        *lock(&self.balance) = Some(b.clone());
        Ok(b)
    }

    async fn handle_webhook(
        &self,
        request: WebhookRequest,
        sink: &dyn InboundSink,
    ) -> WebhookResponse {
        let subpath = request.subpath.trim_end_matches('/').to_owned();
        if subpath != "/inbound" && subpath != "/status" {
            return WebhookResponse::text(404, "SMS webhooks are /inbound and /status");
        }
        if request.method != "POST" {
            return WebhookResponse::text(405, "POST only");
        }
        if !self.secret_ok(&request) {
            return WebhookResponse::text(401, "the secret query parameter does not match");
        }
        // The URL the provider posted to: under server.public_url when it is set (exactly as
        // configured), else as this request names it (Host, X-Forwarded-Proto).
        let url = match self.webhook_url(&subpath) {
            Some(u) => Some(u),
            None => request.header("host").map(|host| {
                let scheme = request
                    .header("x-forwarded-proto")
                    .filter(|p| *p == "https" || *p == "http")
                    .unwrap_or("http");
                format!("{scheme}://{host}/webhooks/sms/{}{subpath}", self.bot_id)
            }),
        }
        .map(|u| {
            if request.query.is_empty() {
                u
            } else {
                format!("{u}?{}", request.query)
            }
        });
        if let Err(why) = self.provider.verify(&request, url.as_deref()) {
            tracing::warn!(bot = %self.bot_id, why, "SMS webhook refused");
            return WebhookResponse::text(401, why);
        }
        let parsed = if subpath == "/inbound" {
            self.provider.parse_inbound(&request)
        } else {
            self.provider.parse_status(&request)
        };
        let events = match parsed {
            Ok(events) => events,
            Err(why) => return WebhookResponse::text(400, why),
        };
        if !events.is_empty()
            && let Err(e) = sink.deliver(&self.bot_id, events).await
        {
            tracing::error!(bot = %self.bot_id, error = %e, "cannot store an SMS webhook; the provider will retry");
            return WebhookResponse::text(500, "not stored; retry");
        }
        if subpath == "/inbound" {
            self.provider.inbound_answer()
        } else {
            WebhookResponse::text(200, "")
        }
    }
}

/// Reads a form body into pairs.
pub(crate) fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

pub(crate) fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// An inbound SMS as an event: the sender's number is their contact and conversation.
pub(crate) fn inbound_sms(
    id: &str,
    from: &str,
    text: &str,
    region: Option<phonenumber::country::Id>,
) -> InboundEvent {
    let number = phone::normalize(from, region).unwrap_or_else(|_| from.to_owned());
    InboundEvent::Message(InboundMessage {
        dedup_key: format!("sms:{id}"),
        chat: ChatRef {
            external_chat_id: number.clone(),
            kind: ConversationKind::Direct,
            title: None,
        },
        sender: Some(SenderRef {
            external_id: number.clone(),
            name: None,
            phone: Some(number),
        }),
        external_id: Some(id.to_owned()),
        content: Content::Text {
            text: text.to_owned(),
        },
        reply_to_external_id: None,
        at: Utc::now(),
    })
}

/// A delivery report as an event.
pub(crate) fn report(
    id: &str,
    status: switchboard_core::model::MessageStatus,
    failure: Option<(String, String)>,
) -> InboundEvent {
    InboundEvent::Status(StatusReport {
        external_id: id.to_owned(),
        status,
        at: Utc::now(),
        error: failure.map(|(code, message)| switchboard_core::model::MessageError {
            code: "permanent".into(),
            message,
            platform_code: Some(code),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn settings_name_what_is_missing_per_provider() {
        let problems = settings(&map(json!({"provider": "twilio"}))).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            keys.contains(&"account_sid") && keys.contains(&"from"),
            "{keys:?}"
        );
        let problems = settings(&map(json!({"provider": "carrier-pigeon"}))).unwrap_err();
        assert_eq!(problems[0].0, "provider");
        let s = settings(&map(
            json!({"provider": "africastalking", "username": "sandbox", "default_region": "KE"}),
        ))
        .unwrap();
        assert_eq!(s.api_base, "https://api.africastalking.com");
        assert_eq!(s.max_segments, 10);
        assert!(
            settings(&map(
                json!({"provider": "bulksms", "username": "u", "default_region": "Narnia"})
            ))
            .is_err()
        );
    }

    #[test]
    fn a_text_over_max_segments_is_refused_never_truncated() {
        let f = SmsFactory::new();
        let m = map(json!({"provider": "bulksms", "username": "u", "max_segments": 2}));
        let two = Content::Text {
            text: "a".repeat(306),
        };
        assert_eq!(f.segments(&m, &two).unwrap(), Some(2));
        let three = Content::Text {
            text: "a".repeat(307),
        };
        let err = f.segments(&m, &three).unwrap_err();
        assert!(
            err.contains("3 SMS segments") && err.contains("max_segments of 2"),
            "{err}"
        );
    }

    #[test]
    fn fractional_throughput_spreads_sends() {
        assert_eq!(rate(0.5).per, Duration::from_secs(2));
        assert_eq!(rate(30.0).count, 30);
    }
}
