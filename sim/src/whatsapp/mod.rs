//! A simulated WhatsApp Cloud API (Meta Graph, PLATFORMS.md §2), served on loopback.
//!
//! [`WhatsAppSim`] plays both sides a test needs: the Graph API a business calls
//! (`{base_url}/{version}/{phone_number_id}/messages`, `/media`, `GET /{media_id}`...) and the
//! users who write to business phone numbers ([`WhatsAppSim::user_message`]), whose messages,
//! like the statuses of the business's sends, reach the app as signed webhook POSTs on the
//! phone number's callback URL. It enforces the 24 h customer-service window (free-form sends
//! outside it fail with 131047 in a status), the throughput (130429) and pair (131056) limits
//! with token buckets, and injects the faults set with [`WhatsAppSim::set_faults`].
//!
//! Windows age on the simulator's own clock, which [`WhatsAppSim::advance_clock`] moves without
//! sleeping; webhook timestamps follow it. The methods that play users take the phone number id
//! and panic if no phone number has it (a test's mistake); their `try_` twins return a
//! [`WhatsAppSimError`] instead.

mod api;
mod config;
mod control;
mod error;
mod ids;
mod inbound;
mod media;
mod outbound;
mod state;
mod statuses;
mod webhook;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use config::{PhoneNumber, WhatsAppConfig};
pub use error::WhatsAppSimError;
pub use inbound::{WaInbound, WaUserMessage};
pub use webhook::sign as sign_webhook;

use crate::framework::{Counters, Faults, RecordedRequest, SimCore, bump, server};
use ids::Direction;
use state::World;
use webhook::Item;

/// A message the business sent through `/messages` and the Cloud API accepted.
#[derive(Debug, Clone, Serialize)]
pub struct WaSent {
    pub wamid: String,
    /// `to` as the business wrote it.
    pub to: String,
    /// The message `type`: `text`, `image`, `document`, `audio`, `video`, `sticker`,
    /// `template`, `interactive`, `location`, `reaction`, `contacts`.
    pub kind: String,
    /// The request JSON.
    pub body: Value,
    /// `context.message_id`: the wamid replied to.
    pub context: Option<String>,
    #[serde(skip)]
    pub at: Instant,
}

/// One webhook POST the simulator made (each retry and redelivery is its own).
#[derive(Debug, Clone)]
pub struct WebhookDelivery {
    pub url: String,
    /// The exact bytes POSTed (and signed).
    pub body: Vec<u8>,
    /// The `X-Hub-Signature-256` header: `sha256=<hex>`.
    pub signature: String,
    /// HTTP status answered; 0 when the connection failed or timed out.
    pub status: u16,
    /// A second POST of a payload already delivered.
    pub redelivery: bool,
    pub at: Instant,
}

impl WebhookDelivery {
    /// The body as JSON (Null if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A running WhatsApp simulator; clones share it. Stops with [`shutdown`](Self::shutdown) or
/// when its tokio runtime ends.
#[derive(Clone)]
pub struct WhatsAppSim {
    inner: Arc<Inner>,
}

struct Inner {
    config: WhatsAppConfig,
    core: Arc<SimCore>,
    world: Mutex<World>,
    addr: SocketAddr,
    shutdown: CancellationToken,
    /// Where webhook tasks run (phone numbers may be added from outside the runtime).
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for WhatsAppSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhatsAppSim")
            .field("base_url", &self.base_url())
            .finish()
    }
}

impl WhatsAppSim {
    /// Starts the simulator on 127.0.0.1 with an ephemeral port.
    pub async fn start(config: WhatsAppConfig) -> anyhow::Result<WhatsAppSim> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Starts the simulator on `addr`.
    pub async fn start_on(addr: SocketAddr, config: WhatsAppConfig) -> anyhow::Result<WhatsAppSim> {
        let (listener, addr) = crate::framework::server::bind(addr).await?;
        let sim = WhatsAppSim {
            inner: Arc::new(Inner {
                config,
                core: Arc::new(SimCore::new()),
                world: Mutex::default(),
                addr,
                shutdown: CancellationToken::new(),
                runtime: tokio::runtime::Handle::current(),
            }),
        };
        let router = Router::new()
            .merge(crate::control::core_routes(sim.inner.core.clone()))
            .merge(control::routes(sim.clone()))
            .merge(api::router(sim.clone()));
        server::serve_listener(listener, router, sim.inner.shutdown.clone());
        Ok(sim)
    }

    /// The Graph base, `http://127.0.0.1:PORT`; the API is at `{base_url}/{api_version}/...`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The configured Graph version, e.g. `v21.0`.
    pub fn api_version(&self) -> &str {
        &self.inner.config.api_version
    }

    /// Stops serving and stops webhook deliveries.
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

    pub(crate) fn config(&self) -> &WhatsAppConfig {
        &self.inner.config
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Adds a business phone number (or replaces the settings of the one with its id, keeping
    /// its history). Its access token may act on it; its webhooks go to `callback_url`.
    pub fn add_phone_number(&self, phone: PhoneNumber) {
        let id = phone.phone_number_id.clone();
        let is_new = self.world().add_phone(phone, self.config());
        if is_new {
            let _guard = self.inner.runtime.enter();
            webhook::spawn_delivery(self.clone(), id);
        }
    }

    /// Sets the phone number's webhook callback URL; pending webhooks go there.
    pub fn set_callback(&self, phone_number_id: &str, callback_url: &str) {
        self.try_set_callback(phone_number_id, callback_url)
            .unwrap_or_else(|e| panic!("set_callback: {e}"));
    }

    pub fn try_set_callback(
        &self,
        phone_number_id: &str,
        callback_url: &str,
    ) -> Result<(), WhatsAppSimError> {
        let mut world = self.world();
        let phone = world.phone(phone_number_id)?;
        phone.phone.callback_url = Some(callback_url.to_owned());
        phone.wake.notify_one();
        Ok(())
    }

    /// Meta's verification handshake: `GET {callback}?hub.mode=subscribe&hub.verify_token=..
    /// &hub.challenge=<random>`; Ok(true) when the answer is 200 with exactly the challenge.
    pub async fn verify_callback(
        &self,
        phone_number_id: &str,
        verify_token: &str,
    ) -> anyhow::Result<bool> {
        let url = {
            let mut world = self.world();
            let phone = world.phone(phone_number_id)?;
            phone
                .phone
                .callback_url
                .clone()
                .ok_or_else(|| WhatsAppSimError::NoCallback(phone_number_id.to_owned()))?
        };
        webhook::verify(&url, verify_token).await
    }

    /// Every later Graph call with this token answers 401 with code 190.
    pub fn revoke_token(&self, access_token: &str) {
        self.world().revoke(access_token);
    }

    /// A user writes to the phone number: the message is queued for webhook delivery and
    /// opens (or resets) the user's 24 h window. Returns its wamid.
    pub fn user_message(&self, phone_number_id: &str, msg: WaUserMessage) -> String {
        self.try_user_message(phone_number_id, msg)
            .unwrap_or_else(|e| panic!("user_message: {e}"))
    }

    pub fn try_user_message(
        &self,
        phone_number_id: &str,
        msg: WaUserMessage,
    ) -> Result<String, WhatsAppSimError> {
        let mut world = self.world();
        let (now, unix) = (world.sim_now(), world.sim_unix());
        let phone = world.phone(phone_number_id)?;
        let context_from = msg.context.as_ref().map(|id| {
            if phone.is_outgoing(id) {
                phone.phone.digits()
            } else {
                msg.from.clone()
            }
        });
        if let Some(media_id) = msg.kind.media_id() {
            world.media.share(media_id, phone_number_id);
        }
        let wamid = ids::wamid(&msg.from, Direction::Incoming);
        let message = inbound::message_json(&msg, &wamid, unix, &world.media, context_from)?;
        let contact = json!({ "profile": { "name": msg.profile_name }, "wa_id": msg.from });
        let phone = world.phone(phone_number_id)?;
        phone.user_wrote(&msg.from, &wamid, now);
        phone
            .outbox
            .push(Instant::now(), Item::Message { contact, message });
        phone.wake.notify_one();
        bump(&self.core().counters().updates_created, 1);
        Ok(wamid)
    }

    /// Moves the simulator's clock forward (ages the 24 h windows, shifts webhook timestamps)
    /// without sleeping.
    pub fn advance_clock(&self, by: Duration) {
        self.world().clock_offset += by;
    }

    /// Everything the business sent through `/messages` and the API accepted, in order.
    pub fn sent(&self, phone_number_id: &str) -> Vec<WaSent> {
        self.world()
            .phone(phone_number_id)
            .map(|p| p.sent.clone())
            .unwrap_or_default()
    }

    /// The inbound wamids the business marked as read, in order.
    pub fn marked_read(&self, phone_number_id: &str) -> Vec<String> {
        self.world()
            .phone(phone_number_id)
            .map(|p| p.read_marks.clone())
            .unwrap_or_default()
    }

    /// Every webhook POST the simulator made (retries and redeliveries included), in order.
    pub fn deliveries(&self) -> Vec<WebhookDelivery> {
        self.world().deliveries.iter().cloned().collect()
    }

    /// Webhook events not yet delivered with a 2xx (queued, due later, being retried, or
    /// awaiting redelivery), across all phone numbers.
    pub fn pending_webhooks(&self) -> usize {
        self.world().phones().map(|p| p.outbox.pending()).sum()
    }

    /// Waits until every queued webhook event was delivered (2xx), or `timeout`; true if all
    /// were.
    pub async fn settle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.pending_webhooks() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every Graph API request received, in arrival order (control API calls excluded).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.core().requests()
    }

    /// The framework counters; 130429 and 131056 answers count in `responses_429` although
    /// their HTTP status is 400.
    pub fn counters(&self) -> Counters {
        self.core().counters().snapshot()
    }

    /// How many times each Meta error code was answered (131047 counts failed statuses).
    pub fn error_codes(&self) -> BTreeMap<i64, u64> {
        self.world().error_codes.clone()
    }

    /// Replaces the injected faults (Graph API calls only; downloads are spared).
    pub fn set_faults(&self, faults: Faults) {
        self.core().set_faults(faults);
    }

    pub fn faults(&self) -> Faults {
        self.core().faults()
    }

    /// Stores media users can send (and the business can send by id); returns its media id.
    pub fn add_media(&self, bytes: Vec<u8>, mime: &str) -> String {
        self.world().media.add(Bytes::from(bytes), mime, None)
    }
}
