//! Discord outbound pacing: messages spread over channels at Discord's default limits (the
//! simulator's 50/s global and 5 per 5 s per channel, announced only through the
//! `X-RateLimit-*` headers), against the fastest schedule those limits allow.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use switchboard_sim::discord::{DiscordConfig, DiscordSim};

use crate::harness::KEY;
use crate::scenarios::{cpu_seconds, peak_rss_mib, sending_rate};

const TOKEN: &str = "MTA5.bench-discord-token";
const GUILD: &str = "300000000000000001";

fn channel(i: usize) -> String {
    format!("{}", 400_000_000_000_000_000u64 + i as u64)
}

/// `messages` texts round-robin over `channels` channels.
pub async fn pacing_discord(
    messages: usize,
    channels: usize,
    global: Option<u32>,
) -> anyhow::Result<()> {
    let limits = DiscordConfig::default();
    let sim = DiscordSim::start(limits.clone()).await?;
    sim.add_bot(TOKEN, "bench");
    for c in 0..channels {
        sim.add_guild_channel(GUILD, &channel(c), &format!("room-{c}"));
    }
    let rate = global
        .map(|g| format!("rate_limit = {{ per_bot = \"{g}/s\" }}"))
        .unwrap_or_default();
    let api_base = sim.base_url();
    let started = crate::harness::start("sqlite", "FULL", |listen| {
        format!(
            r#"
[server]
listen = "{listen}"
tenant_rate_limit = "none"
[outbox]
max_in_flight_per_bot = 256
[[bots]]
id = "dc"
tenant = "bench"
platform = "discord"
token = "{TOKEN}"
api_base = "{api_base}"
{rate}
"#
        )
    })
    .await?;
    let (gateway, base) = (started.gateway, started.base);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bot: serde_json::Value = http
            .get(format!("{base}/v1/bots/dc"))
            .bearer_auth(KEY)
            .send()
            .await?
            .json()
            .await?;
        if bot["state"] == "running" {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the Discord bot never ran: {bot}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let accepted = futures::stream::iter(0..messages)
        .map(|i| {
            let http = http.clone();
            let url = format!("{base}/v1/messages");
            let body = json!({"bot_id": "dc", "to": {"chat_id": channel(i % channels)},
                              "content": {"type": "text", "text": format!("m{i}")}});
            async move {
                http.post(url)
                    .bearer_auth(KEY)
                    .json(&body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }
        })
        .buffer_unordered(32)
        .filter(|r| futures::future::ready(matches!(r, Ok(202))))
        .count()
        .await;
    let accept_time = started.elapsed();
    let sent_total = || {
        (0..channels)
            .map(|c| sim.sent(&channel(c)).len())
            .sum::<usize>()
    };
    while sent_total() < messages {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "gave up waiting after an hour"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu0;
    let sending_rate =
        sending_rate((0..channels).flat_map(|c| sim.sent(&channel(c)).into_iter().map(|s| s.at)));
    // The fastest schedule: the global limit, or one channel's windows (5 per 5 s).
    let per_channel = messages.div_ceil(channels);
    let bucket = limits.channel_bucket;
    let windows = per_channel
        .div_ceil(bucket.count as usize)
        .saturating_sub(1);
    let minimum = (messages as f64 / limits.global_per_second as f64)
        .max(windows as f64 * bucket.per.as_secs_f64());
    let allowed = messages as f64 / minimum;
    let counters = sim.counters();
    println!(
        "scenario: pacing-discord  messages={messages} channels={channels} bot per_bot={}",
        global.map_or(
            format!(
                "{}/s (default)",
                switchboard_connectors::discord::DEFAULT_GLOBAL_RATE
            ),
            |g| format!("{g}/s")
        )
    );
    println!(
        "limits (simulator): {}/s global, {} per {:?} per channel",
        limits.global_per_second, bucket.count, bucket.per
    );
    println!(
        "| accepted | accept time | delivered in | theoretical minimum | sending rate (first to last send) | allowed rate | sending/allowed | 429s | CPU s | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {accepted} | {:.2} s | {:.2} s | {:.2} s | {:.1}/s | {:.1}/s | {:.1}% | {} | {:.1} | {:.0} |",
        accept_time.as_secs_f64(),
        elapsed.as_secs_f64(),
        minimum,
        sending_rate,
        allowed,
        100.0 * sending_rate / allowed,
        counters.responses_429,
        cpu,
        peak_rss_mib()
    );
    // Where the 429s fell, and the most requests the simulator saw in any one second.
    let requests = sim.requests();
    let posts: Vec<Instant> = requests
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.at)
        .collect();
    let busiest = posts
        .iter()
        .enumerate()
        .map(|(i, at)| {
            posts[i..]
                .iter()
                .take_while(|t| t.duration_since(*at) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    println!("most requests in any one second (simulator's clock): {busiest}");
    for r in requests.iter().filter(|r| r.status == 429) {
        println!(
            "429 at {:.3} s: {} {}",
            r.at.duration_since(started).as_secs_f64(),
            r.method,
            r.path
        );
    }
    gateway.shutdown().await;
    sim.shutdown();
    Ok(())
}
