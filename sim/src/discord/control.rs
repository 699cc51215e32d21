//! The Discord simulator's control routes, under `/_sim/discord/` (JSON):
//!
//! - `POST bots {token, username}` → `{user_id}`; `POST revoke {token}`
//! - `POST channels {channel_id, guild_id?, name?, user_id?}` (a guild channel with
//!   `guild_id`, else a DM channel with `user_id`)
//! - `POST messages {channel_id, author_id, username, content, reply_to?}` → `{message_id}`
//! - `POST edits {channel_id, message_id, content}`
//! - `POST buttons {channel_id, user_id, message_id, custom_id}` → `{interaction_id}`
//! - `POST gateway {token, action, code?, resumable?, on?}` with `action` one of `drop`,
//!   `reconnect`, `invalidate`, `close`, `zombie`, `refuse_identify`
//! - `GET sent?channel_id=`, `GET sessions?token=` → `{identifies, resumes, connected}`

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{DiscordSim, DiscordSimError};
use crate::control::{ControlError, ControlResult};

impl From<DiscordSimError> for ControlError {
    fn from(error: DiscordSimError) -> Self {
        ControlError(StatusCode::NOT_FOUND, error.to_string())
    }
}

pub(super) fn routes(sim: DiscordSim) -> Router {
    Router::new()
        .route("/_sim/discord/bots", post(add_bot))
        .route("/_sim/discord/revoke", post(revoke))
        .route("/_sim/discord/channels", post(add_channel))
        .route("/_sim/discord/messages", post(user_message))
        .route("/_sim/discord/edits", post(user_edits))
        .route("/_sim/discord/buttons", post(press_button))
        .route("/_sim/discord/gateway", post(gateway))
        .route("/_sim/discord/sent", get(sent))
        .route("/_sim/discord/sessions", get(sessions))
        .with_state(sim)
}

#[derive(Debug, Deserialize)]
struct BotBody {
    token: String,
    #[serde(default)]
    username: String,
}

async fn add_bot(State(sim): State<DiscordSim>, Json(body): Json<BotBody>) -> ControlResult {
    Ok(Json(
        json!({ "user_id": sim.add_bot(&body.token, &body.username) }),
    ))
}

async fn revoke(State(sim): State<DiscordSim>, Json(body): Json<BotBody>) -> ControlResult {
    sim.revoke_token(&body.token);
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct ChannelBody {
    channel_id: String,
    guild_id: Option<String>,
    name: Option<String>,
    user_id: Option<String>,
}

async fn add_channel(
    State(sim): State<DiscordSim>,
    Json(body): Json<ChannelBody>,
) -> ControlResult {
    match (&body.guild_id, &body.user_id) {
        (Some(guild_id), _) => {
            let name = body.name.as_deref().unwrap_or("general");
            sim.add_guild_channel(guild_id, &body.channel_id, name);
        }
        (None, Some(user_id)) => sim.add_dm_channel(&body.channel_id, user_id),
        (None, None) => {
            let message = "a channel needs guild_id or user_id".to_owned();
            return Err(ControlError(StatusCode::BAD_REQUEST, message));
        }
    }
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct MessageBody {
    channel_id: String,
    author_id: String,
    username: String,
    content: String,
    reply_to: Option<String>,
}

async fn user_message(State(sim): State<DiscordSim>, Json(b): Json<MessageBody>) -> ControlResult {
    let id = sim.try_user_message(
        &b.channel_id,
        &b.author_id,
        &b.username,
        &b.content,
        b.reply_to.as_deref(),
    )?;
    Ok(Json(json!({ "message_id": id })))
}

#[derive(Debug, Deserialize)]
struct EditBody {
    channel_id: String,
    message_id: String,
    content: String,
}

async fn user_edits(State(sim): State<DiscordSim>, Json(b): Json<EditBody>) -> ControlResult {
    sim.try_user_edits(&b.channel_id, &b.message_id, &b.content)?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct ButtonBody {
    channel_id: String,
    user_id: String,
    message_id: String,
    custom_id: String,
}

async fn press_button(State(sim): State<DiscordSim>, Json(b): Json<ButtonBody>) -> ControlResult {
    let id = sim.try_press_button(&b.channel_id, &b.user_id, &b.message_id, &b.custom_id)?;
    Ok(Json(json!({ "interaction_id": id })))
}

#[derive(Debug, Deserialize)]
struct GatewayBody {
    #[serde(default)]
    token: String,
    action: String,
    code: Option<u16>,
    #[serde(default)]
    resumable: bool,
    #[serde(default = "yes")]
    on: bool,
}

fn yes() -> bool {
    true
}

async fn gateway(State(sim): State<DiscordSim>, Json(b): Json<GatewayBody>) -> ControlResult {
    match b.action.as_str() {
        "drop" => sim.drop_socket(&b.token),
        "reconnect" => sim.send_reconnect(&b.token),
        "invalidate" => sim.invalidate_session(&b.token, b.resumable),
        "close" => sim.close_with(&b.token, b.code.unwrap_or(4000)),
        "zombie" => sim.stop_acking_heartbeats(&b.token, b.on),
        "refuse_identify" => sim.refuse_identify(b.on),
        other => {
            let message = format!("unknown gateway action {other}");
            return Err(ControlError(StatusCode::BAD_REQUEST, message));
        }
    }
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct ChannelQuery {
    channel_id: String,
}

async fn sent(State(sim): State<DiscordSim>, Query(q): Query<ChannelQuery>) -> ControlResult {
    let sent: Vec<_> = sim
        .sent(&q.channel_id)
        .into_iter()
        .map(|s| json!({ "message_id": s.message_id, "channel_id": s.channel_id, "body": s.body }))
        .collect();
    Ok(Json(json!(sent)))
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: String,
}

async fn sessions(State(sim): State<DiscordSim>, Query(q): Query<TokenQuery>) -> ControlResult {
    Ok(Json(json!({
        "identifies": sim.identifies(&q.token),
        "resumes": sim.resumes(&q.token),
        "connected": sim.connected_sessions(&q.token),
    })))
}
