//! The live feed under load: `clients` WebSocket clients subscribed to `message.received`
//! while inbound SMS arrive at `rate` per second (Africa's Talking callbacks POSTed to the
//! gateway). Latency is from the webhook's 200 (the message is stored) to each client's
//! frame; every client must get every message. Baseline: the same run with one client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard_sim::sms::{SmsConfig, SmsSim};
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::harness::KEY;
use crate::scenarios::{cpu_seconds, peak_rss_mib};

struct Outcome {
    p50: Duration,
    p99: Duration,
    max: Duration,
    missed: usize,
    cpu: f64,
}

async fn run(
    clients: usize,
    messages: usize,
    rate: usize,
    write_gap_ms: Option<u64>,
) -> anyhow::Result<Outcome> {
    let sim = SmsSim::start(SmsConfig::without_rate_limits()).await?;
    sim.add_at_account("bench", "atsk_bench_0123456789", 1e9);
    let api_base = sim.base_url();
    let feed = write_gap_ms.map_or(String::new(), |ms| format!("[feed]\nwrite_gap_ms = {ms}\n"));
    let g = crate::harness::start("sqlite", "FULL", |listen| {
        format!(
            "[server]\nlisten = \"{listen}\"\ntenant_rate_limit = \"none\"\n\
             [[bots]]\nid = \"sms\"\ntenant = \"bench\"\nplatform = \"sms\"\nprovider = \"africastalking\"\n\
             username = \"bench\"\napi_key = \"atsk_bench_0123456789\"\napi_base = \"{api_base}\"\n{feed}"
        )
    })
    .await?;
    let started = Instant::now();
    while g.gateway.supervisor.connector("sms").is_none() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "bot not running"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ws_url = format!(
        "{}/v1/feed?access_token={KEY}&types=message.received",
        g.base.replace("http://", "ws://")
    );
    // index -> when the gateway answered 200 for it.
    let accepted: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let mut readers = Vec::new();
    for _ in 0..clients {
        // The clients are made cheap: a dashboard runs on its own machine, while here all of
        // them share the gateway's 2 cores. Small reads (the library's default buffer is
        // 128 KiB, zeroed as it grows), the message's number found without parsing the whole
        // event, receive times in a vector by number.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(8 << 10);
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(&ws_url, Some(config), false).await?;
        let (_, mut rx) = ws.split();
        let accepted = accepted.clone();
        readers.push(tokio::spawn(async move {
            let mark = memchr::memmem::Finder::new(MARK);
            let mut seen: Vec<Option<Instant>> = vec![None; messages];
            let mut count = 0;
            while count < messages {
                let next = tokio::time::timeout(Duration::from_secs(30), rx.next()).await;
                let Ok(Some(Ok(frame))) = next else { break };
                let Ws::Text(text) = frame else { continue };
                let at = Instant::now();
                if let Some(slot) = message_number(&mark, &text).and_then(|i| seen.get_mut(i))
                    && slot.is_none()
                {
                    *slot = Some(at);
                    count += 1;
                }
            }
            let accepted = accepted.lock().unwrap().clone();
            let mut lat: Vec<Duration> = seen
                .iter()
                .enumerate()
                .filter_map(|(i, at)| {
                    Some(at.as_ref()?.saturating_duration_since(*accepted.get(&i)?))
                })
                .collect();
            lat.sort_unstable();
            (lat, messages - count)
        }));
    }
    let http = reqwest::Client::new();
    let url = format!("{}/webhooks/sms/sms/inbound", g.base);
    let cpu0 = cpu_seconds();
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let t0 = Instant::now();
    let posts = futures::stream::iter(0..messages)
        .map(|i| {
            let (http, url, accepted) = (http.clone(), url.clone(), accepted.clone());
            async move {
                // Paced: message i leaves at i / rate seconds.
                tokio::time::sleep_until((t0 + every * i as u32).into()).await;
                let form = format!(
                    "from=%2B2547118{:05}&to=12345&text=feed+{i}&id=ATXid_feed_{i}&date=2026-11-22",
                    i % 1000
                );
                let r = http
                    .post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form)
                    .send()
                    .await;
                if matches!(&r, Ok(r) if r.status().is_success()) {
                    accepted.lock().unwrap().insert(i, Instant::now());
                }
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>();
    posts.await;
    let mut all: Vec<Duration> = Vec::new();
    let mut missed = 0;
    for r in readers {
        let (lat, m) = r.await?;
        all.extend(lat);
        missed += m;
    }
    let cpu = cpu_seconds() - cpu0;
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    let out = Outcome {
        p50: pct(0.50),
        p99: pct(0.99),
        max: all.last().copied().unwrap_or_default(),
        missed,
        cpu,
    };
    g.gateway.shutdown().await;
    sim.shutdown();
    Ok(out)
}

/// `n` from the event's `"text":"feed n"`.
fn message_number(mark: &memchr::memmem::Finder, event: &str) -> Option<usize> {
    let rest = &event[mark.find(event.as_bytes())? + MARK.len()..];
    rest[..rest.find('"')?].parse().ok()
}

const MARK: &str = "\"text\":\"feed ";

pub async fn feed(
    clients: usize,
    messages: usize,
    rate: usize,
    write_gap_ms: Option<u64>,
) -> anyhow::Result<()> {
    let one = run(1, messages, rate, write_gap_ms).await?;
    let many = run(clients, messages, rate, write_gap_ms).await?;
    println!(
        "scenario: feed  clients={clients} messages={messages} rate={rate}/s write_gap_ms={} (inbound SMS webhooks, SQLite FULL)",
        write_gap_ms.map_or("default".to_string(), |ms| ms.to_string())
    );
    println!("| clients | p50 | p99 | max | missed (client x message) | CPU s | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    for (n, o) in [(1, &one), (clients, &many)] {
        println!(
            "| {n} | {:.1} ms | {:.1} ms | {:.1} ms | {} | {:.1} | {:.0} |",
            o.p50.as_secs_f64() * 1e3,
            o.p99.as_secs_f64() * 1e3,
            o.max.as_secs_f64() * 1e3,
            o.missed,
            o.cpu,
            peak_rss_mib()
        );
    }
    Ok(())
}
