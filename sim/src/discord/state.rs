//! The simulated Discord's world: bots and their credentials, guilds and channels, the
//! messages posted, the interactions awaiting a callback, and the gateway sessions with their
//! sequence numbers and the dispatches kept for resuming.
//!
//! Everything here is synchronous and runs under the simulator's one lock. A gateway
//! connection task owns its socket; the world reaches it through its [`Conn`] channel, so a
//! dispatch is numbered, buffered and queued for the socket in one step and resumes replay
//! exactly what a session missed, in order.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use super::DcSent;
use super::shapes;

/// Messages remembered for replies and button presses (the oldest are forgotten first).
const MESSAGE_MEMORY: usize = 100_000;

/// Close codes after which Discord does not let the session resume.
pub(crate) fn ends_session(code: u16) -> bool {
    matches!(code, 1000 | 1001 | 4004 | 4007 | 4009 | 4010..=4014)
}

/// What the world asks a gateway connection task to do.
#[derive(Debug)]
pub(crate) enum ConnCommand {
    /// Write this text frame.
    Frame(String),
    /// Close the TCP connection without a close frame.
    Drop,
    /// Send a close frame with this code, then close.
    Close(u16),
    /// The session was invalidated: the connection is no longer identified.
    Deauthenticate,
}

/// A live gateway connection, as the world sees it.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    pub id: u64,
    pub tx: UnboundedSender<ConnCommand>,
}

impl Conn {
    pub fn send(&self, command: ConnCommand) {
        // A closed channel means the task already ended; it detaches itself.
        let _ignored = self.tx.send(command);
    }
}

#[derive(Debug)]
pub(crate) struct Bot {
    pub user_id: String,
    pub username: String,
    pub revoked: bool,
    pub identifies: u64,
    pub resumes: u64,
    pub ack_heartbeats: bool,
    /// When each IDENTIFY of the last 24 h happened (session_start_limit).
    pub session_starts: VecDeque<Instant>,
    /// The application's key: HTTP interactions are signed with it.
    pub signing_key: ed25519_dalek::SigningKey,
    /// The application's Interactions Endpoint URL.
    pub interactions_url: Option<String>,
}

impl Bot {
    pub fn user(&self) -> Value {
        shapes::user(&self.user_id, &self.username, true)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChannelKind {
    Guild(String),
    Dm(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Channel {
    pub name: String,
    pub kind: ChannelKind,
}

impl Channel {
    pub fn guild_id(&self) -> Option<&str> {
        match &self.kind {
            ChannelKind::Guild(id) => Some(id),
            ChannelKind::Dm(_) => None,
        }
    }
}

/// A gateway session: survives its connection while it can be resumed.
#[derive(Debug)]
pub(crate) struct Session {
    pub token: String,
    pub intents: u64,
    /// The last sequence number dispatched.
    pub seq: u64,
    /// The latest dispatches, `(seq, frame)`, for resumes.
    pub buffer: VecDeque<(u64, String)>,
    pub conn: Option<Conn>,
    pub disconnected_at: Option<Instant>,
}

impl Session {
    /// Numbers, keeps and (if connected) sends one dispatch.
    fn dispatch(&mut self, event: &str, d: Value, keep: usize) -> bool {
        self.seq += 1;
        // Discord writes `t`, `s` and `op` before `d`; clients (twilight) scan for them.
        let frame = format!(
            r#"{{"t":{},"s":{},"op":0,"d":{}}}"#,
            Value::from(event),
            self.seq,
            d
        );
        if let Some(conn) = &self.conn {
            conn.send(ConnCommand::Frame(frame.clone()));
        }
        self.buffer.push_back((self.seq, frame));
        while self.buffer.len() > keep.max(1) {
            self.buffer.pop_front();
        }
        self.conn.is_some()
    }

    /// The dispatches after `seq`, or None if some were already forgotten.
    fn missed_since(&self, seq: u64) -> Option<Vec<String>> {
        let first_kept = self.buffer.front().map_or(self.seq + 1, |(s, _)| *s);
        if seq + 1 < first_kept {
            return None;
        }
        Some(
            self.buffer
                .iter()
                .filter(|(s, _)| *s > seq)
                .map(|(_, f)| f.clone())
                .collect(),
        )
    }
}

/// Why an IDENTIFY or RESUME was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Close 4004.
    BadToken,
    /// Op 9 with `d: false`.
    InvalidSession,
    /// Close 4007: resuming from a sequence number the session never reached.
    InvalidSeq,
}

#[derive(Debug)]
pub(crate) struct Interaction {
    pub token: String,
    pub channel_id: String,
    pub acknowledged: bool,
}

#[derive(Debug, Default)]
pub(crate) struct World {
    /// Token → bot.
    pub bots: HashMap<String, Bot>,
    pub channels: HashMap<String, Channel>,
    /// Guild ids in the order they were first seen, with their channels `(id, name)`.
    pub guilds: Vec<(String, Vec<(String, String)>)>,
    pub sessions: HashMap<String, Session>,
    messages: HashMap<String, Value>,
    message_order: VecDeque<String>,
    pub sent: HashMap<String, Vec<DcSent>>,
    pub interactions: HashMap<String, Interaction>,
    pub refuse_identify: bool,
    /// Files users attached, by their CDN path `{channel}/{attachment id}/{file name}`:
    /// content type and bytes.
    pub attachments: HashMap<String, (String, Vec<u8>)>,
}

impl World {
    /// The bot a valid, unrevoked token belongs to.
    pub fn bot(&self, token: &str) -> Option<&Bot> {
        self.bots.get(token).filter(|b| !b.revoked)
    }

    pub fn bot_by_user(&self, user_id: &str) -> Option<(&String, &Bot)> {
        self.bots.iter().find(|(_, b)| b.user_id == user_id)
    }

    pub fn add_channel(&mut self, id: &str, name: &str, kind: ChannelKind) {
        if let ChannelKind::Guild(guild_id) = &kind {
            let index = match self.guilds.iter().position(|(g, _)| g == guild_id) {
                Some(index) => index,
                None => {
                    self.guilds.push((guild_id.clone(), Vec::new()));
                    self.guilds.len() - 1
                }
            };
            let channels = &mut self.guilds[index].1;
            channels.retain(|(c, _)| c != id);
            channels.push((id.to_owned(), name.to_owned()));
        }
        let channel = Channel {
            name: name.to_owned(),
            kind,
        };
        self.channels.insert(id.to_owned(), channel);
    }

    pub fn remember_message(&mut self, message: Value) {
        let Some(id) = message["id"].as_str().map(str::to_owned) else {
            return;
        };
        if self.messages.insert(id.clone(), message).is_none() {
            self.message_order.push_back(id);
        }
        while self.message_order.len() > MESSAGE_MEMORY {
            if let Some(old) = self.message_order.pop_front() {
                self.messages.remove(&old);
            }
        }
    }

    /// A message posted in `channel_id`.
    pub fn message(&self, channel_id: &str, id: &str) -> Option<&Value> {
        self.messages
            .get(id)
            .filter(|m| m["channel_id"].as_str() == Some(channel_id))
    }

    /// Forgets sessions disconnected for longer than `timeout`.
    pub fn expire_sessions(&mut self, timeout: Duration, now: Instant) {
        self.sessions.retain(|_, s| {
            s.disconnected_at
                .is_none_or(|at| now.saturating_duration_since(at) < timeout)
        });
    }

    /// Dispatches an event to each of the bot's sessions; `shape` gives the payload for a
    /// session's intents, or None when the intents do not subscribe to it. Returns how many
    /// connected sessions it was sent to.
    pub fn dispatch(
        &mut self,
        token: &str,
        event: &str,
        keep: usize,
        shape: impl Fn(u64) -> Option<Value>,
    ) -> u64 {
        let mut delivered = 0;
        for session in self.sessions.values_mut().filter(|s| s.token == token) {
            if let Some(d) = shape(session.intents)
                && session.dispatch(event, d, keep)
            {
                delivered += 1;
            }
        }
        delivered
    }

    /// Starts a session for an IDENTIFY on connection `conn`: READY then GUILD_CREATEs.
    /// Returns the session id.
    pub fn identify(
        &mut self,
        token: &str,
        intents: u64,
        conn: Conn,
        resume_url: &str,
        keep: usize,
    ) -> Result<String, Refusal> {
        let refuse = self.refuse_identify;
        let guilds = self.guilds.clone();
        let bot = self
            .bots
            .get_mut(token)
            .filter(|b| !b.revoked)
            .ok_or(Refusal::BadToken)?;
        if refuse {
            return Err(Refusal::InvalidSession);
        }
        bot.identifies += 1;
        bot.session_starts.push_back(Instant::now());
        let user = shapes::current_user(&bot.user_id, &bot.username);
        let session_id = shapes::opaque(32);
        let guild_ids: Vec<String> = guilds.iter().map(|(g, _)| g.clone()).collect();
        let ready = shapes::ready(
            user.clone(),
            &bot.user_id,
            &guild_ids,
            &session_id,
            resume_url,
        );
        let mut session = Session {
            token: token.to_owned(),
            intents,
            seq: 0,
            buffer: VecDeque::new(),
            conn: Some(conn),
            disconnected_at: None,
        };
        session.dispatch("READY", ready, keep);
        for (guild_id, channels) in &guilds {
            let guild = shapes::guild_create(guild_id, channels, &user);
            session.dispatch("GUILD_CREATE", guild, keep);
        }
        self.sessions.insert(session_id.clone(), session);
        Ok(session_id)
    }

    /// Resumes `session_id` on connection `conn`: replays what it missed after `seq`, then
    /// RESUMED. A connection still attached to the session is dropped.
    pub fn resume(
        &mut self,
        token: &str,
        session_id: &str,
        seq: u64,
        conn: Conn,
        keep: usize,
    ) -> Result<(), Refusal> {
        if self.bot(token).is_none() {
            return Err(Refusal::BadToken);
        }
        let session = self
            .sessions
            .get_mut(session_id)
            .filter(|s| s.token == token)
            .ok_or(Refusal::InvalidSession)?;
        if seq > session.seq {
            return Err(Refusal::InvalidSeq);
        }
        let missed = session.missed_since(seq).ok_or(Refusal::InvalidSession)?;
        if let Some(old) = session.conn.take() {
            old.send(ConnCommand::Drop);
        }
        for frame in missed {
            conn.send(ConnCommand::Frame(frame));
        }
        session.conn = Some(conn);
        session.disconnected_at = None;
        session.dispatch(
            "RESUMED",
            json!({ "_trace": ["[\"switchboard-sim\"]"] }),
            keep,
        );
        if let Some(bot) = self.bots.get_mut(token) {
            bot.resumes += 1;
        }
        Ok(())
    }

    /// The connection `conn_id` of `session_id` ended; the session stays resumable unless
    /// `end_session`.
    pub fn detach(&mut self, session_id: &str, conn_id: u64, end_session: bool) {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        if session.conn.as_ref().is_some_and(|c| c.id == conn_id) {
            session.conn = None;
            session.disconnected_at = Some(Instant::now());
            if end_session {
                self.sessions.remove(session_id);
            }
        }
    }

    /// Applies `command` to the connections of the bot's connected sessions.
    pub fn command_sessions(&self, token: &str, command: impl Fn() -> ConnCommand) {
        for session in self.sessions.values().filter(|s| s.token == token) {
            if let Some(conn) = &session.conn {
                conn.send(command());
            }
        }
    }

    /// Ends the bot's sessions (after a close that does not allow resuming).
    pub fn end_sessions(&mut self, token: &str) {
        self.sessions.retain(|_, s| s.token != token);
    }
}
