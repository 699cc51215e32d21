//! The gateway session of one bot: twilight's shard, fed to the inbound sink.
//!
//! twilight-gateway does the protocol: Hello, heartbeats (the first jittered), zombie
//! detection (no ACK before the next beat: reconnect and resume), RESUME to READY's
//! `resume_gateway_url` after a drop, op 7 or a resumable op 9, and IDENTIFY only when the
//! session is gone, through the bot's identify queue. This loop reads the raw dispatches,
//! stores what they carry, and only then moves the bot's saved session (id, sequence, resume
//! URL) forward. That saved session is what a new run resumes from, so an event received but
//! not stored (the store failed, the process died) is replayed by Discord, and one stored
//! twice is deduplicated by its message id: none is lost or doubled across a resume.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_core::connector::RunContext;
use switchboard_core::error::ConnectorError;
use twilight_gateway::{CloseFrame, ConfigBuilder, Intents, Message, Shard, ShardId};

use super::{DiscordConnector, inbound, interactions};

/// The cursor holding the saved session.
pub(crate) const SESSION_CURSOR: &str = "discord.session";
/// How often the saved session is written while events flow (and always at the end).
const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// A gateway session to resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedSession {
    pub session_id: String,
    pub sequence: u64,
    pub resume_url: Option<String>,
    /// The bot's own user id, from READY (a resumed session gets no READY).
    #[serde(default)]
    pub user_id: Option<String>,
}

/// A dispatch frame, with `d` left raw.
#[derive(Deserialize)]
struct Frame {
    op: u8,
    #[serde(default)]
    t: Option<String>,
    #[serde(default)]
    d: Value,
}

/// What a close code means for the bot: `Some` ends the run for good.
fn fatal_close(code: u16) -> Option<ConnectorError> {
    let why = match code {
        4004 => {
            return Some(ConnectorError::auth(
                "Discord closed the gateway with 4004: authentication failed (the token is invalid or was reset)",
            ));
        }
        4010 => "4010 invalid shard",
        4011 => "4011 sharding required (the bot is in too many guilds for one shard)",
        4012 => "4012 invalid API version",
        4013 => "4013 invalid intents",
        4014 => {
            "4014 disallowed intents: enable the privileged intents (Message Content) in the developer portal, or remove them from `intents`"
        }
        _ => return None,
    };
    Some(ConnectorError::Config(format!(
        "Discord closed the gateway with {why}"
    )))
}

impl DiscordConnector {
    fn saved_session(&self) -> Option<SavedSession> {
        self.session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn save_session(&self, session: Option<SavedSession>) {
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = session;
    }

    /// The session's events up to its sequence are stored: move the saved point there
    /// (allocating only when the session itself changed).
    fn advance_session(&self, session: &twilight_gateway::Session, resume_url: Option<&str>) {
        let mut saved = self.session.lock().unwrap_or_else(|e| e.into_inner());
        match saved.as_mut() {
            Some(s) if s.session_id == session.id() && s.resume_url.as_deref() == resume_url => {
                s.sequence = session.sequence();
            }
            _ => {
                *saved = Some(SavedSession {
                    session_id: session.id().to_owned(),
                    sequence: session.sequence(),
                    resume_url: resume_url.map(str::to_owned),
                    user_id: self.known_user_id(),
                });
            }
        }
    }

    async fn persist_session(&self, ctx: &RunContext) {
        let value = match self.saved_session() {
            Some(s) => serde_json::to_string(&s).unwrap_or_default(),
            None => String::new(),
        };
        if let Err(e) = ctx.cursors.set(&self.bot_id, SESSION_CURSOR, &value).await {
            tracing::warn!(bot = %self.bot_id, error = %e, "cannot persist the Discord session; a restart will identify anew");
        }
    }

    /// The gateway URL and the identify allowance, from `GET /gateway/bot`.
    async fn prepare_identify(&self) -> Result<String, ConnectorError> {
        let info = self.rest.gateway_bot().await?;
        let url = info["url"]
            .as_str()
            .ok_or_else(|| ConnectorError::transient("GET /gateway/bot answered without a url"))?
            .trim_end_matches('/')
            .to_owned();
        let limit = &info["session_start_limit"];
        if let (Some(total), Some(remaining), Some(reset_after)) = (
            limit["total"].as_u64(),
            limit["remaining"].as_u64(),
            limit["reset_after"].as_u64(),
        ) {
            let concurrency = limit["max_concurrency"].as_u64().unwrap_or(1).max(1);
            // twilight asserts remaining <= total.
            self.queue.update(
                concurrency.min(u16::MAX as u64) as u16,
                remaining.min(total).min(u32::MAX as u64) as u32,
                Duration::from_millis(reset_after),
                total.min(u32::MAX as u64) as u32,
            );
            if remaining == 0 {
                tracing::warn!(bot = %self.bot_id, reset_after_ms = reset_after, "no Discord session starts left today; identifying waits for the reset");
            }
        }
        Ok(url)
    }
}

pub(crate) async fn run(
    connector: &DiscordConnector,
    ctx: RunContext,
) -> Result<(), ConnectorError> {
    let url = tokio::select! {
        r = connector.prepare_identify() => r?,
        _ = ctx.cancel.cancelled() => return Ok(()),
    };
    if connector.saved_session().is_none()
        && let Ok(Some(raw)) = ctx.cursors.get(&connector.bot_id, SESSION_CURSOR).await
        && let Ok(saved) = serde_json::from_str::<SavedSession>(&raw)
    {
        if let Some(id) = &saved.user_id {
            connector.set_user_id(id);
        }
        connector.save_session(Some(saved));
    }
    // The bot's own user id skips its own messages. READY names it; a session resumed from
    // a save made before the id was saved gets no READY, so it is asked for (best effort).
    if connector.known_user_id().is_none() && connector.saved_session().is_some() {
        match connector.rest.current_user().await {
            Ok(user) => {
                if let Some(id) = user["id"].as_str() {
                    connector.set_user_id(id);
                }
            }
            Err(e) => {
                tracing::warn!(bot = %connector.bot_id, error = %e, "Discord: the bot's own user id is unknown until the next READY");
            }
        }
    }
    let mut config = ConfigBuilder::new(
        connector.token.expose().to_owned(),
        Intents::from_bits_truncate(connector.settings.intents),
    )
    .proxy_url(url)
    .queue(connector.queue.clone());
    if let Some(saved) = connector.saved_session() {
        config = config.session(twilight_gateway::Session::new(
            saved.sequence,
            saved.session_id.clone(),
        ));
        if let Some(resume) = saved.resume_url {
            config = config.resume_url(resume);
        }
    }
    // Read once here and kept in step with READY: not a lock and a copy per event.
    let mut own = connector.known_user_id();
    let mut shard = Shard::with_config(ShardId::ONE, config.build());
    let mut last_persist = Instant::now();
    let result = loop {
        let message = tokio::select! {
            m = shard.next() => m,
            _ = ctx.cancel.cancelled() => break Ok(()),
        };
        let message = match message {
            None => break Err(ConnectorError::transient("the gateway session ended")),
            Some(Err(e)) => {
                tracing::warn!(bot = %connector.bot_id, error = %e, "Discord gateway");
                ctx.health.degraded(&format!("gateway: {e}"));
                continue;
            }
            Some(Ok(m)) => m,
        };
        let text = match message {
            Message::Close(frame) => {
                let code = frame.as_ref().map(|f| f.code);
                if let Some(fatal) = code.and_then(fatal_close) {
                    connector.save_session(None);
                    break Err(fatal);
                }
                tracing::info!(bot = %connector.bot_id, ?code, "Discord gateway connection closed; reconnecting");
                ctx.health.degraded("gateway connection lost; resuming");
                continue;
            }
            Message::Text(text) => text,
        };
        let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
            continue;
        };
        if frame.op != 0 {
            continue;
        }
        if frame.t.as_deref() == Some("READY")
            && let Some(id) = frame.d["user"]["id"].as_str()
        {
            connector.set_user_id(id);
            own = Some(id.to_owned());
        }
        let event = match frame.t.as_deref() {
            Some("READY") | Some("RESUMED") => {
                ctx.health.running();
                None
            }
            Some("MESSAGE_CREATE") => inbound::message_create(&frame.d, own.as_deref()),
            Some("MESSAGE_UPDATE") => inbound::message_update(&frame.d, own.as_deref()),
            Some("INTERACTION_CREATE") => inbound::interaction(&frame.d),
            _ => None,
        };
        if let Some(event) = event {
            // Not cancellable: an event received is stored before the loop may stop.
            if let Err(e) = ctx.inbound.deliver(&connector.bot_id, vec![event]).await {
                break Err(ConnectorError::transient(format!(
                    "cannot store a Discord event (it will be replayed on resume): {e}"
                )));
            }
            if frame.t.as_deref() == Some("INTERACTION_CREATE") {
                // Not awaited here: the session must keep being polled (heartbeats).
                tokio::spawn(interactions::acknowledge(
                    connector.bot_id.clone(),
                    connector.rest.clone(),
                    connector.settings.command_ack.clone(),
                    frame.d,
                ));
            }
        }
        if let Some(session) = shard.session() {
            connector.advance_session(session, shard.resume_url());
            if last_persist.elapsed() >= PERSIST_EVERY {
                last_persist = Instant::now();
                connector.persist_session(&ctx).await;
            }
        }
    };
    connector.persist_session(&ctx).await;
    if result.is_ok() {
        // Keep the session resumable for the next run.
        shard.close(CloseFrame::RESUME);
    }
    result
}
