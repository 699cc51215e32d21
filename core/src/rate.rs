//! Rate policies: how fast a bot may send, at several levels applied together.
//!
//! A connector describes its platform's limits as a [`RatePolicy`] (e.g. Telegram 30/s per
//! bot + 1/s per chat + 20/min per group chat); a bot's `rate_limit` config table overrides
//! the numbers. [`Pacer`] is the hook the outbox dispatcher awaits before every send:
//! [`GovernorPacer`] implements a policy with one governor limiter per level (most specific
//! first, so nothing is ever over-sent) and honors a platform's `retry_after` by freezing the
//! chat or the whole bot until then. Platforms whose limits are learned at run time (Discord
//! buckets) supply their own `Pacer`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::model::ConversationKind;

/// `count` sends per `per`, with bursts up to `burst` (default: `count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
    pub burst: u32,
}

impl Rate {
    pub const fn per_second(count: u32) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(1),
            burst: count,
        }
    }
    pub const fn per_minute(count: u32) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(60),
            burst: count,
        }
    }

    /// Parses `"30/s"`, `"20/min"`, `"1000/h"`, `"1/6s"`, optionally with a burst:
    /// `"1/s burst 3"`. Without one, sends are spread evenly (burst 1): a platform's own
    /// bucket then absorbs network jitter instead of answering 429 at the edge of a burst.
    pub fn parse(s: &str) -> Result<Rate, String> {
        let bad =
            || format!("expected a rate like \"30/s\", \"20/min\" or \"1/s burst 3\", got {s:?}");
        let mut parts = s.split_whitespace();
        let main = parts.next().ok_or_else(bad)?;
        let (count, unit) = main.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(format!("a rate must allow at least 1 send, got {s:?}"));
        }
        // An optional multiplier before the unit: "1/6s" is one per six seconds.
        let digits = unit.bytes().take_while(|b| b.is_ascii_digit()).count();
        let (mult, unit) = unit.split_at(digits);
        let mult: u32 = if mult.is_empty() {
            1
        } else {
            mult.parse().map_err(|_| bad())?
        };
        if mult == 0 {
            return Err(bad());
        }
        let per = match unit {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        } * mult;
        let burst = match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => 1,
            (Some("burst"), Some(b), None) => b.parse().ok().filter(|b| *b > 0).ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        Ok(Rate { count, per, burst })
    }

    /// The rate as a governor quota.
    pub fn quota(&self) -> Quota {
        let period = self.per / self.count;
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Quota::with_period(period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst)
    }
}

/// A platform's limits. `None` means no limit at that level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RatePolicy {
    /// Across all chats of the bot (or phone number / sender).
    pub per_bot: Option<Rate>,
    /// Per chat / recipient.
    pub per_chat: Option<Rate>,
    /// Per group chat, applied in addition to `per_chat`.
    pub per_group: Option<Rate>,
    /// How long to wait on a rate-limit answer that names no retry_after.
    pub default_retry_after: Duration,
}

impl RatePolicy {
    /// Applies a bot's `rate_limit` overrides (`per_bot`, `per_chat`, `per_group`; a value
    /// of `"none"` removes a level). Unknown keys and bad values are errors naming the key.
    pub fn with_overrides(
        mut self,
        overrides: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<RatePolicy, Vec<(String, String)>> {
        let mut problems = Vec::new();
        for (key, value) in overrides {
            let slot = match key.as_str() {
                "per_bot" => &mut self.per_bot,
                "per_chat" => &mut self.per_chat,
                "per_group" => &mut self.per_group,
                _ => {
                    problems.push((
                        key.clone(),
                        "unknown rate level (expected per_bot, per_chat or per_group)".into(),
                    ));
                    continue;
                }
            };
            match value.as_str() {
                Some("none") => *slot = None,
                Some(s) => match Rate::parse(s) {
                    Ok(r) => *slot = Some(r),
                    Err(e) => problems.push((key.clone(), e)),
                },
                None => problems.push((key.clone(), "expected a string like \"30/s\"".into())),
            }
        }
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(problems)
        }
    }
}

/// What a send is paced by: the chat and whether it is a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PaceKey {
    pub chat: String,
    pub kind: ConversationKind,
}

/// The hook the dispatcher awaits before each send.
#[async_trait]
pub trait Pacer: Send + Sync {
    /// Waits until a send to `key` is allowed by every level of the policy.
    async fn acquire(&self, key: &PaceKey);
    /// The platform answered "too many requests": hold sends to `key` (or, with
    /// `whole_bot`, every send of the bot) for `retry_after`.
    fn penalize(&self, key: &PaceKey, retry_after: Duration, whole_bot: bool);
    /// The policy's wait for a rate-limit answer without retry_after.
    fn default_retry_after(&self) -> Duration;
}

/// [`RatePolicy`] enforced in-process with governor (GCRA), one limiter per level.
pub struct GovernorPacer {
    policy: RatePolicy,
    per_bot: Option<DefaultDirectRateLimiter>,
    per_chat: Option<DefaultKeyedRateLimiter<String>>,
    per_group: Option<DefaultKeyedRateLimiter<String>>,
    /// Waiters for the bot-wide level queue here (FIFO) instead of all polling governor:
    /// thousands of chats waiting at once would otherwise all wake at every slot.
    bot_gate: tokio::sync::Mutex<()>,
    frozen: Mutex<Frozen>,
}

#[derive(Default)]
struct Frozen {
    bot_until: Option<Instant>,
    chats: HashMap<String, Instant>,
    acquisitions: u64,
}

impl GovernorPacer {
    pub fn new(policy: RatePolicy) -> Self {
        GovernorPacer {
            policy,
            per_bot: policy.per_bot.map(|r| RateLimiter::direct(r.quota())),
            per_chat: policy.per_chat.map(|r| RateLimiter::keyed(r.quota())),
            per_group: policy.per_group.map(|r| RateLimiter::keyed(r.quota())),
            bot_gate: tokio::sync::Mutex::new(()),
            frozen: Mutex::new(Frozen::default()),
        }
    }

    pub fn policy(&self) -> &RatePolicy {
        &self.policy
    }

    fn frozen_until(&self, chat: &str) -> Option<Instant> {
        let mut f = self.frozen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        f.chats.retain(|_, until| *until > now);
        let chat_until = f.chats.get(chat).copied();
        match (f.bot_until.filter(|u| *u > now), chat_until) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn housekeeping(&self) {
        let mut f = self.frozen.lock().unwrap_or_else(|e| e.into_inner());
        f.acquisitions += 1;
        if f.acquisitions.is_multiple_of(4096) {
            drop(f);
            if let Some(l) = &self.per_chat {
                l.retain_recent();
            }
            if let Some(l) = &self.per_group {
                l.retain_recent();
            }
        }
    }
}

#[async_trait]
impl Pacer for GovernorPacer {
    async fn acquire(&self, key: &PaceKey) {
        while let Some(until) = self.frozen_until(&key.chat) {
            tokio::time::sleep_until(until.into()).await;
        }
        // Most specific level first: a slot granted at a broad level is never wasted
        // waiting on a narrow one.
        if key.kind == ConversationKind::Group
            && let Some(l) = &self.per_group
        {
            l.until_key_ready(&key.chat).await;
        }
        if let Some(l) = &self.per_chat {
            l.until_key_ready(&key.chat).await;
        }
        if let Some(l) = &self.per_bot {
            let _turn = self.bot_gate.lock().await;
            l.until_ready().await;
        }
        self.housekeeping();
    }

    fn penalize(&self, key: &PaceKey, retry_after: Duration, whole_bot: bool) {
        let until = Instant::now() + retry_after;
        let mut f = self.frozen.lock().unwrap_or_else(|e| e.into_inner());
        if whole_bot {
            f.bot_until = Some(f.bot_until.map_or(until, |u| u.max(until)));
        } else {
            let e = f.chats.entry(key.chat.clone()).or_insert(until);
            *e = (*e).max(until);
        }
    }

    fn default_retry_after(&self) -> Duration {
        self.policy.default_retry_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_units_and_burst() {
        assert_eq!(
            Rate::parse("30/s").unwrap(),
            Rate {
                burst: 1,
                ..Rate::per_second(30)
            }
        );
        assert_eq!(
            Rate::parse("20/min").unwrap(),
            Rate {
                burst: 1,
                ..Rate::per_minute(20)
            }
        );
        assert_eq!(Rate::parse("1/s burst 3").unwrap().burst, 3);
        assert_eq!(Rate::parse("1/6s").unwrap().per, Duration::from_secs(6));
        assert!(Rate::parse("0/s").is_err());
        assert!(Rate::parse("fast").unwrap_err().contains("30/s"));
    }

    #[test]
    fn overrides_name_the_bad_key() {
        let mut m = serde_json::Map::new();
        m.insert("per_chat".into(), "2/s".into());
        m.insert("per_moon".into(), "2/s".into());
        let err = RatePolicy::default().with_overrides(&m).unwrap_err();
        assert_eq!(err[0].0, "per_moon");
        m.remove("per_moon");
        let p = RatePolicy::default().with_overrides(&m).unwrap();
        assert_eq!(
            p.per_chat,
            Some(Rate {
                burst: 1,
                ..Rate::per_second(2)
            })
        );
    }

    #[tokio::test]
    async fn per_chat_limit_spaces_sends_to_one_chat() {
        let pacer = GovernorPacer::new(RatePolicy {
            per_chat: Some(Rate {
                count: 10,
                per: Duration::from_secs(1),
                burst: 1,
            }),
            ..Default::default()
        });
        let key = PaceKey {
            chat: "c".into(),
            kind: ConversationKind::Direct,
        };
        let start = Instant::now();
        for _ in 0..4 {
            pacer.acquire(&key).await;
        }
        // 4 sends at 10/s with burst 1 need at least 3 periods of 100 ms.
        assert!(start.elapsed() >= Duration::from_millis(290));
    }

    #[tokio::test]
    async fn penalized_chat_waits_for_retry_after() {
        let pacer = GovernorPacer::new(RatePolicy::default());
        let key = PaceKey {
            chat: "c".into(),
            kind: ConversationKind::Direct,
        };
        pacer.penalize(&key, Duration::from_millis(200), false);
        let start = Instant::now();
        pacer.acquire(&key).await;
        assert!(start.elapsed() >= Duration::from_millis(190));
    }
}
