//! HTTP interactions: instead of the gateway, Discord POSTs interactions to the application's
//! Interactions Endpoint URL, signed with the application's Ed25519 key.
//!
//! Each POST carries `X-Signature-Ed25519` (hex signature of timestamp + raw body) and
//! `X-Signature-Timestamp`; the application must verify it and answer 401 when it is wrong.
//! A PING (`{"type":1}`) must get `{"type":1}`; a command must get its response (e.g.
//! `{"type":4,"data":{"content":"..."}}`) within 3 s, else Discord reports the interaction
//! failed. Saving the URL in the developer portal checks both: a signed PING and a PING with
//! a bad signature ([`DiscordSim::verify_interactions_endpoint`]).

use std::time::{Duration, Instant};

use anyhow::Context;
use ed25519_dalek::{Signer, SigningKey};
use rand::Rng;
use serde_json::{Value, json};

use super::state::Interaction;
use super::{DcSent, DiscordSim, shapes};
use crate::framework::{bump, unix_now};

/// How long Discord waits for the response to an interaction.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(3);

/// A fresh application key.
pub(crate) fn new_signing_key() -> SigningKey {
    SigningKey::from_bytes(&rand::rng().random::<[u8; 32]>())
}

/// The application's answer to one interaction POST.
#[derive(Debug, Clone)]
pub struct InteractionReply {
    pub status: u16,
    /// The answer as JSON (Null if it is not JSON).
    pub body: Value,
    /// How long the application took to answer.
    pub took: Duration,
}

impl DiscordSim {
    /// The application's public key, hex, as the developer portal shows it.
    pub fn public_key(&self, token: &str) -> Option<String> {
        let world = self.world();
        let bot = world.bots.get(token)?;
        Some(hex::encode(bot.signing_key.verifying_key().to_bytes()))
    }

    /// Sets the application's Interactions Endpoint URL (without Discord's check; see
    /// [`verify_interactions_endpoint`](Self::verify_interactions_endpoint)).
    pub fn set_interactions_endpoint(&self, token: &str, url: &str) {
        if let Some(bot) = self.world().bots.get_mut(token) {
            bot.interactions_url = Some(url.to_owned());
        }
    }

    /// Discord's check when the URL is saved: a signed PING must be answered `{"type":1}` and
    /// a PING with a wrong signature must be answered 401. Ok(true) when both are.
    pub async fn verify_interactions_endpoint(&self, token: &str) -> anyhow::Result<bool> {
        let ping = json!({ "type": 1, "id": shapes::snowflake(), "version": 1 });
        let signed = self.post_interaction(token, &ping, true).await?;
        let forged = self.post_interaction(token, &ping, false).await?;
        Ok(signed.status == 200 && signed.body["type"] == 1 && forged.status == 401)
    }

    /// A user runs the slash command `/name` in a channel: the interaction (type 2) is POSTed,
    /// signed, to the Interactions Endpoint URL. A type 4 answer is recorded in
    /// [`sent`](Self::sent); the interaction can also be answered through
    /// `POST /interactions/{id}/{token}/callback`. Fails if no answer comes within 3 s.
    pub async fn slash_command(
        &self,
        token: &str,
        channel_id: &str,
        user_id: &str,
        name: &str,
    ) -> anyhow::Result<InteractionReply> {
        let (interaction, id) = {
            let mut world = self.world();
            let bot = world.bots.get(token).context("unknown bot token")?;
            let application_id = bot.user_id.clone();
            let guild_id = world
                .channels
                .get(channel_id)
                .context("unknown channel")?
                .guild_id()
                .map(str::to_owned);
            let id = shapes::snowflake();
            let interaction_token = format!("aW50ZXJhY3Rpb24{}", shapes::opaque(60));
            let interaction = shapes::interaction(shapes::InteractionParts {
                id: &id,
                token: &interaction_token,
                application_id: &application_id,
                channel_id,
                guild_id: guild_id.as_deref(),
                user: shapes::user(user_id, &format!("user{user_id}"), false),
                kind: 2,
                data: shapes::command_data(&application_id, name),
                message: None,
            });
            let pending = Interaction {
                token: interaction_token,
                channel_id: channel_id.to_owned(),
                acknowledged: false,
            };
            world.interactions.insert(id.clone(), pending);
            (interaction, id)
        };
        bump(&self.core().counters().updates_created, 1);
        let reply = self.post_interaction(token, &interaction, true).await?;
        if reply.status / 100 == 2 && reply.body["type"].is_u64() {
            bump(&self.core().counters().updates_delivered, 1);
            let mut world = self.world();
            if let Some(pending) = world.interactions.get_mut(&id) {
                pending.acknowledged = true;
            }
            world
                .sent
                .entry(channel_id.to_owned())
                .or_default()
                .push(DcSent {
                    message_id: String::new(),
                    channel_id: channel_id.to_owned(),
                    body: reply.body.clone(),
                    at: Instant::now(),
                });
        }
        Ok(reply)
    }

    /// POSTs an interaction to the bot's endpoint, with a valid signature or a forged one.
    async fn post_interaction(
        &self,
        token: &str,
        interaction: &Value,
        valid: bool,
    ) -> anyhow::Result<InteractionReply> {
        let (url, key) = {
            let world = self.world();
            let bot = world.bots.get(token).context("unknown bot token")?;
            let url = bot
                .interactions_url
                .clone()
                .context("the application has no Interactions Endpoint URL")?;
            (url, bot.signing_key.clone())
        };
        let body = interaction.to_string();
        let timestamp = unix_now().to_string();
        let signed = if valid {
            format!("{timestamp}{body}")
        } else {
            format!("{timestamp}{body} forged")
        };
        let signature = hex::encode(key.sign(signed.as_bytes()).to_bytes());
        let started = Instant::now();
        let response = reqwest::Client::new()
            .post(&url)
            .timeout(RESPONSE_DEADLINE)
            .header("content-type", "application/json")
            .header(
                "user-agent",
                "Discord-Interactions/1.0 (+https://discord.com)",
            )
            .header("x-signature-ed25519", signature)
            .header("x-signature-timestamp", timestamp)
            .body(body)
            .send()
            .await
            .with_context(|| format!("interaction POST to {url} got no answer within 3 s"))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .context("reading the interaction answer")?;
        Ok(InteractionReply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            took: started.elapsed(),
        })
    }
}
