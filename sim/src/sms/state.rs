//! The simulator's world: the three providers' accounts, Twilio numbers, the numbers that
//! fail, the senders' queues, what was sent and every webhook attempt.
//!
//! A sender's queue is virtual: each accepted message books the instant it will leave
//! ([`World::enqueue`]), `cost / rate` seconds after the previous one; the messages whose
//! departure is still ahead are the queue.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Provider, SmsSent, SmsSimError, SmsWebhook};

/// Webhook attempts kept for [`World::deliveries`]; the oldest are forgotten first.
const DELIVERY_LOG_CAPACITY: usize = 1_000_000;

/// Amounts closer than this count as equal (balances are f64).
pub(crate) const EPSILON: f64 = 1e-9;

#[derive(Debug)]
pub(crate) struct TwilioAccount {
    pub auth_token: String,
    pub balance: f64,
    /// Numbers the account may send from (its own and its messaging services').
    pub numbers: BTreeSet<String>,
    /// Messaging service SID → its numbers.
    pub services: BTreeMap<String, Vec<String>>,
}

#[derive(Debug)]
pub(crate) struct AtAccount {
    pub api_key: String,
    pub balance: f64,
    pub delivery_url: Option<String>,
    pub incoming_url: Option<String>,
}

#[derive(Debug)]
pub(crate) struct BulkSmsAccount {
    pub id: String,
    pub password: String,
    pub credits: f64,
    pub webhook_url: Option<String>,
}

#[derive(Debug)]
struct SenderQueue {
    /// When the next message may leave.
    next_free: Instant,
    /// Departures booked, in order (those already past are pruned lazily).
    departures: VecDeque<Instant>,
}

impl SenderQueue {
    fn prune(&mut self, now: Instant) {
        while self.departures.front().is_some_and(|d| *d <= now) {
            self.departures.pop_front();
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct World {
    pub twilio: HashMap<String, TwilioAccount>,
    /// Twilio number → the app's SMS URL for inbound messages.
    pub twilio_sms_urls: HashMap<String, String>,
    /// Twilio message SID → its resource as `GET .../Messages/{sid}.json` answers it.
    pub twilio_messages: HashMap<String, Value>,
    /// Twilio account SID → requests in flight.
    pub twilio_in_flight: HashMap<String, usize>,
    pub at: HashMap<String, AtAccount>,
    pub bulksms: HashMap<String, BulkSmsAccount>,
    /// Number → the provider error code or reason its deliveries fail with.
    pub failing: HashMap<String, String>,
    pub sent: Vec<SmsSent>,
    deliveries: VecDeque<SmsWebhook>,
    queues: HashMap<(Provider, String), SenderQueue>,
}

impl World {
    pub fn twilio_account(&mut self, sid: &str) -> Result<&mut TwilioAccount, SmsSimError> {
        self.twilio
            .get_mut(sid)
            .ok_or_else(|| SmsSimError::UnknownAccount(Provider::Twilio, sid.to_owned()))
    }

    pub fn at_account(&mut self, username: &str) -> Result<&mut AtAccount, SmsSimError> {
        self.at
            .get_mut(username)
            .ok_or_else(|| SmsSimError::UnknownAccount(Provider::AfricasTalking, username.into()))
    }

    pub fn bulksms_account(&mut self, username: &str) -> Result<&mut BulkSmsAccount, SmsSimError> {
        self.bulksms
            .get_mut(username)
            .ok_or_else(|| SmsSimError::UnknownAccount(Provider::BulkSms, username.to_owned()))
    }

    /// The account's balance (USD, KES or credits).
    pub fn balance_mut(
        &mut self,
        provider: Provider,
        account: &str,
    ) -> Result<&mut f64, SmsSimError> {
        Ok(match provider {
            Provider::Twilio => &mut self.twilio_account(account)?.balance,
            Provider::AfricasTalking => &mut self.at_account(account)?.balance,
            Provider::BulkSms => &mut self.bulksms_account(account)?.credits,
        })
    }

    /// Books the departure of a message costing `cost` (segments or messages) from a sender
    /// draining `per_second`; None when `limit` messages are already waiting.
    pub fn enqueue(
        &mut self,
        key: (Provider, String),
        cost: f64,
        per_second: f64,
        limit: usize,
        now: Instant,
    ) -> Option<Instant> {
        let queue = self.queues.entry(key).or_insert_with(|| SenderQueue {
            next_free: now,
            departures: VecDeque::new(),
        });
        queue.prune(now);
        if queue.departures.len() >= limit {
            return None;
        }
        let departure = queue.next_free.max(now);
        let spacing = if per_second > 0.0 {
            Duration::try_from_secs_f64(cost / per_second).unwrap_or(Duration::ZERO)
        } else {
            Duration::from_secs(3600)
        };
        queue.next_free = departure + spacing;
        queue.departures.push_back(departure);
        Some(departure)
    }

    pub fn record_delivery(&mut self, delivery: SmsWebhook) {
        if self.deliveries.len() >= DELIVERY_LOG_CAPACITY {
            self.deliveries.pop_front();
        }
        self.deliveries.push_back(delivery);
    }

    pub fn deliveries(&self) -> Vec<SmsWebhook> {
        self.deliveries.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sms_sender_queue_spaces_departures_by_cost_over_rate_and_caps_its_length() {
        let mut world = World::default();
        let key = (Provider::Twilio, "+15550001111".to_owned());
        let now = Instant::now();
        let first = world.enqueue(key.clone(), 2.0, 4.0, 2, now).unwrap();
        let second = world.enqueue(key.clone(), 1.0, 4.0, 2, now).unwrap();
        let third = world.enqueue(key.clone(), 1.0, 4.0, 2, now).unwrap();
        // The first left at once, so only the next two are waiting: the fourth is refused.
        assert_eq!(first, now);
        assert_eq!(second - first, Duration::from_millis(500));
        assert_eq!(third - second, Duration::from_millis(250));
        assert_eq!(world.enqueue(key.clone(), 1.0, 4.0, 2, now), None);
        // 600 ms on, only the third (due at 750 ms) still waits.
        let later = now + Duration::from_millis(600);
        assert_eq!(world.enqueue(key.clone(), 1.0, 4.0, 1, later), None);
        assert!(world.enqueue(key, 1.0, 4.0, 2, later).is_some());
    }
}
