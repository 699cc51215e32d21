//! The SMS admin product at scale: an Excel import of 100,000 contacts, a 100,000-recipient
//! broadcast (creation time and fan-out rate to the provider), and `GET /v1/stats` over a
//! million messages. Each prints its same-run baseline.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_sim::sms::{Provider, SmsConfig, SmsSim};

use crate::harness::KEY;
use crate::scenarios::{cpu_seconds, peak_rss_mib};

const AT_USER: &str = "bench";
const AT_KEY: &str = "atsk_bench_0123456789";

async fn call(req: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
    let r = req.bearer_auth(KEY).send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// A workbook of `rows` contacts (a header, then name and a Kenyan mobile number).
fn workbook(rows: usize) -> anyhow::Result<Vec<u8>> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    sheet.write_string(0, 0, "Name")?;
    sheet.write_string(0, 1, "Phone")?;
    for i in 0..rows {
        let r = i as u32 + 1;
        sheet.write_string(r, 0, format!("Contact {i}"))?;
        sheet.write_string(r, 1, format!("07{:08}", 10_000_000 + i))?;
    }
    Ok(book.save_to_buffer()?)
}

async fn sms_gateway(store: &str, sim: &SmsSim) -> anyhow::Result<crate::harness::BenchGateway> {
    let api_base = sim.base_url();
    crate::harness::start(store, "FULL", |listen| {
        format!(
            r#"
[server]
listen = "{listen}"
public_url = "http://{listen}"
tenant_rate_limit = "none"
body_limit_bytes = 16777216
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
default_region = "KE"
throughput_per_second = 10000
"#
        )
    })
    .await
}

/// Creates a group and imports `rows` contacts into it from `book`: the group's id and how
/// long the import request took.
async fn import_into_new_group(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    book: Vec<u8>,
    rows: usize,
) -> anyhow::Result<(String, Duration)> {
    let (status, group) = call(
        http.post(format!("{base}/v1/groups"))
            .json(&json!({"name": name})),
    )
    .await?;
    anyhow::ensure!(status == 201, "group: {group}");
    let gid = group["id"].as_str().unwrap_or_default().to_owned();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(book).file_name("contacts.xlsx"),
    );
    let t = Instant::now();
    let (status, out) = call(
        http.post(format!("{base}/v1/groups/{gid}/import?default_region=KE"))
            .multipart(form),
    )
    .await?;
    let took = t.elapsed();
    anyhow::ensure!(
        status == 200 && out["created"] == rows,
        "import: {status}, created {} of {rows}: {}",
        out["created"],
        out["errors"][0]
    );
    Ok((gid, took))
}

/// Imports `rows` contacts from an .xlsx into a new group; baseline: reading the same
/// workbook with calamine alone (what any import must do before validating and storing).
pub async fn import(rows: usize, store: &str) -> anyhow::Result<()> {
    let sim = SmsSim::start(SmsConfig::without_rate_limits()).await?;
    sim.add_at_account(AT_USER, AT_KEY, 1e12);
    let g = sms_gateway(store, &sim).await?;
    let http = reqwest::Client::new();
    let bytes = workbook(rows)?;
    let size = bytes.len();
    let t = Instant::now();
    let mut book: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes.clone()))?;
    let range = calamine::Reader::worksheet_range_at(&mut book, 0)
        .ok_or_else(|| anyhow::anyhow!("no sheet"))??;
    let parsed = range.rows().count();
    let baseline = t.elapsed();
    let cpu0 = cpu_seconds();
    let (_, took) = import_into_new_group(&http, &g.base, "Imported", bytes, rows).await?;
    println!(
        "scenario: import  rows={rows} store={store} workbook={} KiB",
        size / 1024
    );
    println!("| what | rows | time | rows/s | CPU s | peak RSS MiB |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| baseline: calamine reads the workbook | {parsed} | {} | {:.0} | - | - |",
        ms(baseline),
        parsed as f64 / baseline.as_secs_f64()
    );
    println!(
        "| POST /v1/groups/{{id}}/import (all created, durable) | {rows} | {} | {:.0} | {:.1} | {:.0} |",
        ms(took),
        rows as f64 / took.as_secs_f64(),
        cpu_seconds() - cpu0,
        peak_rss_mib()
    );
    g.gateway.shutdown().await;
    sim.shutdown();
    Ok(())
}

/// A broadcast to a group of `recipients`: creation time (the request that snapshots the
/// audience and writes every message) and the rate at which the messages reach the
/// provider. Baseline: importing the same contacts (a comparable write volume).
pub async fn broadcast(recipients: usize, store: &str) -> anyhow::Result<()> {
    let sim = SmsSim::start(SmsConfig::without_rate_limits()).await?;
    sim.add_at_account(AT_USER, AT_KEY, 1e12);
    let g = sms_gateway(store, &sim).await?;
    let http = reqwest::Client::new();
    let (gid, import) = import_into_new_group(
        &http,
        &g.base,
        "Everyone",
        workbook(recipients)?,
        recipients,
    )
    .await?;
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let (status, b) = call(http.post(format!("{}/v1/broadcasts", g.base)).json(&json!({
        "bot_id": "sms", "title": "Everyone",
        "content": {"type": "text", "text": "Our shop opens at 9 tomorrow"},
        "to": {"group_id": gid}
    })))
    .await?;
    let create = t.elapsed();
    anyhow::ensure!(status == 201, "broadcast: {status} {b}");
    while sim.sent(Provider::AfricasTalking, AT_USER).len() < recipients {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(1800),
            "gave up waiting for the provider"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fanout = t.elapsed();
    println!(
        "scenario: broadcast  recipients={recipients} store={store} provider=africastalking (simulator, no rate limit)"
    );
    println!("| what | recipients | time | per second | CPU s | peak RSS MiB |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| baseline: importing the same contacts | {recipients} | {} | {:.0} | - | - |",
        ms(import),
        recipients as f64 / import.as_secs_f64()
    );
    println!(
        "| POST /v1/broadcasts (snapshot + every message written) | {recipients} | {} | {:.0} | - | - |",
        ms(create),
        recipients as f64 / create.as_secs_f64()
    );
    println!(
        "| all sent to the provider | {recipients} | {} | {:.0} | {:.1} | {:.0} |",
        ms(fanout),
        recipients as f64 / fanout.as_secs_f64(),
        cpu_seconds() - cpu0,
        peak_rss_mib()
    );
    g.gateway.shutdown().await;
    sim.shutdown();
    Ok(())
}

/// `GET /v1/stats` with `messages` inbound messages stored (from 1,000 senders); baseline:
/// `GET /healthz` on the same server.
pub async fn stats(messages: usize, store: &str) -> anyhow::Result<()> {
    use switchboard_core::connector::{ChatRef, InboundEvent, InboundMessage, SenderRef};
    use switchboard_core::model::{Content, ConversationKind};
    let sim = SmsSim::start(SmsConfig::without_rate_limits()).await?;
    sim.add_at_account(AT_USER, AT_KEY, 1e12);
    let g = sms_gateway(store, &sim).await?;
    let s = g.gateway.store.clone();
    let t = Instant::now();
    let per_batch = 500;
    let mut loaders = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        loaders.push(tokio::spawn(async move {
            let mut i = w * per_batch;
            while i < messages {
                let events: Vec<InboundEvent> = (i..(i + per_batch).min(messages))
                    .map(|n| {
                        let chat = format!("+2547110{:05}", n % 1000);
                        InboundEvent::Message(InboundMessage {
                            dedup_key: format!("m{n}"),
                            chat: ChatRef {
                                external_chat_id: chat.clone(),
                                kind: ConversationKind::Direct,
                                title: None,
                            },
                            sender: Some(SenderRef {
                                external_id: chat.clone(),
                                name: None,
                                phone: Some(chat),
                            }),
                            content: Content::Text {
                                text: format!("message {n}"),
                            },
                            external_id: Some(format!("x{n}")),
                            reply_to_external_id: None,
                            at: chrono::Utc::now(),
                        })
                    })
                    .collect();
                s.ingest("sms", events).await?;
                i += 4 * per_batch;
            }
            anyhow::Ok(())
        }));
    }
    for l in loaders {
        l.await??;
    }
    let load = t.elapsed();
    let http = reqwest::Client::new();
    let time = |path: &'static str| {
        let http = http.clone();
        let url = format!("{}{path}", g.base);
        async move {
            let mut lat = Vec::new();
            for _ in 0..200 {
                let t = Instant::now();
                let r = http.get(&url).bearer_auth(KEY).send().await?;
                anyhow::ensure!(r.status().is_success(), "{path}: {}", r.status());
                let body: Value = r.json().await.unwrap_or(Value::Null);
                lat.push(t.elapsed());
                if path == "/v1/stats" {
                    anyhow::ensure!(body["total_received"] == messages, "stats disagree: {body}");
                }
            }
            lat.sort();
            anyhow::Ok((lat[lat.len() / 2], lat[lat.len() * 99 / 100]))
        }
    };
    let health = time("/healthz").await?;
    let stats = time("/v1/stats").await?;
    println!(
        "scenario: stats  messages={messages} store={store} (loaded in {})",
        ms(load)
    );
    println!("| request | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| baseline: GET /healthz | {:.2} ms | {:.2} ms |",
        health.0.as_secs_f64() * 1e3,
        health.1.as_secs_f64() * 1e3
    );
    println!(
        "| GET /v1/stats | {:.2} ms | {:.2} ms |",
        stats.0.as_secs_f64() * 1e3,
        stats.1.as_secs_f64() * 1e3
    );
    g.gateway.shutdown().await;
    sim.shutdown();
    Ok(())
}
