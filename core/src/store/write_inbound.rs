//! Writes of what platforms report: inbound messages (dedup, contact, conversation), delivery
//! reports (including those that overtake the send they are about), edits, joined chats.

use chrono::{DateTime, Utc};

use super::batch::BatchCache;
use super::rows::*;
use super::write_messages::*;
use super::writer::{Conn, PendingEvent};
use super::*;
use crate::connector::{ChatRef, InboundMessage, StatusReport};
use crate::model::event_type as et;

/// A message by its platform id in its chat (a reply's original, an edited message):
/// Telegram's message ids are unique only per chat. Index `messages_chat_external`.
pub(super) const MESSAGE_IN_CHAT: &str =
    "SELECT id FROM messages WHERE conversation_id = $1 AND external_id = $2";

/// The id of the conversation's message with this platform id ([`MESSAGE_IN_CHAT`]).
async fn message_in_chat(
    tx: &mut Conn,
    conversation: &str,
    external_id: &str,
) -> Result<Option<String>, StoreError> {
    let row: Option<(String,)> = sqlx::query_as(MESSAGE_IN_CHAT)
        .bind(conversation)
        .bind(external_id)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(row.map(|r| r.0))
}

/// An outbound message by the platform id a delivery report names (reports of Twilio,
/// Africa's Talking and BulkSMS name no chat). Index `messages_external`, which holds only
/// outbound messages: the query must say `direction = 'outbound'` literally to use it.
pub(super) const OUTBOUND_BY_PLATFORM_ID: &str =
    "SELECT id FROM messages WHERE bot_id = $1 AND external_id = $2 AND direction = 'outbound'";

/// The contact behind a sender on a bot: by identity, else by phone, else a new contact. A
/// new contact and identity are kept in the batch and inserted at its flush.
pub(super) async fn resolve_sender(
    tx: &mut Conn,
    bot: &Bot,
    sender: &crate::connector::SenderRef,
    batch: &mut BatchCache,
) -> Result<String, StoreError> {
    let key = (bot.id.clone(), sender.external_id.clone());
    let known = match batch.identities.get(&key) {
        Some(known) => known.clone(),
        None => sqlx::query_as::<_, (String,)>(
            "SELECT contact_id FROM contact_identities WHERE bot_id = $1 AND external_id = $2",
        )
        .bind(&bot.id)
        .bind(&sender.external_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|(id,)| id),
    };
    if let Some(id) = known {
        return Ok(id);
    }
    let name = sender.name.as_deref();
    let contact_id = match &sender.phone {
        Some(phone) => {
            batch
                .contact_for_phone(tx, &bot.tenant, phone, name)
                .await?
        }
        None => batch.new_contact(&bot.tenant, name, None),
    };
    batch.new_identity(bot, &key.1, &contact_id);
    Ok(contact_id)
}

pub(super) async fn ingest_message(
    tx: &mut Conn,
    bot: &Bot,
    m: &InboundMessage,
    ev: &mut Vec<PendingEvent>,
    batch: &mut BatchCache,
) -> Result<IngestOutcome, StoreError> {
    let dup = match batch.dedup.get(&(bot.id.clone(), m.dedup_key.clone())) {
        Some(known) => known.clone(),
        None => sqlx::query_as::<_, (String,)>(
            "SELECT id FROM messages WHERE bot_id = $1 AND dedup_key = $2",
        )
        .bind(&bot.id)
        .bind(&m.dedup_key)
        .fetch_optional(&mut *tx)
        .await?
        .map(|(id,)| id),
    };
    if let Some(id) = dup {
        return Ok(IngestOutcome::Duplicate(id));
    }
    let contact_id = match &m.sender {
        Some(s) => Some(resolve_sender(tx, bot, s, batch).await?),
        None => None,
    };
    let direct_contact = if m.chat.kind == ConversationKind::Direct {
        contact_id.clone()
    } else {
        None
    };
    let now = Utc::now();
    let known = match batch.conversation(&bot.id, &m.chat.external_chat_id) {
        Some(known) => known,
        None => find_conversation(tx, &bot.id, &m.chat.external_chat_id).await?,
    };
    let mut conversation = match known {
        Some(mut c) => {
            let title_changed = m.chat.title.is_some() && m.chat.title != c.title;
            if title_changed || (c.contact_id.is_none() && direct_contact.is_some()) {
                if title_changed {
                    c.title = m.chat.title.clone();
                }
                c.contact_id = c.contact_id.or(direct_contact);
                ev.push(conversation_event(&c));
            }
            c
        }
        // Inserted with the batch's other conversation writes (`touch` below).
        None => {
            let c = new_conversation(bot, &m.chat, direct_contact);
            ev.push(conversation_event(&c));
            c
        }
    };
    conversation.last_message_at = Some(now);
    conversation.last_inbound_at = Some(now);
    // The original may be in this batch, not written yet.
    let in_batch = m.reply_to_external_id.as_ref().and_then(|ext| {
        batch
            .pending
            .iter()
            .find(|(p, _)| {
                p.conversation_id == conversation.id && p.external_id.as_ref() == Some(ext)
            })
            .map(|(p, _)| p.id.clone())
    });
    let reply_to = match &m.reply_to_external_id {
        Some(_) if in_batch.is_some() => in_batch,
        Some(ext) => message_in_chat(tx, &conversation.id, ext).await?,
        None => None,
    };
    let message = Message {
        id: new_id(),
        tenant: bot.tenant.clone(),
        bot_id: bot.id.clone(),
        platform: bot.platform,
        conversation_id: conversation.id.clone(),
        contact_id,
        direction: Direction::Inbound,
        content: m.content.clone(),
        status: MessageStatus::Received,
        error: None,
        external_id: m.external_id.clone(),
        reply_to,
        attempts: 0,
        created_at: now,
        sent_at: Some(m.at),
        delivered_at: None,
        read_at: None,
        status_history: vec![StatusChange {
            status: MessageStatus::Received,
            at: now,
        }],
        segments: None,
        cost: None,
    };
    ev.push(message_event(et::MESSAGE_RECEIVED, &message));
    // Both written with the batch's others, before anything else reads them.
    batch.touch(conversation);
    let id = message.id.clone();
    batch.add_message(message, Some(m.dedup_key.clone()));
    Ok(IngestOutcome::Stored(id))
}

pub(super) async fn apply_status(
    tx: &mut Conn,
    bot: &Bot,
    s: &StatusReport,
    ev: &mut Vec<PendingEvent>,
) -> Result<IngestOutcome, StoreError> {
    let report = serde_json::json!({
        "external_id": s.external_id, "status": s.status, "at": s.at, "error": s.error,
    })
    .to_string();
    let target: Option<(String,)> = sqlx::query_as(OUTBOUND_BY_PLATFORM_ID)
        .bind(&bot.id)
        .bind(&s.external_id)
        .fetch_optional(&mut *tx)
        .await?;
    let seen = sqlx::query(
        "INSERT INTO status_reports (bot_id, external_id, status, message_id, report, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (bot_id, external_id, status) DO NOTHING",
    )
    .bind(&bot.id)
    .bind(&s.external_id)
    .bind(s.status.as_str())
    .bind(target.as_ref().map(|t| t.0.clone()))
    .bind(report)
    .bind(now_micros())
    .execute(&mut *tx)
    .await?;
    if seen.rows_affected() == 0 {
        return Ok(IngestOutcome::StatusIgnored);
    }
    // A report can arrive before the send's result is committed: it waits in
    // status_reports (message_id NULL) and is applied when the platform id is recorded.
    let Some((id,)) = target else {
        return Ok(IngestOutcome::StatusUnmatched);
    };
    let mut m = load_message(tx, &id).await?;
    apply_report(&mut m, s);
    save_message(tx, &m).await?;
    ev.push(report_event(&m, s.status));
    Ok(IngestOutcome::StatusApplied(id))
}

pub(super) fn report_event(m: &Message, status: MessageStatus) -> PendingEvent {
    let kind = if status == MessageStatus::Failed {
        et::MESSAGE_FAILED
    } else {
        et::MESSAGE_STATUS
    };
    message_event(kind, m)
}

/// A platform's report on an outbound message: recorded in the history; the status only
/// moves forward (a late `delivered` after `read` does not demote it).
pub(super) fn apply_report(m: &mut Message, s: &StatusReport) {
    let newer = s.status.rank() > m.status.rank();
    m.status_history.push(StatusChange {
        status: s.status,
        at: s.at,
    });
    match s.status {
        MessageStatus::Delivered => m.delivered_at = m.delivered_at.or(Some(s.at)),
        MessageStatus::Read => m.read_at = m.read_at.or(Some(s.at)),
        MessageStatus::Sent => m.sent_at = m.sent_at.or(Some(s.at)),
        _ => {}
    }
    if newer {
        m.status = s.status;
        if s.error.is_some() {
            m.error = s.error.clone();
        }
    }
}

/// Applies reports that arrived before `m`'s platform id was known.
pub(super) async fn apply_early_reports(
    tx: &mut Conn,
    m: &mut Message,
    ev: &mut Vec<PendingEvent>,
) -> Result<(), StoreError> {
    let Some(external_id) = m.external_id.clone() else {
        return Ok(());
    };
    let early: Vec<(String,)> = sqlx::query_as(
        "SELECT report FROM status_reports WHERE bot_id = $1 AND external_id = $2 AND message_id IS NULL",
    )
    .bind(&m.bot_id)
    .bind(&external_id)
    .fetch_all(&mut *tx)
    .await?;
    if early.is_empty() {
        return Ok(());
    }
    let mut reports: Vec<StatusReport> = Vec::new();
    for (json,) in early {
        let v: serde_json::Value = serde_json::from_str(&json).map_err(StoreError::corrupt)?;
        let (Some(status), Some(at)) = (
            serde_json::from_value::<MessageStatus>(v["status"].clone()).ok(),
            serde_json::from_value::<DateTime<Utc>>(v["at"].clone()).ok(),
        ) else {
            continue;
        };
        reports.push(StatusReport {
            external_id: external_id.clone(),
            status,
            at,
            error: serde_json::from_value(v["error"].clone()).ok().flatten(),
        });
    }
    reports.sort_by_key(|r| (r.status.rank(), r.at));
    sqlx::query("UPDATE status_reports SET message_id = $1 WHERE bot_id = $2 AND external_id = $3 AND message_id IS NULL")
        .bind(&m.id)
        .bind(&m.bot_id)
        .bind(&external_id)
        .execute(&mut *tx)
        .await?;
    for r in &reports {
        apply_report(m, r);
        ev.push(report_event(m, r.status));
    }
    Ok(())
}

/// An edit of an earlier inbound message: the content is replaced (the previous content is
/// kept in `status_history`-like fashion by the `message.updated` event that carries both).
pub(super) async fn apply_edit(
    tx: &mut Conn,
    bot: &Bot,
    e: &crate::connector::EditReport,
    ev: &mut Vec<PendingEvent>,
) -> Result<IngestOutcome, StoreError> {
    let seen = sqlx::query(
        "INSERT INTO status_reports (bot_id, external_id, status, message_id, report, created_at) \
         VALUES ($1, $2, $3, NULL, $4, $5) ON CONFLICT (bot_id, external_id, status) DO NOTHING",
    )
    .bind(&bot.id)
    .bind(format!("{}:{}", e.chat_external_id, e.external_id))
    .bind(format!("edit:{}", e.dedup_key))
    .bind(serde_json::to_string(&e.content).map_err(StoreError::corrupt)?)
    .bind(now_micros())
    .execute(&mut *tx)
    .await?;
    if seen.rows_affected() == 0 {
        return Ok(IngestOutcome::Duplicate(String::new()));
    }
    let Some(conversation) = find_conversation(tx, &bot.id, &e.chat_external_id).await? else {
        return Ok(IngestOutcome::StatusUnmatched);
    };
    let Some(id) = message_in_chat(tx, &conversation.id, &e.external_id).await? else {
        return Ok(IngestOutcome::StatusUnmatched);
    };
    let mut m = load_message(tx, &id).await?;
    let previous = std::mem::replace(&mut m.content, e.content.clone());
    sqlx::query("UPDATE messages SET content = $1 WHERE id = $2")
        .bind(serde_json::to_string(&m.content).map_err(StoreError::corrupt)?)
        .bind(&m.id)
        .execute(&mut *tx)
        .await?;
    let mut data = serde_json::to_value(&m).unwrap_or(serde_json::Value::Null);
    if let Some(obj) = data.as_object_mut() {
        obj.insert(
            "previous_content".into(),
            serde_json::to_value(previous).unwrap_or_default(),
        );
        obj.insert(
            "edited_at".into(),
            serde_json::to_value(e.at).unwrap_or_default(),
        );
    }
    ev.push(PendingEvent {
        tenant: m.tenant.clone(),
        kind: et::MESSAGE_UPDATED,
        bot_id: Some(m.bot_id.clone()),
        data: event_data(&data),
    });
    Ok(IngestOutcome::StatusApplied(m.id))
}

/// A chat the bot joined or whose title changed: the conversation is opened or updated.
pub(super) async fn apply_chat(
    tx: &mut Conn,
    bot: &Bot,
    chat: &ChatRef,
    ev: &mut Vec<PendingEvent>,
) -> Result<IngestOutcome, StoreError> {
    match find_conversation(tx, &bot.id, &chat.external_chat_id).await? {
        Some(mut c) => {
            if chat.title.is_some() && chat.title != c.title {
                c.title = chat.title.clone();
                sqlx::query("UPDATE conversations SET title = $1 WHERE id = $2")
                    .bind(&c.title)
                    .bind(&c.id)
                    .execute(&mut *tx)
                    .await?;
                ev.push(conversation_event(&c));
                Ok(IngestOutcome::StatusApplied(c.id))
            } else {
                Ok(IngestOutcome::StatusIgnored)
            }
        }
        None => {
            let c = create_conversation(tx, bot, chat, None, ev).await?;
            Ok(IngestOutcome::Stored(c.id))
        }
    }
}
