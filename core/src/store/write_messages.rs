//! What the inbound and outbound writes share: message rows and their events, conversations
//! (found or opened), contacts. Every write returns the events it produced; the writer gives
//! them sequence numbers.

use chrono::{DateTime, Utc};

use super::rows::*;
use super::writer::{Conn, PendingEvent};
use super::*;
use crate::connector::ChatRef;
use crate::model::event_type as et;

pub(super) fn message_event(kind: &'static str, m: &Message) -> PendingEvent {
    PendingEvent {
        tenant: m.tenant.clone(),
        kind,
        bot_id: Some(m.bot_id.clone()),
        data: event_data(m),
    }
}

pub(super) fn conversation_event(c: &Conversation) -> PendingEvent {
    PendingEvent {
        tenant: c.tenant.clone(),
        kind: et::CONVERSATION_UPDATED,
        bot_id: Some(c.bot_id.clone()),
        data: event_data(c),
    }
}

/// A new outbound message, `queued`.
pub(super) fn queued_message(
    bot: &Bot,
    conversation_id: &str,
    contact_id: Option<String>,
    content: Content,
    reply_to: Option<String>,
    segments: Option<u32>,
    now: DateTime<Utc>,
) -> Message {
    Message {
        id: new_id(),
        tenant: bot.tenant.clone(),
        bot_id: bot.id.clone(),
        platform: bot.platform,
        conversation_id: conversation_id.to_owned(),
        contact_id,
        direction: Direction::Outbound,
        content,
        status: MessageStatus::Queued,
        error: None,
        external_id: None,
        reply_to,
        attempts: 0,
        created_at: now,
        sent_at: None,
        delivered_at: None,
        read_at: None,
        status_history: vec![StatusChange {
            status: MessageStatus::Queued,
            at: now,
        }],
        segments,
        cost: None,
    }
}

pub(super) fn set_status(m: &mut Message, status: MessageStatus, at: DateTime<Utc>) {
    m.status = status;
    m.status_history.push(StatusChange { status, at });
    match status {
        MessageStatus::Sent => m.sent_at = m.sent_at.or(Some(at)),
        MessageStatus::Delivered => m.delivered_at = m.delivered_at.or(Some(at)),
        MessageStatus::Read => m.read_at = m.read_at.or(Some(at)),
        _ => {}
    }
}

pub(super) async fn save_message(tx: &mut Conn, m: &Message) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE messages SET status = $1, error = $2, external_id = $3, attempts = $4, sent_at = $5, \
         delivered_at = $6, read_at = $7, status_history = $8, cost = $9 WHERE id = $10",
    )
    .bind(m.status.as_str())
    .bind(m.error.as_ref().map(|e| serde_json::to_string(e).unwrap_or_default()))
    .bind(&m.external_id)
    .bind(m.attempts as i64)
    .bind(m.sent_at.map(to_micros))
    .bind(m.delivered_at.map(to_micros))
    .bind(m.read_at.map(to_micros))
    .bind(serde_json::to_string(&m.status_history).map_err(StoreError::corrupt)?)
    .bind(&m.cost)
    .bind(&m.id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(super) async fn insert_message(
    tx: &mut Conn,
    m: &Message,
    dedup_key: Option<&str>,
) -> Result<(), StoreError> {
    insert_messages(tx, &[(m, dedup_key)]).await
}

/// Rows per multi-row message write (21 parameters each, far below both backends' limits).
const MESSAGES_PER_WRITE: usize = 40;

/// Inserts messages (with their dedup keys) in a few multi-row statements.
pub(super) async fn insert_messages(
    tx: &mut Conn,
    rows: &[(&Message, Option<&str>)],
) -> Result<(), StoreError> {
    write_messages(tx, rows, "").await
}

/// Inserts new messages and writes the state of messages that exist (status, error,
/// external id, attempts, times, history, cost), in a few multi-row statements.
pub(super) async fn save_messages(
    tx: &mut Conn,
    rows: &[(&Message, Option<&str>)],
) -> Result<(), StoreError> {
    write_messages(
        tx,
        rows,
        " ON CONFLICT (id) DO UPDATE SET status = excluded.status, error = excluded.error, \
         external_id = excluded.external_id, attempts = excluded.attempts, sent_at = excluded.sent_at, \
         delivered_at = excluded.delivered_at, read_at = excluded.read_at, \
         status_history = excluded.status_history, cost = excluded.cost",
    )
    .await
}

async fn write_messages(
    tx: &mut Conn,
    rows: &[(&Message, Option<&str>)],
    on_conflict: &str,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(MESSAGES_PER_WRITE) {
        let mut q = super::sql::Sql::on(
            &*tx,
            "INSERT INTO messages (id, tenant_id, bot_id, platform, conversation_id, contact_id, direction, content, \
             status, error, external_id, reply_to, attempts, dedup_key, created_at, sent_at, delivered_at, read_at, \
             status_history, segments, cost) VALUES ",
        );
        for (i, (m, dedup_key)) in chunk.iter().enumerate() {
            q.row(i);
            q.bind(m.id.clone()).push(", ");
            q.bind(m.tenant.clone()).push(", ");
            q.bind(m.bot_id.clone()).push(", ");
            q.bind(m.platform.as_str().to_owned()).push(", ");
            q.bind(m.conversation_id.clone()).push(", ");
            q.bind(m.contact_id.clone()).push(", ");
            q.bind(m.direction.as_str().to_owned()).push(", ");
            q.bind(serde_json::to_string(&m.content).map_err(StoreError::corrupt)?)
                .push(", ");
            q.bind(m.status.as_str().to_owned()).push(", ");
            q.bind(
                m.error
                    .as_ref()
                    .map(|e| serde_json::to_string(e).unwrap_or_default()),
            )
            .push(", ");
            q.bind(m.external_id.clone()).push(", ");
            q.bind(m.reply_to.clone()).push(", ");
            q.bind(m.attempts as i64).push(", ");
            q.bind(dedup_key.map(str::to_owned)).push(", ");
            q.bind(to_micros(m.created_at)).push(", ");
            q.bind(m.sent_at.map(to_micros)).push(", ");
            q.bind(m.delivered_at.map(to_micros)).push(", ");
            q.bind(m.read_at.map(to_micros)).push(", ");
            q.bind(serde_json::to_string(&m.status_history).map_err(StoreError::corrupt)?)
                .push(", ");
            q.bind(m.segments.map(i64::from)).push(", ");
            q.bind(m.cost.clone()).push(")");
        }
        q.push(on_conflict);
        sqlx::query_with::<sqlx::any::Any, _>(sqlx::AssertSqlSafe(q.text), q.args)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

pub(super) async fn load_message(tx: &mut Conn, id: &str) -> Result<Message, StoreError> {
    let row: Option<MessageRow> = sqlx::query_as(concat!(
        "SELECT ",
        crate::message_columns!(),
        " FROM messages WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    row.ok_or(StoreError::NotFound)?.try_into()
}

pub(super) async fn find_conversation(
    tx: &mut Conn,
    bot_id: &str,
    chat: &str,
) -> Result<Option<Conversation>, StoreError> {
    let row: Option<ConversationRow> = sqlx::query_as(concat!(
        "SELECT ",
        crate::conversation_columns!(),
        " FROM conversations WHERE bot_id = $1 AND external_chat_id = $2"
    ))
    .bind(bot_id)
    .bind(chat)
    .fetch_optional(&mut *tx)
    .await?;
    row.map(Conversation::try_from).transpose()
}

/// A new conversation of `bot` in `chat`, not stored yet.
pub(super) fn new_conversation(
    bot: &Bot,
    chat: &ChatRef,
    contact_id: Option<String>,
) -> Conversation {
    Conversation {
        id: new_id(),
        tenant: bot.tenant.clone(),
        bot_id: bot.id.clone(),
        platform: bot.platform,
        external_chat_id: chat.external_chat_id.clone(),
        kind: chat.kind,
        title: chat.title.clone(),
        contact_id,
        last_message_at: None,
        last_inbound_at: None,
        created_at: Utc::now(),
    }
}

pub(super) async fn create_conversation(
    tx: &mut Conn,
    bot: &Bot,
    chat: &ChatRef,
    contact_id: Option<String>,
    ev: &mut Vec<PendingEvent>,
) -> Result<Conversation, StoreError> {
    let c = new_conversation(bot, chat, contact_id);
    sqlx::query(
        "INSERT INTO conversations (id, tenant_id, bot_id, platform, external_chat_id, kind, title, contact_id, \
         last_message_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9)",
    )
    .bind(&c.id)
    .bind(&c.tenant)
    .bind(&c.bot_id)
    .bind(c.platform.as_str())
    .bind(&c.external_chat_id)
    .bind(c.kind.as_str())
    .bind(&c.title)
    .bind(&c.contact_id)
    .bind(to_micros(c.created_at))
    .execute(&mut *tx)
    .await?;
    ev.push(conversation_event(&c));
    Ok(c)
}

pub(super) async fn load_conversation(tx: &mut Conn, id: &str) -> Result<Conversation, StoreError> {
    let row: Option<ConversationRow> = sqlx::query_as(concat!(
        "SELECT ",
        crate::conversation_columns!(),
        " FROM conversations WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    row.ok_or(StoreError::NotFound)?.try_into()
}

/// The bot's direct conversation with `chat`, opened if the bot never talked there.
pub(super) async fn direct_conversation(
    tx: &mut Conn,
    bot: &Bot,
    chat: &str,
    contact_id: Option<String>,
    ev: &mut Vec<PendingEvent>,
) -> Result<Conversation, StoreError> {
    open_conversation(tx, bot, chat, ConversationKind::Direct, contact_id, ev).await
}

/// The bot's conversation in `chat`, opened (as `kind`) if the bot never talked there.
pub(super) async fn open_conversation(
    tx: &mut Conn,
    bot: &Bot,
    chat: &str,
    kind: ConversationKind,
    contact_id: Option<String>,
    ev: &mut Vec<PendingEvent>,
) -> Result<Conversation, StoreError> {
    if let Some(c) = find_conversation(tx, &bot.id, chat).await? {
        return Ok(c);
    }
    let chat = ChatRef {
        external_chat_id: chat.to_string(),
        kind,
        title: None,
    };
    create_conversation(tx, bot, &chat, contact_id, ev).await
}
