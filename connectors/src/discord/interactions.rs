//! Discord interactions: HTTP ones at `/webhooks/discord/{bot}/interactions` and those the
//! gateway dispatches (INTERACTION_CREATE), answered the same way.
//!
//! An HTTP interaction is verified before anything is parsed: Ed25519 with the
//! application's public key over `X-Signature-Timestamp` + the raw body, and a timestamp more
//! than 5 minutes off is refused (a replay); both answer 401 and store nothing. A PING gets a
//! PONG. Commands, button presses and modal submissions are stored as inbound messages, then
//! answered (Discord waits 3 s at most): a command with the bot's `command_ack`, shown to its
//! user only (the reply comes later through `POST /v1/messages`; a deferred "thinking" would
//! never be completed), a button press with a silent acknowledgement.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde_json::{Value, json};
use switchboard_core::connector::{InboundSink, WebhookRequest, WebhookResponse};
use twilight_model::http::interaction::{InteractionResponse, InteractionResponseType};
use twilight_model::id::Id;

use std::sync::Arc;

use super::DiscordConnector;
use super::inbound::{self, APPLICATION_COMMAND, AUTOCOMPLETE, MESSAGE_COMPONENT, PING};
use super::rest::Rest;

/// How far `X-Signature-Timestamp` may be from our clock.
const MAX_SKEW_SECS: i64 = 300;

/// Signs an interaction body as Discord does (for simulators and tests): the hex signature
/// and the timestamp headers' values.
pub fn sign_interaction(key: &SigningKey, timestamp: &str, body: &[u8]) -> String {
    let mut signed = timestamp.as_bytes().to_vec();
    signed.extend_from_slice(body);
    hex::encode(key.sign(&signed).to_bytes())
}

/// Checks the signature headers; what is wrong otherwise.
pub(crate) fn verify(
    key: &VerifyingKey,
    request: &WebhookRequest,
    now: i64,
) -> Result<(), &'static str> {
    let signature = request
        .header("x-signature-ed25519")
        .ok_or("X-Signature-Ed25519 is missing")?;
    let timestamp = request
        .header("x-signature-timestamp")
        .ok_or("X-Signature-Timestamp is missing")?;
    let bytes: [u8; 64] = hex::decode(signature.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("X-Signature-Ed25519 is not a hex Ed25519 signature")?;
    let mut signed = timestamp.as_bytes().to_vec();
    signed.extend_from_slice(&request.body);
    key.verify(&signed, &Signature::from_bytes(&bytes))
        .map_err(|_| "the signature does not match the body")?;
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| "X-Signature-Timestamp is not unix seconds")?;
    if (now - at).abs() > MAX_SKEW_SECS {
        return Err("X-Signature-Timestamp is more than 5 minutes off (a replay?)");
    }
    Ok(())
}

/// The response that answers an interaction at once: a command gets the bot's `command_ack`,
/// shown only to the user who ran it (its real reply comes later as a message through the
/// API: a deferred "thinking" would never be completed and end in "did not respond"); a
/// button press or a form is acknowledged silently; autocomplete offers no choices.
pub(crate) fn answer(kind: u64, command_ack: &str) -> Option<InteractionResponse> {
    use twilight_model::channel::message::MessageFlags;
    use twilight_model::http::interaction::InteractionResponseData;
    let (kind, data) = match kind {
        APPLICATION_COMMAND => (
            InteractionResponseType::ChannelMessageWithSource,
            Some(InteractionResponseData {
                content: Some(command_ack.to_owned()),
                flags: Some(MessageFlags::EPHEMERAL),
                ..Default::default()
            }),
        ),
        MESSAGE_COMPONENT | inbound::MODAL_SUBMIT => {
            (InteractionResponseType::DeferredUpdateMessage, None)
        }
        AUTOCOMPLETE => (
            InteractionResponseType::ApplicationCommandAutocompleteResult,
            Some(InteractionResponseData {
                choices: Some(Vec::new()),
                ..Default::default()
            }),
        ),
        _ => return None,
    };
    Some(InteractionResponse { kind, data })
}

pub(crate) async fn handle(
    connector: &DiscordConnector,
    request: WebhookRequest,
    sink: &dyn InboundSink,
) -> WebhookResponse {
    if request.subpath.trim_end_matches('/') != "/interactions" {
        return WebhookResponse::text(
            404,
            "Discord posts to /webhooks/discord/{bot_id}/interactions",
        );
    }
    if request.method != "POST" {
        return WebhookResponse::text(405, "POST only");
    }
    let Some(key) = connector.settings.public_key.as_ref() else {
        return WebhookResponse::text(
            401,
            "this bot has no application_public_key to verify interactions with",
        );
    };
    if let Err(why) = verify(key, &request, chrono::Utc::now().timestamp()) {
        tracing::warn!(bot = %connector.bot_id, why, "Discord interaction refused");
        return WebhookResponse::text(401, why);
    }
    let payload: Value = match serde_json::from_slice(&request.body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return WebhookResponse::text(400, "the body is not a JSON object"),
    };
    let kind = payload["type"].as_u64().unwrap_or(0);
    if kind == PING {
        return WebhookResponse::json(200, &json!({ "type": 1 }));
    }
    let Some(response) = answer(kind, &connector.settings.command_ack) else {
        return WebhookResponse::text(400, format!("unknown interaction type {kind}"));
    };
    if let Some(event) = inbound::interaction(&payload)
        && let Err(e) = sink.deliver(&connector.bot_id, vec![event]).await
    {
        tracing::error!(bot = %connector.bot_id, error = %e, "cannot store a Discord interaction");
        return WebhookResponse::text(500, "not stored");
    }
    let body = serde_json::to_value(&response).unwrap_or(json!({ "type": 6 }));
    WebhookResponse::json(200, &body)
}

/// Answers a gateway INTERACTION_CREATE through REST, after it was stored.
pub(crate) async fn acknowledge(bot_id: String, rest: Arc<Rest>, command_ack: String, d: Value) {
    let (Some(id), Some(token), Some(kind)) = (
        d["id"].as_str().and_then(super::snowflake),
        d["token"].as_str(),
        d["type"].as_u64(),
    ) else {
        return;
    };
    let Some(response) = answer(kind, &command_ack) else {
        return;
    };
    let application = d["application_id"]
        .as_str()
        .and_then(super::snowflake)
        .unwrap_or(1);
    let client = rest.build().interaction(Id::new(application));
    let request = client.create_response(Id::new(id), token, &response);
    if let Err(e) = rest.execute(request, None).await {
        tracing::warn!(bot = %bot_id, error = %e, "cannot acknowledge a Discord interaction");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(key: &SigningKey, timestamp: &str, body: &str, tamper: bool) -> WebhookRequest {
        let signature = sign_interaction(key, timestamp, body.as_bytes());
        WebhookRequest {
            method: "POST".into(),
            subpath: "/interactions".into(),
            query: String::new(),
            headers: vec![
                ("x-signature-ed25519".into(), signature),
                ("x-signature-timestamp".into(), timestamp.into()),
            ],
            body: if tamper {
                format!("{body} ").into_bytes()
            } else {
                body.as_bytes().to_vec()
            },
        }
    }

    #[test]
    fn signatures_are_checked_over_timestamp_and_body_and_stale_ones_refused() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = key.verifying_key();
        let now = 1_800_000_000;
        let ok = request(&key, &now.to_string(), r#"{"type":1}"#, false);
        assert_eq!(verify(&public, &ok, now), Ok(()));
        let forged = request(&key, &now.to_string(), r#"{"type":1}"#, true);
        assert!(verify(&public, &forged, now).is_err());
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert!(verify(&other, &ok, now).is_err());
        let stale = request(&key, &(now - 600).to_string(), r#"{"type":1}"#, false);
        assert!(
            verify(&public, &stale, now)
                .unwrap_err()
                .contains("5 minutes")
        );
    }

    #[test]
    fn commands_get_an_ephemeral_answer_and_buttons_a_silent_one() {
        let command = serde_json::to_value(answer(APPLICATION_COMMAND, "ok!").unwrap()).unwrap();
        assert_eq!(command["type"], 4);
        assert_eq!(command["data"]["content"], "ok!");
        assert_eq!(command["data"]["flags"], 64);
        let button = serde_json::to_value(answer(MESSAGE_COMPONENT, "ok!").unwrap()).unwrap();
        assert_eq!(button["type"], 6);
        assert!(answer(99, "ok!").is_none());
    }
}
