//! A simulated Discord (PLATFORMS.md §3), served on loopback: the REST API under `/api/v10`
//! and the gateway WebSocket on the same port.
//!
//! [`DiscordSim`] plays both sides a test needs: Discord as a bot sees it (REST with per-route
//! and global rate limits, a gateway with Hello, heartbeats, IDENTIFY/READY, RESUME with replay
//! of missed dispatches, op 7, op 9 and close codes) and the users who write in channels
//! ([`DiscordSim::user_message`]) or press buttons. Every bot is a member of every guild and
//! DM channel added; events go to each bot's sessions according to their intents.
//!
//! Gateway faults act on a bot's current sessions: [`DiscordSim::drop_socket`],
//! [`DiscordSim::stop_acking_heartbeats`], [`DiscordSim::send_reconnect`],
//! [`DiscordSim::invalidate_session`], [`DiscordSim::close_with`]; REST faults come from the
//! framework ([`DiscordSim::set_faults`]). The control API for callers outside Rust is under
//! `/_sim/discord/` (see `control`).

mod control;
mod error;
mod gateway;
mod interactions;
mod ratelimit;
mod rest;
mod shapes;
mod state;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::any;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::framework::rate::Rate;
use crate::framework::{Counters, Faults, RecordedRequest, SimCore, bump, server};
pub use error::DiscordSimError;
pub use interactions::InteractionReply;
use state::{Bot, Channel, ChannelKind, ConnCommand, Interaction, World, ends_session};

/// Intent bits the simulator looks at.
pub mod intents {
    pub const GUILD_MESSAGES: u64 = 1 << 9;
    pub const DIRECT_MESSAGES: u64 = 1 << 12;
    pub const MESSAGE_CONTENT: u64 = 1 << 15;
}

/// The simulator's limits and timings.
#[derive(Debug, Clone)]
pub struct DiscordConfig {
    /// Requests per second per bot across all routes (Discord: 50).
    pub global_per_second: u32,
    /// The bucket of `POST /channels/{id}/messages`, per channel: `count` per `per` as a fixed
    /// window (`burst` is not used). Default 5 per 5 s.
    pub channel_bucket: Rate,
    /// Hello's `heartbeat_interval` (Discord: 41.25 s; 2 s here so tests see beats).
    pub heartbeat_interval: Duration,
    /// Payloads a client may send per 60 s on one connection (Discord: 120; else close 4008).
    pub events_per_minute: u32,
    /// Dispatches each session keeps for resuming.
    pub resume_buffer: usize,
    /// How long a disconnected session stays resumable.
    pub session_timeout: Duration,
}

impl Default for DiscordConfig {
    fn default() -> Self {
        DiscordConfig {
            global_per_second: 50,
            channel_bucket: Rate::new(5, Duration::from_secs(5), 5),
            heartbeat_interval: Duration::from_secs(2),
            events_per_minute: 120,
            resume_buffer: 1000,
            session_timeout: Duration::from_secs(120),
        }
    }
}

impl DiscordConfig {
    /// Limits nobody reaches (benchmarks of the gateway itself).
    pub fn unlimited() -> Self {
        DiscordConfig {
            global_per_second: u32::MAX,
            channel_bucket: Rate::new(u32::MAX, Duration::from_secs(1), u32::MAX),
            ..Self::default()
        }
    }
}

/// A message the bot created through REST (or an interaction callback: then `message_id` is
/// empty and `body` is the callback), in order.
#[derive(Debug, Clone)]
pub struct DcSent {
    pub message_id: String,
    pub channel_id: String,
    /// The request JSON.
    pub body: Value,
    pub at: Instant,
}

/// A running Discord simulator; clones share it. Stops with [`shutdown`](Self::shutdown) or
/// when its tokio runtime ends.
#[derive(Clone)]
pub struct DiscordSim {
    inner: Arc<Inner>,
}

struct Inner {
    config: DiscordConfig,
    core: Arc<SimCore>,
    world: Mutex<World>,
    limits: Mutex<ratelimit::Limits>,
    addr: SocketAddr,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for DiscordSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordSim")
            .field("base_url", &self.base_url())
            .finish()
    }
}

impl DiscordSim {
    /// Starts the simulator on 127.0.0.1 with an ephemeral port.
    pub async fn start(config: DiscordConfig) -> anyhow::Result<DiscordSim> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Starts the simulator on `addr`.
    pub async fn start_on(addr: SocketAddr, config: DiscordConfig) -> anyhow::Result<DiscordSim> {
        let (listener, addr) = crate::framework::server::bind(addr).await?;
        let sim = DiscordSim {
            inner: Arc::new(Inner {
                config,
                core: Arc::new(SimCore::new()),
                world: Mutex::default(),
                limits: Mutex::default(),
                addr,
                shutdown: CancellationToken::new(),
            }),
        };
        let gateway = Router::new()
            .route("/", any(gateway::upgrade))
            .fallback(gateway::upgrade)
            .with_state(sim.clone());
        let router = Router::new()
            .merge(crate::control::core_routes(sim.inner.core.clone()))
            .merge(control::routes(sim.clone()))
            .merge(rest::router(sim.clone()))
            .merge(gateway);
        server::serve_listener(listener, router, sim.inner.shutdown.clone());
        Ok(sim)
    }

    /// `http://127.0.0.1:PORT`; REST is under `{base_url}/api/v10`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// `ws://127.0.0.1:PORT`: what `GET /gateway` answers and READY's `resume_gateway_url`.
    pub fn gateway_url(&self) -> String {
        format!("ws://{}", self.inner.addr)
    }

    /// Stops accepting connections and requests.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        let mut world = self
            .inner
            .world
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        world.expire_sessions(self.inner.config.session_timeout, Instant::now());
        world
    }

    pub(crate) fn limits(&self) -> MutexGuard<'_, ratelimit::Limits> {
        self.inner
            .limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn core(&self) -> &SimCore {
        &self.inner.core
    }

    pub(crate) fn core_arc(&self) -> Arc<SimCore> {
        self.inner.core.clone()
    }

    pub(crate) fn config(&self) -> &DiscordConfig {
        &self.inner.config
    }

    /// Adds a bot (or renames the one with this token, restoring a revoked token). Returns its
    /// user id, a snowflake; its application id is the same.
    pub fn add_bot(&self, token: &str, username: &str) -> String {
        let mut world = self.world();
        let bot = world.bots.entry(token.to_owned()).or_insert_with(|| Bot {
            user_id: shapes::snowflake(),
            username: username.to_owned(),
            revoked: false,
            identifies: 0,
            resumes: 0,
            ack_heartbeats: true,
            session_starts: Default::default(),
            signing_key: interactions::new_signing_key(),
            interactions_url: None,
        });
        bot.username = username.to_owned();
        bot.revoked = false;
        bot.user_id.clone()
    }

    /// Every later REST call with this token answers 401; its gateway sessions close with 4004.
    pub fn revoke_token(&self, token: &str) {
        let mut world = self.world();
        if let Some(bot) = world.bots.get_mut(token) {
            bot.revoked = true;
        }
        world.command_sessions(token, || ConnCommand::Close(4004));
        world.end_sessions(token);
    }

    pub fn add_guild_channel(&self, guild_id: &str, channel_id: &str, name: &str) {
        let kind = ChannelKind::Guild(guild_id.to_owned());
        self.world().add_channel(channel_id, name, kind);
    }

    pub fn add_dm_channel(&self, channel_id: &str, user_id: &str) {
        let kind = ChannelKind::Dm(user_id.to_owned());
        self.world().add_channel(channel_id, user_id, kind);
    }

    /// A user posts in a channel: MESSAGE_CREATE goes to every bot's sessions whose intents
    /// subscribe to it (GUILD_MESSAGES or DIRECT_MESSAGES); without MESSAGE_CONTENT, guild
    /// messages arrive with empty content unless they mention the bot. `reply_to` makes it a
    /// reply (type 19). Returns the message id. Panics if the channel was never added (see
    /// `try_user_message`).
    pub fn user_message(
        &self,
        channel_id: &str,
        author_id: &str,
        username: &str,
        content: &str,
        reply_to: Option<&str>,
    ) -> String {
        self.try_user_message(channel_id, author_id, username, content, reply_to)
            .unwrap_or_else(|e| panic!("user_message: {e}"))
    }

    pub fn try_user_message(
        &self,
        channel_id: &str,
        author_id: &str,
        username: &str,
        content: &str,
        reply_to: Option<&str>,
    ) -> Result<String, DiscordSimError> {
        self.post_user_message(channel_id, (author_id, username), content, reply_to, None)
    }

    /// MESSAGE_CREATE for a user's message, with at most one attached file (kept for the
    /// CDN route).
    fn post_user_message(
        &self,
        channel_id: &str,
        (author_id, username): (&str, &str),
        content: &str,
        reply_to: Option<&str>,
        file: Option<(&str, &str, Vec<u8>)>,
    ) -> Result<String, DiscordSimError> {
        let mut world = self.world();
        let channel = world
            .channels
            .get(channel_id)
            .cloned()
            .ok_or_else(|| DiscordSimError::UnknownChannel(channel_id.to_owned()))?;
        let referenced = reply_to.and_then(|id| world.message(channel_id, id).cloned());
        let mentions: Vec<Value> = world
            .bots
            .values()
            .filter(|b| mentions_user(content, &b.user_id))
            .map(Bot::user)
            .collect();
        let id = shapes::snowflake();
        let mut message = shapes::message(shapes::MessageParts {
            id: &id,
            channel_id,
            guild_id: channel.guild_id(),
            author: shapes::user(author_id, username, false),
            content,
            embeds: json!([]),
            components: json!([]),
            referenced,
            with_member: true,
            mentions: json!(mentions),
        });
        if let Some((file_name, content_type, bytes)) = file {
            let attachment_id = shapes::snowflake();
            let path = format!("{channel_id}/{attachment_id}/{file_name}");
            let url = format!("{}/attachments/{path}", self.base_url());
            message["attachments"] = json!([{
                "id": attachment_id,
                "filename": file_name,
                "size": bytes.len(),
                "url": url,
                "proxy_url": url,
                "content_type": content_type,
            }]);
            world
                .attachments
                .insert(path, (content_type.to_owned(), bytes));
        }
        world.remember_message(message.clone());
        drop(world);
        bump(&self.core().counters().updates_created, 1);
        self.publish_message("MESSAGE_CREATE", &message, &channel);
        Ok(id)
    }

    /// A user's message with one attached file, served like Discord's CDN at
    /// `{base_url}/attachments/{channel}/{attachment id}/{file name}`. Returns the message id.
    /// Panics if the channel is unknown.
    pub fn user_message_with_attachment(
        &self,
        channel_id: &str,
        author_id: &str,
        username: &str,
        content: &str,
        file: (&str, &str, Vec<u8>),
    ) -> String {
        self.post_user_message(channel_id, (author_id, username), content, None, Some(file))
            .unwrap_or_else(|e| panic!("user_message_with_attachment: {e}"))
    }

    /// A user edits their message: MESSAGE_UPDATE with the whole edited message. Panics if
    /// the message is unknown.
    pub fn user_edits(&self, channel_id: &str, message_id: &str, content: &str) {
        self.try_user_edits(channel_id, message_id, content)
            .unwrap_or_else(|e| panic!("user_edits: {e}"));
    }

    pub fn try_user_edits(
        &self,
        channel_id: &str,
        message_id: &str,
        content: &str,
    ) -> Result<(), DiscordSimError> {
        let mut world = self.world();
        let mut message = world
            .message(channel_id, message_id)
            .cloned()
            .ok_or_else(|| DiscordSimError::UnknownMessage(message_id.to_owned()))?;
        message["content"] = json!(content);
        message["edited_timestamp"] = json!(shapes::timestamp());
        world.remember_message(message.clone());
        let channel = world.channels.get(channel_id).cloned();
        drop(world);
        if let Some(channel) = channel {
            bump(&self.core().counters().updates_created, 1);
            self.publish_message("MESSAGE_UPDATE", &message, &channel);
        }
        Ok(())
    }

    /// A user presses a button of a bot's message: INTERACTION_CREATE (type 3) to that bot's
    /// sessions. Returns the interaction id; its token is in the dispatch. Panics if the
    /// message or its author bot is unknown.
    pub fn press_button(
        &self,
        channel_id: &str,
        user_id: &str,
        message_id: &str,
        custom_id: &str,
    ) -> String {
        self.try_press_button(channel_id, user_id, message_id, custom_id)
            .unwrap_or_else(|e| panic!("press_button: {e}"))
    }

    pub fn try_press_button(
        &self,
        channel_id: &str,
        user_id: &str,
        message_id: &str,
        custom_id: &str,
    ) -> Result<String, DiscordSimError> {
        let mut world = self.world();
        let message = world
            .message(channel_id, message_id)
            .cloned()
            .ok_or_else(|| DiscordSimError::UnknownMessage(message_id.to_owned()))?;
        let author = message["author"]["id"].as_str().unwrap_or_default();
        let (token, bot) = world
            .bot_by_user(author)
            .ok_or_else(|| DiscordSimError::NotABotMessage(message_id.to_owned()))?;
        let token = token.clone();
        let application_id = bot.user_id.clone();
        let guild_id = world.channels.get(channel_id).and_then(Channel::guild_id);
        let id = shapes::snowflake();
        let interaction_token = format!("aW50ZXJhY3Rpb24{}", shapes::opaque(60));
        let interaction = shapes::interaction(shapes::InteractionParts {
            id: &id,
            token: &interaction_token,
            application_id: &application_id,
            channel_id,
            guild_id,
            user: shapes::user(user_id, &format!("user{user_id}"), false),
            kind: 3,
            data: shapes::button_data(custom_id),
            message: Some(message),
        });
        world.interactions.insert(
            id.clone(),
            Interaction {
                token: interaction_token,
                channel_id: channel_id.to_owned(),
                acknowledged: false,
            },
        );
        let keep = self.config().resume_buffer;
        world.dispatch(&token, "INTERACTION_CREATE", keep, |_| {
            Some(interaction.clone())
        });
        drop(world);
        bump(&self.core().counters().updates_created, 1);
        Ok(id)
    }

    /// Sends a message event to every bot, shaped by each session's intents.
    pub(crate) fn publish_message(&self, event: &str, message: &Value, channel: &Channel) {
        let keep = self.config().resume_buffer;
        let mut world = self.world();
        let bots: Vec<(String, String)> = world
            .bots
            .iter()
            .filter(|(_, b)| !b.revoked)
            .map(|(t, b)| (t.clone(), b.user_id.clone()))
            .collect();
        let guild = channel.guild_id().is_some();
        let needed = if guild {
            intents::GUILD_MESSAGES
        } else {
            intents::DIRECT_MESSAGES
        };
        let author = message["author"]["id"].as_str().unwrap_or_default();
        let content = message["content"].as_str().unwrap_or_default();
        for (token, user_id) in bots {
            let sees_content = !guild || author == user_id || mentions_user(content, &user_id);
            world.dispatch(&token, event, keep, |session_intents| {
                if session_intents & needed == 0 {
                    return None;
                }
                let mut message = message.clone();
                if !sees_content && session_intents & intents::MESSAGE_CONTENT == 0 {
                    for key in ["embeds", "attachments", "components"] {
                        message[key] = json!([]);
                    }
                    message["content"] = json!("");
                }
                Some(message)
            });
        }
    }

    /// Messages the bot created through REST in the channel, in order.
    pub fn sent(&self, channel_id: &str) -> Vec<DcSent> {
        self.world()
            .sent
            .get(channel_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The framework counters; `responses_429` counts every 429.
    pub fn counters(&self) -> Counters {
        self.core().counters().snapshot()
    }

    /// Every REST request received, in arrival order (control API and gateway excluded).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.core().requests()
    }

    /// IDENTIFYs accepted for this token.
    pub fn identifies(&self, token: &str) -> u64 {
        self.world().bots.get(token).map_or(0, |b| b.identifies)
    }

    /// RESUMEs accepted for this token.
    pub fn resumes(&self, token: &str) -> u64 {
        self.world().bots.get(token).map_or(0, |b| b.resumes)
    }

    /// Replaces the injected REST faults.
    pub fn set_faults(&self, faults: Faults) {
        self.core().set_faults(faults);
    }

    pub fn faults(&self) -> Faults {
        self.core().faults()
    }

    /// Closes the TCP connections of the bot's sessions without a close frame; the sessions
    /// stay resumable.
    pub fn drop_socket(&self, token: &str) {
        self.world().command_sessions(token, || ConnCommand::Drop);
    }

    /// While on, heartbeats on the bot's connections get no ACK (a zombie connection).
    pub fn stop_acking_heartbeats(&self, token: &str, on: bool) {
        if let Some(bot) = self.world().bots.get_mut(token) {
            bot.ack_heartbeats = !on;
        }
    }

    /// Sends op 7 Reconnect on the bot's connections.
    pub fn send_reconnect(&self, token: &str) {
        let frame = json!({ "op": 7, "d": null, "s": null, "t": null }).to_string();
        self.world()
            .command_sessions(token, || ConnCommand::Frame(frame.clone()));
    }

    /// Sends op 9 Invalid Session; unless `resumable`, the sessions end.
    pub fn invalidate_session(&self, token: &str, resumable: bool) {
        let frame = json!({ "op": 9, "d": resumable, "s": null, "t": null }).to_string();
        let mut world = self.world();
        world.command_sessions(token, || ConnCommand::Frame(frame.clone()));
        if !resumable {
            world.command_sessions(token, || ConnCommand::Deauthenticate);
            world.end_sessions(token);
        }
    }

    /// Closes the bot's connections with `code`; the sessions end if the code does not allow
    /// resuming (4004, 4007, 4009, 4010-4014).
    pub fn close_with(&self, token: &str, code: u16) {
        let mut world = self.world();
        world.command_sessions(token, || ConnCommand::Close(code));
        if ends_session(code) {
            world.end_sessions(token);
        }
    }

    /// While on, every IDENTIFY is answered with op 9 `false`.
    pub fn refuse_identify(&self, on: bool) {
        self.world().refuse_identify = on;
    }

    /// Gateway sessions currently connected for the token.
    pub fn connected_sessions(&self, token: &str) -> usize {
        let world = self.world();
        world
            .sessions
            .values()
            .filter(|s| s.token == token && s.conn.is_some())
            .count()
    }
}

/// Whether `content` mentions the user (`<@id>` or `<@!id>`).
fn mentions_user(content: &str, user_id: &str) -> bool {
    content.contains(&format!("<@{user_id}>")) || content.contains(&format!("<@!{user_id}>"))
}
