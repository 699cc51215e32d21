//! The single writer: group commit, savepoint per write, event append, ordered publish.
//!
//! Writers send a [`Job`] and await its reply. The task takes every job waiting (up to
//! `max_batch`), opens one transaction, applies each job inside its own savepoint, gives the
//! events of each successful job the tenant's next sequence numbers and inserts them, writes
//! the tenants' new `last_seq`, commits, and only then replies and publishes the events. A
//! failed commit fails every job of the batch (nothing was written). Because one task writes,
//! sequence numbers have no gaps and events are published in seq order; on PostgreSQL the
//! `UPDATE tenants ... RETURNING last_seq` row lock keeps that true across instances.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::AnyConnection;
use sqlx::any::Any;
use sqlx::{AnyPool, Connection};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::rows::*;
use super::*;
use crate::connector::{InboundMessage, StatusReport};
use crate::model::event_type as et;

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Jobs waiting before senders are back-pressured.
    pub queue: usize,
    /// Most jobs committed in one transaction.
    pub max_batch: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            queue: 8192,
            max_batch: 512,
        }
    }
}

pub(super) struct Job {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Output, StoreError>>,
}

pub(super) enum Op {
    UpsertTenant {
        id: String,
        name: String,
        time_zone: String,
        source: String,
    },
    ReplaceApiKeys {
        tenant: String,
        source: String,
        hashes: Vec<(String, String)>,
    },
    AddApiKey {
        tenant: String,
        hash: String,
        hint: String,
    },
    RevokeApiKey {
        tenant: String,
        key_id: String,
    },
    UpsertBot(Box<BotWrite>),
    DeleteBot {
        scope: Scope,
        id: String,
    },
    SetBotState {
        id: String,
        state: BotState,
        reason: Option<String>,
        last_error: Option<String>,
    },
    Ingest {
        bot_id: String,
        events: Vec<InboundEvent>,
    },
    Enqueue(Box<NewOutbound>),
    Transition {
        id: String,
        t: Transition,
    },
    SetBotEnabled {
        id: String,
        enabled: bool,
    },
    SetCursor {
        bot_id: String,
        name: String,
        value: String,
    },
    PruneIdempotency(DateTime<Utc>),
    Shutdown,
}

pub(super) enum Transition {
    Sending,
    Sent(String),
    Retry {
        error: MessageError,
        count_attempt: bool,
    },
    Failed(MessageError),
}

pub(super) enum Output {
    Unit,
    Id(String),
    Count(u64),
    Tenant(Tenant),
    Bot(Box<Bot>),
    Message(Box<Message>),
    Enqueued(Box<Enqueued>),
    Ingested(Vec<IngestOutcome>),
}

impl Output {
    pub fn unexpected(self) -> StoreError {
        StoreError::corrupt("store writer answered with an unexpected result")
    }
}

/// An event produced by a job, waiting for its sequence number.
struct PendingEvent {
    tenant: String,
    kind: &'static str,
    bot_id: Option<String>,
    data: serde_json::Value,
}

type Conn = AnyConnection;

/// Where committed writes are announced: live events, and new outbox entries in commit order.
pub(super) struct Announce {
    pub events: broadcast::Sender<Arc<Event>>,
    pub enqueued: mpsc::UnboundedSender<OutboxEntry>,
}

pub(super) async fn run(
    pool: AnyPool,
    dialect: Dialect,
    mut rx: mpsc::Receiver<Job>,
    announce: Announce,
    config: WriterConfig,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(config.max_batch);
    let mut shutdown: Option<oneshot::Sender<Result<Output, StoreError>>> = None;
    loop {
        if rx.recv_many(&mut batch, config.max_batch).await == 0 {
            break;
        }
        // Pull a Shutdown out: the jobs before it are still committed.
        if let Some(pos) = batch.iter().position(|j| matches!(j.op, Op::Shutdown)) {
            let job = batch.remove(pos);
            shutdown = Some(job.reply);
            rx.close();
            while let Ok(j) = rx.try_recv() {
                batch.push(j);
            }
        }
        commit_batch(&pool, dialect, &mut batch, &announce).await;
        if shutdown.is_some() {
            break;
        }
    }
    if let Some(reply) = shutdown {
        let _ = reply.send(Ok(Output::Unit));
    }
}

async fn commit_batch(pool: &AnyPool, dialect: Dialect, batch: &mut Vec<Job>, announce: &Announce) {
    let started = std::time::Instant::now();
    let size = batch.len();
    match apply_batch(pool, dialect, batch).await {
        Ok((results, published)) => {
            for (job, result) in batch.drain(..).zip(results) {
                if let Ok(Output::Enqueued(e)) = &result
                    && !e.replayed
                {
                    let _ = announce.enqueued.send(OutboxEntry {
                        message: e.message.clone(),
                        conversation: e.conversation.clone(),
                        reply_to_external_id: None,
                    });
                }
                let _ = job.reply.send(result);
            }
            for e in published {
                let _ = announce.events.send(e);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, jobs = size, "store batch failed to commit");
            let msg = e.to_string();
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(StoreError::Invalid(format!(
                    "write not committed: {msg}"
                ))));
            }
        }
    }
    metrics::histogram!(crate::metrics::STORE_COMMIT_SECONDS)
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!(crate::metrics::STORE_BATCH_SIZE).record(size as f64);
}

type BatchResult = (Vec<Result<Output, StoreError>>, Vec<Arc<Event>>);

async fn apply_batch(
    pool: &AnyPool,
    dialect: Dialect,
    batch: &[Job],
) -> Result<BatchResult, StoreError> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let mut seqs: HashMap<String, (i64, i64)> = HashMap::new(); // tenant -> (first, current)
    let mut results = Vec::with_capacity(batch.len());
    let mut published = Vec::new();
    for job in batch {
        sqlx::query("SAVEPOINT job").execute(&mut *tx).await?;
        let mut pending = Vec::new();
        let result = apply(&mut tx, dialect, &job.op, &mut pending).await;
        match result {
            Ok(out) => {
                sqlx::query("RELEASE SAVEPOINT job")
                    .execute(&mut *tx)
                    .await?;
                for p in pending {
                    let seq = next_seq(&mut tx, &mut seqs, &p.tenant).await?;
                    let at = Utc::now();
                    let event = Event {
                        seq,
                        kind: p.kind.to_string(),
                        tenant: p.tenant,
                        at,
                        bot_id: p.bot_id,
                        data: p.data,
                    };
                    sqlx::query(
                        "INSERT INTO events (tenant_id, seq, type, bot_id, at, data) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(&event.tenant)
                    .bind(event.seq)
                    .bind(&event.kind)
                    .bind(&event.bot_id)
                    .bind(to_micros(at))
                    .bind(event.data.to_string())
                    .execute(&mut *tx)
                    .await?;
                    published.push(Arc::new(event));
                }
                results.push(Ok(out));
            }
            Err(e) => {
                sqlx::query("ROLLBACK TO SAVEPOINT job")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("RELEASE SAVEPOINT job")
                    .execute(&mut *tx)
                    .await?;
                results.push(Err(e));
            }
        }
    }
    for (tenant, (first, current)) in &seqs {
        if current != first {
            sqlx::query("UPDATE tenants SET last_seq = $1 WHERE id = $2")
                .bind(*current)
                .bind(tenant)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok((results, published))
}

async fn next_seq(
    tx: &mut Conn,
    seqs: &mut HashMap<String, (i64, i64)>,
    tenant: &str,
) -> Result<i64, StoreError> {
    if let Some((_, current)) = seqs.get_mut(tenant) {
        *current += 1;
        return Ok(*current);
    }
    // Locks the tenant row (PostgreSQL) until commit, so concurrent instances serialize.
    let row: Option<(i64,)> =
        sqlx::query_as("UPDATE tenants SET last_seq = last_seq WHERE id = $1 RETURNING last_seq")
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
    let first = row
        .ok_or_else(|| StoreError::Invalid(format!("unknown tenant {tenant:?}")))?
        .0;
    seqs.insert(tenant.to_string(), (first, first + 1));
    Ok(first + 1)
}

async fn apply(
    tx: &mut Conn,
    dialect: Dialect,
    op: &Op,
    ev: &mut Vec<PendingEvent>,
) -> Result<Output, StoreError> {
    let _ = dialect;
    match op {
        Op::UpsertTenant {
            id,
            name,
            time_zone,
            source,
        } => {
            sqlx::query(
                "INSERT INTO tenants (id, name, time_zone, last_seq, source, created_at) VALUES ($1, $2, $3, 0, $4, $5) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, time_zone = excluded.time_zone",
            )
            .bind(id)
            .bind(name)
            .bind(time_zone)
            .bind(source)
            .bind(now_micros())
            .execute(&mut *tx)
            .await?;
            let row: TenantRow =
                sqlx::query_as("SELECT id, name, time_zone, created_at FROM tenants WHERE id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            Ok(Output::Tenant(row.into()))
        }
        Op::ReplaceApiKeys {
            tenant,
            source,
            hashes,
        } => {
            let now = now_micros();
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND source = $3 AND revoked_at IS NULL")
                .bind(now)
                .bind(tenant)
                .bind(source)
                .execute(&mut *tx)
                .await?;
            for (hash, hint) in hashes {
                sqlx::query(
                    "INSERT INTO api_keys (id, tenant_id, key_hash, hint, source, created_at, revoked_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, NULL) \
                     ON CONFLICT (key_hash) DO UPDATE SET revoked_at = NULL, tenant_id = excluded.tenant_id, source = excluded.source",
                )
                .bind(new_id())
                .bind(tenant)
                .bind(hash)
                .bind(hint)
                .bind(source)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            Ok(Output::Unit)
        }
        Op::AddApiKey { tenant, hash, hint } => {
            let id = new_id();
            sqlx::query(
                "INSERT INTO api_keys (id, tenant_id, key_hash, hint, source, created_at) VALUES ($1, $2, $3, $4, 'api', $5)",
            )
            .bind(&id)
            .bind(tenant)
            .bind(hash)
            .bind(hint)
            .bind(now_micros())
            .execute(&mut *tx)
            .await?;
            Ok(Output::Id(id))
        }
        Op::RevokeApiKey { tenant, key_id } => {
            let done = sqlx::query(
                "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
            )
            .bind(now_micros())
            .bind(key_id)
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(Output::Unit)
        }
        Op::UpsertBot(b) => upsert_bot(tx, b).await,
        Op::DeleteBot { scope, id } => {
            let owned: Option<(String,)> = sqlx::query_as(
                "SELECT tenant_id FROM bots WHERE id = $1 AND ($2 = '*' OR tenant_id = $2)",
            )
            .bind(id)
            .bind(scope.param())
            .fetch_optional(&mut *tx)
            .await?;
            if owned.is_none() {
                return Err(StoreError::NotFound);
            }
            // Messages and conversations stay (they are the tenant's history); the outbox
            // of a deleted bot can never be sent, so its queued messages are cancelled.
            let queued: Vec<MessageRow> = sqlx::query_as(concat!(
                "SELECT ",
                crate::message_columns!(),
                " FROM messages WHERE bot_id = $1 AND status IN ('queued', 'sending')"
            ))
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            for row in queued {
                let mut m = Message::try_from(row)?;
                set_status(&mut m, MessageStatus::Cancelled, Utc::now());
                m.error = Some(MessageError {
                    code: "bot_deleted".into(),
                    message: "the bot was deleted before the message was sent".into(),
                    platform_code: None,
                });
                save_message(tx, &m).await?;
                ev.push(message_event(et::MESSAGE_STATUS, &m));
            }
            sqlx::query("DELETE FROM bot_cursors WHERE bot_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM bots WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            Ok(Output::Unit)
        }
        Op::SetBotState {
            id,
            state,
            reason,
            last_error,
        } => {
            let now = now_micros();
            let done = sqlx::query(
                "UPDATE bots SET state = $1, state_reason = $2, last_error = COALESCE($3, last_error), updated_at = $4 WHERE id = $5",
            )
            .bind(state.as_str())
            .bind(reason)
            .bind(last_error)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            let bot = load_bot(tx, id).await?;
            ev.push(PendingEvent {
                tenant: bot.tenant.clone(),
                kind: et::BOT_STATE,
                bot_id: Some(bot.id.clone()),
                data: serde_json::json!({
                    "bot_id": bot.id,
                    "platform": bot.platform,
                    "state": bot.state,
                    "state_reason": bot.state_reason,
                    "last_error": bot.last_error,
                }),
            });
            Ok(Output::Bot(Box::new(bot)))
        }
        Op::Ingest { bot_id, events } => {
            let bot = load_bot(tx, bot_id).await?;
            sqlx::query("UPDATE bots SET last_seen_at = $1 WHERE id = $2")
                .bind(now_micros())
                .bind(bot_id)
                .execute(&mut *tx)
                .await?;
            let mut outcomes = Vec::with_capacity(events.len());
            for e in events {
                let outcome = match e {
                    InboundEvent::Message(m) => ingest_message(tx, &bot, m, ev).await?,
                    InboundEvent::Status(s) => apply_status(tx, &bot, s, ev).await?,
                };
                outcomes.push(outcome);
            }
            Ok(Output::Ingested(outcomes))
        }
        Op::Enqueue(new) => enqueue(tx, new, ev).await,
        Op::Transition { id, t } => transition(tx, id, t, ev).await,
        Op::SetBotEnabled { id, enabled } => {
            let done = sqlx::query("UPDATE bots SET enabled = $1, updated_at = $2 WHERE id = $3")
                .bind(*enabled as i64)
                .bind(now_micros())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(Output::Bot(Box::new(load_bot(tx, id).await?)))
        }
        Op::SetCursor {
            bot_id,
            name,
            value,
        } => {
            sqlx::query(
                "INSERT INTO bot_cursors (bot_id, name, value, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (bot_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(bot_id)
            .bind(name)
            .bind(value)
            .bind(now_micros())
            .execute(&mut *tx)
            .await?;
            Ok(Output::Unit)
        }
        Op::PruneIdempotency(older_than) => {
            let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                .bind(to_micros(*older_than))
                .execute(&mut *tx)
                .await?;
            Ok(Output::Count(done.rows_affected()))
        }
        Op::Shutdown => Ok(Output::Unit),
    }
}

async fn load_bot(tx: &mut Conn, id: &str) -> Result<Bot, StoreError> {
    let row: Option<BotRow> = sqlx::query_as(concat!(
        "SELECT ",
        crate::bot_columns!(),
        " FROM bots WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    row.ok_or(StoreError::NotFound)?.try_into()
}

async fn upsert_bot(tx: &mut Conn, b: &BotWrite) -> Result<Output, StoreError> {
    let existing: Option<(String, String)> =
        sqlx::query_as("SELECT tenant_id, platform FROM bots WHERE id = $1")
            .bind(&b.id)
            .fetch_optional(&mut *tx)
            .await?;
    let tenant_exists: Option<(String,)> = sqlx::query_as("SELECT id FROM tenants WHERE id = $1")
        .bind(&b.tenant)
        .fetch_optional(&mut *tx)
        .await?;
    if tenant_exists.is_none() {
        return Err(StoreError::Invalid(format!(
            "tenant {:?} does not exist",
            b.tenant
        )));
    }
    let settings = serde_json::Value::Object(b.settings.clone()).to_string();
    let fields = serde_json::to_string(&b.credential_fields).map_err(StoreError::corrupt)?;
    let now = now_micros();
    match existing {
        Some((tenant, platform)) => {
            if tenant != b.tenant {
                return Err(StoreError::Conflict(format!("bot id {:?} is taken", b.id)));
            }
            if platform != b.platform.as_str() {
                return Err(StoreError::Conflict(format!(
                    "bot {:?} is a {platform} bot; its platform cannot change",
                    b.id
                )));
            }
            let mut q = super::sql::Sql::new("UPDATE bots SET enabled = ");
            q.bind(b.enabled as i64)
                .push(", settings = ")
                .bind(settings);
            q.push(", credential_fields = ").bind(fields);
            q.push(", source = ").bind(b.source.clone());
            q.push(", updated_at = ").bind(now);
            if let Some(creds) = &b.credentials {
                let sealed = creds
                    .as_ref()
                    .map(|s| serde_json::to_string(s).map_err(StoreError::corrupt))
                    .transpose()?;
                q.push(", credentials = ").bind(sealed);
            }
            q.push(" WHERE id = ").bind(b.id.clone());
            sqlx::query_with::<Any, _>(sqlx::AssertSqlSafe(q.text), q.args)
                .execute(&mut *tx)
                .await?;
        }
        None => {
            let sealed = b
                .credentials
                .clone()
                .flatten()
                .map(|s| serde_json::to_string(&s).map_err(StoreError::corrupt))
                .transpose()?;
            sqlx::query(
                "INSERT INTO bots (id, tenant_id, platform, enabled, settings, credentials, credential_fields, \
                 state, state_reason, last_error, last_seen_at, source, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'stopped', NULL, NULL, NULL, $8, $9, $9)",
            )
            .bind(&b.id)
            .bind(&b.tenant)
            .bind(b.platform.as_str())
            .bind(b.enabled as i64)
            .bind(settings)
            .bind(sealed)
            .bind(fields)
            .bind(&b.source)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(Output::Bot(Box::new(load_bot(tx, &b.id).await?)))
}

fn message_event(kind: &'static str, m: &Message) -> PendingEvent {
    PendingEvent {
        tenant: m.tenant.clone(),
        kind,
        bot_id: Some(m.bot_id.clone()),
        data: serde_json::to_value(m).unwrap_or(serde_json::Value::Null),
    }
}

fn conversation_event(c: &Conversation) -> PendingEvent {
    PendingEvent {
        tenant: c.tenant.clone(),
        kind: et::CONVERSATION_UPDATED,
        bot_id: Some(c.bot_id.clone()),
        data: serde_json::to_value(c).unwrap_or(serde_json::Value::Null),
    }
}

fn set_status(m: &mut Message, status: MessageStatus, at: DateTime<Utc>) {
    m.status = status;
    m.status_history.push(StatusChange { status, at });
    match status {
        MessageStatus::Sent => m.sent_at = m.sent_at.or(Some(at)),
        MessageStatus::Delivered => m.delivered_at = m.delivered_at.or(Some(at)),
        MessageStatus::Read => m.read_at = m.read_at.or(Some(at)),
        _ => {}
    }
}

async fn save_message(tx: &mut Conn, m: &Message) -> Result<(), StoreError> {
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

async fn insert_message(
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

async fn load_message(tx: &mut Conn, id: &str) -> Result<Message, StoreError> {
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

async fn find_conversation(
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

async fn create_conversation(
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

use crate::connector::ChatRef;

/// The contact behind a sender on a bot: by identity, else by phone, else a new contact.
async fn resolve_sender(
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
            let id = new_id();
            let now = now_micros();
            sqlx::query(
                "INSERT INTO contacts (id, tenant_id, name, phone, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .bind(&id)
            .bind(&bot.tenant)
            .bind(&sender.name)
            .bind(&sender.phone)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            id
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

async fn ingest_message(
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
    let conversation = match find_conversation(tx, &bot.id, &m.chat.external_chat_id).await? {
        Some(mut c) => {
            let title_changed = m.chat.title.is_some() && m.chat.title != c.title;
            if title_changed || (c.contact_id.is_none() && direct_contact.is_some()) {
                if title_changed {
                    c.title = m.chat.title.clone();
                }
                c.contact_id = c.contact_id.or(direct_contact);
                c.last_message_at = Some(now);
                sqlx::query("UPDATE conversations SET title = $1, contact_id = $2, last_message_at = $3 WHERE id = $4")
                    .bind(&c.title)
                    .bind(&c.contact_id)
                    .bind(to_micros(now))
                    .bind(&c.id)
                    .execute(&mut *tx)
                    .await?;
                ev.push(conversation_event(&c));
            } else {
                sqlx::query("UPDATE conversations SET last_message_at = $1 WHERE id = $2")
                    .bind(to_micros(now))
                    .bind(&c.id)
                    .execute(&mut *tx)
                    .await?;
            }
            c
        }
        None => {
            let mut c = create_conversation(tx, bot, &m.chat, direct_contact, ev).await?;
            c.last_message_at = Some(now);
            sqlx::query("UPDATE conversations SET last_message_at = $1 WHERE id = $2")
                .bind(to_micros(now))
                .bind(&c.id)
                .execute(&mut *tx)
                .await?;
            c
        }
    };
    let reply_to = match &m.reply_to_external_id {
        Some(ext) => {
            let r: Option<(String,)> =
                sqlx::query_as("SELECT id FROM messages WHERE bot_id = $1 AND external_id = $2")
                    .bind(&bot.id)
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

async fn apply_status(
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
    let Some((id,)) = target else {
        return Ok(IngestOutcome::StatusUnmatched);
    };
    let mut m = load_message(tx, &id).await?;
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
    save_message(tx, &m).await?;
    let kind = if s.status == MessageStatus::Failed {
        et::MESSAGE_FAILED
    } else {
        et::MESSAGE_STATUS
    };
    ev.push(message_event(kind, &m));
    Ok(IngestOutcome::StatusApplied(id))
}

async fn enqueue(
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
    let (conversation, contact_id) = resolve_recipient(tx, &bot, &new.to, ev).await?;
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

async fn load_conversation(tx: &mut Conn, id: &str) -> Result<Conversation, StoreError> {
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

/// Finds (or opens) the conversation an outbound message goes to.
async fn resolve_recipient(
    tx: &mut Conn,
    bot: &Bot,
    to: &Recipient,
    ev: &mut Vec<PendingEvent>,
) -> Result<(Conversation, Option<String>), StoreError> {
    let direct = |chat: String| ChatRef {
        external_chat_id: chat,
        kind: ConversationKind::Direct,
        title: None,
    };
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
            let c = match find_conversation(tx, &bot.id, chat).await? {
                Some(c) => c,
                None => create_conversation(tx, bot, &direct(chat.clone()), None, ev).await?,
            };
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
            let c = match find_conversation(tx, &bot.id, &chat).await? {
                Some(c) => c,
                None => {
                    create_conversation(tx, bot, &direct(chat), Some(contact_id.clone()), ev)
                        .await?
                }
            };
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
                None => {
                    let id = new_id();
                    let now = now_micros();
                    sqlx::query(
                        "INSERT INTO contacts (id, tenant_id, name, phone, created_at, updated_at) VALUES ($1, $2, NULL, $3, $4, $4)",
                    )
                    .bind(&id)
                    .bind(&bot.tenant)
                    .bind(phone)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    id
                }
            };
            let c = match find_conversation(tx, &bot.id, phone).await? {
                Some(c) => c,
                None => {
                    create_conversation(
                        tx,
                        bot,
                        &direct(phone.clone()),
                        Some(contact_id.clone()),
                        ev,
                    )
                    .await?
                }
            };
            Ok((c, Some(contact_id)))
        }
    }
}

async fn transition(
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
    save_message(tx, &m).await?;
    if let Some(kind) = kind {
        ev.push(message_event(kind, &m));
    }
    Ok(Output::Message(Box::new(m)))
}
