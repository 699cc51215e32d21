//! Twilio's webhooks: status callbacks (form POSTs to the `StatusCallback` given at create,
//! one per status change: `sent`, then `delivered`, `undelivered` or `failed`, with
//! `ErrorCode` on failure) and inbound SMS (form POSTs to the number's SMS URL), both signed
//! with `X-Twilio-Signature` under the account's auth token.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use serde_json::json;

use super::delivery::{Hook, Outcome, Stage};
use super::twilio::API_VERSION;
use super::{Provider, SmsSim, SmsSimError, WebhookKind, segments, wire};

const FORM: &str = "application/x-www-form-urlencoded";

/// `X-Twilio-Signature`: base64(HMAC-SHA1(auth_token, `url` exactly as configured followed
/// by every POST parameter's name and value, sorted by name then value; identical pairs
/// count once, as Twilio's helper libraries do)).
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut data = url.to_owned();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    match hmac::Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()) {
        Ok(mut mac) => {
            mac.update(data.as_bytes());
            STANDARD.encode(mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length; this arm is unreachable.
        Err(_) => String::new(),
    }
}

/// What a trip needs to report a Twilio message's stages.
#[derive(Debug, Clone)]
pub(crate) struct Reporting {
    pub(super) account_sid: String,
    pub(super) auth_token: String,
    pub(super) from: String,
    pub(super) callback: Option<String>,
    pub(super) price: f64,
}

/// Updates the message resource and builds the status callback (if one was given).
pub(super) fn report(
    sim: &SmsSim,
    r: &Reporting,
    sid: &str,
    to: &str,
    stage: &Stage,
) -> Option<Hook> {
    let (status, error_code) = match stage {
        Stage::Sent => ("sent", None),
        Stage::Final(Outcome::Delivered) => ("delivered", None),
        Stage::Final(Outcome::Undelivered(code)) => ("undelivered", Some(code.as_str())),
        Stage::Final(Outcome::Failed(code)) => ("failed", Some(code.as_str())),
    };
    if let Some(resource) = sim.world().twilio_messages.get_mut(sid) {
        let now = wire::rfc2822_now();
        resource["status"] = json!(status);
        resource["from"] = json!(r.from);
        resource["date_updated"] = json!(now);
        if *stage == Stage::Sent {
            resource["date_sent"] = json!(now);
            resource["price"] = json!(format!("-{:.5}", r.price));
        }
        if let Some(code) = error_code {
            resource["error_code"] = code.parse::<u32>().map_or(json!(code), |n| json!(n));
        }
    }
    let url = r.callback.clone()?;
    let mut params = wire::pairs(&[
        ("MessageSid", sid),
        ("SmsSid", sid),
        ("MessageStatus", status),
        ("SmsStatus", status),
        ("AccountSid", &r.account_sid),
        ("From", &r.from),
        ("To", to),
        ("ApiVersion", API_VERSION),
    ]);
    if let Some(code) = error_code {
        params.push(("ErrorCode".to_owned(), code.to_owned()));
    }
    Some(signed_hook(WebhookKind::Status, url, &r.auth_token, params))
}

fn signed_hook(
    kind: WebhookKind,
    url: String,
    auth_token: &str,
    params: Vec<(String, String)>,
) -> Hook {
    Hook {
        provider: Provider::Twilio,
        kind,
        signature: Some(twilio_signature(auth_token, &url, &params)),
        body: wire::form_body(&params),
        url,
        content_type: FORM,
    }
}

/// The webhook for a user's message to `to`, on that number's SMS URL.
pub(super) fn inbound_hook(
    sim: &SmsSim,
    account_sid: &str,
    from: &str,
    to: &str,
    body: &str,
) -> Result<Hook, SmsSimError> {
    let world = sim.world();
    let account = world
        .twilio
        .get(account_sid)
        .ok_or_else(|| SmsSimError::UnknownAccount(Provider::Twilio, account_sid.to_owned()))?;
    let url = world
        .twilio_sms_urls
        .get(to)
        .cloned()
        .ok_or_else(|| SmsSimError::NoWebhookUrl(Provider::Twilio, to.to_owned()))?;
    let service = account
        .services
        .iter()
        .find(|(_, pool)| pool.iter().any(|n| n == to))
        .map_or("", |(sid, _)| sid.as_str());
    let sid = wire::hex_id("SM");
    let segments = segments::segment(body).segments.to_string();
    let params = wire::pairs(&[
        ("MessageSid", &sid),
        ("SmsSid", &sid),
        ("SmsMessageSid", &sid),
        ("AccountSid", account_sid),
        ("MessagingServiceSid", service),
        ("From", from),
        ("To", to),
        ("Body", body),
        ("NumMedia", "0"),
        ("NumSegments", &segments),
        ("SmsStatus", "received"),
        ("ApiVersion", API_VERSION),
    ]);
    Ok(signed_hook(
        WebhookKind::Inbound,
        url,
        &account.auth_token,
        params,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_params() -> Vec<(String, String)> {
        wire::pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    #[test]
    fn sms_twilio_signature_matches_twilios_published_vector() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let mut params = vector_params();
        params.reverse();
        let signature = twilio_signature("12345", url, &params);
        assert_eq!(signature, "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert_ne!(
            twilio_signature("12345", &format!("{url}&x=1"), &params),
            signature
        );
    }

    #[test]
    fn sms_twilio_signature_sorts_repeated_params_and_counts_duplicates_once() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = wire::pairs(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(
            twilio_signature("12345", url, &params),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
    }
}
