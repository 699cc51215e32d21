//! Tenants and their API keys (an extension of API.md for SaaS operators): the admin token
//! creates tenants; a tenant's keys are created (shown once), listed by hint, and revoked.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchboard_core::model::Tenant;
use switchboard_core::secret::{generate_api_key, hash_api_key};
use switchboard_core::store::Scope;
use utoipa::ToSchema;

use super::List;
use crate::auth::Caller;
use crate::extract::ApiJson;
use crate::{ApiError, ApiState};

fn may_manage(caller: &Caller, tenant: &str) -> Result<(), ApiError> {
    if caller.admin {
        return Ok(());
    }
    match &caller.scope {
        Scope::All => Ok(()),
        Scope::Tenant(t) if t == tenant => Ok(()),
        Scope::Tenant(_) => Err(ApiError::not_found("no such resource")),
    }
}

/// The caller's tenant, or every tenant for the admin token.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", responses((status = 200, body = List<Tenant>)), security(("bearer" = [])))]
pub async fn list(
    State(s): State<ApiState>,
    caller: Caller,
) -> Result<Json<List<Tenant>>, ApiError> {
    let items = match &caller.scope {
        Scope::All => s.store.list_tenants().await?,
        Scope::Tenant(t) => vec![s.store.get_tenant(t).await?],
    };
    Ok(Json(List {
        items,
        next_cursor: None,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    pub id: String,
    pub name: Option<String>,
    /// IANA time zone for statistics; default UTC.
    pub time_zone: Option<String>,
}

/// Creates a tenant (admin token only); 409 if the id exists.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = NewTenant,
    responses((status = 201, body = Tenant), (status = 409, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn create(
    State(s): State<ApiState>,
    caller: Caller,
    ApiJson(req): ApiJson<NewTenant>,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
    caller.require_admin()?;
    if req.id.is_empty()
        || req.id.len() > 64
        || !req
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ApiError::unprocessable(format!(
            "id must match [a-z0-9-]{{1,64}}, got {:?}",
            req.id
        )));
    }
    if s.store.get_tenant(&req.id).await.is_ok() {
        return Err(ApiError::conflict(format!("tenant {:?} exists", req.id)));
    }
    let name = req.name.unwrap_or_else(|| req.id.clone());
    let tz = req.time_zone.unwrap_or_else(|| "UTC".into());
    if switchboard_core::store::parse_time_zone(&tz).is_none() {
        return Err(ApiError::unprocessable(format!(
            "time_zone: {tz:?} is not an IANA time zone (like \"Africa/Nairobi\" or \"UTC\")"
        )));
    }
    let t = s.store.upsert_tenant(&req.id, &name, &tz, "api").await?;
    Ok((StatusCode::CREATED, Json(t)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub tenant: String,
    /// The first characters of the key, to tell keys apart.
    pub hint: String,
    pub source: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewApiKey {
    pub id: String,
    /// The key itself: shown once, stored only as a hash.
    pub key: String,
    pub hint: String,
}

#[utoipa::path(get, path = "/v1/tenants/{id}/api-keys", tag = "tenants",
    responses((status = 200, body = List<ApiKeyView>)), security(("bearer" = [])))]
pub async fn list_keys(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<List<ApiKeyView>>, ApiError> {
    may_manage(&caller, &id)?;
    let items = s
        .store
        .list_api_keys(&id)
        .await?
        .into_iter()
        .map(|k| ApiKeyView {
            id: k.id,
            tenant: k.tenant,
            hint: k.hint,
            source: k.source,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        })
        .collect();
    Ok(Json(List {
        items,
        next_cursor: None,
    }))
}

/// Creates an API key for the tenant; the answer is the only time the key is shown.
#[utoipa::path(post, path = "/v1/tenants/{id}/api-keys", tag = "tenants",
    responses((status = 201, body = NewApiKey)), security(("bearer" = [])))]
pub async fn create_key(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<NewApiKey>), ApiError> {
    may_manage(&caller, &id)?;
    s.store.get_tenant(&id).await?;
    let key = generate_api_key();
    let hint = key_hint(&key);
    let key_id = s.store.add_api_key(&id, &hash_api_key(&key), &hint).await?;
    Ok((
        StatusCode::CREATED,
        Json(NewApiKey {
            id: key_id,
            key,
            hint,
        }),
    ))
}

#[utoipa::path(delete, path = "/v1/tenants/{id}/api-keys/{key_id}", tag = "tenants",
    responses((status = 204), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn revoke_key(
    State(s): State<ApiState>,
    caller: Caller,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    may_manage(&caller, &id)?;
    s.store.revoke_api_key(&id, &key_id).await?;
    s.auth.forget_keys();
    Ok(StatusCode::NO_CONTENT)
}

/// The first 7 characters of a key followed by an ellipsis.
pub fn key_hint(key: &str) -> String {
    format!("{}…", key.chars().take(7).collect::<String>())
}
