//! The Graph API over HTTP: `/{version}/{phone_number_id}/messages`, `/{version}/{id}/media`,
//! `GET|DELETE /{version}/{id}` (phone number or media object), and media downloads at
//! `/media-download/<opaque>`. The version segment (`v<digits>.<digits>`) may be any version
//! or absent, as on graph.facebook.com.
//!
//! Every call authenticates its token (`Authorization: Bearer` or `access_token=`) first, then
//! checks the object is the token's, then the body, then throughput; only then does anything
//! change: a refused call has no effect.

use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Map, Value, json};

use super::error::GraphError;
use super::ids::{self, Direction};
use super::outbound::{self, MessagesCall, Outbound};
use super::statuses::{self, Accepted, REENGAGEMENT_CODE, SendClock};
use super::{WaSent, WhatsAppSim, media};
use crate::framework::bump;
use crate::framework::server::{self, Gate, RequestLabel};

/// Meta accepts documents up to 100 MB.
const MAX_BODY: usize = 101 * 1024 * 1024;

/// The Graph API and download routes, recorded and (for Graph calls) fault-injected.
pub(super) fn router(sim: WhatsAppSim) -> Router {
    let gate = Gate {
        core: sim.core_arc(),
        label: label_request,
        server_error,
    };
    Router::new()
        .route("/media-download/{opaque}", get(download))
        .route("/{*path}", any(graph))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(gate, server::gate))
        .with_state(sim)
}

fn is_version(segment: &str) -> bool {
    segment.strip_prefix('v').is_some_and(|rest| {
        rest.split_once('.').is_some_and(|(major, minor)| {
            [major, minor]
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        })
    })
}

/// The path's segments without the version.
fn graph_segments(path: &str) -> Vec<&str> {
    let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.first().is_some_and(|s| is_version(s)) {
        segments.remove(0);
    }
    segments
}

/// Names a request for the log; download URLs are capabilities and are hidden.
fn label_request(uri: &Uri) -> RequestLabel {
    let path = uri.path();
    if path.starts_with("/media-download/") {
        return RequestLabel {
            path: "/media-download/***".to_owned(),
            api_method: Some("media_download".to_owned()),
            faults_apply: false,
        };
    }
    let api_method = match graph_segments(path).as_slice() {
        [_, edge] => Some(edge.to_ascii_lowercase()),
        [_] => Some("node".to_owned()),
        _ => None,
    };
    RequestLabel {
        path: path.to_owned(),
        api_method,
        faults_apply: true,
    }
}

/// An injected 5xx: Meta's transient JSON error for 500, a proxy's HTML page otherwise.
fn server_error(status: u16) -> Response {
    if status == 500 {
        return GraphError::service_unavailable().into_response();
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let reason = code.canonical_reason().unwrap_or("Error");
    let page = format!(
        "<!DOCTYPE html><html><head><title>{status} {reason}</title></head><body><h1>{reason}</h1><p>Sorry, something went wrong.</p></body></html>"
    );
    (code, Html(page)).into_response()
}

/// The access token from `Authorization: Bearer` or the `access_token` query parameter.
fn access_token(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let header = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
    header.or_else(|| {
        url::form_urlencoded::parse(uri.query()?.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
    })
}

impl WhatsAppSim {
    /// Answers a Graph error, counting its code (and rate limits in `responses_429`).
    pub(super) fn answer_error(&self, error: GraphError) -> Response {
        if error.is_rate_limit() {
            self.core().counters().count_rate_limited();
        }
        self.world().count_error(error.code);
        error.into_response()
    }
}

async fn graph(
    State(sim): State<WhatsAppSim>,
    Path(path): Path<String>,
    request: Request,
) -> Response {
    match route(&sim, &path, request).await {
        Ok(response) => response,
        Err(error) => sim.answer_error(error),
    }
}

async fn route(sim: &WhatsAppSim, path: &str, request: Request) -> Result<Response, GraphError> {
    let token = access_token(request.headers(), request.uri());
    let phones = sim.world().authenticate(token.as_deref())?;
    let segments = graph_segments(path);
    let method = request.method().clone();
    let verb = method.as_str().to_ascii_lowercase();
    let owns = |id: &str| phones.iter().any(|p| p == id);
    match segments.as_slice() {
        [id, edge] if matches!(*edge, "messages" | "media") => {
            if method != Method::POST || !owns(id) {
                return Err(GraphError::unsupported(&verb, id));
            }
            if *edge == "media" {
                return Ok(media::upload(sim, id, request).await);
            }
            let body = read_params(request).await;
            messages(sim, id, &body).map(|v| Json(v).into_response())
        }
        // `GET /{media_id}`. A phone number's own node is not offered (PLATFORMS.md lists
        // only the media nodes): a gateway must not depend on it.
        [id] if method == Method::GET => phones
            .iter()
            .find_map(|p| media::metadata(sim, id, p))
            .map(|v| Json(v).into_response())
            .ok_or_else(|| GraphError::unsupported("get", id)),
        [id] if method == Method::DELETE => {
            if phones.iter().any(|p| media::delete(sim, id, p)) {
                Ok(Json(json!({ "success": true })).into_response())
            } else {
                Err(GraphError::unsupported("delete", id))
            }
        }
        [id, ..] => Err(GraphError::unsupported(&verb, id)),
        [] => Err(GraphError::unknown_path(path)),
    }
}

/// The request's parameters: a JSON object, or a form whose values may be JSON (Graph
/// accepts both). Anything unreadable is an empty object.
async fn read_params(request: Request) -> Value {
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let Ok(bytes) = Bytes::from_request(request, &()).await else {
        return json!({});
    };
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let mut params = Map::new();
        for (key, value) in url::form_urlencoded::parse(&bytes) {
            let parsed = if value.starts_with('{') || value.starts_with('[') {
                serde_json::from_str(&value).unwrap_or_else(|_| json!(value))
            } else {
                json!(value)
            };
            params.insert(key.into_owned(), parsed);
        }
        return Value::Object(params);
    }
    serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({}))
}

/// `POST /{phone_number_id}/messages`.
fn messages(sim: &WhatsAppSim, phone_number_id: &str, body: &Value) -> Result<Value, GraphError> {
    match outbound::parse(body)? {
        MessagesCall::MarkRead { message_id } => {
            let mut world = sim.world();
            let phone = world
                .phone(phone_number_id)
                .map_err(|_| GraphError::unsupported("post", phone_number_id))?;
            if !phone.is_inbound(&message_id) {
                return Err(GraphError::invalid_parameter(format!(
                    "Invalid message_id: {message_id} is not a message received by this phone number."
                )));
            }
            phone.read_marks.push(message_id);
            Ok(json!({ "success": true }))
        }
        MessagesCall::Send(send) => send_message(sim, phone_number_id, send, body),
    }
}

fn send_message(
    sim: &WhatsAppSim,
    phone_number_id: &str,
    send: Outbound,
    body: &Value,
) -> Result<Value, GraphError> {
    let config = sim.config();
    let mut world = sim.world();
    if let Some((kind, media_id)) = &send.media_id
        && world.media.usable(media_id, phone_number_id).is_none()
    {
        return Err(GraphError::invalid_parameter(format!(
            "Param {kind}['id'] is not a valid whatsapp business account media attachment ID."
        )));
    }
    let clock = SendClock {
        real: Instant::now(),
        sim: world.sim_now(),
        sim_unix: world.sim_unix(),
    };
    let phone = world
        .phone(phone_number_id)
        .map_err(|_| GraphError::unsupported("post", phone_number_id))?;
    phone.take_send_tokens(&send.wa_id)?;
    let wamid = ids::wamid(&send.wa_id, Direction::Outgoing);
    let accepted = Accepted {
        wamid: &wamid,
        wa_id: &send.wa_id,
        template: send.is_template(),
        window_open: phone.window_open(&send.wa_id, clock.sim),
    };
    let before = phone.outbox.pending();
    let failed = statuses::schedule(
        phone,
        &accepted,
        &clock,
        config.status_delays,
        config.read_receipts,
    );
    let queued = phone.outbox.pending().saturating_sub(before);
    phone.record_sent(WaSent {
        wamid: wamid.clone(),
        to: send.to.clone(),
        kind: send.kind.clone(),
        body: body.clone(),
        context: send.context.clone(),
        at: clock.real,
    });
    if failed {
        world.count_error(REENGAGEMENT_CODE);
    }
    bump(&sim.core().counters().updates_created, queued as u64);
    let mut message = json!({ "id": wamid });
    if send.is_template() {
        message["message_status"] = json!("accepted");
    }
    Ok(json!({
        "messaging_product": "whatsapp",
        "contacts": [{ "input": send.to, "wa_id": send.wa_id }],
        "messages": [message],
    }))
}

async fn download(
    State(sim): State<WhatsAppSim>,
    Path(opaque): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let token = access_token(&headers, &uri);
    media::download(&sim, &opaque, token.as_deref())
}
