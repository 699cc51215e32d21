//! Africa's Talking's SMS API: `POST /version1/messaging` (form; headers `apiKey`,
//! `Accept: application/json`), `GET /version1/user?username=` (balance); delivery reports
//! and incoming messages as form POSTs to the account's callbacks (unsigned, as AT's are).
//!
//! A wrong `apiKey` or `username` is 401 with the text "The supplied authentication is
//! invalid"; a missing field 400 with text. Otherwise the answer is 201 and every recipient
//! gets its own verdict: 101 Success (charged `at_price` × segments), 403 InvalidPhoneNumber
//! or 405 InsufficientBalance (not charged). Accepted messages leave the account's queue at
//! `at_messages_per_second`; each gets a `Sent` report, then `Success` or `Failed`.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::delivery::{self, Hook, Outcome, Reports, Stage, Trip};
use super::state::EPSILON;
use super::{Provider, SmsSent, SmsSim, SmsSimError, WebhookKind, segments, wire};
use crate::framework::server::{self, Gate, RequestLabel};

const FORM: &str = "application/x-www-form-urlencoded";
/// Safaricom's network code; every simulated recipient is on it.
const NETWORK_CODE: &str = "63902";

/// An error answer: a status and a plain-text body, as AT gives them.
#[derive(Debug)]
pub(crate) struct AtError(StatusCode, String);

impl AtError {
    fn unauthorized() -> Self {
        AtError(
            StatusCode::UNAUTHORIZED,
            "The supplied authentication is invalid".to_owned(),
        )
    }

    fn missing(field: &str) -> Self {
        let text = format!("Request is missing required form field '{field}'");
        AtError(StatusCode::BAD_REQUEST, text)
    }
}

impl IntoResponse for AtError {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

pub(super) fn router(sim: SmsSim) -> Router {
    let gate = Gate {
        core: sim.core_arc(),
        label: label_request,
        server_error,
    };
    Router::new()
        .route("/version1/messaging", post(send))
        .route("/version1/user", get(user))
        .layer(middleware::from_fn_with_state(gate, server::gate))
        .with_state(sim)
}

fn label_request(uri: &Uri) -> RequestLabel {
    let method = uri.path().trim_start_matches("/version1/");
    RequestLabel {
        path: uri.path().to_owned(),
        api_method: Some(format!("africastalking/{method}")),
        faults_apply: true,
    }
}

fn server_error(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, code.canonical_reason().unwrap_or("Error").to_owned()).into_response()
}

fn authenticate(sim: &SmsSim, username: &str, headers: &HeaderMap) -> Result<(), AtError> {
    let key = headers.get("apiKey").and_then(|v| v.to_str().ok());
    match sim.world().at.get(username) {
        Some(account) if key == Some(account.api_key.as_str()) => Ok(()),
        _ => Err(AtError::unauthorized()),
    }
}

/// What a trip needs to report an AT message's stages.
#[derive(Debug, Clone)]
pub(crate) struct Reporting {
    username: String,
}

fn kes(amount: f64) -> String {
    format!("KES {amount:.4}")
}

async fn send(
    State(sim): State<SmsSim>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AtError> {
    let form = wire::form_pairs(&body);
    let field = |name: &str| wire::field(&form, name).filter(|v| !v.is_empty());
    let username = field("username").unwrap_or_default();
    authenticate(&sim, username, &headers)?;
    let to = field("to").ok_or_else(|| AtError::missing("to"))?;
    let message = field("message").ok_or_else(|| AtError::missing("message"))?;
    let from = field("from").unwrap_or("AFRICASTKNG");
    let segmentation = segments::segment(message);
    let config = sim.config();
    let cost = config.at_price * f64::from(segmentation.segments);
    let now = Instant::now();
    let (mut recipients, mut trips, mut total_cost) = (Vec::new(), Vec::new(), 0.0);
    let mut world = sim.world();
    let numbers: Vec<&str> = to
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    for number in &numbers {
        let balance = world.at.get(username).map_or(0.0, |a| a.balance);
        let refused = if !wire::is_e164(number) {
            Some((403, "InvalidPhoneNumber"))
        } else if balance + EPSILON < cost {
            Some((405, "InsufficientBalance"))
        } else {
            None
        };
        if let Some((code, status)) = refused {
            recipients.push(json!({
                "statusCode": code, "number": number, "status": status,
                "cost": "0", "messageId": "None",
            }));
            continue;
        }
        let key = (Provider::AfricasTalking, username.to_owned());
        let rate = config.at_messages_per_second;
        let Some(departure) = world.enqueue(key, 1.0, rate, usize::MAX, now) else {
            continue;
        };
        if let Some(account) = world.at.get_mut(username) {
            account.balance -= cost;
        }
        total_cost += cost;
        let id = wire::hex_id("ATXid_");
        world.sent.push(SmsSent {
            provider: Provider::AfricasTalking,
            account: username.to_owned(),
            id: id.clone(),
            from: from.to_owned(),
            to: (*number).to_owned(),
            body: message.to_owned(),
            segments: segmentation.segments,
            encoding: segmentation.encoding.as_str().to_owned(),
            cost,
            at: now,
        });
        recipients.push(json!({
            "statusCode": 101, "number": number, "status": "Success",
            "cost": kes(cost), "messageId": id,
        }));
        trips.push(Trip {
            provider: Provider::AfricasTalking,
            id,
            to: (*number).to_owned(),
            departure,
            reports: Reports::AfricasTalking(Reporting {
                username: username.to_owned(),
            }),
        });
    }
    drop(world);
    let accepted = trips.len();
    for trip in trips {
        delivery::spawn_trip(&sim, trip);
    }
    let total = if accepted == 0 {
        "0".to_owned()
    } else {
        kes(total_cost)
    };
    let summary = format!("Sent to {accepted}/{} Total Cost: {total}", numbers.len());
    let answer = json!({ "SMSMessageData": { "Message": summary, "Recipients": recipients } });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

#[derive(Debug, Deserialize)]
struct UserQuery {
    #[serde(default)]
    username: String,
}

async fn user(
    State(sim): State<SmsSim>,
    Query(q): Query<UserQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, AtError> {
    authenticate(&sim, &q.username, &headers)?;
    let balance = sim.balance(Provider::AfricasTalking, &q.username);
    Ok(Json(json!({ "UserData": { "balance": kes(balance) } })))
}

/// The delivery report for a stage, to the account's delivery URL (if set).
pub(super) fn report(
    sim: &SmsSim,
    r: &Reporting,
    id: &str,
    to: &str,
    stage: &Stage,
) -> Option<Hook> {
    let url = sim.world().at.get(&r.username)?.delivery_url.clone()?;
    let (status, reason) = match stage {
        Stage::Sent => ("Sent", None),
        Stage::Final(Outcome::Delivered) => ("Success", None),
        Stage::Final(Outcome::Undelivered(reason) | Outcome::Failed(reason)) => {
            ("Failed", Some(reason.as_str()))
        }
    };
    let mut params = wire::pairs(&[
        ("id", id),
        ("status", status),
        ("phoneNumber", to),
        ("networkCode", NETWORK_CODE),
        ("retryCount", "0"),
    ]);
    if let Some(reason) = reason {
        params.push(("failureReason".to_owned(), reason.to_owned()));
    }
    Some(form_hook(WebhookKind::Status, url, &params))
}

fn form_hook(kind: WebhookKind, url: String, params: &[(String, String)]) -> Hook {
    Hook {
        provider: Provider::AfricasTalking,
        kind,
        url,
        body: wire::form_body(params),
        content_type: FORM,
        signature: None,
    }
}

/// A UUID-shaped id, as AT gives incoming messages and their `linkId`.
fn uuid_like() -> String {
    let hex = wire::hex_id("");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The incoming-message webhook, to the account's incoming URL.
pub(super) fn inbound_hook(
    sim: &SmsSim,
    username: &str,
    from: &str,
    to: &str,
    text: &str,
) -> Result<Hook, SmsSimError> {
    let url = sim
        .world()
        .at_account(username)?
        .incoming_url
        .clone()
        .ok_or_else(|| SmsSimError::NoWebhookUrl(Provider::AfricasTalking, username.to_owned()))?;
    let params = wire::pairs(&[
        ("date", &wire::iso_now()),
        ("from", from),
        ("id", &uuid_like()),
        ("linkId", &uuid_like()),
        ("text", text),
        ("to", to),
        ("networkCode", NETWORK_CODE),
    ]);
    Ok(form_hook(WebhookKind::Inbound, url, &params))
}
