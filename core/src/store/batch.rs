//! What the jobs of one writer batch share on the hot path (enqueues, outbox transitions,
//! inbound messages): the contacts, conversations, messages and dedup keys they need, read
//! for the whole batch in a few `IN (...)` queries, and the messages and conversations they
//! write, written together in multi-row statements before anything else in the batch reads
//! them (see [`BatchCache::flush`]) and before the commit.

use std::collections::HashMap;

use super::rows::*;
use super::write_messages::{insert_messages, save_messages};
use super::writer::{Conn, Transition};
use super::*;
use crate::connector::InboundEvent;

#[derive(Default)]
pub(super) struct BatchCache {
    /// (tenant, phone) -> contact id, `None` when known not to exist.
    pub(super) contacts: HashMap<(String, String), Option<String>>,
    /// (bot, chat) -> conversation, `None` when known not to exist.
    pub(super) conversations: HashMap<(String, String), Option<Conversation>>,
    /// New messages (with their dedup keys) of jobs that succeeded, not inserted yet.
    pub(super) pending: Vec<(Message, Option<String>)>,
    /// (bot, dedup key) -> the message stored with it, `None` when known not to exist.
    pub(super) dedup: HashMap<(String, String), Option<String>>,
    /// (bot, sender's platform id) -> contact, `None` when known not to exist.
    pub(super) identities: HashMap<(String, String), Option<String>>,
    /// Conversations inbound messages changed (times, title, contact), not written yet.
    pub(super) touched: HashMap<String, Conversation>,
    /// What the current job changed here, undone if it fails.
    journal: Journal,
    /// Messages the batch's outbox transitions move, as the batch has left them.
    pub(super) messages: HashMap<String, Message>,
    /// Of those, the ones changed and not written yet.
    pub(super) changed: std::collections::BTreeSet<String>,
    /// External ids of the batch's `Sent` transitions -> whether delivery reports arrived
    /// for them before (see `apply_early_reports`).
    pub(super) early: HashMap<String, bool>,
    /// Contacts made for inbound messages' new senders, not inserted yet.
    new_contacts: Vec<NewContactRow>,
    /// Those senders' identities (bot, platform id -> contact), not inserted yet.
    new_identities: Vec<IdentityRow>,
}

/// A contact made for a new sender: id, tenant, name, phone.
struct NewContactRow {
    id: String,
    tenant: String,
    name: Option<String>,
    phone: Option<String>,
}

/// A sender's identity on a bot.
struct IdentityRow {
    bot: String,
    external_id: String,
    tenant: String,
    platform: Platform,
    contact: String,
}

/// What one job added to the batch's pending writes.
#[derive(Default)]
struct Journal {
    pending: usize,
    contacts: usize,
    identities: usize,
    touched: Vec<(String, Option<Conversation>)>,
    dedup: Vec<(String, String)>,
}

/// Values per `IN (...)` list of the batch reads.
const KEYS_PER_READ: usize = 500;

impl BatchCache {
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
        for (tenant, list) in phones {
            let found = pairs_in(tx, &CONTACT_BY_PHONE, tenant, list).await?;
            remember(&mut self.contacts, tenant, found);
        }
        for (bot, mut list) in chats {
            list.sort_unstable();
            list.dedup();
            self.read_conversations(tx, bot, &list).await?;
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
            q.in_list(chunk.iter().map(|v| (*v).to_owned()));
            let rows: Vec<MessageRow> = sqlx::query_as_with(sqlx::AssertSqlSafe(q.text), q.args)
                .fetch_all(&mut *tx)
                .await?;
            for row in rows {
                let m = Message::try_from(row)?;
                self.messages.insert(m.id.clone(), m);
            }
        }
        // Per bot: the reports are keyed by (bot, platform id); without the bot every
        // transition batch would scan all the reports ever received.
        let mut sent: HashMap<&str, Vec<&str>> = HashMap::new();
        for (id, t) in jobs {
            if let (Transition::Sent { external_id, .. }, Some(m)) = (t, self.messages.get(*id)) {
                sent.entry(m.bot_id.as_str()).or_default().push(external_id);
            }
        }
        for (bot, list) in sent {
            for (ext, waiting) in pairs_in(tx, &REPORT_WAITING, bot, list).await? {
                // Keyed by platform id alone: if two bots' sends share one, a report
                // waiting for either sends both down the path that applies reports.
                *self.early.entry(ext).or_default() |= waiting.is_some();
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

    /// Reads what the batch's inbound messages need: which dedup keys are stored, the
    /// senders' contacts and the chats' conversations.
    pub async fn prefetch_inbound(
        &mut self,
        tx: &mut Conn,
        jobs: &[(Arc<Bot>, &[InboundEvent])],
    ) -> Result<(), StoreError> {
        let mut keys: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut senders: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut phones: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut chats: HashMap<&str, Vec<&str>> = HashMap::new();
        for (bot, events) in jobs {
            for e in events.iter() {
                if let InboundEvent::Message(m) = e {
                    keys.entry(&bot.id).or_default().push(&m.dedup_key);
                    if let Some(s) = &m.sender {
                        senders.entry(&bot.id).or_default().push(&s.external_id);
                        if let Some(phone) = &s.phone {
                            phones.entry(&bot.tenant).or_default().push(phone);
                        }
                    }
                    chats
                        .entry(&bot.id)
                        .or_default()
                        .push(&m.chat.external_chat_id);
                }
            }
        }
        for (tenant, list) in phones {
            let found = pairs_in(tx, &CONTACT_BY_PHONE, tenant, list).await?;
            remember(&mut self.contacts, tenant, found);
        }
        for (bot, list) in keys {
            let found = pairs_in(tx, &MESSAGE_BY_DEDUP_KEY, bot, list).await?;
            remember(&mut self.dedup, bot, found);
        }
        for (bot, list) in senders {
            let found = pairs_in(tx, &CONTACT_BY_IDENTITY, bot, list).await?;
            remember(&mut self.identities, bot, found);
        }
        for (bot, mut list) in chats {
            list.sort_unstable();
            list.dedup();
            self.read_conversations(tx, bot, &list).await?;
        }
        Ok(())
    }

    /// True when the inbound events need no statement of their own: messages replying to
    /// nothing whose dedup key, sender (by identity, else by phone) and conversation the
    /// batch has read, found or not (a new sender's contact and a new conversation are
    /// made here and written at the flush).
    pub fn answers_ingest(&self, bot: &Bot, events: &[InboundEvent]) -> bool {
        let id = &bot.id;
        events.iter().all(|e| match e {
            InboundEvent::Message(m) => {
                m.reply_to_external_id.is_none()
                    && self.dedup.contains_key(&(id.clone(), m.dedup_key.clone()))
                    && m.sender.as_ref().is_none_or(|s| {
                        match self.identities.get(&(id.clone(), s.external_id.clone())) {
                            Some(Some(_)) => true,
                            Some(None) => s.phone.as_ref().is_none_or(|p| {
                                self.contacts.contains_key(&(bot.tenant.clone(), p.clone()))
                            }),
                            None => false,
                        }
                    })
                    && self
                        .conversations
                        .contains_key(&(id.clone(), m.chat.external_chat_id.clone()))
            }
            _ => false,
        })
    }

    /// A contact for a new sender (inserted at the next flush), known by its phone from now.
    pub fn new_contact(&mut self, tenant: &str, name: Option<&str>, phone: Option<&str>) -> String {
        let id = new_id();
        if let Some(p) = phone {
            self.contacts
                .insert((tenant.to_owned(), p.to_owned()), Some(id.clone()));
        }
        self.new_contacts.push(NewContactRow {
            id: id.clone(),
            tenant: tenant.to_owned(),
            name: name.map(str::to_owned),
            phone: phone.map(str::to_owned),
        });
        id
    }

    /// The tenant's contact with `phone`, as the batch knows it or as stored, else a new
    /// one (inserted at the next flush).
    pub async fn contact_for_phone(
        &mut self,
        tx: &mut Conn,
        tenant: &str,
        phone: &str,
        name: Option<&str>,
    ) -> Result<String, StoreError> {
        let known = match self.contact(tenant, phone) {
            Some(known) => known,
            None => super::write_contacts::phone_owner(tx, tenant, phone).await?,
        };
        Ok(match known {
            Some(id) => id,
            None => self.new_contact(tenant, name, Some(phone)),
        })
    }

    /// A sender's identity on `bot` (inserted at the next flush), known from now.
    pub fn new_identity(&mut self, bot: &Bot, external_id: &str, contact: &str) {
        self.identities.insert(
            (bot.id.clone(), external_id.to_owned()),
            Some(contact.to_owned()),
        );
        self.new_identities.push(IdentityRow {
            bot: bot.id.clone(),
            external_id: external_id.to_owned(),
            tenant: bot.tenant.clone(),
            platform: bot.platform,
            contact: contact.to_owned(),
        });
    }

    /// Starts a job: what it adds can be taken back with [`abort_job`](Self::abort_job).
    pub fn begin_job(&mut self) {
        self.journal = Journal {
            pending: self.pending.len(),
            contacts: self.new_contacts.len(),
            identities: self.new_identities.len(),
            ..Journal::default()
        };
    }

    /// Takes back what the failed job added (after its rollback; then flush what the jobs
    /// before it added, and forget what was read: the job may have created rows remembered
    /// here that its rollback removed).
    pub fn abort_job(&mut self) {
        let journal = std::mem::take(&mut self.journal);
        self.pending.truncate(journal.pending);
        self.new_contacts.truncate(journal.contacts);
        self.new_identities.truncate(journal.identities);
        for (id, before) in journal.touched.into_iter().rev() {
            match before {
                Some(c) => self.touched.insert(id, c),
                None => self.touched.remove(&id),
            };
        }
        for key in journal.dedup {
            self.dedup.remove(&key);
        }
    }

    /// A new message (inserted at the next flush).
    pub fn add_message(&mut self, m: Message, dedup_key: Option<String>) {
        if let Some(k) = &dedup_key {
            let key = (m.bot_id.clone(), k.clone());
            self.dedup.insert(key.clone(), Some(m.id.clone()));
            self.journal.dedup.push(key);
        }
        self.pending.push((m, dedup_key));
    }

    /// A conversation changed by an inbound message (written at the next flush).
    pub fn touch(&mut self, c: Conversation) {
        self.conversations.insert(
            (c.bot_id.clone(), c.external_chat_id.clone()),
            Some(c.clone()),
        );
        let before = self.touched.insert(c.id.clone(), c.clone());
        self.journal.touched.push((c.id, before));
    }

    /// Reads the bot's conversations in these chats into the cache.
    async fn read_conversations(
        &mut self,
        tx: &mut Conn,
        bot: &str,
        chats: &[&str],
    ) -> Result<(), StoreError> {
        let mut found = conversations_in(tx, bot, chats).await?;
        for chat in chats {
            // What this batch changed wins over what the store holds.
            let c = found
                .remove(*chat)
                .map(|c| self.touched.get(&c.id).cloned().unwrap_or(c));
            self.conversations
                .insert((bot.to_owned(), (*chat).to_owned()), c);
        }
        Ok(())
    }

    /// Writes the new contacts and identities, the new and changed conversations and
    /// messages, in that order (each refers to the ones before).
    pub async fn flush(&mut self, tx: &mut Conn) -> Result<(), StoreError> {
        write_new_senders(tx, &self.new_contacts, &self.new_identities).await?;
        self.new_contacts.clear();
        self.new_identities.clear();
        if !self.touched.is_empty() {
            let rows: Vec<Conversation> = self.touched.drain().map(|(_, c)| c).collect();
            write_conversations(tx, &rows).await?;
        }
        // New messages and changed ones in the same statements: the new ones do not
        // conflict, the changed ones update their state.
        let mut rows: Vec<(&Message, Option<&str>)> = self
            .pending
            .iter()
            .map(|(m, k)| (m, k.as_deref()))
            .collect();
        rows.extend(
            self.changed
                .iter()
                .filter_map(|id| self.messages.get(id))
                .map(|m| (m, None)),
        );
        if self.changed.is_empty() {
            insert_messages(tx, &rows).await?;
        } else {
            save_messages(tx, &rows).await?;
        }
        self.pending.clear();
        self.changed.clear();
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
        self.dedup.clear();
        self.identities.clear();
    }

    pub(super) fn contact(&self, tenant: &str, phone: &str) -> Option<Option<String>> {
        self.contacts
            .get(&(tenant.to_owned(), phone.to_owned()))
            .cloned()
    }

    pub(super) fn conversation(&self, bot: &str, chat: &str) -> Option<Option<Conversation>> {
        self.conversations
            .get(&(bot.to_owned(), chat.to_owned()))
            .cloned()
    }
}

/// A value looked up by key within a scope, through an index that starts with
/// `(scope, key)` (unique on them, or `filter` picks one row).
pub(super) struct Lookup {
    table: &'static str,
    scope: &'static str,
    key: &'static str,
    value: &'static str,
    /// Appended to the subquery's `WHERE` (empty when `(scope, key)` is unique).
    filter: &'static str,
}

/// A tenant's contact by phone.
pub(super) const CONTACT_BY_PHONE: Lookup = Lookup {
    table: "contacts",
    scope: "tenant_id",
    key: "phone",
    value: "id",
    filter: "",
};

/// A bot's message by the dedup key of the platform event that created it.
const MESSAGE_BY_DEDUP_KEY: Lookup = Lookup {
    table: "messages",
    scope: "bot_id",
    key: "dedup_key",
    value: "id",
    filter: "",
};

/// The contact behind a sender's platform id on a bot.
const CONTACT_BY_IDENTITY: Lookup = Lookup {
    table: "contact_identities",
    scope: "bot_id",
    key: "external_id",
    value: "contact_id",
    filter: "",
};

/// The bot's conversation in a chat.
const CONVERSATION_BY_CHAT: Lookup = Lookup {
    table: "conversations",
    scope: "bot_id",
    key: "external_chat_id",
    value: "id",
    filter: "",
};

/// A delivery report that arrived for a bot's platform message id before the send's
/// result was committed (any status; `value` is the id when one waits).
const REPORT_WAITING: Lookup = Lookup {
    table: "status_reports",
    scope: "bot_id",
    key: "external_id",
    value: "external_id",
    filter: " AND message_id IS NULL LIMIT 1",
};

/// The keys as a `VALUES` list, each with its value looked up by a correlated subquery on
/// `(scope, key)`: `SELECT k.column1, (SELECT value ...) FROM (VALUES (..), ..) AS k`
/// (without `k.column1` unless `with_key`).
///
/// Not `WHERE scope = $1 AND key IN (...)`: on PostgreSQL, with statistics older than a
/// table's growth (a new deployment, a bulk import), the planner scans every row of the
/// scope and filters the keys (measured: 4-13 ms per batch at 10,000 messages, growing with
/// the table); an equality on the whole unique index is one index probe per key whatever
/// the statistics say.
fn push_lookup(q: &mut super::sql::Sql, l: &Lookup, scope: &str, keys: &[&str], with_key: bool) {
    q.push(if with_key {
        "SELECT k.column1, (SELECT "
    } else {
        "SELECT (SELECT "
    });
    q.push(l.value)
        .push(" FROM ")
        .push(l.table)
        .push(" WHERE ")
        .push(l.scope)
        .push(" = ");
    q.bind(scope.to_owned())
        .push(" AND ")
        .push(l.key)
        .push(" = k.column1")
        .push(l.filter)
        .push(") FROM (VALUES ");
    for (i, k) in keys.iter().enumerate() {
        q.row(i);
        q.bind((*k).to_owned()).push(")");
    }
    q.push(") AS k");
}

/// Each key's value in `scope` (`None` when no row has the key), one statement per chunk
/// of keys (see [`push_lookup`]).
pub(super) async fn pairs_in(
    tx: &mut Conn,
    lookup: &Lookup,
    scope: &str,
    mut keys: Vec<&str>,
) -> Result<Vec<(String, Option<String>)>, StoreError> {
    keys.sort_unstable();
    keys.dedup();
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(KEYS_PER_READ) {
        let mut q = super::sql::Sql::on(tx, "");
        push_lookup(&mut q, lookup, scope, chunk, true);
        out.extend(
            sqlx::query_as_with::<_, (String, Option<String>), _>(
                sqlx::AssertSqlSafe(q.text),
                q.args,
            )
            .fetch_all(&mut *tx)
            .await?,
        );
    }
    Ok(out)
}

/// Puts what [`pairs_in`] read for `scope` into a cache keyed by (scope, key).
fn remember(
    cache: &mut HashMap<(String, String), Option<String>>,
    scope: &str,
    found: Vec<(String, Option<String>)>,
) {
    for (key, value) in found {
        cache.insert((scope.to_owned(), key), value);
    }
}

/// The bot's conversations in these chats, by chat id: their ids looked up by chat (see
/// [`push_lookup`]), their rows read by id.
pub(super) async fn conversations_in(
    tx: &mut Conn,
    bot: &str,
    chats: &[&str],
) -> Result<HashMap<String, Conversation>, StoreError> {
    let mut found = HashMap::new();
    for chunk in chats.chunks(KEYS_PER_READ) {
        let mut q = super::sql::Sql::on(
            tx,
            concat!(
                "SELECT ",
                crate::conversation_columns!(),
                " FROM conversations WHERE id IN ("
            ),
        );
        push_lookup(&mut q, &CONVERSATION_BY_CHAT, bot, chunk, false);
        q.push(")");
        let rows: Vec<ConversationRow> = sqlx::query_as_with(sqlx::AssertSqlSafe(q.text), q.args)
            .fetch_all(&mut *tx)
            .await?;
        for row in rows {
            let c = Conversation::try_from(row)?;
            found.insert(c.external_chat_id.clone(), c);
        }
    }
    Ok(found)
}

/// Rows per multi-row insert of new senders' contacts (6 parameters) and identities (5).
const SENDERS_PER_WRITE: usize = 100;

/// Inserts the contacts made for new senders, then their identities, in multi-row
/// statements.
async fn write_new_senders(
    tx: &mut Conn,
    contacts: &[NewContactRow],
    identities: &[IdentityRow],
) -> Result<(), StoreError> {
    let now = now_micros();
    for chunk in contacts.chunks(SENDERS_PER_WRITE) {
        let mut q = super::sql::Sql::on(
            tx,
            "INSERT INTO contacts (id, tenant_id, name, phone, created_at, updated_at) VALUES ",
        );
        for (i, c) in chunk.iter().enumerate() {
            q.row(i);
            q.bind(c.id.clone()).push(", ");
            q.bind(c.tenant.clone()).push(", ");
            q.bind(c.name.clone()).push(", ");
            q.bind(c.phone.clone()).push(", ");
            q.bind(now).push(", ");
            q.bind(now).push(")");
        }
        sqlx::query_with::<sqlx::any::Any, _>(sqlx::AssertSqlSafe(q.text), q.args)
            .execute(&mut *tx)
            .await?;
    }
    for chunk in identities.chunks(SENDERS_PER_WRITE) {
        let mut q = super::sql::Sql::on(
            tx,
            "INSERT INTO contact_identities (bot_id, external_id, tenant_id, platform, contact_id) VALUES ",
        );
        for (i, r) in chunk.iter().enumerate() {
            q.row(i);
            q.bind(r.bot.clone()).push(", ");
            q.bind(r.external_id.clone()).push(", ");
            q.bind(r.tenant.clone()).push(", ");
            q.bind(r.platform.as_str().to_owned()).push(", ");
            q.bind(r.contact.clone()).push(")");
        }
        sqlx::query_with::<sqlx::any::Any, _>(sqlx::AssertSqlSafe(q.text), q.args)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Rows per multi-row conversation write (11 parameters each).
const CONVERSATIONS_PER_WRITE: usize = 80;

/// Writes conversations (new or changed) in multi-row upserts.
pub(super) async fn write_conversations(
    tx: &mut Conn,
    rows: &[Conversation],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(CONVERSATIONS_PER_WRITE) {
        let mut q = super::sql::Sql::on(
            tx,
            "INSERT INTO conversations (id, tenant_id, bot_id, platform, external_chat_id, kind, title, \
             contact_id, last_message_at, created_at, last_inbound_at) VALUES ",
        );
        for (i, c) in chunk.iter().enumerate() {
            q.row(i);
            q.bind(c.id.clone()).push(", ");
            q.bind(c.tenant.clone()).push(", ");
            q.bind(c.bot_id.clone()).push(", ");
            q.bind(c.platform.as_str().to_owned()).push(", ");
            q.bind(c.external_chat_id.clone()).push(", ");
            q.bind(c.kind.as_str().to_owned()).push(", ");
            q.bind(c.title.clone()).push(", ");
            q.bind(c.contact_id.clone()).push(", ");
            q.bind(c.last_message_at.map(to_micros)).push(", ");
            q.bind(to_micros(c.created_at)).push(", ");
            q.bind(c.last_inbound_at.map(to_micros)).push(")");
        }
        q.push(
            " ON CONFLICT (id) DO UPDATE SET title = excluded.title, contact_id = excluded.contact_id, \
             last_message_at = excluded.last_message_at, last_inbound_at = excluded.last_inbound_at",
        );
        sqlx::query_with::<sqlx::any::Any, _>(sqlx::AssertSqlSafe(q.text), q.args)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::write_inbound::{MESSAGE_IN_CHAT, OUTBOUND_BY_PLATFORM_ID};
    use super::*;

    /// SQLite's plan for `sql` with its arguments, one line per step.
    async fn plan(tx: &mut Conn, sql: &str, args: sqlx::any::AnyArguments) -> String {
        let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as_with(
            sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")),
            args,
        )
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("; ")
    }

    fn two(a: &str, b: &str) -> sqlx::any::AnyArguments {
        let mut q = super::super::sql::Sql::new("");
        q.bind(a.to_owned()).bind(b.to_owned());
        q.args
    }

    /// The per-message lookups of the hot paths stay index probes: a scan here costs the
    /// single writer time that grows with the table (a reply read its whole conversation;
    /// every batch of sends read every delivery report ever received).
    #[tokio::test]
    async fn hot_path_lookups_by_platform_id_probe_an_index_instead_of_scanning() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("plans.db").display());
        let store = Store::open(&url, StoreOptions::default()).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        let tx: &mut Conn = &mut conn;

        let reply = plan(tx, MESSAGE_IN_CHAT, two("conversation", "42")).await;
        assert!(
            reply.contains("USING INDEX messages_chat_external"),
            "{reply}"
        );
        let report = plan(tx, OUTBOUND_BY_PLATFORM_ID, two("bot", "SM1")).await;
        assert!(report.contains("USING INDEX messages_external"), "{report}");

        let mut q = super::super::sql::Sql::on(tx, "");
        push_lookup(&mut q, &REPORT_WAITING, "bot", &["SM1", "SM2"], true);
        let waiting = plan(tx, &q.text, q.args).await;
        assert!(waiting.contains("status_reports USING"), "{waiting}");
        for p in [&reply, &report, &waiting] {
            assert!(!p.contains("SCAN messages"), "{p}");
            assert!(!p.contains("SCAN status_reports"), "{p}");
        }
        drop(conn);
        store.close().await;
    }
}
