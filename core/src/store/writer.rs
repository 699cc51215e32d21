//! The single writer: group commit, savepoint per write, event append, ordered publish.
//!
//! Writers send a [`Job`] and await its reply. The task takes every job waiting (up to
//! `max_batch`), opens one transaction, applies each job inside its own savepoint, gives the
//! events of each successful job the tenant's next sequence numbers and inserts them, writes
//! the tenants' new `last_seq`, commits, and only then replies and publishes the events.
//! Enqueues and outbox transitions, the hot path, work per batch: their contacts,
//! conversations and messages are read for the whole batch at once, their messages written
//! in multi-row statements (before any other job reads messages), and a job that runs no
//! statement of its own needs no savepoint. A
//! failed commit fails every job of the batch (nothing was written). Because one task writes,
//! sequence numbers have no gaps and events are published in seq order; on PostgreSQL the
//! `UPDATE tenants ... RETURNING last_seq` row lock keeps that true across instances.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::AnyConnection;
use sqlx::any::Any;
use sqlx::pool::PoolConnection;
use sqlx::{AnyPool, Connection};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::rows::*;
use super::settle::{Settle, Settled};
use super::*;
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
    CreateContact {
        tenant: String,
        contact: Box<super::write_contacts::NewContact>,
    },
    BulkContacts {
        tenant: String,
        items: Vec<super::write_contacts::NewContact>,
    },
    UpdateContact {
        tenant: String,
        id: String,
        patch: Box<super::write_contacts::ContactPatch>,
    },
    DeleteContact {
        tenant: String,
        id: String,
    },
    ImportContacts {
        tenant: String,
        group: String,
        items: Vec<super::write_contacts::NewContact>,
    },
    CreateGroup {
        tenant: String,
        name: String,
        description: Option<String>,
    },
    UpdateGroup {
        tenant: String,
        id: String,
        name: Option<String>,
        description: Option<Option<String>>,
    },
    DeleteGroup {
        tenant: String,
        id: String,
    },
    AddMembers {
        tenant: String,
        group: String,
        contacts: Vec<String>,
    },
    RemoveMember {
        tenant: String,
        group: String,
        contact: String,
    },
    CreateBroadcast {
        b: Box<super::broadcasts::NewBroadcast>,
        /// `Some(reply_window)`: start it now, in the same transaction.
        start: Option<Option<std::time::Duration>>,
    },
    UpdateBroadcast {
        tenant: String,
        id: String,
        patch: Box<super::broadcasts::BroadcastPatch>,
    },
    CancelBroadcast {
        tenant: String,
        id: String,
    },
    StartBroadcast {
        id: String,
        bot_id: String,
        late: bool,
        reply_window: Option<std::time::Duration>,
    },
    ResendFailed {
        tenant: String,
        id: String,
        bot_id: String,
    },
    FinishBroadcast {
        id: String,
        counts: crate::model::BroadcastCounts,
    },
    Webhook(Box<super::webhooks::WebhookOp>),
    RememberAnswer(Box<super::idempotency::NewAnswer>),
    ReleaseAnswer {
        scope: String,
        key: String,
    },
    Shutdown,
}

impl Op {
    /// Jobs whose reads and writes go through the batch's cache (`BatchCache`).
    fn keeps_batch_reads(&self) -> bool {
        match self {
            Op::Enqueue(_) | Op::Transition { .. } => true,
            Op::Ingest { events, .. } => {
                events.iter().all(|e| matches!(e, InboundEvent::Message(_)))
            }
            _ => false,
        }
    }

    /// Jobs that look up by SQL what the batch may hold unwritten: a reply's original, an
    /// idempotent replay, a contact's identity and conversation (a first message from a
    /// known phone makes them in the batch).
    fn reads_pending(&self) -> bool {
        match self {
            Op::Enqueue(new) => {
                new.idempotency.is_some()
                    || new.reply_to.is_some()
                    || matches!(new.to, Recipient::Contact(_))
            }
            Op::Ingest { events, .. } => events
                .iter()
                .any(|e| matches!(e, InboundEvent::Message(m) if m.reply_to_external_id.is_some())),
            _ => false,
        }
    }

    /// Jobs that write one row after reads that may refuse: nothing to undo when they fail.
    fn single_write(&self) -> bool {
        matches!(
            self,
            Op::Transition {
                t: Transition::Sending | Transition::Retry { .. } | Transition::Failed(_),
                ..
            }
        )
    }
}

pub(super) enum Transition {
    Sending,
    Sent {
        external_id: String,
        cost: Option<String>,
    },
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
    Bulk(super::write_contacts::BulkOutcome),
    /// A broadcast's new messages, for the outbox.
    Fanout {
        id: String,
        entries: Vec<OutboxEntry>,
    },
}

impl Output {
    pub fn unexpected(self) -> StoreError {
        StoreError::corrupt("store writer answered with an unexpected result")
    }
}

/// An event produced by a job, waiting for its sequence number.
pub(super) struct PendingEvent {
    pub tenant: String,
    pub kind: &'static str,
    pub bot_id: Option<String>,
    pub data: Box<serde_json::value::RawValue>,
}

pub(super) type Conn = AnyConnection;

/// Where committed writes are announced: live events, and new outbox entries in commit order.
#[derive(Clone)]
pub(super) struct Announce {
    pub events: broadcast::Sender<Arc<Event>>,
    pub enqueued: mpsc::UnboundedSender<OutboxEntry>,
    pub stats: Arc<WriterStats>,
}

/// Counts of the writer's work: how many writes shared how many commits.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub commits: std::sync::atomic::AtomicU64,
    pub writes: std::sync::atomic::AtomicU64,
    /// Time spent applying and committing batches (the writer's busy time), microseconds.
    pub busy_micros: std::sync::atomic::AtomicU64,
}

/// Starts the writer on its own thread, with its own single-threaded runtime and its own
/// connection (`options` with one connection to `url`). The writer is the store's serial
/// path: on the shared runtime every statement's wake-up queued behind the HTTP tasks, and
/// a PostgreSQL connection opened here stays with the runtime that polls it. With
/// `sync_after_commit` (SQLite whose `synchronous` asks for a flush per commit, while
/// `options` commit without one) batches are handed out after the syncer flushed the WAL
/// ([`settle`](super::settle)). Returns once the connection is open; the receiver
/// completes when the writer has stopped and closed it.
pub(super) async fn spawn(
    options: sqlx::any::AnyPoolOptions,
    url: String,
    dialect: Dialect,
    sync_after_commit: bool,
    rx: mpsc::Receiver<Job>,
    announce: Announce,
    config: WriterConfig,
) -> Result<oneshot::Receiver<()>, StoreError> {
    let (ready_tx, ready_rx) = oneshot::channel::<Result<(), StoreError>>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    // Timers for the pool's timeouts; sockets only for PostgreSQL (sqlx talks to SQLite
    // through its own thread): without an I/O driver the runtime sleeps on a futex, which
    // wakes faster than epoll for each statement's answer.
    let mut runtime = tokio::runtime::Builder::new_current_thread();
    runtime.enable_time().thread_name("store-writer");
    if dialect == Dialect::Postgres {
        runtime.enable_io();
    }
    let runtime = runtime
        .build()
        .map_err(|e| StoreError::Unavailable(format!("the store writer's runtime: {e}")))?;
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            runtime.block_on(async move {
                let pool = match options.connect(&url).await {
                    Ok(pool) => pool,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                let settle = match settle_for(&pool, sync_after_commit, &announce).await {
                    Ok(settle) => settle,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        pool.close().await;
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                run(pool.clone(), dialect, rx, announce, &settle, config).await;
                settle.finish();
                pool.close().await;
            });
            let _ = done_tx.send(());
        })
        .map_err(|e| StoreError::Unavailable(format!("the store writer's thread: {e}")))?;
    match ready_rx.await {
        Ok(Ok(())) => Ok(done_rx),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(StoreError::Unavailable(
            "the store writer's thread ended before it connected".into(),
        )),
    }
}

async fn settle_for(
    pool: &AnyPool,
    sync_after_commit: bool,
    announce: &Announce,
) -> Result<Settle, StoreError> {
    if sync_after_commit {
        let mut conn = pool.acquire().await?;
        if let Some(wal) = super::settle::wal_path(&mut conn).await? {
            return Settle::after_sync(wal, announce.clone());
        }
    }
    Ok(Settle::AtCommit(announce.clone()))
}

async fn run(
    pool: AnyPool,
    dialect: Dialect,
    mut rx: mpsc::Receiver<Job>,
    announce: Announce,
    settle: &Settle,
    config: WriterConfig,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(config.max_batch);
    // The writer keeps its connection between batches (a pool round trip tests it on every
    // acquire and release); a batch that fails gives it back, so a broken one is replaced.
    let mut held: Option<PoolConnection<Any>> = None;
    let mut bots = Bots::new();
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
        commit_batch(
            &pool, &mut held, &mut bots, dialect, &mut batch, &announce, settle,
        )
        .await;
        if shutdown.is_some() {
            break;
        }
    }
    if let Some(reply) = shutdown {
        let _ = reply.send(Ok(Output::Unit));
    }
}

async fn commit_batch(
    pool: &AnyPool,
    held: &mut Option<PoolConnection<Any>>,
    bots: &mut Bots,
    dialect: Dialect,
    batch: &mut Vec<Job>,
    announce: &Announce,
    settle: &Settle,
) {
    let started = std::time::Instant::now();
    let size = batch.len();
    let applied = match held {
        Some(conn) => apply_batch(conn, dialect, batch, bots).await,
        None => match pool.acquire().await {
            Ok(conn) => apply_batch(held.insert(conn), dialect, batch, bots).await,
            Err(e) => Err(e.into()),
        },
    };
    if applied.is_err() {
        *held = None;
    }
    match applied {
        Ok((results, published)) => {
            use std::sync::atomic::Ordering::Relaxed;
            announce.stats.commits.fetch_add(1, Relaxed);
            announce.stats.writes.fetch_add(size as u64, Relaxed);
            let replies = batch.drain(..).map(|job| job.reply).zip(results).collect();
            settle.batch(Settled { replies, published });
        }
        Err(e) => {
            tracing::error!(error = %e, jobs = size, "store batch failed to commit");
            let msg = e.to_string();
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(StoreError::Unavailable(format!(
                    "write not committed: {msg}"
                ))));
            }
        }
    }
    let took = started.elapsed();
    announce.stats.busy_micros.fetch_add(
        took.as_micros() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    metrics::histogram!(crate::metrics::STORE_COMMIT_SECONDS).record(took.as_secs_f64());
    metrics::histogram!(crate::metrics::STORE_BATCH_SIZE).record(size as f64);
}

type BatchResult = (Vec<Result<Output, StoreError>>, Vec<Arc<Event>>);

/// Rows per multi-row event insert (6 parameters each, far below both backends' limits).
const EVENTS_PER_INSERT: usize = 200;

/// How long the writer uses a bot it loaded (its id, tenant and platform, all the writes
/// need) before reading it again; this writer's own bot writes drop it at once. Another
/// instance's changes are seen within this time, as on the API's send path.
const BOT_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Bots the writer loaded, with when.
type Bots = HashMap<String, (std::time::Instant, Arc<Bot>)>;

/// What the jobs of one batch share.
#[derive(Default)]
struct BatchCtx {
    /// Bots loaded by this and recent batches (see [`BOT_TTL`]).
    bots: Bots,
    /// Bots that received events: their last_seen_at is updated once at the end.
    seen_bots: std::collections::BTreeSet<String>,
    /// Conversations that got an outbound message: last_message_at, once at the end.
    touched_conversations: std::collections::BTreeSet<String>,
    /// The enqueues' recipients, read at once, and their messages, inserted together.
    outbound: super::batch::BatchCache,
}

impl BatchCtx {
    /// The bot, loaded at most once per [`BOT_TTL`] (a bot write drops it).
    async fn bot(&mut self, tx: &mut Conn, id: &str) -> Result<Arc<Bot>, StoreError> {
        if let Some((at, b)) = self.bots.get(id)
            && at.elapsed() < BOT_TTL
        {
            return Ok(b.clone());
        }
        let b = Arc::new(load_bot(tx, id).await?);
        self.bots
            .insert(id.to_owned(), (std::time::Instant::now(), b.clone()));
        Ok(b)
    }
}

async fn apply_batch(
    conn: &mut PoolConnection<Any>,
    dialect: Dialect,
    batch: &[Job],
    bots: &mut Bots,
) -> Result<BatchResult, StoreError> {
    let mut tx = conn.begin().await?;
    let mut results = Vec::with_capacity(batch.len());
    // The events of the jobs that succeeded, numbered at the end of the batch.
    let mut committed: Vec<(PendingEvent, DateTime<Utc>)> = Vec::new();
    let mut ctx = BatchCtx {
        bots: std::mem::take(bots),
        ..BatchCtx::default()
    };
    let enqueues: Vec<&NewOutbound> = batch
        .iter()
        .filter_map(|j| match &j.op {
            Op::Enqueue(new) => Some(&**new),
            _ => None,
        })
        .collect();
    if !enqueues.is_empty() {
        ctx.outbound.prefetch(&mut tx, &enqueues).await?;
    }
    let transitions: Vec<(&str, &Transition)> = batch
        .iter()
        .filter_map(|j| match &j.op {
            Op::Transition { id, t } => Some((id.as_str(), t)),
            _ => None,
        })
        .collect();
    if !transitions.is_empty() {
        ctx.outbound
            .prefetch_transitions(&mut tx, &transitions)
            .await?;
    }
    // The bots of the inbound jobs, for their tenants (a bot that cannot be loaded fails
    // its own job below).
    let mut inbound: Vec<(Arc<Bot>, &[InboundEvent])> = Vec::new();
    for job in batch {
        if let Op::Ingest { bot_id, events } = &job.op
            && let Ok(bot) = ctx.bot(&mut tx, bot_id).await
        {
            inbound.push((bot, events.as_slice()));
        }
    }
    if !inbound.is_empty() {
        ctx.outbound.prefetch_inbound(&mut tx, &inbound).await?;
    }
    for job in batch {
        // Enqueues, outbox transitions and inbound messages leave what the batch read true
        // (their own changes are kept in it); anything else reads the store afresh. A job
        // that reads by SQL what the batch holds unwritten (`reads_pending`) gets it written
        // first.
        if !job.op.keeps_batch_reads() {
            ctx.outbound.flush(&mut tx).await?;
            ctx.outbound.forget();
        } else if job.op.reads_pending() {
            ctx.outbound.flush(&mut tx).await?;
        }
        // A savepoint isolates a job that fails half-way. A job that writes nothing of its
        // own (an enqueue answered by the batch's reads) needs none, nor does one with a
        // single write on SQLite, where a failed statement leaves the transaction usable
        // (on PostgreSQL it aborts it, so other jobs get one there).
        let answered = match &job.op {
            Op::Enqueue(new) => ctx.outbound.answers_enqueue(new),
            Op::Transition { id, t } => ctx.outbound.answers_transition(id, t),
            Op::Ingest { bot_id, events } => ctx
                .bots
                .get(bot_id)
                .is_some_and(|(_, bot)| ctx.outbound.answers_ingest(bot, events)),
            _ => false,
        };
        ctx.outbound.begin_job();
        let savepoint = !(answered || dialect == Dialect::Sqlite && job.op.single_write());
        if savepoint {
            sqlx::query("SAVEPOINT job").execute(&mut *tx).await?;
        }
        let mut pending = Vec::new();
        let result = apply(&mut tx, dialect, &job.op, &mut pending, &mut ctx).await;
        match result {
            Ok(out) => {
                if savepoint {
                    sqlx::query("RELEASE SAVEPOINT job")
                        .execute(&mut *tx)
                        .await?;
                }
                // Sequence numbers only for jobs that succeeded: no gaps.
                let at = Utc::now();
                committed.extend(pending.into_iter().map(|p| (p, at)));
                results.push(Ok(out));
            }
            Err(e) => {
                if savepoint {
                    sqlx::query("ROLLBACK TO SAVEPOINT job")
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("RELEASE SAVEPOINT job")
                        .execute(&mut *tx)
                        .await?;
                }
                // What the job added is taken back; what the jobs before it added is
                // written; what was read is forgotten (the rollback may have removed rows
                // the job created and remembered).
                ctx.outbound.abort_job();
                ctx.outbound.flush(&mut tx).await?;
                ctx.outbound.forget();
                results.push(Err(e));
            }
        }
    }
    ctx.outbound.flush(&mut tx).await?;
    let published = number_events(&mut tx, committed).await?;
    // The batch's events in a few multi-row inserts instead of one statement each.
    for chunk in published.chunks(EVENTS_PER_INSERT) {
        let mut q = super::sql::Sql::on(
            &tx,
            "INSERT INTO events (tenant_id, seq, type, bot_id, at, data) VALUES ",
        );
        for (i, e) in chunk.iter().enumerate() {
            q.row(i);
            q.bind(e.tenant.clone()).push(", ");
            q.bind(e.seq).push(", ");
            q.bind(e.kind.clone()).push(", ");
            q.bind(e.bot_id.clone()).push(", ");
            q.bind(to_micros(e.at)).push(", ");
            q.bind(e.data.get().to_owned()).push(")");
        }
        sqlx::query_with::<sqlx::any::Any, _>(sqlx::AssertSqlSafe(q.text), q.args)
            .execute(&mut *tx)
            .await?;
    }
    tally(&mut tx, &published).await?;
    // Bots that received something: one last_seen_at update each per batch.
    let now = now_micros();
    for bot in &ctx.seen_bots {
        sqlx::query("UPDATE bots SET last_seen_at = $1 WHERE id = $2")
            .bind(now)
            .bind(bot)
            .execute(&mut *tx)
            .await?;
    }
    let touched: Vec<&String> = ctx.touched_conversations.iter().collect();
    for chunk in touched.chunks(EVENTS_PER_INSERT) {
        let mut q = super::sql::Sql::on(&tx, "UPDATE conversations SET last_message_at = ");
        q.bind(now).push(" WHERE id IN (");
        q.in_list(chunk.iter().map(|id| (*id).clone()));
        sqlx::query_with::<sqlx::any::Any, _>(sqlx::AssertSqlSafe(q.text), q.args)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    // Kept for the next batches only when committed (a rolled-back batch may have loaded
    // what it wrote itself).
    *bots = ctx.bots;
    Ok((results, published))
}

/// Counts the batch's received, sent and failed messages (from its events) into
/// `message_tallies`, per quarter hour, in the batch's transaction.
async fn tally(tx: &mut Conn, published: &[Arc<Event>]) -> Result<(), StoreError> {
    let mut tallies: std::collections::BTreeMap<(&str, &str, i64), [i64; 3]> = Default::default();
    for e in published {
        let slot = match e.kind.as_str() {
            et::MESSAGE_RECEIVED => 0,
            et::MESSAGE_SENT => 1,
            et::MESSAGE_FAILED => 2,
            _ => continue,
        };
        let Some(bot) = &e.bot_id else { continue };
        tallies
            .entry((
                e.tenant.as_str(),
                bot.as_str(),
                e.at.timestamp().div_euclid(900),
            ))
            .or_default()[slot] += 1;
    }
    let rows: Vec<_> = tallies.into_iter().collect();
    for chunk in rows.chunks(EVENTS_PER_INSERT) {
        let mut q = super::sql::Sql::on(
            tx,
            "INSERT INTO message_tallies (tenant_id, bot_id, bucket, received, sent, failed) VALUES ",
        );
        for (i, ((tenant, bot, bucket), [received, sent, failed])) in chunk.iter().enumerate() {
            q.row(i);
            q.bind((*tenant).to_owned()).push(", ");
            q.bind((*bot).to_owned()).push(", ");
            q.bind(*bucket).push(", ");
            q.bind(*received).push(", ");
            q.bind(*sent).push(", ");
            q.bind(*failed).push(")");
        }
        q.push(
            " ON CONFLICT (tenant_id, bot_id, bucket) DO UPDATE SET \
             received = message_tallies.received + excluded.received, \
             sent = message_tallies.sent + excluded.sent, failed = message_tallies.failed + excluded.failed",
        );
        sqlx::query_with::<sqlx::any::Any, _>(sqlx::AssertSqlSafe(q.text), q.args)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Gives the batch's events their tenants' next sequence numbers, in job order: one
/// `UPDATE tenants ... RETURNING` per tenant, in tenant order. On PostgreSQL it locks the
/// tenant's row until the commit, so that concurrent instances number and commit one after
/// the other (and, taking the locks in one order, cannot deadlock).
async fn number_events(
    tx: &mut Conn,
    events: Vec<(PendingEvent, DateTime<Utc>)>,
) -> Result<Vec<Arc<Event>>, StoreError> {
    let mut counts: std::collections::BTreeMap<&str, i64> = Default::default();
    for (p, _) in &events {
        *counts.entry(p.tenant.as_str()).or_default() += 1;
    }
    let mut next: HashMap<String, i64> = HashMap::with_capacity(counts.len());
    for (tenant, n) in counts {
        let row: Option<(i64,)> = sqlx::query_as(
            "UPDATE tenants SET last_seq = last_seq + $1 WHERE id = $2 RETURNING last_seq",
        )
        .bind(n)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
        let last = row
            .ok_or_else(|| StoreError::Invalid(format!("unknown tenant {tenant:?}")))?
            .0;
        next.insert(tenant.to_owned(), last - n + 1);
    }
    Ok(events
        .into_iter()
        .map(|(p, at)| {
            let seq = next.get_mut(&p.tenant).map_or(0, |n| {
                *n += 1;
                *n - 1
            });
            Arc::new(Event {
                seq,
                kind: p.kind.to_string(),
                tenant: p.tenant,
                at,
                bot_id: p.bot_id,
                data: p.data,
                json: Default::default(),
            })
        })
        .collect())
}

async fn apply(
    tx: &mut Conn,
    dialect: Dialect,
    op: &Op,
    ev: &mut Vec<PendingEvent>,
    ctx: &mut BatchCtx,
) -> Result<Output, StoreError> {
    let _ = dialect;
    match op {
        Op::DeleteBot { id, .. } => {
            ctx.bots.remove(id);
        }
        Op::UpsertBot(b) => {
            ctx.bots.remove(&b.id);
        }
        _ => {}
    }
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
                data: event_data(&serde_json::json!({
                    "bot_id": bot.id,
                    "platform": bot.platform,
                    "state": bot.state,
                    "state_reason": bot.state_reason,
                    "last_error": bot.last_error,
                })),
            });
            Ok(Output::Bot(Box::new(bot)))
        }
        Op::Ingest { bot_id, events } => {
            let bot = ctx.bot(tx, bot_id).await?;
            ctx.seen_bots.insert(bot_id.clone());
            let mut outcomes = Vec::with_capacity(events.len());
            for e in events {
                // The other events' handlers read the store by SQL: what this job added so
                // far (a conversation it opened, a message an edit names) is written first.
                if !matches!(e, InboundEvent::Message(_)) {
                    ctx.outbound.flush(tx).await?;
                }
                let outcome = match e {
                    InboundEvent::Message(m) => {
                        ingest_message(tx, &bot, m, ev, &mut ctx.outbound).await?
                    }
                    InboundEvent::Status(s) => apply_status(tx, &bot, s, ev).await?,
                    InboundEvent::Edit(e) => apply_edit(tx, &bot, e, ev).await?,
                    InboundEvent::Chat(c) => apply_chat(tx, &bot, c, ev).await?,
                };
                outcomes.push(outcome);
            }
            Ok(Output::Ingested(outcomes))
        }
        Op::Enqueue(new) => {
            let bot = ctx.bot(tx, &new.bot_id).await?;
            let out = enqueue(tx, &bot, new, ev, &mut ctx.outbound).await;
            if let Ok(Output::Enqueued(e)) = &out {
                ctx.touched_conversations.insert(e.conversation.id.clone());
            }
            out
        }
        Op::Transition { id, t } => transition(tx, id, t, ev, &mut ctx.outbound).await,
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
        Op::CreateContact { tenant, contact } => {
            super::write_contacts::create_contact(tx, tenant, contact).await
        }
        Op::BulkContacts { tenant, items } => {
            super::write_contacts::bulk_contacts(tx, tenant, items)
                .await
                .map(Output::Bulk)
        }
        Op::UpdateContact { tenant, id, patch } => {
            super::write_contacts::update_contact(tx, tenant, id, patch).await
        }
        Op::DeleteContact { tenant, id } => {
            super::write_contacts::delete_contact(tx, tenant, id).await
        }
        Op::ImportContacts {
            tenant,
            group,
            items,
        } => super::write_contacts::import_contacts(tx, tenant, group, items)
            .await
            .map(Output::Bulk),
        Op::Webhook(op) => super::webhooks::apply(tx, op).await,
        Op::RememberAnswer(a) => super::idempotency::remember(tx, a).await,
        Op::ReleaseAnswer { scope, key } => super::idempotency::release(tx, scope, key).await,
        Op::CreateGroup {
            tenant,
            name,
            description,
        } => super::groups::create_group(tx, tenant, name, description.as_deref()).await,
        Op::UpdateGroup {
            tenant,
            id,
            name,
            description,
        } => {
            let description = description.as_ref().map(|d| d.as_deref());
            super::groups::update_group(tx, tenant, id, name.as_deref(), description).await
        }
        Op::DeleteGroup { tenant, id } => super::groups::delete_group(tx, tenant, id).await,
        Op::CreateBroadcast { b, start } => {
            let Output::Id(id) = super::broadcasts::create(tx, b).await? else {
                return Err(StoreError::corrupt("broadcast create returned no id"));
            };
            match start {
                None => Ok(Output::Id(id)),
                Some(window) => {
                    let bot = ctx.bot(tx, &b.bot_id).await?;
                    super::broadcasts::start(tx, &bot, &id, false, *window, ev).await
                }
            }
        }
        Op::UpdateBroadcast { tenant, id, patch } => {
            super::broadcasts::update(tx, tenant, id, patch).await
        }
        Op::CancelBroadcast { tenant, id } => super::broadcasts::cancel(tx, tenant, id, ev).await,
        Op::StartBroadcast {
            id,
            bot_id,
            late,
            reply_window,
        } => {
            let bot = ctx.bot(tx, bot_id).await?;
            super::broadcasts::start(tx, &bot, id, *late, *reply_window, ev).await
        }
        Op::ResendFailed { tenant, id, bot_id } => {
            let bot = ctx.bot(tx, bot_id).await?;
            super::broadcasts::resend_failed(tx, &bot, tenant, id, ev).await
        }
        Op::FinishBroadcast { id, counts } => {
            super::broadcasts::finish_if_done(tx, id, counts, ev).await
        }
        Op::AddMembers {
            tenant,
            group,
            contacts,
        } => super::groups::add_members(tx, tenant, group, contacts).await,
        Op::RemoveMember {
            tenant,
            group,
            contact,
        } => super::groups::remove_member(tx, tenant, group, contact).await,
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
            let answers = sqlx::query("DELETE FROM api_idempotency WHERE created_at < $1")
                .bind(to_micros(*older_than))
                .execute(&mut *tx)
                .await?;
            Ok(Output::Count(
                done.rows_affected() + answers.rows_affected(),
            ))
        }
        Op::Shutdown => Ok(Output::Unit),
    }
}

use super::write_admin::*;
use super::write_inbound::*;
use super::write_messages::{message_event, save_message, set_status};
use super::write_outbound::*;
