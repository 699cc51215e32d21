//! `switchboard-sim`: runs the platform simulators as a standalone server.
//!
//! `switchboard-sim --listen 127.0.0.1:9000 [--bot TOKEN=USERNAME]... [--no-rate-limits]`
//! serves the Telegram Bot API simulator and the control API (`/_sim/...`) on one port and
//! prints the base URL on stdout.

use std::net::SocketAddr;

use clap::Parser;
use switchboard_sim::{TelegramConfig, TelegramSim};

#[derive(Debug, Parser)]
#[command(
    name = "switchboard-sim",
    about = "Loopback simulator of messaging platform APIs"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// A bot to create at start-up, as TOKEN=USERNAME (repeatable).
    #[arg(long = "bot", value_parser = parse_bot)]
    bots: Vec<(String, String)>,
    /// Disable Telegram's flood limits (for benchmarks of the gateway itself).
    #[arg(long)]
    no_rate_limits: bool,
}

fn parse_bot(value: &str) -> Result<(String, String), String> {
    match value.rsplit_once('=') {
        Some((token, username)) if !token.is_empty() && !username.is_empty() => {
            Ok((token.to_owned(), username.to_owned()))
        }
        _ => Err("expected TOKEN=USERNAME".to_owned()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = if args.no_rate_limits {
        TelegramConfig::without_rate_limits()
    } else {
        TelegramConfig::default()
    };
    let sim = TelegramSim::start_on(args.listen, config).await?;
    for (token, username) in &args.bots {
        let id = sim.add_bot(token, username);
        tracing::info!(bot = %username, id, "bot added");
    }
    println!("{}", sim.base_url());
    tracing::info!(base_url = %sim.base_url(), "Telegram Bot API simulator ready; control API under /_sim/");
    tokio::signal::ctrl_c().await?;
    sim.shutdown();
    Ok(())
}
