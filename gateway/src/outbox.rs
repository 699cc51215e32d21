//! The outbox dispatcher: sends what the store's outbox holds, per bot, FIFO per conversation.
//!
//! New entries arrive from the store in commit order; at start-up every bot's `queued` and
//! `sending` rows are loaded again (rows left `sending` by a killed process are resent: a
//! message whose send reached the platform just before the kill, but whose `sent` was not
//! committed, is sent twice; that is the at-least-once window). Each conversation with work
//! has one worker task that sends its messages one after another; conversations of a bot run
//! in parallel up to `max_in_flight_per_bot` sends, each paced by the bot's [`Pacer`].
//!
//! Errors follow the one classification: rate-limited (hold the chat for retry_after, retry,
//! no attempt counted), transient (retry with exponential backoff up to `max_attempts`),
//! permanent (failed with the platform's code), auth/config (the message waits `queued`, the
//! bot is marked failed by the supervisor). Sends only start while the bot's connector is
//! attached (the bot is running); on shutdown no new send starts and in-flight ones finish.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_core::connector::{ChatRef, Connector, OutboundRequest, SendReceipt};
use switchboard_core::error::ConnectorError;
use switchboard_core::model::MessageError;
use switchboard_core::rate::{PaceKey, Pacer};
use switchboard_core::store::OutboxEntry;
use switchboard_core::{Store, StoreError};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::OutboxConfig;
use crate::counters::{Count, Counters};

/// What a bot's sends go through while it runs.
#[derive(Clone)]
pub struct Live {
    pub connector: Arc<dyn Connector>,
    pub pacer: Arc<dyn Pacer>,
    /// Called when a send shows the bot cannot send: credentials or configuration rejected
    /// (the bot fails), or the balance exhausted (its sending pauses).
    pub on_fatal: Arc<dyn Fn(ConnectorError) + Send + Sync>,
}

#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    config: OutboxConfig,
    counters: Arc<Counters>,
    bots: Mutex<HashMap<String, Arc<BotQueue>>>,
    stopping: CancellationToken,
    tracker: TaskTracker,
}

struct BotQueue {
    bot_id: String,
    state: Mutex<QueueState>,
    live: watch::Sender<Option<Live>>,
    in_flight: Semaphore,
    /// Conversations being delivered at once. The others wait in a small future each, so a
    /// broadcast to 100,000 conversations does not hold 100,000 delivery states in memory.
    delivering: Semaphore,
}

/// Conversations of one bot being delivered at once (each waits for its pace and for a
/// send slot, so this is well above `max_in_flight_per_bot`).
const DELIVERING_PER_BOT: usize = 1024;

#[derive(Default)]
struct QueueState {
    conversations: HashMap<String, VecDeque<OutboxEntry>>,
    active: HashSet<String>,
    known: HashSet<String>,
}

enum Done {
    Finished,
    Stopping,
}

impl Outbox {
    pub fn new(store: Arc<Store>, config: OutboxConfig, counters: Arc<Counters>) -> Self {
        Outbox {
            inner: Arc::new(Inner {
                store,
                config,
                counters,
                bots: Mutex::new(HashMap::new()),
                stopping: CancellationToken::new(),
                tracker: TaskTracker::new(),
            }),
        }
    }

    fn queue(&self, bot_id: &str) -> Arc<BotQueue> {
        let mut bots = self.inner.bots.lock().unwrap_or_else(|e| e.into_inner());
        bots.entry(bot_id.to_string())
            .or_insert_with(|| {
                Arc::new(BotQueue {
                    bot_id: bot_id.to_string(),
                    state: Mutex::new(QueueState::default()),
                    live: watch::channel(None).0,
                    in_flight: Semaphore::new(self.inner.config.max_in_flight_per_bot),
                    delivering: Semaphore::new(
                        DELIVERING_PER_BOT.max(4 * self.inner.config.max_in_flight_per_bot),
                    ),
                })
            })
            .clone()
    }

    /// Follows the store's new outbox entries (in commit order) until shutdown.
    pub fn follow(&self, mut rx: tokio::sync::mpsc::UnboundedReceiver<OutboxEntry>) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    e = rx.recv() => match e {
                        Some(e) => this.push(e),
                        None => break,
                    },
                    _ = this.inner.stopping.cancelled() => break,
                }
            }
        });
    }

    /// Loads a bot's outbox from the store (start-up recovery).
    pub async fn recover(&self, bot_id: &str) -> Result<usize, StoreError> {
        let entries = self.inner.store.outbox(bot_id).await?;
        let n = entries.len();
        for e in entries {
            self.push(e);
        }
        if n > 0 {
            tracing::info!(bot = bot_id, messages = n, "outbox recovered");
        }
        Ok(n)
    }

    /// Adds an entry to its conversation's queue; starts the conversation's worker if idle.
    pub fn push(&self, entry: OutboxEntry) {
        let q = self.queue(&entry.message.bot_id);
        let conv = entry.conversation.id.clone();
        let start = {
            let mut st = q.state.lock().unwrap_or_else(|e| e.into_inner());
            if !st.known.insert(entry.message.id.clone()) {
                return;
            }
            st.conversations
                .entry(conv.clone())
                .or_default()
                .push_back(entry);
            st.active.insert(conv.clone())
        };
        self.depth(&q, 1.0);
        if start && !self.inner.stopping.is_cancelled() {
            let this = self.clone();
            self.inner
                .tracker
                .spawn(async move { this.work(q, conv).await });
        }
    }

    fn depth(&self, q: &BotQueue, delta: f64) {
        let labels = [
            ("bot", q.bot_id.clone()),
            (
                "platform",
                self.inner.counters.platform(&q.bot_id).to_string(),
            ),
        ];
        metrics::gauge!(switchboard_core::metrics::OUTBOX_DEPTH, &labels).increment(delta);
    }

    /// Lets the bot's queue send through `live` (the bot is running).
    pub fn attach(&self, bot_id: &str, live: Live) {
        self.queue(bot_id).live.send_replace(Some(live));
    }

    /// Holds the bot's queue (the bot stopped, failed or is restarting).
    pub fn detach(&self, bot_id: &str) {
        self.queue(bot_id).live.send_replace(None);
    }

    fn detach_if_current(&self, bot_id: &str, live: &Live) {
        let q = self.queue(bot_id);
        q.live.send_if_modified(|current| {
            let same = current
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(&c.connector, &live.connector));
            if same {
                *current = None;
            }
            same
        });
    }

    /// Messages waiting or in flight for a bot.
    pub fn depth_of(&self, bot_id: &str) -> usize {
        let q = self.queue(bot_id);
        let st = q.state.lock().unwrap_or_else(|e| e.into_inner());
        st.known.len()
    }

    /// Starts no new send, waits up to `grace` for the sends in flight.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stopping.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("outbox: sends still in flight after the shutdown grace period");
        }
    }

    async fn work(self, q: Arc<BotQueue>, conv: String) {
        loop {
            let delivering = tokio::select! {
                p = q.delivering.acquire() => p.ok(),
                _ = self.inner.stopping.cancelled() => None,
            };
            let entry = {
                let mut st = q.state.lock().unwrap_or_else(|e| e.into_inner());
                match st.conversations.get(&conv).and_then(|d| d.front()).cloned() {
                    Some(e) if delivering.is_some() && !self.inner.stopping.is_cancelled() => e,
                    _ => {
                        st.active.remove(&conv);
                        if st.conversations.get(&conv).is_some_and(|d| d.is_empty()) {
                            st.conversations.remove(&conv);
                        }
                        return;
                    }
                }
            };
            // Boxed: its (large) state exists only while this conversation is delivered.
            let done = Box::pin(self.deliver(&q, entry)).await;
            drop(delivering);
            match done {
                Done::Finished => {
                    let mut st = q.state.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(e) = st.conversations.get_mut(&conv).and_then(|d| d.pop_front()) {
                        st.known.remove(&e.message.id);
                    }
                    drop(st);
                    self.depth(&q, -1.0);
                }
                Done::Stopping => {
                    let mut st = q.state.lock().unwrap_or_else(|e| e.into_inner());
                    st.active.remove(&conv);
                    return;
                }
            }
        }
    }

    async fn wait_live(&self, q: &BotQueue) -> Option<Live> {
        let mut rx = q.live.subscribe();
        loop {
            if let Some(l) = rx.borrow_and_update().clone() {
                return Some(l);
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return None },
                _ = self.inner.stopping.cancelled() => return None,
            }
        }
    }

    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.inner.stopping.cancelled() => false,
        }
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let base = self
            .inner
            .config
            .retry_initial_ms
            .saturating_mul(1 << attempts.saturating_sub(1).min(20));
        Duration::from_millis(base.min(self.inner.config.retry_max_ms))
    }

    /// Sends one message until it is sent, failed, or shutdown begins.
    async fn deliver(&self, q: &BotQueue, entry: OutboxEntry) -> Done {
        let store = &self.inner.store;
        let id = entry.message.id.clone();
        let bot = q.bot_id.as_str();
        let key = PaceKey {
            chat: entry.conversation.external_chat_id.clone(),
            kind: entry.conversation.kind,
        };
        loop {
            let Some(live) = self.wait_live(q).await else {
                return Done::Stopping;
            };
            tokio::select! {
                _ = live.pacer.acquire(&key) => {}
                _ = self.inner.stopping.cancelled() => return Done::Stopping,
            }
            let Ok(_permit) = q.in_flight.acquire().await else {
                return Done::Stopping;
            };
            if self.inner.stopping.is_cancelled() {
                return Done::Stopping;
            }
            let message = match store.mark_sending(&id).await {
                Ok(m) => m,
                // Cancelled or deleted meanwhile: nothing to send.
                Err(StoreError::Conflict(_) | StoreError::NotFound) => return Done::Finished,
                Err(e) => {
                    tracing::error!(bot, message = %id, error = %e, "outbox: cannot mark sending; retrying");
                    if !self.sleep(Duration::from_secs(1)).await {
                        return Done::Stopping;
                    }
                    continue;
                }
            };
            let reply_to_external_id = match (&entry.reply_to_external_id, &message.reply_to) {
                (Some(x), _) => Some(x.clone()),
                (None, Some(_)) => store.reply_external_id(&message).await.unwrap_or(None),
                (None, None) => None,
            };
            let attempts = message.attempts;
            let request = OutboundRequest {
                message,
                chat: ChatRef {
                    external_chat_id: entry.conversation.external_chat_id.clone(),
                    kind: entry.conversation.kind,
                    title: entry.conversation.title.clone(),
                },
                reply_to_external_id,
            };
            let started = Instant::now();
            let timeout = Duration::from_millis(self.inner.config.send_timeout_ms);
            let result = match tokio::time::timeout(timeout, live.connector.send(&request)).await {
                Ok(r) => r,
                Err(_) => Err(ConnectorError::transient(format!(
                    "no answer from the platform within {} ms",
                    self.inner.config.send_timeout_ms
                ))),
            };
            drop(_permit);
            let labels = [
                ("bot", bot.to_string()),
                ("platform", self.inner.counters.platform(bot).to_string()),
            ];
            metrics::histogram!(switchboard_core::metrics::SEND_SECONDS, &labels)
                .record(started.elapsed().as_secs_f64());
            let next = match result {
                Ok(receipt) => {
                    self.inner.counters.add(bot, Count::Sent, 1);
                    let SendReceipt { external_id, cost } = receipt;
                    match self
                        .persist(&id, || store.mark_sent(&id, &external_id, cost.as_deref()))
                        .await
                    {
                        true => Some(Done::Finished),
                        false => Some(Done::Stopping),
                    }
                }
                Err(err) => {
                    self.handle_error(bot, &live, &key, &id, attempts, err)
                        .await
                }
            };
            if let Some(done) = next {
                return done;
            }
        }
    }

    /// Writes a send's outcome, retrying while the store refuses (a busy database): the
    /// conversation's queue does not move on until the outcome is committed. False when
    /// shutdown began first (the row stays in the outbox and is resent after a restart).
    async fn persist<F, Fut>(&self, id: &str, write: F) -> bool
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<switchboard_core::model::Message, StoreError>>,
    {
        let mut wait = Duration::from_millis(100);
        loop {
            match write().await {
                // Cancelled or deleted meanwhile: nothing left to record.
                Ok(_) | Err(StoreError::Conflict(_) | StoreError::NotFound) => return true,
                Err(e) => {
                    tracing::error!(message = %id, error = %e, "outbox: cannot record a send outcome; retrying");
                    if !self.sleep(wait).await {
                        return false;
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Records a failed attempt. `Some(done)` ends this message's delivery, `None` retries.
    async fn handle_error(
        &self,
        bot: &str,
        live: &Live,
        key: &PaceKey,
        id: &str,
        attempts: u32,
        err: ConnectorError,
    ) -> Option<Done> {
        let store = &self.inner.store;
        let recorded: MessageError = err.to_message_error();
        let stopping = Some(Done::Stopping);
        match &err {
            ConnectorError::RateLimited {
                retry_after,
                whole_bot,
                ..
            } => {
                self.inner.counters.add(bot, Count::RateLimited, 1);
                let wait = retry_after
                    .unwrap_or_else(|| live.pacer.default_retry_after())
                    .max(Duration::from_millis(50));
                live.pacer.penalize(key, wait, *whole_bot);
                if !self
                    .persist(id, || store.mark_retry(id, recorded.clone(), false))
                    .await
                {
                    return stopping;
                }
                None
            }
            ConnectorError::Transient { .. } if attempts < self.inner.config.max_attempts => {
                self.inner.counters.add(bot, Count::Retry, 1);
                if !self
                    .persist(id, || store.mark_retry(id, recorded.clone(), true))
                    .await
                {
                    return stopping;
                }
                if self.sleep(self.backoff(attempts)).await {
                    None
                } else {
                    stopping
                }
            }
            ConnectorError::Transient { .. } | ConnectorError::Permanent { .. } => {
                self.inner.counters.add(bot, Count::Failed, 1);
                let mut recorded = recorded;
                if matches!(err, ConnectorError::Transient { .. }) {
                    recorded.message =
                        format!("{} (gave up after {attempts} attempts)", recorded.message);
                }
                if !self
                    .persist(id, || store.mark_failed(id, recorded.clone()))
                    .await
                {
                    return stopping;
                }
                Some(Done::Finished)
            }
            ConnectorError::Auth { .. }
            | ConnectorError::Config(_)
            | ConnectorError::InsufficientFunds { .. } => {
                // Hold the queue now: nothing more goes out with rejected credentials. Only if
                // this send went through the current connector: a run that replaced it (new
                // credentials) must not be held by an answer to the old one.
                self.detach_if_current(bot, live);
                if !self
                    .persist(id, || store.mark_retry(id, recorded.clone(), false))
                    .await
                {
                    return stopping;
                }
                (live.on_fatal)(err);
                None
            }
        }
    }
}
