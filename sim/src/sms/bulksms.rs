//! BulkSMS's JSON REST API v1: `POST /v1/messages`, `GET /v1/profile` (HTTP Basic); JSON
//! webhooks POSTing arrays of Message objects to the account's webhook URL.
//!
//! A send body is one message object or an array of them ({to, body, from?, encoding
//! TEXT|UNICODE, longMessageMaxParts, deliveryReports ALL|ERRORS|NONE, userSuppliedId}); `to`
//! may be a number or an array of numbers. With `?auto-unicode=true` a TEXT body outside GSM-7
//! goes as UNICODE; without it, such characters are replaced and it goes as TEXT. A request is
//! all-or-nothing: any invalid message (400), or credits below the total cost (`credits per
//! part` × parts; 403 "Insufficient Credits"), refuses every message. Errors are problem JSON
//! `{type,title,status,detail}`. Accepted messages leave the account's queue at
//! `bulksms_messages_per_second`; the final DELIVERED or FAILED status is POSTed as scoped by
//! `deliveryReports`.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::delivery::{self, Hook, Outcome, Reports, Stage, Trip};
use super::segments::{self, Encoding};
use super::state::EPSILON;
use super::{Provider, SmsSent, SmsSim, SmsSimError, WebhookKind, wire};
use crate::framework::server::{self, Gate, RequestLabel};

const ERRORS_HREF: &str = "https://developer.bulksms.com/json/v1/errors";
const DEFAULT_MAX_PARTS: u64 = 50;
/// Messages an account may send, as `/v1/profile` reports it.
const QUOTA: u64 = 10_000_000;

/// A problem+json error answer.
#[derive(Debug)]
pub(crate) struct Problem {
    status: u16,
    slug: &'static str,
    title: &'static str,
    detail: String,
}

impl Problem {
    fn invalid(detail: impl Into<String>) -> Self {
        Problem {
            status: 400,
            slug: "invalid-request",
            title: "Invalid Request",
            detail: detail.into(),
        }
    }

    fn unauthorized() -> Self {
        Problem {
            status: 401,
            slug: "authentication-failed",
            title: "Authentication Failed",
            detail: "You need to provide valid credentials (username and password)".to_owned(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = json!({
            "type": format!("{ERRORS_HREF}#{}", self.slug),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        });
        let mut response = (status, Json(body)).into_response();
        let problem = HeaderValue::from_static("application/problem+json");
        response.headers_mut().insert(CONTENT_TYPE, problem);
        response
    }
}

pub(super) fn router(sim: SmsSim) -> Router {
    let gate = Gate {
        core: sim.core_arc(),
        label: label_request,
        server_error,
    };
    Router::new()
        .route("/v1/messages", post(send))
        .route("/v1/profile", get(profile))
        .layer(middleware::from_fn_with_state(gate, server::gate))
        .with_state(sim)
}

fn label_request(uri: &Uri) -> RequestLabel {
    let method = uri.path().trim_start_matches("/v1/");
    RequestLabel {
        path: uri.path().to_owned(),
        api_method: Some(format!("bulksms/{method}")),
        faults_apply: true,
    }
}

fn server_error(status: u16) -> Response {
    Problem {
        status,
        slug: "internal-error",
        title: "Internal Server Error",
        detail: "An unexpected error occurred".to_owned(),
    }
    .into_response()
}

/// The account's username, if the Basic credentials are right.
fn authenticate(sim: &SmsSim, headers: &HeaderMap) -> Result<String, Problem> {
    let (user, password) = wire::basic_credentials(headers).ok_or_else(Problem::unauthorized)?;
    match sim.world().bulksms.get(&user) {
        Some(account) if account.password == password => Ok(user),
        _ => Err(Problem::unauthorized()),
    }
}

/// What a trip needs to report a BulkSMS message.
#[derive(Debug, Clone)]
pub(crate) struct Reporting {
    username: String,
    /// The message object as the send answered it.
    message: Value,
    /// `deliveryReports`: ALL, ERRORS or NONE.
    scope: String,
}

/// One message of a send, checked.
struct Draft {
    to: String,
    body: String,
    from: Option<String>,
    encoding: Encoding,
    parts: u32,
    scope: String,
    user_supplied_id: Value,
}

fn draft(item: &Value, auto_unicode: bool) -> Result<Vec<Draft>, Problem> {
    let body = item["body"]
        .as_str()
        .ok_or_else(|| Problem::invalid("The field 'body' is required"))?;
    let targets: Vec<&str> = match &item["to"] {
        Value::String(to) => vec![to.as_str()],
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if targets.is_empty() {
        return Err(Problem::invalid("The field 'to' is required"));
    }
    let requested = item["encoding"].as_str().unwrap_or("TEXT");
    let encoding = match requested {
        "UNICODE" => Encoding::Ucs2,
        "TEXT" if auto_unicode && !body.chars().all(segments::is_gsm7) => Encoding::Ucs2,
        "TEXT" => Encoding::Gsm7,
        other => return Err(Problem::invalid(format!("Unsupported encoding '{other}'"))),
    };
    let parts = segments::segment_as(body, encoding).segments;
    let max_parts = item["longMessageMaxParts"]
        .as_u64()
        .unwrap_or(DEFAULT_MAX_PARTS);
    if u64::from(parts) > max_parts {
        let detail =
            format!("The message needs {parts} parts, more than longMessageMaxParts ({max_parts})");
        return Err(Problem::invalid(detail));
    }
    let scope = item["deliveryReports"]
        .as_str()
        .unwrap_or("ALL")
        .to_ascii_uppercase();
    targets
        .into_iter()
        .map(|to| {
            if !wire::is_e164(&format!("+{}", to.strip_prefix('+').unwrap_or(to))) {
                return Err(Problem::invalid(format!(
                    "The 'to' number {to} is not a valid phone number"
                )));
            }
            Ok(Draft {
                to: to.to_owned(),
                body: body.to_owned(),
                from: item["from"].as_str().map(str::to_owned),
                encoding,
                parts,
                scope: scope.clone(),
                user_supplied_id: item["userSuppliedId"].clone(),
            })
        })
        .collect()
}

fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Gsm7 => "TEXT",
        Encoding::Ucs2 => "UNICODE",
    }
}

fn status_json(kind: &str) -> Value {
    json!({ "id": format!("{kind}.null"), "type": kind, "subtype": null })
}

async fn send(
    State(sim): State<SmsSim>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let username = authenticate(&sim, &headers)?;
    let auto_unicode = wire::form_pairs(query.unwrap_or_default().as_bytes())
        .iter()
        .any(|(k, v)| k == "auto-unicode" && v == "true");
    let items = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(items)) => items,
        Ok(item @ Value::Object(_)) => vec![item],
        _ => {
            return Err(Problem::invalid(
                "The request body must be a message object or an array of them",
            ));
        }
    };
    let mut drafts = Vec::new();
    for item in &items {
        drafts.extend(draft(item, auto_unicode)?);
    }
    let config = sim.config();
    let cost_of = |d: &Draft| config.bulksms_credits_per_part * f64::from(d.parts);
    let total: f64 = drafts.iter().map(cost_of).sum();
    let now = Instant::now();
    let mut world = sim.world();
    let credits = world.bulksms.get(&username).map_or(0.0, |a| a.credits);
    if credits + EPSILON < total {
        return Err(Problem {
            status: 403,
            slug: "insufficient-credits",
            title: "Insufficient Credits",
            detail: format!("The messages cost {total} credits and the account has {credits}"),
        });
    }
    if let Some(account) = world.bulksms.get_mut(&username) {
        account.credits -= total;
    }
    let submission =
        json!({ "id": format!("2-{}", wire::numeric_id(11)), "date": wire::iso_now() });
    let (mut answer, mut trips) = (Vec::new(), Vec::new());
    for d in drafts {
        let key = (Provider::BulkSms, username.clone());
        let rate = config.bulksms_messages_per_second;
        let Some(departure) = world.enqueue(key, 1.0, rate, usize::MAX, now) else {
            continue;
        };
        let id = wire::numeric_id(10);
        let cost = cost_of(&d);
        let message = json!({
            "id": id, "type": "SENT", "from": d.from, "to": d.to, "body": d.body,
            "encoding": encoding_name(d.encoding), "protocolId": 0, "messageClass": 2,
            "submission": submission, "status": status_json("ACCEPTED"),
            "numberOfParts": d.parts, "creditCost": cost, "relatedSentMessageId": null,
            "userSuppliedId": d.user_supplied_id,
        });
        world.sent.push(SmsSent {
            provider: Provider::BulkSms,
            account: username.clone(),
            id: id.clone(),
            from: d.from.clone().unwrap_or_default(),
            to: d.to.clone(),
            body: d.body.clone(),
            segments: d.parts,
            encoding: d.encoding.as_str().to_owned(),
            cost,
            at: now,
        });
        trips.push(Trip {
            provider: Provider::BulkSms,
            id,
            to: d.to,
            departure,
            reports: Reports::BulkSms(Reporting {
                username: username.clone(),
                message: message.clone(),
                scope: d.scope,
            }),
        });
        answer.push(message);
    }
    drop(world);
    for trip in trips {
        delivery::spawn_trip(&sim, trip);
    }
    Ok((StatusCode::CREATED, Json(Value::Array(answer))).into_response())
}

async fn profile(State(sim): State<SmsSim>, headers: HeaderMap) -> Result<Json<Value>, Problem> {
    let username = authenticate(&sim, &headers)?;
    let world = sim.world();
    let account = world
        .bulksms
        .get(&username)
        .ok_or_else(Problem::unauthorized)?;
    let sent = world
        .sent
        .iter()
        .filter(|s| s.provider == Provider::BulkSms && s.account == username)
        .count() as u64;
    Ok(Json(json!({
        "id": account.id,
        "username": username,
        "credits": { "balance": account.credits, "limit": 0, "isTransferAllowed": false },
        "quota": { "size": QUOTA, "remaining": QUOTA.saturating_sub(sent) },
    })))
}

/// The final status webhook, if the message's `deliveryReports` asks for it.
pub(super) fn report(sim: &SmsSim, r: &Reporting, stage: &Stage) -> Option<Hook> {
    let kind = match stage {
        Stage::Sent => return None,
        Stage::Final(Outcome::Delivered) if r.scope == "ALL" => "DELIVERED",
        Stage::Final(Outcome::Undelivered(_) | Outcome::Failed(_)) if r.scope != "NONE" => "FAILED",
        Stage::Final(_) => return None,
    };
    let url = sim.world().bulksms.get(&r.username)?.webhook_url.clone()?;
    let mut message = r.message.clone();
    message["status"] = status_json(kind);
    Some(json_hook(WebhookKind::Status, url, &json!([message])))
}

fn json_hook(kind: WebhookKind, url: String, body: &Value) -> Hook {
    Hook {
        provider: Provider::BulkSms,
        kind,
        url,
        body: body.to_string(),
        content_type: "application/json",
        signature: None,
    }
}

/// The RECEIVED webhook for a user's message, to the account's webhook URL.
pub(super) fn inbound_hook(
    sim: &SmsSim,
    username: &str,
    from: &str,
    to: &str,
    body: &str,
) -> Result<Hook, SmsSimError> {
    let url = sim
        .world()
        .bulksms_account(username)?
        .webhook_url
        .clone()
        .ok_or_else(|| SmsSimError::NoWebhookUrl(Provider::BulkSms, username.to_owned()))?;
    let segmentation = segments::segment(body);
    let message = json!({
        "id": wire::numeric_id(10), "type": "RECEIVED", "from": from, "to": to, "body": body,
        "encoding": encoding_name(segmentation.encoding), "protocolId": 0, "messageClass": 0,
        "numberOfParts": segmentation.segments, "creditCost": 0,
        "status": status_json("RECEIVED"), "relatedSentMessageId": null,
        "userSuppliedId": null, "receivedAt": wire::iso_now(),
    });
    Ok(json_hook(WebhookKind::Inbound, url, &json!([message])))
}
