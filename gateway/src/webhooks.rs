//! Outbound webhooks to the business's app: every subscription follows its tenant's event
//! log and POSTs each event of its types as the feed's JSON, signed
//! `X-Switchboard-Signature: t=<unix>,v1=<hex hmac-sha256(secret, t + "." + body)>`.
//!
//! A round per subscription (at most one at a time, each on its own task, so a slow app
//! delays only its own deliveries) runs when events are published and every half second:
//! first the failed deliveries now due, then the new events in seq order. A delivery fails
//! on anything but a 2xx within `[webhooks] timeout_ms`; it is then retried with exponential
//! backoff (from `retry_initial_ms`, at most `retry_max_ms` apart) until `retry_for_s` after
//! its first attempt (24 h by default), and then kept as a dead letter
//! (`GET /v1/webhooks/{id}/dead-letters`). A round stops at its first failure, so an app that
//! is down gets one new attempt per round, not a burst. Progress (how far the log was
//! delivered, the failures) is written once per round; a crash repeats at most that round's
//! deliveries (at least once). The host is resolved per round and refused when private or
//! local unless `security.webhook_allowed_hosts` names it; the connection is pinned to the
//! address checked and redirects are not followed.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use switchboard_core::model::{Event, WebhookFailure};
use switchboard_core::secret::{Cipher, Secret, read_secret};
use switchboard_core::store::{FailedDelivery, Store, WebhookProgress, WebhookTarget};
use tokio::sync::broadcast::error::TryRecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::WebhooksConfig;

/// New events read per round.
const EVENTS_PER_ROUND: u32 = 100;
/// Failed deliveries retried per round.
const RETRIES_PER_ROUND: u32 = 50;
/// How often every subscription gets a round without new events (retries fall due).
const TICK: Duration = Duration::from_millis(500);
/// Events of other types a filtered subscription lets pass before it writes how far it is.
const SKIP_WRITE_GAP: i64 = 256;
/// A round stops starting deliveries after this long (the lease outlives it).
const ROUND_BUDGET: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct WebhookSettings {
    pub timeout: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub retry_for: Duration,
    pub allowed_hosts: Arc<Vec<String>>,
}

impl WebhookSettings {
    pub fn new(c: &WebhooksConfig, allowed_hosts: Vec<String>) -> Self {
        WebhookSettings {
            timeout: Duration::from_millis(c.timeout_ms),
            retry_initial: Duration::from_millis(c.retry_initial_ms),
            retry_max: Duration::from_millis(c.retry_max_ms),
            retry_for: Duration::from_secs(c.retry_for_s),
            allowed_hosts: Arc::new(allowed_hosts),
        }
    }

    /// The wait after the `attempts`-th failed attempt.
    fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.retry_initial
            .saturating_mul(1u32 << doublings)
            .min(self.retry_max)
    }
}

/// `t=<unix>,v1=<hex hmac-sha256(secret, t + "." + body)>`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Starts the dispatcher; it stops when `closing` is cancelled.
pub fn spawn(
    store: Arc<Store>,
    cipher: Option<Cipher>,
    settings: WebhookSettings,
    closing: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut live = store.subscribe();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rounds: HashMap<String, JoinHandle<()>> = HashMap::new();
        let shared = Arc::new(Shared {
            owner: uuid::Uuid::now_v7().to_string(),
            leases: Default::default(),
            clients: Default::default(),
        });
        let mut targets: Vec<WebhookTarget> = Vec::new();
        loop {
            // The tenants with new events (`None`: every subscription's turn).
            let tenants: Option<HashSet<String>> = tokio::select! {
                r = live.recv() => {
                    // Everything published meanwhile is read from the log by the rounds;
                    // after a lag, every subscription looks.
                    let mut seen = HashSet::new();
                    let mut lagged = r.is_err();
                    if let Ok(e) = r {
                        seen.insert(e.tenant.clone());
                    }
                    loop {
                        match live.try_recv() {
                            Ok(e) => {
                                seen.insert(e.tenant.clone());
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(_) => {
                                lagged = true;
                                break;
                            }
                        }
                    }
                    (!lagged).then_some(seen)
                }
                _ = tick.tick() => None,
                _ = closing.cancelled() => break,
            };
            rounds.retain(|_, r| !r.is_finished());
            // The subscriptions are read on the tick (a new one starts within it); a wake-up
            // for new events uses the last read, so that ingest does not pay a read per
            // commit, nor anything at all while there are no subscriptions.
            if tenants.is_none() {
                match store.webhook_targets().await {
                    Ok(t) => {
                        targets = t;
                        shared.forget_others(&targets);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "webhooks: cannot read the subscriptions");
                        continue;
                    }
                }
            }
            for target in targets.iter().cloned() {
                if rounds.contains_key(&target.id)
                    || tenants
                        .as_ref()
                        .is_some_and(|t| !t.contains(&target.tenant))
                {
                    continue;
                }
                let id = target.id.clone();
                let round = Round {
                    store: store.clone(),
                    cipher: cipher.clone(),
                    settings: settings.clone(),
                    target,
                    shared: shared.clone(),
                };
                rounds.insert(id, tokio::spawn(round.run()));
            }
        }
        for (_, r) in rounds {
            r.abort();
        }
    })
}

/// What the rounds of one dispatcher keep between them, by subscription id.
struct Shared {
    /// This instance, as a lease holder.
    owner: String,
    /// Until when this instance holds a subscription's lease (several instances may share
    /// the store; one delivers at a time, and a busy subscription does not write one per
    /// round).
    leases: std::sync::Mutex<HashMap<String, std::time::Instant>>,
    /// The HTTP client of a subscription, pinned to the address its host resolved to: kept
    /// while the host resolves there, so that deliveries reuse their connections.
    clients: std::sync::Mutex<HashMap<String, (String, SocketAddr, reqwest::Client)>>,
}

impl Shared {
    /// Drops what is kept for subscriptions no longer in `targets`.
    fn forget_others(&self, targets: &[WebhookTarget]) {
        let ids: HashSet<&str> = targets.iter().map(|t| t.id.as_str()).collect();
        lock(&self.leases).retain(|id, _| ids.contains(id.as_str()));
        lock(&self.clients).retain(|id, _| ids.contains(id.as_str()));
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Round {
    store: Arc<Store>,
    cipher: Option<Cipher>,
    settings: WebhookSettings,
    target: WebhookTarget,
    shared: Arc<Shared>,
}

/// Why a delivery did not go through.
struct Failure {
    status: Option<u16>,
    error: String,
}

impl Round {
    async fn run(mut self) {
        // The list the round was started from may be half a second old: how far the
        // subscription was delivered (and whether it still exists) is read now.
        match self.store.webhook_target(&self.target.id).await {
            Ok(Some(fresh)) => self.target = fresh,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(subscription = %self.target.id, error = %e, "webhooks: cannot read the subscription");
                return;
            }
        }
        let t = &self.target;
        let due = match self
            .store
            .webhook_retries(&t.id, Some(Utc::now()), None, RETRIES_PER_ROUND)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(subscription = %t.id, error = %e, "webhooks: cannot read the retries");
                return;
            }
        };
        // Read before the events: every matching event up to it is in the page when the
        // page is not full.
        let last_seq = match self.store.last_seq(&t.tenant).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(subscription = %t.id, error = %e, "webhooks: cannot read the log");
                return;
            }
        };
        if due.is_empty() && last_seq <= t.delivered_seq {
            return;
        }
        let types = (!t.types.is_empty()).then_some(t.types.as_slice());
        let events = match self
            .store
            .list_events(&t.tenant, t.delivered_seq, types, None, EVENTS_PER_ROUND)
            .await
        {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(subscription = %t.id, error = %e, "webhooks: cannot read the log");
                return;
            }
        };
        let mut progress = WebhookProgress {
            subscription_id: t.id.clone(),
            ..WebhookProgress::default()
        };
        if events.is_empty() && due.is_empty() {
            // Only events of other types: the subscription is up to date. Written once the
            // gap is worth a write (the page reads past a smaller one cheaply).
            if last_seq - t.delivered_seq >= SKIP_WRITE_GAP {
                progress.delivered_seq = Some(last_seq);
                self.write(progress).await;
            }
            return;
        }
        if !self.lease().await {
            return;
        }
        let started = std::time::Instant::now();
        let sender = match self.sender().await {
            Ok(s) => Some(s),
            Err(error) => {
                tracing::warn!(subscription = %t.id, %error, "webhooks: cannot deliver");
                None
            }
        };
        let mut healthy = true;
        for retry in due {
            if started.elapsed() >= ROUND_BUDGET {
                break;
            }
            let event = match self
                .store
                .list_events(&t.tenant, retry.seq - 1, None, None, 1)
                .await
            {
                Ok(mut e) if e.first().is_some_and(|e| e.seq == retry.seq) => e.remove(0),
                Ok(_) => {
                    // The event is gone: nothing left to deliver.
                    progress.recovered.push(retry.seq);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(subscription = %t.id, error = %e, "webhooks: cannot read an event");
                    break;
                }
            };
            match attempt(&sender, &event).await {
                Ok(()) => progress.recovered.push(retry.seq),
                Err(f) => {
                    progress.failed.push(self.failed_again(&retry, f));
                    healthy = false;
                    break;
                }
            }
        }
        if !healthy {
            // The app is failing: the due retries not tried this round that are past the
            // retry period are given up on now, not whenever their turn would come.
            let tried: HashSet<i64> = progress
                .recovered
                .iter()
                .copied()
                .chain(progress.failed.iter().map(|f| f.seq))
                .collect();
            let now = Utc::now();
            for retry in self.overdue(&t.id, now).await {
                if !tried.contains(&retry.seq) {
                    progress.failed.push(self.given_up(&retry, now));
                }
            }
        }
        let mut delivered = t.delivered_seq;
        if healthy {
            for event in &events {
                if started.elapsed() >= ROUND_BUDGET {
                    break;
                }
                // Older than the retry period (the app was down that long): a dead letter
                // without an attempt.
                if Utc::now() - event.at >= to_chrono(self.settings.retry_for) {
                    progress.failed.push(FailedDelivery {
                        seq: event.seq,
                        dead: true,
                        attempts: 0,
                        first_attempt_at: Utc::now(),
                        next_attempt_at: Utc::now(),
                        status: None,
                        error: "not delivered within the retry period".into(),
                    });
                    delivered = event.seq;
                    continue;
                }
                delivered = event.seq;
                if let Err(f) = attempt(&sender, event).await {
                    progress.failed.push(self.first_failure(event.seq, f));
                    break;
                }
            }
            // The whole page went (or was given up on): the events of other types after it,
            // up to `last_seq`, are passed too.
            if events.len() < EVENTS_PER_ROUND as usize
                && events.last().is_none_or(|e| e.seq <= delivered)
                && progress.failed.iter().all(|f| f.dead)
            {
                delivered = delivered.max(last_seq);
            }
        }
        if delivered > t.delivered_seq {
            progress.delivered_seq = Some(delivered);
        }
        self.write(progress).await;
    }

    /// Whether this instance may deliver for the subscription now: its lease (taken for
    /// twice a round's longest run) is still good for a round, or taken anew.
    async fn lease(&self) -> bool {
        let needed = ROUND_BUDGET + self.settings.timeout;
        let now = std::time::Instant::now();
        let id = &self.target.id;
        if lock(&self.shared.leases)
            .get(id)
            .is_some_and(|until| *until > now + needed)
        {
            return true;
        }
        let span = needed * 2;
        match self
            .store
            .lease_webhook(id, &self.shared.owner, Utc::now() + to_chrono(span))
            .await
        {
            Ok(true) => {
                lock(&self.shared.leases).insert(id.clone(), now + span);
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(subscription = %id, error = %e, "webhooks: cannot take the lease");
                false
            }
        }
    }

    async fn write(&self, progress: WebhookProgress) {
        if progress.delivered_seq.is_none()
            && progress.failed.is_empty()
            && progress.recovered.is_empty()
        {
            return;
        }
        if let Err(e) = self.store.record_webhook_progress(progress).await {
            tracing::warn!(subscription = %self.target.id, error = %e, "webhooks: cannot record the deliveries; they are repeated");
        }
    }

    fn first_failure(&self, seq: i64, f: Failure) -> FailedDelivery {
        let now = Utc::now();
        self.note(&f, seq, 1);
        FailedDelivery {
            seq,
            dead: self.settings.retry_for.is_zero(),
            attempts: 1,
            first_attempt_at: now,
            next_attempt_at: now + to_chrono(self.settings.backoff(1)),
            status: f.status,
            error: f.error,
        }
    }

    fn failed_again(&self, retry: &WebhookFailure, f: Failure) -> FailedDelivery {
        let now = Utc::now();
        let attempts = retry.attempts.saturating_add(1);
        self.note(&f, retry.seq, attempts);
        let dead: bool = now - retry.first_attempt_at >= to_chrono(self.settings.retry_for);
        if dead {
            tracing::warn!(subscription = %self.target.id, seq = retry.seq, attempts, "webhook delivery given up: dead letter");
            metrics::counter!(switchboard_core::metrics::WEBHOOK_DEAD_LETTERS).increment(1);
        }
        FailedDelivery {
            seq: retry.seq,
            dead,
            attempts,
            first_attempt_at: retry.first_attempt_at,
            next_attempt_at: now + to_chrono(self.settings.backoff(attempts)),
            status: f.status,
            error: f.error,
        }
    }

    /// Retries of the subscription past the retry period, due or not.
    async fn overdue(&self, subscription: &str, now: chrono::DateTime<Utc>) -> Vec<WebhookFailure> {
        let cutoff = now - to_chrono(self.settings.retry_for);
        self.store
            .webhook_retries(subscription, None, Some(cutoff), RETRIES_PER_ROUND)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(subscription, error = %e, "webhooks: cannot read the retries");
                Vec::new()
            })
    }

    fn given_up(&self, retry: &WebhookFailure, now: chrono::DateTime<Utc>) -> FailedDelivery {
        tracing::warn!(subscription = %self.target.id, seq = retry.seq, attempts = retry.attempts, "webhook delivery given up: dead letter");
        metrics::counter!(switchboard_core::metrics::WEBHOOK_DEAD_LETTERS).increment(1);
        FailedDelivery {
            seq: retry.seq,
            dead: true,
            attempts: retry.attempts,
            first_attempt_at: retry.first_attempt_at,
            next_attempt_at: now,
            status: retry.last_status,
            error: retry.last_error.clone(),
        }
    }

    fn note(&self, f: &Failure, seq: i64, attempts: u32) {
        metrics::counter!(switchboard_core::metrics::WEBHOOK_FAILURES).increment(1);
        tracing::info!(subscription = %self.target.id, seq, attempts, status = ?f.status, error = %f.error, "webhook delivery failed");
    }

    /// The client for this round: the URL's host resolved and checked once, the connection
    /// pinned to that address.
    async fn sender(&self) -> Result<Sender, String> {
        let url = url::Url::parse(&self.target.url).map_err(|e| e.to_string())?;
        let (host, addr): (String, SocketAddr) =
            switchboard_connectors::resolve_public(&url, &self.settings.allowed_hosts).await?;
        let secret = read_secret(self.cipher.as_ref(), &self.target.secret)?;
        let kept = lock(&self.shared.clients)
            .get(&self.target.id)
            .filter(|(h, a, _)| *h == host && *a == addr)
            .map(|(_, _, c)| c.clone());
        let http = match kept {
            Some(c) => c,
            None => {
                let c = reqwest::Client::builder()
                    .resolve(&host, addr)
                    .redirect(reqwest::redirect::Policy::none())
                    // A proxy would resolve the host itself, past the address checked.
                    .no_proxy()
                    .connect_timeout(self.settings.timeout.min(Duration::from_secs(5)))
                    .timeout(self.settings.timeout)
                    .user_agent("Switchboard-Webhooks/1")
                    .build()
                    .map_err(|e| e.to_string())?;
                lock(&self.shared.clients).insert(self.target.id.clone(), (host, addr, c.clone()));
                c
            }
        };
        Ok(Sender {
            http,
            url,
            secret,
            subscription: self.target.id.clone(),
        })
    }
}

/// One delivery, or why it did not go (no sender: the URL could not be resolved or checked).
async fn attempt(sender: &Option<Sender>, event: &Event) -> Result<(), Failure> {
    match sender {
        Some(s) => s.deliver(event).await,
        None => Err(Failure {
            status: None,
            error: "the URL cannot be reached".into(),
        }),
    }
}

struct Sender {
    http: reqwest::Client,
    url: url::Url,
    secret: Secret,
    subscription: String,
}

impl Sender {
    async fn deliver(&self, event: &Event) -> Result<(), Failure> {
        let body = event.json_bytes();
        let signature = signature(
            self.secret.expose().as_bytes(),
            Utc::now().timestamp(),
            &body,
        );
        let answer = self
            .http
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("x-switchboard-signature", signature)
            .header("x-switchboard-event", event.kind.as_str())
            .header(
                "x-switchboard-delivery",
                format!("{}:{}", self.subscription, event.seq),
            )
            .body(body)
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => {
                metrics::counter!(switchboard_core::metrics::WEBHOOK_DELIVERIES).increment(1);
                Ok(())
            }
            Ok(r) => Err(Failure {
                status: Some(r.status().as_u16()),
                error: format!("the app answered HTTP {}", r.status().as_u16()),
            }),
            Err(e) => Err(Failure {
                status: None,
                error: if e.is_timeout() {
                    "no answer within the timeout".into()
                } else if e.is_connect() {
                    "cannot connect".into()
                } else {
                    "the request failed".into()
                },
            }),
        }
    }
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_timestamp_a_dot_and_the_body() {
        // Computed independently:
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            signature(b"whsec_test", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_maximum() {
        let s = WebhookSettings {
            timeout: Duration::from_secs(1),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            retry_for: Duration::from_secs(3600),
            allowed_hosts: Arc::default(),
        };
        let waits: Vec<u64> = (1..=8).map(|a| s.backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    }
}
