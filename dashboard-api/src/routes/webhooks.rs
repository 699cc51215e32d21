//! Outbound webhook subscriptions (`/v1/webhooks`): a tenant's URL, event types and secret.
//! Each event is POSTed as the feed's JSON with `X-Switchboard-Signature: t=<unix>,v1=<hex
//! hmac-sha256(secret, t + "." + body)>`; failed deliveries are retried with backoff for the
//! retry period (24 h by default), then kept as dead letters (`/v1/webhooks/{id}/dead-letters`).
//! The secret is the caller's or a generated one, shown once in the 201 answer.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use switchboard_core::model::{WebhookFailure, WebhookSubscription, event_type};

use super::List;
use super::contacts::tenant;
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, Pagination};
use crate::{ApiError, ApiState};

/// Whether a subscription may name `t`: the feed's event types but `feed.lagged`.
fn known_type(t: &str) -> bool {
    t != event_type::FEED_LAGGED && event_type::ALL.contains(&t)
}
/// A secret shorter than this is refused: it signs what the business's app trusts.
const MIN_SECRET: usize = 16;
const MAX_SECRET: usize = 256;
const MAX_URL: usize = 2048;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    /// `http` or `https` URL of the business's app.
    pub url: String,
    /// Event types to deliver (`message.received`, ...); all of them when absent or empty.
    /// Also accepted as `event_types` or `events`.
    #[serde(default, alias = "event_types", alias = "events")]
    pub types: Vec<String>,
    /// The signing secret (16-256 characters); generated when absent.
    pub secret: Option<String>,
}

/// A new subscription, with its secret (shown only here).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub subscription: WebhookSubscription,
    pub secret: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct FailureQuery {
    /// `retrying` for the deliveries still being retried.
    pub state: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

fn url(raw: &str) -> Result<String, ApiError> {
    let raw = raw.trim();
    if raw.len() > MAX_URL {
        return Err(ApiError::unprocessable(format!(
            "url: longer than {MAX_URL} characters"
        )));
    }
    let parsed = url::Url::parse(raw)
        .map_err(|e| ApiError::unprocessable(format!("url: not a URL ({e}): {raw:?}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ApiError::unprocessable(format!(
            "url: must be an http or https URL with a host, got {raw:?}"
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ApiError::unprocessable(
            "url: must not carry credentials (sign with the secret instead)",
        ));
    }
    Ok(parsed.to_string())
}

fn types(raw: Vec<String>) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::new();
    for t in raw {
        if !known_type(&t) {
            let known: Vec<&str> = event_type::ALL
                .into_iter()
                .filter(|t| known_type(t))
                .collect();
            return Err(ApiError::unprocessable(format!(
                "types: unknown event type {t:?} (known: {})",
                known.join(", ")
            )));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

fn secret(raw: Option<String>) -> Result<String, ApiError> {
    match raw {
        None => Ok(format!(
            "whsec_{}",
            switchboard_core::secret::generate_api_key().trim_start_matches("sk_")
        )),
        Some(s) if (MIN_SECRET..=MAX_SECRET).contains(&s.chars().count()) => Ok(s),
        Some(_) => Err(ApiError::unprocessable(format!(
            "secret: must be {MIN_SECRET} to {MAX_SECRET} characters"
        ))),
    }
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", params(Pagination),
    responses((status = 200, body = List<WebhookSubscription>)), security(("bearer" = [])))]
pub async fn list(
    State(s): State<ApiState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<Pagination>,
) -> Result<Json<List<WebhookSubscription>>, ApiError> {
    Ok(Json(
        s.store
            .list_webhooks(&caller.scope, &p.page()?)
            .await?
            .into(),
    ))
}

#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = WebhookBody,
    responses((status = 201, body = CreatedWebhook), (status = 422, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn create(
    State(s): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<WebhookBody>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    let tenant = tenant(&caller)?;
    let url = url(&body.url)?;
    let types = types(body.types)?;
    let secret = secret(body.secret)?;
    s.control.check_webhook_url(&url).await?;
    let stored = s.control.seal_secret(&secret);
    let subscription = s
        .store
        .create_webhook(&tenant, &url, &types, &stored)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            subscription,
            secret,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    responses((status = 200, body = WebhookSubscription), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn get(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookSubscription>, ApiError> {
    Ok(Json(s.store.get_webhook(&caller.scope, &id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    pub url: Option<String>,
    #[serde(alias = "event_types", alias = "events")]
    pub types: Option<Vec<String>>,
    /// A new signing secret (16-256 characters), used from the next delivery on.
    pub secret: Option<String>,
}

/// Changes the URL, the event types or the secret; the next deliveries use them.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", request_body = WebhookPatch,
    responses((status = 200, body = WebhookSubscription), (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<WebhookPatch>,
) -> Result<Json<WebhookSubscription>, ApiError> {
    let found = s.store.get_webhook(&caller.scope, &id).await?;
    let url = match body.url {
        Some(raw) => {
            let url = url(&raw)?;
            s.control.check_webhook_url(&url).await?;
            Some(url)
        }
        None => None,
    };
    let types = body.types.map(types).transpose()?;
    let secret = match body.secret {
        Some(raw) => Some(s.control.seal_secret(&secret(Some(raw))?)),
        None => None,
    };
    Ok(Json(
        s.store
            .update_webhook(&found.tenant, &id, url, types, secret)
            .await?,
    ))
}

/// Deletes the subscription: nothing more is delivered, its failed deliveries go with it.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    responses((status = 204), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn delete(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let found = s.store.get_webhook(&caller.scope, &id).await?;
    s.store.delete_webhook(&found.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The deliveries given up on after the retry period (with `?state=retrying`: those still
/// being retried), by event seq.
#[utoipa::path(get, path = "/v1/webhooks/{id}/dead-letters", tag = "webhooks", params(FailureQuery),
    responses((status = 200, body = List<WebhookFailure>), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn dead_letters(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<FailureQuery>,
) -> Result<Json<List<WebhookFailure>>, ApiError> {
    let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None | Some("dead") => "dead",
        Some("retrying") => "retrying",
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "state: expected dead or retrying, got {other:?}"
            )));
        }
    };
    let page = Pagination {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    Ok(Json(
        s.store
            .webhook_failures(&caller.scope, &id, Some(state), &page)
            .await?
            .into(),
    ))
}
