//! Switchboard's platform simulator: loopback models of the messaging platforms' APIs, for
//! end-to-end tests, benchmarks and `switchboard demo`.
//!
//! Each simulator models a platform as PLATFORMS.md documents it (paths, envelopes, error
//! texts, flood limits, webhooks), not as Switchboard uses it, and depends on no Switchboard
//! crate, so the real client crates (teloxide, reqwest...) run against it unchanged with only
//! their base URL pointed at 127.0.0.1.
//!
//! - [`framework`]: what every platform shares: request log, counters, fault injection, token
//!   buckets, and the server that can drop connections on purpose.
//! - [`control`]: the JSON control API under `/_sim/` for callers outside Rust.
//! - [`telegram`]: the Telegram Bot API ([`TelegramSim`]).
//! - [`discord`]: Discord's REST API and gateway ([`DiscordSim`]).
//! - [`whatsapp`]: the WhatsApp Cloud API on Meta's Graph ([`WhatsAppSim`]).
//! - [`sms`]: Twilio, Africa's Talking and BulkSMS on one port ([`SmsSim`]).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use switchboard_sim::{TelegramConfig, TelegramSim, UserMessage};
//! let sim = TelegramSim::start(TelegramConfig::default()).await?;
//! sim.add_bot("123:secret", "demo_bot");
//! sim.user_message("123:secret", UserMessage::text(42, 42, "hello"));
//! // a bot now finds the update at {sim.base_url()}/bot123:secret/getUpdates
//! # Ok(()) }
//! ```

pub mod control;
pub mod discord;
pub mod framework;
pub mod sms;
pub mod telegram;
pub mod whatsapp;

pub use discord::{DcSent, DiscordConfig, DiscordSim, DiscordSimError, InteractionReply};
pub use framework::rate::Rate;
pub use framework::{Counters, Faults, RecordedRequest};
pub use sms::{
    Provider, SmsConfig, SmsSent, SmsSim, SmsSimError, SmsWebhook, WebhookKind, twilio_signature,
};
pub use telegram::{
    ChatType, SentMessage, SimError, TelegramConfig, TelegramSim, UserMessage, WebhookInfo,
};
pub use whatsapp::{
    PhoneNumber, WaInbound, WaSent, WaUserMessage, WebhookDelivery, WhatsAppConfig, WhatsAppSim,
    WhatsAppSimError,
};
