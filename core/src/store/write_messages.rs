//! Writes of the conversation model: inbound messages (dedup, contact, conversation),
//! delivery reports, outbound enqueue (recipient resolution, idempotency), outbox transitions.
//! Each returns the events it produced; the writer gives them sequence numbers.

use chrono::{DateTime, Utc};

use super::rows::*;
use super::write_admin::load_bot;
use super::writer::{Conn, Output, PendingEvent, Transition};
use super::*;
use crate::connector::{ChatRef, InboundMessage, StatusReport};
use crate::model::event_type as et;

pub(super) fn message_event(kind: &'static str, m: &Message) -> PendingEvent {
    PendingEvent {
        tenant: m.tenant.clone(),
        kind,
        bot_id: Some(m.bot_id.clone()),
        data: serde_json::to_value(m).unwrap_or(serde_json::Value::Null),
    }
}

pub(super) fn conversation_event(c: &Conversation) -> PendingEvent {
    PendingEvent {
        tenant: c.tenant.clone(),
        kind: et::CONVERSATION_UPDATED,
        bot_id: Some(c.bot_id.clone()),
        data: serde_json::to_value(c).unwrap_or(serde_json::Value::Null),
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
         delivered_at = $6, read_at = $7, status_history = $8 WHERE id = $9",
    )
    .bind(m.status.as_str())
    .bind(m.error.as_ref().map(|e| serde_json::to_string(e).unwrap_or_default()))
    .bind(&m.external_id)
    .bind(m.attempts as i64)
    .bind(m.sent_at.map(to_micros))
    .bind(m.delivered_at.map(to_micros))
    .bind(m.read_at.map(to_micros))
    .bind(serde_json::to_string(&m.status_history).map_err(StoreError::corrupt)?)
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
    sqlx::query(
        "INSERT INTO messages (id, tenant_id, bot_id, platform, conversation_id, contact_id, direction, content, \
         status, error, external_id, reply_to, attempts, dedup_key, created_at, sent_at, delivered_at, read_at, status_history) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, $11, 0, $12, $13, $14, NULL, NULL, $15)",
    )
    .bind(&m.id)
    .bind(&m.tenant)
    .bind(&m.bot_id)
    .bind(m.platform.as_str())
    .bind(&m.conversation_id)
    .bind(&m.contact_id)
    .bind(m.direction.as_str())
    .bind(serde_json::to_string(&m.content).map_err(StoreError::corrupt)?)
    .bind(m.status.as_str())
    .bind(&m.external_id)
    .bind(&m.reply_to)
    .bind(dedup_key)
    .bind(to_micros(m.created_at))
    .bind(m.sent_at.map(to_micros))
    .bind(serde_json::to_string(&m.status_history).map_err(StoreError::corrupt)?)
    .execute(&mut *tx)
    .await?;
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

pub(super) async fn create_conversation(
    tx: &mut Conn,
    bot: &Bot,
    chat: &ChatRef,
    contact_id: Option<String>,
    ev: &mut Vec<PendingEvent>,
) -> Result<Conversation, StoreError> {
    let c = Conversation {
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
    };
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

/// The contact behind a sender on a bot: by identity, else by phone, else a new contact.
pub(super) async fn resolve_sender(
    tx: &mut Conn,
    bot: &Bot,
    sender: &crate::connector::SenderRef,
) -> Result<String, StoreError> {
    let known: Option<(String,)> = sqlx::query_as(
        "SELECT contact_id FROM contact_identities WHERE bot_id = $1 AND external_id = $2",
    )
    .bind(&bot.id)
    .bind(&sender.external_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((id,)) = known {
        return Ok(id);
    }
    let by_phone: Option<(String,)> = match &sender.phone {
        Some(phone) => {
            sqlx::query_as("SELECT id FROM contacts WHERE tenant_id = $1 AND phone = $2")
                .bind(&bot.tenant)
                .bind(phone)
                .fetch_optional(&mut *tx)
                .await?
        }
        None => None,
    };
    let contact_id = match by_phone {
        Some((id,)) => id,
        None => {
            insert_contact(
                tx,
                &bot.tenant,
                sender.name.as_deref(),
                sender.phone.as_deref(),
            )
            .await?
        }
    };
    sqlx::query(
        "INSERT INTO contact_identities (bot_id, external_id, tenant_id, platform, contact_id) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&bot.id)
    .bind(&sender.external_id)
    .bind(&bot.tenant)
    .bind(bot.platform.as_str())
    .bind(&contact_id)
    .execute(&mut *tx)
    .await?;
    Ok(contact_id)
}

pub(super) async fn ingest_message(
    tx: &mut Conn,
    bot: &Bot,
    m: &InboundMessage,
    ev: &mut Vec<PendingEvent>,
) -> Result<IngestOutcome, StoreError> {
    let dup: Option<(String,)> =
        sqlx::query_as("SELECT id FROM messages WHERE bot_id = $1 AND dedup_key = $2")
            .bind(&bot.id)
            .bind(&m.dedup_key)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((id,)) = dup {
        return Ok(IngestOutcome::Duplicate(id));
    }
    let contact_id = match &m.sender {
        Some(s) => Some(resolve_sender(tx, bot, s).await?),
        None => None,
    };
    let direct_contact = if m.chat.kind == ConversationKind::Direct {
        contact_id.clone()
    } else {
        None
    };
    let now = Utc::now();
    let mut conversation = match find_conversation(tx, &bot.id, &m.chat.external_chat_id).await? {
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
        None => create_conversation(tx, bot, &m.chat, direct_contact, ev).await?,
    };
    conversation.last_message_at = Some(now);
    conversation.last_inbound_at = Some(now);
    sqlx::query(
        "UPDATE conversations SET title = $1, contact_id = $2, last_message_at = $3, last_inbound_at = $3 WHERE id = $4",
    )
    .bind(&conversation.title)
    .bind(&conversation.contact_id)
    .bind(to_micros(now))
    .bind(&conversation.id)
    .execute(&mut *tx)
    .await?;
    let reply_to = match &m.reply_to_external_id {
        Some(ext) => {
            // Platform message ids are unique per chat on some platforms (Telegram).
            let r: Option<(String,)> = sqlx::query_as(
                "SELECT id FROM messages WHERE conversation_id = $1 AND external_id = $2",
            )
            .bind(&conversation.id)
            .bind(ext)
            .fetch_optional(&mut *tx)
            .await?;
            r.map(|r| r.0)
        }
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
    };
    insert_message(tx, &message, Some(&m.dedup_key)).await?;
    ev.push(message_event(et::MESSAGE_RECEIVED, &message));
    Ok(IngestOutcome::Stored(message.id))
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
    let target: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM messages WHERE bot_id = $1 AND external_id = $2 AND direction = 'outbound'",
    )
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

fn report_event(m: &Message, status: MessageStatus) -> PendingEvent {
    let kind = if status == MessageStatus::Failed {
        et::MESSAGE_FAILED
    } else {
        et::MESSAGE_STATUS
    };
    message_event(kind, m)
}

/// A platform's report on an outbound message: recorded in the history; the status only
/// moves forward (a late `delivered` after `read` does not demote it).
fn apply_report(m: &mut Message, s: &StatusReport) {
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
async fn apply_early_reports(
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

pub(super) async fn enqueue(
    tx: &mut Conn,
    new: &NewOutbound,
    ev: &mut Vec<PendingEvent>,
) -> Result<Output, StoreError> {
    if let Some((key, hash)) = &new.idempotency {
        let prior: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT request_hash, message_id, created_at FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
        )
        .bind(&new.tenant)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((prior_hash, message_id, created)) = prior {
            let fresh = Utc::now().timestamp_micros() - created < 24 * 3600 * 1_000_000;
            if fresh {
                if prior_hash != *hash {
                    return Err(StoreError::Conflict(
                        "this Idempotency-Key was used within 24 h for a different request".into(),
                    ));
                }
                let message = load_message(tx, &message_id).await?;
                let conversation = load_conversation(tx, &message.conversation_id).await?;
                return Ok(Output::Enqueued(Box::new(Enqueued {
                    message,
                    conversation,
                    replayed: true,
                })));
            }
            sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2")
                .bind(&new.tenant)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
    }
    let bot = load_bot(tx, &new.bot_id).await?;
    if bot.tenant != new.tenant {
        return Err(StoreError::NotFound);
    }
    let (conversation, contact_id) =
        resolve_recipient(tx, &bot, &new.to, new.chat_kind, ev).await?;
    if let Some(window) = new.reply_window {
        let cutoff = Utc::now() - chrono::Duration::from_std(window).unwrap_or_default();
        match conversation.last_inbound_at {
            Some(t) if t >= cutoff => {}
            last => {
                let since = match last {
                    Some(t) => format!("the contact last wrote at {}", t.to_rfc3339()),
                    None => "the contact never wrote to this bot".to_string(),
                };
                return Err(StoreError::Invalid(format!(
                    "outside the {} customer-service window of {} hours ({since}): only templates may be sent",
                    bot.platform,
                    window.as_secs() / 3600
                )));
            }
        }
    }
    if let Some(reply_to) = &new.reply_to {
        let found: Option<(String,)> =
            sqlx::query_as("SELECT conversation_id FROM messages WHERE id = $1 AND tenant_id = $2")
                .bind(reply_to)
                .bind(&new.tenant)
                .fetch_optional(&mut *tx)
                .await?;
        match found {
            None => {
                return Err(StoreError::Invalid(format!(
                    "reply_to: message {reply_to:?} not found"
                )));
            }
            Some((conv,)) if conv != conversation.id => {
                return Err(StoreError::Invalid(format!(
                    "reply_to: message {reply_to:?} belongs to another conversation"
                )));
            }
            Some(_) => {}
        }
    }
    let now = Utc::now();
    let message = Message {
        id: new_id(),
        tenant: bot.tenant.clone(),
        bot_id: bot.id.clone(),
        platform: bot.platform,
        conversation_id: conversation.id.clone(),
        contact_id,
        direction: Direction::Outbound,
        content: new.content.clone(),
        status: MessageStatus::Queued,
        error: None,
        external_id: None,
        reply_to: new.reply_to.clone(),
        attempts: 0,
        created_at: now,
        sent_at: None,
        delivered_at: None,
        read_at: None,
        status_history: vec![StatusChange {
            status: MessageStatus::Queued,
            at: now,
        }],
    };
    insert_message(tx, &message, None).await?;
    sqlx::query("UPDATE conversations SET last_message_at = $1 WHERE id = $2")
        .bind(to_micros(now))
        .bind(&conversation.id)
        .execute(&mut *tx)
        .await?;
    if let Some((key, hash)) = &new.idempotency {
        sqlx::query(
            "INSERT INTO idempotency_keys (tenant_id, key, request_hash, message_id, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&new.tenant)
        .bind(key)
        .bind(hash)
        .bind(&message.id)
        .bind(to_micros(now))
        .execute(&mut *tx)
        .await?;
    }
    ev.push(message_event(et::MESSAGE_STATUS, &message));
    Ok(Output::Enqueued(Box::new(Enqueued {
        message,
        conversation,
        replayed: false,
    })))
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
async fn direct_conversation(
    tx: &mut Conn,
    bot: &Bot,
    chat: &str,
    contact_id: Option<String>,
    ev: &mut Vec<PendingEvent>,
) -> Result<Conversation, StoreError> {
    open_conversation(tx, bot, chat, ConversationKind::Direct, contact_id, ev).await
}

/// The bot's conversation in `chat`, opened (as `kind`) if the bot never talked there.
async fn open_conversation(
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

/// A new contact row; returns its id.
async fn insert_contact(
    tx: &mut Conn,
    tenant: &str,
    name: Option<&str>,
    phone: Option<&str>,
) -> Result<String, StoreError> {
    let id = new_id();
    let now = now_micros();
    sqlx::query(
        "INSERT INTO contacts (id, tenant_id, name, phone, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(&id)
    .bind(tenant)
    .bind(name)
    .bind(phone)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(id)
}

/// Finds (or opens) the conversation an outbound message goes to.
pub(super) async fn resolve_recipient(
    tx: &mut Conn,
    bot: &Bot,
    to: &Recipient,
    chat_kind: Option<ConversationKind>,
    ev: &mut Vec<PendingEvent>,
) -> Result<(Conversation, Option<String>), StoreError> {
    match to {
        Recipient::Conversation(id) => {
            let c = load_conversation(tx, id)
                .await
                .ok()
                .filter(|c| c.tenant == bot.tenant)
                .ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "to.conversation_id: conversation {id:?} not found"
                    ))
                })?;
            if c.bot_id != bot.id {
                return Err(StoreError::Invalid(format!(
                    "to.conversation_id: conversation {id:?} belongs to bot {:?}, not {:?}",
                    c.bot_id, bot.id
                )));
            }
            let contact = c.contact_id.clone();
            Ok((c, contact))
        }
        Recipient::Chat(chat) => {
            let kind = chat_kind.unwrap_or(ConversationKind::Direct);
            let c = open_conversation(tx, bot, chat, kind, None, ev).await?;
            let contact = c.contact_id.clone();
            Ok((c, contact))
        }
        Recipient::Contact(contact_id) => {
            let contact: Option<(Option<String>,)> =
                sqlx::query_as("SELECT phone FROM contacts WHERE id = $1 AND tenant_id = $2")
                    .bind(contact_id)
                    .bind(&bot.tenant)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some((phone,)) = contact else {
                return Err(StoreError::Invalid(format!(
                    "to.contact_id: contact {contact_id:?} not found"
                )));
            };
            let identity: Option<(String,)> = sqlx::query_as(
                "SELECT external_id FROM contact_identities WHERE contact_id = $1 AND bot_id = $2",
            )
            .bind(contact_id)
            .bind(&bot.id)
            .fetch_optional(&mut *tx)
            .await?;
            let chat = match (identity, phone) {
                (Some((ext,)), _) => ext,
                (None, Some(phone))
                    if matches!(bot.platform, Platform::Sms | Platform::Whatsapp) =>
                {
                    phone
                }
                _ => {
                    return Err(StoreError::Invalid(format!(
                        "to.contact_id: contact {contact_id:?} has no identity on bot {:?} ({})",
                        bot.id, bot.platform
                    )));
                }
            };
            let c = direct_conversation(tx, bot, &chat, Some(contact_id.clone()), ev).await?;
            Ok((c, Some(contact_id.clone())))
        }
        Recipient::Phone(phone) => {
            if !matches!(bot.platform, Platform::Sms | Platform::Whatsapp) {
                return Err(StoreError::Invalid(format!(
                    "to.phone: a {} bot cannot send to a phone number",
                    bot.platform
                )));
            }
            let contact: Option<(String,)> =
                sqlx::query_as("SELECT id FROM contacts WHERE tenant_id = $1 AND phone = $2")
                    .bind(&bot.tenant)
                    .bind(phone)
                    .fetch_optional(&mut *tx)
                    .await?;
            let contact_id = match contact {
                Some((id,)) => id,
                None => insert_contact(tx, &bot.tenant, None, Some(phone)).await?,
            };
            let c = direct_conversation(tx, bot, phone, Some(contact_id.clone()), ev).await?;
            Ok((c, Some(contact_id)))
        }
    }
}

pub(super) async fn transition(
    tx: &mut Conn,
    id: &str,
    t: &Transition,
    ev: &mut Vec<PendingEvent>,
) -> Result<Output, StoreError> {
    let mut m = load_message(tx, id).await?;
    let now = Utc::now();
    let allowed = match t {
        Transition::Sending => {
            m.status == MessageStatus::Queued || m.status == MessageStatus::Sending
        }
        _ => m.status == MessageStatus::Sending || m.status == MessageStatus::Queued,
    };
    if !allowed {
        return Err(StoreError::Conflict(format!(
            "message {id} is {}, not in the outbox",
            m.status.as_str()
        )));
    }
    let kind: Option<&'static str> = match t {
        Transition::Sending => {
            m.attempts += 1;
            set_status(&mut m, MessageStatus::Sending, now);
            Some(et::MESSAGE_STATUS)
        }
        Transition::Sent(external_id) => {
            m.external_id = Some(external_id.clone());
            m.error = None;
            set_status(&mut m, MessageStatus::Sent, now);
            Some(et::MESSAGE_SENT)
        }
        Transition::Retry {
            error,
            count_attempt,
        } => {
            if !count_attempt {
                m.attempts = m.attempts.saturating_sub(1);
            }
            m.error = Some(error.clone());
            set_status(&mut m, MessageStatus::Queued, now);
            Some(et::MESSAGE_STATUS)
        }
        Transition::Failed(error) => {
            m.error = Some(error.clone());
            set_status(&mut m, MessageStatus::Failed, now);
            Some(et::MESSAGE_FAILED)
        }
    };
    if let Some(kind) = kind {
        ev.push(message_event(kind, &m));
    }
    if matches!(t, Transition::Sent(_)) {
        apply_early_reports(tx, &mut m, ev).await?;
    }
    save_message(tx, &m).await?;
    Ok(Output::Message(Box::new(m)))
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
    let id: Option<(String,)> =
        sqlx::query_as("SELECT id FROM messages WHERE conversation_id = $1 AND external_id = $2")
            .bind(&conversation.id)
            .bind(&e.external_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((id,)) = id else {
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
        data,
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
