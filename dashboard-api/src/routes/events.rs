//! The event log for polling clients.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use switchboard_core::model::Event;

use super::List;
use crate::auth::Caller;
use crate::extract::ApiQuery;
use crate::{ApiError, ApiState};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventQuery {
    /// Events after this sequence number (default 0: from the start).
    pub since: Option<String>,
    /// Same as `since`: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Comma-separated event types.
    pub types: Option<String>,
    pub bot: Option<String>,
    /// Default 100, at most 1000.
    pub limit: Option<u32>,
}

/// Parses a `since` sequence number.
pub fn parse_since(v: Option<&str>) -> Result<i64, ApiError> {
    match v.filter(|s| !s.is_empty()) {
        None => Ok(0),
        Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad_request(format!(
                "since must be a sequence number (integer >= 0), got {s:?}"
            ))
        }),
    }
}

/// Splits and checks `types=a,b`.
pub fn parse_types(v: Option<&str>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(v) = v.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let types: Vec<String> = v
        .split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    for t in &types {
        if !switchboard_core::model::event_type::ALL.contains(&t.as_str()) {
            return Err(ApiError::bad_request(format!(
                "types: unknown event type {t:?} (known: {})",
                switchboard_core::model::event_type::ALL.join(", ")
            )));
        }
    }
    Ok(Some(types))
}

/// The tenant's events after `since`, oldest first; `next_cursor` is the last seq returned.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventQuery),
    responses((status = 200, body = List<Event>)), security(("bearer" = [])))]
pub async fn list(
    State(s): State<ApiState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Json<List<Event>>, ApiError> {
    let tenant = caller.tenant()?;
    let since = parse_since(q.since.as_deref().or(q.cursor.as_deref()))?;
    let types = parse_types(q.types.as_deref())?;
    // API.md's list limits: default 50, at most 500; 0 is refused.
    let limit = match q.limit {
        None => 50,
        Some(0) => return Err(ApiError::bad_request("limit must be between 1 and 500")),
        Some(n) => n.min(500),
    };
    let items = s
        .store
        .list_events(
            tenant,
            since,
            types.as_deref(),
            q.bot.as_deref().filter(|b| !b.is_empty()),
            limit + 1,
        )
        .await?;
    let mut items = items;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|e| e.seq.to_string())
    } else {
        None
    };
    Ok(Json(List { items, next_cursor }))
}
