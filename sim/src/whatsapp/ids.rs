//! Identifiers shaped like Meta's: message ids (`wamid.` + standard base64, which may contain
//! `+`, `/` and `=`), numeric media ids, conversation ids, and `fbtrace_id`s.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::Rng;
use rand::distr::Alphanumeric;

/// Who wrote a message; Meta encodes the direction in the wamid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// The business sent it through /messages.
    Outgoing,
    /// A user wrote it.
    Incoming,
}

/// A `wamid.` id as Meta mints them: base64 of a small record holding the user's number,
/// the direction and 20 random hex digits.
pub(crate) fn wamid(wa_id: &str, direction: Direction) -> String {
    let mut rng = rand::rng();
    let number = wa_id.as_bytes();
    let mut raw = Vec::with_capacity(number.len() + 32);
    raw.extend_from_slice(&[0x1c, 0x18, number.len().min(255) as u8]);
    raw.extend_from_slice(number);
    let flag = match direction {
        Direction::Outgoing => 0x11,
        Direction::Incoming => 0x12,
    };
    raw.extend_from_slice(&[0x15, 0x02, 0x00, flag, 0x18, 20]);
    raw.extend((0..20).map(|_| b"0123456789ABCDEF"[rng.random_range(0..16)]));
    raw.push(0x00);
    format!("wamid.{}", STANDARD.encode(raw))
}

/// A numeric Graph object id (media ids are 15-16 digits).
pub(crate) fn numeric_id() -> String {
    let n: u64 = rand::rng().random_range(1_000_000_000_000_000..10_000_000_000_000_000);
    n.to_string()
}

/// A conversation id: 32 lowercase hex digits.
pub(crate) fn conversation_id() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

/// The opaque part of a media download URL.
pub(crate) fn opaque() -> String {
    random_chars(32)
}

/// Graph's `fbtrace_id`: 23 URL-safe characters starting with `A`.
pub(crate) fn fbtrace_id() -> String {
    format!("A{}", random_chars(22))
}

fn random_chars(n: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wamids_are_base64_of_the_number_and_differ() {
        let a = wamid("15551234567", Direction::Outgoing);
        let b = wamid("15551234567", Direction::Outgoing);
        assert_ne!(a, b);
        let raw = STANDARD.decode(a.strip_prefix("wamid.").unwrap()).unwrap();
        assert_eq!(&raw[3..14], b"15551234567");
        assert!(a.starts_with("wamid.HBgL"));
    }
}
