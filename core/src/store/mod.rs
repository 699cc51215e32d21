//! The durable store: tenants, bots, contacts, conversations, messages (the outbox is the
//! set of outbound messages in `queued`/`sending`), and the per-tenant event log.
//!
//! One implementation serves SQLite (embedded default, WAL) and PostgreSQL through sqlx's
//! `Any` driver over a portable schema; the backend is chosen by the URL and only
//! [`Dialect`] differs. Reads go straight to the pool. Every write goes through one writer
//! task ([`writer`]) that commits whatever writes are waiting together in one transaction
//! (group commit: one fsync for many messages), gives each write its own savepoint so one
//! bad write does not fail its neighbours, appends the events of each write with the next
//! per-tenant sequence numbers in that same transaction, and publishes the events to live
//! subscribers in order after the commit. Every query filters by tenant ([`Scope`]).

mod batch;
mod broadcasts;
pub use broadcasts::{
    BroadcastFilter, BroadcastPatch, DueBroadcast, NewBroadcast, RecipientSnapshot,
};
mod groups;
mod idempotency;
pub use idempotency::{ABANDONED_AFTER, StoredAnswer};
mod stats;
pub use stats::parse_time_zone;
mod reads;
pub mod rows;
mod sql;
mod write_admin;
mod write_contacts;
pub use write_contacts::{BulkOutcome, ContactPatch, NewContact};
mod settle;
mod webhooks;
mod write_inbound;
mod write_messages;
mod write_outbound;
pub use webhooks::{FailedDelivery, WebhookProgress, WebhookTarget};
mod writer;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::connector::{InboundEvent, IngestOutcome};
use crate::error::StoreError;
use crate::model::*;
use crate::secret::Sealed;

pub use writer::{WriterConfig, WriterStats};

/// How long a readiness ping may wait for the database.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Which SQL dialect the store speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Whose data a query may see: one tenant, or (admin token only) every tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Tenant(String),
    All,
}

impl Scope {
    /// The value bound to `($n = '*' OR tenant_id = $n)`; tenant ids never contain `*`.
    pub(crate) fn param(&self) -> String {
        match self {
            Scope::Tenant(t) => t.clone(),
            Scope::All => "*".to_string(),
        }
    }
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Scope::Tenant(t) => Some(t),
            Scope::All => None,
        }
    }
}

/// A page request: at most `limit` items after the opaque `cursor`.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: u32,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub bot: Option<String>,
    pub conversation: Option<String>,
    pub direction: Option<Direction>,
    pub status: Option<MessageStatus>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    pub bot: Option<String>,
    pub platform: Option<Platform>,
    pub q: Option<String>,
    pub updated_since: Option<DateTime<Utc>>,
}

/// A bot as written by config reconciliation or the API.
#[derive(Debug, Clone)]
pub struct BotWrite {
    pub id: String,
    pub tenant: String,
    pub platform: Platform,
    pub enabled: bool,
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// `None` keeps the stored credentials (a PATCH that changes no secret).
    pub credentials: Option<Option<Sealed>>,
    pub credential_fields: Vec<String>,
    pub source: String,
}

/// Who an outbound message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    Conversation(String),
    Contact(String),
    /// A platform chat id; a conversation is created if the bot never talked there.
    Chat(String),
    /// An E.164 phone number (SMS and WhatsApp bots).
    Phone(String),
}

#[derive(Debug, Clone)]
pub struct NewOutbound {
    pub tenant: String,
    pub bot_id: String,
    pub to: Recipient,
    pub content: Content,
    pub reply_to: Option<String>,
    /// `Idempotency-Key` and a hash of the request it came with.
    pub idempotency: Option<(String, String)>,
    /// The platform's customer-service window: free-form messages are refused when the
    /// contact last wrote longer ago than this (`None`: no window, or a template).
    pub reply_window: Option<std::time::Duration>,
    /// What a new conversation opened by `Recipient::Chat` is (default direct).
    pub chat_kind: Option<ConversationKind>,
    /// SMS: the segments the text will be billed as.
    pub segments: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Enqueued {
    pub message: Message,
    pub conversation: Conversation,
    /// True when an earlier request with the same `Idempotency-Key` created the message.
    pub replayed: bool,
}

/// A queued or in-flight outbound message with what is needed to send it.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub message: Message,
    pub conversation: Conversation,
    pub reply_to_external_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ApiKeyInfo {
    pub id: String,
    pub tenant: String,
    pub hint: String,
    pub source: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Store tuning.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// SQLite `synchronous`: `FULL` (default: a commit survives power loss) or `NORMAL`.
    pub sqlite_synchronous: String,
    pub writer: WriterConfig,
    /// Capacity of the live event channel; a subscriber further behind is told it lagged.
    pub event_buffer: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 8,
            sqlite_synchronous: "FULL".into(),
            writer: WriterConfig::default(),
            event_buffer: 4096,
        }
    }
}

/// The store. Cheap to share behind an `Arc`.
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    writes: mpsc::Sender<writer::Job>,
    events: broadcast::Sender<Arc<Event>>,
    enqueued: std::sync::Mutex<Option<mpsc::UnboundedReceiver<OutboxEntry>>>,
    stats: Arc<WriterStats>,
    /// Completed when the writer's thread has committed its last batch and closed its
    /// connection.
    writer_done: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
    /// Bots read for the send path in the last second (see `get_bot_recent`).
    recent_bots:
        std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Arc<Bot>)>>,
}

/// How long `get_bot_recent` may answer from memory.
const RECENT_BOT_TTL: std::time::Duration = std::time::Duration::from_secs(1);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({:?})", self.dialect)
    }
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The pool settings of both the readers' pool and the writer's connection (SQLite: WAL,
/// the configured `synchronous`, a busy timeout and foreign keys on every connection).
fn pool_options(dialect: Dialect, sync: &str, max_connections: u32) -> AnyPoolOptions {
    let sync = sync.to_owned();
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(move |conn, _meta| {
            let sync = sync.clone();
            Box::pin(async move {
                if dialect == Dialect::Sqlite {
                    let pragmas = format!(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; \
                         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;"
                    );
                    conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(pragmas)))
                        .await?;
                }
                Ok(())
            })
        })
}

impl Store {
    /// Connects to `url` (`sqlite://...` or `postgres://...`), creating a SQLite file and its
    /// directory if needed, and applies the migrations.
    pub async fn open(url: &str, options: StoreOptions) -> Result<Arc<Store>, StoreError> {
        sqlx::any::install_default_drivers();
        let (dialect, url) = prepare_url(url)?;
        let sync = match options.sqlite_synchronous.to_ascii_uppercase().as_str() {
            s @ ("FULL" | "NORMAL" | "EXTRA") => s.to_string(),
            other => {
                return Err(StoreError::Invalid(format!(
                    "sqlite synchronous must be FULL, NORMAL or EXTRA, got {other:?}"
                )));
            }
        };
        let pool = pool_options(dialect, &sync, options.max_connections.max(2))
            .connect(&url)
            .await?;
        match dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        let (events, _) = broadcast::channel(options.event_buffer.max(16));
        let (writes, rx) = mpsc::channel(options.writer.queue.max(16));
        let (enqueued_tx, enqueued_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(WriterStats::default());
        // SQLite's flush per commit is done by the writer's syncer, after the commit and off
        // the writer's path (see `settle`).
        let sync_after_commit = dialect == Dialect::Sqlite && sync != "NORMAL";
        let writer_sync = if sync_after_commit { "NORMAL" } else { &sync };
        let writer_done = writer::spawn(
            pool_options(dialect, writer_sync, 1),
            url,
            dialect,
            sync_after_commit,
            rx,
            writer::Announce {
                events: events.clone(),
                enqueued: enqueued_tx,
                stats: stats.clone(),
            },
            options.writer.clone(),
        )
        .await?;
        Ok(Arc::new(Store {
            pool,
            dialect,
            writes,
            events,
            enqueued: std::sync::Mutex::new(Some(enqueued_rx)),
            stats,
            writer_done: tokio::sync::Mutex::new(Some(writer_done)),
            recent_bots: std::sync::Mutex::default(),
        }))
    }

    /// Applies the migrations of `url` and returns (for `switchboard migrate`).
    pub async fn migrate(url: &str) -> Result<(), StoreError> {
        let store = Store::open(url, StoreOptions::default()).await?;
        store.close().await;
        Ok(())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Live events committed from now on, in commit order (per tenant: seq order).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// How many writes shared how many commits (group commit at work).
    pub fn writer_stats(&self) -> &WriterStats {
        &self.stats
    }

    /// New outbox entries in commit order (per conversation: FIFO), for the one dispatcher of
    /// this process. Returns `None` after the first call.
    pub fn take_enqueued(&self) -> Option<mpsc::UnboundedReceiver<OutboxEntry>> {
        self.enqueued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Lets pending writes finish, stops the writer and closes the pool.
    pub async fn close(&self) {
        let task = self.writer_done.lock().await.take();
        if let Some(task) = task {
            let (tx, rx) = oneshot::channel();
            if self
                .writes
                .send(writer::Job {
                    op: writer::Op::Shutdown,
                    reply: tx,
                })
                .await
                .is_ok()
            {
                let _ = rx.await;
            }
            if task.await.is_err() {
                tracing::error!("the store writer's thread ended abnormally");
            }
        }
        self.pool.close().await;
    }

    /// Readiness: the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        // Bounded: while the database is away the pool keeps reconnecting until its acquire
        // timeout, and a readiness probe must say so now, not once it is back.
        match tokio::time::timeout(PING_TIMEOUT, sqlx::query("SELECT 1").execute(&self.pool)).await
        {
            Ok(r) => r.map(|_| ()).map_err(StoreError::from),
            Err(_) => Err(StoreError::Unavailable(format!(
                "the database did not answer within {} ms",
                PING_TIMEOUT.as_millis()
            ))),
        }
    }

    /// A bot as it was at most a second ago, for the send path (`POST /v1/messages`), which
    /// needs its tenant, platform and settings only: a write to the bot through this store
    /// drops it at once; a state change may show a second late.
    pub async fn get_bot_recent(&self, scope: &Scope, id: &str) -> Result<Arc<Bot>, StoreError> {
        let cached = self
            .recent_bots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .filter(|(at, _)| at.elapsed() < RECENT_BOT_TTL)
            .map(|(_, b)| b.clone());
        let bot = match cached {
            Some(b) => b,
            None => {
                let b = Arc::new(self.get_bot(&Scope::All, id).await?);
                let mut recent = self.recent_bots.lock().unwrap_or_else(|e| e.into_inner());
                if recent.len() > 10_000 {
                    recent.retain(|_, (at, _)| at.elapsed() < RECENT_BOT_TTL);
                }
                recent.insert(id.to_owned(), (std::time::Instant::now(), b.clone()));
                b
            }
        };
        match scope.tenant() {
            Some(t) if t != bot.tenant => Err(StoreError::NotFound),
            _ => Ok(bot),
        }
    }

    async fn write(&self, op: writer::Op) -> Result<writer::Output, StoreError> {
        let changed_bot = match &op {
            writer::Op::UpsertBot(b) => Some(b.id.clone()),
            writer::Op::DeleteBot { id, .. } | writer::Op::SetBotEnabled { id, .. } => {
                Some(id.clone())
            }
            _ => None,
        };
        if let Some(id) = &changed_bot {
            self.recent_bots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
        }
        let (reply, rx) = oneshot::channel();
        self.writes
            .send(writer::Job { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        let out = rx.await.map_err(|_| StoreError::Closed)?;
        if let Some(id) = &changed_bot {
            // Again after the commit: a read between the first drop and the commit is stale.
            self.recent_bots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
        }
        out
    }

    // ---- writes ----------------------------------------------------------------------

    pub async fn upsert_tenant(
        &self,
        id: &str,
        name: &str,
        time_zone: &str,
        source: &str,
    ) -> Result<Tenant, StoreError> {
        match self
            .write(writer::Op::UpsertTenant {
                id: id.into(),
                name: name.into(),
                time_zone: time_zone.into(),
                source: source.into(),
            })
            .await?
        {
            writer::Output::Tenant(t) => Ok(t),
            other => Err(other.unexpected()),
        }
    }

    /// Replaces the API keys a tenant got from `source` (e.g. `config`) by `hashes`.
    pub async fn replace_api_keys(
        &self,
        tenant: &str,
        source: &str,
        hashes: Vec<(String, String)>,
    ) -> Result<(), StoreError> {
        self.write(writer::Op::ReplaceApiKeys {
            tenant: tenant.into(),
            source: source.into(),
            hashes,
        })
        .await
        .map(|_| ())
    }

    /// Stores a new API key hash; returns the key's id.
    pub async fn add_api_key(
        &self,
        tenant: &str,
        hash: &str,
        hint: &str,
    ) -> Result<String, StoreError> {
        match self
            .write(writer::Op::AddApiKey {
                tenant: tenant.into(),
                hash: hash.into(),
                hint: hint.into(),
            })
            .await?
        {
            writer::Output::Id(id) => Ok(id),
            other => Err(other.unexpected()),
        }
    }

    pub async fn revoke_api_key(&self, tenant: &str, key_id: &str) -> Result<(), StoreError> {
        self.write(writer::Op::RevokeApiKey {
            tenant: tenant.into(),
            key_id: key_id.into(),
        })
        .await
        .map(|_| ())
    }

    pub async fn upsert_bot(&self, bot: BotWrite) -> Result<Bot, StoreError> {
        match self.write(writer::Op::UpsertBot(Box::new(bot))).await? {
            writer::Output::Bot(b) => Ok(*b),
            other => Err(other.unexpected()),
        }
    }

    /// Persists an operator's start (`true`) or stop (`false`).
    pub async fn set_bot_enabled(&self, id: &str, enabled: bool) -> Result<Bot, StoreError> {
        match self
            .write(writer::Op::SetBotEnabled {
                id: id.into(),
                enabled,
            })
            .await?
        {
            writer::Output::Bot(b) => Ok(*b),
            other => Err(other.unexpected()),
        }
    }

    pub async fn delete_bot(&self, scope: &Scope, id: &str) -> Result<(), StoreError> {
        self.write(writer::Op::DeleteBot {
            scope: scope.clone(),
            id: id.into(),
        })
        .await
        .map(|_| ())
    }

    /// Records a lifecycle change and appends a `bot.state` event.
    pub async fn set_bot_state(
        &self,
        id: &str,
        state: BotState,
        reason: Option<String>,
        last_error: Option<String>,
    ) -> Result<Bot, StoreError> {
        match self
            .write(writer::Op::SetBotState {
                id: id.into(),
                state,
                reason,
                last_error,
            })
            .await?
        {
            writer::Output::Bot(b) => Ok(*b),
            other => Err(other.unexpected()),
        }
    }

    /// Stores a connector's inbound events (messages and delivery reports) for `bot_id`.
    pub async fn ingest(
        &self,
        bot_id: &str,
        events: Vec<InboundEvent>,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        match self
            .write(writer::Op::Ingest {
                bot_id: bot_id.into(),
                events,
            })
            .await?
        {
            writer::Output::Ingested(o) => Ok(o),
            other => Err(other.unexpected()),
        }
    }

    /// Validates the recipient and writes an outbound message `queued` (the outbox).
    pub async fn enqueue(&self, new: NewOutbound) -> Result<Enqueued, StoreError> {
        match self.write(writer::Op::Enqueue(Box::new(new))).await? {
            writer::Output::Enqueued(e) => Ok(*e),
            other => Err(other.unexpected()),
        }
    }

    /// `queued` -> `sending`, counting an attempt.
    pub async fn mark_sending(&self, id: &str) -> Result<Message, StoreError> {
        self.transition(writer::Transition::Sending, id).await
    }

    /// `sending` -> `sent` with the platform's id (and what the send cost, if it said).
    pub async fn mark_sent(
        &self,
        id: &str,
        external_id: &str,
        cost: Option<&str>,
    ) -> Result<Message, StoreError> {
        let t = writer::Transition::Sent {
            external_id: external_id.into(),
            cost: cost.map(str::to_owned),
        };
        self.transition(t, id).await
    }

    /// `sending` -> `queued` again after a retryable error (recorded on the message).
    pub async fn mark_retry(
        &self,
        id: &str,
        error: MessageError,
        count_attempt: bool,
    ) -> Result<Message, StoreError> {
        self.transition(
            writer::Transition::Retry {
                error,
                count_attempt,
            },
            id,
        )
        .await
    }

    pub async fn mark_failed(&self, id: &str, error: MessageError) -> Result<Message, StoreError> {
        self.transition(writer::Transition::Failed(error), id).await
    }

    async fn transition(&self, t: writer::Transition, id: &str) -> Result<Message, StoreError> {
        match self
            .write(writer::Op::Transition { id: id.into(), t })
            .await?
        {
            writer::Output::Message(m) => Ok(*m),
            other => Err(other.unexpected()),
        }
    }

    /// Creates a contact (its phone E.164 and new to the tenant, else a conflict).
    pub async fn create_contact(&self, tenant: &str, c: NewContact) -> Result<Contact, StoreError> {
        let op = writer::Op::CreateContact {
            tenant: tenant.into(),
            contact: Box::new(c),
        };
        match self.write(op).await? {
            writer::Output::Id(id) => self.get_contact(&Scope::Tenant(tenant.into()), &id).await,
            other => Err(other.unexpected()),
        }
    }

    /// Creates the contacts whose phones are new, in one transaction.
    pub async fn bulk_contacts(
        &self,
        tenant: &str,
        items: Vec<NewContact>,
    ) -> Result<BulkOutcome, StoreError> {
        let op = writer::Op::BulkContacts {
            tenant: tenant.into(),
            items,
        };
        match self.write(op).await? {
            writer::Output::Bulk(b) => Ok(b),
            other => Err(other.unexpected()),
        }
    }

    /// Creates the new contacts of an import and puts every one in the group, atomically.
    pub async fn import_contacts(
        &self,
        tenant: &str,
        group: &str,
        items: Vec<NewContact>,
    ) -> Result<BulkOutcome, StoreError> {
        let op = writer::Op::ImportContacts {
            tenant: tenant.into(),
            group: group.into(),
            items,
        };
        match self.write(op).await? {
            writer::Output::Bulk(b) => Ok(b),
            other => Err(other.unexpected()),
        }
    }

    pub async fn update_contact(
        &self,
        tenant: &str,
        id: &str,
        patch: ContactPatch,
    ) -> Result<Contact, StoreError> {
        let op = writer::Op::UpdateContact {
            tenant: tenant.into(),
            id: id.into(),
            patch: Box::new(patch),
        };
        self.write(op).await?;
        self.get_contact(&Scope::Tenant(tenant.into()), id).await
    }

    pub async fn delete_contact(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        self.write(writer::Op::DeleteContact {
            tenant: tenant.into(),
            id: id.into(),
        })
        .await
        .map(|_| ())
    }

    /// Creates a broadcast; `start`: `Some(reply_window)` sends it now (its messages are
    /// written in the same transaction and handed to the outbox).
    pub async fn create_broadcast(
        &self,
        b: NewBroadcast,
        start: Option<Option<Duration>>,
    ) -> Result<crate::model::Broadcast, StoreError> {
        let tenant = b.tenant.clone();
        let op = writer::Op::CreateBroadcast {
            b: Box::new(b),
            start,
        };
        match self.write(op).await? {
            writer::Output::Id(id) => self.get_broadcast(&Scope::Tenant(tenant), &id).await,
            other => Err(other.unexpected()),
        }
    }

    /// Edits a scheduled broadcast (409 once it started).
    pub async fn update_broadcast(
        &self,
        tenant: &str,
        id: &str,
        patch: BroadcastPatch,
    ) -> Result<crate::model::Broadcast, StoreError> {
        let op = writer::Op::UpdateBroadcast {
            tenant: tenant.into(),
            id: id.into(),
            patch: Box::new(patch),
        };
        self.write(op).await?;
        self.get_broadcast(&Scope::Tenant(tenant.into()), id).await
    }

    /// Cancels a scheduled or sending broadcast: nothing more is sent.
    pub async fn cancel_broadcast(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<crate::model::Broadcast, StoreError> {
        let op = writer::Op::CancelBroadcast {
            tenant: tenant.into(),
            id: id.into(),
        };
        self.write(op).await?;
        self.get_broadcast(&Scope::Tenant(tenant.into()), id).await
    }

    /// Starts a due broadcast (the scheduler); `late` when it started after its time.
    pub async fn start_broadcast(
        &self,
        id: &str,
        bot_id: &str,
        late: bool,
        reply_window: Option<Duration>,
    ) -> Result<(), StoreError> {
        let op = writer::Op::StartBroadcast {
            id: id.into(),
            bot_id: bot_id.into(),
            late,
            reply_window,
        };
        self.write(op).await.map(|_| ())
    }

    /// Sends a broadcast's failed recipients again.
    pub async fn resend_failed(
        &self,
        tenant: &str,
        id: &str,
        bot_id: &str,
    ) -> Result<crate::model::Broadcast, StoreError> {
        let op = writer::Op::ResendFailed {
            tenant: tenant.into(),
            id: id.into(),
            bot_id: bot_id.into(),
        };
        self.write(op).await?;
        self.get_broadcast(&Scope::Tenant(tenant.into()), id).await
    }

    /// Publishes a sending broadcast's progress and completes it when nothing waits.
    pub async fn broadcast_progress(
        &self,
        id: &str,
        counts: crate::model::BroadcastCounts,
    ) -> Result<(), StoreError> {
        let op = writer::Op::FinishBroadcast {
            id: id.into(),
            counts,
        };
        self.write(op).await.map(|_| ())
    }

    pub async fn create_group(
        &self,
        tenant: &str,
        name: &str,
        description: Option<&str>,
    ) -> Result<crate::model::Group, StoreError> {
        let op = writer::Op::CreateGroup {
            tenant: tenant.into(),
            name: name.into(),
            description: description.map(str::to_owned),
        };
        match self.write(op).await? {
            writer::Output::Id(id) => self.get_group(&Scope::Tenant(tenant.into()), &id).await,
            other => Err(other.unexpected()),
        }
    }

    /// Renames or re-describes a group (`Some(None)` clears the description).
    pub async fn update_group(
        &self,
        tenant: &str,
        id: &str,
        name: Option<String>,
        description: Option<Option<String>>,
    ) -> Result<crate::model::Group, StoreError> {
        let op = writer::Op::UpdateGroup {
            tenant: tenant.into(),
            id: id.into(),
            name,
            description,
        };
        self.write(op).await?;
        self.get_group(&Scope::Tenant(tenant.into()), id).await
    }

    pub async fn delete_group(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        let op = writer::Op::DeleteGroup {
            tenant: tenant.into(),
            id: id.into(),
        };
        self.write(op).await.map(|_| ())
    }

    /// Adds contacts to a group; the number newly added.
    pub async fn add_members(
        &self,
        tenant: &str,
        group: &str,
        contacts: Vec<String>,
    ) -> Result<u64, StoreError> {
        let op = writer::Op::AddMembers {
            tenant: tenant.into(),
            group: group.into(),
            contacts,
        };
        match self.write(op).await? {
            writer::Output::Count(n) => Ok(n),
            other => Err(other.unexpected()),
        }
    }

    /// Removes a contact from a group; whether it was a member.
    pub async fn remove_member(
        &self,
        tenant: &str,
        group: &str,
        contact: &str,
    ) -> Result<bool, StoreError> {
        let op = writer::Op::RemoveMember {
            tenant: tenant.into(),
            group: group.into(),
            contact: contact.into(),
        };
        match self.write(op).await? {
            writer::Output::Count(n) => Ok(n > 0),
            other => Err(other.unexpected()),
        }
    }

    pub async fn set_cursor(
        &self,
        bot_id: &str,
        name: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        self.write(writer::Op::SetCursor {
            bot_id: bot_id.into(),
            name: name.into(),
            value: value.into(),
        })
        .await
        .map(|_| ())
    }

    /// Forgets idempotency keys older than `older_than`.
    pub async fn prune_idempotency_keys(
        &self,
        older_than: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        match self.write(writer::Op::PruneIdempotency(older_than)).await? {
            writer::Output::Count(n) => Ok(n),
            other => Err(other.unexpected()),
        }
    }
}

fn prepare_url(url: &str) -> Result<(Dialect, String), StoreError> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.trim_start_matches("//");
        let file = path.split('?').next().unwrap_or("");
        if file.is_empty() {
            return Err(StoreError::Invalid("sqlite URL names no file".into()));
        }
        if file != ":memory:"
            && let Some(dir) = std::path::Path::new(file).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Invalid(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        let url = if url.contains("mode=") {
            url.to_string()
        } else if url.contains('?') {
            format!("{url}&mode=rwc")
        } else {
            format!("{url}?mode=rwc")
        };
        Ok((Dialect::Sqlite, url))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok((Dialect::Postgres, url.to_string()))
    } else {
        Err(StoreError::Invalid(format!(
            "storage url must start with sqlite:// or postgres://, got {:?}",
            url.split(':').next().unwrap_or("")
        )))
    }
}
