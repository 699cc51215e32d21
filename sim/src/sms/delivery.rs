//! What happens to a message after a provider accepted it, and how webhooks reach the app.
//!
//! Each accepted message is a [`Trip`]: it waits for its departure from the sender's queue,
//! then is `sent` and, `delivery_delay` later, delivered, or fails as
//! [`SmsSim::fail_number`](super::SmsSim::fail_number) decided (a Twilio `failed` code fails
//! at departure, without `sent`). Every stage may give a delivery report, which each provider
//! shapes ([`Reports`]). A webhook is POSTed by its own task, retried after `retry_delay`
//! (doubling, up to 5 s) until a 2xx or `webhook_attempts` attempts; with
//! `redeliver_reports`, a delivered report is POSTed once more. Inbound messages are POSTed
//! once and their answer returned to the caller.

use std::time::{Duration, Instant};

use axum::http::header::{CONTENT_TYPE, USER_AGENT};
use tokio_util::sync::CancellationToken;

use super::{Provider, SmsSim, SmsWebhook, WebhookKind, africastalking, bulksms, twilio_hooks};
use crate::framework::bump;

/// Longest pause between two attempts of a webhook.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// How a message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Delivered,
    /// Sent, then refused by the handset's network; the provider's code or reason.
    Undelivered(String),
    /// Never sent (Twilio's `failed`).
    Failed(String),
}

/// A point in a message's life that may be reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stage {
    Sent,
    Final(Outcome),
}

/// Who reports a message's stages, and with what they need.
#[derive(Debug, Clone)]
pub(crate) enum Reports {
    Twilio(twilio_hooks::Reporting),
    AfricasTalking(africastalking::Reporting),
    BulkSms(bulksms::Reporting),
}

/// An accepted message on its way to the handset.
#[derive(Debug, Clone)]
pub(crate) struct Trip {
    pub provider: Provider,
    pub id: String,
    pub to: String,
    pub departure: Instant,
    pub reports: Reports,
}

/// One webhook POST to make.
#[derive(Debug, Clone)]
pub(crate) struct Hook {
    pub provider: Provider,
    pub kind: WebhookKind,
    pub url: String,
    pub body: String,
    pub content_type: &'static str,
    /// `X-Twilio-Signature`.
    pub signature: Option<String>,
}

/// Twilio codes that mean the message was never sent (status `failed`): queue overflow,
/// account suspended, carrier filtering.
const TWILIO_FAILED_CODES: [&str; 3] = ["30001", "30002", "30007"];

/// How a message to a number registered with `fail_number(number, code)` ends. Each provider
/// reports `code` verbatim when it has its shape (Twilio: digits; Africa's Talking: a reason
/// word such as `UserInBlacklist`) and its usual failure otherwise (30003, `AbsentSubscriber`).
fn outcome(provider: Provider, failure: Option<String>) -> Outcome {
    let Some(code) = failure else {
        return Outcome::Delivered;
    };
    let numeric = !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit());
    match provider {
        Provider::Twilio if !numeric => Outcome::Undelivered("30003".to_owned()),
        Provider::Twilio if TWILIO_FAILED_CODES.contains(&code.as_str()) => Outcome::Failed(code),
        Provider::AfricasTalking if numeric => Outcome::Undelivered("AbsentSubscriber".to_owned()),
        _ => Outcome::Undelivered(code),
    }
}

/// Runs the trip in the background; `settle` waits for it.
pub(crate) fn spawn_trip(sim: &SmsSim, trip: Trip) {
    let work = sim.track();
    let sim = sim.clone();
    tokio::spawn(async move {
        let _work = work;
        let stop = sim.shutdown_token().clone();
        let until = tokio::time::Instant::from_std(trip.departure);
        if !pause(&stop, tokio::time::sleep_until(until)).await {
            return;
        }
        let failure = sim.world().failing.get(&trip.to).cloned();
        let outcome = outcome(trip.provider, failure);
        if !matches!(outcome, Outcome::Failed(_)) {
            report(&sim, &trip, Stage::Sent);
            let delay = sim.config().delivery_delay;
            if !pause(&stop, tokio::time::sleep(delay)).await {
                return;
            }
        }
        report(&sim, &trip, Stage::Final(outcome));
    });
}

/// Waits for `sleep`; false if the simulator stopped first.
async fn pause(stop: &CancellationToken, sleep: impl Future<Output = ()>) -> bool {
    tokio::select! {
        () = sleep => true,
        () = stop.cancelled() => false,
    }
}

fn report(sim: &SmsSim, trip: &Trip, stage: Stage) {
    let hook = match &trip.reports {
        Reports::Twilio(r) => twilio_hooks::report(sim, r, &trip.id, &trip.to, &stage),
        Reports::AfricasTalking(r) => africastalking::report(sim, r, &trip.id, &trip.to, &stage),
        Reports::BulkSms(r) => bulksms::report(sim, r, &stage),
    };
    if let Some(hook) = hook {
        spawn_hook(sim, hook);
    }
}

/// POSTs a delivery report in the background, with retries (and a redelivery if configured).
pub(crate) fn spawn_hook(sim: &SmsSim, hook: Hook) {
    let work = sim.track();
    let sim = sim.clone();
    tokio::spawn(async move {
        let _work = work;
        let delivered = post_with_retries(&sim, &hook, false).await;
        if delivered && sim.config().redeliver_reports {
            post_with_retries(&sim, &hook, true).await;
        }
    });
}

/// POSTs until a 2xx or `webhook_attempts` attempts; true on a 2xx.
async fn post_with_retries(sim: &SmsSim, hook: &Hook, redelivery: bool) -> bool {
    let stop = sim.shutdown_token().clone();
    let attempts = sim.config().webhook_attempts.max(1);
    let mut delay = sim.config().retry_delay;
    for attempt in 1..=attempts {
        let status = tokio::select! {
            status = post(sim, hook, attempt, redelivery) => status,
            () = stop.cancelled() => return false,
        };
        if (200..300).contains(&status) {
            return true;
        }
        if attempt < attempts {
            if !pause(&stop, tokio::time::sleep(delay)).await {
                return false;
            }
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }
    tracing::debug!(url = %hook.url, attempts, "sms sim: webhook given up");
    false
}

/// POSTs an inbound message once; the status the app answered.
pub(crate) async fn deliver_inbound(sim: &SmsSim, hook: Hook) -> anyhow::Result<u16> {
    let _work = sim.track();
    bump(&sim.core().counters().updates_created, 1);
    match post(sim, &hook, 1, false).await {
        0 => anyhow::bail!("{} inbound webhook {}: no answer", hook.provider, hook.url),
        status => Ok(status),
    }
}

/// One POST, recorded; the HTTP status, or 0 when no answer came.
async fn post(sim: &SmsSim, hook: &Hook, attempt: u32, redelivery: bool) -> u16 {
    let at = Instant::now();
    let user_agent = match hook.provider {
        Provider::Twilio => "TwilioProxy/1.1",
        Provider::AfricasTalking => "AfricasTalking-Callback/1.0",
        Provider::BulkSms => "BulkSMS-Webhook/1.0",
    };
    let mut request = sim
        .client()
        .post(&hook.url)
        .header(CONTENT_TYPE, hook.content_type)
        .header(USER_AGENT, user_agent)
        .body(hook.body.clone());
    if let Some(signature) = &hook.signature {
        request = request.header("X-Twilio-Signature", signature);
    }
    let status = match request.send().await {
        Ok(response) => response.status().as_u16(),
        Err(error) => {
            tracing::debug!(%error, url = %hook.url, "sms sim: webhook POST failed");
            0
        }
    };
    let counters = sim.core().counters();
    if (200..300).contains(&status) {
        bump(&counters.webhook_deliveries, 1);
        if hook.kind == WebhookKind::Inbound {
            bump(&counters.updates_delivered, 1);
        }
    } else {
        bump(&counters.webhook_failures, 1);
    }
    sim.world().record_delivery(SmsWebhook {
        provider: hook.provider,
        kind: hook.kind,
        url: hook.url.clone(),
        status,
        body: hook.body.clone(),
        signature: hook.signature.clone(),
        attempt,
        redelivery,
        at,
    });
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sms_failure_codes_take_each_providers_shape() {
        let fail = |p, c: &str| outcome(p, Some(c.to_owned()));
        assert_eq!(outcome(Provider::Twilio, None), Outcome::Delivered);
        assert_eq!(
            fail(Provider::Twilio, "30003"),
            Outcome::Undelivered("30003".into())
        );
        assert_eq!(
            fail(Provider::Twilio, "30007"),
            Outcome::Failed("30007".into())
        );
        assert_eq!(
            fail(Provider::Twilio, "UserInBlacklist"),
            Outcome::Undelivered("30003".into())
        );
        let at = fail(Provider::AfricasTalking, "30003");
        assert_eq!(at, Outcome::Undelivered("AbsentSubscriber".into()));
        let at = fail(Provider::AfricasTalking, "UserInBlacklist");
        assert_eq!(at, Outcome::Undelivered("UserInBlacklist".into()));
    }
}
