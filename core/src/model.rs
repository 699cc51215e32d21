//! The unified conversation model every platform is normalized into.
//!
//! Tenants own bots; a bot talks on one platform; people are contacts with one identity per
//! platform; a conversation is one chat on one bot; messages flow in both directions through
//! conversations and carry a status history. Every state change is an [`Event`] in the
//! tenant's event log. Ids are UUIDv7 strings (sortable by creation time); platform ids are
//! always strings.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A new time-sortable id (UUIDv7, hyphenated lowercase).
/// Normalizes a phone number written in international form, with or without spaces, dashes,
/// dots or parentheses, to E.164 (`+` and 7 to 15 digits); the error names the number.
pub fn normalize_e164(raw: &str) -> Result<String, String> {
    let cleaned: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = cleaned.strip_prefix('+').unwrap_or("");
    if !((7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0'))
    {
        return Err(format!(
            "{raw:?} is not a valid phone number in E.164 form (+ and 7 to 15 digits, e.g. \"+15551234567\")"
        ));
    }
    // A country calling code in use and a length numbers there have (test ranges pass).
    crate::phone::normalize(&cleaned, None).map_err(|_| {
        format!("{raw:?} is not a phone number: no country has numbers of this code and length")
    })
}

pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The platforms Switchboard can connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Telegram,
    Whatsapp,
    Discord,
    Sms,
    Slack,
    Messenger,
}

impl Platform {
    pub const ALL: [Platform; 6] = [
        Platform::Telegram,
        Platform::Whatsapp,
        Platform::Discord,
        Platform::Sms,
        Platform::Slack,
        Platform::Messenger,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Telegram => "telegram",
            Platform::Whatsapp => "whatsapp",
            Platform::Discord => "discord",
            Platform::Sms => "sms",
            Platform::Slack => "slack",
            Platform::Messenger => "messenger",
        }
    }

    pub fn parse(s: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bot's lifecycle state, owned by the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BotState {
    Starting,
    Running,
    Degraded,
    /// Receiving, but sending is held: the account's balance is exhausted.
    Paused,
    Backoff,
    Stopped,
    Failed,
}

impl BotState {
    pub const ALL: [BotState; 7] = [
        BotState::Starting,
        BotState::Running,
        BotState::Degraded,
        BotState::Paused,
        BotState::Backoff,
        BotState::Stopped,
        BotState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BotState::Starting => "starting",
            BotState::Running => "running",
            BotState::Degraded => "degraded",
            BotState::Paused => "paused",
            BotState::Backoff => "backoff",
            BotState::Stopped => "stopped",
            BotState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<BotState> {
        BotState::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// IANA time zone used for per-day statistics.
    pub time_zone: String,
    pub created_at: DateTime<Utc>,
}

/// Per-bot counters since the process started plus what the store held at start-up.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub struct BotCounters {
    pub sent: u64,
    pub received: u64,
    pub failed: u64,
    pub rate_limited: u64,
}

/// A bot as stored. Credentials are kept encrypted beside it and never appear here.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Bot {
    pub id: String,
    pub tenant: String,
    pub platform: Platform,
    pub enabled: bool,
    /// Platform settings that are not secret (mode, api_base, phone_number_id, ...).
    #[schema(value_type = Object)]
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// Names of the credential fields that are set (their values are write-only).
    pub credential_fields: Vec<String>,
    pub state: BotState,
    pub state_reason: Option<String>,
    pub last_error: Option<String>,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// `config` for bots from the config file, `api` for bots created through the API.
    pub source: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConversationKind {
    Direct,
    Group,
    Channel,
}

impl ConversationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationKind::Direct => "direct",
            ConversationKind::Group => "group",
            ConversationKind::Channel => "channel",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "direct" => Some(Self::Direct),
            "group" => Some(Self::Group),
            "channel" => Some(Self::Channel),
            _ => None,
        }
    }
}

/// A person, possibly reachable on several platforms.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Contact {
    pub id: String,
    pub tenant: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub identities: Vec<Identity>,
    pub tags: Vec<String>,
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A named set of contacts (a broadcast audience).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Group {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub description: Option<String>,
    pub contact_count: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A tenant's outbound webhook: every event of `types` (all when empty) is POSTed to `url`,
/// signed with the subscription's secret (never shown again after its creation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookSubscription {
    pub id: String,
    pub tenant: String,
    pub url: String,
    pub types: Vec<String>,
    /// The last event seq delivered or waiting for a retry.
    pub delivered_seq: i64,
    /// Deliveries failing and being retried now.
    pub retrying: u64,
    /// Deliveries given up on (see `/v1/webhooks/{id}/dead-letters`).
    pub dead_letters: u64,
    pub created_at: DateTime<Utc>,
}

/// A delivery of one event to a subscription that failed: retried with backoff, and after
/// the retry period a dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookFailure {
    pub subscription_id: String,
    /// The event's seq (`GET /v1/events?since=<seq - 1>&limit=1` shows it).
    pub seq: i64,
    /// `retrying` or `dead`.
    pub state: String,
    pub attempts: u32,
    pub first_attempt_at: DateTime<Utc>,
    pub last_attempt_at: DateTime<Utc>,
    /// When it is tried next (`retrying` only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The endpoint's HTTP status, if it answered.
    pub last_status: Option<u16>,
    pub last_error: String,
}

/// One content sent to many contacts through one bot, now or at `scheduled_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Broadcast {
    pub id: String,
    pub tenant: String,
    pub bot_id: String,
    pub title: String,
    pub content: Content,
    /// `{"group_id": ...}` or `{"contact_ids": [...]}` as given.
    #[schema(value_type = Object)]
    pub to: serde_json::Value,
    /// `scheduled`, `sending`, `completed` or `cancelled`.
    pub status: String,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    /// True when it started after its time (the gateway was down at `scheduled_at`).
    pub started_late: bool,
    pub finished_at: Option<DateTime<Utc>>,
    pub recipient_count: u64,
    pub counts: BroadcastCounts,
    /// Segments of the messages written so far (SMS).
    pub segments: u64,
    /// What the provider reported the sent messages cost, per currency (SMS), e.g.
    /// `"KES 40.0000"`.
    pub cost: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Recipients of a broadcast by their message's status (`read` counts as delivered,
/// `sending` and not yet started as queued).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BroadcastCounts {
    pub queued: u64,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub skipped: u64,
}

/// One recipient of a broadcast as snapshotted at creation, with its message's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BroadcastRecipient {
    pub contact_id: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    /// The platform id sent to (a phone for SMS and WhatsApp).
    pub platform_id: Option<String>,
    /// `queued`, `sending`, `sent`, `delivered`, `read`, `failed`, `cancelled` or `skipped`.
    pub status: String,
    pub skip_reason: Option<String>,
    pub message_id: Option<String>,
    pub error: Option<MessageError>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A tenant's dashboard totals (`GET /v1/stats`). "Sent" counts messages the platform
/// accepted; "failed" those that failed, before or after that.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    pub total_sent: u64,
    pub total_received: u64,
    pub total_contacts: u64,
    pub total_groups: u64,
    pub failed: u64,
    /// Since midnight, Monday midnight and the 1st of the month in `time_zone`.
    pub sent_today: u64,
    pub sent_this_week: u64,
    pub sent_this_month: u64,
    /// The tenant's IANA time zone the periods are in.
    pub time_zone: String,
    /// SMS bots' provider balances (cached up to an hour).
    pub balances: Vec<BotBalance>,
    pub per_bot: Vec<BotStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BotBalance {
    pub bot_id: String,
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub checked_at: Option<DateTime<Utc>>,
    /// Why the balance could not be read.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BotStats {
    pub bot_id: String,
    pub platform: Option<Platform>,
    pub sent: u64,
    pub received: u64,
    pub failed: u64,
    pub sent_today: u64,
    pub sent_this_week: u64,
    pub sent_this_month: u64,
}

/// A contact's id on one bot's platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Identity {
    pub bot_id: String,
    pub platform: Platform,
    pub external_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Conversation {
    pub id: String,
    pub tenant: String,
    pub bot_id: String,
    pub platform: Platform,
    pub external_chat_id: String,
    pub kind: ConversationKind,
    pub title: Option<String>,
    pub contact_id: Option<String>,
    pub last_message_at: Option<DateTime<Utc>>,
    /// When the contact last wrote here (customer-service windows).
    pub last_inbound_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "inbound" => Some(Self::Inbound),
            "outbound" => Some(Self::Outbound),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Received,
    Queued,
    Sending,
    Sent,
    Delivered,
    Read,
    Failed,
    Cancelled,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 8] = [
        MessageStatus::Received,
        MessageStatus::Queued,
        MessageStatus::Sending,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Failed,
        MessageStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Received => "received",
            MessageStatus::Queued => "queued",
            MessageStatus::Sending => "sending",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Failed => "failed",
            MessageStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        MessageStatus::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Position in the delivery order; a platform report never moves a message backwards
    /// (a late `delivered` after `read` is recorded in the history but does not demote it).
    pub fn rank(self) -> u8 {
        match self {
            MessageStatus::Received | MessageStatus::Queued => 0,
            MessageStatus::Sending => 1,
            MessageStatus::Sent => 2,
            MessageStatus::Delivered => 3,
            MessageStatus::Read => 4,
            MessageStatus::Failed | MessageStatus::Cancelled => 5,
        }
    }
}

/// Message content, tagged by `type` as in the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Content {
    Text {
        text: String,
    },
    Media {
        kind: MediaKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mime_type: Option<String>,
    },
    Location {
        latitude: f64,
        longitude: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    Buttons {
        text: String,
        buttons: Vec<Button>,
    },
    Template {
        name: String,
        language: String,
        #[serde(default)]
        params: Vec<String>,
    },
    /// A press of a button the bot sent (inbound only): the button's `id`, and its title
    /// when the platform says it.
    #[serde(rename = "button_reply")]
    ButtonReply {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
}

impl Content {
    pub fn type_name(&self) -> &'static str {
        match self {
            Content::Text { .. } => "text",
            Content::Media { .. } => "media",
            Content::Location { .. } => "location",
            Content::Buttons { .. } => "buttons",
            Content::Template { .. } => "template",
            Content::ButtonReply { .. } => "button_reply",
        }
    }

    /// Platform-independent checks: what no platform could carry. Returns what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Content::Text { text } if text.trim().is_empty() => {
                Err("content.text must not be empty".into())
            }
            Content::Media { url, file_id, .. } => match (url, file_id) {
                (None, None) => Err("media content needs `url` or `file_id`".into()),
                (Some(_), Some(_)) => {
                    Err("media content takes `url` or `file_id`, not both".into())
                }
                (Some(u), None) if !(u.starts_with("https://") || u.starts_with("http://")) => {
                    Err(format!("media url must be http or https, got {u:?}"))
                }
                _ => Ok(()),
            },
            Content::Location {
                latitude,
                longitude,
                ..
            } => {
                if !(-90.0..=90.0).contains(latitude) || !(-180.0..=180.0).contains(longitude) {
                    Err(
                        "location latitude must be within -90..90 and longitude within -180..180"
                            .into(),
                    )
                } else {
                    Ok(())
                }
            }
            Content::Buttons { text, buttons } => {
                if text.trim().is_empty() {
                    Err("buttons content needs a non-empty `text`".into())
                } else if buttons.is_empty() {
                    Err("buttons content needs at least one button".into())
                } else if buttons
                    .iter()
                    .any(|b| b.id.is_empty() || b.title.is_empty())
                {
                    Err("every button needs a non-empty `id` and `title`".into())
                } else {
                    Ok(())
                }
            }
            Content::Template { name, language, .. } => {
                if name.is_empty() || language.is_empty() {
                    Err("template content needs `name` and `language`".into())
                } else {
                    Ok(())
                }
            }
            Content::ButtonReply { .. } => Err("button_reply content is inbound only".into()),
            Content::Text { .. } => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Image,
    Document,
    Audio,
    Video,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Button {
    pub id: String,
    pub title: String,
}

/// Why a message failed: our classification code, a human message and the platform's code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageError {
    /// `permanent`, `transient`, `rate_limited`, `auth`, `invalid_content`, `recovery`...
    pub code: String,
    pub message: String,
    pub platform_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatusChange {
    pub status: MessageStatus,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub id: String,
    pub tenant: String,
    pub bot_id: String,
    pub platform: Platform,
    pub conversation_id: String,
    pub contact_id: Option<String>,
    pub direction: Direction,
    pub content: Content,
    pub status: MessageStatus,
    pub error: Option<MessageError>,
    /// The platform's message id.
    pub external_id: Option<String>,
    pub reply_to: Option<String>,
    /// Send attempts made so far (outbound).
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    pub status_history: Vec<StatusChange>,
    /// SMS: the segments the text is billed as (GSM-7 or UCS-2 parts), set when queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<u32>,
    /// What the platform charged, as it reported it (e.g. `"KES 0.8000"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
}

/// Event types of the event log and the feed.
pub mod event_type {
    pub const MESSAGE_RECEIVED: &str = "message.received";
    pub const MESSAGE_SENT: &str = "message.sent";
    pub const MESSAGE_STATUS: &str = "message.status";
    /// An inbound message was edited by its sender (extension; data: the message with
    /// `previous_content` and `edited_at`).
    pub const MESSAGE_UPDATED: &str = "message.updated";
    pub const MESSAGE_FAILED: &str = "message.failed";
    pub const CONVERSATION_UPDATED: &str = "conversation.updated";
    pub const BOT_STATE: &str = "bot.state";
    pub const BROADCAST_PROGRESS: &str = "broadcast.progress";
    pub const FEED_LAGGED: &str = "feed.lagged";
    pub const ALL: [&str; 9] = [
        MESSAGE_RECEIVED,
        MESSAGE_SENT,
        MESSAGE_STATUS,
        MESSAGE_UPDATED,
        MESSAGE_FAILED,
        CONVERSATION_UPDATED,
        BOT_STATE,
        BROADCAST_PROGRESS,
        FEED_LAGGED,
    ];
}

/// One entry of a tenant's event log. `seq` increases by one per event within a tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub tenant: String,
    pub at: DateTime<Utc>,
    /// The bot the event concerns, if any (used by the feed's `bot` filter).
    #[serde(skip)]
    pub bot_id: Option<String>,
    /// The event's object, serialized once when the event is written (the log, the feed and
    /// the webhooks all send it as it is).
    #[schema(value_type = Object)]
    pub data: Box<serde_json::value::RawValue>,
    /// The whole event as JSON, made on first use and then shared: a thousand feed clients
    /// receiving one event send the same bytes.
    #[serde(skip)]
    pub json: std::sync::OnceLock<bytes::Bytes>,
}

impl Event {
    /// The event as JSON text (serialized once per event, whatever the number of readers).
    pub fn json_bytes(&self) -> bytes::Bytes {
        self.json
            .get_or_init(|| {
                bytes::Bytes::from(serde_json::to_vec(self).expect("an event serializes"))
            })
            .clone()
    }

    /// The event's object, parsed (for readers that look inside it).
    pub fn data_value(&self) -> serde_json::Value {
        serde_json::from_str(self.data.get()).unwrap_or_default()
    }
}

/// `value` serialized as an event's data.
pub fn event_data(value: &impl Serialize) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| {
        serde_json::value::RawValue::from_string("null".to_owned()).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_round_trips_with_type_tag() {
        let c: Content =
            serde_json::from_str(r#"{"type":"media","kind":"image","url":"https://x/y.png"}"#)
                .unwrap();
        assert!(matches!(
            c,
            Content::Media {
                kind: MediaKind::Image,
                ..
            }
        ));
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["type"], "media");
        assert!(back.get("file_id").is_none());
    }

    #[test]
    fn media_without_source_is_invalid() {
        let c = Content::Media {
            kind: MediaKind::Document,
            url: None,
            file_id: None,
            caption: None,
            filename: None,
            mime_type: None,
        };
        assert!(c.validate().unwrap_err().contains("url"));
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let ids: Vec<String> = (0..1000).map(|_| new_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}
