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
    ab: bool,
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
    let stats = gateway.store.writer_stats();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let (commits0, writes0, busy0) = (
        load(&stats.commits),
        load(&stats.writes),
        load(&stats.busy_micros),
    );
    let started = Instant::now();
    let run = if ab {
        let body = json!({
            "bot_id": "sms", "to": {"phone": recipient(0)},
            "content": {"type": "text", "text": "Your code is 000000"}
        });
        apache_bench(messages, concurrency, &url, Some(&body.to_string()))?
    } else {
        drive_with(messages, concurrency, |i| {
            http.post(&url).bearer_auth(KEY).json(&json!({
                "bot_id": "sms", "to": {"phone": recipient(i)},
                "content": {"type": "text", "text": format!("Your code is {i:06}")}
            }))
        })
        .await
    };
    // ab sends every request to one number, and the outbox keeps each conversation's order
    // (one message in flight per recipient): its delivered rate would measure one
    // recipient's round trip, not the gateway. The bot still sends during the run.
    let count_deliveries = !accept_only && !ab;
    while count_deliveries
        && sim.sent(Provider::AfricasTalking, AT_USER).len() < messages - run.errors
    {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "gave up waiting for deliveries"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = count_deliveries.then(|| messages as f64 / started.elapsed().as_secs_f64());
    println!(
        "scenario: sms  messages={messages} concurrency={concurrency} store={store} synchronous={sync} client={}{}{}",
        if ab {
            "ab, one recipient"
        } else {
            "built-in, 1,000 recipients"
        },
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
    let (commits, writes) = (
        load(&stats.commits) - commits0,
        load(&stats.writes) - writes0,
    );
    println!(
        "store writer: {writes} writes in {commits} commits ({:.1} per commit), busy {:.0}% of the run",
        writes as f64 / commits.max(1) as f64,
        (load(&stats.busy_micros) - busy0) as f64 / 1e4 / started.elapsed().as_secs_f64(),
    );
    gateway.shutdown().await;
    sim.shutdown();
    Ok(())
}

/// POSTs `body` `messages` times with ApacheBench (`ab -k`), `concurrency` at a time, and
/// reads its report. CPU is this process's (gateway and simulator), not ab's.
fn apache_bench(
    messages: usize,
    concurrency: usize,
    url: &str,
    body: Option<&str>,
) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("percentiles.csv");
    let mut ab = std::process::Command::new("ab");
    ab.args([
        "-q",
        "-k",
        "-n",
        &messages.to_string(),
        "-c",
        &concurrency.to_string(),
    ]);
    if let Some(body) = body {
        let body_path = dir.path().join("body.json");
        std::fs::write(&body_path, body)?;
        ab.arg("-p").arg(&body_path).args([
            "-T",
            "application/json",
            "-H",
            &format!("Authorization: Bearer {KEY}"),
        ]);
    }
    let cpu0 = crate::scenarios::cpu_seconds();
    let out = ab
        .arg("-e")
        .arg(&csv)
        .arg(url)
        .output()
        .map_err(|e| anyhow::anyhow!("running ab (Debian package apache2-utils): {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "ab failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cpu = crate::scenarios::cpu_seconds() - cpu0;
    let report = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Option<f64> {
        let line = report.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    let complete = field("Complete requests:")
        .ok_or_else(|| anyhow::anyhow!("ab printed no report: {report}"))?;
    let non2xx = field("Non-2xx responses:").unwrap_or(0.0);
    // ab counts a response whose length differs from the first one's as failed ("Length");
    // ours differ by their ids and times, so only the other kinds are errors.
    let length_only = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("(Connect:"))
        .and_then(|l| l.split("Length: ").nth(1))
        .and_then(|l| l.split(',').next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let failed = field("Failed requests:").unwrap_or(0.0) - length_only;
    let rps = field("Requests per second:").unwrap_or(0.0);
    let percentiles = std::fs::read_to_string(&csv).unwrap_or_default();
    let at = |p: &str| -> Duration {
        percentiles
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{p},")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(Duration::ZERO, |ms| Duration::from_secs_f64(ms / 1e3))
    };
    let errors = (messages as f64 - complete + non2xx + failed) as usize;
    Ok(Run {
        // ab's rate counts every completed request; only 2xx are accepted.
        rate: rps * (complete - non2xx) / complete.max(1.0),
        p50: at("50"),
        p99: at("99"),
        errors,
        cpu,
    })
}

/// Kannel: `GET /cgi-bin/sendsms` on smsbox, delivered count from bearerbox's status page.
pub async fn kannel(
    messages: usize,
    concurrency: usize,
    sendsms: &str,
    status: &str,
    pids: &[u32],
    ab: bool,
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
    let run = if ab {
        let url = format!(
            "{sendsms}?username=tester&password=foobar&to=%2B{}&text=Your+code+is+000000",
            &recipient(0)[1..]
        );
        apache_bench(messages, concurrency, &url, None)?
    } else {
        drive_with(messages, concurrency, |i| {
            http.get(sendsms).query(&[
                ("username", "tester"),
                ("password", "foobar"),
                ("to", &recipient(i)),
                ("text", &format!("Your code is {i:06}")),
            ])
        })
        .await
    };
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

/// SMS pacing: a Twilio long code whose queue drains `rate` segments per second and holds
/// one second of them (over it: 21611 at create), the bot's throughput set to the same rate.
/// The goal: the creates arrive at ≥ 95% of the drain rate with no 21611 and no 20429.
pub async fn pacing(messages: usize, rate: u32) -> anyhow::Result<()> {
    const SID: &str = "ACbench0000000000000000000000000000";
    const TOKEN: &str = "bench-twilio-auth-token";
    const FROM: &str = "+15005550006";
    let sim = SmsSim::start(SmsConfig {
        twilio_segments_per_second: f64::from(rate),
        twilio_queue_limit: rate as usize,
        ..SmsConfig::default()
    })
    .await?;
    sim.add_twilio_account(SID, TOKEN, 1e9);
    sim.add_twilio_number(SID, FROM);
    let api_base = sim.base_url();
    let started = crate::harness::start("sqlite", "FULL", |listen| {
        format!(
            r#"
[server]
listen = "{listen}"
public_url = "http://{listen}"
tenant_rate_limit = "none"
[outbox]
max_queued_per_bot = 1000000
[[bots]]
id = "sms"
tenant = "bench"
platform = "sms"
provider = "twilio"
account_sid = "{SID}"
auth_token = "{TOKEN}"
from = "{FROM}"
api_base = "{api_base}"
throughput_per_second = {rate}
"#
        )
    })
    .await?;
    let (gateway, base) = (started.gateway, started.base);
    let http = reqwest::Client::new();
    let cpu0 = crate::scenarios::cpu_seconds();
    let t0 = Instant::now();
    let mut accepted = 0;
    for i in 0..messages {
        let body = json!({"bot_id": "sms", "to": {"phone": recipient(i)},
            "content": {"type": "text", "text": format!("Pacing {i}")}});
        let r = http
            .post(format!("{base}/v1/messages"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await?;
        if r.status().as_u16() == 202 {
            accepted += 1;
        }
    }
    let accept_time = t0.elapsed();
    while sim.sent(Provider::Twilio, SID).len() < accepted {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(3600),
            "gave up after an hour"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = t0.elapsed();
    let cpu = crate::scenarios::cpu_seconds() - cpu0;
    let sent = sim.sent(Provider::Twilio, SID);
    let sending = crate::scenarios::sending_rate(sent.iter().map(|m| m.at));
    let requests = sim.requests();
    let refused = |status: u16| {
        requests
            .iter()
            .filter(|r| r.status == status && r.path.ends_with("/Messages.json"))
            .count()
    };
    println!(
        "scenario: pacing-sms  messages={messages} twilio long code at {rate} segments/s, queue {rate}"
    );
    println!(
        "| accepted | accept time | delivered in | theoretical minimum | sending rate (first to last create) | allowed rate | sending/allowed | 21611 (HTTP 400) | 20429 (HTTP 429) | CPU s | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {accepted} | {:.2} s | {:.2} s | {:.2} s | {sending:.1}/s | {rate}.0/s | {:.1}% | {} | {} | {cpu:.1} | {:.0} |",
        accept_time.as_secs_f64(),
        elapsed.as_secs_f64(),
        messages as f64 / f64::from(rate),
        100.0 * sending / f64::from(rate),
        refused(400),
        refused(429),
        peak_rss_mib(),
    );
    gateway.shutdown().await;
    sim.shutdown();
    Ok(())
}
