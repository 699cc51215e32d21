//! Long texts: splitting at the platform's limit, and resuming a split send where it stopped.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use switchboard_core::error::{ConnectorError, ErrorClass};

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

/// Which parts of split messages went out, so a retry (after a 429 or a 5xx on part 3)
/// resumes with the first part not sent instead of sending parts 1 and 2 again.
#[derive(Default)]
pub struct SplitProgress {
    sent: Mutex<HashMap<String, (usize, String)>>,
}

impl SplitProgress {
    /// Sends `parts` of message `message_id` in order with `send_one` (which gets the part
    /// and whether it is the first); returns the platform id of the first part.
    pub async fn send<F, Fut>(
        &self,
        message_id: &str,
        parts: Vec<String>,
        send_one: F,
    ) -> Result<String, ConnectorError>
    where
        F: Fn(String, bool) -> Fut,
        Fut: Future<Output = Result<String, ConnectorError>>,
    {
        let (start, mut first) = match self.lock().get(message_id) {
            Some((n, id)) => (*n, Some(id.clone())),
            None => (0, None),
        };
        for (i, part) in parts.into_iter().enumerate().skip(start) {
            match send_one(part, i == 0).await {
                Ok(id) => {
                    let first_id = first.get_or_insert(id).clone();
                    self.lock()
                        .insert(message_id.to_string(), (i + 1, first_id));
                }
                Err(e) => {
                    // A message that will not be retried needs no memory of its parts.
                    if matches!(
                        e.class(),
                        ErrorClass::Permanent | ErrorClass::Auth | ErrorClass::Config
                    ) {
                        self.lock().remove(message_id);
                    }
                    return Err(e);
                }
            }
        }
        self.lock().remove(message_id);
        first.ok_or_else(|| ConnectorError::permanent("empty text"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (usize, String)>> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_retried_split_send_resumes_after_the_parts_already_sent() {
        let progress = SplitProgress::default();
        let calls = Mutex::new(Vec::new());
        let parts = || vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let fail_on_c = |p: String, _first: bool| {
            calls.lock().unwrap().push(p.clone());
            async move {
                if p == "c" {
                    Err(ConnectorError::transient("502"))
                } else {
                    Ok(format!("id-{p}"))
                }
            }
        };
        assert!(progress.send("m1", parts(), fail_on_c).await.is_err());
        let ok = |p: String, _first: bool| {
            calls.lock().unwrap().push(p.clone());
            async move { Ok(format!("id-{p}")) }
        };
        assert_eq!(progress.send("m1", parts(), ok).await.unwrap(), "id-a");
        assert_eq!(*calls.lock().unwrap(), ["a", "b", "c", "c"]);
    }

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
