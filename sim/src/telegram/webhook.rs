//! Webhook delivery: while a bot has a webhook, one task per bot POSTs its pending updates
//! to the URL, one JSON Update per request, oldest first, one at a time.
//!
//! A 2xx answer removes the update from the queue; anything else (non-2xx, no connection,
//! timeout) is recorded as the webhook's last error and the same update is retried after
//! `webhook_retry_delay`. The task ends when the webhook is deleted or replaced (its stop
//! token) or the simulator shuts down.

use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::TelegramSim;
use crate::framework::{bump, unix_now};

/// How long one delivery may take before it counts as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

const SECRET_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";

pub(super) fn spawn_delivery(sim: TelegramSim, token: String, stop: CancellationToken) {
    tokio::spawn(async move { deliver(sim, token, stop).await });
}

/// The next update to deliver and where.
struct Delivery {
    update_id: i64,
    update: Value,
    url: String,
    secret: Option<String>,
}

async fn deliver(sim: TelegramSim, token: String, stop: CancellationToken) {
    let client = match reqwest::Client::builder().timeout(DELIVERY_TIMEOUT).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "telegram sim: cannot build the webhook client");
            return;
        }
    };
    let Ok(wake) = sim.world().bot(&token).map(|b| b.wake.clone()) else {
        return;
    };
    let counters = || sim.core().counters();
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if stop.is_cancelled() {
            return;
        }
        let Some(next) = next_delivery(&sim, &token) else {
            tokio::select! {
                () = &mut notified => continue,
                () = stop.cancelled() => return,
            }
        };
        let outcome = tokio::select! {
            outcome = post(&client, &next) => outcome,
            () = stop.cancelled() => return,
        };
        match outcome {
            Ok(()) => {
                if let Ok(bot) = sim.world().bot(&token)
                    && bot.updates.front().is_some_and(|u| u.id == next.update_id)
                {
                    bot.updates.pop_front();
                }
                bump(&counters().webhook_deliveries, 1);
                bump(&counters().updates_delivered, 1);
            }
            Err(message) => {
                tracing::debug!(%message, url = %next.url, "telegram sim: webhook delivery failed");
                bump(&counters().webhook_failures, 1);
                if let Ok(bot) = sim.world().bot(&token)
                    && let Some(hook) = bot.webhook.as_mut()
                    && !stop.is_cancelled()
                {
                    hook.last_error = Some((unix_now(), message));
                }
                tokio::select! {
                    () = tokio::time::sleep(sim.config().webhook_retry_delay) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

/// The oldest pending update, unless the bot has nothing to deliver (or its token was
/// revoked: Telegram stops calling a revoked bot's webhook).
fn next_delivery(sim: &TelegramSim, token: &str) -> Option<Delivery> {
    let mut world = sim.world();
    if !world.token_is_valid(token) {
        return None;
    }
    let bot = world.bot(token).ok()?;
    let hook = bot.webhook.as_ref()?;
    let first = bot.updates.front()?;
    Some(Delivery {
        update_id: first.id,
        update: first.json.clone(),
        url: hook.url.clone(),
        secret: hook.secret.clone(),
    })
}

/// One POST; `Err` holds the message getWebhookInfo reports.
async fn post(client: &reqwest::Client, delivery: &Delivery) -> Result<(), String> {
    let mut request = client.post(&delivery.url).json(&delivery.update);
    if let Some(secret) = &delivery.secret {
        request = request.header(SECRET_HEADER, secret);
    }
    match request.send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!(
            "Wrong response from the webhook: {}",
            response.status()
        )),
        Err(error) if error.is_timeout() => Err("Read timeout expired".to_owned()),
        Err(error) if error.is_connect() => Err("Connection refused".to_owned()),
        Err(error) => Err(format!("Connection error: {error}")),
    }
}
