//! A africastalking callback with the bot's webhook secret; the first byte picks the delivery-report
//! or the inbound-SMS route, the rest is the body (the form or JSON the provider posts).
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use switchboard_core::connector::Connector;
use switchboard_core::model::Platform;
use switchboard_fuzz::{accepts, connector, post, webhook};

const SECRET: &str = "fuzz-callback-secret";

fn one(data: &[u8]) -> u16 {
    static BOT: OnceLock<Arc<dyn Connector>> = OnceLock::new();
    let bot = BOT.get_or_init(|| {
        connector(Platform::Sms, serde_json::json!({"provider": "africastalking", "username": "fuzz", "from": "20880", "default_region": "KE", "api_base": "http://127.0.0.1:9"}), &[("api_key", "fuzz-key"), ("webhook_secret", SECRET)])
    });
    let Some((route, body)) = data.split_first() else {
        return 0;
    };
    let subpath = if route % 2 == 0 {
        "/status"
    } else {
        "/inbound"
    };
    let content_type = if route & 2 == 0 {
        "application/x-www-form-urlencoded"
    } else {
        "application/json"
    };
    let headers = vec![("content-type".into(), content_type.into())];
    webhook(
        bot,
        post(subpath, &format!("secret={SECRET}"), headers, body),
    )
}

fuzz_target!(|data: &[u8]| {
    static SEED: std::sync::Once = std::sync::Once::new();
    SEED.call_once(|| {
        accepts(
            one(include_bytes!(
                "../seeds/sms_africastalking_webhook/inbound"
            )),
            "inbound",
        )
    });
    one(data);
});
