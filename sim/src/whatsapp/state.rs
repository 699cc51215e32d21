//! The simulated Cloud API's world: the business phone numbers with their credentials, each
//! one's customer-service windows, conversations, throughput buckets, sends and webhook
//! outbox; the media store; the simulator's clock; and the logs tests read.
//!
//! Everything here is synchronous and runs under the simulator's one lock.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::config::{PhoneNumber, WhatsAppConfig};
use super::error::{GraphError, WhatsAppSimError};
use super::media::MediaStore;
use super::webhook::Outbox;
use super::{WaSent, WebhookDelivery};
use crate::framework::rate::{Rate, TokenBucket, take_all};
use crate::framework::unix_now;

/// How long a user's message lets the business write freely.
pub(crate) const SERVICE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The delivery log keeps at most this many POSTs (the oldest are forgotten first).
const DELIVERY_LOG_CAPACITY: usize = 200_000;

#[derive(Debug, Default)]
pub(crate) struct World {
    phones: HashMap<String, PhoneState>,
    /// Access token → the phone numbers it may act on.
    tokens: HashMap<String, Vec<String>>,
    revoked: HashSet<String>,
    pub media: MediaStore,
    pub deliveries: VecDeque<WebhookDelivery>,
    pub error_codes: BTreeMap<i64, u64>,
    /// How far [`advance_clock`](super::WhatsAppSim::advance_clock) moved the clock.
    pub clock_offset: Duration,
}

impl World {
    /// Adds a phone number or replaces its settings (keeping its history). Returns true when
    /// it is new.
    pub fn add_phone(&mut self, phone: PhoneNumber, config: &WhatsAppConfig) -> bool {
        let id = phone.phone_number_id.clone();
        let token = phone.access_token.clone();
        let is_new = match self.phones.get_mut(&id) {
            Some(existing) => {
                let old_token = std::mem::replace(&mut existing.phone, phone).access_token;
                if let Some(ids) = self.tokens.get_mut(&old_token) {
                    ids.retain(|p| p != &id);
                }
                existing.wake.notify_one();
                false
            }
            None => {
                self.phones
                    .insert(id.clone(), PhoneState::new(phone, config));
                true
            }
        };
        let ids = self.tokens.entry(token.clone()).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
        self.revoked.remove(&token);
        is_new
    }

    pub fn phone(&mut self, id: &str) -> Result<&mut PhoneState, WhatsAppSimError> {
        self.phones
            .get_mut(id)
            .ok_or_else(|| WhatsAppSimError::UnknownPhoneNumber(id.to_owned()))
    }

    pub fn phones(&self) -> impl Iterator<Item = &PhoneState> {
        self.phones.values()
    }

    /// The phone numbers a Bearer token may act on: 401 code 190 when it is missing, unknown
    /// or revoked.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Vec<String>, GraphError> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(GraphError::invalid_token)?;
        if self.revoked.contains(token) {
            return Err(GraphError::revoked_token());
        }
        self.tokens
            .get(token)
            .filter(|ids| !ids.is_empty())
            .cloned()
            .ok_or_else(GraphError::invalid_token)
    }

    pub fn revoke(&mut self, token: &str) {
        if self.tokens.contains_key(token) {
            self.revoked.insert(token.to_owned());
        }
    }

    /// Now on the simulator's clock (real time plus every `advance_clock`).
    pub fn sim_now(&self) -> Instant {
        Instant::now() + self.clock_offset
    }

    /// Unix seconds on the simulator's clock, as webhooks carry them.
    pub fn sim_unix(&self) -> i64 {
        unix_now() + self.clock_offset.as_secs() as i64
    }

    pub fn record_delivery(&mut self, delivery: WebhookDelivery) {
        if self.deliveries.len() >= DELIVERY_LOG_CAPACITY {
            self.deliveries.pop_front();
        }
        self.deliveries.push_back(delivery);
    }

    pub fn count_error(&mut self, code: i64) {
        *self.error_codes.entry(code).or_default() += 1;
    }
}

/// A conversation: the 24 h billing session Meta opens with the first message delivered.
#[derive(Debug, Clone)]
pub(crate) struct Conversation {
    pub id: String,
    /// `origin.type` and `pricing.category`: `service`, `utility`, `marketing`...
    pub category: &'static str,
    pub expires_unix: i64,
    /// On the simulator's clock.
    expires: Instant,
}

/// One business phone number and everything that happened on it.
#[derive(Debug)]
pub(crate) struct PhoneState {
    pub phone: PhoneNumber,
    pub sent: Vec<WaSent>,
    /// Inbound wamids the business marked as read, in order.
    pub read_marks: Vec<String>,
    /// Wamids of the messages users wrote to this number.
    inbound: HashSet<String>,
    /// Wamids of the messages this number sent.
    outgoing: HashSet<String>,
    /// wa_id → when the user last wrote (simulator's clock).
    last_inbound: HashMap<String, Instant>,
    conversations: HashMap<String, Conversation>,
    throughput: TokenBucket,
    pair_rate: Rate,
    pairs: HashMap<String, TokenBucket>,
    pub outbox: Outbox,
    /// Woken when the outbox or the callback changes.
    pub wake: Arc<Notify>,
}

impl PhoneState {
    fn new(phone: PhoneNumber, config: &WhatsAppConfig) -> Self {
        PhoneState {
            phone,
            sent: Vec::new(),
            read_marks: Vec::new(),
            inbound: HashSet::new(),
            outgoing: HashSet::new(),
            last_inbound: HashMap::new(),
            conversations: HashMap::new(),
            throughput: TokenBucket::new(config.throughput, Instant::now()),
            pair_rate: config.pair_rate,
            pairs: HashMap::new(),
            outbox: Outbox::default(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// A user wrote `wamid` at `now` (simulator's clock): opens or resets their window.
    pub fn user_wrote(&mut self, wa_id: &str, wamid: &str, now: Instant) {
        self.inbound.insert(wamid.to_owned());
        self.last_inbound.insert(wa_id.to_owned(), now);
    }

    pub fn is_inbound(&self, wamid: &str) -> bool {
        self.inbound.contains(wamid)
    }

    pub fn is_outgoing(&self, wamid: &str) -> bool {
        self.outgoing.contains(wamid)
    }

    pub fn record_sent(&mut self, sent: WaSent) {
        self.outgoing.insert(sent.wamid.clone());
        self.sent.push(sent);
    }

    /// Whether the user wrote within the last 24 h (simulator's clock).
    pub fn window_open(&self, wa_id: &str, now: Instant) -> bool {
        self.last_inbound
            .get(wa_id)
            .is_some_and(|at| now.saturating_duration_since(*at) < SERVICE_WINDOW)
    }

    /// Spends one message from the number's throughput and the pair's bucket, or answers
    /// 130429 / 131056 without spending any.
    pub fn take_send_tokens(&mut self, wa_id: &str) -> Result<(), GraphError> {
        let now = Instant::now();
        let rate = self.pair_rate;
        let pair = self
            .pairs
            .entry(wa_id.to_owned())
            .or_insert_with(|| TokenBucket::new(rate, now));
        if !self.throughput.wait_time(now).is_zero() {
            return Err(GraphError::throughput_reached());
        }
        if !pair.wait_time(now).is_zero() {
            return Err(GraphError::pair_rate_limit());
        }
        take_all(&mut [&mut self.throughput, pair], now)
            .map_err(|_| GraphError::throughput_reached())
    }

    /// The open conversation with the user, or a new one of `category` starting at `now`.
    pub fn conversation(
        &mut self,
        wa_id: &str,
        category: &'static str,
        now: Instant,
        now_unix: i64,
    ) -> Conversation {
        let current = self
            .conversations
            .get(wa_id)
            .filter(|c| c.expires > now && c.category == category);
        if let Some(conversation) = current {
            return conversation.clone();
        }
        let conversation = Conversation {
            id: super::ids::conversation_id(),
            category,
            expires_unix: now_unix + SERVICE_WINDOW.as_secs() as i64,
            expires: now + SERVICE_WINDOW,
        };
        self.conversations
            .insert(wa_id.to_owned(), conversation.clone());
        conversation
    }
}
