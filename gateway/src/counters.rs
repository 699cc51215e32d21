//! Per-bot counters shown in `GET /v1/bots` (seeded from the store at start-up) and the
//! Prometheus metrics with `bot` and `platform` labels; both are updated in one place.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use switchboard_core::metrics as m;
use switchboard_core::model::{BotCounters, Platform};

#[derive(Default)]
struct Cells {
    platform: RwLock<Option<Platform>>,
    sent: AtomicU64,
    received: AtomicU64,
    failed: AtomicU64,
    rate_limited: AtomicU64,
}

impl Cells {
    fn platform_label(&self) -> &'static str {
        self.platform
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .map(|p| p.as_str())
            .unwrap_or("unknown")
    }
}

/// Counters of every bot.
#[derive(Default)]
pub struct Counters {
    bots: RwLock<HashMap<String, Arc<Cells>>>,
}

/// Which counter to bump.
#[derive(Debug, Clone, Copy)]
pub enum Count {
    Sent,
    Received,
    Failed,
    RateLimited,
    Retry,
    Duplicate,
    Restart,
}

impl Counters {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn cells(&self, bot: &str) -> Arc<Cells> {
        if let Some(c) = self.bots.read().unwrap_or_else(|e| e.into_inner()).get(bot) {
            return c.clone();
        }
        self.bots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(bot.to_string())
            .or_default()
            .clone()
    }

    /// Seeds a bot's counters (start-up) and records its platform for metric labels.
    pub fn seed(&self, bot: &str, platform: Platform, start: BotCounters) {
        let c = self.cells(bot);
        *c.platform.write().unwrap_or_else(|e| e.into_inner()) = Some(platform);
        c.sent.fetch_max(start.sent, Ordering::Relaxed);
        c.received.fetch_max(start.received, Ordering::Relaxed);
        c.failed.fetch_max(start.failed, Ordering::Relaxed);
    }

    pub fn platform(&self, bot: &str) -> &'static str {
        self.cells(bot).platform_label()
    }

    pub fn add(&self, bot: &str, what: Count, n: u64) {
        if n == 0 {
            return;
        }
        let c = self.cells(bot);
        let labels = [
            ("bot", bot.to_string()),
            ("platform", c.platform_label().to_string()),
        ];
        let name = match what {
            Count::Sent => {
                c.sent.fetch_add(n, Ordering::Relaxed);
                m::MESSAGES_SENT
            }
            Count::Received => {
                c.received.fetch_add(n, Ordering::Relaxed);
                m::MESSAGES_RECEIVED
            }
            Count::Failed => {
                c.failed.fetch_add(n, Ordering::Relaxed);
                m::MESSAGES_FAILED
            }
            Count::RateLimited => {
                c.rate_limited.fetch_add(n, Ordering::Relaxed);
                m::RATE_LIMITED
            }
            Count::Retry => m::SEND_RETRIES,
            Count::Duplicate => m::MESSAGES_DUPLICATE,
            Count::Restart => m::BOT_RESTARTS,
        };
        metrics::counter!(name, &labels).increment(n);
    }

    pub fn get(&self, bot: &str) -> BotCounters {
        let c = self.cells(bot);
        BotCounters {
            sent: c.sent.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
        }
    }

    pub fn forget(&self, bot: &str) {
        self.bots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(bot);
    }
}
