//! switchboard-connectors: one module per platform, each implementing the connector contract
//! of `switchboard_core::connector` (a `ConnectorFactory` plus a `Connector` per bot).
//!
//! [`registry`] lists the platforms compiled into this build. Adding a platform means adding
//! a folder here and one line in [`registry`]; the gateway does not change.

use std::sync::Arc;

use switchboard_core::connector::ConnectorRegistry;

pub mod telegram;
pub mod whatsapp;

/// Every connector of this build.
pub fn registry() -> ConnectorRegistry {
    let mut r = ConnectorRegistry::new();
    r.register(Arc::new(telegram::TelegramFactory::new()));
    r.register(Arc::new(whatsapp::WhatsAppFactory::new()));
    r
}

/// Splits a text into pieces of at most `max` characters, preferring line breaks, then spaces.
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max {
        return vec![text.to_string()];
    }
    let mut parts = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        let end = (start + max).min(chars.len());
        let cut = if end == chars.len() {
            end
        } else {
            let window = &chars[start..end];
            window
                .iter()
                .rposition(|c| *c == '\n')
                .or_else(|| window.iter().rposition(|c| c.is_whitespace()))
                .filter(|p| *p > max / 2)
                .map(|p| start + p + 1)
                .unwrap_or(end)
        };
        parts.push(chars[start..cut].iter().collect::<String>());
        start = cut;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_split_at_line_breaks_within_the_limit() {
        let text = format!("{}\n{}", "a".repeat(3000), "b".repeat(3000));
        let parts = split_text(&text, 4096);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.chars().count() <= 4096));
        assert_eq!(parts.concat(), text, "nothing is lost or added");
        let solid = "x".repeat(10_000);
        let parts = split_text(&solid, 4096);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [4096, 4096, 1808]
        );
        assert_eq!(split_text("short", 4096), ["short"]);
    }
}
