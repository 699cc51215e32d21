//! Contacts: the people bots talk to, one per phone number (per tenant), with their platform
//! identities. Inbound messages create and link them; these routes read them.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use switchboard_core::model::Contact;

use super::List;
use crate::auth::Caller;
use crate::extract::{ApiQuery, Pagination};
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
