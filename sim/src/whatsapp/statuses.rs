//! Status webhooks for an accepted send: what Meta reports as the message travels.
//!
//! A message inside the user's 24 h window (or any template) gets `sent`, `delivered` and,
//! when users read, `read`, at the configured delays. `sent` carries the conversation with its
//! `expiration_timestamp`, `delivered` the conversation without it, both with `pricing`;
//! `read` carries neither (as in Meta's examples). A free-form message outside the window gets
//! one `failed` status with error 131047.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::error::ERROR_CODES_HREF;
use super::state::{Conversation, PhoneState};
use super::webhook::Item;

/// The re-engagement error of a free-form message sent outside the window.
pub(crate) const REENGAGEMENT_CODE: i64 = 131047;

/// An accepted send, as the status schedule needs it.
pub(crate) struct Accepted<'a> {
    pub wamid: &'a str,
    pub wa_id: &'a str,
    pub template: bool,
    /// Whether the user's window was open when the message was sent.
    pub window_open: bool,
}

/// Clocks of the moment of the send: real (when webhooks are due) and simulated (what
/// timestamps say and how windows age).
pub(crate) struct SendClock {
    pub real: Instant,
    pub sim: Instant,
    pub sim_unix: i64,
}

/// Queues the statuses of `sent` in the phone number's outbox. Returns true when the
/// message fails with 131047.
pub(crate) fn schedule(
    phone: &mut PhoneState,
    sent: &Accepted<'_>,
    clock: &SendClock,
    delays: (Duration, Duration, Duration),
    read_receipts: bool,
) -> bool {
    let at = |delay: Duration| clock.sim_unix + delay.as_secs() as i64;
    if !sent.template && !sent.window_open {
        let status = failed(sent.wamid, sent.wa_id, at(delays.0));
        phone
            .outbox
            .push(clock.real + delays.0, Item::Status(status));
        phone.wake.notify_one();
        return true;
    }
    let category = if sent.template { "utility" } else { "service" };
    let conversation = phone.conversation(sent.wa_id, category, clock.sim, clock.sim_unix);
    let base = |status: &str, delay: Duration| {
        json!({
            "id": sent.wamid,
            "status": status,
            "timestamp": at(delay).to_string(),
            "recipient_id": sent.wa_id,
        })
    };
    let mut sent_status = base("sent", delays.0);
    sent_status["conversation"] = conversation_json(&conversation, true);
    sent_status["pricing"] = pricing_json(&conversation);
    let mut delivered = base("delivered", delays.1);
    delivered["conversation"] = conversation_json(&conversation, false);
    delivered["pricing"] = pricing_json(&conversation);
    phone
        .outbox
        .push(clock.real + delays.0, Item::Status(sent_status));
    phone
        .outbox
        .push(clock.real + delays.1, Item::Status(delivered));
    if read_receipts {
        let read = base("read", delays.2);
        phone.outbox.push(clock.real + delays.2, Item::Status(read));
    }
    phone.wake.notify_one();
    false
}

fn conversation_json(conversation: &Conversation, with_expiration: bool) -> Value {
    let mut json = json!({
        "id": conversation.id,
        "origin": { "type": conversation.category },
    });
    if with_expiration {
        json["expiration_timestamp"] = json!(conversation.expires_unix.to_string());
    }
    json
}

fn pricing_json(conversation: &Conversation) -> Value {
    json!({
        "billable": true,
        "pricing_model": "CBP",
        "category": conversation.category,
    })
}

fn failed(wamid: &str, wa_id: &str, timestamp: i64) -> Value {
    json!({
        "id": wamid,
        "status": "failed",
        "timestamp": timestamp.to_string(),
        "recipient_id": wa_id,
        "errors": [{
            "code": REENGAGEMENT_CODE,
            "title": "Re-engagement message",
            "message": "Re-engagement message",
            "error_data": {
                "details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number."
            },
            "href": ERROR_CODES_HREF,
        }],
    })
}
