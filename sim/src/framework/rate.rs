//! Token buckets: how the simulated platforms decide that a sender goes too fast.
//!
//! A bucket holds at most `burst` tokens and refills continuously at `count / per`. A send takes
//! one token from every bucket that applies (bot, chat, group...) or, if any is empty, takes
//! none and reports how long until all can give one: the platform's `retry_after`.

use std::time::{Duration, Instant};

/// A rate limit: `count` events per `per`, with bursts of up to `burst` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
    pub burst: u32,
}

impl Rate {
    pub const fn new(count: u32, per: Duration, burst: u32) -> Self {
        Rate { count, per, burst }
    }

    /// A limit nobody reaches (benchmarks of the gateway itself).
    pub const fn unlimited() -> Self {
        Rate::new(u32::MAX, Duration::from_secs(1), u32::MAX)
    }

    fn per_second(&self) -> f64 {
        let secs = self.per.as_secs_f64();
        if secs <= 0.0 {
            f64::INFINITY
        } else {
            f64::from(self.count) / secs
        }
    }
}

/// Longest wait reported when a bucket never refills (a `count` of 0).
const NEVER: Duration = Duration::from_secs(3600);

/// One token bucket; starts full.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    refill_per_sec: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn new(rate: Rate, now: Instant) -> Self {
        let capacity = f64::from(rate.burst.max(1));
        TokenBucket {
            capacity,
            tokens: capacity,
            refill_per_sec: rate.per_second(),
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.refill_per_sec).min(self.capacity);
        self.updated = now;
    }

    /// How long until one token is available (zero if one is now).
    pub fn wait_time(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        if self.refill_per_sec <= 0.0 {
            return NEVER;
        }
        Duration::try_from_secs_f64((1.0 - self.tokens) / self.refill_per_sec)
            .map_or(NEVER, |d| d.min(NEVER))
    }

    fn take(&mut self) {
        self.tokens -= 1.0;
    }
}

/// Takes one token from each bucket, or from none: `Err` carries the longest wait.
pub fn take_all(buckets: &mut [&mut TokenBucket], now: Instant) -> Result<(), Duration> {
    let wait = buckets
        .iter_mut()
        .map(|b| b.wait_time(now))
        .max()
        .unwrap_or(Duration::ZERO);
    if !wait.is_zero() {
        return Err(wait);
    }
    buckets.iter_mut().for_each(|b| b.take());
    Ok(())
}

/// A wait as a platform's `retry_after`: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_its_burst_then_refills_at_its_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(Rate::new(1, Duration::from_secs(1), 3), start);
        for _ in 0..3 {
            assert!(take_all(&mut [&mut bucket], start).is_ok());
        }
        let wait = take_all(&mut [&mut bucket], start).unwrap_err();
        assert_eq!(retry_after_secs(wait), 1);
        let later = start + Duration::from_millis(1000);
        assert!(take_all(&mut [&mut bucket], later).is_ok());
    }

    #[test]
    fn an_empty_bucket_blocks_the_others_from_spending() {
        let now = Instant::now();
        let mut roomy = TokenBucket::new(Rate::new(30, Duration::from_secs(1), 30), now);
        let mut tight = TokenBucket::new(Rate::new(20, Duration::from_secs(60), 1), now);
        assert!(take_all(&mut [&mut roomy, &mut tight], now).is_ok());
        let wait = take_all(&mut [&mut roomy, &mut tight], now).unwrap_err();
        assert_eq!(retry_after_secs(wait), 3);
        assert!(roomy.wait_time(now).is_zero());
        assert!((roomy.tokens - 29.0).abs() < 1e-9);
    }
}
