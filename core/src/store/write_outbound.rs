//! Writes of what the business sends: enqueue (recipient resolution, idempotency, the reply
//! window) and the outbox transitions of a message.

use chrono::Utc;

use super::batch::BatchCache;
use super::rows::*;
use super::write_inbound::apply_early_reports;
use super::write_messages::*;
use super::writer::{Conn, Output, PendingEvent, Transition};
use super::*;
use crate::model::event_type as et;

pub(super) async fn enqueue(
    tx: &mut Conn,
    bot: &Bot,
    new: &NewOutbound,
    ev: &mut Vec<PendingEvent>,
    batch: &mut BatchCache,
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
    if bot.tenant != new.tenant {
        return Err(StoreError::NotFound);
    }
    let (conversation, contact_id) =
        resolve_recipient(tx, bot, &new.to, new.chat_kind, ev, batch).await?;
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
    let message = queued_message(
        bot,
        &conversation.id,
        contact_id,
        new.content.clone(),
        new.reply_to.clone(),
        new.segments,
        now,
    );
    // The conversation's last_message_at is set once per batch by the writer; the message
    // is inserted with the batch's others, except when a key refers to it.
    if new.idempotency.is_some() {
        insert_message(tx, &message, None).await?;
    } else {
        batch.add_message(message.clone(), None);
    }
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

/// Finds (or opens) the conversation an outbound message goes to.
pub(super) async fn resolve_recipient(
    tx: &mut Conn,
    bot: &Bot,
    to: &Recipient,
    chat_kind: Option<ConversationKind>,
    ev: &mut Vec<PendingEvent>,
    batch: &mut BatchCache,
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
            let c = batch_conversation(tx, bot, chat, kind, None, ev, batch).await?;
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
            let contact_id = batch
                .contact_for_phone(tx, &bot.tenant, phone, None)
                .await?;
            let c = batch_conversation(
                tx,
                bot,
                phone,
                ConversationKind::Direct,
                Some(contact_id.clone()),
                ev,
                batch,
            )
            .await?;
            Ok((c, Some(contact_id)))
        }
    }
}

/// The bot's conversation in `chat` as the batch knows it, else found or opened.
async fn batch_conversation(
    tx: &mut Conn,
    bot: &Bot,
    chat: &str,
    kind: ConversationKind,
    contact_id: Option<String>,
    ev: &mut Vec<PendingEvent>,
    batch: &mut BatchCache,
) -> Result<Conversation, StoreError> {
    let c = match batch.conversation(&bot.id, chat) {
        Some(Some(c)) => return Ok(c),
        Some(None) => {
            let chat = crate::connector::ChatRef {
                external_chat_id: chat.to_string(),
                kind,
                title: None,
            };
            create_conversation(tx, bot, &chat, contact_id, ev).await?
        }
        None => open_conversation(tx, bot, chat, kind, contact_id, ev).await?,
    };
    batch
        .conversations
        .insert((bot.id.clone(), chat.to_owned()), Some(c.clone()));
    Ok(c)
}

pub(super) async fn transition(
    tx: &mut Conn,
    id: &str,
    t: &Transition,
    ev: &mut Vec<PendingEvent>,
    batch: &mut BatchCache,
) -> Result<Output, StoreError> {
    let mut m = match batch.messages.get(id) {
        Some(m) => m.clone(),
        None => load_message(tx, id).await?,
    };
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
        Transition::Sent { external_id, cost } => {
            m.external_id = Some(external_id.clone());
            if cost.is_some() {
                m.cost = cost.clone();
            }
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
    if let Transition::Sent { external_id, .. } = t
        && batch.early.get(external_id) != Some(&false)
    {
        apply_early_reports(tx, &mut m, ev).await?;
    }
    // Written with the batch's other changes (before anything else reads messages).
    batch.changed.insert(m.id.clone());
    batch.messages.insert(m.id.clone(), m.clone());
    Ok(Output::Message(Box::new(m)))
}
