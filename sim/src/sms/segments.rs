//! How many SMS parts a body costs (PLATFORMS.md §4 "Segmentation").
//!
//! A body that fits the GSM-7 alphabet is sent as GSM-7: 160 septets in one part, 153 per part
//! once concatenated; the extension characters (`^ { } \ [ ~ ] |`, `€`, form feed) take two
//! septets each. Any other character switches the whole body to UCS-2, which counts UTF-16
//! units: 70 in one part, 67 per part (an emoji takes two). As handsets do, a part never ends
//! in the middle of an escape pair or a surrogate pair.

/// The basic GSM 03.38 alphabet (ESC excluded: it is not a character a body can hold).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// Characters of the GSM-7 extension table, sent as ESC + character (two septets).
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{0C}";

/// The character set a body is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    /// `"GSM-7"` or `"UCS-2"`, as [`SmsSent::encoding`](super::SmsSent) names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "GSM-7",
            Encoding::Ucs2 => "UCS-2",
        }
    }

    /// (units in a single part, units per part of a concatenated message).
    fn capacities(self) -> (usize, usize) {
        match self {
            Encoding::Gsm7 => (160, 153),
            Encoding::Ucs2 => (70, 67),
        }
    }
}

/// What a body costs on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segmentation {
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 units (UCS-2).
    pub units: usize,
    /// Parts, at least 1 (an empty body still costs one).
    pub segments: u32,
}

/// Whether `c` is sendable in GSM-7 (basic or extension table).
pub fn is_gsm7(c: char) -> bool {
    GSM7_BASIC.contains(c) || GSM7_EXTENSION.contains(c)
}

/// The cheapest encoding that can carry `body`, and its part count.
pub fn segment(body: &str) -> Segmentation {
    let encoding = if body.chars().all(is_gsm7) {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    };
    segment_as(body, encoding)
}

/// The part count of `body` sent in `encoding`. In GSM-7, characters outside the alphabet are
/// replaced (by `?`, one septet each), as a provider does for a text forced to GSM-7.
pub fn segment_as(body: &str, encoding: Encoding) -> Segmentation {
    let costs: Vec<usize> = body
        .chars()
        .map(|c| match encoding {
            Encoding::Gsm7 if GSM7_EXTENSION.contains(c) => 2,
            Encoding::Gsm7 => 1,
            Encoding::Ucs2 => c.len_utf16(),
        })
        .collect();
    let units: usize = costs.iter().sum();
    let (single, per_part) = encoding.capacities();
    let segments = if units <= single {
        1
    } else {
        // Fill parts greedily without splitting a character's units across two parts.
        let (mut parts, mut used) = (1u32, 0usize);
        for cost in costs {
            if used + cost > per_part {
                parts += 1;
                used = 0;
            }
            used += cost;
        }
        parts
    };
    Segmentation {
        encoding,
        units,
        segments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sms_160_plain_characters_fit_one_gsm7_segment() {
        let s = segment(&"a".repeat(160));
        assert_eq!((s.encoding, s.units, s.segments), (Encoding::Gsm7, 160, 1));
        assert_eq!(segment(&"a".repeat(161)).segments, 2);
    }

    #[test]
    fn sms_200_gsm_characters_take_two_segments() {
        let s = segment(&"é".repeat(200));
        assert_eq!((s.encoding, s.segments), (Encoding::Gsm7, 2));
        assert_eq!(segment(&"x".repeat(306)).segments, 2);
        assert_eq!(segment(&"x".repeat(307)).segments, 3);
    }

    #[test]
    fn sms_extension_characters_cost_two_septets() {
        let s = segment(&"{".repeat(80));
        assert_eq!((s.encoding, s.units, s.segments), (Encoding::Gsm7, 160, 1));
        let s = segment(&format!("{}€", "a".repeat(159)));
        assert_eq!((s.units, s.segments), (161, 2));
        assert_eq!(segment("\u{0C}").units, 2);
    }

    #[test]
    fn sms_70_ucs2_characters_fit_one_segment() {
        let s = segment(&"Ж".repeat(70));
        assert_eq!((s.encoding, s.units, s.segments), (Encoding::Ucs2, 70, 1));
        assert_eq!(segment(&"Ж".repeat(71)).segments, 2);
    }

    #[test]
    fn sms_71_characters_with_one_emoji_take_two_ucs2_segments() {
        let body = format!("{}😀", "a".repeat(70));
        assert_eq!(body.chars().count(), 71);
        let s = segment(&body);
        assert_eq!((s.encoding, s.units, s.segments), (Encoding::Ucs2, 72, 2));
        // 69 letters and an emoji: 71 units, one too many for a single part.
        assert_eq!(segment(&format!("{}😀", "a".repeat(68))).segments, 1);
        assert_eq!(segment(&format!("{}😀", "a".repeat(69))).segments, 2);
    }

    #[test]
    fn sms_parts_never_split_a_surrogate_pair() {
        // 66 units then an emoji: it does not fit the 67-unit part, so it opens the next.
        let body = format!("{}😀{}", "a".repeat(66), "b".repeat(10));
        let s = segment(&body);
        assert_eq!((s.units, s.segments), (78, 2));
        let body = format!("{}😀{}", "a".repeat(66), "b".repeat(66));
        assert_eq!(segment(&body).segments, 3);
    }

    #[test]
    fn sms_forced_gsm7_counts_unknown_characters_as_one_septet() {
        let s = segment_as("привет😀", Encoding::Gsm7);
        assert_eq!((s.encoding, s.units, s.segments), (Encoding::Gsm7, 7, 1));
        assert_eq!(segment("").segments, 1);
    }
}
