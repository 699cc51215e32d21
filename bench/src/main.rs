//! switchboard-bench: benchmark scenarios, run by hand. Each prints a table with the
//! same-run baseline; the figures go to docs/PERFORMANCE.md with the command line.
//!
//!     switchboard-bench pacing-telegram [--messages 3000 --chats 300 --scale 1]
//!     switchboard-bench ingest-telegram [--updates 20000 --concurrency 64 --store sqlite|postgres]
//!     switchboard-bench pacing-discord [--messages 2000 --channels 100 --global 48]
//!     switchboard-bench sms [--messages 20000 --concurrency 64 --store sqlite|postgres]
//!     switchboard-bench kannel [--messages 20000 --concurrency 64 --pids PID,PID] (bench/kannel/run.sh)
//!     switchboard-bench whatsapp [--posts 2000 --batch 10 --recipients 2000 --throughput 80]
//!
//!     switchboard-bench import [--rows 100000 --store sqlite|postgres]
//!     switchboard-bench broadcast [--recipients 100000 --store sqlite|postgres]
//!     switchboard-bench stats [--messages 1000000 --store sqlite|postgres]
//!     switchboard-bench bots [--bots 1000]
//!     switchboard-bench feed [--clients 1000 --messages 5000 --rate 1000]
//!
//! The gateway and the simulator run in this process (the CPU column is the whole process).

mod admin;
mod bots;
mod discord;
mod feed;
mod harness;
mod scenarios;
mod sms;

use clap::{Parser, Subcommand};

/// The gateway binary's allocator, so that the figures are the gateway's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "switchboard-bench")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Outbound pacing against the Telegram simulator's limits: rate vs the allowed rate, 429s.
    PacingTelegram {
        #[arg(long, default_value_t = 3000)]
        messages: usize,
        #[arg(long, default_value_t = 300)]
        chats: usize,
        /// Multiplies every limit, on the simulator and in the bot's policy alike.
        #[arg(long, default_value_t = 1)]
        scale: u32,
    },
    /// Outbound pacing against the Discord simulator's global and per-channel limits.
    PacingDiscord {
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        #[arg(long, default_value_t = 100)]
        channels: usize,
        /// The bot's `rate_limit.per_bot` (default: the connector's 48/s).
        #[arg(long)]
        global: Option<u32>,
    },
    /// SMS pacing: a Twilio long code draining N segments/s with a one-second queue; 21611s
    PacingSms {
        #[arg(long, default_value_t = 1000)]
        messages: usize,
        /// Segments per second the simulated sender drains (and the bot's throughput).
        #[arg(long, default_value_t = 20)]
        rate: u32,
    },
    /// SMS: durable accept rate of POST /v1/messages and delivery to the provider.
    Sms {
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// `sqlite` or a postgres:// URL.
        #[arg(long, default_value = "sqlite")]
        store: String,
        /// With the bot stopped: what accepting alone costs.
        #[arg(long)]
        accept_only: bool,
        /// Have the provider post delivery reports back (two per message).
        #[arg(long)]
        reports: bool,
        /// SQLite's `synchronous`: FULL (fsync at every commit, the default) or NORMAL
        /// (WAL: durable against a crash of the process, not of the machine).
        #[arg(long, default_value = "FULL")]
        sync: String,
        /// Drive the load with ApacheBench (`ab -k`, one recipient) instead of the built-in
        /// client: the same client as Kannel's anchor, outside this process.
        #[arg(long)]
        ab: bool,
    },
    /// Kannel's sendsms under the same load (Kannel started by bench/kannel/run.sh).
    Kannel {
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value = "http://127.0.0.1:13013/cgi-bin/sendsms")]
        sendsms: String,
        #[arg(
            long,
            default_value = "http://127.0.0.1:13000/status.txt?password=bench"
        )]
        status: String,
        /// bearerbox and smsbox, for their peak RSS.
        #[arg(long, value_delimiter = ',')]
        pids: Vec<u32>,
        /// Drive the load with ApacheBench (`ab -k`, one recipient).
        #[arg(long)]
        ab: bool,
    },
    /// WhatsApp: signed webhook batches ingested durably (vs a bare handler), then template
    /// sends to distinct recipients at the number's throughput.
    Whatsapp {
        #[arg(long, default_value_t = 2000)]
        posts: usize,
        #[arg(long, default_value_t = 10)]
        batch: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 2000)]
        recipients: usize,
        #[arg(long, default_value_t = 80)]
        throughput: u32,
        /// `sqlite` or a postgres:// URL (of an empty database).
        #[arg(long, default_value = "sqlite")]
        store: String,
    },
    /// An .xlsx of contacts imported into a group (vs calamine reading it alone).
    Import {
        #[arg(long, default_value_t = 100_000)]
        rows: usize,
        #[arg(long, default_value = "sqlite")]
        store: String,
    },
    /// A broadcast to a whole group: creation time and fan-out rate to the provider.
    Broadcast {
        #[arg(long, default_value_t = 100_000)]
        recipients: usize,
        #[arg(long, default_value = "sqlite")]
        store: String,
    },
    /// The WebSocket feed: many clients while inbound messages arrive (vs one client).
    Feed {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 5000)]
        messages: usize,
        #[arg(long, default_value_t = 1000)]
        rate: usize,
        /// The gateway's `[feed] write_gap_ms` (default: the gateway's own, 5).
        #[arg(long)]
        write_gap_ms: Option<u64>,
    },
    /// Many bots in one process: time until all are running, peak RSS (vs one bot).
    Bots {
        #[arg(long, default_value_t = 1000)]
        bots: usize,
    },
    /// GET /v1/stats over many stored messages (vs GET /healthz).
    Stats {
        #[arg(long, default_value_t = 1_000_000)]
        messages: usize,
        #[arg(long, default_value = "sqlite")]
        store: String,
    },
    /// Durable Telegram webhook ingest, against a bare axum handler as the baseline.
    IngestTelegram {
        #[arg(long, default_value_t = 20_000)]
        updates: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// `sqlite` or a postgres:// URL.
        #[arg(long, default_value = "sqlite")]
        store: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().scenario {
        Scenario::Import { rows, store } => admin::import(rows, &store).await,
        Scenario::Broadcast { recipients, store } => admin::broadcast(recipients, &store).await,
        Scenario::Stats { messages, store } => admin::stats(messages, &store).await,
        Scenario::Bots { bots } => bots::bots(bots).await,
        Scenario::Feed {
            clients,
            messages,
            rate,
            write_gap_ms,
        } => feed::feed(clients, messages, rate, write_gap_ms).await,
        Scenario::PacingTelegram {
            messages,
            chats,
            scale,
        } => scenarios::pacing_telegram(messages, chats, scale).await,
        Scenario::PacingDiscord {
            messages,
            channels,
            global,
        } => discord::pacing_discord(messages, channels, global).await,
        Scenario::PacingSms { messages, rate } => sms::pacing(messages, rate).await,
        Scenario::Sms {
            messages,
            concurrency,
            store,
            accept_only,
            reports,
            sync,
            ab,
        } => {
            sms::sms(
                messages,
                concurrency,
                &store,
                accept_only,
                reports,
                &sync,
                ab,
            )
            .await
        }
        Scenario::Kannel {
            messages,
            concurrency,
            sendsms,
            status,
            pids,
            ab,
        } => sms::kannel(messages, concurrency, &sendsms, &status, &pids, ab).await,
        Scenario::IngestTelegram {
            updates,
            concurrency,
            store,
        } => scenarios::ingest_telegram(updates, concurrency, &store).await,
        Scenario::Whatsapp {
            posts,
            batch,
            concurrency,
            recipients,
            throughput,
            store,
        } => scenarios::whatsapp(posts, batch, concurrency, recipients, throughput, &store).await,
    }
}
