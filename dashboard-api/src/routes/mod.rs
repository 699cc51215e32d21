//! The REST routes of API.md, one module per resource.

pub mod bots;
pub mod broadcasts;
pub mod contacts;
pub mod conversations;
pub mod events;
pub mod groups;
pub mod health;
pub mod import;
pub mod messages;
pub mod stats;
pub mod tenants;
pub mod webhooks;

use axum::Router;
use axum::routing::{get, post};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{ApiError, ApiState};

/// A page of a list: `{"items": [...], "next_cursor": "..." | null}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> From<switchboard_core::store::Page<T>> for List<T> {
    fn from(page: switchboard_core::store::Page<T>) -> Self {
        List {
            items: page.items,
            next_cursor: page.next_cursor,
        }
    }
}

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(crate::openapi::serve))
        .route("/v1/tenants", get(tenants::list).post(tenants::create))
        .route(
            "/v1/tenants/{id}/api-keys",
            get(tenants::list_keys).post(tenants::create_key),
        )
        .route(
            "/v1/tenants/{id}/api-keys/{key_id}",
            axum::routing::delete(tenants::revoke_key),
        )
        .route("/v1/bots", get(bots::list).post(bots::create))
        .route("/v1/bots/actions", post(bots::bulk_action))
        .route(
            "/v1/bots/{id}",
            get(bots::get).patch(bots::update).delete(bots::delete),
        )
        .route("/v1/bots/{id}/start", post(bots::start))
        .route("/v1/bots/{id}/stop", post(bots::stop))
        .route("/v1/bots/{id}/restart", post(bots::restart))
        .route("/v1/bots/{id}/balance", get(bots::balance))
        .route("/v1/contacts", get(contacts::list).post(contacts::create))
        .route("/v1/contacts/bulk", post(contacts::bulk))
        .route(
            "/v1/broadcasts",
            get(broadcasts::list).post(broadcasts::create),
        )
        .route(
            "/v1/broadcasts/{id}",
            get(broadcasts::get)
                .patch(broadcasts::update)
                .delete(broadcasts::cancel),
        )
        .route(
            "/v1/broadcasts/{id}/resend-failed",
            post(broadcasts::resend_failed),
        )
        .route(
            "/v1/broadcasts/{id}/recipients",
            get(broadcasts::recipients),
        )
        .route("/v1/stats", get(stats::stats))
        .route("/v1/webhooks", get(webhooks::list).post(webhooks::create))
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        )
        .route(
            "/v1/webhooks/{id}/dead-letters",
            get(webhooks::dead_letters),
        )
        .route("/v1/groups", get(groups::list).post(groups::create))
        .route(
            "/v1/groups/{id}",
            get(groups::get)
                .patch(groups::update)
                .delete(groups::delete),
        )
        .route("/v1/groups/{id}/members", post(groups::add_members))
        .route(
            "/v1/groups/{id}/import",
            post(import::import).layer(axum::extract::DefaultBodyLimit::max(
                import::MAX_IMPORT_BYTES + 64 * 1024,
            )),
        )
        .route(
            "/v1/groups/{id}/members/{contact_id}",
            axum::routing::delete(groups::remove_member),
        )
        .route(
            "/v1/contacts/{id}",
            get(contacts::get)
                .patch(contacts::update)
                .delete(contacts::delete),
        )
        .route("/v1/bots/{id}/test", post(bots::test))
        .route("/v1/conversations", get(conversations::list))
        .route("/v1/conversations/{id}", get(conversations::get))
        .route(
            "/v1/conversations/{id}/messages",
            get(conversations::messages),
        )
        .route("/v1/messages", get(messages::list).post(messages::create))
        .route("/v1/messages/{id}", get(messages::get))
        .route("/v1/messages/{id}/media", get(messages::media))
        .route("/v1/events", get(events::list))
        .route("/v1/feed", get(crate::feed::feed))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this path",
    )
}

/// A short label (a name, a title): trimmed, 1 to 200 characters, else 422 naming `field`.
pub fn label(field: &str, raw: &str) -> Result<String, ApiError> {
    let t = raw.trim();
    if t.is_empty() || t.chars().count() > 200 {
        return Err(ApiError::unprocessable(format!(
            "{field}: must be 1 to 200 characters"
        )));
    }
    Ok(t.to_owned())
}

/// Parses an RFC 3339 timestamp query parameter, naming it when it is wrong.
pub fn parse_time(
    name: &str,
    v: &Option<String>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "{name} must be an RFC 3339 timestamp, got {s:?}"
                    ))
                })
        })
        .transpose()
}
