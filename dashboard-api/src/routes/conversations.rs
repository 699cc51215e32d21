//! Conversations and their messages.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use switchboard_core::model::{Conversation, Message, Platform};
use switchboard_core::store::{ConversationFilter, MessageFilter};

use super::{List, parse_time};
use crate::auth::Caller;
use crate::extract::{ApiQuery, Pagination};
use crate::{ApiError, ApiState};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ConversationQuery {
    pub bot: Option<String>,
    pub platform: Option<String>,
    /// Matches the title or the platform chat id.
    pub q: Option<String>,
    /// RFC 3339; conversations with a message at or after this time.
    pub updated_since: Option<String>,
}

/// Conversations, newest first.
#[utoipa::path(get, path = "/v1/conversations", tag = "conversations", params(ConversationQuery, Pagination),
    responses((status = 200, body = List<Conversation>)), security(("bearer" = [])))]
pub async fn list(
    State(s): State<ApiState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ConversationQuery>,
    ApiQuery(p): ApiQuery<Pagination>,
) -> Result<Json<List<Conversation>>, ApiError> {
    let platform =
        match q.platform.as_deref().filter(|p| !p.is_empty()) {
            None => None,
            Some(p) => Some(Platform::parse(p).ok_or_else(|| {
                ApiError::bad_request(format!("platform: unknown platform {p:?}"))
            })?),
        };
    let filter = ConversationFilter {
        bot: q.bot.filter(|b| !b.is_empty()),
        platform,
        q: q.q.filter(|b| !b.is_empty()),
        updated_since: parse_time("updated_since", &q.updated_since)?,
    };
    let page = s
        .store
        .list_conversations(&caller.scope, &filter, &p.page()?)
        .await?;
    Ok(Json(page.into()))
}

#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "conversations",
    responses((status = 200, body = Conversation), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn get(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(s.store.get_conversation(&caller.scope, &id).await?))
}

/// A conversation's messages, newest first.
#[utoipa::path(get, path = "/v1/conversations/{id}/messages", tag = "conversations", params(Pagination),
    responses((status = 200, body = List<Message>), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn messages(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<Pagination>,
) -> Result<Json<List<Message>>, ApiError> {
    s.store.get_conversation(&caller.scope, &id).await?;
    let filter = MessageFilter {
        conversation: Some(id),
        ..Default::default()
    };
    let page = s
        .store
        .list_messages(&caller.scope, &filter, &p.page()?)
        .await?;
    Ok(Json(page.into()))
}
