//! The `switchboard` command: `serve`, `migrate`, `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard_gateway::config::{self, Config, ProcessEnv};
use switchboard_gateway::{Gateway, telemetry};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "switchboard", version, about = "Multi-platform bot gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, default_value = "config/switchboard.toml")]
        config: PathBuf,
    },
    /// Run the gateway with a built-in platform simulator and sample traffic.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// Apply the store's migrations and exit.
    Migrate {
        #[arg(long, default_value = "config/switchboard.toml")]
        config: PathBuf,
    },
    /// Validate the config; print every problem with its key; exit 1 if any.
    CheckConfig {
        #[arg(long, default_value = "config/switchboard.toml")]
        config: PathBuf,
    },
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    config::load(path, &ProcessEnv, &switchboard_connectors::registry()).map_err(|problems| {
        eprintln!("{}: {} problem(s):", path.display(), problems.len());
        for p in problems {
            eprintln!("  {p}");
        }
        ExitCode::from(1)
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::CheckConfig { config } => match load(&config) {
            Ok(c) => {
                println!(
                    "{}: OK ({} tenant(s), {} bot(s), storage {})",
                    config.display(),
                    c.tenants.len(),
                    c.bots.len(),
                    c.storage.url.expose().split(':').next().unwrap_or("?")
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Migrate { config } => {
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            telemetry::init_logging(&c.log);
            match switchboard_core::Store::migrate(c.storage.url.expose()).await {
                Ok(()) => {
                    println!("migrations applied");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("migration failed: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Serve { config } => serve(config).await,
        Command::Demo { listen } => {
            telemetry::init_logging(&config::LogConfig {
                format: "text".into(),
                level: "info".into(),
            });
            match switchboard_gateway::demo::run(listen).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchboard demo: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

async fn serve(path: PathBuf) -> ExitCode {
    let mut c = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    telemetry::init_logging(&c.log);
    match switchboard_gateway::app::bootstrap_admin_token(&mut c) {
        Ok(Some(file)) => {
            tracing::info!(file = %file.display(), "no security.admin_token configured: the admin token is in this file")
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!("switchboard: cannot prepare the admin token: {e:#}");
            return ExitCode::from(1);
        }
    }
    let registry =
        switchboard_connectors::registry_with(switchboard_connectors::ConnectorOptions {
            allow_private_media: c.security.allow_private_media_urls,
            ..Default::default()
        });
    let mut gateway = match Gateway::start(c, registry).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("switchboard: cannot start: {e:#}");
            return ExitCode::from(1);
        }
    };
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("switchboard: cannot install signal handlers");
        return ExitCode::from(1);
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!(config = %path.display(), "SIGHUP: reloading bots");
                match config::load(&path, &ProcessEnv, &switchboard_connectors::registry()) {
                    Ok(mut c) => {
                        let _ = switchboard_gateway::app::bootstrap_admin_token(&mut c);
                        if let Err(e) = gateway.reload(c).await {
                            tracing::error!(error = %format!("{e:#}"), "reload failed; keeping the running bots");
                        }
                    }
                    Err(problems) => {
                        for p in problems {
                            tracing::error!(key = %p.key, problem = %p.message, "reload refused: config problem");
                        }
                    }
                }
            }
        }
    }
    tracing::info!("shutting down");
    gateway.shutdown().await;
    ExitCode::SUCCESS
}
