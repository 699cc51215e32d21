//! A WhatsApp notification correctly signed with the app secret: the parser sees whatever
//! the body is.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use switchboard_core::connector::Connector;
use switchboard_core::model::Platform;
use switchboard_fuzz::{connector, fuzz_webhook, post, webhook};

const APP_SECRET: &str = "fuzz-app-secret";

fn one(body: &[u8]) -> u16 {
    static BOT: OnceLock<Arc<dyn Connector>> = OnceLock::new();
    let bot = BOT.get_or_init(|| {
        connector(
            Platform::Whatsapp,
            serde_json::json!({"phone_number_id": "1000", "api_base": "http://127.0.0.1:9"}),
            &[
                ("access_token", "fuzz-token"),
                ("app_secret", APP_SECRET),
                ("verify_token", "fuzz-verify"),
            ],
        )
    });
    let signature = switchboard_connectors::whatsapp::sign(APP_SECRET.as_bytes(), body);
    let headers = vec![
        ("content-type".into(), "application/json".into()),
        ("x-hub-signature-256".into(), signature),
    ];
    webhook(bot, post("", "", headers, body))
}

fuzz_target!(|data: &[u8]| {
    fuzz_webhook(
        data,
        include_bytes!("../seeds/whatsapp_webhook/messages.json"),
        one,
    )
});
