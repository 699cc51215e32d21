//! The WebSocket feed: `GET /v1/feed?since=&types=&bot=`.
//!
//! The connection subscribes to live events *before* reading the replay from the store, so
//! an event committed during the replay is either in the replay or in the live buffer; the
//! live loop skips every seq already sent. Hence no gap and no duplicate at the seam. A client
//! whose live buffer overflowed, or whose socket does not take a frame within the send
//! timeout, gets `feed.lagged` (with the last seq it received) and is closed; it resumes with
//! `since`. Other clients are never slowed: the store publishes into a broadcast channel that
//! never waits for a subscriber. While events keep coming, a client gets at most one write
//! per write gap (5 ms by default), holding every event that arrived meanwhile.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use switchboard_core::model::{Event, event_type};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use crate::auth::Caller;
use crate::extract::ApiQuery;
use crate::routes::events::{parse_since, parse_types};
use crate::{ApiError, ApiState};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct FeedQuery {
    /// Replay every stored event after this seq first, then go live.
    pub since: Option<String>,
    /// Comma-separated event types.
    pub types: Option<String>,
    pub bot: Option<String>,
    /// For browsers, instead of the Authorization header.
    pub access_token: Option<String>,
}

const REPLAY_PAGE: u32 = 1000;
/// At most this many frames go out in one write (and one flush). With the write gap
/// (`FeedSettings::write_gap`, 5 ms by default) that allows 51,200 frames a second per client.
const WRITE_BATCH: usize = 256;
/// What a client may send (pongs, a close with its reason) and the buffer its reads go into.
const CLIENT_MAX_MESSAGE: usize = 16 << 10;
const CLIENT_READ_BUFFER: usize = 4 << 10;
/// How long the last frames (`feed.lagged`, close) may wait for a slow socket.
const GOODBYE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Upgrades to the event feed WebSocket.
#[utoipa::path(get, path = "/v1/feed", tag = "events", params(FeedQuery),
    responses((status = 101, description = "WebSocket: one event JSON object per text frame")), security(("bearer" = [])))]
pub async fn feed(
    State(s): State<ApiState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<FeedQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant()?.to_string();
    let since = match q.since.as_deref().filter(|s| !s.is_empty()) {
        Some(v) => Some(parse_since(Some(v))?),
        None => None,
    };
    let filter = Filter {
        types: parse_types(q.types.as_deref())?,
        bot: q.bot.filter(|b| !b.is_empty()),
    };
    // Subscribe before the replay is read: see the module docs.
    let live = s.store.subscribe();
    // A client only sends pongs and its close: small reads, and no 64 MiB message (the
    // library's default) held for it. The write buffer holds one batch of frames.
    let ws = ws
        .read_buffer_size(CLIENT_READ_BUFFER)
        .max_message_size(CLIENT_MAX_MESSAGE)
        .max_frame_size(CLIENT_MAX_MESSAGE);
    Ok(ws.on_upgrade(move |socket| async move {
        metrics::gauge!(switchboard_core::metrics::FEED_CLIENTS).increment(1.0);
        let outcome = serve(socket, &s, &tenant, since, &filter, live).await;
        metrics::gauge!(switchboard_core::metrics::FEED_CLIENTS).decrement(1.0);
        if let Err(e) = outcome {
            tracing::debug!(tenant, error = %e, "feed connection ended");
        }
    }))
}

struct Filter {
    types: Option<Vec<String>>,
    bot: Option<String>,
}

impl Filter {
    fn matches(&self, e: &Event) -> bool {
        self.types.as_ref().is_none_or(|t| t.contains(&e.kind))
            && self
                .bot
                .as_ref()
                .is_none_or(|b| e.bot_id.as_deref() == Some(b.as_str()))
    }
}

#[derive(Debug)]
enum End {
    ClientGone,
    Lagged,
    ShuttingDown,
    Store(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::ClientGone => f.write_str("client went away"),
            End::Lagged => f.write_str("client lagged"),
            End::ShuttingDown => f.write_str("gateway shutting down"),
            End::Store(e) => write!(f, "store: {e}"),
        }
    }
}

async fn serve(
    socket: WebSocket,
    s: &ApiState,
    tenant: &str,
    since: Option<i64>,
    filter: &Filter,
    mut live: tokio::sync::broadcast::Receiver<Arc<Event>>,
) -> Result<(), End> {
    let (mut tx, mut rx) = socket.split();
    let gone = CancellationToken::new();
    let reader = {
        let gone = gone.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = rx.next().await {
                if matches!(m, WsMessage::Close(_)) {
                    break;
                }
            }
            gone.cancel();
        })
    };
    let timeout = s.feed.send_timeout;
    let mut last = 0i64;
    let result = async {
        if let Some(since) = since {
            last = since;
            loop {
                let page = s
                    .store
                    .list_events(tenant, last, filter.types.as_deref(), filter.bot.as_deref(), REPLAY_PAGE)
                    .await
                    .map_err(|e| End::Store(e.to_string()))?;
                let n = page.len();
                for chunk in page.chunks(WRITE_BATCH) {
                    send(&mut tx, chunk.iter().map(frame).collect(), timeout, &gone).await?;
                    last = chunk.last().map_or(last, |e| e.seq);
                }
                if n < REPLAY_PAGE as usize {
                    break;
                }
            }
        }
        let mut ping = tokio::time::interval(s.feed.ping_interval);
        ping.tick().await;
        let mut wrote_at: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                r = live.recv() => match r {
                    Ok(e) => {
                        // Soon after a write, wait out the gap: the events arriving meanwhile
                        // share the next write. One write and one wake-up per event to each
                        // of a thousand clients cost more CPU than the events themselves.
                        if let Some(at) = wrote_at {
                            let due = at + s.feed.write_gap;
                            if due > tokio::time::Instant::now() {
                                tokio::time::sleep_until(due).await;
                            }
                        }
                        // Whatever else is already waiting goes out in the same write.
                        let mut frames = Vec::new();
                        let mut next = Some(e);
                        let mut closed = false;
                        while let Some(e) = next.take() {
                            if e.tenant == tenant && e.seq > last {
                                if filter.matches(&e) {
                                    frames.push(frame(&e));
                                }
                                last = e.seq;
                            }
                            if frames.len() >= WRITE_BATCH {
                                break;
                            }
                            next = match live.try_recv() {
                                Ok(e) => Some(e),
                                Err(TryRecvError::Empty) => None,
                                Err(TryRecvError::Lagged(_)) => return Err(End::Lagged),
                                Err(TryRecvError::Closed) => {
                                    closed = true;
                                    None
                                }
                            };
                        }
                        if !frames.is_empty() {
                            send(&mut tx, frames, timeout, &gone).await?;
                            wrote_at = Some(tokio::time::Instant::now());
                        }
                        if closed {
                            return Ok(());
                        }
                    }
                    Err(RecvError::Lagged(_)) => return Err(End::Lagged),
                    Err(RecvError::Closed) => return Ok(()),
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(timeout, tx.send(WsMessage::Ping(Default::default()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Err(End::ClientGone),
                        Err(_) => return Err(End::Lagged),
                    }
                }
                _ = gone.cancelled() => return Err(End::ClientGone),
                _ = s.closing.cancelled() => return Err(End::ShuttingDown),
            }
        }
    }
    .await;
    if let Err(End::Lagged) = &result {
        metrics::counter!(switchboard_core::metrics::FEED_LAGGED).increment(1);
        let lagged = serde_json::json!({
            "seq": last,
            "type": event_type::FEED_LAGGED,
            "tenant": tenant,
            "at": chrono::Utc::now(),
            "data": {"last_seq": last, "reason": "the client fell too far behind; reconnect with since=last_seq"},
        });
        // The socket may be full: give the notice time to get through once the client reads.
        let short = GOODBYE_TIMEOUT;
        let _ = tokio::time::timeout(
            short,
            tx.send(WsMessage::Text(Utf8Bytes::from(lagged.to_string()))),
        )
        .await;
        let _ = tokio::time::timeout(
            short,
            tx.send(WsMessage::Close(Some(CloseFrame {
                code: 4008,
                reason: Utf8Bytes::from_static("feed.lagged"),
            }))),
        )
        .await;
    } else if let Err(End::ShuttingDown) = &result {
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            tx.send(WsMessage::Close(Some(CloseFrame {
                code: 1001,
                reason: Utf8Bytes::from_static("gateway shutting down"),
            }))),
        )
        .await;
    } else if result.is_ok() {
        let _ = tx.send(WsMessage::Close(None)).await;
    }
    reader.abort();
    result
}

/// An event as a text frame: the event's JSON, serialized once for all clients.
fn frame(e: &Event) -> Utf8Bytes {
    Utf8Bytes::try_from(e.json_bytes()).expect("serde_json writes UTF-8")
}

/// Writes `frames` and flushes once, within the send timeout.
async fn send(
    tx: &mut futures::stream::SplitSink<WebSocket, WsMessage>,
    frames: Vec<Utf8Bytes>,
    timeout: std::time::Duration,
    gone: &CancellationToken,
) -> Result<(), End> {
    let write = async {
        for f in frames {
            tx.feed(WsMessage::Text(f)).await?;
        }
        tx.flush().await
    };
    tokio::select! {
        r = tokio::time::timeout(timeout, write) => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::ClientGone),
            Err(_) => Err(End::Lagged),
        },
        _ = gone.cancelled() => Err(End::ClientGone),
    }
}
