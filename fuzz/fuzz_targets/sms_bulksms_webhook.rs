//! A BulkSMS callback with the bot's webhook secret; the first byte picks the delivery-report
//! or the inbound-SMS route and the body's type, the rest is the body.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use switchboard_core::connector::Connector;
use switchboard_core::model::Platform;
use switchboard_fuzz::{CALLBACK_SECRET, connector, fuzz_webhook, secret_callback};

fn one(data: &[u8]) -> u16 {
    static BOT: OnceLock<Arc<dyn Connector>> = OnceLock::new();
    let bot = BOT.get_or_init(|| {
        connector(
            Platform::Sms,
            serde_json::json!({"provider": "bulksms", "username": "fuzz", "from": "Fuzz", "default_region": "KE", "api_base": "http://127.0.0.1:9"}),
            &[("password", "fuzz-password"), ("webhook_secret", CALLBACK_SECRET)],
        )
    });
    secret_callback(bot, data)
}

fuzz_target!(|data: &[u8]| {
    fuzz_webhook(
        data,
        include_bytes!("../seeds/sms_bulksms_webhook/inbound_json"),
        one,
    )
});
