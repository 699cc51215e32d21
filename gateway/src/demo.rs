//! `switchboard demo`: the gateway on a throwaway SQLite store, embedded platform simulators,
//! a demo tenant with an API key, a Telegram, a WhatsApp, a Discord and an SMS (Africa's
//! Talking) demo bot, simulated users writing
//! in and an echo reply from the bots, so a newcomer sees conversations and the live feed at
//! once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use switchboard_core::connector::SendOptions;
use switchboard_core::model::{Content, event_type};
use switchboard_core::secret::{Cipher, generate_api_key};
use switchboard_core::store::{NewOutbound, Recipient, Scope};
use switchboard_dashboard_api::Control;
use switchboard_sim::discord::{DiscordConfig, DiscordSim};
use switchboard_sim::sms::{SmsConfig, SmsSim};
use switchboard_sim::telegram::{ChatType, TelegramConfig, TelegramSim, UserMessage};
use switchboard_sim::whatsapp::{PhoneNumber, WaUserMessage, WhatsAppConfig, WhatsAppSim};

use crate::Gateway;
use crate::config;

const TENANT: &str = "demo";
const BOT: &str = "demo-telegram";
const BOT_TOKEN: &str = "700001:demo-bot-token-not-a-real-one";
const WA_BOT: &str = "demo-whatsapp";
const WA_PHONE_ID: &str = "106540352242922";
const WA_TOKEN: &str = "demo-whatsapp-access-token";
const WA_APP_SECRET: &str = "demo-whatsapp-app-secret";
const DC_BOT: &str = "demo-discord";
const DC_TOKEN: &str = "ODk5MDAw.demo-discord-bot-token";
const DC_GUILD: &str = "900000000000000001";
const DC_CHANNEL: &str = "900000000000000010";
const SMS_BOT: &str = "demo-sms";
const SMS_USER: &str = "demo";
const SMS_KEY: &str = "atsk_demo_not_a_real_key";
const SMS_CODE: &str = "40404";

const USERS: &[(i64, &str)] = &[
    (1001, "Amina"),
    (1002, "Kofi"),
    (1003, "Lena"),
    (1004, "Ravi"),
    (1005, "Sofia"),
];
const LINES: &[&str] = &[
    "Hi! Is my order on its way?",
    "What are your opening hours?",
    "Can I change my delivery address?",
    "Thanks, that helped.",
    "Do you ship to Nairobi?",
    "I'd like to talk to a person, please.",
];
const GROUP: (i64, &str) = (-1_001_234, "Demo customers group");

/// Runs the demo until SIGINT/SIGTERM.
pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("switchboard-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run_in(listen, &dir).await;
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the demo directory");
    }
    result
}

async fn run_in(listen: SocketAddr, dir: &std::path::Path) -> anyhow::Result<()> {
    let sim = TelegramSim::start(TelegramConfig::default())
        .await
        .context("starting the simulator")?;
    sim.add_bot(BOT_TOKEN, "switchboard_demo_bot");
    let wa = WhatsAppSim::start(WhatsAppConfig::default())
        .await
        .context("starting the WhatsApp simulator")?;
    wa.add_phone_number(PhoneNumber {
        phone_number_id: WA_PHONE_ID.into(),
        display_phone_number: "15550001111".into(),
        waba_id: "102290129340398".into(),
        access_token: WA_TOKEN.into(),
        app_secret: WA_APP_SECRET.into(),
        callback_url: None,
        verified_name: "Demo Ltd".into(),
    });
    let dc = DiscordSim::start(DiscordConfig::default())
        .await
        .context("starting the Discord simulator")?;
    dc.add_bot(DC_TOKEN, "switchboard-demo");
    dc.add_guild_channel(DC_GUILD, DC_CHANNEL, "support");
    for (id, name) in USERS {
        dc.add_dm_channel(&discord_dm(*id), name);
    }
    let dc_key = dc.public_key(DC_TOKEN).unwrap_or_default();
    let sms = SmsSim::start(SmsConfig::default())
        .await
        .context("starting the SMS simulator")?;
    sms.add_at_account(SMS_USER, SMS_KEY, 5000.0);
    let api_key = generate_api_key();
    let admin_token = format!("sbadm_{}", generate_api_key().trim_start_matches("sk_"));
    let env: HashMap<String, String> = [
        ("DEMO_MASTER_KEY", Cipher::generate_key()),
        ("DEMO_API_KEY", api_key.clone()),
        ("DEMO_ADMIN_TOKEN", admin_token.clone()),
        ("DEMO_BOT_TOKEN", BOT_TOKEN.to_string()),
        ("DEMO_WA_TOKEN", WA_TOKEN.to_string()),
        ("DEMO_WA_APP_SECRET", WA_APP_SECRET.to_string()),
        ("DEMO_DC_TOKEN", DC_TOKEN.to_string()),
        ("DEMO_SMS_KEY", SMS_KEY.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let toml = format!(
        r#"
[server]
listen = "{listen}"
public_url = "http://{listen}"
[storage]
url = "sqlite://{db}"
sqlite_synchronous = "NORMAL"
[security]
master_key = "env:DEMO_MASTER_KEY"
admin_token = "env:DEMO_ADMIN_TOKEN"
[[tenants]]
id = "{TENANT}"
name = "Demo Ltd"
api_keys = ["env:DEMO_API_KEY"]
[[bots]]
id = "{BOT}"
tenant = "{TENANT}"
platform = "telegram"
mode = "polling"
poll_timeout_s = 10
token = "env:DEMO_BOT_TOKEN"
api_base = "{sim}"
[[bots]]
id = "{WA_BOT}"
tenant = "{TENANT}"
platform = "whatsapp"
phone_number_id = "{WA_PHONE_ID}"
access_token = "env:DEMO_WA_TOKEN"
app_secret = "env:DEMO_WA_APP_SECRET"
verify_token = "demo-verify-token"
api_base = "{wa}"
[[bots]]
id = "{DC_BOT}"
tenant = "{TENANT}"
platform = "discord"
token = "env:DEMO_DC_TOKEN"
application_public_key = "{dc_key}"
api_base = "{dc}"
[[bots]]
id = "{SMS_BOT}"
tenant = "{TENANT}"
platform = "sms"
provider = "africastalking"
username = "{SMS_USER}"
api_key = "env:DEMO_SMS_KEY"
webhook_secret = "demo-callback-secret"
from = "{SMS_CODE}"
default_region = "KE"
api_base = "{sms_base}"
"#,
        db = dir.join("demo.db").display(),
        sim = sim.base_url(),
        wa = wa.base_url(),
        dc = dc.base_url(),
        sms_base = sms.base_url(),
    );
    let registry = switchboard_connectors::registry();
    let config = config::parse(&toml, dir, &env, &registry).map_err(|problems| {
        anyhow::anyhow!(
            "demo config: {}",
            problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let gateway = Gateway::start(config, registry).await?;
    let base = format!("http://{}", gateway.addr);
    wa.set_callback(WA_PHONE_ID, &format!("{base}/webhooks/whatsapp/{WA_BOT}"));
    sms.set_at_callbacks(
        SMS_USER,
        &format!("{base}/webhooks/sms/{SMS_BOT}/status?secret=demo-callback-secret"),
        &format!("{base}/webhooks/sms/{SMS_BOT}/inbound?secret=demo-callback-secret"),
    );
    dc.set_interactions_endpoint(
        DC_TOKEN,
        &format!("{base}/webhooks/discord/{DC_BOT}/interactions"),
    );
    println!(
        r#"
Switchboard demo is running.

  Gateway         {base}
  API key         {api_key}          (tenant "{TENANT}")
  Admin token     {admin_token}
  Simulators      {sim}             (Telegram Bot API; control API under /_sim)
                  {wa}             (WhatsApp Cloud API; control API under /_sim)
                  {dc}             (Discord REST + gateway; control API under /_sim)
                  {sms_base}             (SMS: Twilio, Africa's Talking, BulkSMS; control API under /_sim)

Simulated users write to the bots "{BOT}", "{WA_BOT}", "{DC_BOT}" and "{SMS_BOT}" every few
seconds; the bots echo. GET /v1/bots/{SMS_BOT}/balance shows the SMS account's balance.
Try:
  curl -s -H 'Authorization: Bearer {api_key}' {base}/v1/conversations
  curl -s -H 'Authorization: Bearer {api_key}' '{base}/v1/messages?limit=5'
  curl -s -H 'Authorization: Bearer {api_key}' -H 'content-type: application/json' \
       -d '{{"bot_id":"{BOT}","to":{{"chat_id":"1001"}},"content":{{"type":"text","text":"Hello from the API"}}}}' \
       {base}/v1/messages
  websocat '{ws}/v1/feed?since=0&access_token={api_key}'

Ctrl-C stops it (the demo's data lives in a temporary directory and is removed).
"#,
        sim = sim.base_url(),
        wa = wa.base_url(),
        dc = dc.base_url(),
        sms_base = sms.base_url(),
        ws = base.replace("http://", "ws://"),
    );
    let traffic = tokio::spawn(simulated_users(
        sim.clone(),
        wa.clone(),
        dc.clone(),
        sms.clone(),
    ));
    let echo = tokio::spawn(echo_replies(
        gateway.store.subscribe(),
        gateway.control.clone(),
        gateway.store.clone(),
    ));
    wait_for_signal().await;
    traffic.abort();
    echo.abort();
    gateway.shutdown().await;
    sim.shutdown();
    wa.shutdown();
    dc.shutdown();
    sms.shutdown();
    Ok(())
}

/// Users (and now and then a group) writing to the bot at a gentle pace.
/// The DM channel of a demo user with the Discord bot.
fn discord_dm(user: i64) -> String {
    format!("9100000000000{user}")
}

async fn simulated_users(sim: TelegramSim, wa: WhatsAppSim, dc: DiscordSim, sms: SmsSim) {
    sim.add_chat(BOT_TOKEN, GROUP.0, ChatType::Supergroup, Some(GROUP.1));
    let mut n = 0usize;
    loop {
        let (pause, user, line, in_group, platform) = {
            let mut rng = rand::rng();
            (
                rng.random_range(1500..4000),
                USERS[rng.random_range(0..USERS.len())],
                LINES[rng.random_range(0..LINES.len())],
                rng.random_range(0..5) == 0,
                rng.random_range(0..4),
            )
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        n += 1;
        if platform == 3 {
            let from = format!("+2547220{:05}", user.0);
            if let Err(e) = sms.at_inbound(SMS_USER, &from, SMS_CODE, line).await {
                tracing::warn!(error = %e, n, "demo traffic: the SMS simulator could not deliver an inbound SMS");
            }
            continue;
        }
        if platform == 2 {
            let author = format!("9200000000000{}", user.0);
            let channel = if in_group {
                DC_CHANNEL.to_string()
            } else {
                discord_dm(user.0)
            };
            if let Err(e) = dc.try_user_message(&channel, &author, user.1, line, None) {
                tracing::warn!(error = %e, n, "demo traffic: the Discord simulator refused a user message");
            }
            continue;
        }
        if platform == 1 {
            let from = format!("2547000{}", user.0);
            if let Err(e) =
                wa.try_user_message(WA_PHONE_ID, WaUserMessage::text(&from, user.1, line))
            {
                tracing::warn!(error = %e, n, "demo traffic: the WhatsApp simulator refused a user message");
            }
            continue;
        }
        let mut msg = UserMessage::text(user.0, user.0, line);
        msg.from_first_name = user.1.to_string();
        if in_group {
            msg.chat_id = GROUP.0;
            msg.chat_type = ChatType::Supergroup;
            msg.chat_title = Some(GROUP.1.to_string());
        }
        if let Err(e) = sim.try_user_message(BOT_TOKEN, msg) {
            tracing::warn!(error = %e, n, "demo traffic: the simulator refused a user message");
        }
    }
}

/// The demo bot's "business logic": echo every text it receives, as a reply.
async fn echo_replies(
    mut events: tokio::sync::broadcast::Receiver<std::sync::Arc<switchboard_core::model::Event>>,
    control: std::sync::Arc<crate::control::GatewayControl>,
    store: std::sync::Arc<switchboard_core::Store>,
) {
    loop {
        let e = match events.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        let Some(bot) = e
            .bot_id
            .as_deref()
            .filter(|b| [BOT, WA_BOT, DC_BOT, SMS_BOT].contains(b))
        else {
            continue;
        };
        if e.kind != event_type::MESSAGE_RECEIVED {
            continue;
        }
        let data = e.data_value();
        let (Some(conversation), Some(id), Some(text)) = (
            data["conversation_id"].as_str(),
            data["id"].as_str(),
            data["content"]["text"].as_str(),
        ) else {
            continue;
        };
        let reply = NewOutbound {
            tenant: TENANT.into(),
            bot_id: bot.into(),
            to: Recipient::Conversation(conversation.into()),
            content: Content::Text {
                text: format!("Echo: {text}"),
            },
            reply_to: Some(id.into()),
            idempotency: None,
            reply_window: None,
            chat_kind: None,
            segments: None,
        };
        let bot = match store.get_bot(&Scope::Tenant(TENANT.into()), bot).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "demo echo: the bot is gone");
                continue;
            }
        };
        if let Err(e) = control.submit(&bot, reply, SendOptions::default()).await {
            tracing::warn!(error = %e.detail, "demo echo not queued");
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
