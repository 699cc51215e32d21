//! Many bots in one process: `n` bots (mixed platforms: Telegram polling, WhatsApp, SMS on
//! Africa's Talking) configured against the simulators, timed from the gateway's start until
//! every bot is `running`, with the process's peak RSS. Baseline: the same with one bot.

use std::time::{Duration, Instant};

use switchboard_core::model::BotState;
use switchboard_sim::sms::{SmsConfig, SmsSim};
use switchboard_sim::telegram::{TelegramConfig, TelegramSim};
use switchboard_sim::whatsapp::{PhoneNumber, WhatsAppConfig, WhatsAppSim};

use crate::scenarios::{cpu_seconds, peak_rss_mib};

/// The `[[bots]]` of bot `i`: Telegram, WhatsApp and SMS in turn.
fn bot(i: usize, tg: &TelegramSim, wa: &WhatsAppSim, sms: &SmsSim) -> String {
    match i % 3 {
        0 => {
            let token = format!("{}:bench-token-{i}", 100_000 + i);
            tg.add_bot(&token, &format!("bench_{i}_bot"));
            format!(
                "[[bots]]\nid = \"tg{i}\"\ntenant = \"bench\"\nplatform = \"telegram\"\ntoken = \"{token}\"\n\
                 poll_timeout_s = 25\napi_base = \"{}\"\n",
                tg.base_url()
            )
        }
        1 => {
            let phone = format!("{}", 106_540_000_000_000u64 + i as u64);
            wa.add_phone_number(PhoneNumber {
                phone_number_id: phone.clone(),
                display_phone_number: format!("1555{i:07}"),
                waba_id: "102290129340398".into(),
                access_token: format!("EAAG-bench-{i}"),
                app_secret: format!("secret-{i}"),
                callback_url: None,
                verified_name: format!("Bench {i}"),
            });
            format!(
                "[[bots]]\nid = \"wa{i}\"\ntenant = \"bench\"\nplatform = \"whatsapp\"\nphone_number_id = \"{phone}\"\n\
                 access_token = \"EAAG-bench-{i}\"\napp_secret = \"secret-{i}\"\nverify_token = \"v{i}\"\napi_base = \"{}\"\n",
                wa.base_url()
            )
        }
        _ => {
            let user = format!("bench-at-{i}");
            sms.add_at_account(&user, "atsk_bench_0123456789", 1e9);
            format!(
                "[[bots]]\nid = \"sms{i}\"\ntenant = \"bench\"\nplatform = \"sms\"\nprovider = \"africastalking\"\n\
                 username = \"{user}\"\napi_key = \"atsk_bench_0123456789\"\napi_base = \"{}\"\n",
                sms.base_url()
            )
        }
    }
}

/// Starts a gateway with `n` bots and waits until all are running: (time, CPU s).
async fn run(n: usize) -> anyhow::Result<(Duration, f64)> {
    let tg = TelegramSim::start(TelegramConfig::default()).await?;
    let wa = WhatsAppSim::start(WhatsAppConfig::default()).await?;
    let sms = SmsSim::start(SmsConfig::without_rate_limits()).await?;
    let bots: String = (0..n).map(|i| bot(i, &tg, &wa, &sms)).collect();
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let g = crate::harness::start("sqlite", "FULL", |listen| {
        format!("[server]\nlisten = \"{listen}\"\ntenant_rate_limit = \"none\"\n{bots}")
    })
    .await?;
    loop {
        let bots = g.gateway.store.all_bots().await?;
        let running = bots.iter().filter(|b| b.state == BotState::Running).count();
        if running == n {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "{running} of {n} bots running after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let cpu = cpu_seconds() - cpu0;
    g.gateway.shutdown().await;
    tg.shutdown();
    wa.shutdown();
    sms.shutdown();
    Ok((took, cpu))
}

pub async fn bots(n: usize) -> anyhow::Result<()> {
    let (one, one_cpu) = run(1).await?;
    let rss_one = peak_rss_mib();
    let (all, all_cpu) = run(n).await?;
    println!("scenario: bots  bots={n} (Telegram polling, WhatsApp, SMS in turn; SQLite)");
    println!("| run | bots | all running after | CPU s | peak RSS MiB (process) |");
    println!("|---|---|---|---|---|");
    println!(
        "| baseline: one bot | 1 | {:.0} ms | {one_cpu:.1} | {rss_one:.0} |",
        one.as_secs_f64() * 1e3
    );
    println!(
        "| {n} bots | {n} | {:.0} ms | {all_cpu:.1} | {:.0} |",
        all.as_secs_f64() * 1e3,
        peak_rss_mib()
    );
    Ok(())
}
