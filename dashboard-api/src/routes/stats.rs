//! The dashboard's totals: messages sent, received and failed (all time, today, this week,
//! this month in the tenant's time zone), contacts, groups, per-bot counts and the balances
//! of the SMS bots.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use switchboard_core::model::{BotBalance, Platform, Stats};

use super::contacts::tenant;
use crate::auth::Caller;
use crate::{ApiError, ApiState};

/// How long a provider's balance may take before the stats answer without it.
const BALANCE_WAIT: Duration = Duration::from_secs(2);

#[utoipa::path(get, path = "/v1/stats", tag = "stats",
    responses((status = 200, body = Stats)), security(("bearer" = [])))]
pub async fn stats(State(s): State<ApiState>, caller: Caller) -> Result<Json<Stats>, ApiError> {
    let tenant = tenant(&caller)?;
    let mut stats = s.store.stats(&tenant).await?;
    let bots: Vec<_> = s
        .store
        .all_bots()
        .await?
        .into_iter()
        .filter(|b| b.tenant == tenant && b.platform == Platform::Sms)
        .collect();
    let reads = bots.iter().map(|bot| {
        let control = s.control.clone();
        async move {
            let read = tokio::time::timeout(BALANCE_WAIT, control.balance(bot)).await;
            let error = match read {
                Ok(Ok(b)) => {
                    return BotBalance {
                        bot_id: bot.id.clone(),
                        amount: Some(b.amount),
                        currency: Some(b.currency),
                        checked_at: Some(b.checked_at),
                        error: None,
                    };
                }
                Ok(Err(e)) => e.detail,
                Err(_) => format!(
                    "the provider did not answer within {} s",
                    BALANCE_WAIT.as_secs()
                ),
            };
            BotBalance {
                bot_id: bot.id.clone(),
                amount: None,
                currency: None,
                checked_at: None,
                error: Some(error),
            }
        }
    });
    stats.balances = futures::future::join_all(reads).await;
    Ok(Json(stats))
}
