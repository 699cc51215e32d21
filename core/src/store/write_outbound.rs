//! Writes of what the business sends: enqueue (recipient resolution, idempotency, the reply
//! window) and the outbox transitions of a message.

use std::collections::HashMap;

use chrono::Utc;

use super::rows::*;
use super::write_inbound::apply_early_reports;
use super::write_messages::*;
use super::writer::{Conn, Output, PendingEvent, Transition};
use super::*;
use crate::model::event_type as et;

/// What the enqueues of one batch share: their recipients' contacts and conversations, read
/// for all of them in a few statements, and their new messages, inserted together before
/// anything else reads messages (see [`OutboundBatch::flush`]) and before the commit.
#[derive(Default)]
pub(super) struct OutboundBatch {
    /// (tenant, phone) -> contact id, `None` when known not to exist.
    contacts: HashMap<(String, String), Option<String>>,
    /// (bot, chat) -> conversation, `None` when known not to exist.
    conversations: HashMap<(String, String), Option<Conversation>>,
    /// Messages of enqueues that succeeded, not inserted yet.
    pending: Vec<Message>,
    /// Messages the batch's outbox transitions move, as the batch has left them.
    messages: HashMap<String, Message>,
    /// Of those, the ones changed and not written yet.
    changed: std::collections::BTreeSet<String>,
    /// External ids of the batch's `Sent` transitions -> whether delivery reports arrived
    /// for them before (see `apply_early_reports`).
    early: HashMap<String, bool>,
}

/// Values per `IN (...)` list of the batch reads.
const KEYS_PER_READ: usize = 500;

impl OutboundBatch {
    /// Reads the contacts and conversations the batch's enqueues by phone or chat id go to.
    pub async fn prefetch(
        &mut self,
        tx: &mut Conn,
        jobs: &[&NewOutbound],
    ) -> Result<(), StoreError> {
        let mut phones: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut chats: HashMap<&str, Vec<&str>> = HashMap::new();
        for new in jobs {
            match &new.to {
                Recipient::Phone(p) => {
                    phones.entry(&new.tenant).or_default().push(p);
                    chats.entry(&new.bot_id).or_default().push(p);
                }
                Recipient::Chat(c) => chats.entry(&new.bot_id).or_default().push(c),
                _ => {}
            }
        }
        for (tenant, mut list) in phones {
            list.sort_unstable();
            list.dedup();
            for chunk in list.chunks(KEYS_PER_READ) {
                let mut q =
                    super::sql::Sql::on(&*tx, "SELECT id, phone FROM contacts WHERE tenant_id = ");
                q.bind(tenant.to_owned()).push(" AND phone IN (");
                in_list(&mut q, chunk);
                let found: Vec<(String, String)> =
                    sqlx::query_as_with(sqlx::AssertSqlSafe(q.text), q.args)
                        .fetch_all(&mut *tx)
                        .await?;
                for p in chunk {
                    self.contacts
                        .insert((tenant.to_owned(), (*p).to_owned()), None);
                }
                for (id, phone) in found {
                    self.contacts.insert((tenant.to_owned(), phone), Some(id));
                }
            }
        }
        for (bot, mut list) in chats {
            list.sort_unstable();
            list.dedup();
            for chunk in list.chunks(KEYS_PER_READ) {
                let mut q = super::sql::Sql::on(
                    &*tx,
                    concat!(
                        "SELECT ",
                        crate::conversation_columns!(),
                        " FROM conversations WHERE bot_id = "
                    ),
                );
                q.bind(bot.to_owned()).push(" AND external_chat_id IN (");
                in_list(&mut q, chunk);
                let found: Vec<ConversationRow> =
                    sqlx::query_as_with(sqlx::AssertSqlSafe(q.text), q.args)
                        .fetch_all(&mut *tx)
                        .await?;
                for c in chunk {
                    self.conversations
                        .insert((bot.to_owned(), (*c).to_owned()), None);
                }
                for row in found {
                    let c = Conversation::try_from(row)?;
                    self.conversations
                        .insert((bot.to_owned(), c.external_chat_id.clone()), Some(c));
                }
            }
        }
        Ok(())
    }

    /// Reads the messages the batch's outbox transitions move, and which of the `Sent` ones
    /// have delivery reports waiting.
    pub async fn prefetch_transitions(
        &mut self,
        tx: &mut Conn,
        jobs: &[(&str, &Transition)],
    ) -> Result<(), StoreError> {
        let ids: Vec<&str> = jobs.iter().map(|(id, _)| *id).collect();
        for chunk in ids.chunks(KEYS_PER_READ) {
            let mut q = super::sql::Sql::on(
                &*tx,
                concat!(
                    "SELECT ",
                    crate::message_columns!(),
                    " FROM messages WHERE id IN ("
                ),
            );
            in_list(&mut q, chunk);
            let rows: Vec<MessageRow> = sqlx::query_as_with(sqlx::AssertSqlSafe(q.text), q.args)
                .fetch_all(&mut *tx)
                .await?;
            for row in rows {
                let m = Message::try_from(row)?;
                self.messages.insert(m.id.clone(), m);
            }
        }
        let sent: Vec<&str> = jobs
            .iter()
            .filter_map(|(_, t)| match t {
                Transition::Sent { external_id, .. } => Some(external_id.as_str()),
                _ => None,
            })
            .collect();
        for chunk in sent.chunks(KEYS_PER_READ) {
            let mut q = super::sql::Sql::on(
                &*tx,
                "SELECT DISTINCT external_id FROM status_reports WHERE message_id IS NULL AND external_id IN (",
            );
            in_list(&mut q, chunk);
            let waiting: Vec<(String,)> = sqlx::query_as_with(sqlx::AssertSqlSafe(q.text), q.args)
                .fetch_all(&mut *tx)
                .await?;
            for ext in chunk {
                self.early.insert((*ext).to_owned(), false);
            }
            for (ext,) in waiting {
                self.early.insert(ext, true);
            }
        }
        Ok(())
    }

    /// True when the transition needs no statement of its own: its message was read and no
    /// delivery report waits for it (its change is written with the batch's others).
    pub fn answers_transition(&self, id: &str, t: &Transition) -> bool {
        self.messages.contains_key(id)
            && match t {
                Transition::Sent { external_id, .. } => self.early.get(external_id) == Some(&false),
                _ => true,
            }
    }

    /// True when `new` needs no read or write of its own: its contact and conversation are
    /// known, and only its message (inserted later) is written. Such a job cannot fail
    /// half-way, so it needs no savepoint.
    pub fn answers_enqueue(&self, new: &NewOutbound) -> bool {
        if new.idempotency.is_some() || new.reply_to.is_some() {
            return false;
        }
        let conversation = |chat: &str| {
            matches!(
                self.conversations
                    .get(&(new.bot_id.clone(), chat.to_owned())),
                Some(Some(_))
            )
        };
        match &new.to {
            Recipient::Phone(p) => {
                conversation(p)
                    && matches!(
                        self.contacts.get(&(new.tenant.clone(), p.clone())),
                        Some(Some(_))
                    )
            }
            Recipient::Chat(c) => conversation(c),
            _ => false,
        }
    }

    /// Writes the new and changed messages.
    pub async fn flush(&mut self, tx: &mut Conn) -> Result<(), StoreError> {
        if !self.pending.is_empty() {
            let rows: Vec<(&Message, Option<&str>)> =
                self.pending.iter().map(|m| (m, None)).collect();
            insert_messages(tx, &rows).await?;
            self.pending.clear();
        }
        if !self.changed.is_empty() {
            let rows: Vec<&Message> = self
                .changed
                .iter()
                .filter_map(|id| self.messages.get(id))
                .collect();
            save_messages(tx, &rows).await?;
            self.changed.clear();
        }
        Ok(())
    }

    /// Forgets what was read (after [`flush`](Self::flush)): after a job that was rolled
    /// back (it may have created a row remembered here) or one that may change contacts,
    /// conversations, messages or delivery reports.
    pub fn forget(&mut self) {
        self.contacts.clear();
        self.conversations.clear();
        self.messages.retain(|id, _| self.changed.contains(id));
        self.early.clear();
    }

    fn contact(&self, tenant: &str, phone: &str) -> Option<Option<String>> {
        self.contacts
            .get(&(tenant.to_owned(), phone.to_owned()))
            .cloned()
    }

    fn conversation(&self, bot: &str, chat: &str) -> Option<Option<Conversation>> {
        self.conversations
            .get(&(bot.to_owned(), chat.to_owned()))
            .cloned()
    }
}

/// `$a, $b, ...)` for the values.
fn in_list(q: &mut super::sql::Sql, values: &[&str]) {
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.bind((*v).to_owned());
    }
    q.push(")");
}

pub(super) async fn enqueue(
    tx: &mut Conn,
    bot: &Bot,
    new: &NewOutbound,
    ev: &mut Vec<PendingEvent>,
    batch: &mut OutboundBatch,
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
        segments: new.segments,
        cost: None,
    };
    // The conversation's last_message_at is set once per batch by the writer; the message
    // is inserted with the batch's others, except when a key refers to it.
    if new.idempotency.is_some() {
        insert_message(tx, &message, None).await?;
    } else {
        batch.pending.push(message.clone());
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
    batch: &mut OutboundBatch,
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
            let contact = match batch.contact(&bot.tenant, phone) {
                Some(known) => known,
                None => sqlx::query_as::<_, (String,)>(
                    "SELECT id FROM contacts WHERE tenant_id = $1 AND phone = $2",
                )
                .bind(&bot.tenant)
                .bind(phone)
                .fetch_optional(&mut *tx)
                .await?
                .map(|(id,)| id),
            };
            let contact_id = match contact {
                Some(id) => id,
                None => {
                    let id = insert_contact(tx, &bot.tenant, None, Some(phone)).await?;
                    batch
                        .contacts
                        .insert((bot.tenant.clone(), phone.clone()), Some(id.clone()));
                    id
                }
            };
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
    batch: &mut OutboundBatch,
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
    batch: &mut OutboundBatch,
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
