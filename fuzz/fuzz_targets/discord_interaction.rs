//! A Discord interaction signed with the application's key and a fresh timestamp: the
//! parser sees whatever the body is. The first byte picks an unsigned or forged variant,
//! which must be refused.
#![no_main]
use std::sync::{Arc, OnceLock};

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use switchboard_core::connector::Connector;
use switchboard_core::model::Platform;
use switchboard_fuzz::{connector, fuzz_webhook, post, webhook};

fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_bytes(&[7u8; 32]))
}

fn one(data: &[u8]) -> u16 {
    static BOT: OnceLock<Arc<dyn Connector>> = OnceLock::new();
    let bot = BOT.get_or_init(|| {
        let public: String = key()
            .verifying_key()
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        connector(
            Platform::Discord,
            serde_json::json!({"application_public_key": public, "api_base": "http://127.0.0.1:9"}),
            &[("token", "fuzz.token.value")],
        )
    });
    let Some((mode, body)) = data.split_first() else {
        return 0;
    };
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    match mode % 3 {
        0 => {
            let sig = switchboard_connectors::discord::sign_interaction(key(), &timestamp, body);
            headers.push(("x-signature-ed25519".into(), sig));
            headers.push(("x-signature-timestamp".into(), timestamp));
        }
        1 => {
            let forged = String::from_utf8_lossy(body)
                .chars()
                .take(128)
                .collect::<String>();
            headers.push(("x-signature-ed25519".into(), forged));
            headers.push(("x-signature-timestamp".into(), timestamp));
        }
        _ => {}
    }
    webhook(bot, post("/interactions", "", headers, body))
}

fuzz_target!(|data: &[u8]| {
    fuzz_webhook(
        data,
        include_bytes!("../seeds/discord_interaction/ping"),
        one,
    )
});
