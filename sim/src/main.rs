//! `switchboard-sim`: runs the platform simulators as a standalone server.
//!
//! `switchboard-sim --listen 127.0.0.1:9000 [--bot TOKEN=USERNAME]...
//! [--whatsapp-listen 127.0.0.1:9001] [--whatsapp-phone ID=TOKEN:APP_SECRET[:WEBHOOK_URL]]...
//! [--discord-listen 127.0.0.1:9002] [--discord-bot TOKEN=USERNAME]...
//! [--sms-listen 127.0.0.1:9003] [--sms-account PROVIDER:ACCOUNT=SECRET]... [--no-rate-limits]`
//! serves the Telegram Bot API, WhatsApp Cloud API, Discord and SMS (Twilio, Africa's Talking,
//! BulkSMS) simulators, each with the control API (`/_sim/...`) on its own port, and prints
//! their base URLs on stdout: Telegram's on the first line, WhatsApp's on the second,
//! Discord's on the third, the SMS providers' on the fourth.

use std::net::SocketAddr;

use clap::Parser;
use switchboard_sim::{
    DiscordConfig, DiscordSim, PhoneNumber, Provider, SmsConfig, SmsSim, TelegramConfig,
    TelegramSim, WhatsAppConfig, WhatsAppSim,
};

/// The balance (USD, KES or credits) of SMS accounts created from the command line.
const SMS_START_BALANCE: f64 = 1000.0;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard-sim",
    about = "Loopback simulator of messaging platform APIs"
)]
struct Args {
    /// Address the Telegram simulator listens on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// A bot to create at start-up, as TOKEN=USERNAME (repeatable).
    #[arg(long = "bot", value_parser = parse_bot)]
    bots: Vec<(String, String)>,
    /// Address the WhatsApp simulator listens on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    whatsapp_listen: SocketAddr,
    /// A WhatsApp business phone number to create at start-up, as
    /// ID=TOKEN:APP_SECRET[:WEBHOOK_URL] (repeatable).
    #[arg(long = "whatsapp-phone", value_parser = parse_phone)]
    phones: Vec<PhoneNumber>,
    /// Address the Discord simulator (REST and gateway) listens on.
    #[arg(long, default_value = "127.0.0.1:9002")]
    discord_listen: SocketAddr,
    /// A Discord bot to create at start-up, as TOKEN=USERNAME (repeatable).
    #[arg(long = "discord-bot", value_parser = parse_bot)]
    discord_bots: Vec<(String, String)>,
    /// Address the SMS simulator (Twilio, Africa's Talking, BulkSMS) listens on.
    #[arg(long, default_value = "127.0.0.1:9003")]
    sms_listen: SocketAddr,
    /// An SMS account to create at start-up with a balance of 1000, as
    /// PROVIDER:ACCOUNT=SECRET, PROVIDER one of twilio, africastalking, bulksms (repeatable).
    #[arg(long = "sms-account", value_parser = parse_sms_account)]
    sms_accounts: Vec<(Provider, String, String)>,
    /// Disable the platforms' rate limits (for benchmarks of the gateway itself).
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

fn parse_phone(value: &str) -> Result<PhoneNumber, String> {
    let usage = || "expected ID=TOKEN:APP_SECRET[:WEBHOOK_URL]".to_owned();
    let (id, rest) = value.split_once('=').ok_or_else(usage)?;
    let mut parts = rest.splitn(3, ':');
    let token = parts.next().filter(|t| !t.is_empty()).ok_or_else(usage)?;
    let secret = parts.next().filter(|s| !s.is_empty()).ok_or_else(usage)?;
    if id.is_empty() {
        return Err(usage());
    }
    let mut phone = PhoneNumber::new(id, token, secret);
    phone.callback_url = parts.next().filter(|u| !u.is_empty()).map(str::to_owned);
    Ok(phone)
}

fn parse_sms_account(value: &str) -> Result<(Provider, String, String), String> {
    let usage = || "expected PROVIDER:ACCOUNT=SECRET".to_owned();
    let (provider, rest) = value.split_once(':').ok_or_else(usage)?;
    let provider = provider.parse::<Provider>().map_err(|e| e.to_string())?;
    match rest.split_once('=') {
        Some((account, secret)) if !account.is_empty() && !secret.is_empty() => {
            Ok((provider, account.to_owned(), secret.to_owned()))
        }
        _ => Err(usage()),
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
    let (telegram_config, whatsapp_config) = if args.no_rate_limits {
        (
            TelegramConfig::without_rate_limits(),
            WhatsAppConfig::without_rate_limits(),
        )
    } else {
        (TelegramConfig::default(), WhatsAppConfig::default())
    };
    let telegram = TelegramSim::start_on(args.listen, telegram_config).await?;
    for (token, username) in &args.bots {
        let id = telegram.add_bot(token, username);
        tracing::info!(bot = %username, id, "bot added");
    }
    let whatsapp = WhatsAppSim::start_on(args.whatsapp_listen, whatsapp_config).await?;
    for phone in args.phones {
        tracing::info!(phone_number_id = %phone.phone_number_id, "WhatsApp phone number added");
        whatsapp.add_phone_number(phone);
    }
    let discord_config = if args.no_rate_limits {
        DiscordConfig::unlimited()
    } else {
        DiscordConfig::default()
    };
    let discord = DiscordSim::start_on(args.discord_listen, discord_config).await?;
    for (token, username) in &args.discord_bots {
        let id = discord.add_bot(token, username);
        tracing::info!(bot = %username, id, "Discord bot added");
    }
    let sms_config = if args.no_rate_limits {
        SmsConfig::without_rate_limits()
    } else {
        SmsConfig::default()
    };
    let sms = SmsSim::start_on(args.sms_listen, sms_config).await?;
    for (provider, account, secret) in &args.sms_accounts {
        match provider {
            Provider::Twilio => sms.add_twilio_account(account, secret, SMS_START_BALANCE),
            Provider::AfricasTalking => sms.add_at_account(account, secret, SMS_START_BALANCE),
            Provider::BulkSms => sms.add_bulksms_account(account, secret, SMS_START_BALANCE),
        }
        tracing::info!(%provider, %account, "SMS account added");
    }
    println!("{}", telegram.base_url());
    println!("{}", whatsapp.base_url());
    println!("{}", discord.base_url());
    println!("{}", sms.base_url());
    tracing::info!(base_url = %telegram.base_url(), "Telegram Bot API simulator ready; control API under /_sim/");
    tracing::info!(base_url = %whatsapp.base_url(), "WhatsApp Cloud API simulator ready; control API under /_sim/whatsapp/");
    tracing::info!(base_url = %discord.base_url(), "Discord simulator ready (REST under /api/v10, gateway at /); control API under /_sim/discord/");
    tracing::info!(base_url = %sms.base_url(), "SMS simulator ready (Twilio, Africa's Talking, BulkSMS); control API under /_sim/sms/");
    tokio::signal::ctrl_c().await?;
    sms.shutdown();
    discord.shutdown();
    telegram.shutdown();
    whatsapp.shutdown();
    Ok(())
}
