//! The supervisor: one task per enabled bot, owning its connector's life.
//!
//! Lifecycle: `starting -> running <-> degraded` (a connector reports `running` itself, once
//! it receives: poll loop started, gateway session ready, webhook registered), then on an error or a panic `backoff`
//! (restart after 1 s doubling to 5 min, with ±20% jitter; the delay resets after a healthy
//! minute), `stopped` when asked to stop, `failed` on a permanent error (credentials rejected,
//! bad configuration) with no retry loop. Probes run on an interval beside the connector's
//! inbound loop. `paused`: the account's balance is exhausted (a send or a probe said so); the
//! bot keeps receiving, its queue is held, and probes every `paused_recheck_ms` resume it. Every state change is written to the store (a `bot.state` event) and the
//! `switchboard_bot_state` gauge. One bot's trouble never touches another's task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rand::Rng;
use switchboard_core::connector::{
    Connector, ConnectorRegistry, Credentials, CursorStore, HealthReporter, InboundSink, RunContext,
};
use switchboard_core::error::ConnectorError;
use switchboard_core::model::{Bot, BotState, Platform};
use switchboard_core::rate::RatePolicy;
use switchboard_core::secret::{Cipher, Secret, sha256_hex};
use switchboard_core::store::Scope;
use switchboard_core::{Store, StoreError};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::SupervisorConfig;
use crate::counters::{Count, Counters};
use crate::outbox::{Live, Outbox};

#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

/// A running bot's platform and connector.
pub type LiveBot = (Platform, Arc<dyn Connector>);

struct Inner {
    store: Arc<Store>,
    registry: ConnectorRegistry,
    cipher: Option<Cipher>,
    config: SupervisorConfig,
    public_url: Option<String>,
    outbox: Outbox,
    counters: Arc<Counters>,
    inbound: Arc<dyn InboundSink>,
    cursors: Arc<dyn CursorStore>,
    tasks: Mutex<HashMap<String, Running>>,
    /// One lifecycle operation at a time per bot (start, stop, reconcile), so two
    /// concurrent requests can never leave two runs of one bot.
    lifecycle: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Running bots' connectors, with their platform (the webhook ingress's lookup).
    live: RwLock<HashMap<String, LiveBot>>,
}

struct Running {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    fingerprint: String,
}

/// How one run of a connector ended.
enum Ended {
    Stopped,
    Failed(String),
    Retry(String),
}

impl Supervisor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<Store>,
        registry: ConnectorRegistry,
        cipher: Option<Cipher>,
        config: SupervisorConfig,
        public_url: Option<String>,
        outbox: Outbox,
        counters: Arc<Counters>,
        inbound: Arc<dyn InboundSink>,
        cursors: Arc<dyn CursorStore>,
    ) -> Self {
        Supervisor {
            inner: Arc::new(Inner {
                store,
                registry,
                cipher,
                config,
                public_url,
                outbox,
                counters,
                inbound,
                cursors,
                tasks: Mutex::new(HashMap::new()),
                lifecycle: std::sync::Mutex::new(HashMap::new()),
                live: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// The running connector of a bot (webhook ingress).
    pub fn connector(&self, bot_id: &str) -> Option<Arc<dyn Connector>> {
        self.live(bot_id).map(|(_, c)| c)
    }

    /// A running bot's platform and connector.
    pub fn live(&self, bot_id: &str) -> Option<LiveBot> {
        self.inner
            .live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(bot_id)
            .cloned()
    }

    /// The lifecycle lock of one bot.
    async fn lock_bot(&self, bot_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .inner
            .lifecycle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(bot_id.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Brings every stored bot to its wanted state: enabled bots run (restarted if their
    /// settings or credentials changed), disabled or deleted bots stop.
    pub async fn reconcile_all(&self) -> Result<(), StoreError> {
        let bots = self.inner.store.all_bots().await?;
        let ids: Vec<String> = bots.iter().map(|b| b.id.clone()).collect();
        for bot in bots {
            let _turn = self.lock_bot(&bot.id).await;
            self.reconcile_bot(bot).await?;
        }
        let running: Vec<String> = self.inner.tasks.lock().await.keys().cloned().collect();
        for id in running.into_iter().filter(|id| !ids.contains(id)) {
            let _turn = self.lock_bot(&id).await;
            self.stop_run(&id).await;
        }
        Ok(())
    }

    /// Reconciles one bot after it was created or changed.
    pub async fn reconcile(&self, bot_id: &str) -> Result<(), StoreError> {
        let _turn = self.lock_bot(bot_id).await;
        self.reconcile_locked(bot_id).await
    }

    async fn reconcile_locked(&self, bot_id: &str) -> Result<(), StoreError> {
        match self.inner.store.get_bot(&Scope::All, bot_id).await {
            Ok(bot) => self.reconcile_bot(bot).await,
            Err(StoreError::NotFound) => {
                self.stop_run(bot_id).await;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn fingerprint(&self, bot: &Bot) -> Result<String, StoreError> {
        let sealed = self.inner.store.bot_credentials(&bot.id).await?;
        let creds = serde_json::to_string(&sealed).unwrap_or_default();
        Ok(sha256_hex(
            format!(
                "{}|{}|{}",
                bot.enabled,
                serde_json::Value::Object(bot.settings.clone()),
                creds
            )
            .as_bytes(),
        ))
    }

    async fn reconcile_bot(&self, bot: Bot) -> Result<(), StoreError> {
        self.inner
            .counters
            .seed(&bot.id, bot.platform, Default::default());
        if !bot.enabled {
            self.stop_run(&bot.id).await;
            if bot.state != BotState::Stopped {
                self.set_state(&bot.id, BotState::Stopped, Some("disabled".into()), None)
                    .await;
            }
            return Ok(());
        }
        let fingerprint = self.fingerprint(&bot).await?;
        {
            let tasks = self.inner.tasks.lock().await;
            if let Some(r) = tasks.get(&bot.id)
                && r.fingerprint == fingerprint
                && !r.task.is_finished()
            {
                return Ok(());
            }
        }
        self.stop_run(&bot.id).await;
        self.spawn(&bot.id, fingerprint).await;
        Ok(())
    }

    async fn spawn(&self, bot_id: &str, fingerprint: String) {
        // Recorded before the task exists, so no reader sees the state a previous run left.
        self.set_state(bot_id, BotState::Starting, None, None).await;
        let cancel = CancellationToken::new();
        let this = self.clone();
        let id = bot_id.to_string();
        let c = cancel.clone();
        let task = tokio::spawn(async move { this.run_bot(id, c).await });
        let previous = self.inner.tasks.lock().await.insert(
            bot_id.to_string(),
            Running {
                cancel,
                task,
                fingerprint,
            },
        );
        // Callers stop the previous run first; never leave one behind regardless.
        if let Some(old) = previous {
            old.cancel.cancel();
            let _ = old.task.await;
        }
    }

    /// Starts a bot (and remembers that it should run).
    pub async fn start(&self, bot_id: &str) -> Result<(), StoreError> {
        let _turn = self.lock_bot(bot_id).await;
        self.inner.store.set_bot_enabled(bot_id, true).await?;
        self.reconcile_locked(bot_id).await
    }

    /// Stops a bot (and remembers that it should not run).
    pub async fn stop(&self, bot_id: &str) -> Result<(), StoreError> {
        let _turn = self.lock_bot(bot_id).await;
        self.inner.store.set_bot_enabled(bot_id, false).await?;
        self.stop_run(bot_id).await;
        self.set_state(
            bot_id,
            BotState::Stopped,
            Some("stopped by the operator".into()),
            None,
        )
        .await;
        Ok(())
    }

    /// Stops and starts a bot, resetting its backoff.
    pub async fn restart(&self, bot_id: &str) -> Result<(), StoreError> {
        let _turn = self.lock_bot(bot_id).await;
        self.inner.store.set_bot_enabled(bot_id, true).await?;
        self.stop_run(bot_id).await;
        self.reconcile_locked(bot_id).await
    }

    /// Stops a bot's task and waits for it (its in-flight work ends cleanly).
    pub async fn stop_task(&self, bot_id: &str) {
        let _turn = self.lock_bot(bot_id).await;
        self.stop_run(bot_id).await;
    }

    /// `stop_task` with the bot's lifecycle lock already held.
    async fn stop_run(&self, bot_id: &str) {
        let running = self.inner.tasks.lock().await.remove(bot_id);
        if let Some(r) = running {
            r.cancel.cancel();
            if let Err(e) = r.task.await
                && e.is_panic()
            {
                tracing::error!(bot = bot_id, "bot task panicked while stopping");
            }
        }
        self.inner.outbox.detach(bot_id);
        self.inner
            .live
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(bot_id);
    }

    /// Stops every bot (shutdown). States are left as they are: the bots run again at start.
    pub async fn shutdown(&self) {
        let all: Vec<(String, Running)> = self.inner.tasks.lock().await.drain().collect();
        for (_, r) in &all {
            r.cancel.cancel();
        }
        for (id, r) in all {
            let _ = r.task.await;
            self.inner.outbox.detach(&id);
        }
    }

    pub async fn set_state(
        &self,
        bot_id: &str,
        state: BotState,
        reason: Option<String>,
        last_error: Option<String>,
    ) {
        set_state(
            &self.inner.store,
            &self.inner.counters,
            bot_id,
            state,
            reason,
            last_error,
        )
        .await;
    }

    async fn credentials(&self, bot: &Bot) -> Result<Credentials, ConnectorError> {
        let id = &bot.id;
        {
            let sealed =
                self.inner.store.bot_credentials(id).await.map_err(|e| {
                    ConnectorError::transient(format!("cannot read credentials: {e}"))
                })?;
            let Some(sealed) = sealed else {
                return Ok(Credentials::new());
            };
            let cipher = self.inner.cipher.as_ref().ok_or_else(|| {
                ConnectorError::Config(
                    "the bot has stored credentials but no master key is configured".into(),
                )
            })?;
            let plain = cipher.open(&sealed).map_err(|e| {
                ConnectorError::Config(format!("cannot decrypt the bot's credentials: {e}"))
            })?;
            let map: HashMap<String, String> = serde_json::from_slice(&plain)
                .map_err(|_| ConnectorError::Config("stored credentials are malformed".into()))?;
            Ok(map.into_iter().map(|(k, v)| (k, Secret::new(v))).collect())
        }
    }

    /// Builds the connector and its pacer for one run.
    async fn build(
        &self,
        bot: &Bot,
    ) -> Result<(Arc<dyn Connector>, Arc<dyn switchboard_core::rate::Pacer>), ConnectorError> {
        let factory = self.inner.registry.get(bot.platform).ok_or_else(|| {
            ConnectorError::Config(format!(
                "this build has no connector for platform {}",
                bot.platform
            ))
        })?;
        let creds = self.credentials(bot).await?;
        let problems = factory.validate(&bot.settings, &creds);
        if !problems.is_empty() {
            return Err(ConnectorError::config(&problems));
        }
        let mut policy: RatePolicy = factory.rate_policy(&bot.settings);
        if let Some(overrides) = bot.settings.get("rate_limit").and_then(|v| v.as_object()) {
            policy = policy.with_overrides(overrides).map_err(|errs| {
                let errs: Vec<(String, String)> = errs
                    .into_iter()
                    .map(|(k, m)| (format!("rate_limit.{k}"), m))
                    .collect();
                ConnectorError::config(&errs)
            })?;
        }
        let connector = factory.build(bot, creds, self.inner.public_url.as_deref())?;
        let pacer = connector.pacer(policy);
        Ok((connector, pacer))
    }

    fn jitter(d: Duration) -> Duration {
        d.mul_f64(rand::rng().random_range(0.8..1.2))
    }

    async fn run_bot(self, bot_id: String, cancel: CancellationToken) {
        let initial = Duration::from_millis(self.inner.config.restart_initial_ms);
        let max = Duration::from_millis(self.inner.config.restart_max_ms);
        let healthy = Duration::from_millis(self.inner.config.healthy_reset_ms);
        let mut delay = initial;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let started = Instant::now();
            let ended = self.run_once(&bot_id, &cancel).await;
            self.inner.outbox.detach(&bot_id);
            self.inner
                .live
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&bot_id);
            let reason = match ended {
                Ended::Stopped => return,
                Ended::Failed(reason) => {
                    tracing::error!(bot = %bot_id, reason = %reason, "bot failed; not restarting");
                    self.set_state(
                        &bot_id,
                        BotState::Failed,
                        Some(reason.clone()),
                        Some(reason),
                    )
                    .await;
                    return;
                }
                Ended::Retry(reason) => reason,
            };
            if started.elapsed() >= healthy {
                delay = initial;
            }
            let wait = Self::jitter(delay);
            self.inner.counters.add(&bot_id, Count::Restart, 1);
            tracing::warn!(bot = %bot_id, reason = %reason, retry_in_ms = wait.as_millis() as u64, "bot stopped working; restarting");
            self.set_state(
                &bot_id,
                BotState::Backoff,
                Some(format!("restarting in {:.1} s", wait.as_secs_f64())),
                Some(reason),
            )
            .await;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return,
            }
            delay = (delay * 2).min(max);
        }
    }

    async fn run_once(&self, bot_id: &str, cancel: &CancellationToken) -> Ended {
        let bot = match self.inner.store.get_bot(&Scope::All, bot_id).await {
            Ok(b) => b,
            Err(StoreError::NotFound) => return Ended::Stopped,
            Err(e) => return Ended::Retry(format!("cannot load the bot: {e}")),
        };
        self.set_state(bot_id, BotState::Starting, None, None).await;
        let (connector, pacer) = match self.build(&bot).await {
            Ok(c) => c,
            Err(e) if e.is_fatal_for_bot() => return Ended::Failed(e.to_string()),
            Err(e) => return Ended::Retry(e.to_string()),
        };
        let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel::<ConnectorError>();
        let health = Health::new(
            self.inner.store.clone(),
            self.inner.counters.clone(),
            bot_id.to_string(),
        );
        let run_cancel = cancel.child_token();
        let ctx = RunContext {
            bot: bot.clone(),
            public_url: self.inner.public_url.clone(),
            inbound: self.inner.inbound.clone(),
            cursors: self.inner.cursors.clone(),
            health: health.clone(),
            cancel: run_cancel.clone(),
        };
        self.inner
            .live
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(bot_id.to_string(), (bot.platform, connector.clone()));
        let on_fatal: Arc<dyn Fn(ConnectorError) + Send + Sync> = Arc::new(move |e| {
            let _ = fatal_tx.send(e);
        });
        let live = Live {
            connector: connector.clone(),
            pacer,
            on_fatal,
        };
        self.inner.outbox.attach(bot_id, live.clone());
        let run = {
            let c = connector.clone();
            tokio::spawn(async move {
                std::panic::AssertUnwindSafe(c.run(ctx))
                    .catch_unwind()
                    .await
            })
        };
        let pause = Arc::new(Pause::default());
        let probes = self.probe_loop(bot_id, live, health.clone(), pause.clone());
        tokio::pin!(run, probes);
        let ended = loop {
            tokio::select! {
                r = &mut run => break match r {
                    Ok(Ok(Ok(()))) if cancel.is_cancelled() => Ended::Stopped,
                    Ok(Ok(Ok(()))) => Ended::Retry("the connector's inbound loop ended".into()),
                    Ok(Ok(Err(e))) if e.is_fatal_for_bot() => Ended::Failed(e.to_string()),
                    Ok(Ok(Err(e))) => Ended::Retry(e.to_string()),
                    Ok(Err(panic)) => Ended::Retry(format!("connector panicked: {}", panic_message(&panic))),
                    Err(join) => Ended::Retry(format!("connector task ended abnormally: {join}")),
                },
                e = &mut probes => break Ended::Failed(e.to_string()),
                Some(e) = fatal_rx.recv() => match e {
                    // The outbox already holds the bot's queue; the probes resume it.
                    ConnectorError::InsufficientFunds { .. } => pause.begin(&health, &e),
                    e => break Ended::Failed(e.to_string()),
                },
                _ = cancel.cancelled() => break Ended::Stopped,
            }
        };
        health.active.store(false, Ordering::SeqCst);
        run_cancel.cancel();
        if !run.is_finished() {
            // Give the inbound loop a moment to finish the update it is storing.
            if tokio::time::timeout(Duration::from_secs(5), &mut run)
                .await
                .is_err()
            {
                run.abort();
            }
        }
        ended
    }

    /// Probes on an interval; returns only with an error that is fatal for the bot. A probe
    /// answering `InsufficientFunds` pauses the bot's sending; while paused, probes run every
    /// `paused_recheck_ms` and the first success re-attaches the bot's queue.
    async fn probe_loop(
        &self,
        bot_id: &str,
        live: Live,
        health: Arc<Health>,
        pause: Arc<Pause>,
    ) -> ConnectorError {
        let every = Duration::from_millis(self.inner.config.probe_interval_ms);
        let recheck = Duration::from_millis(self.inner.config.paused_recheck_ms);
        let mut degraded_by_probe = false;
        loop {
            let paused = pause.is_paused();
            tokio::select! {
                _ = tokio::time::sleep(if paused { recheck } else { every }) => {}
                // Paused meanwhile: start rechecking on the paused schedule.
                _ = pause.changed.notified(), if !paused => continue,
            }
            let r =
                match tokio::time::timeout(Duration::from_secs(30), live.connector.probe()).await {
                    Ok(r) => r,
                    Err(_) => Err(ConnectorError::transient("probe timed out after 30 s")),
                };
            match r {
                Ok(()) if pause.is_paused() => {
                    pause.end();
                    degraded_by_probe = false;
                    tracing::info!(bot = bot_id, "balance is back: sending resumes");
                    self.inner.outbox.attach(bot_id, live.clone());
                    health.running();
                }
                Ok(()) if degraded_by_probe => {
                    degraded_by_probe = false;
                    health.running();
                }
                Ok(()) => {}
                Err(e) if e.is_fatal_for_bot() => return e,
                Err(e @ ConnectorError::InsufficientFunds { .. }) => {
                    if !pause.is_paused() {
                        self.inner.outbox.detach(bot_id);
                        pause.begin(&health, &e);
                    }
                }
                Err(e) => {
                    degraded_by_probe = true;
                    health.degraded(&format!("probe failed: {e}"));
                }
            }
        }
    }
}

/// Whether a bot's sending is paused for an exhausted balance.
#[derive(Default)]
struct Pause {
    paused: AtomicBool,
    changed: tokio::sync::Notify,
}

impl Pause {
    fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    fn begin(&self, health: &Health, e: &ConnectorError) {
        if !self.paused.swap(true, Ordering::SeqCst) {
            tracing::warn!(error = %e, "sending paused until the balance is back");
            health.report(
                BotState::Paused,
                Some(format!(
                    "sending paused: {e}; queued messages wait for a top-up"
                )),
            );
            self.changed.notify_one();
        }
    }

    fn end(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

async fn set_state(
    store: &Store,
    counters: &Counters,
    bot_id: &str,
    state: BotState,
    reason: Option<String>,
    last_error: Option<String>,
) {
    let platform = counters.platform(bot_id);
    for s in BotState::ALL {
        let labels = [
            ("bot", bot_id.to_string()),
            ("platform", platform.to_string()),
            ("state", s.as_str().to_string()),
        ];
        metrics::gauge!(switchboard_core::metrics::BOT_STATE, &labels).set(if s == state {
            1.0
        } else {
            0.0
        });
    }
    match store.set_bot_state(bot_id, state, reason, last_error).await {
        Ok(_) | Err(StoreError::NotFound) => {}
        Err(e) => tracing::error!(bot = bot_id, error = %e, "cannot record bot state"),
    }
}

/// A running connector's health reports, recorded as bot states in the order they were
/// made, and only while its run lasts (late reports never overwrite the supervisor's state).
struct Health {
    reports: mpsc::UnboundedSender<(BotState, Option<String>)>,
    /// False once the run ended.
    active: Arc<AtomicBool>,
}

impl Health {
    /// The reporter and the task that records its reports one after another.
    fn new(store: Arc<Store>, counters: Arc<Counters>, bot_id: String) -> Arc<Health> {
        let (tx, mut rx) = mpsc::unbounded_channel::<(BotState, Option<String>)>();
        let active = Arc::new(AtomicBool::new(true));
        let still = active.clone();
        tokio::spawn(async move {
            while let Some((state, reason)) = rx.recv().await {
                if still.load(Ordering::SeqCst) {
                    set_state(&store, &counters, &bot_id, state, reason.clone(), reason).await;
                }
            }
        });
        Arc::new(Health {
            reports: tx,
            active,
        })
    }

    fn report(&self, state: BotState, reason: Option<String>) {
        if self.active.load(Ordering::SeqCst) {
            let _ = self.reports.send((state, reason));
        }
    }
}

impl HealthReporter for Health {
    fn running(&self) {
        self.report(BotState::Running, None);
    }

    fn degraded(&self, reason: &str) {
        self.report(BotState::Degraded, Some(reason.to_string()));
    }
}
