//! Webhook delivery: Meta POSTs a phone number's events (user messages, statuses) to the
//! app's callback URL, signed with the app secret, in order, one POST at a time.
//!
//! Each phone number has an [`Outbox`] of items, each due at some instant (a `delivered`
//! status is due later than `sent`). One task per phone number waits for the first due item,
//! waits `batch_window` more (unless `batch_max` items are already due: a backlog drains
//! without pauses), and POSTs everything then due (up to `batch_max` items) as one
//! `whatsapp_business_account` payload. A non-2xx answer or a connection error retries the
//! same bytes after `retry_delay`, doubling up to 10 s, until a 2xx; with probability
//! `redelivery_rate` a delivered POST is sent once more a `retry_delay` later, as Meta does.
//!
//! Bodies are serialised the way Meta's are: compact JSON with `/` and every non-ASCII
//! character escaped (`\/`, `\u00e9`), so a receiver that re-serialises before checking
//! `X-Hub-Signature-256` fails, as it would in production.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use rand::Rng;
use serde_json::{Map, Value, json};

use super::WhatsAppSim;
use super::config::{MAX_RETRY_DELAY, PhoneNumber};
use super::{WebhookDelivery, ids};
use crate::framework::bump;

/// How long one delivery may take before it counts as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// One event waiting for its POST.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    /// A user's message, with the `contacts[]` entry of its sender.
    Message {
        contact: Value,
        message: Value,
    },
    Status(Value),
}

/// A delivered POST waiting to be sent again.
#[derive(Debug, Clone)]
struct Repost {
    body: Vec<u8>,
    items: usize,
    due: Instant,
}

/// A phone number's undelivered events.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    items: BTreeMap<(Instant, u64), Item>,
    next_seq: u64,
    reposts: VecDeque<Repost>,
    /// Items in the POST being attempted (0 when none).
    in_flight: usize,
}

impl Outbox {
    pub fn push(&mut self, due: Instant, item: Item) {
        self.next_seq += 1;
        self.items.insert((due, self.next_seq), item);
    }

    /// Events not yet delivered (queued, being POSTed, or awaiting redelivery).
    pub fn pending(&self) -> usize {
        self.items.len() + self.reposts.len() + self.in_flight
    }

    fn take_due(&mut self, now: Instant, max: usize) -> Vec<Item> {
        let mut taken = Vec::new();
        while taken.len() < max.max(1) {
            match self.items.first_key_value() {
                Some((&(due, _), _)) if due <= now => {
                    if let Some((_, item)) = self.items.pop_first() {
                        taken.push(item);
                    }
                }
                _ => break,
            }
        }
        taken
    }
}

/// What the delivery task does next.
enum Step {
    /// Nothing due; wait for a change or until the next item is due.
    Wait(Option<Instant>),
    /// An item is due: collect a batch (at once when `full`, else after the batch window).
    Batch {
        full: bool,
    },
    Repost(Repost),
}

fn next_step(outbox: &mut Outbox, has_callback: bool, now: Instant, batch_max: usize) -> Step {
    if !has_callback {
        return Step::Wait(None);
    }
    if outbox.reposts.front().is_some_and(|r| r.due <= now)
        && let Some(repost) = outbox.reposts.pop_front()
    {
        outbox.in_flight = repost.items;
        return Step::Repost(repost);
    }
    let next_item = outbox.items.first_key_value().map(|(&(due, _), _)| due);
    if next_item.is_some_and(|due| due <= now) {
        let due = outbox.items.keys().take_while(|(due, _)| *due <= now);
        return Step::Batch {
            full: due.take(batch_max).count() >= batch_max,
        };
    }
    let next_repost = outbox.reposts.front().map(|r| r.due);
    Step::Wait(next_item.into_iter().chain(next_repost).min())
}

pub(super) fn spawn_delivery(sim: WhatsAppSim, phone_number_id: String) {
    tokio::spawn(async move { deliver(sim, phone_number_id).await });
}

async fn deliver(sim: WhatsAppSim, id: String) {
    let client = match reqwest::Client::builder().timeout(DELIVERY_TIMEOUT).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "whatsapp sim: cannot build the webhook client");
            return;
        }
    };
    let Ok(wake) = sim.world().phone(&id).map(|p| p.wake.clone()) else {
        return;
    };
    let stop = sim.shutdown_token().clone();
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if stop.is_cancelled() {
            return;
        }
        let step = {
            let mut world = sim.world();
            let Ok(phone) = world.phone(&id) else { return };
            let has_callback = phone.phone.callback_url.is_some();
            let batch_max = sim.config().batch_max.max(1);
            next_step(&mut phone.outbox, has_callback, Instant::now(), batch_max)
        };
        let (body, items, redelivery) = match step {
            Step::Wait(until) => {
                let until = until.map(tokio::time::Instant::from_std);
                tokio::select! {
                    () = &mut notified => {}
                    () = sleep_until(until) => {}
                    () = stop.cancelled() => return,
                }
                continue;
            }
            Step::Repost(repost) => (repost.body, repost.items, true),
            Step::Batch { full } => {
                if !full {
                    tokio::select! {
                        () = tokio::time::sleep(sim.config().batch_window) => {}
                        () = stop.cancelled() => return,
                    }
                }
                let mut world = sim.world();
                let Ok(phone) = world.phone(&id) else { return };
                let batch = phone
                    .outbox
                    .take_due(Instant::now(), sim.config().batch_max);
                if batch.is_empty() {
                    continue;
                }
                phone.outbox.in_flight = batch.len();
                (
                    meta_json_bytes(&payload(&phone.phone, &batch)),
                    batch.len(),
                    false,
                )
            }
        };
        if !post_until_delivered(&sim, &client, &id, &body, redelivery).await {
            return;
        }
        let counters = sim.core().counters();
        bump(&counters.webhook_deliveries, 1);
        bump(&counters.updates_delivered, items as u64);
        let mut world = sim.world();
        let Ok(phone) = world.phone(&id) else { return };
        phone.outbox.in_flight = 0;
        let rate = sim.config().redelivery_rate;
        if !redelivery && rate > 0.0 && rand::rng().random::<f64>() < rate {
            phone.outbox.reposts.push_back(Repost {
                body,
                items,
                due: Instant::now() + sim.config().retry_delay,
            });
        }
    }
}

async fn sleep_until(until: Option<tokio::time::Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}

/// POSTs `body` until a 2xx; false if the simulator stopped or the phone number vanished.
async fn post_until_delivered(
    sim: &WhatsAppSim,
    client: &reqwest::Client,
    id: &str,
    body: &[u8],
    redelivery: bool,
) -> bool {
    let stop = sim.shutdown_token();
    let mut delay = sim.config().retry_delay;
    loop {
        let (target, wake) = {
            let mut world = sim.world();
            let Ok(phone) = world.phone(id) else {
                return false;
            };
            let secret = phone.phone.app_secret.clone();
            (
                phone.phone.callback_url.clone().map(|url| (url, secret)),
                phone.wake.clone(),
            )
        };
        let Some((url, secret)) = target else {
            tokio::select! {
                () = wake.notified() => continue,
                () = stop.cancelled() => return false,
            }
        };
        let signature = sign(&secret, body);
        let status = tokio::select! {
            status = post(client, &url, body, &signature) => status,
            () = stop.cancelled() => return false,
        };
        sim.world().record_delivery(WebhookDelivery {
            url,
            body: body.to_vec(),
            signature,
            status,
            redelivery,
            at: Instant::now(),
        });
        if (200..300).contains(&status) {
            return true;
        }
        bump(&sim.core().counters().webhook_failures, 1);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return false,
        }
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}

/// One POST; the HTTP status, or 0 when no answer came.
async fn post(client: &reqwest::Client, url: &str, body: &[u8], signature: &str) -> u16 {
    let request = client
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Hub-Signature-256", signature)
        .header("User-Agent", "facebookexternalua")
        .body(body.to_vec());
    match request.send().await {
        Ok(response) => response.status().as_u16(),
        Err(error) => {
            tracing::debug!(%error, %url, "whatsapp sim: webhook delivery failed");
            0
        }
    }
}

/// `sha256=<lowercase hex HMAC-SHA256(app_secret, body)>`.
pub fn sign(app_secret: &str, body: &[u8]) -> String {
    match hmac::Hmac::<sha2::Sha256>::new_from_slice(app_secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        // HMAC takes keys of any length; this arm is unreachable.
        Err(_) => String::new(),
    }
}

/// The `whatsapp_business_account` payload for a batch of one phone number's items.
fn payload(phone: &PhoneNumber, items: &[Item]) -> Value {
    let (mut contacts, mut messages, mut statuses) = (Vec::new(), Vec::new(), Vec::new());
    for item in items {
        match item {
            Item::Message { contact, message } => {
                if !contacts
                    .iter()
                    .any(|c: &Value| c["wa_id"] == contact["wa_id"])
                {
                    contacts.push(contact.clone());
                }
                messages.push(message.clone());
            }
            Item::Status(status) => statuses.push(status.clone()),
        }
    }
    let mut value = Map::new();
    value.insert("messaging_product".into(), json!("whatsapp"));
    value.insert(
        "metadata".into(),
        json!({
            "display_phone_number": phone.display_phone_number,
            "phone_number_id": phone.phone_number_id,
        }),
    );
    if !messages.is_empty() {
        value.insert("contacts".into(), Value::Array(contacts));
        value.insert("messages".into(), Value::Array(messages));
    }
    if !statuses.is_empty() {
        value.insert("statuses".into(), Value::Array(statuses));
    }
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": phone.waba_id,
            "changes": [{ "value": value, "field": "messages" }],
        }],
    })
}

/// Compact JSON with `/` and non-ASCII characters escaped, as Meta serialises webhooks.
fn meta_json_bytes(value: &Value) -> Vec<u8> {
    let compact = value.to_string();
    let mut out = String::with_capacity(compact.len() + 16);
    for c in compact.chars() {
        match c {
            '/' => out.push_str("\\/"),
            c if c.is_ascii() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.into_bytes()
}

/// Meta's verification request: `GET {url}?hub.mode=subscribe&hub.challenge=..&hub.verify_token=..`;
/// true when the answer is 200 with exactly the challenge as body.
pub(super) async fn verify(url: &str, verify_token: &str) -> anyhow::Result<bool> {
    let challenge = ids::numeric_id()[..10].to_owned();
    let response = reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .build()?
        .get(url)
        .query(&[
            ("hub.mode", "subscribe"),
            ("hub.challenge", challenge.as_str()),
            ("hub.verify_token", verify_token),
        ])
        .header(
            "User-Agent",
            "facebookplatform/1.0 (+http://developers.facebook.com)",
        )
        .send()
        .await?;
    let ok = response.status().as_u16() == 200;
    Ok(ok && response.text().await? == challenge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_bodies_escape_slashes_and_non_ascii_and_stay_valid_json() {
        let value = json!({"a": "https://x/é😀"});
        let bytes = meta_json_bytes(&value);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(text, r#"{"a":"https:\/\/x\/\u00e9\ud83d\ude00"}"#);
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), value);
    }

    #[test]
    fn signatures_are_lowercase_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let signature = sign("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            signature,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn outbox_hands_out_due_items_in_order_up_to_the_batch_size() {
        let mut outbox = Outbox::default();
        let now = Instant::now();
        outbox.push(now + Duration::from_secs(5), Item::Status(json!("late")));
        for n in 0..3 {
            outbox.push(now, Item::Status(json!(n)));
        }
        let batch = outbox.take_due(now, 2);
        let seen: Vec<Value> = batch
            .iter()
            .map(|i| match i {
                Item::Status(s) => s.clone(),
                Item::Message { .. } => Value::Null,
            })
            .collect();
        assert_eq!(seen, [json!(0), json!(1)]);
        assert_eq!(outbox.take_due(now, 10).len(), 1);
        assert_eq!(outbox.pending(), 1);
    }
}
