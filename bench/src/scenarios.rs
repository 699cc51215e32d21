//! The scenarios: set up a gateway and a simulator, drive load over HTTP, print a table.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use switchboard_sim::framework::rate::Rate;
use switchboard_sim::telegram::{TelegramConfig, TelegramSim, UserMessage};

use crate::harness::KEY;
const TOKEN: &str = "424242:bench-token";
const SECRET: &str = "bench_secret";

/// Process CPU seconds (user + system) so far.
pub(crate) fn cpu_seconds() -> f64 {
    stat_cpu_seconds(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

/// CPU seconds so far of this process's threads whose name starts with `prefix` (the store
/// writer's, SQLite's worker threads): the serial path's cost, steadier than wall rates on a
/// VM whose speed drifts.
pub(crate) fn thread_cpu_seconds(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .map(|t| {
            stat_cpu_seconds(&std::fs::read_to_string(t.path().join("stat")).unwrap_or_default())
        })
        .sum()
}

/// utime + stime of a `/proc/.../stat` line, in seconds.
fn stat_cpu_seconds(stat: &str) -> f64 {
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// What the platform saw: sends per second from its first accepted send to its last.
pub(crate) fn sending_rate(at: impl IntoIterator<Item = Instant>) -> f64 {
    let (mut n, mut first, mut last) = (0usize, None::<Instant>, None::<Instant>);
    for t in at {
        n += 1;
        first = Some(first.map_or(t, |f| f.min(t)));
        last = Some(last.map_or(t, |l| l.max(t)));
    }
    let window = match (first, last) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    n.saturating_sub(1) as f64 / window.max(1e-9)
}

/// Peak resident set size of this process, MiB.
pub(crate) fn peak_rss_mib() -> f64 {
    crate::harness::peak_rss_mib_of("self")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Setup {
    gateway: switchboard_gateway::Gateway,
    sim: TelegramSim,
    _store: tempfile::TempDir,
}

async fn setup(
    sim_config: TelegramConfig,
    bot_extra: &str,
    store: &str,
    mode: &str,
) -> anyhow::Result<Setup> {
    let sim = TelegramSim::start(sim_config).await?;
    sim.add_bot(TOKEN, "bench_bot");
    let base = sim.base_url();
    let started = crate::harness::start(store, "FULL", |listen| {
        format!(
            r#"
[server]
listen = "{listen}"
public_url = "http://{listen}"
tenant_rate_limit = "none"
[feed]
buffer = 65536
[outbox]
max_in_flight_per_bot = 256
[[bots]]
id = "tg"
tenant = "bench"
platform = "telegram"
mode = "{mode}"
token = "{TOKEN}"
webhook_secret = "{SECRET}"
api_base = "{base}"
{bot_extra}
"#
        )
    })
    .await?;
    Ok(Setup {
        gateway: started.gateway,
        sim,
        _store: started.dir,
    })
}

/// 3,000 messages to 300 chats at Telegram's limits (30/s per bot, 1/s per chat).
pub async fn pacing_telegram(messages: usize, chats: usize, scale: u32) -> anyhow::Result<()> {
    let per_bot = 30 * scale;
    let per_chat = scale;
    let sim_config = TelegramConfig {
        per_bot: Rate::new(per_bot, Duration::from_secs(1), per_bot),
        per_chat: Rate::new(per_chat, Duration::from_secs(1), 3 * scale),
        ..TelegramConfig::default()
    };
    let extra =
        format!("rate_limit = {{ per_bot = \"{per_bot}/s\", per_chat = \"{per_chat}/s\" }}");
    let s = setup(sim_config, &extra, "sqlite", "polling").await?;
    for c in 0..chats {
        let id = 10_000 + c as i64;
        s.sim.user_message(TOKEN, UserMessage::text(id, id, "hi"));
    }
    let base = format!("http://{}", s.gateway.addr);
    let http = reqwest::Client::new();
    // Wait for the users' first messages (the chats must exist at the platform).
    wait_inbound(&http, &base, chats).await?;
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let bodies: Vec<serde_json::Value> = (0..messages)
        .map(|i| {
            json!({"bot_id": "tg", "to": {"chat_id": (10_000 + (i % chats) as i64).to_string()},
                   "content": {"type": "text", "text": format!("m{i}")}})
        })
        .collect();
    let accepted = futures::stream::iter(bodies)
        .map(|b| {
            let http = http.clone();
            let url = format!("{base}/v1/messages");
            async move {
                http.post(url)
                    .bearer_auth(KEY)
                    .json(&b)
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
    loop {
        if s.sim.sent(TOKEN).len() >= messages {
            break;
        }
        if started.elapsed() > Duration::from_secs(3600) {
            anyhow::bail!("gave up waiting after an hour");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu0;
    let sent = s.sim.sent(TOKEN);
    let sending_rate = sending_rate(sent.iter().map(|m| m.at));
    let per_chat_msgs = messages.div_ceil(chats) as f64;
    // The binding limit: the bot's rate, or one chat's messages at the chat rate.
    let minimum = (messages as f64 / per_bot as f64).max((per_chat_msgs - 1.0) / per_chat as f64);
    let achieved = messages as f64 / elapsed.as_secs_f64();
    let allowed = messages as f64 / minimum;
    let counters = s.sim.counters();
    println!("scenario: pacing-telegram  messages={messages} chats={chats} scale={scale}");
    println!("limits: {per_bot}/s per bot, {per_chat}/s per chat");
    println!(
        "| accepted | accept time | delivered in | theoretical minimum | end-to-end rate | sending rate (first to last send) | allowed rate | sending/allowed | 429s | CPU s | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {accepted} | {:.2} s | {:.2} s | {:.2} s | {:.1}/s | {:.1}/s | {:.1}/s | {:.1}% | {} | {:.1} | {:.0} |",
        accept_time.as_secs_f64(),
        elapsed.as_secs_f64(),
        minimum,
        achieved,
        sending_rate,
        allowed,
        100.0 * sending_rate.min(allowed * 10.0) / allowed,
        counters.responses_429,
        cpu,
        peak_rss_mib()
    );
    for r in s.sim.requests().iter().filter(|r| r.status == 429) {
        println!(
            "429: {} {:?} at +{:.3} s",
            r.path,
            r.api_method,
            r.at.saturating_duration_since(started).as_secs_f64()
        );
    }
    s.gateway.shutdown().await;
    s.sim.shutdown();
    Ok(())
}

async fn wait_inbound(http: &reqwest::Client, base: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let bot: serde_json::Value = http
            .get(format!("{base}/v1/bots/tg"))
            .bearer_auth(KEY)
            .send()
            .await?
            .json()
            .await?;
        if bot["counters"]["received"].as_u64().unwrap_or(0) >= n as u64 {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "only {} of {n} inbound messages arrived",
                bot["counters"]["received"]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) struct Run {
    pub(crate) rate: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) errors: usize,
    pub(crate) cpu: f64,
}

/// A body to POST and the header it carries, if any.
type Request = (Vec<u8>, Option<(&'static str, String)>);

/// POSTs every body (with its header, if any) `concurrency` at a time; latencies of the 2xx.
async fn drive(url: String, requests: Vec<Request>, concurrency: usize) -> Run {
    let http = client(concurrency);
    let requests: Vec<std::sync::Mutex<Option<Request>>> = requests
        .into_iter()
        .map(|r| std::sync::Mutex::new(Some(r)))
        .collect();
    drive_with(requests.len(), concurrency, |i| {
        let (body, header) = requests[i].lock().unwrap().take().unwrap_or_default();
        let mut r = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some((name, value)) = header {
            r = r.header(name, value);
        }
        r
    })
    .await
}

/// A client keeping `concurrency` connections alive.
pub(crate) fn client(concurrency: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap_or_default()
}

/// Sends request `0..n` (made by `make`) `concurrency` at a time; latencies of the 2xx.
pub(crate) async fn drive_with(
    n: usize,
    concurrency: usize,
    make: impl Fn(usize) -> reqwest::RequestBuilder,
) -> Run {
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let results: Vec<Result<Duration, ()>> = futures::stream::iter(0..n)
        .map(|i| {
            let request = make(i);
            async move {
                let t = Instant::now();
                match request.send().await {
                    Ok(resp) if resp.status().is_success() => Ok(t.elapsed()),
                    _ => Err(()),
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut lat: Vec<Duration> = results.iter().filter_map(|r| r.ok()).collect();
    lat.sort();
    Run {
        rate: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        errors: results.len() - lat.len(),
        cpu: cpu_seconds() - cpu0,
    }
}

fn update(i: usize) -> Vec<u8> {
    let chat = 50_000 + (i % 500) as i64;
    json!({"update_id": 1_000_000 + i, "message": {"message_id": i + 1, "date": 1_700_000_000,
        "chat": {"id": chat, "type": "private", "first_name": "Load"},
        "from": {"id": chat, "is_bot": false, "first_name": "Load"},
        "text": format!("load message {i}")}})
    .to_string()
    .into_bytes()
}

/// Durable webhook ingest vs a bare axum handler answering 200, same load, same process.
pub async fn ingest_telegram(
    updates: usize,
    concurrency: usize,
    store: &str,
) -> anyhow::Result<()> {
    let bodies: Vec<Vec<u8>> = (0..updates).map(update).collect();
    // Baseline: a bare axum handler.
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|_body: axum::body::Bytes| async { "{}" }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_addr = listener.local_addr()?;
    let bare = tokio::spawn(async move { axum::serve(listener, app).await });
    let plain: Vec<_> = bodies.iter().map(|b| (b.clone(), None)).collect();
    let baseline = drive(format!("http://{bare_addr}/hook"), plain, concurrency).await;
    bare.abort();

    let s = setup(TelegramConfig::default(), "", store, "webhook").await?;
    let url = format!("http://{}/webhooks/telegram/tg", s.gateway.addr);
    // Wait until the bot registered its webhook (state running).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_secret: Vec<_> = bodies
        .into_iter()
        .map(|b| {
            (
                b,
                Some(("X-Telegram-Bot-Api-Secret-Token", SECRET.to_string())),
            )
        })
        .collect();
    let stats = s.gateway.store.writer_stats();
    let busy0 = stats.busy_micros.load(std::sync::atomic::Ordering::Relaxed);
    let serial0 = [
        thread_cpu_seconds("store-writer"),
        thread_cpu_seconds("sqlx-"),
    ];
    let started = std::time::Instant::now();
    let gw = drive(url, with_secret, concurrency).await;
    let serial = [
        thread_cpu_seconds("store-writer") - serial0[0],
        thread_cpu_seconds("sqlx-") - serial0[1],
    ]
    .map(|s| s * 1e6 / updates as f64);
    let busy = (stats.busy_micros.load(std::sync::atomic::Ordering::Relaxed) - busy0) as f64
        / 1e4
        / started.elapsed().as_secs_f64();
    let commits = stats.commits.load(std::sync::atomic::Ordering::Relaxed);
    let writes = stats.writes.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "scenario: ingest-telegram  updates={updates} concurrency={concurrency} store={}",
        if store == "sqlite" {
            "sqlite"
        } else {
            "postgres"
        }
    );
    println!("| target | rate (req/s) | p50 | p99 | errors | CPU s |");
    println!("|---|---|---|---|---|---|");
    for (name, r) in [
        ("bare axum handler (baseline)", &baseline),
        ("gateway, durable", &gw),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {} | {:.1} |",
            r.rate,
            r.p50.as_secs_f64() * 1000.0,
            r.p99.as_secs_f64() * 1000.0,
            r.errors,
            r.cpu
        );
    }
    println!(
        "ratio gateway/baseline: {:.2}; group commit: {writes} writes in {commits} commits ({:.1} per commit), store writer busy {busy:.0}% of the run; peak RSS {:.0} MiB",
        gw.rate / baseline.rate,
        writes as f64 / commits.max(1) as f64,
        peak_rss_mib()
    );
    println!(
        "CPU per update: store writer thread {:.0} µs, sqlx's worker threads {:.0} µs, whole process {:.0} µs",
        serial[0],
        serial[1],
        gw.cpu * 1e6 / updates as f64
    );
    s.gateway.shutdown().await;
    s.sim.shutdown();
    Ok(())
}

/// WhatsApp: signed notifications of `batch` messages each, stored durably, vs the bare
/// handler; then 2,000 template sends to 2,000 recipients at the number's throughput.
pub async fn whatsapp(
    posts: usize,
    batch: usize,
    concurrency: usize,
    recipients: usize,
    throughput: u32,
    store: &str,
) -> anyhow::Result<()> {
    use switchboard_sim::whatsapp::{PhoneNumber, WhatsAppConfig, WhatsAppSim};
    const PHONE: &str = "1065";
    const WA_TOKEN: &str = "bench-wa-token";
    const APP_SECRET: &str = "bench-app-secret";
    let sim = WhatsAppSim::start(WhatsAppConfig {
        throughput: Rate::new(throughput, Duration::from_secs(1), throughput),
        read_receipts: false,
        ..WhatsAppConfig::default()
    })
    .await?;
    sim.add_phone_number(PhoneNumber {
        phone_number_id: PHONE.into(),
        display_phone_number: "15550001111".into(),
        waba_id: "42".into(),
        access_token: WA_TOKEN.into(),
        app_secret: APP_SECRET.into(),
        callback_url: None,
        verified_name: "Bench".into(),
    });
    let api_base = sim.base_url();
    let started = crate::harness::start(store, "FULL", |listen| {
        format!(
            r#"
[server]
listen = "{listen}"
tenant_rate_limit = "none"
[feed]
buffer = 65536
[outbox]
max_in_flight_per_bot = 256
[[bots]]
id = "wa"
tenant = "bench"
platform = "whatsapp"
phone_number_id = "{PHONE}"
access_token = "{WA_TOKEN}"
app_secret = "{APP_SECRET}"
verify_token = "bench-verify"
api_base = "{api_base}"
throughput_per_second = {throughput}
"#
        )
    })
    .await?;
    let (gateway, base) = (started.gateway, started.base);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Ingest: signed notifications with `batch` messages each.
    let bodies: Vec<Vec<u8>> = (0..posts)
        .map(|p| {
            let messages: Vec<serde_json::Value> = (0..batch)
                .map(|i| {
                    let n = p * batch + i;
                    json!({"from": format!("2547{:08}", n % 5000), "id": format!("wamid.BENCH{n}"), "timestamp": "1700000000",
                           "type": "text", "text": {"body": format!("load {n}")}})
                })
                .collect();
            json!({"object": "whatsapp_business_account", "entry": [{"id": "42", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550001111", "phone_number_id": PHONE},
                "contacts": [], "messages": messages}}]}]})
            .to_string()
            .into_bytes()
        })
        .collect();
    let signed: Vec<_> = bodies
        .iter()
        .map(|b| {
            (
                b.clone(),
                Some((
                    "X-Hub-Signature-256",
                    switchboard_connectors::whatsapp::sign(APP_SECRET.as_bytes(), b),
                )),
            )
        })
        .collect();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|_body: axum::body::Bytes| async { "EVENT_RECEIVED" }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_addr = listener.local_addr()?;
    let bare = tokio::spawn(async move { axum::serve(listener, app).await });
    let baseline = drive(
        format!("http://{bare_addr}/hook"),
        signed.clone(),
        concurrency,
    )
    .await;
    bare.abort();
    let gw = drive(format!("{base}/webhooks/whatsapp/wa"), signed, concurrency).await;
    println!(
        "scenario: whatsapp ingest  posts={posts} messages/post={batch} concurrency={concurrency} store={}",
        if store == "sqlite" {
            "sqlite"
        } else {
            "postgres"
        }
    );
    println!("| target | POSTs/s | messages/s | p50 | p99 | errors | CPU s |");
    println!("|---|---|---|---|---|---|---|");
    for (name, r) in [
        ("bare axum handler (baseline)", &baseline),
        ("gateway, durable", &gw),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.2} ms | {:.2} ms | {} | {:.1} |",
            r.rate,
            r.rate * batch as f64,
            r.p50.as_secs_f64() * 1000.0,
            r.p99.as_secs_f64() * 1000.0,
            r.errors,
            r.cpu
        );
    }
    println!(
        "ratio gateway/baseline (requests): {:.2}",
        gw.rate / baseline.rate
    );

    // Outbound throughput: templates (no window needed) to distinct recipients.
    let http = reqwest::Client::new();
    let started = Instant::now();
    let accepted = futures::stream::iter(0..recipients)
        .map(|i| {
            let http = http.clone();
            let url = format!("{base}/v1/messages");
            async move {
                let b = json!({"bot_id": "wa", "to": {"phone": format!("+1555{:07}", i)},
                               "content": {"type": "template", "name": "order_update", "language": "en_US"}});
                http.post(url).bearer_auth(KEY).json(&b).send().await.map(|r| r.status().as_u16())
            }
        })
        .buffer_unordered(32)
        .filter(|r| futures::future::ready(matches!(r, Ok(202))))
        .count()
        .await;
    while sim.sent(PHONE).len() < recipients {
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("gave up after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let minimum = recipients as f64 / throughput as f64;
    let sent = sim.sent(PHONE);
    let sending_rate = sending_rate(sent.iter().map(|m| m.at));
    println!();
    println!("scenario: whatsapp throughput  recipients={recipients} throughput={throughput}/s");
    println!(
        "| accepted | delivered in | theoretical minimum | end-to-end rate | sending rate (first to last send) | sending/allowed | 130429 | 131056 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let codes = sim.error_codes();
    println!(
        "| {accepted} | {elapsed:.2} s | {minimum:.2} s | {:.1}/s | {sending_rate:.1}/s | {:.1}% | {} | {} |",
        recipients as f64 / elapsed,
        100.0 * sending_rate / throughput as f64,
        codes.get(&130429).copied().unwrap_or(0),
        codes.get(&131056).copied().unwrap_or(0)
    );
    gateway.shutdown().await;
    sim.shutdown();
    Ok(())
}
