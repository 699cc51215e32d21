//! The broadcast scheduler: one loop for every broadcast, driven by the store.
//!
//! Every 250 ms it starts the scheduled broadcasts whose time has come (so one starts within
//! a second of `scheduled_at`, and one missed while the gateway was down starts at start-up,
//! `started_late` in its event). Every second it publishes the progress of the broadcasts
//! being sent (`broadcast.progress`, when their counts moved) and completes those with
//! nothing left waiting. All of its state is in the store: a restart loses nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use switchboard_core::connector::ConnectorRegistry;
use switchboard_core::model::BroadcastCounts;
use switchboard_core::store::{DueBroadcast, Scope};
use switchboard_core::{Store, StoreError};
use tokio_util::sync::CancellationToken;

const DUE_EVERY: Duration = Duration::from_millis(250);
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

pub struct Scheduler {
    store: Arc<Store>,
    registry: ConnectorRegistry,
    /// When this gateway started: a broadcast due before then was missed.
    started: DateTime<Utc>,
    /// Last counts published per sending broadcast.
    published: HashMap<String, BroadcastCounts>,
}

impl Scheduler {
    pub fn spawn(store: Arc<Store>, registry: ConnectorRegistry, stop: CancellationToken) {
        let mut s = Scheduler {
            store,
            registry,
            started: Utc::now(),
            published: HashMap::new(),
        };
        tokio::spawn(async move {
            let mut due = tokio::time::interval(DUE_EVERY);
            due.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_progress = Instant::now();
            loop {
                tokio::select! {
                    _ = due.tick() => {}
                    _ = stop.cancelled() => break,
                }
                if let Err(e) = s.start_due().await {
                    tracing::warn!(error = %e, "scheduler: cannot read due broadcasts");
                }
                if last_progress.elapsed() >= PROGRESS_EVERY {
                    last_progress = Instant::now();
                    if let Err(e) = s.progress().await {
                        tracing::warn!(error = %e, "scheduler: cannot publish broadcast progress");
                    }
                }
            }
        });
    }

    async fn start_due(&mut self) -> Result<(), StoreError> {
        for b in self.store.due_broadcasts(Utc::now()).await? {
            self.start(b).await;
        }
        Ok(())
    }

    async fn start(&mut self, b: DueBroadcast) {
        let late = b.scheduled_at.is_some_and(|t| t < self.started);
        let bot = match self.store.get_bot(&Scope::All, &b.bot_id).await {
            Ok(bot) => bot,
            Err(StoreError::NotFound) => {
                tracing::warn!(broadcast = %b.id, bot = %b.bot_id, "scheduled broadcast's bot is gone; cancelled");
                if let Err(e) = self.store.cancel_broadcast(&b.tenant, &b.id).await {
                    tracing::error!(broadcast = %b.id, error = %e, "cannot cancel broadcast");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(broadcast = %b.id, error = %e, "cannot read the broadcast's bot");
                return;
            }
        };
        let window = self
            .registry
            .get(bot.platform)
            .and_then(|f| f.reply_window(&b.content));
        match self
            .store
            .start_broadcast(&b.id, &bot.id, late, window)
            .await
        {
            Ok(()) => tracing::info!(broadcast = %b.id, late, "broadcast started"),
            // Cancelled or edited meanwhile: the next tick sees the current row.
            Err(StoreError::Conflict(_)) => {}
            Err(e) => tracing::error!(broadcast = %b.id, error = %e, "cannot start broadcast"),
        }
    }

    async fn progress(&mut self) -> Result<(), StoreError> {
        let sending = self.store.sending_broadcasts().await?;
        self.published
            .retain(|id, _| sending.iter().any(|(s, _)| s == id));
        for (id, tenant) in sending {
            let b = self
                .store
                .get_broadcast(&Scope::Tenant(tenant), &id)
                .await?;
            if self.published.get(&id) == Some(&b.counts) {
                continue;
            }
            self.store.broadcast_progress(&id, b.counts.clone()).await?;
            self.published.insert(id, b.counts);
        }
        Ok(())
    }
}
