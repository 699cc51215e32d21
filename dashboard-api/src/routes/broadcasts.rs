//! Broadcasts: one content to a group or a list of contacts through one bot, now or at a
//! scheduled time; edit or cancel while scheduled, cancel while sending, resend the failed,
//! per-recipient status.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use futures::TryFutureExt;
use serde::Deserialize;
use serde_json::{Map, Value};
use switchboard_core::model::{Broadcast, BroadcastRecipient, Content};
use switchboard_core::store::{BroadcastFilter, BroadcastPatch, NewBroadcast, Scope};

use super::contacts::{owner, tenant};
use super::{List, parse_time};
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, Pagination};
use crate::{ApiError, ApiState};

/// Most recipients one broadcast may have.
const MAX_RECIPIENTS: usize = 1_000_000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    pub group_id: Option<String>,
    pub contact_ids: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBroadcast {
    pub bot_id: String,
    pub title: String,
    pub content: Content,
    pub to: Audience,
    /// RFC 3339; absent, null or past: send now.
    pub scheduled_at: Option<String>,
}

fn title(raw: &str) -> Result<String, ApiError> {
    super::label("title", raw)
}

fn scheduled(raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let at = DateTime::parse_from_rfc3339(raw)
        .map_err(|e| {
            ApiError::unprocessable(format!("scheduled_at: {raw:?} is not RFC 3339: {e}"))
        })?
        .with_timezone(&Utc);
    Ok(Some(at))
}

async fn bot_of(
    s: &ApiState,
    scope: &Scope,
    id: &str,
) -> Result<switchboard_core::model::Bot, ApiError> {
    match s.store.get_bot(scope, id).await {
        Ok(b) => Ok(b),
        Err(switchboard_core::StoreError::NotFound) => {
            Err(ApiError::unprocessable(format!("bot_id: no bot {id:?}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates a broadcast: 201 with `status` `scheduled` (future `scheduled_at`) or `sending`.
#[utoipa::path(post, path = "/v1/broadcasts", tag = "broadcasts", request_body = CreateBroadcast,
    responses((status = 201, body = Broadcast), (status = 422, body = crate::problem::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(s): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<Broadcast>), ApiError> {
    let tenant = tenant(&caller)?;
    let to_value = body.get("to").cloned().unwrap_or(Value::Null);
    let req: CreateBroadcast =
        serde_json::from_value(body).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let title = title(&req.title)?;
    req.content.validate().map_err(ApiError::unprocessable)?;
    let bot = bot_of(&s, &Scope::Tenant(tenant.clone()), &req.bot_id).await?;
    let (segments, reply_window) = s.control.check_broadcast(&bot, &req.content)?;
    let (group, contacts) = match (&req.to.group_id, &req.to.contact_ids) {
        (Some(g), None) => (Some(g.as_str()), Vec::new()),
        (None, Some(list)) if !list.is_empty() => (None, list.clone()),
        (None, Some(_)) => {
            return Err(ApiError::unprocessable("to.contact_ids: must not be empty"));
        }
        _ => {
            return Err(ApiError::unprocessable(
                "to takes exactly one of group_id or contact_ids",
            ));
        }
    };
    let recipients = s.store.broadcast_audience(&bot, group, &contacts).await?;
    if recipients.len() > MAX_RECIPIENTS {
        return Err(ApiError::unprocessable(format!(
            "to: {} recipients; a broadcast takes at most {MAX_RECIPIENTS}",
            recipients.len()
        )));
    }
    let at = scheduled(req.scheduled_at.as_deref())?.filter(|t| *t > Utc::now());
    let start = at.is_none().then_some(reply_window);
    let broadcast = s
        .store
        .create_broadcast(
            NewBroadcast {
                tenant,
                bot_id: bot.id.clone(),
                title,
                content: req.content,
                to: to_value,
                scheduled_at: at,
                segments,
                recipients,
            },
            start,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(broadcast)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct BroadcastQuery {
    /// `scheduled`, `sending`, `completed` or `cancelled`.
    pub status: Option<String>,
    /// RFC 3339, inclusive (creation time).
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    pub until: Option<String>,
}

/// Broadcasts, newest first, with their counts.
#[utoipa::path(get, path = "/v1/broadcasts", tag = "broadcasts", params(BroadcastQuery, Pagination),
    responses((status = 200, body = List<Broadcast>)), security(("bearer" = [])))]
pub async fn list(
    State(s): State<ApiState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<BroadcastQuery>,
    ApiQuery(p): ApiQuery<Pagination>,
) -> Result<Json<List<Broadcast>>, ApiError> {
    let status = q.status.filter(|st| !st.is_empty());
    if let Some(st) = &status
        && !["scheduled", "sending", "completed", "cancelled"].contains(&st.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "status must be scheduled, sending, completed or cancelled, got {st:?}"
        )));
    }
    let filter = BroadcastFilter {
        status,
        since: parse_time("since", &q.since)?,
        until: parse_time("until", &q.until)?,
    };
    Ok(Json(
        s.store
            .list_broadcasts(&caller.scope, &filter, &p.page()?)
            .await?
            .into(),
    ))
}

#[utoipa::path(get, path = "/v1/broadcasts/{id}", tag = "broadcasts",
    responses((status = 200, body = Broadcast), (status = 404, body = crate::problem::Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Broadcast>, ApiError> {
    Ok(Json(s.store.get_broadcast(&caller.scope, &id).await?))
}

/// Edits a scheduled broadcast: `title`, `content`, `scheduled_at` (409 once it started).
#[utoipa::path(patch, path = "/v1/broadcasts/{id}", tag = "broadcasts", request_body = Object,
    responses((status = 200, body = Broadcast), (status = 404, body = crate::problem::Problem),
        (status = 409, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn update(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<Broadcast>, ApiError> {
    // Read in the caller's scope: the admin token acts for the broadcast's own tenant.
    let current = s.store.get_broadcast(&caller.scope, &id).await?;
    let tenant = current.tenant.clone();
    let mut patch = BroadcastPatch::default();
    for (key, value) in body {
        match (key.as_str(), value) {
            ("title", Value::String(t)) => patch.title = Some(title(&t)?),
            ("content", v) => {
                let content: Content = serde_json::from_value(v)
                    .map_err(|e| ApiError::unprocessable(format!("content: {e}")))?;
                content.validate().map_err(ApiError::unprocessable)?;
                let bot = bot_of(&s, &Scope::Tenant(tenant.clone()), &current.bot_id).await?;
                let (segments, _) = s.control.check_broadcast(&bot, &content)?;
                patch.segments = Some(segments);
                patch.content = Some(content);
            }
            ("scheduled_at", Value::String(t)) => {
                let at = scheduled(Some(&t))?.unwrap_or_else(Utc::now);
                patch.scheduled_at = Some(at.max(Utc::now()));
            }
            // As on create: null is now (the scheduler starts it within a second).
            ("scheduled_at", Value::Null) => patch.scheduled_at = Some(Utc::now()),
            (k, v) => {
                return Err(ApiError::unprocessable(format!(
                    "{k}: cannot be set to {v} (title, content or scheduled_at)"
                )));
            }
        }
    }
    Ok(Json(s.store.update_broadcast(&tenant, &id, patch).await?))
}

/// The tenant a write to broadcast `id` acts for (see [`owner`]).
async fn broadcast_owner(s: &ApiState, caller: &Caller, id: &str) -> Result<String, ApiError> {
    owner(
        caller,
        s.store
            .get_broadcast(&caller.scope, id)
            .map_ok(|b| b.tenant),
    )
    .await
}

/// Cancels a broadcast: a scheduled one never starts, a sending one sends nothing more.
#[utoipa::path(delete, path = "/v1/broadcasts/{id}", tag = "broadcasts",
    responses((status = 200, body = Broadcast), (status = 404, body = crate::problem::Problem),
        (status = 409, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn cancel(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Broadcast>, ApiError> {
    let tenant = broadcast_owner(&s, &caller, &id).await?;
    Ok(Json(s.store.cancel_broadcast(&tenant, &id).await?))
}

/// Sends the recipients whose message failed again.
#[utoipa::path(post, path = "/v1/broadcasts/{id}/resend-failed", tag = "broadcasts",
    responses((status = 200, body = Broadcast), (status = 404, body = crate::problem::Problem),
        (status = 409, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn resend_failed(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Broadcast>, ApiError> {
    let tenant = broadcast_owner(&s, &caller, &id).await?;
    let current = s
        .store
        .get_broadcast(&Scope::Tenant(tenant.clone()), &id)
        .await?;
    Ok(Json(
        s.store.resend_failed(&tenant, &id, &current.bot_id).await?,
    ))
}

/// Per-recipient status in audience order.
#[utoipa::path(get, path = "/v1/broadcasts/{id}/recipients", tag = "broadcasts", params(Pagination),
    responses((status = 200, body = List<BroadcastRecipient>), (status = 404, body = crate::problem::Problem)),
    security(("bearer" = [])))]
pub async fn recipients(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<Pagination>,
) -> Result<Json<List<BroadcastRecipient>>, ApiError> {
    Ok(Json(
        s.store
            .broadcast_recipients(&caller.scope, &id, &p.page()?)
            .await?
            .into(),
    ))
}
