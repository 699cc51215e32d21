//! Serving a simulated platform over loopback TCP, with recording and faults as one layer.
//!
//! [`serve`] runs its own accept loop (HTTP/1.1 through hyper) instead of `axum::serve` so that
//! each connection carries a [`ConnectionHandle`]: the `drop_rate` fault cancels it, the
//! connection future is dropped and the socket closes without an answer, which is what a
//! client sees when a platform's front end dies mid-request.
//! Connections allow HTTP upgrades, so a platform can serve WebSockets (Discord's gateway) on
//! the same port; an upgraded socket belongs to its handler, which closes it itself.
//!
//! [`gate`] is the middleware every platform router wears: it records each request in the
//! [`SimCore`] log, counts its status, and applies the current [`Faults`](super::Faults) to the
//! requests the platform's labeller marks as API calls.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{FaultOutcome, SimCore, bump};

/// How long a request hit by the `timeout_rate` fault waits before it is finally answered.
const HANG: Duration = Duration::from_secs(3600);

/// Lets a handler close the TCP connection its request arrived on.
#[derive(Debug, Clone)]
pub struct ConnectionHandle(CancellationToken);

impl ConnectionHandle {
    /// Closes the connection at once; nothing more is written to it.
    pub fn abort(&self) {
        self.0.cancel();
    }
}

/// Serves `router` on `listener` (in a background task) until `shutdown` is cancelled.
/// Binds `addr` and returns the listener with the address clients should use (an
/// unspecified bind address is reported as 127.0.0.1).
pub async fn bind(
    addr: std::net::SocketAddr,
) -> anyhow::Result<(TcpListener, std::net::SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let mut addr = listener.local_addr()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok((listener, addr))
}

pub fn serve_listener(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    tokio::spawn(accept_loop(listener, router, shutdown));
}

async fn accept_loop(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                tracing::warn!(%error, "simulator: accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "simulator: cannot set TCP_NODELAY");
        }
        let connection = shutdown.child_token();
        let router = router.clone();
        tokio::spawn(async move {
            let handle = ConnectionHandle(connection.clone());
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(handle.clone());
                let response = router.clone().oneshot(request.map(Body::new));
                async move { Ok::<_, Infallible>(response.await.unwrap_or_else(|e| match e {})) }
            });
            let serving = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                result = serving => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "simulator: connection ended with an error");
                    }
                }
                () = connection.cancelled() => {}
            }
        });
    }
}

/// How a platform names a request in the log, and whether faults apply to it.
#[derive(Debug, Clone)]
pub struct RequestLabel {
    /// The path with credentials redacted.
    pub path: String,
    pub api_method: Option<String>,
    pub faults_apply: bool,
}

/// State of the [`gate`] middleware for one platform.
#[derive(Clone)]
pub struct Gate {
    pub core: Arc<SimCore>,
    /// Names a request; must not log secrets.
    pub label: fn(&Uri) -> RequestLabel,
    /// The platform's answer for an injected 5xx.
    pub server_error: fn(u16) -> Response,
}

/// Records the request, applies faults when its label says so, then runs the handler.
pub async fn gate(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let label = (gate.label)(request.uri());
    let core = &gate.core;
    let seq = core.begin_request(request.method().as_str(), label.path, label.api_method);
    if label.faults_apply {
        let connection = request.extensions().get::<ConnectionHandle>().cloned();
        let faults = core.faults();
        if !faults.latency.is_zero() {
            tokio::time::sleep(faults.latency).await;
        }
        match faults.roll() {
            FaultOutcome::Proceed => {}
            FaultOutcome::DropConnection => {
                bump(&core.counters().dropped_connections, 1);
                return drop_connection(connection).await;
            }
            FaultOutcome::NeverAnswer => {
                bump(&core.counters().hung_requests, 1);
                let closed = async {
                    match connection {
                        Some(c) => c.0.cancelled().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(HANG) => {}
                    () = closed => {}
                }
                return (gate.server_error)(504);
            }
            FaultOutcome::ServerError(status) => {
                core.finish_request(seq, status);
                return (gate.server_error)(status);
            }
        }
    }
    let response = next.run(request).await;
    core.finish_request(seq, response.status().as_u16());
    response
}

/// Closes the request's connection without answering. Without a [`ConnectionHandle`] (router
/// served by something other than [`serve_listener`]), answers a body that fails at once, which makes
/// hyper reset the connection.
async fn drop_connection(connection: Option<ConnectionHandle>) -> Response {
    match connection {
        Some(handle) => {
            handle.abort();
            std::future::pending().await
        }
        None => {
            let failing = futures::stream::once(async {
                Err::<axum::body::Bytes, _>(std::io::Error::other("connection dropped by fault"))
            });
            Response::new(Body::from_stream(failing))
        }
    }
}
