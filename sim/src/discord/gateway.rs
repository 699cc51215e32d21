//! The gateway: one WebSocket task per connection, speaking Discord's JSON encoding.
//!
//! The task sends Hello, answers heartbeats with ACKs (unless a test made the connection a
//! zombie), turns IDENTIFY and RESUME into [`World`](super::state::World) calls, and writes
//! whatever the world queues on its channel: dispatches, op 7, op 9, close codes, or a socket
//! dropped without a close frame. It enforces Discord's limits on what a client sends:
//! payloads of at most 4096 bytes (else close 4002) and 120 events per 60 s (else 4008).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::DiscordSim;
use super::state::{Conn, ConnCommand, Refusal, ends_session};
use crate::framework::bump;

/// The largest payload a client may send.
const MAX_PAYLOAD: usize = 4096;
/// Client events allowed per [`EVENT_WINDOW`].
const EVENT_WINDOW: Duration = Duration::from_secs(60);

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// Accepts the WebSocket upgrade at any path (`/?v=10&encoding=json` as clients use).
pub(super) async fn upgrade(
    State(sim): State<DiscordSim>,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let refusal = match (query.get("v"), query.get("encoding")) {
        (Some(v), _) if v != "10" && v != "9" => Some(4012),
        (_, Some(encoding)) if encoding != "json" => Some(4002),
        _ => None,
    };
    ws.on_upgrade(move |socket| async move {
        match refusal {
            Some(code) => close(socket, code).await,
            None => Connection::new(sim).run(socket).await,
        }
    })
}

/// Discord's reason text for its close codes.
fn close_reason(code: u16) -> &'static str {
    match code {
        4000 => "Unknown error.",
        4001 => "Unknown opcode.",
        4002 => "Decode error.",
        4003 => "Not authenticated.",
        4004 => "Authentication failed.",
        4005 => "Already authenticated.",
        4007 => "Invalid seq.",
        4008 => "Rate limited.",
        4009 => "Session timed out.",
        4010 => "Invalid shard.",
        4011 => "Sharding required.",
        4012 => "Invalid API version.",
        4013 => "Invalid intent(s).",
        4014 => "Disallowed intent(s).",
        _ => "",
    }
}

async fn close(mut socket: WebSocket, code: u16) {
    let frame = CloseFrame {
        code,
        reason: close_reason(code).into(),
    };
    if let Err(error) = socket.send(Message::Close(Some(frame))).await {
        tracing::debug!(%error, "discord sim: close frame not sent");
    }
}

/// How a connection ended.
enum End {
    /// The client closed (with this code) or vanished.
    ClientGone(Option<u16>),
    /// The simulator closed with this code.
    Closed(u16),
    /// The simulator dropped the socket without a close frame.
    Dropped,
}

struct Connection {
    sim: DiscordSim,
    id: u64,
    tx: mpsc::UnboundedSender<ConnCommand>,
    rx: mpsc::UnboundedReceiver<ConnCommand>,
    /// `(token, session_id)` once identified or resumed.
    session: Option<(String, String)>,
    received: VecDeque<Instant>,
}

impl Connection {
    fn new(sim: DiscordSim) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Connection {
            sim,
            id: CONNECTION_IDS.fetch_add(1, Ordering::Relaxed),
            tx,
            rx,
            session: None,
            received: VecDeque::new(),
        }
    }

    fn conn(&self) -> Conn {
        Conn {
            id: self.id,
            tx: self.tx.clone(),
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        let interval = self.sim.config().heartbeat_interval.as_millis() as u64;
        let hello =
            json!({ "op": 10, "d": { "heartbeat_interval": interval }, "s": null, "t": null });
        let end = if socket
            .send(Message::Text(hello.to_string().into()))
            .await
            .is_err()
        {
            End::ClientGone(None)
        } else {
            self.serve(&mut socket).await
        };
        let (end_session, close_code) = match end {
            End::ClientGone(code) => (code.is_some_and(ends_session), None),
            End::Closed(code) => (ends_session(code), Some(code)),
            End::Dropped => (false, None),
        };
        if let Some(code) = close_code {
            close(socket, code).await;
        } else {
            drop(socket);
        }
        if let Some((_, session_id)) = &self.session {
            self.sim.world().detach(session_id, self.id, end_session);
        }
    }

    async fn serve(&mut self, socket: &mut WebSocket) -> End {
        loop {
            tokio::select! {
                received = socket.recv() => match received {
                    None | Some(Err(_)) => return End::ClientGone(None),
                    Some(Ok(Message::Close(frame))) => return End::ClientGone(frame.map(|f| f.code)),
                    Some(Ok(Message::Text(text))) => {
                        if let Some(end) = self.receive(text.as_str()) {
                            return end;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => return End::Closed(4002),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                },
                command = self.rx.recv() => match command {
                    Some(ConnCommand::Frame(frame)) => {
                        if socket.send(Message::Text(frame.into())).await.is_err() {
                            return End::ClientGone(None);
                        }
                        bump(&self.sim.core().counters().updates_delivered, 1);
                    }
                    Some(ConnCommand::Drop) => return End::Dropped,
                    Some(ConnCommand::Close(code)) => return End::Closed(code),
                    Some(ConnCommand::Deauthenticate) => self.session = None,
                    None => return End::Dropped,
                },
            }
        }
    }

    /// Handles one client payload; Some when the connection must end.
    fn receive(&mut self, text: &str) -> Option<End> {
        let now = Instant::now();
        self.received.push_back(now);
        while self
            .received
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= EVENT_WINDOW)
        {
            self.received.pop_front();
        }
        if self.received.len() > self.sim.config().events_per_minute as usize {
            return Some(End::Closed(4008));
        }
        if text.len() > MAX_PAYLOAD {
            return Some(End::Closed(4002));
        }
        let Ok(payload) = serde_json::from_str::<Value>(text) else {
            return Some(End::Closed(4002));
        };
        let d = &payload["d"];
        match payload["op"].as_u64() {
            Some(1) => {
                let ack = self.session.as_ref().is_none_or(|(token, _)| {
                    self.sim
                        .world()
                        .bots
                        .get(token)
                        .is_none_or(|b| b.ack_heartbeats)
                });
                if ack {
                    self.send(json!({ "op": 11, "d": null, "s": null, "t": null }));
                }
                None
            }
            Some(2) => self.identify(d),
            Some(6) => self.resume(d),
            Some(3 | 4 | 8 | 31) if self.session.is_none() => Some(End::Closed(4003)),
            Some(3 | 4 | 8 | 31) => None,
            Some(_) => Some(End::Closed(4001)),
            None => Some(End::Closed(4002)),
        }
    }

    fn send(&self, payload: Value) {
        // Our own receiver: cannot be closed while `self` exists.
        let _ignored = self.tx.send(ConnCommand::Frame(payload.to_string()));
    }

    fn invalid_session(&self) {
        self.send(json!({ "op": 9, "d": false, "s": null, "t": null }));
    }

    fn identify(&mut self, d: &Value) -> Option<End> {
        if self.session.is_some() {
            return Some(End::Closed(4005));
        }
        let (Some(token), Some(intents)) = (d["token"].as_str(), d["intents"].as_u64()) else {
            return Some(End::Closed(4002));
        };
        if intents >= 1 << 26 {
            return Some(End::Closed(4013));
        }
        let token = bare_token(token);
        let sim = self.sim.clone();
        let config = sim.config();
        let resume_url = sim.gateway_url();
        let identified = sim.world().identify(
            &token,
            intents,
            self.conn(),
            &resume_url,
            config.resume_buffer,
        );
        match identified {
            Ok(session_id) => {
                self.session = Some((token, session_id));
                None
            }
            Err(Refusal::BadToken) => Some(End::Closed(4004)),
            Err(Refusal::InvalidSeq) => Some(End::Closed(4007)),
            Err(Refusal::InvalidSession) => {
                self.invalid_session();
                None
            }
        }
    }

    fn resume(&mut self, d: &Value) -> Option<End> {
        if self.session.is_some() {
            return Some(End::Closed(4005));
        }
        let (Some(token), Some(session_id)) = (d["token"].as_str(), d["session_id"].as_str())
        else {
            return Some(End::Closed(4002));
        };
        let seq = d["seq"].as_u64().unwrap_or(0);
        let token = bare_token(token);
        let sim = self.sim.clone();
        let resumed = sim.world().resume(
            &token,
            session_id,
            seq,
            self.conn(),
            sim.config().resume_buffer,
        );
        match resumed {
            Ok(()) => {
                self.session = Some((token, session_id.to_owned()));
                None
            }
            Err(Refusal::BadToken) => Some(End::Closed(4004)),
            Err(Refusal::InvalidSeq) => Some(End::Closed(4007)),
            Err(Refusal::InvalidSession) => {
                self.invalid_session();
                None
            }
        }
    }
}

/// The token without the optional `Bot ` prefix clients may send.
fn bare_token(token: &str) -> String {
    token.strip_prefix("Bot ").unwrap_or(token).to_owned()
}
