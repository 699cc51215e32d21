//! Row shapes of the portable schema and their conversion to the model.
//!
//! Every column is TEXT or BIGINT on both backends (ids UUIDv7 text, timestamps unix
//! microseconds, JSON as text), which is what lets one set of SQL serve SQLite and PostgreSQL.

use chrono::{DateTime, TimeZone, Utc};
use sqlx::FromRow;

use crate::error::StoreError;
use crate::model::*;

pub fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

pub fn now_micros() -> i64 {
    to_micros(Utc::now())
}

fn json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::corrupt(format!("{what}: {e}")))
}

fn platform(s: &str) -> Result<Platform, StoreError> {
    Platform::parse(s).ok_or_else(|| StoreError::corrupt(format!("unknown platform {s:?}")))
}

#[macro_export]
#[doc(hidden)]
macro_rules! message_columns {
    () => {
        "id, tenant_id, bot_id, platform, conversation_id, contact_id, \
     direction, content, status, error, external_id, reply_to, attempts, created_at, sent_at, \
     delivered_at, read_at, status_history, segments, cost"
    };
}

#[derive(Debug, FromRow)]
pub struct MessageRow {
    pub id: String,
    pub tenant_id: String,
    pub bot_id: String,
    pub platform: String,
    pub conversation_id: String,
    pub contact_id: Option<String>,
    pub direction: String,
    pub content: String,
    pub status: String,
    pub error: Option<String>,
    pub external_id: Option<String>,
    pub reply_to: Option<String>,
    pub attempts: i64,
    pub created_at: i64,
    pub sent_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub read_at: Option<i64>,
    pub status_history: String,
    pub segments: Option<i64>,
    pub cost: Option<String>,
}

impl TryFrom<MessageRow> for Message {
    type Error = StoreError;
    fn try_from(r: MessageRow) -> Result<Self, StoreError> {
        Ok(Message {
            platform: platform(&r.platform)?,
            direction: Direction::parse(&r.direction)
                .ok_or_else(|| StoreError::corrupt(format!("direction {:?}", r.direction)))?,
            content: json("message content", &r.content)?,
            status: MessageStatus::parse(&r.status)
                .ok_or_else(|| StoreError::corrupt(format!("status {:?}", r.status)))?,
            error: r
                .error
                .as_deref()
                .map(|e| json("message error", e))
                .transpose()?,
            status_history: json("status history", &r.status_history)?,
            id: r.id,
            tenant: r.tenant_id,
            bot_id: r.bot_id,
            conversation_id: r.conversation_id,
            contact_id: r.contact_id,
            external_id: r.external_id,
            reply_to: r.reply_to,
            attempts: r.attempts.max(0) as u32,
            created_at: from_micros(r.created_at),
            sent_at: r.sent_at.map(from_micros),
            delivered_at: r.delivered_at.map(from_micros),
            read_at: r.read_at.map(from_micros),
            segments: r.segments.map(|n| n.clamp(0, u32::MAX as i64) as u32),
            cost: r.cost,
        })
    }
}

#[macro_export]
#[doc(hidden)]
macro_rules! conversation_columns {
    () => {
        "id, tenant_id, bot_id, platform, external_chat_id, kind, \
     title, contact_id, last_message_at, created_at, last_inbound_at"
    };
}

#[derive(Debug, FromRow)]
pub struct ConversationRow {
    pub id: String,
    pub tenant_id: String,
    pub bot_id: String,
    pub platform: String,
    pub external_chat_id: String,
    pub kind: String,
    pub title: Option<String>,
    pub contact_id: Option<String>,
    pub last_message_at: Option<i64>,
    pub created_at: i64,
    pub last_inbound_at: Option<i64>,
}

impl TryFrom<ConversationRow> for Conversation {
    type Error = StoreError;
    fn try_from(r: ConversationRow) -> Result<Self, StoreError> {
        Ok(Conversation {
            platform: platform(&r.platform)?,
            kind: ConversationKind::parse(&r.kind)
                .ok_or_else(|| StoreError::corrupt(format!("conversation kind {:?}", r.kind)))?,
            id: r.id,
            tenant: r.tenant_id,
            bot_id: r.bot_id,
            external_chat_id: r.external_chat_id,
            title: r.title,
            contact_id: r.contact_id,
            last_message_at: r.last_message_at.map(from_micros),
            last_inbound_at: r.last_inbound_at.map(from_micros),
            created_at: from_micros(r.created_at),
        })
    }
}

#[macro_export]
#[doc(hidden)]
macro_rules! bot_columns {
    () => {
        "id, tenant_id, platform, enabled, settings, credential_fields, \
     state, state_reason, last_error, last_seen_at, source, created_at, updated_at"
    };
}

#[derive(Debug, FromRow)]
pub struct BotRow {
    pub id: String,
    pub tenant_id: String,
    pub platform: String,
    pub enabled: i64,
    pub settings: String,
    pub credential_fields: String,
    pub state: String,
    pub state_reason: Option<String>,
    pub last_error: Option<String>,
    pub last_seen_at: Option<i64>,
    pub source: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TryFrom<BotRow> for Bot {
    type Error = StoreError;
    fn try_from(r: BotRow) -> Result<Self, StoreError> {
        Ok(Bot {
            platform: platform(&r.platform)?,
            enabled: r.enabled != 0,
            settings: json("bot settings", &r.settings)?,
            credential_fields: json("bot credential fields", &r.credential_fields)?,
            state: BotState::parse(&r.state)
                .ok_or_else(|| StoreError::corrupt(format!("bot state {:?}", r.state)))?,
            id: r.id,
            tenant: r.tenant_id,
            state_reason: r.state_reason,
            last_error: r.last_error,
            last_seen_at: r.last_seen_at.map(from_micros),
            source: r.source,
            created_at: from_micros(r.created_at),
            updated_at: from_micros(r.updated_at),
        })
    }
}

#[derive(Debug, FromRow)]
pub struct EventRow {
    pub tenant_id: String,
    pub seq: i64,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub bot_id: Option<String>,
    pub at: i64,
    pub data: String,
}

impl TryFrom<EventRow> for Event {
    type Error = StoreError;
    fn try_from(r: EventRow) -> Result<Self, StoreError> {
        Ok(Event {
            seq: r.seq,
            kind: r.kind,
            tenant: r.tenant_id,
            at: from_micros(r.at),
            bot_id: r.bot_id,
            data: serde_json::value::RawValue::from_string(r.data)
                .map_err(|e| StoreError::corrupt(format!("event data: {e}")))?,
            json: Default::default(),
        })
    }
}

#[derive(Debug, FromRow)]
pub struct TenantRow {
    pub id: String,
    pub name: String,
    pub time_zone: String,
    pub created_at: i64,
}

impl From<TenantRow> for Tenant {
    fn from(r: TenantRow) -> Self {
        Tenant {
            id: r.id,
            name: r.name,
            time_zone: r.time_zone,
            created_at: from_micros(r.created_at),
        }
    }
}

#[derive(Debug, FromRow)]
pub struct ContactRow {
    pub id: String,
    pub tenant_id: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub tags: String,
    pub attributes: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The columns of [`ContactRow`].
pub const CONTACT_COLUMNS: &str =
    "id, tenant_id, name, phone, tags, attributes, created_at, updated_at";

impl ContactRow {
    /// The contact with its identities.
    pub fn into_contact(self, identities: Vec<Identity>) -> Result<Contact, StoreError> {
        Ok(Contact {
            tags: json("contact tags", &self.tags)?,
            attributes: json("contact attributes", &self.attributes)?,
            id: self.id,
            tenant: self.tenant_id,
            name: self.name,
            phone: self.phone,
            identities,
            created_at: from_micros(self.created_at),
            updated_at: from_micros(self.updated_at),
        })
    }
}

#[derive(Debug, FromRow)]
pub struct IdentityRow {
    pub contact_id: String,
    pub bot_id: String,
    pub platform: String,
    pub external_id: String,
}

impl TryFrom<IdentityRow> for Identity {
    type Error = StoreError;
    fn try_from(r: IdentityRow) -> Result<Self, StoreError> {
        Ok(Identity {
            bot_id: r.bot_id,
            platform: platform(&r.platform)?,
            external_id: r.external_id,
        })
    }
}
