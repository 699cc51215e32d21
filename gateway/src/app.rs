//! Wiring: opens the store, applies the config, starts the outbox, the supervisor and the
//! HTTP server; reloads bots on demand; shuts down in order (stop accepting, drain in-flight
//! sends, stop connectors, close the store).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use switchboard_core::Store;
use switchboard_core::connector::ConnectorRegistry;
use switchboard_core::secret::{Cipher, hash_api_key};
use switchboard_core::store::{Scope, StoreOptions, WriterConfig};
use switchboard_dashboard_api::auth::Authenticator;
use switchboard_dashboard_api::routes::tenants::key_hint;
use switchboard_dashboard_api::{ApiState, FeedSettings};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control::GatewayControl;
use crate::counters::Counters;
use crate::inbound::Inbound;
use crate::ingress::{self, Ingress};
use crate::outbox::Outbox;
use crate::supervisor::Supervisor;

/// A running gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    pub supervisor: Supervisor,
    pub outbox: Outbox,
    pub control: Arc<GatewayControl>,
    config: Config,
    closing: CancellationToken,
    server: JoinHandle<()>,
}

/// Builds the cipher from the configured master key and the keys of earlier rotations.
pub fn cipher(config: &Config) -> anyhow::Result<Option<Cipher>> {
    let Some(key) = &config.security.master_key else {
        return Ok(None);
    };
    let mut c = Cipher::from_base64(key.expose()).context("security.master_key")?;
    for old in &config.security.previous_master_keys {
        c = c
            .with_older_key(old.expose())
            .context("security.previous_master_keys")?;
    }
    Ok(Some(c))
}

/// Without a configured admin token, `serve` uses the one in `<data dir>/admin-token`,
/// creating it (random, mode 0600) on first start, so a fresh checkout is administrable
/// without putting a secret in the config. Returns the file's path.
pub fn bootstrap_admin_token(config: &mut Config) -> anyhow::Result<Option<std::path::PathBuf>> {
    if config.security.admin_token.is_some() {
        return Ok(None);
    }
    let url = config.storage.url.expose();
    let dir = match url.strip_prefix("sqlite:") {
        Some(rest) => std::path::Path::new(
            rest.trim_start_matches("//")
                .split('?')
                .next()
                .unwrap_or(""),
        )
        .parent()
        .map(|p| p.to_path_buf())
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| "data".into()),
        None => "data".into(),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("admin-token");
    let token = match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 16 => t.trim().to_string(),
        _ => {
            let token = format!(
                "sbadm_{}",
                switchboard_core::secret::generate_api_key().trim_start_matches("sk_")
            );
            write_private(&path, &token).with_context(|| format!("writing {}", path.display()))?;
            token
        }
    };
    config.security.admin_token = Some(switchboard_core::secret::Secret::new(token));
    Ok(Some(path))
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.write_all(b"\n")
}

impl Gateway {
    /// Starts everything and begins serving on `config.server.listen` (port 0: any free port).
    pub async fn start(config: Config, registry: ConnectorRegistry) -> anyhow::Result<Gateway> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let cipher = cipher(&config)?;
        let store = Store::open(
            config.storage.url.expose(),
            StoreOptions {
                max_connections: config.storage.max_connections,
                sqlite_synchronous: config.storage.sqlite_synchronous.clone(),
                writer: WriterConfig::default(),
                event_buffer: config.feed.buffer,
            },
        )
        .await
        .context("opening the store (storage.url)")?;
        let counters = Counters::new();
        let outbox = Outbox::new(store.clone(), config.outbox.clone(), counters.clone());
        let inbound = Arc::new(Inbound {
            store: store.clone(),
            counters: counters.clone(),
        });
        let supervisor = Supervisor::new(
            store.clone(),
            registry.clone(),
            cipher.clone(),
            config.supervisor.clone(),
            config.server.public_url.clone(),
            outbox.clone(),
            counters.clone(),
            inbound.clone(),
            inbound.clone(),
        );
        let control = Arc::new(GatewayControl {
            store: store.clone(),
            supervisor: supervisor.clone(),
            outbox: outbox.clone(),
            max_queued_per_bot: config.outbox.max_queued_per_bot,
            registry: registry.clone(),
            cipher,
            counters: counters.clone(),
            webhook_allowed_hosts: config.security.webhook_allowed_hosts.clone(),
        });

        apply_config(&control, &config).await?;
        if control.cipher.is_none() {
            for bot in store.all_bots().await? {
                if bot.enabled && store.bot_credentials(&bot.id).await?.is_some() {
                    anyhow::bail!(
                        "security.master_key: bot {:?} has stored credentials; configure the master key that sealed them",
                        bot.id
                    );
                }
            }
        }
        let counts = store.bot_message_counts().await?;
        for bot in store.all_bots().await? {
            counters.seed(
                &bot.id,
                bot.platform,
                counts.get(&bot.id).copied().unwrap_or_default(),
            );
        }
        if let Some(rx) = store.take_enqueued() {
            outbox.follow(rx);
        }
        for bot in store.all_bots().await? {
            outbox.recover(&bot.id).await?;
        }
        supervisor.reconcile_all().await?;

        let closing = CancellationToken::new();
        let mut auth = Authenticator::new(store.clone(), config.security.admin_token.clone());
        if let Some(rate) = config.server.tenant_rate_limit {
            auth = auth.with_tenant_rate(rate);
        }
        let auth = Arc::new(auth);
        let api = switchboard_dashboard_api::router(ApiState {
            store: store.clone(),
            control: control.clone(),
            auth,
            metrics: crate::telemetry::prometheus(),
            feed: FeedSettings {
                ping_interval: Duration::from_millis(config.feed.ping_interval_ms),
                send_timeout: Duration::from_millis(config.feed.send_timeout_ms),
                write_gap: Duration::from_millis(config.feed.write_gap_ms),
            },
            closing: closing.clone(),
        });
        let webhooks = ingress::router(Ingress {
            store: store.clone(),
            supervisor: supervisor.clone(),
            sink: inbound,
        });
        let app = api
            .merge(webhooks)
            .layer(axum::middleware::from_fn(record_http))
            .layer(axum::extract::DefaultBodyLimit::max(
                config.server.body_limit_bytes,
            ))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
                axum::response::IntoResponse::into_response(
                    switchboard_dashboard_api::ApiError::internal(),
                )
            }));
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("server.listen: cannot listen on {}", config.server.listen))?;
        let addr = listener.local_addr()?;
        // No Nagle: a feed's frames are small writes in quick succession, and the second
        // would wait for the client's delayed ACK (up to 40 ms on Linux).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
            }
        });
        let stop = closing.clone();
        let server = tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        {
            let store = store.clone();
            let stop = closing.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(3600));
                loop {
                    tokio::select! {
                        _ = every.tick() => {
                            let cutoff = chrono::Utc::now() - chrono::Duration::hours(24);
                            match store.prune_idempotency_keys(cutoff).await {
                                Ok(n) if n > 0 => tracing::debug!(removed = n, "expired idempotency keys pruned"),
                                Ok(_) => {}
                                Err(e) => tracing::warn!(error = %e, "cannot prune idempotency keys"),
                            }
                        }
                        _ = stop.cancelled() => break,
                    }
                }
            });
        }
        crate::scheduler::Scheduler::spawn(store.clone(), registry, closing.clone());
        crate::webhooks::spawn(
            store.clone(),
            control.cipher.clone(),
            crate::webhooks::WebhookSettings::new(
                &config.webhooks,
                config.security.webhook_allowed_hosts.clone(),
            ),
            closing.clone(),
        );
        tracing::info!(%addr, "switchboard listening");
        Ok(Gateway {
            addr,
            store,
            supervisor,
            outbox,
            control,
            config,
            closing,
            server,
        })
    }

    /// Applies a new config's tenants and bots (SIGHUP) without touching unchanged bots.
    pub async fn reload(&mut self, config: Config) -> anyhow::Result<()> {
        apply_config(&self.control, &config).await?;
        for bot in self.store.all_bots().await? {
            self.outbox.recover(&bot.id).await?;
        }
        self.supervisor.reconcile_all().await?;
        self.config.tenants = config.tenants;
        self.config.bots = config.bots;
        Ok(())
    }

    /// Stops accepting requests, drains in-flight sends, stops connectors, closes the store.
    pub async fn shutdown(self) {
        let started = Instant::now();
        self.closing.cancel();
        let grace = Duration::from_millis(self.config.server.shutdown_grace_ms);
        if tokio::time::timeout(grace, self.server).await.is_err() {
            tracing::warn!("HTTP connections still open after the grace period");
        }
        self.outbox.shutdown(grace).await;
        self.supervisor.shutdown().await;
        self.store.close().await;
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "switchboard stopped"
        );
    }
}

/// Writes the config's tenants (with their API key hashes) and bots into the store, and
/// removes config bots that left the file.
pub async fn apply_config(control: &GatewayControl, config: &Config) -> anyhow::Result<()> {
    let store = &control.store;
    for t in &config.tenants {
        store
            .upsert_tenant(&t.id, &t.name, &t.time_zone, "config")
            .await?;
        let keys = t
            .api_keys
            .iter()
            .map(|k| (hash_api_key(k.expose()), key_hint(k.expose())))
            .collect();
        store.replace_api_keys(&t.id, "config", keys).await?;
    }
    for b in &config.bots {
        let existing = store.get_bot(&Scope::All, &b.id).await.ok();
        if let Some(e) = &existing
            && e.source != "config"
        {
            anyhow::bail!(
                "bots: bot {:?} exists and was created through the API; rename the config bot",
                b.id
            );
        }
        let stored = match &existing {
            Some(_) => control.open(&b.id).await.ok(),
            None => None,
        };
        let creds = (stored.as_ref() != Some(&b.credentials)).then_some(&b.credentials);
        let fields = b.credentials.keys().cloned().collect();
        control
            .write_bot(
                &b.id,
                &b.tenant,
                b.platform,
                b.enabled,
                b.settings.clone(),
                creds,
                fields,
                "config",
            )
            .await
            .map_err(|e| anyhow::anyhow!("bots: {}: {}", b.id, e.detail))?;
    }
    for bot in store.all_bots().await? {
        if bot.source == "config" && !config.bots.iter().any(|b| b.id == bot.id) {
            tracing::info!(bot = %bot.id, "bot removed from the config file; deleting");
            control.supervisor.stop_task(&bot.id).await;
            store.delete_bot(&Scope::All, &bot.id).await?;
        }
    }
    Ok(())
}

/// Records `switchboard_http_request_duration_seconds{method,route,status}`.
async fn record_http(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", resp.status().as_u16().to_string()),
    ];
    metrics::histogram!(switchboard_core::metrics::HTTP_REQUEST_SECONDS, &labels)
        .record(started.elapsed().as_secs_f64());
    resp
}
