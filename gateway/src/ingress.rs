//! Platform webhook ingress: `/webhooks/{platform}/{bot_id}[/...]`, raw bytes to the bot's
//! connector, which verifies the platform's signature before parsing and answers only after
//! what the request carried is stored. Bodies over the limit get 413 before any of that.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use switchboard_core::Store;
use switchboard_core::connector::{InboundSink, WebhookRequest};
use switchboard_core::store::Scope;
use switchboard_dashboard_api::ApiError;

use crate::supervisor::Supervisor;

#[derive(Clone)]
pub struct Ingress {
    pub store: Arc<Store>,
    pub supervisor: Supervisor,
    pub sink: Arc<dyn InboundSink>,
}

pub fn router(ingress: Ingress) -> axum::Router {
    axum::Router::new()
        .route("/webhooks/{platform}/{bot_id}", axum::routing::any(handle))
        .route(
            "/webhooks/{platform}/{bot_id}/{*rest}",
            axum::routing::any(handle_rest),
        )
        .with_state(ingress)
}

async fn handle_rest(
    state: State<Ingress>,
    Path((platform, bot_id, rest)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve(
        state,
        platform,
        bot_id,
        format!("/{rest}"),
        method,
        uri,
        headers,
        body,
    )
    .await
}

async fn handle(
    state: State<Ingress>,
    Path((platform, bot_id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve(
        state,
        platform,
        bot_id,
        String::new(),
        method,
        uri,
        headers,
        body,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    State(s): State<Ingress>,
    platform: String,
    bot_id: String,
    subpath: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            reject(&bot_id, "too_large");
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body is larger than 1 MiB",
            )
            .into_response();
        }
        Err(r) => return ApiError::bad_request(r.body_text()).into_response(),
    };
    // A running bot's connector answers for it; the store is asked only about the others
    // (a read per request would cost more than the rest of the request).
    let Some((_, connector)) = s
        .supervisor
        .live(&bot_id)
        .filter(|(p, _)| p.as_str() == platform)
    else {
        return not_running(&s, &platform, &bot_id).await;
    };
    // Every platform posts UTF-8 (JSON or form fields); serde would skip invalid bytes in
    // fields it ignores, so refuse them here, for all connectors at once.
    if let Err(e) = std::str::from_utf8(&body) {
        reject(&bot_id, "not_utf8");
        return ApiError::bad_request(format!(
            "the body is not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
        .into_response();
    }
    let request = WebhookRequest {
        method: method.to_string(),
        subpath,
        query: uri.query().unwrap_or("").to_string(),
        headers: headers
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_string(), v.to_string()))
            })
            .collect(),
        body: Vec::from(body),
    };
    let resp = connector.handle_webhook(request, s.sink.as_ref()).await;
    if resp.status == 401 || resp.status == 403 {
        reject(&bot_id, "verification");
    }
    let status = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // A refusal is problem+json like every other error of ours, whatever the connector
    // wrote (platforms look at the status only).
    if status.is_client_error() || status.is_server_error() {
        let detail = String::from_utf8_lossy(&resp.body).trim().to_owned();
        let detail = if detail.is_empty() {
            status.canonical_reason().unwrap_or("refused").to_owned()
        } else {
            detail
        };
        return ApiError::new(status, detail).into_response();
    }
    (
        status,
        [(header::CONTENT_TYPE, resp.content_type)],
        resp.body,
    )
        .into_response()
}

/// The answer for a bot without a running connector: 404 when this platform has no such bot,
/// else 503 (not running: a retryable status, so the platform redelivers later).
async fn not_running(s: &Ingress, platform: &str, bot_id: &str) -> Response {
    match s.store.get_bot(&Scope::All, bot_id).await {
        Ok(b) if b.platform.as_str() == platform => {
            ApiError::unavailable(format!("bot {:?} is {}", b.id, b.state.as_str())).into_response()
        }
        _ => ApiError::not_found(format!("no {platform} bot {bot_id:?}")).into_response(),
    }
}

fn reject(bot: &str, reason: &'static str) {
    let labels = [("bot", bot.to_string()), ("reason", reason.to_string())];
    metrics::counter!(switchboard_core::metrics::WEBHOOK_REJECTED, &labels).increment(1);
}
