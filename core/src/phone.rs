//! Phone numbers: parsed and validated with libphonenumber's metadata (the `phonenumber`
//! crate), normalized to E.164. A number in national form ("0711 000 000") is read in the
//! bot's `default_region`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use phonenumber::country::Id;

/// Checks a region code (ISO 3166 alpha-2, e.g. "KE").
pub fn region(code: &str) -> Option<Id> {
    Id::from_str(&code.trim().to_ascii_uppercase()).ok()
}

/// How many answers [`normalize`] remembers; beyond that it starts afresh.
const REMEMBERED: usize = 16_384;

type Answers = HashMap<(Option<Id>, String), Result<String, String>>;

/// The number in E.164, or what is wrong with it (naming it). Parsing with the metadata's
/// patterns costs tens of microseconds, so answers are remembered: a business sends to the
/// same numbers again and again.
pub fn normalize(raw: &str, default_region: Option<Id>) -> Result<String, String> {
    static ANSWERS: OnceLock<Mutex<Answers>> = OnceLock::new();
    let answers = ANSWERS.get_or_init(Mutex::default);
    let key = (default_region, raw.to_owned());
    if let Some(answer) = answers.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return answer.clone();
    }
    let answer = parse(raw, default_region);
    let mut map = answers.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= REMEMBERED {
        map.clear();
    }
    map.insert(key, answer.clone());
    answer
}

/// A known country calling code and a national number of a length numbers of that country
/// have. Ranges the metadata does not list as assigned pass: fictional and test numbers
/// (+1 555 01xx, API.md's `+15550001111`), new ranges; unknown country codes and numbers too
/// short or too long do not.
fn possible(n: &phonenumber::PhoneNumber) -> bool {
    let national = n.national();
    let digits = (national.value().to_string().len() + national.zeros() as usize) as u16;
    phonenumber::metadata::DATABASE
        .by_code(&n.code().value())
        .is_some_and(|metas| {
            metas.iter().any(|m| {
                let d = m.descriptors();
                // The general descriptor often leaves its lengths to the number types.
                std::iter::once(Some(d.general()))
                    .chain([d.fixed_line(), d.mobile(), d.toll_free(), d.premium_rate()])
                    .flatten()
                    .any(|desc| desc.possible_length().contains(&digits))
            })
        })
}

fn parse(raw: &str, default_region: Option<Id>) -> Result<String, String> {
    let trimmed = raw.trim();
    let parsed = phonenumber::parse(default_region, trimmed).map_err(|_| {
        if default_region.is_none() && !trimmed.starts_with('+') {
            format!("{raw:?} is not a phone number in international form (+ and country code), and the bot has no default_region")
        } else {
            format!("{raw:?} is not a phone number")
        }
    })?;
    if !phonenumber::is_valid(&parsed) && !possible(&parsed) {
        return Err(format!(
            "{raw:?} is not a valid phone number (no such number range in its country)"
        ));
    }
    Ok(parsed.format().mode(phonenumber::Mode::E164).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_normalize_to_e164_in_the_default_region() {
        let ke = region("ke");
        assert_eq!(normalize("0711 000 000", ke).unwrap(), "+254711000000");
        assert_eq!(
            normalize("+254-711-000-000", None).unwrap(),
            "+254711000000"
        );
        assert_eq!(normalize("+1 (415) 555-2671", ke).unwrap(), "+14155552671");
    }

    #[test]
    fn fictional_and_test_ranges_pass_but_unknown_codes_and_wrong_lengths_do_not() {
        for ok in [
            "+15550001111",
            "+15551234567",
            "+447700900123",
            "+14155550101",
        ] {
            assert!(normalize(ok, None).is_ok(), "{ok}");
        }
        for bad in [
            "+99912345678",
            "+1555000111",
            "+155500011112",
            "+2547110000000000",
        ] {
            assert!(normalize(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_numbers_are_named() {
        let err = normalize("+254 12", region("KE")).unwrap_err();
        assert!(err.contains("+254 12"), "{err}");
        assert!(
            normalize("0711000000", None)
                .unwrap_err()
                .contains("default_region")
        );
        assert!(normalize("hello", region("KE")).is_err());
        assert!(region("XX").is_none());
    }

    #[test]
    fn remembered_answers_match_a_fresh_parse() {
        let ke = region("KE");
        for raw in ["0711 000 000", "+254 12", "hello", "+1 (415) 555-2671"] {
            let first = normalize(raw, ke);
            assert_eq!(first, parse(raw, ke));
            assert_eq!(normalize(raw, ke), first, "{raw}");
        }
        // The region is part of what is remembered.
        assert!(normalize("0711000000", None).is_err());
        assert_eq!(normalize("0711000000", ke).unwrap(), "+254711000000");
    }
}
