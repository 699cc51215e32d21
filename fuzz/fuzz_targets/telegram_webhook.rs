//! A Telegram update with the right secret: the parser sees whatever the body is.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use switchboard_core::connector::Connector;
use switchboard_core::model::Platform;
use switchboard_fuzz::{connector, fuzz_webhook, post, webhook};

const SECRET: &str = "fuzz-secret-token";

fn one(body: &[u8]) -> u16 {
    static BOT: OnceLock<Arc<dyn Connector>> = OnceLock::new();
    let bot = BOT.get_or_init(|| {
        connector(
            Platform::Telegram,
            serde_json::json!({"mode": "webhook", "api_base": "http://127.0.0.1:9"}),
            &[("token", "123:fuzz"), ("webhook_secret", SECRET)],
        )
    });
    let headers = vec![
        ("content-type".into(), "application/json".into()),
        ("x-telegram-bot-api-secret-token".into(), SECRET.into()),
    ];
    webhook(bot, post("", "", headers, body))
}

fuzz_target!(|data: &[u8]| {
    fuzz_webhook(
        data,
        include_bytes!("../seeds/telegram_webhook/text.json"),
        one,
    )
});
