//! The REST API under `/api/v10`: authentication (`Authorization: Bot <token>`), the global
//! per-bot limit, and the routes a bot gateway uses: `GET /gateway`, `GET /gateway/bot`,
//! `GET /channels/{id}`, `POST /channels/{id}/messages` (with its per-channel
//! bucket and headers on every answer) and `POST /interactions/{id}/{token}/callback`.
//!
//! Order of checks, as Discord: token (401), global limit (429), route bucket (429), then the
//! request itself (400/404). A refused request changes nothing.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde_json::{Value, json};

use super::error::DiscordError;
use super::ratelimit::{self, add_bucket_headers, bucket_hash};
use super::{DcSent, DiscordSim, shapes};
use crate::framework::server::{self, Gate, RequestLabel};

/// The largest message content Discord accepts, in characters.
const MAX_CONTENT: usize = 2000;

/// The REST routes, recorded and fault-injected.
pub(super) fn router(sim: DiscordSim) -> Router {
    let gate = Gate {
        core: sim.core_arc(),
        label: label_request,
        server_error,
    };
    let api = Router::new()
        .route("/gateway", get(gateway))
        .route("/gateway/bot", get(gateway_bot))
        .route("/channels/{channel_id}", get(channel))
        .route("/channels/{channel_id}/messages", post(create_message))
        .route(
            "/interactions/{id}/{token}/callback",
            post(interaction_callback),
        )
        .fallback(|| async { DiscordError::not_found() });
    Router::new()
        .nest("/api/v10", api)
        .route("/attachments/{channel}/{id}/{file}", get(attachment))
        .layer(middleware::from_fn_with_state(gate, server::gate))
        .with_state(sim)
}

/// A user's attached file, as Discord's CDN serves it (no token needed).
async fn attachment(
    State(sim): State<DiscordSim>,
    Path((channel, id, file)): Path<(String, String, String)>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let found = sim
        .world()
        .attachments
        .get(&format!("{channel}/{id}/{file}"))
        .cloned();
    match found {
        Some((content_type, bytes)) => {
            ([(axum::http::header::CONTENT_TYPE, content_type)], bytes).into_response()
        }
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

/// Names a request for the log: interaction tokens are hidden, ids become `{id}` in the
/// method name (`POST /channels/{id}/messages`).
fn label_request(uri: &Uri) -> RequestLabel {
    let path = uri.path();
    let rest = path.strip_prefix("/api/v10").unwrap_or(path);
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (path, api_method) = match segments.as_slice() {
        ["interactions", id, _, "callback"] => (
            format!("/api/v10/interactions/{id}/***/callback"),
            "interactions/{id}/{token}/callback".to_owned(),
        ),
        _ => {
            let template: Vec<&str> = segments
                .iter()
                .map(|s| {
                    if s.chars().all(|c| c.is_ascii_digit()) {
                        "{id}"
                    } else {
                        s
                    }
                })
                .collect();
            (path.to_owned(), template.join("/"))
        }
    };
    RequestLabel {
        path,
        api_method: Some(api_method),
        faults_apply: true,
    }
}

/// An injected 5xx: Discord's JSON for 500, Cloudflare's HTML page otherwise.
fn server_error(status: u16) -> Response {
    if status == 500 {
        return DiscordError::new(500, 0, "500: Internal Server Error").into_response();
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let page = format!(
        "<html><head><title>{status} Bad Gateway</title></head><body><center><h1>{status} Bad Gateway</h1></center><hr><center>cloudflare</center></body></html>"
    );
    (code, axum::response::Html(page)).into_response()
}

/// An authenticated bot within the global rate limit: its token.
pub(super) struct BotToken(pub String);

impl FromRequestParts<DiscordSim> for BotToken {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        sim: &DiscordSim,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().strip_prefix("Bot "))
            .map(str::trim)
            .filter(|t| sim.world().bot(t).is_some())
            .ok_or_else(|| DiscordError::unauthorized().into_response())?;
        let per_second = sim.config().global_per_second;
        let global = sim.limits().take_global(token, per_second);
        global.map_err(|limited| ratelimit::too_many_requests(limited, ""))?;
        Ok(BotToken(token.to_owned()))
    }
}

async fn gateway(State(sim): State<DiscordSim>) -> Json<Value> {
    Json(json!({ "url": sim.gateway_url() }))
}

async fn gateway_bot(
    State(sim): State<DiscordSim>,
    BotToken(token): BotToken,
) -> Result<Json<Value>, DiscordError> {
    const TOTAL: u64 = 1000;
    const DAY_MS: u64 = 24 * 3600 * 1000;
    let mut world = sim.world();
    let bot = world
        .bots
        .get_mut(&token)
        .ok_or_else(DiscordError::unauthorized)?;
    let now = Instant::now();
    while bot
        .session_starts
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t).as_millis() as u64 >= DAY_MS)
    {
        bot.session_starts.pop_front();
    }
    let used = bot.session_starts.len() as u64;
    let reset_after = bot.session_starts.front().map_or(DAY_MS, |t| {
        DAY_MS.saturating_sub(now.saturating_duration_since(*t).as_millis() as u64)
    });
    Ok(Json(json!({
        "url": sim.gateway_url(),
        "shards": 1,
        "session_start_limit": {
            "total": TOTAL,
            "remaining": TOTAL.saturating_sub(used),
            "reset_after": reset_after,
            "max_concurrency": 1,
        },
    })))
}

async fn channel(
    State(sim): State<DiscordSim>,
    Path(channel_id): Path<String>,
    BotToken(_token): BotToken,
) -> Result<Json<Value>, DiscordError> {
    let world = sim.world();
    let channel = world
        .channels
        .get(&channel_id)
        .ok_or_else(DiscordError::unknown_channel)?;
    let body = match &channel.kind {
        super::state::ChannelKind::Guild(guild_id) => json!({
            "id": channel_id, "type": 0, "guild_id": guild_id, "name": channel.name,
            "position": 0, "permission_overwrites": [], "nsfw": false, "topic": null,
            "last_message_id": null, "rate_limit_per_user": 0, "parent_id": null,
        }),
        super::state::ChannelKind::Dm(user_id) => {
            let username = channel.name.clone();
            json!({
                "id": channel_id, "type": 1, "last_message_id": null,
                "recipients": [shapes::user(user_id, &username, false)],
            })
        }
    };
    Ok(Json(body))
}

async fn create_message(
    State(sim): State<DiscordSim>,
    Path(channel_id): Path<String>,
    BotToken(token): BotToken,
    body: Bytes,
) -> Response {
    let bucket = bucket_hash("POST /channels/{channel_id}/messages");
    let rate = sim.config().channel_bucket;
    let state = match sim.limits().take_channel_message(&token, &channel_id, rate) {
        Ok(state) => state,
        Err(limited) => return ratelimit::too_many_requests(limited, &bucket),
    };
    let mut response = match post_message(&sim, &token, &channel_id, &body) {
        Ok(message) => Json(message).into_response(),
        Err(error) => error.into_response(),
    };
    add_bucket_headers(response.headers_mut(), state, &bucket);
    response
}

/// Validates and posts a bot's message; returns the Message object.
fn post_message(
    sim: &DiscordSim,
    token: &str,
    channel_id: &str,
    body: &[u8],
) -> Result<Value, DiscordError> {
    let request: Value = serde_json::from_slice(body).map_err(|_| DiscordError::invalid_json())?;
    if !request.is_object() {
        return Err(DiscordError::invalid_json());
    }
    let mut world = sim.world();
    let channel = world
        .channels
        .get(channel_id)
        .cloned()
        .ok_or_else(DiscordError::unknown_channel)?;
    let content = request["content"].as_str().unwrap_or_default();
    if content.chars().count() > MAX_CONTENT {
        return Err(DiscordError::form_body(
            "content",
            "BASE_TYPE_MAX_LENGTH",
            "Must be 2000 or fewer in length.",
        ));
    }
    let non_empty = |key: &str| request[key].as_array().is_some_and(|a| !a.is_empty());
    if content.is_empty()
        && !non_empty("embeds")
        && !non_empty("components")
        && !non_empty("sticker_ids")
    {
        return Err(DiscordError::empty_message());
    }
    let referenced = match request["message_reference"]["message_id"].as_str() {
        Some(id) => match world.message(channel_id, id) {
            Some(message) => Some(message.clone()),
            None if request["message_reference"]["fail_if_not_exists"] == json!(false) => None,
            None => {
                return Err(DiscordError::form_body(
                    "message_reference",
                    "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                    "Unknown message",
                ));
            }
        },
        None => None,
    };
    let author = world
        .bot(token)
        .map(|b| b.user())
        .ok_or_else(DiscordError::unauthorized)?;
    let embeds: Vec<Value> = request["embeds"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut e| {
            if e.get("type").is_none() {
                e["type"] = json!("rich");
            }
            e
        })
        .collect();
    let id = shapes::snowflake();
    let message = shapes::message(shapes::MessageParts {
        id: &id,
        channel_id,
        guild_id: channel.guild_id(),
        author,
        content,
        embeds: json!(embeds),
        components: request.get("components").cloned().unwrap_or(json!([])),
        referenced,
        with_member: false,
        mentions: json!([]),
    });
    world.remember_message(message.clone());
    world
        .sent
        .entry(channel_id.to_owned())
        .or_default()
        .push(DcSent {
            message_id: id,
            channel_id: channel_id.to_owned(),
            body: request,
            at: Instant::now(),
        });
    drop(world);
    sim.publish_message("MESSAGE_CREATE", &message, &channel);
    Ok(message)
}

async fn interaction_callback(
    State(sim): State<DiscordSim>,
    Path((id, token)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, DiscordError> {
    let request: Value = serde_json::from_slice(&body).map_err(|_| DiscordError::invalid_json())?;
    let kind = request["type"].as_u64();
    if !matches!(kind, Some(1 | 4 | 5 | 6 | 7 | 8 | 9 | 12)) {
        return Err(DiscordError::form_body(
            "type",
            "BASE_TYPE_CHOICES",
            "Value must be one of {1, 4, 5, 6, 7, 8, 9, 12}.",
        ));
    }
    let mut world = sim.world();
    let interaction = world
        .interactions
        .get_mut(&id)
        .filter(|i| i.token == token)
        .ok_or_else(DiscordError::unknown_interaction)?;
    if interaction.acknowledged {
        return Err(DiscordError::already_acknowledged());
    }
    interaction.acknowledged = true;
    let channel_id = interaction.channel_id.clone();
    world
        .sent
        .entry(channel_id.clone())
        .or_default()
        .push(DcSent {
            message_id: String::new(),
            channel_id,
            body: request,
            at: Instant::now(),
        });
    Ok(StatusCode::NO_CONTENT)
}
