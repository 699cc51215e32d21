//! Contacts: the people bots talk to, one per phone number (per tenant), with their platform
//! identities. Inbound messages create and link them; the API creates, edits and deletes
//! them too. A phone is unique per tenant (409), an invalid one is a 422 naming it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use futures::TryFutureExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use switchboard_core::model::{Contact, normalize_e164};
use switchboard_core::store::{ContactPatch, NewContact};

use super::List;
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, Pagination};
use crate::{ApiError, ApiState};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ContactQuery {
    /// Matches the name (case-insensitively) or the phone number.
    pub q: Option<String>,
}

/// The caller's contacts, by id.
#[utoipa::path(get, path = "/v1/contacts", tag = "contacts", params(ContactQuery, Pagination),
    responses((status = 200, body = List<Contact>)), security(("bearer" = [])))]
pub async fn list(
    State(s): State<ApiState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ContactQuery>,
    ApiQuery(p): ApiQuery<Pagination>,
) -> Result<Json<List<Contact>>, ApiError> {
    let page = s
        .store
        .list_contacts(&caller.scope, q.q.as_deref(), &p.page()?)
        .await?;
    Ok(Json(page.into()))
}

#[utoipa::path(get, path = "/v1/contacts/{id}", tag = "contacts",
    responses((status = 200, body = Contact), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn get(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Contact>, ApiError> {
    Ok(Json(s.store.get_contact(&caller.scope, &id).await?))
}

/// The tenant a write goes to: the API key's, or the one the admin token names with
/// `X-Switchboard-Tenant`.
pub(crate) fn tenant(caller: &Caller) -> Result<String, ApiError> {
    caller.scope.tenant().map(str::to_owned).ok_or_else(|| {
        ApiError::unprocessable("the admin token must name the tenant (X-Switchboard-Tenant)")
    })
}

/// The tenant of a write to an existing resource: the caller's, or (the admin token without
/// `X-Switchboard-Tenant`) the tenant `find` reads off the resource in the caller's scope.
pub(crate) async fn owner(
    caller: &Caller,
    find: impl std::future::Future<Output = Result<String, switchboard_core::StoreError>>,
) -> Result<String, ApiError> {
    match caller.scope.tenant() {
        Some(t) => Ok(t.to_owned()),
        None => Ok(find.await?),
    }
}

/// The tenant a write to contact `id` acts for (see [`owner`]).
async fn contact_owner(s: &ApiState, caller: &Caller, id: &str) -> Result<String, ApiError> {
    owner(
        caller,
        s.store.get_contact(&caller.scope, id).map_ok(|c| c.tenant),
    )
    .await
}

/// A contact as the API takes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactBody {
    pub name: Option<String>,
    /// E.164 (spaces, dashes, dots and parentheses are accepted).
    pub phone: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
}

fn phone(raw: &str, what: &str) -> Result<String, ApiError> {
    normalize_e164(raw).map_err(|e| ApiError::unprocessable(format!("{what}: {e}")))
}

fn new_contact(body: ContactBody, what: &str) -> Result<NewContact, ApiError> {
    let name = body
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    let phone = body.phone.as_deref().map(|p| phone(p, what)).transpose()?;
    if name.is_none() && phone.is_none() {
        return Err(ApiError::unprocessable(format!(
            "{what}: a contact needs a name or a phone"
        )));
    }
    Ok(NewContact {
        name,
        phone,
        tags: body.tags,
        attributes: body.attributes,
    })
}

/// Creates a contact: 201; a phone another contact has is 409, an invalid one 422.
#[utoipa::path(post, path = "/v1/contacts", tag = "contacts", request_body = ContactBody,
    responses((status = 201, body = Contact), (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(s): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<ContactBody>,
) -> Result<(StatusCode, Json<Contact>), ApiError> {
    let tenant = tenant(&caller)?;
    let contact = s
        .store
        .create_contact(&tenant, new_contact(body, "phone")?)
        .await?;
    Ok((StatusCode::CREATED, Json(contact)))
}

/// Edits a contact; `null` clears the name or the phone.
#[utoipa::path(patch, path = "/v1/contacts/{id}", tag = "contacts", request_body = Object,
    responses((status = 200, body = Contact), (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<Contact>, ApiError> {
    let tenant = contact_owner(&s, &caller, &id).await?;
    let mut patch = ContactPatch::default();
    for (key, value) in body {
        match (key.as_str(), value) {
            ("name", Value::Null) => patch.name = Some(None),
            ("name", Value::String(n)) => patch.name = Some(Some(n.trim().to_owned())),
            ("phone", Value::Null) => patch.phone = Some(None),
            ("phone", Value::String(p)) => patch.phone = Some(Some(phone(&p, "phone")?)),
            ("tags", v @ Value::Array(_)) => {
                patch.tags = Some(
                    serde_json::from_value(v)
                        .map_err(|_| ApiError::unprocessable("tags: must be a list of strings"))?,
                )
            }
            ("attributes", Value::Object(a)) => patch.attributes = Some(a),
            (k, v) => {
                return Err(ApiError::unprocessable(format!(
                    "{k}: cannot be set to {v} (name, phone, tags or attributes)"
                )));
            }
        }
    }
    Ok(Json(s.store.update_contact(&tenant, &id, patch).await?))
}

/// Deletes a contact and its platform identities: 204. Its conversations keep their history.
#[utoipa::path(delete, path = "/v1/contacts/{id}", tag = "contacts",
    responses((status = 204), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn delete(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = contact_owner(&s, &caller, &id).await?;
    s.store.delete_contact(&tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What `POST /v1/contacts/bulk` did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkResult {
    /// Contacts created.
    pub created: usize,
    /// Entries whose phone already belonged to a contact (or repeated one earlier in the list).
    pub existing: usize,
    pub errors: Vec<BulkError>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkError {
    /// The entry's position in the list, from 0.
    pub index: usize,
    pub error: String,
}

/// Creates many contacts at once (up to 10,000), in one transaction: entries with errors are
/// reported and skipped, entries whose phone exists are counted as existing.
#[utoipa::path(post, path = "/v1/contacts/bulk", tag = "contacts", request_body = Vec<ContactBody>,
    responses((status = 200, body = BulkResult)), security(("bearer" = [])))]
pub async fn bulk(
    State(s): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<Vec<Value>>,
) -> Result<Json<BulkResult>, ApiError> {
    let tenant = tenant(&caller)?;
    if body.len() > 10_000 {
        return Err(ApiError::unprocessable(format!(
            "at most 10000 contacts per request, got {}",
            body.len()
        )));
    }
    let mut errors = Vec::new();
    let mut items = Vec::new();
    for (index, raw) in body.into_iter().enumerate() {
        let parsed = serde_json::from_value::<ContactBody>(raw)
            .map_err(|e| e.to_string())
            .and_then(|b| new_contact(b, "phone").map_err(|e| e.detail));
        match parsed {
            Ok(c) => items.push(c),
            Err(error) => errors.push(BulkError { index, error }),
        }
    }
    let outcome = s.store.bulk_contacts(&tenant, items).await?;
    Ok(Json(BulkResult {
        created: outcome.created.len(),
        existing: outcome.existing.len(),
        errors,
    }))
}
