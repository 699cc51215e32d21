//! Small wire-level pieces the three providers share: ids, phone number checks, dates, HTTP
//! Basic credentials and form bodies.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::Rng;

/// `prefix` + 32 lowercase hex digits: Twilio SIDs (`SM...`), Africa's Talking ids
/// (`ATXid_...`).
pub(crate) fn hex_id(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::rng().random();
    format!("{prefix}{}", hex::encode(bytes))
}

/// A decimal id of `digits` digits, first one non-zero (BulkSMS message and submission ids).
pub(crate) fn numeric_id(digits: usize) -> String {
    let mut rng = rand::rng();
    (0..digits)
        .map(|i| char::from(b'0' + rng.random_range(u8::from(i == 0)..10)))
        .collect()
}

/// Whether `number` is E.164 as the providers accept it: `+` and 8 to 15 digits.
pub(crate) fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Now as RFC 2822 with a two-digit day, as Twilio writes `date_created`.
pub(crate) fn rfc2822_now() -> String {
    chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S +0000")
        .to_string()
}

/// Now as ISO 8601 UTC with milliseconds (`2024-05-01T10:17:53.123Z`).
pub(crate) fn iso_now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// The (user, password) of an `Authorization: Basic` header.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The pairs of an `application/x-www-form-urlencoded` body, in order.
pub(crate) fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// Encodes pairs as an `application/x-www-form-urlencoded` body.
pub(crate) fn form_body(pairs: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The first value of `name` among `pairs`.
pub(crate) fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// `(name, value)` pairs from string slices.
pub(crate) fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sms_numbers_are_plus_and_8_to_15_digits() {
        for good in ["+12345678", "+254711000000", "+123456789012345"] {
            assert!(is_e164(good), "{good}");
        }
        for bad in [
            "254711000000",
            "+1234567",
            "+1234567890123456",
            "+2547x1000000",
            "",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn sms_ids_have_their_prefix_and_length() {
        let sid = hex_id("SM");
        assert_eq!(sid.len(), 34);
        assert!(sid[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        let id = numeric_id(10);
        assert!(id.len() == 10 && !id.starts_with('0'));
    }

    #[test]
    fn sms_basic_credentials_are_decoded() {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", STANDARD.encode("AC1:tok:en"));
        headers.insert(AUTHORIZATION, value.parse().unwrap());
        assert_eq!(
            basic_credentials(&headers),
            Some(("AC1".to_owned(), "tok:en".to_owned()))
        );
    }
}
