//! Discord's REST rate limits: per-route buckets and the global per-bot limit, with the
//! `X-RateLimit-*` headers Discord puts on responses.
//!
//! Discord's buckets behave as fixed windows: the first request opens a window of
//! `Rate::per`, `X-RateLimit-Remaining` counts down from `Rate::count`, and at
//! `X-RateLimit-Reset` the bucket is full again. `POST /channels/{id}/messages` has one bucket
//! per channel (its major parameter), all sharing one `X-RateLimit-Bucket` hash; the global
//! limit is a one-second window per bot across every route. Every 429 is counted.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::framework::rate::Rate;

/// One fixed-window bucket.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    limit: u32,
    per: Duration,
    used: u32,
    resets: Instant,
}

/// The state of a bucket after a request, for the headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BucketState {
    pub limit: u32,
    pub remaining: u32,
    pub reset_after: Duration,
}

impl Window {
    pub fn new(rate: Rate, now: Instant) -> Self {
        Window {
            limit: rate.count.max(1),
            per: rate.per,
            used: 0,
            resets: now + rate.per,
        }
    }

    fn roll(&mut self, now: Instant) {
        if now >= self.resets {
            self.used = 0;
            self.resets = now + self.per;
        }
    }

    /// Takes one request from the window, or reports the wait until it resets.
    pub fn take(&mut self, now: Instant) -> Result<BucketState, BucketState> {
        self.roll(now);
        let ok = self.used < self.limit;
        if ok {
            self.used += 1;
        }
        let state = BucketState {
            limit: self.limit,
            remaining: self.limit - self.used,
            reset_after: self.resets.saturating_duration_since(now),
        };
        if ok { Ok(state) } else { Err(state) }
    }
}

/// Every bucket of the simulator.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    /// Per bot token.
    global: HashMap<String, Window>,
    /// Per (bot token, channel id).
    channel_messages: HashMap<(String, String), Window>,
}

/// Why a request was refused with 429.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limited {
    Global(Duration),
    Route(BucketState),
}

impl Limits {
    pub fn take_global(&mut self, token: &str, per_second: u32) -> Result<(), Limited> {
        let now = Instant::now();
        let rate = Rate::new(per_second, Duration::from_secs(1), per_second);
        let window = self
            .global
            .entry(token.to_owned())
            .or_insert_with(|| Window::new(rate, now));
        window
            .take(now)
            .map(|_| ())
            .map_err(|s| Limited::Global(s.reset_after))
    }

    pub fn take_channel_message(
        &mut self,
        token: &str,
        channel_id: &str,
        rate: Rate,
    ) -> Result<BucketState, Limited> {
        let now = Instant::now();
        self.channel_messages
            .entry((token.to_owned(), channel_id.to_owned()))
            .or_insert_with(|| Window::new(rate, now))
            .take(now)
            .map_err(Limited::Route)
    }
}

/// The `X-RateLimit-Bucket` hash of a route.
pub(crate) fn bucket_hash(route: &str) -> String {
    hex::encode(&Sha256::digest(route.as_bytes())[..16])
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

/// Adds a route bucket's headers to a response.
pub(crate) fn add_bucket_headers(headers: &mut HeaderMap, state: BucketState, bucket: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let reset = (now + state.reset_after).as_secs_f64();
    insert(headers, "x-ratelimit-limit", state.limit.to_string());
    insert(
        headers,
        "x-ratelimit-remaining",
        state.remaining.to_string(),
    );
    insert(headers, "x-ratelimit-reset", format!("{reset:.3}"));
    insert(
        headers,
        "x-ratelimit-reset-after",
        format!("{:.3}", state.reset_after.as_secs_f64()),
    );
    insert(headers, "x-ratelimit-bucket", bucket.to_owned());
}

/// A 429 answer, with Discord's body and headers.
pub(crate) fn too_many_requests(limited: Limited, bucket: &str) -> Response {
    let (wait, global) = match limited {
        Limited::Global(wait) => (wait, true),
        Limited::Route(state) => (state.reset_after, false),
    };
    let retry_after = (wait.as_secs_f64() * 1000.0).ceil() / 1000.0;
    let body = json!({
        "message": "You are being rate limited.",
        "retry_after": retry_after.max(0.001),
        "global": global,
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    let headers = response.headers_mut();
    insert(
        headers,
        "retry-after",
        (wait.as_secs_f64().ceil().max(1.0) as u64).to_string(),
    );
    match limited {
        Limited::Global(_) => {
            insert(headers, "x-ratelimit-global", "true".to_owned());
            insert(headers, "x-ratelimit-scope", "global".to_owned());
        }
        Limited::Route(state) => {
            add_bucket_headers(headers, state, bucket);
            insert(headers, "x-ratelimit-scope", "user".to_owned());
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_down_then_refuses_until_it_resets() {
        let start = Instant::now();
        let mut window = Window::new(Rate::new(2, Duration::from_secs(5), 2), start);
        assert_eq!(window.take(start).map(|s| s.remaining).ok(), Some(1));
        assert_eq!(window.take(start).map(|s| s.remaining).ok(), Some(0));
        let refused = window.take(start + Duration::from_secs(1)).unwrap_err();
        assert_eq!(refused.reset_after, Duration::from_secs(4));
        let later = start + Duration::from_secs(5);
        assert_eq!(window.take(later).map(|s| s.remaining).ok(), Some(1));
    }
}
