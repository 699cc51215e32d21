//! A Twilio callback signed over `server.public_url` and the form's parameters; the first
//! byte picks the status-callback or the inbound-SMS route, the rest is the form.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use switchboard_core::connector::Connector;
use switchboard_core::model::Platform;
use switchboard_fuzz::{BOT_ID, PUBLIC_URL, connector, fuzz_webhook, post, sms_route, webhook};

const AUTH_TOKEN: &str = "fuzz-auth-token";

fn one(data: &[u8]) -> u16 {
    static BOT: OnceLock<Arc<dyn Connector>> = OnceLock::new();
    let bot = BOT.get_or_init(|| {
        connector(
            Platform::Sms,
            serde_json::json!({"provider": "twilio", "account_sid": "ACfuzz", "from": "+15005550006", "api_base": "http://127.0.0.1:9"}),
            &[("auth_token", AUTH_TOKEN)],
        )
    });
    let Some((&first, body)) = data.split_first() else {
        return 0;
    };
    let subpath = sms_route(first);
    let params: Vec<(String, String)> = url_form(body);
    let url = format!("{PUBLIC_URL}/webhooks/sms/{BOT_ID}{subpath}");
    let signature = switchboard_connectors::sms::twilio_signature(AUTH_TOKEN, &url, &params);
    let headers = vec![
        (
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ),
        ("x-twilio-signature".into(), signature),
    ];
    webhook(bot, post(subpath, "", headers, body))
}

fn url_form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fuzz_target!(|data: &[u8]| {
    fuzz_webhook(
        data,
        include_bytes!("../seeds/sms_twilio_webhook/inbound"),
        one,
    )
});
