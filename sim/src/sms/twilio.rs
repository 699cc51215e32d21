//! Twilio's Messages API (`/2010-04-01/Accounts/{AccountSid}/...`): create, fetch, balance.
//! Its webhooks (status callbacks, inbound SMS, signatures) are in `twilio_hooks`.
//!
//! Order of checks at create: credentials (401 20003), then the form (21604 no To, 21602 no
//! Body, 21211 invalid To, 21617 Body over 1600 characters, 21603/21606/21701/21704 sender),
//! then balance (401 20003 "balance is exhausted") and the sender's queue (21611). Requests of
//! one account beyond `twilio_concurrency` in flight get 20429 (HTTP 429) before all of these.
//! A refused create changes nothing.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::delivery::{self, Reports, Trip};
use super::state::EPSILON;
use super::twilio_hooks::Reporting;
use super::{Provider, SmsSent, SmsSim, segments, wire};
use crate::framework::server::{self, Gate, RequestLabel};

pub(super) const API_VERSION: &str = "2010-04-01";
const MAX_BODY_CHARS: usize = 1600;

/// A Twilio REST error: `{"code","message","more_info","status"}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TwilioError {
    status: u16,
    code: u32,
    message: String,
}

impl TwilioError {
    fn new(status: u16, code: u32, message: impl Into<String>) -> Self {
        TwilioError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: u32, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    fn authenticate() -> Self {
        Self::new(401, 20003, "Authenticate")
    }

    fn balance_exhausted() -> Self {
        Self::new(
            401,
            20003,
            "Permission Denied: the account's balance is exhausted",
        )
    }

    fn not_found(path: &str) -> Self {
        Self::new(
            404,
            20404,
            format!("The requested resource {path} was not found"),
        )
    }

    fn too_many_requests() -> Self {
        Self::new(429, 20429, "Too Many Requests")
    }
}

impl IntoResponse for TwilioError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = json!({
            "code": self.code,
            "message": self.message,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", self.code),
            "status": self.status,
        });
        let mut response = (status, Json(body)).into_response();
        if self.status == 401 {
            let realm = HeaderValue::from_static("Basic realm=\"Twilio API\"");
            response.headers_mut().insert(WWW_AUTHENTICATE, realm);
        }
        response
    }
}

/// The Twilio routes, recorded, fault-injected and held to the per-account concurrency.
pub(super) fn router(sim: SmsSim) -> Router {
    let gate = Gate {
        core: sim.core_arc(),
        label: label_request,
        server_error,
    };
    Router::new()
        .route(
            "/2010-04-01/Accounts/{sid}/Messages.json",
            post(create_message),
        )
        .route(
            "/2010-04-01/Accounts/{sid}/Messages/{file}",
            get(fetch_message),
        )
        .route("/2010-04-01/Accounts/{sid}/Balance.json", get(balance))
        .layer(middleware::from_fn_with_state(gate, server::gate))
        .layer(middleware::from_fn_with_state(
            sim.clone(),
            limit_concurrency,
        ))
        .with_state(sim)
}

fn label_request(uri: &Uri) -> RequestLabel {
    let path = uri.path();
    let api_method = if path.ends_with("/Messages.json") {
        "twilio/messages.create"
    } else if path.ends_with("/Balance.json") {
        "twilio/balance"
    } else {
        "twilio/messages.fetch"
    };
    RequestLabel {
        path: path.to_owned(),
        api_method: Some(api_method.to_owned()),
        faults_apply: true,
    }
}

/// An injected 5xx: Twilio's JSON for 500, the load balancer's HTML page otherwise.
fn server_error(status: u16) -> Response {
    if status == 500 {
        return TwilioError::new(500, 20500, "An internal server error has occurred")
            .into_response();
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let page = format!("<html><body><h1>{status} Bad Gateway</h1></body></html>");
    (code, Html(page)).into_response()
}

/// Releases an account's in-flight slot when its request ends (or is dropped).
struct InFlight(SmsSim, String);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = self.0.world().twilio_in_flight.get_mut(&self.1) {
            *n = n.saturating_sub(1);
        }
    }
}

/// 20429 when the account already has `twilio_concurrency` requests in flight (counted
/// around faults too, so injected latency fills the slots as slow answers would).
async fn limit_concurrency(State(sim): State<SmsSim>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let Some(sid) = path.split('/').nth(3).map(str::to_owned) else {
        return next.run(request).await;
    };
    let admitted = {
        let mut world = sim.world();
        let in_flight = world.twilio_in_flight.entry(sid.clone()).or_default();
        let admitted = *in_flight < sim.config().twilio_concurrency;
        if admitted {
            *in_flight += 1;
        }
        admitted
    };
    if !admitted {
        let label = label_request(request.uri());
        let core = sim.core();
        let seq = core.begin_request(request.method().as_str(), label.path, label.api_method);
        core.finish_request(seq, 429);
        return TwilioError::too_many_requests().into_response();
    }
    let _slot = InFlight(sim.clone(), sid);
    next.run(request).await
}

/// The account's auth token, if the request's Basic credentials are `{sid}:{token}`.
fn authenticate(sim: &SmsSim, sid: &str, headers: &HeaderMap) -> Result<String, TwilioError> {
    let (user, password) =
        wire::basic_credentials(headers).ok_or_else(TwilioError::authenticate)?;
    match sim.world().twilio.get(sid) {
        Some(account) if user == sid && account.auth_token == password => {
            Ok(account.auth_token.clone())
        }
        _ => Err(TwilioError::authenticate()),
    }
}

async fn create_message(
    State(sim): State<SmsSim>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, TwilioError> {
    let auth_token = authenticate(&sim, &sid, &headers)?;
    let form = wire::form_pairs(&body);
    let field = |name: &str| wire::field(&form, name).filter(|v| !v.is_empty());
    let to = field("To")
        .ok_or_else(|| TwilioError::bad_request(21604, "A 'To' phone number is required."))?;
    let text = field("Body").unwrap_or_default();
    if text.is_empty() && field("MediaUrl").is_none() {
        return Err(TwilioError::bad_request(21602, "Message body is required."));
    }
    if !wire::is_e164(to) {
        let message = format!("The 'To' number {to} is not a valid phone number.");
        return Err(TwilioError::bad_request(21211, message));
    }
    if text.chars().count() > MAX_BODY_CHARS {
        let message = "The concatenated message body exceeds the 1600 character limit";
        return Err(TwilioError::bad_request(21617, message));
    }
    let service = field("MessagingServiceSid");
    let config = sim.config();
    let segmentation = segments::segment(text);
    let price = config.twilio_price * f64::from(segmentation.segments);
    let now = Instant::now();
    let mut world = sim.world();
    let account = world
        .twilio
        .get(&sid)
        .ok_or_else(TwilioError::authenticate)?;
    let (from, sender, pool_size) = match (service, field("From")) {
        (Some(service), _) => {
            let pool = account.services.get(service).ok_or_else(|| {
                let message = format!("The Messaging Service Sid {service} is invalid.");
                TwilioError::bad_request(21701, message)
            })?;
            // A sticky sender: the same recipient always gets the same number.
            let pick = to.bytes().map(usize::from).sum::<usize>() % pool.len().max(1);
            let number = pool.get(pick).ok_or_else(|| {
                TwilioError::bad_request(21704, "The Messaging Service contains no phone numbers")
            })?;
            (number.clone(), service, pool.len())
        }
        (None, Some(from)) if account.numbers.contains(from) => (from.to_owned(), from, 1),
        (None, Some(from)) => {
            let message = format!(
                "The From phone number {from} is not a valid, SMS-capable inbound phone number or short code for your account."
            );
            return Err(TwilioError::bad_request(21606, message));
        }
        (None, None) => {
            let message = "A 'From' phone number is required.";
            return Err(TwilioError::bad_request(21603, message));
        }
    };
    if account.balance + EPSILON < price {
        return Err(TwilioError::balance_exhausted());
    }
    let key = (Provider::Twilio, format!("{sid}/{sender}"));
    let rate = config.twilio_segments_per_second * pool_size as f64;
    let cost = f64::from(segmentation.segments);
    let departure = world
        .enqueue(key, cost, rate, config.twilio_queue_limit, now)
        .ok_or_else(|| {
            let message = "This 'From' number has exceeded the maximum number of queued messages";
            TwilioError::bad_request(21611, message)
        })?;
    if let Some(account) = world.twilio.get_mut(&sid) {
        account.balance -= price;
    }
    let message_sid = wire::hex_id("SM");
    let uri = format!("/{API_VERSION}/Accounts/{sid}/Messages/{message_sid}.json");
    let date = wire::rfc2822_now();
    let resource = json!({
        "account_sid": sid,
        "api_version": API_VERSION,
        "body": text,
        "date_created": date,
        "date_sent": null,
        "date_updated": date,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": if service.is_some() { Value::Null } else { json!(from) },
        "messaging_service_sid": service,
        "num_media": "0",
        "num_segments": segmentation.segments.to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": message_sid,
        "status": if service.is_some() { "accepted" } else { "queued" },
        "subresource_uris": { "media": uri.replace(".json", "/Media.json") },
        "to": to,
        "uri": uri,
    });
    world
        .twilio_messages
        .insert(message_sid.clone(), resource.clone());
    world.sent.push(SmsSent {
        provider: Provider::Twilio,
        account: sid.clone(),
        id: message_sid.clone(),
        from: from.clone(),
        to: to.to_owned(),
        body: text.to_owned(),
        segments: segmentation.segments,
        encoding: segmentation.encoding.as_str().to_owned(),
        cost: price,
        at: now,
    });
    drop(world);
    let reporting = Reporting {
        account_sid: sid,
        auth_token,
        from,
        callback: field("StatusCallback").map(str::to_owned),
        price,
    };
    delivery::spawn_trip(
        &sim,
        Trip {
            provider: Provider::Twilio,
            id: message_sid,
            to: to.to_owned(),
            departure,
            reports: Reports::Twilio(reporting),
        },
    );
    Ok((StatusCode::CREATED, Json(resource)).into_response())
}

async fn fetch_message(
    State(sim): State<SmsSim>,
    Path((sid, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, TwilioError> {
    authenticate(&sim, &sid, &headers)?;
    let path = format!("/{API_VERSION}/Accounts/{sid}/Messages/{file}");
    let message_sid = file.strip_suffix(".json").unwrap_or(&file);
    sim.world()
        .twilio_messages
        .get(message_sid)
        .filter(|m| m["account_sid"] == sid.as_str())
        .cloned()
        .map(Json)
        .ok_or_else(|| TwilioError::not_found(&path))
}

async fn balance(
    State(sim): State<SmsSim>,
    Path(sid): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, TwilioError> {
    authenticate(&sim, &sid, &headers)?;
    let balance = sim.balance(Provider::Twilio, &sid);
    Ok(Json(json!({
        "account_sid": sid,
        "balance": format!("{balance:.5}"),
        "currency": "USD",
    })))
}
