//! Groups of contacts: CRUD with member counts, and membership (adding or removing twice
//! changes nothing). A name is unique per tenant (409).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use futures::TryFutureExt;
use serde::Deserialize;
use serde_json::{Map, Value};
use switchboard_core::model::Group;

use super::List;
use super::contacts::{owner, tenant};
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, Pagination};
use crate::{ApiError, ApiState};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    pub name: String,
    pub description: Option<String>,
}

/// The tenant a write to group `id` acts for (see [`owner`]).
async fn group_owner(s: &ApiState, caller: &Caller, id: &str) -> Result<String, ApiError> {
    owner(
        caller,
        s.store.get_group(&caller.scope, id).map_ok(|g| g.tenant),
    )
    .await
}

fn name(raw: &str) -> Result<String, ApiError> {
    super::label("name", raw)
}

#[utoipa::path(get, path = "/v1/groups", tag = "groups", params(Pagination),
    responses((status = 200, body = List<Group>)), security(("bearer" = [])))]
pub async fn list(
    State(s): State<ApiState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<Pagination>,
) -> Result<Json<List<Group>>, ApiError> {
    Ok(Json(
        s.store.list_groups(&caller.scope, &p.page()?).await?.into(),
    ))
}

#[utoipa::path(post, path = "/v1/groups", tag = "groups", request_body = GroupBody,
    responses((status = 201, body = Group), (status = 409, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn create(
    State(s): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<GroupBody>,
) -> Result<(StatusCode, Json<Group>), ApiError> {
    let tenant = tenant(&caller)?;
    let group = s
        .store
        .create_group(&tenant, &name(&body.name)?, body.description.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(group)))
}

#[utoipa::path(get, path = "/v1/groups/{id}", tag = "groups",
    responses((status = 200, body = Group), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn get(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Group>, ApiError> {
    Ok(Json(s.store.get_group(&caller.scope, &id).await?))
}

/// Renames a group or changes its description (`null` clears it).
#[utoipa::path(patch, path = "/v1/groups/{id}", tag = "groups", request_body = Object,
    responses((status = 200, body = Group), (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<Group>, ApiError> {
    let tenant = group_owner(&s, &caller, &id).await?;
    let (mut new_name, mut description) = (None, None);
    for (key, value) in body {
        match (key.as_str(), value) {
            ("name", Value::String(n)) => new_name = Some(name(&n)?),
            ("description", Value::Null) => description = Some(None),
            ("description", Value::String(d)) => description = Some(Some(d)),
            (k, v) => {
                return Err(ApiError::unprocessable(format!(
                    "{k}: cannot be set to {v} (name or description)"
                )));
            }
        }
    }
    Ok(Json(
        s.store
            .update_group(&tenant, &id, new_name, description)
            .await?,
    ))
}

/// Deletes a group (its contacts stay): 204.
#[utoipa::path(delete, path = "/v1/groups/{id}", tag = "groups",
    responses((status = 204), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn delete(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = group_owner(&s, &caller, &id).await?;
    s.store.delete_group(&tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Members {
    pub contact_ids: Vec<String>,
}

/// Adds contacts to a group (those already in it stay): the group with its new count. An
/// unknown contact id is a 422 naming it, and nothing is added.
#[utoipa::path(post, path = "/v1/groups/{id}/members", tag = "groups", request_body = Members,
    responses((status = 200, body = Group), (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)),
    security(("bearer" = [])))]
pub async fn add_members(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Members>,
) -> Result<Json<Group>, ApiError> {
    let tenant = group_owner(&s, &caller, &id).await?;
    if body.contact_ids.len() > 10_000 {
        return Err(ApiError::unprocessable(
            "contact_ids: at most 10000 per request",
        ));
    }
    s.store.add_members(&tenant, &id, body.contact_ids).await?;
    Ok(Json(s.store.get_group(&caller.scope, &id).await?))
}

/// Removes a contact from a group: 204 (also when it was not a member).
#[utoipa::path(delete, path = "/v1/groups/{id}/members/{contact_id}", tag = "groups",
    responses((status = 204), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn remove_member(
    State(s): State<ApiState>,
    caller: Caller,
    Path((id, contact_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = group_owner(&s, &caller, &id).await?;
    s.store.remove_member(&tenant, &id, &contact_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
