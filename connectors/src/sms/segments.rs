//! SMS segmentation: how many parts a text is billed as.
//!
//! GSM-7 (the 3GPP 23.038 default alphabet) carries 160 characters in one part and 153 per
//! part once concatenated; its extension characters (`^ { } \ [ ~ ] |`, the euro sign, form
//! feed) take two. One character outside it switches the whole text to UCS-2: 70 UTF-16 units
//! in one part, 67 per part (an emoji is two units).

/// The alphabet a text is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "GSM-7",
            Encoding::Ucs2 => "UCS-2",
        }
    }
}

/// The basic GSM-7 table (one septet each).
const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The extension table (escape + septet: two each).
const EXTENSION: &str = "^{}\\[~]|€\u{c}";

/// A text's encoding, length in that encoding's units, and parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segmentation {
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 units (UCS-2).
    pub units: usize,
    pub segments: u32,
}

pub fn segment(text: &str) -> Segmentation {
    let mut septets = 0usize;
    let mut gsm = true;
    for c in text.chars() {
        if BASIC.contains(c) {
            septets += 1;
        } else if EXTENSION.contains(c) {
            septets += 2;
        } else {
            gsm = false;
            break;
        }
    }
    let (encoding, units, single, multi) = if gsm {
        (Encoding::Gsm7, septets, 160, 153)
    } else {
        (Encoding::Ucs2, text.encode_utf16().count(), 70, 67)
    };
    let segments = if units <= single {
        1
    } else {
        units.div_ceil(multi)
    };
    Segmentation {
        encoding,
        units,
        segments: segments as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm_texts_split_at_160_then_153() {
        assert_eq!(segment(&"a".repeat(160)).segments, 1);
        assert_eq!(segment(&"a".repeat(161)).segments, 2);
        let two = segment(&"a".repeat(200));
        assert_eq!((two.encoding, two.segments), (Encoding::Gsm7, 2));
        assert_eq!(segment(&"a".repeat(306)).segments, 2);
        assert_eq!(segment(&"a".repeat(307)).segments, 3);
    }

    #[test]
    fn extension_characters_count_double() {
        let s = segment(&"{".repeat(80));
        assert_eq!((s.encoding, s.units, s.segments), (Encoding::Gsm7, 160, 1));
        assert_eq!(segment(&"€".repeat(81)).segments, 2);
    }

    #[test]
    fn one_emoji_makes_the_text_ucs2_in_utf16_units() {
        let mut text = "a".repeat(69);
        text.push('😀'); // 71 UTF-16 units
        let s = segment(&text);
        assert_eq!((s.encoding, s.units, s.segments), (Encoding::Ucs2, 71, 2));
        assert_eq!(segment(&"ж".repeat(70)).segments, 1);
        assert_eq!(segment(&"ж".repeat(135)).segments, 3);
    }
}
