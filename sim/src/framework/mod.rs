//! The platform-independent part of the simulator.
//!
//! Every simulated platform owns one [`SimCore`]: the ordered log of the HTTP requests it
//! received, the counters the benchmarks read, and the faults currently injected. The
//! [`server`] module serves a platform's router over loopback TCP and applies faults and
//! recording as one middleware; [`rate`] holds the token buckets platforms use to answer 429.

pub mod rate;
pub mod server;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::Serialize;

/// The request log keeps at most this many entries (the oldest are forgotten first), so a long
/// benchmark cannot exhaust memory.
const REQUEST_LOG_CAPACITY: usize = 1_000_000;

/// One HTTP request the simulator received, in arrival order.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Request path with credentials redacted (Telegram: `/bot123:***/sendMessage`).
    pub path: String,
    /// The platform API method, lowercase (`sendmessage`), when the path names one.
    pub api_method: Option<String>,
    /// HTTP status answered; 0 while unanswered or when a fault never answers.
    pub status: u16,
    /// When the request arrived.
    pub at: Instant,
}

/// A snapshot of the simulator's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Platform API requests received (control API requests are not counted).
    pub requests: u64,
    pub responses_2xx: u64,
    pub responses_4xx: u64,
    /// Rate-limit answers (HTTP 429, and platform rate-limit errors sent with another 4xx
    /// status such as WhatsApp's 130429 and 131056); also counted in `responses_4xx`.
    pub responses_429: u64,
    pub responses_5xx: u64,
    /// Connections closed without an answer by the `drop_rate` fault.
    pub dropped_connections: u64,
    /// Requests left unanswered by the `timeout_rate` fault.
    pub hung_requests: u64,
    /// Events the platform produced for bots (Telegram: updates).
    pub updates_created: u64,
    /// Events handed to bots, by polling answers or successful webhook deliveries. An update
    /// returned twice by getUpdates (not confirmed) counts twice.
    pub updates_delivered: u64,
    /// Successful webhook POSTs (2xx answer).
    pub webhook_deliveries: u64,
    /// Failed webhook POSTs (non-2xx answer or no connection); each retry counts.
    pub webhook_failures: u64,
}

/// Live counters, updated lock-free by handlers and background tasks.
#[derive(Debug, Default)]
pub struct CounterSet {
    requests: AtomicU64,
    responses_2xx: AtomicU64,
    responses_4xx: AtomicU64,
    responses_429: AtomicU64,
    responses_5xx: AtomicU64,
    pub(crate) dropped_connections: AtomicU64,
    pub(crate) hung_requests: AtomicU64,
    pub(crate) updates_created: AtomicU64,
    pub(crate) updates_delivered: AtomicU64,
    pub(crate) webhook_deliveries: AtomicU64,
    pub(crate) webhook_failures: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl CounterSet {
    /// Counts a rate-limit answer a platform gives with a status other than 429 (WhatsApp
    /// answers its throughput errors with 400); the status itself is counted as usual.
    pub fn count_rate_limited(&self) {
        bump(&self.responses_429, 1);
    }

    fn count_status(&self, status: u16) {
        match status {
            200..=299 => bump(&self.responses_2xx, 1),
            429 => {
                bump(&self.responses_4xx, 1);
                bump(&self.responses_429, 1);
            }
            400..=499 => bump(&self.responses_4xx, 1),
            500..=599 => bump(&self.responses_5xx, 1),
            _ => {}
        }
    }

    pub fn snapshot(&self) -> Counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            requests: get(&self.requests),
            responses_2xx: get(&self.responses_2xx),
            responses_4xx: get(&self.responses_4xx),
            responses_429: get(&self.responses_429),
            responses_5xx: get(&self.responses_5xx),
            dropped_connections: get(&self.dropped_connections),
            hung_requests: get(&self.hung_requests),
            updates_created: get(&self.updates_created),
            updates_delivered: get(&self.updates_delivered),
            webhook_deliveries: get(&self.webhook_deliveries),
            webhook_failures: get(&self.webhook_failures),
        }
    }
}

/// Faults injected into platform API requests. `Default` injects none.
///
/// Applied in this order: `latency` is added to every request; then, each with its own
/// probability, the connection is closed without an answer (`drop_rate`), the request is never
/// answered (`timeout_rate`), or a 5xx is answered (`error_rate`). A faulty request has no effect.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Probability (0..=1) of answering 500 (JSON) or, one time in four, 502 (HTML from the proxy).
    pub error_rate: f64,
    pub latency: Duration,
    /// Probability (0..=1) of accepting the request and never answering.
    pub timeout_rate: f64,
    /// Probability (0..=1) of closing the TCP connection without answering.
    pub drop_rate: f64,
}

/// What the faults decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOutcome {
    Proceed,
    DropConnection,
    NeverAnswer,
    /// Answer this 5xx status.
    ServerError(u16),
}

impl Faults {
    /// Draws the outcome for one request.
    pub fn roll(&self) -> FaultOutcome {
        let mut rng = rand::rng();
        let mut hit = |p: f64| p > 0.0 && rng.random::<f64>() < p;
        if hit(self.drop_rate) {
            FaultOutcome::DropConnection
        } else if hit(self.timeout_rate) {
            FaultOutcome::NeverAnswer
        } else if hit(self.error_rate) {
            let status = if rng.random_ratio(1, 4) { 502 } else { 500 };
            FaultOutcome::ServerError(status)
        } else {
            FaultOutcome::Proceed
        }
    }
}

/// The ordered request log; entries are appended on arrival and completed with their status.
#[derive(Debug, Default)]
struct RequestLog {
    entries: VecDeque<RecordedRequest>,
    /// Sequence number of `entries[0]`.
    first_seq: u64,
}

/// State every simulated platform shares: request log, counters and faults.
#[derive(Debug)]
pub struct SimCore {
    started: Instant,
    log: Mutex<RequestLog>,
    counters: CounterSet,
    faults: RwLock<Faults>,
}

impl Default for SimCore {
    fn default() -> Self {
        Self::new()
    }
}

impl SimCore {
    pub fn new() -> Self {
        SimCore {
            started: Instant::now(),
            log: Mutex::default(),
            counters: CounterSet::default(),
            faults: RwLock::default(),
        }
    }

    /// When the simulator started; `RecordedRequest::at` is relative to the same clock.
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn counters(&self) -> &CounterSet {
        &self.counters
    }

    pub fn faults(&self) -> Faults {
        self.faults
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.faults.write().unwrap_or_else(PoisonError::into_inner) = faults;
    }

    fn log(&self) -> MutexGuard<'_, RequestLog> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records an arriving request (status 0) and counts it; returns its sequence number.
    pub fn begin_request(&self, method: &str, path: String, api_method: Option<String>) -> u64 {
        bump(&self.counters.requests, 1);
        let mut log = self.log();
        if log.entries.len() >= REQUEST_LOG_CAPACITY {
            log.entries.pop_front();
            log.first_seq += 1;
        }
        log.entries.push_back(RecordedRequest {
            method: method.to_owned(),
            path,
            api_method,
            status: 0,
            at: Instant::now(),
        });
        log.first_seq + log.entries.len() as u64 - 1
    }

    /// Completes a request recorded by [`begin_request`](Self::begin_request).
    pub fn finish_request(&self, seq: u64, status: u16) {
        self.counters.count_status(status);
        let mut log = self.log();
        if let Some(offset) = seq.checked_sub(log.first_seq)
            && let Some(entry) = log.entries.get_mut(offset as usize)
        {
            entry.status = status;
        }
    }

    /// Every recorded request, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.log().entries.iter().cloned().collect()
    }
}

/// Current time as unix seconds, as platforms put it in `date` fields.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certain_faults_always_fire_and_no_faults_never_do() {
        let drop = Faults {
            drop_rate: 1.0,
            ..Faults::default()
        };
        assert_eq!(drop.roll(), FaultOutcome::DropConnection);
        let error = Faults {
            error_rate: 1.0,
            ..Faults::default()
        };
        assert!(matches!(error.roll(), FaultOutcome::ServerError(500 | 502)));
        assert_eq!(Faults::default().roll(), FaultOutcome::Proceed);
    }

    #[test]
    fn request_log_completes_entries_in_arrival_order() {
        let core = SimCore::new();
        let a = core.begin_request("GET", "/a".into(), None);
        let b = core.begin_request("POST", "/b".into(), Some("m".into()));
        core.finish_request(b, 429);
        core.finish_request(a, 200);
        let log = core.requests();
        assert_eq!((log[0].path.as_str(), log[0].status), ("/a", 200));
        assert_eq!((log[1].path.as_str(), log[1].status), ("/b", 429));
        let counters = core.counters().snapshot();
        assert_eq!((counters.requests, counters.responses_429), (2, 1));
    }
}
