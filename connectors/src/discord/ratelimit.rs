//! Discord pacing: the global per-bot limit from the policy (governor), plus the per-route
//! buckets Discord announces in the `X-RateLimit-*` headers of every response.
//!
//! Discord does not publish its route limits; it tells them. After each response the bucket of
//! that route and major parameter (for messages: the channel) records `Remaining` and when it
//! resets (`Reset-After`, measured from when the answer arrived, so never early). A send to a
//! bucket with nothing remaining waits for its reset before it goes out. A bucket never heard
//! of lets one request through to learn it. Sends to one channel are serialized by the
//! dispatcher (one worker per conversation), so the announced `Remaining` is exact.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use switchboard_core::rate::{GovernorPacer, PaceKey, Pacer, RatePolicy};

/// A little slack after a bucket's reset, against clock granularity.
const RESET_MARGIN: Duration = Duration::from_millis(5);
/// Buckets not used for this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// What a response said about its bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketHeaders {
    pub limit: Option<u32>,
    pub remaining: u32,
    pub reset_after: Duration,
}

impl BucketHeaders {
    /// Reads `X-RateLimit-Remaining` and `-Reset-After` (or `-Reset`, epoch seconds).
    pub fn parse(headers: &reqwest::header::HeaderMap) -> Option<BucketHeaders> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let remaining = get("x-ratelimit-remaining")?.trim().parse::<u32>().ok()?;
        let reset_after =
            match get("x-ratelimit-reset-after").and_then(|v| v.trim().parse::<f64>().ok()) {
                Some(secs) => secs,
                None => {
                    let reset = get("x-ratelimit-reset")?.trim().parse::<f64>().ok()?;
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs_f64();
                    reset - now
                }
            };
        if !reset_after.is_finite() {
            return None;
        }
        Some(BucketHeaders {
            limit: get("x-ratelimit-limit").and_then(|v| v.trim().parse().ok()),
            remaining,
            reset_after: Duration::from_secs_f64(reset_after.clamp(0.0, 3600.0)),
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    remaining: u32,
    resets_at: Instant,
    used_at: Instant,
}

/// The pacer of one Discord bot.
pub struct DiscordPacer {
    global: GovernorPacer,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl DiscordPacer {
    pub fn new(policy: RatePolicy) -> Self {
        DiscordPacer {
            global: GovernorPacer::new(policy),
            buckets: Mutex::default(),
        }
    }

    /// Records what a response announced for the bucket of `key` (a channel id).
    pub fn observe(&self, key: &str, headers: BucketHeaders) {
        let now = Instant::now();
        let mut buckets = self.lock();
        buckets.insert(
            key.to_owned(),
            Bucket {
                remaining: headers.remaining,
                resets_at: now + headers.reset_after + RESET_MARGIN,
                used_at: now,
            },
        );
        if buckets.len() > 4096 {
            buckets.retain(|_, b| now.duration_since(b.used_at) < FORGET_AFTER);
        }
    }

    /// A 429 for a route bucket: nothing remains until `retry_after` has passed.
    pub fn exhausted(&self, key: &str, retry_after: Duration) {
        self.observe(
            key,
            BucketHeaders {
                limit: None,
                remaining: 0,
                reset_after: retry_after,
            },
        );
    }

    /// Waits until the bucket of `key` has a request left, and takes it.
    pub async fn until_bucket_ready(&self, key: &str) {
        loop {
            let wait = {
                let now = Instant::now();
                let mut buckets = self.lock();
                match buckets.get_mut(key) {
                    None => return,
                    Some(b) if now >= b.resets_at => {
                        // The window reset; the next answer tells the new remaining.
                        buckets.remove(key);
                        return;
                    }
                    Some(b) if b.remaining > 0 => {
                        b.remaining -= 1;
                        b.used_at = now;
                        return;
                    }
                    Some(b) => b.resets_at,
                }
            };
            tokio::time::sleep_until(wait).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bucket>> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Pacer for DiscordPacer {
    async fn acquire(&self, key: &PaceKey) {
        self.until_bucket_ready(&key.chat).await;
        self.global.acquire(key).await;
    }

    fn penalize(&self, key: &PaceKey, retry_after: Duration, whole_bot: bool) {
        if !whole_bot {
            self.exhausted(&key.chat, retry_after);
        }
        self.global.penalize(key, retry_after, whole_bot);
    }

    fn default_retry_after(&self) -> Duration {
        self.global.default_retry_after()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn bucket_headers_parse_reset_after_or_epoch_reset() {
        let h = BucketHeaders::parse(&headers(&[
            ("x-ratelimit-limit", "5"),
            ("x-ratelimit-remaining", "4"),
            ("x-ratelimit-reset-after", "4.5"),
        ]))
        .unwrap();
        assert_eq!(h.limit, Some(5));
        assert_eq!(h.remaining, 4);
        assert_eq!(h.reset_after, Duration::from_millis(4500));
        let in_two = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            + 2.0;
        let h = BucketHeaders::parse(&headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &format!("{in_two:.3}")),
        ]))
        .unwrap();
        assert!(h.reset_after > Duration::from_millis(1900));
        assert!(BucketHeaders::parse(&headers(&[("x-ratelimit-limit", "5")])).is_none());
    }

    #[tokio::test]
    async fn an_empty_bucket_holds_sends_until_it_resets() {
        let pacer = DiscordPacer::new(RatePolicy::default());
        pacer.until_bucket_ready("c").await; // unknown bucket: one request to learn it
        pacer.observe(
            "c",
            BucketHeaders {
                limit: Some(2),
                remaining: 1,
                reset_after: Duration::from_millis(300),
            },
        );
        let start = tokio::time::Instant::now();
        pacer.until_bucket_ready("c").await; // the one remaining
        assert!(start.elapsed() < Duration::from_millis(100));
        pacer.until_bucket_ready("c").await; // none left: waits for the reset
        assert!(start.elapsed() >= Duration::from_millis(300));
        pacer.until_bucket_ready("other").await;
    }
}
