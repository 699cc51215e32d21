//! The WhatsApp signature check on arbitrary headers: never panics, and accepts only the
//! signature of the body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_connectors::whatsapp::{sign, signature_valid};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (header, body) = data.split_at(split);
    let header = String::from_utf8_lossy(header);
    let secret = b"fuzz-app-secret";
    let valid = signature_valid(secret, body, Some(&header));
    let expected = sign(secret, body);
    let matches = header.strip_prefix("sha256=").is_some_and(|hex| {
        hex.trim()
            .eq_ignore_ascii_case(&expected["sha256=".len()..])
    });
    assert_eq!(valid, matches, "header {header:?}");
    assert!(!signature_valid(secret, body, None));
});
