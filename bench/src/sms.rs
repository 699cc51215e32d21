//! SMS outbound: how fast `POST /v1/messages` accepts durably for an SMS bot, and how fast
//! the messages reach the provider (the simulator without rate limits), beside Kannel's
//! `sendsms` -> fakesmsc measured in the same session (bench/kannel/run.sh starts Kannel).

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_sim::sms::{Provider, SmsConfig, SmsSim};

use crate::harness::KEY;
use crate::scenarios::{Run, client, drive_with, peak_rss_mib};

const AT_USER: &str = "bench";
const AT_KEY: &str = "atsk_bench_0123456789";

/// Recipient `i` of 1,000 (valid Kenyan mobile numbers).
fn recipient(i: usize) -> String {
    format!("+2547110{:05}", i % 1000)
}

fn print(label: &str, messages: usize, run: &Run, delivered: Option<f64>, rss: f64) {
    println!(
        "| {label} | {messages} | {:.0}/s | {:.1} ms | {:.1} ms | {} | {} | {:.1} | {rss:.0} |",
        run.rate,
        run.p50.as_secs_f64() * 1e3,
        run.p99.as_secs_f64() * 1e3,
        run.errors,
        delivered.map_or("-".into(), |d| format!("{d:.0}/s")),
        run.cpu,
    );
}

fn header() {
    println!(
        "| gateway | messages | accepted | p50 | p99 | errors | delivered to the SMSC | CPU s (bench process) | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
}

/// Switchboard: an Africa's Talking bot, its delivery reports coming back signed-off by the
/// gateway (durable both ways).
pub async fn sms(
    messages: usize,
    concurrency: usize,
    store: &str,
    accept_only: bool,
    reports: bool,
    sync: &str,
) -> anyhow::Result<()> {
    let sim = SmsSim::start(SmsConfig::without_rate_limits()).await?;
    sim.add_at_account(AT_USER, AT_KEY, 1e12);
    let api_base = sim.base_url();
    let started = crate::harness::start(store, sync, |listen| {
        format!(
            r#"
[server]
listen = "{listen}"
public_url = "http://{listen}"
tenant_rate_limit = "none"
[outbox]
max_in_flight_per_bot = 256
max_queued_per_bot = 1000000
[[bots]]
id = "sms"
tenant = "bench"
platform = "sms"
provider = "africastalking"
username = "{AT_USER}"
api_key = "{AT_KEY}"
api_base = "{api_base}"
throughput_per_second = 10000
enabled = {enabled}
"#,
            enabled = !accept_only,
        )
    })
    .await?;
    let (gateway, base) = (started.gateway, started.base);
    if reports {
        sim.set_at_callbacks(
            AT_USER,
            &format!("{base}/webhooks/sms/sms/status"),
            &format!("{base}/webhooks/sms/sms/inbound"),
        );
    }
    let http = client(concurrency);
    let url = format!("{base}/v1/messages");
    let started = Instant::now();
    let run = drive_with(messages, concurrency, |i| {
        http.post(&url).bearer_auth(KEY).json(&json!({
            "bot_id": "sms", "to": {"phone": recipient(i)},
            "content": {"type": "text", "text": format!("Your code is {i:06}")}
        }))
    })
    .await;
    while !accept_only && sim.sent(Provider::AfricasTalking, AT_USER).len() < messages - run.errors
    {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "gave up waiting for deliveries"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = (!accept_only).then(|| messages as f64 / started.elapsed().as_secs_f64());
    println!(
        "scenario: sms  messages={messages} concurrency={concurrency} store={store} synchronous={sync}{}{}",
        if accept_only {
            " (bot stopped: accept only)"
        } else {
            ""
        },
        if reports {
            " (delivery reports on)"
        } else {
            ""
        }
    );
    header();
    print(
        "Switchboard (durable)",
        messages,
        &run,
        delivered,
        peak_rss_mib(),
    );
    gateway.shutdown().await;
    sim.shutdown();
    Ok(())
}

/// Kannel: `GET /cgi-bin/sendsms` on smsbox, delivered count from bearerbox's status page.
pub async fn kannel(
    messages: usize,
    concurrency: usize,
    sendsms: &str,
    status: &str,
    pids: &[u32],
) -> anyhow::Result<()> {
    let http = client(concurrency);
    let sent_so_far = || async {
        let page = reqwest::get(status).await.ok()?.text().await.ok()?;
        // "SMS: received 0 (0 queued), sent 123 (4 queued), store size 0"
        let line = page.lines().find(|l| l.starts_with("SMS: received"))?;
        let after = line.split("sent ").nth(1)?;
        after.split_whitespace().next()?.parse::<u64>().ok()
    };
    let before = sent_so_far().await.unwrap_or(0);
    let started = Instant::now();
    let run = drive_with(messages, concurrency, |i| {
        http.get(sendsms).query(&[
            ("username", "tester"),
            ("password", "foobar"),
            ("to", &recipient(i)),
            ("text", &format!("Your code is {i:06}")),
        ])
    })
    .await;
    let target = before + (messages - run.errors) as u64;
    loop {
        if sent_so_far().await.unwrap_or(0) >= target {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "gave up waiting for Kannel's deliveries"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = messages as f64 / started.elapsed().as_secs_f64();
    let rss: f64 = pids
        .iter()
        .map(|pid| crate::harness::peak_rss_mib_of(&pid.to_string()))
        .sum();
    println!("scenario: kannel  messages={messages} concurrency={concurrency}");
    header();
    print(
        "Kannel 1.4.5 (bearerbox + smsbox)",
        messages,
        &run,
        Some(delivered),
        rss,
    );
    Ok(())
}
