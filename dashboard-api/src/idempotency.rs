//! `Idempotency-Key` on the creating POSTs (API.md: "the same key within 24 h returns the
//! first result, sends nothing twice"). `POST /v1/messages` keeps its key with the message
//! it made, in the same transaction (`core/src/store/write_outbound.rs`); every other POST
//! under `/v1/` goes through this layer. The first 2xx answer is stored under the caller's
//! credential, the path and the key, and replayed (with `Idempotent-Replayed: true`) for 24 h
//! to the same request; the same key with a different body is 409. Requests with one key
//! are handled one at a time in this process, so a retry racing the first waits for its
//! answer instead of creating a second time; the key is claimed in the store before acting,
//! so another instance given it meanwhile answers 409 (retry shortly) instead of acting.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::body::{Body, to_bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use switchboard_core::secret::sha256_hex;

use crate::auth::Caller;
use crate::{ApiError, ApiState};

/// How long a key's first answer is replayed.
const TTL: chrono::Duration = chrono::Duration::hours(24);
/// Largest body read here (imports are 5 MiB at most; larger ones are refused before).
const MAX_BODY: usize = 6 << 20;
/// Largest answer kept for replay.
const MAX_ANSWER: usize = 1 << 20;

/// Requests with the same key wait for each other (and for nothing else).
type Locks = std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

fn key_lock(id: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Locks> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Locks::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // Locks nobody holds or waits for are dropped as the map grows.
    if locks.len() > 1024 {
        locks.retain(|_, l| Arc::strong_count(l) > 1);
    }
    locks.entry(id.to_owned()).or_default().clone()
}

/// The request's `Idempotency-Key`, if it sent one (1 to 255 visible ASCII characters).
pub fn key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    raw.to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(|k| Some(k.to_owned()))
        .ok_or_else(|| {
            ApiError::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters")
        })
}

pub async fn layer(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if req.method() != Method::POST || !path.starts_with("/v1/") || path == "/v1/messages" {
        return next.run(req).await;
    }
    let key = match key(req.headers()) {
        Ok(Some(k)) => k,
        Ok(None) => return next.run(req).await,
        Err(e) => return e.into_response(),
    };
    let scope = {
        let credential = |name: &str| {
            req.headers()
                .get(name)
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default()
        };
        let mut who = credential("authorization");
        who.push(b'\n');
        who.extend(credential("x-switchboard-tenant"));
        who.extend(format!("\nPOST {path}").as_bytes());
        sha256_hex(&who)
    };
    let (mut parts, body) = req.into_parts();
    // The caller first: nothing is read, replayed or waited for before the credential is
    // checked and the tenant's rate admitted (the handler reuses this).
    match Caller::from_request_parts(&mut parts, &s).await {
        Ok(caller) => {
            parts.extensions.insert(caller);
        }
        Err(e) => return e.into_response(),
    }
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            )
            .into_response();
        }
    };
    let mut request = sha256_hex(parts.uri.query().unwrap_or_default().as_bytes());
    request.push_str(&sha256_hex(&bytes));
    let request_hash = sha256_hex(request.as_bytes());
    let lock = key_lock(&format!("{scope}{key}"));
    let _turn = lock.lock().await;
    if let Some(answer) = answered(&s, &scope, &key, &request_hash).await {
        return answer;
    }
    // Claimed in the store, so that another instance given the key meanwhile waits for
    // this answer instead of acting too.
    match s.store.claim_answer(&scope, &key, &request_hash).await {
        Ok(true) => {}
        Ok(false) => {
            return answered(&s, &scope, &key, &request_hash)
                .await
                .unwrap_or_else(in_progress);
        }
        Err(e) => return ApiError::from(e).into_response(),
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let too_large = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_ANSWER);
    if !response.status().is_success() || too_large {
        // Nothing was done, or nothing can be replayed: the key is free for a retry.
        release(&s, &scope, &key, &path).await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let answer = match to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => return ApiError::internal().into_response(),
    };
    // Answers carry secrets (a new API key, a webhook secret): kept sealed with the master
    // key.
    match std::str::from_utf8(&answer) {
        Ok(text) if answer.len() <= MAX_ANSWER => {
            let sealed = s.control.seal_secret(text);
            if let Err(e) = s
                .store
                .remember_answer(&scope, &key, &request_hash, parts.status.as_u16(), &sealed)
                .await
            {
                // Done but not kept: a retry with the key would act again.
                tracing::error!(error = %e, "cannot keep an idempotent answer");
            }
        }
        _ => release(&s, &scope, &key, &path).await,
    }
    Response::from_parts(parts, Body::from(answer))
}

/// Gives the key's claim up (an answer that failed, or one that cannot be kept).
async fn release(s: &ApiState, scope: &str, key: &str, path: &str) {
    if let Err(e) = s.store.release_answer(scope, key).await {
        tracing::warn!(%path, error = %e, "cannot release an Idempotency-Key claim; it lapses by itself");
    }
}

/// The answer a key already has: its first answer replayed, 409 for another request, 409
/// while its first request is in progress; `None` when the key is free.
async fn answered(s: &ApiState, scope: &str, key: &str, request_hash: &str) -> Option<Response> {
    let prior = match s.store.recall_answer(scope, key).await {
        Ok(Some(prior)) => prior,
        Ok(None) => return None,
        Err(e) => return Some(ApiError::from(e).into_response()),
    };
    let age = chrono::Utc::now() - prior.created_at;
    if age >= TTL {
        return None;
    }
    if prior.request_hash != request_hash {
        return Some(
            ApiError::new(
                StatusCode::CONFLICT,
                "this Idempotency-Key was used within 24 h for a different request",
            )
            .into_response(),
        );
    }
    if prior.status == 0 {
        return (age < switchboard_core::store::ABANDONED_AFTER).then(in_progress);
    }
    Some(match s.control.open_secret(&prior.body) {
        Ok(body) => replay(prior.status, body),
        Err(e) => e.into_response(),
    })
}

fn in_progress() -> Response {
    let mut e = ApiError::new(
        StatusCode::CONFLICT,
        "a request with this Idempotency-Key is still in progress; retry shortly",
    );
    e.retry_after = Some(1);
    e.into_response()
}

fn replay(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}
