//! Simulated SMS providers (PLATFORMS.md §4): Twilio, Africa's Talking and BulkSMS, served
//! together on one loopback port (their paths do not collide), so `base_url()` is the
//! `api_base` of all three.
//!
//! - Twilio: `POST /2010-04-01/Accounts/{sid}/Messages.json`, `GET .../Messages/{sid}.json`,
//!   `GET .../Balance.json`; signed (`X-Twilio-Signature`, see [`twilio_signature`]) status
//!   callbacks and inbound SMS.
//! - Africa's Talking: `POST /version1/messaging`, `GET /version1/user`; delivery reports and
//!   incoming messages as form POSTs to the account's callbacks.
//! - BulkSMS: `POST /v1/messages`, `GET /v1/profile`; JSON webhooks of Message arrays.
//!
//! Every account has a balance (USD, KES or credits) that accepted messages draw from (price
//! per segment × segments); below the price, sends are refused the provider's way until
//! [`SmsSim::set_balance`] tops it up. Each sender has a queue drained at the configured rate
//! ([`SmsConfig`]); a message becomes `sent` when it leaves it and delivered (or fails, see
//! [`SmsSim::fail_number`]) `delivery_delay` later, each stage reported by webhook. Users'
//! messages are posted with [`SmsSim::twilio_inbound`] and its twins. [`SmsSim::settle`] waits
//! for all of this; [`SmsSim::deliveries`] lists every webhook attempt. The control API is
//! under `/_sim/sms/` (see `control`). Account-taking methods panic on an unknown account (a
//! test's mistake); their `try_` twins return an [`SmsSimError`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use switchboard_sim::sms::{Provider, SmsConfig, SmsSim};
//! let sim = SmsSim::start(SmsConfig::default()).await?;
//! sim.add_twilio_account("AC123", "auth-token", 10.0);
//! sim.add_twilio_number("AC123", "+15550001111");
//! // The app POSTs {sim.base_url()}/2010-04-01/Accounts/AC123/Messages.json, then:
//! assert!(sim.settle(Duration::from_secs(5)).await);
//! let cost: f64 = sim.sent(Provider::Twilio, "AC123").iter().map(|s| s.cost).sum();
//! assert!((sim.balance(Provider::Twilio, "AC123") - (10.0 - cost)).abs() < 1e-9);
//! # Ok(()) }
//! ```

mod africastalking;
mod bulksms;
mod config;
mod control;
mod delivery;
pub mod segments;
mod state;
mod twilio;
mod twilio_hooks;
mod wire;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use config::{Provider, SmsConfig, SmsSimError};
pub use twilio_hooks::twilio_signature;

use crate::framework::{Counters, Faults, RecordedRequest, SimCore, server};
use state::{AtAccount, BulkSmsAccount, TwilioAccount, World};

/// A message a provider accepted, in acceptance order.
#[derive(Debug, Clone, Serialize)]
pub struct SmsSent {
    pub provider: Provider,
    /// Account SID (Twilio) or username.
    pub account: String,
    /// `SM...` (Twilio), `ATXid_...` (Africa's Talking), numeric (BulkSMS).
    pub id: String,
    /// The sending number or sender id (Twilio: the number picked for a messaging service;
    /// empty when a BulkSMS request named none).
    pub from: String,
    pub to: String,
    pub body: String,
    pub segments: u32,
    /// `"GSM-7"` or `"UCS-2"`.
    pub encoding: String,
    /// What the account was charged (USD, KES or credits).
    pub cost: f64,
    #[serde(skip)]
    pub at: Instant,
}

/// What a webhook carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookKind {
    /// A delivery report (status callback).
    Status,
    /// A user's message.
    Inbound,
}

/// One webhook POST attempt (each retry and redelivery is its own).
#[derive(Debug, Clone, Serialize)]
pub struct SmsWebhook {
    pub provider: Provider,
    pub kind: WebhookKind,
    pub url: String,
    /// HTTP status answered; 0 when no answer came.
    pub status: u16,
    /// The exact body: a form (Twilio, Africa's Talking) or a JSON array (BulkSMS).
    pub body: String,
    /// The `X-Twilio-Signature` header (Twilio only).
    pub signature: Option<String>,
    /// 1 for the first POST of this body, 2 for its first retry...
    pub attempt: u32,
    /// A second POST of a report already delivered (`redeliver_reports`).
    pub redelivery: bool,
    #[serde(skip)]
    pub at: Instant,
}

impl SmsWebhook {
    /// The form fields of the body, in order (empty for JSON bodies).
    pub fn params(&self) -> Vec<(String, String)> {
        if self.body.starts_with('[') {
            return Vec::new();
        }
        wire::form_pairs(self.body.as_bytes())
    }

    /// One form field.
    pub fn param(&self, name: &str) -> Option<String> {
        wire::field(&self.params(), name).map(str::to_owned)
    }

    /// The body as JSON (Null if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A running SMS simulator; clones share it. Stops with [`shutdown`](Self::shutdown) or when
/// its tokio runtime ends.
#[derive(Clone)]
pub struct SmsSim {
    inner: Arc<Inner>,
}

struct Inner {
    config: SmsConfig,
    core: Arc<SimCore>,
    world: Mutex<World>,
    addr: SocketAddr,
    shutdown: CancellationToken,
    client: reqwest::Client,
    /// Trips and webhook tasks not finished.
    in_progress: AtomicUsize,
}

impl std::fmt::Debug for SmsSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsSim")
            .field("base_url", &self.base_url())
            .finish()
    }
}

/// Counts one unit of background work while alive.
pub(crate) struct Work(SmsSim);

impl Drop for Work {
    fn drop(&mut self) {
        self.0.inner.in_progress.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SmsSim {
    /// Starts the simulator on 127.0.0.1 with an ephemeral port.
    pub async fn start(config: SmsConfig) -> anyhow::Result<SmsSim> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Starts the simulator on `addr`.
    pub async fn start_on(addr: SocketAddr, config: SmsConfig) -> anyhow::Result<SmsSim> {
        let (listener, addr) = server::bind(addr).await?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let sim = SmsSim {
            inner: Arc::new(Inner {
                config,
                core: Arc::new(SimCore::new()),
                world: Mutex::default(),
                addr,
                shutdown: CancellationToken::new(),
                client,
                in_progress: AtomicUsize::new(0),
            }),
        };
        let router = Router::new()
            .merge(crate::control::core_routes(sim.inner.core.clone()))
            .merge(control::routes(sim.clone()))
            .merge(twilio::router(sim.clone()))
            .merge(africastalking::router(sim.clone()))
            .merge(bulksms::router(sim.clone()));
        server::serve_listener(listener, router, sim.inner.shutdown.clone());
        Ok(sim)
    }

    /// `http://127.0.0.1:PORT`: the `api_base` of all three providers.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Stops serving, queue draining and webhook deliveries.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        self.inner
            .world
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn core(&self) -> &SimCore {
        &self.inner.core
    }

    pub(crate) fn core_arc(&self) -> Arc<SimCore> {
        self.inner.core.clone()
    }

    pub(crate) fn config(&self) -> &SmsConfig {
        &self.inner.config
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.inner.client
    }

    pub(crate) fn track(&self) -> Work {
        self.inner.in_progress.fetch_add(1, Ordering::SeqCst);
        Work(self.clone())
    }

    /// Adds a Twilio account (or resets the token and balance of the one with this SID).
    pub fn add_twilio_account(&self, account_sid: &str, auth_token: &str, balance_usd: f64) {
        let mut world = self.world();
        let account = world
            .twilio
            .entry(account_sid.to_owned())
            .or_insert_with(|| TwilioAccount {
                auth_token: String::new(),
                balance: 0.0,
                numbers: Default::default(),
                services: Default::default(),
            });
        account.auth_token = auth_token.to_owned();
        account.balance = balance_usd;
    }

    /// Gives the account a number (E.164) it may send from.
    pub fn add_twilio_number(&self, account_sid: &str, number: &str) {
        self.try_add_twilio_number(account_sid, number)
            .unwrap_or_else(|e| panic!("add_twilio_number: {e}"));
    }

    pub fn try_add_twilio_number(
        &self,
        account_sid: &str,
        number: &str,
    ) -> Result<(), SmsSimError> {
        let mut world = self.world();
        world
            .twilio_account(account_sid)?
            .numbers
            .insert(number.to_owned());
        Ok(())
    }

    /// Adds a messaging service (`MG...`) whose sender pool is `numbers` (added to the account).
    pub fn add_twilio_messaging_service(
        &self,
        account_sid: &str,
        service_sid: &str,
        numbers: &[&str],
    ) {
        self.try_add_twilio_messaging_service(account_sid, service_sid, numbers)
            .unwrap_or_else(|e| panic!("add_twilio_messaging_service: {e}"));
    }

    pub fn try_add_twilio_messaging_service(
        &self,
        account_sid: &str,
        service_sid: &str,
        numbers: &[&str],
    ) -> Result<(), SmsSimError> {
        let mut world = self.world();
        let account = world.twilio_account(account_sid)?;
        let pool: Vec<String> = numbers.iter().map(|n| (*n).to_owned()).collect();
        account.numbers.extend(pool.iter().cloned());
        account.services.insert(service_sid.to_owned(), pool);
        Ok(())
    }

    /// Where Twilio POSTs the messages users send to `number` (the number's "A message comes
    /// in" webhook).
    pub fn set_twilio_sms_url(&self, number: &str, url: &str) {
        self.world()
            .twilio_sms_urls
            .insert(number.to_owned(), url.to_owned());
    }

    /// Adds an Africa's Talking account (or resets the key and balance of this username).
    pub fn add_at_account(&self, username: &str, api_key: &str, balance_kes: f64) {
        let mut world = self.world();
        let account = world
            .at
            .entry(username.to_owned())
            .or_insert_with(|| AtAccount {
                api_key: String::new(),
                balance: 0.0,
                delivery_url: None,
                incoming_url: None,
            });
        account.api_key = api_key.to_owned();
        account.balance = balance_kes;
    }

    /// The account's delivery-report and incoming-message callback URLs.
    pub fn set_at_callbacks(&self, username: &str, delivery_url: &str, incoming_url: &str) {
        self.try_set_at_callbacks(username, delivery_url, incoming_url)
            .unwrap_or_else(|e| panic!("set_at_callbacks: {e}"));
    }

    pub fn try_set_at_callbacks(
        &self,
        username: &str,
        delivery_url: &str,
        incoming_url: &str,
    ) -> Result<(), SmsSimError> {
        let mut world = self.world();
        let account = world.at_account(username)?;
        account.delivery_url = Some(delivery_url.to_owned());
        account.incoming_url = Some(incoming_url.to_owned());
        Ok(())
    }

    /// Adds a BulkSMS account (or resets the password and credits of this username).
    pub fn add_bulksms_account(&self, username: &str, password: &str, credits: f64) {
        let mut world = self.world();
        let account = world
            .bulksms
            .entry(username.to_owned())
            .or_insert_with(|| BulkSmsAccount {
                id: wire::numeric_id(6),
                password: String::new(),
                credits: 0.0,
                webhook_url: None,
            });
        account.password = password.to_owned();
        account.credits = credits;
    }

    /// The account's webhook URL (both trigger scopes: SENT and RECEIVED).
    pub fn set_bulksms_webhook(&self, username: &str, url: &str) {
        self.try_set_bulksms_webhook(username, url)
            .unwrap_or_else(|e| panic!("set_bulksms_webhook: {e}"));
    }

    pub fn try_set_bulksms_webhook(&self, username: &str, url: &str) -> Result<(), SmsSimError> {
        self.world().bulksms_account(username)?.webhook_url = Some(url.to_owned());
        Ok(())
    }

    /// Sets the account's balance (USD, KES or credits): tops it up or drains it.
    pub fn set_balance(&self, provider: Provider, account: &str, amount: f64) {
        self.try_set_balance(provider, account, amount)
            .unwrap_or_else(|e| panic!("set_balance: {e}"));
    }

    pub fn try_set_balance(
        &self,
        provider: Provider,
        account: &str,
        amount: f64,
    ) -> Result<(), SmsSimError> {
        *self.world().balance_mut(provider, account)? = amount;
        Ok(())
    }

    /// The account's balance; 0 for an unknown account.
    pub fn balance(&self, provider: Provider, account: &str) -> f64 {
        self.world()
            .balance_mut(provider, account)
            .map_or(0.0, |b| *b)
    }

    /// From now on, deliveries to `number` fail with `code`, by any provider: Twilio reports
    /// `undelivered` with ErrorCode `code` (`failed`, never `sent`, for 30001, 30002 and 30007;
    /// 30003 if `code` is not numeric); Africa's Talking `Failed` with failureReason `code`
    /// (`AbsentSubscriber` if numeric); BulkSMS `FAILED`.
    pub fn fail_number(&self, number: &str, code: &str) {
        self.world()
            .failing
            .insert(number.to_owned(), code.to_owned());
    }

    /// Deliveries to `number` succeed again.
    pub fn heal_number(&self, number: &str) {
        self.world().failing.remove(number);
    }

    /// The messages the provider accepted for the account, in order.
    pub fn sent(&self, provider: Provider, account: &str) -> Vec<SmsSent> {
        self.world()
            .sent
            .iter()
            .filter(|s| s.provider == provider && s.account == account)
            .cloned()
            .collect()
    }

    /// A user of `from` texts the account's number `to`: Twilio POSTs the number's SMS URL,
    /// signed. Returns the HTTP status the app answered (any 2xx is a success; TwiML is not
    /// interpreted); Err if the account or URL is unknown or no answer came.
    pub async fn twilio_inbound(
        &self,
        account_sid: &str,
        from: &str,
        to: &str,
        body: &str,
    ) -> anyhow::Result<u16> {
        let hook = twilio_hooks::inbound_hook(self, account_sid, from, to, body)?;
        delivery::deliver_inbound(self, hook).await
    }

    /// A user texts the account's short code or number `to`: a form POST to the account's
    /// incoming-message callback. As [`twilio_inbound`](Self::twilio_inbound).
    pub async fn at_inbound(
        &self,
        username: &str,
        from: &str,
        to: &str,
        text: &str,
    ) -> anyhow::Result<u16> {
        let hook = africastalking::inbound_hook(self, username, from, to, text)?;
        delivery::deliver_inbound(self, hook).await
    }

    /// A user texts the account: a JSON array with one RECEIVED message POSTed to the
    /// account's webhook. As [`twilio_inbound`](Self::twilio_inbound).
    pub async fn bulksms_inbound(
        &self,
        username: &str,
        from: &str,
        to: &str,
        body: &str,
    ) -> anyhow::Result<u16> {
        let hook = bulksms::inbound_hook(self, username, from, to, body)?;
        delivery::deliver_inbound(self, hook).await
    }

    /// Messages still in a queue or awaiting their report, plus webhook POSTs not finished.
    pub fn in_progress(&self) -> usize {
        self.inner.in_progress.load(Ordering::SeqCst)
    }

    /// Waits until every accepted message reached its final status and every webhook attempt
    /// is done (delivered or given up), or `timeout`; true if all were.
    pub async fn settle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.in_progress() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every webhook POST attempt, in order of completion.
    pub fn deliveries(&self) -> Vec<SmsWebhook> {
        self.world().deliveries()
    }

    /// The framework counters; 20429 answers count in `responses_429`.
    pub fn counters(&self) -> Counters {
        self.core().counters().snapshot()
    }

    /// Every provider API request received, in arrival order (control API calls excluded).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.core().requests()
    }

    /// Replaces the injected faults (provider API calls only).
    pub fn set_faults(&self, faults: Faults) {
        self.core().set_faults(faults);
    }

    pub fn faults(&self) -> Faults {
        self.core().faults()
    }
}
