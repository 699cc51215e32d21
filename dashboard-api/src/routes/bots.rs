//! Bots: CRUD, lifecycle actions, state and counters.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use switchboard_core::model::{Bot, BotCounters, BotState, Platform};
use utoipa::ToSchema;

use super::List;
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, Pagination};
use crate::{ApiError, ApiState, BotAction};

/// A bot as the API shows it. Credentials are write-only: only their field names appear.
#[derive(Debug, Serialize, ToSchema)]
pub struct BotView {
    pub id: String,
    pub tenant: String,
    pub platform: Platform,
    pub state: BotState,
    pub state_reason: Option<String>,
    pub last_error: Option<String>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub enabled: bool,
    pub counters: BotCounters,
    #[schema(value_type = Object)]
    pub settings: Map<String, Value>,
    pub credential_fields: Vec<String>,
    pub source: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub fn view(state: &ApiState, b: Bot) -> BotView {
    BotView {
        counters: state.control.counters(&b.id),
        id: b.id,
        tenant: b.tenant,
        platform: b.platform,
        state: b.state,
        state_reason: b.state_reason,
        last_error: b.last_error,
        last_seen_at: b.last_seen_at,
        enabled: b.enabled,
        settings: b.settings,
        credential_fields: b.credential_fields,
        source: b.source,
        created_at: b.created_at,
        updated_at: b.updated_at,
    }
}

/// Lists the caller's bots (the admin token without a tenant header sees every tenant's).
#[utoipa::path(get, path = "/v1/bots", tag = "bots", params(Pagination),
    responses((status = 200, body = List<BotView>)), security(("bearer" = [])))]
pub async fn list(
    State(s): State<ApiState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<Pagination>,
) -> Result<Json<List<BotView>>, ApiError> {
    let page = s.store.list_bots(&caller.scope, &p.page()?).await?;
    Ok(Json(List {
        items: page.items.into_iter().map(|b| view(&s, b)).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/bots/{id}", tag = "bots",
    responses((status = 200, body = BotView), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn get(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<BotView>, ApiError> {
    let bot = s.store.get_bot(&caller.scope, &id).await?;
    Ok(Json(view(&s, bot)))
}

/// Creates a bot. The body has the fields of a config-file `[[bots]]` entry (id, platform,
/// credentials, settings, optional `tenant` for the admin token); credentials are write-only.
#[utoipa::path(post, path = "/v1/bots", tag = "bots", request_body = Object,
    responses((status = 201, body = BotView), (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(s): State<ApiState>,
    caller: Caller,
    ApiJson(mut body): ApiJson<Map<String, Value>>,
) -> Result<(StatusCode, Json<BotView>), ApiError> {
    let named = match body.remove("tenant") {
        None => None,
        Some(Value::String(t)) => Some(t),
        Some(_) => return Err(ApiError::unprocessable("tenant must be a string")),
    };
    let tenant = match (&caller.scope, named) {
        // The admin names any tenant (its scope may default to the only one).
        (_, Some(t)) if caller.admin => t,
        (switchboard_core::store::Scope::Tenant(own), Some(t)) if *own != t => {
            return Err(ApiError::forbidden(
                "an API key creates bots in its own tenant only",
            ));
        }
        (switchboard_core::store::Scope::Tenant(own), _) => own.clone(),
        (switchboard_core::store::Scope::All, Some(t)) => t,
        (switchboard_core::store::Scope::All, None) => {
            return Err(ApiError::unprocessable(
                "tenant: the admin token must name the bot's tenant",
            ));
        }
    };
    let bot = s.control.create_bot(&tenant, body).await?;
    Ok((StatusCode::CREATED, Json(view(&s, bot))))
}

/// Changes settings or credentials (`null` removes a setting); the bot restarts if running.
#[utoipa::path(patch, path = "/v1/bots/{id}", tag = "bots", request_body = Object,
    responses((status = 200, body = BotView), (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<BotView>, ApiError> {
    let bot = s.control.update_bot(&caller.scope, &id, body).await?;
    Ok(Json(view(&s, bot)))
}

/// Stops and removes a bot; its queued messages are cancelled, its history stays.
#[utoipa::path(delete, path = "/v1/bots/{id}", tag = "bots",
    responses((status = 204), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn delete(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.control.delete_bot(&caller.scope, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn act(
    s: &ApiState,
    caller: &Caller,
    id: &str,
    action: BotAction,
) -> Result<Json<BotView>, ApiError> {
    s.store.get_bot(&caller.scope, id).await?;
    s.control.bot_action(id, action).await?;
    Ok(Json(view(s, s.store.get_bot(&caller.scope, id).await?)))
}

#[utoipa::path(post, path = "/v1/bots/{id}/start", tag = "bots", responses((status = 200, body = BotView)), security(("bearer" = [])))]
pub async fn start(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<BotView>, ApiError> {
    act(&s, &caller, &id, BotAction::Start).await
}

#[utoipa::path(post, path = "/v1/bots/{id}/stop", tag = "bots", responses((status = 200, body = BotView)), security(("bearer" = [])))]
pub async fn stop(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<BotView>, ApiError> {
    act(&s, &caller, &id, BotAction::Stop).await
}

#[utoipa::path(post, path = "/v1/bots/{id}/restart", tag = "bots", responses((status = 200, body = BotView)), security(("bearer" = [])))]
pub async fn restart(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<BotView>, ApiError> {
    act(&s, &caller, &id, BotAction::Restart).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BotSelection {
    /// The string `"all"`.
    All(String),
    Ids(Vec<String>),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkAction {
    pub action: BotAction,
    pub bots: BotSelection,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResult {
    pub bot_id: String,
    pub ok: bool,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResults {
    pub results: Vec<BulkResult>,
}

/// Starts, stops or restarts several bots (or `"all"` of the caller's).
#[utoipa::path(post, path = "/v1/bots/actions", tag = "bots", request_body = BulkAction,
    responses((status = 200, body = BulkResults)), security(("bearer" = [])))]
pub async fn bulk_action(
    State(s): State<ApiState>,
    caller: Caller,
    ApiJson(req): ApiJson<BulkAction>,
) -> Result<Json<BulkResults>, ApiError> {
    let ids: Vec<String> = match req.bots {
        BotSelection::All(all) if all == "all" => {
            let mut ids = Vec::new();
            let mut page = switchboard_core::store::PageRequest {
                limit: 500,
                cursor: None,
            };
            loop {
                let p = s.store.list_bots(&caller.scope, &page).await?;
                ids.extend(p.items.into_iter().map(|b| b.id));
                match p.next_cursor {
                    Some(c) => page.cursor = Some(c),
                    None => break,
                }
            }
            ids
        }
        BotSelection::All(other) => {
            return Err(ApiError::unprocessable(format!(
                "bots must be \"all\" or a list of bot ids, got {other:?}"
            )));
        }
        BotSelection::Ids(ids) => ids,
    };
    let mut results = Vec::with_capacity(ids.len());
    for id in ids {
        let r = match s.store.get_bot(&caller.scope, &id).await {
            Ok(_) => s.control.bot_action(&id, req.action).await,
            Err(e) => Err(ApiError::from(e)),
        };
        results.push(BulkResult {
            ok: r.is_ok(),
            error: r.err().map(|e| e.detail),
            bot_id: id,
        });
    }
    Ok(Json(BulkResults { results }))
}

/// A bot's account balance (SMS providers).
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceView {
    pub bot_id: String,
    /// As the provider wrote it, e.g. `"1785.50"`.
    pub amount: String,
    /// ISO 4217 code, or `"credits"`.
    pub currency: String,
    /// When it was read from the provider (answers are cached up to an hour).
    pub checked_at: DateTime<Utc>,
}

/// The bot's balance at its provider, from a cache at most an hour old (refreshed at each
/// probe and after a send refused for funds). 422 for platforms without a balance, 503 while
/// the bot is not running.
#[utoipa::path(get, path = "/v1/bots/{id}/balance", tag = "bots",
    responses((status = 200, body = BalanceView)), security(("bearer" = [])))]
pub async fn balance(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<BalanceView>, ApiError> {
    let bot = s.store.get_bot(&caller.scope, &id).await?;
    let b = s.control.balance(&bot).await?;
    Ok(Json(BalanceView {
        bot_id: bot.id,
        amount: b.amount,
        currency: b.currency,
        checked_at: b.checked_at,
    }))
}

/// `POST /v1/bots/{id}/test`: where to, and optionally what.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestMessage {
    /// A phone number (SMS, WhatsApp) or the recipient object of `POST /v1/messages`.
    #[schema(value_type = Object)]
    pub to: Value,
    /// Default: "Switchboard test message from bot {id}".
    pub text: Option<String>,
}

/// Sends one test message through the bot, like `POST /v1/messages`: 202 with the message.
#[utoipa::path(post, path = "/v1/bots/{id}/test", tag = "bots", request_body = TestMessage,
    responses((status = 202, body = Object)), security(("bearer" = [])))]
pub async fn test(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TestMessage>,
) -> Result<(StatusCode, Json<switchboard_core::model::Message>), ApiError> {
    let bot = s.store.get_bot(&caller.scope, &id).await?;
    let to: super::messages::To = match body.to {
        Value::String(phone) => super::messages::To {
            phone: Some(phone),
            ..Default::default()
        },
        other => serde_json::from_value(other)
            .map_err(|e| ApiError::unprocessable(format!("to: {e}")))?,
    };
    let text = body
        .text
        .unwrap_or_else(|| format!("Switchboard test message from bot {}", bot.id));
    let content = switchboard_core::model::Content::Text { text };
    content.validate().map_err(ApiError::unprocessable)?;
    let enqueued = s
        .control
        .submit(
            &bot,
            switchboard_core::store::NewOutbound {
                tenant: bot.tenant.clone(),
                bot_id: bot.id.clone(),
                to: super::messages::recipient(&to)?,
                content,
                reply_to: None,
                idempotency: None,
                reply_window: None,
                chat_kind: None,
                segments: None,
            },
            switchboard_core::connector::SendOptions::default(),
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(enqueued.message)))
}
