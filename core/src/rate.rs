//! Rate policies: how fast a bot may send, at several levels applied together.
//!
//! A connector describes its platform's limits as a [`RatePolicy`] (e.g. Telegram 30/s per
//! bot + 1/s per chat + 20/min per group chat); a bot's `rate_limit` config table overrides
//! the numbers. [`Pacer`] is the hook the outbox dispatcher awaits before every send:
//! [`GovernorPacer`] implements a policy with one limiter per level (most specific first, so
//! nothing is ever over-sent: governor per chat and group, [`Slots`] for the whole bot) and
//! honors a platform's `retry_after` by freezing the
//! chat or the whole bot until then. Platforms whose limits are learned at run time (Discord
//! buckets) supply their own `Pacer`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
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

/// [`RatePolicy`] enforced in-process with GCRA, one limiter per level.
pub struct GovernorPacer {
    policy: RatePolicy,
    per_bot: Option<Slots>,
    per_chat: Option<DefaultKeyedRateLimiter<String>>,
    per_group: Option<DefaultKeyedRateLimiter<String>>,
    /// Waiters for the bot-wide level queue here (FIFO) instead of all polling it: thousands
    /// of chats waiting at once would otherwise all wake at every slot.
    bot_gate: tokio::sync::Mutex<()>,
    frozen: Mutex<Frozen>,
}

/// One rate as GCRA (the theoretical arrival time, TAT, advances a period per send) with a
/// little tolerance even at burst 1: a send may go up to a quarter period before its TAT.
/// Governor, at burst 1, has none, so a waiter that woke late by a timer tick or a busy core
/// pushed every later send back by as much (a bot paced at 48/s sent 47.4/s). With the
/// tolerance a late wake-up is caught up within it, and never more: after a longer stall
/// the next send comes a period later, not in a burst. In any window of length `w` at most
/// `(w + tolerance) / period + 1` sends fall, which for the platforms' rates (a second's
/// window, 20-80/s) is the same count as without the quarter period.
#[derive(Debug)]
pub struct Slots {
    period: Duration,
    /// How early a send may go relative to its TAT: `burst - 1` periods, plus a quarter.
    tolerance: Duration,
    /// The theoretical arrival time of the next send (none yet: at once).
    tat: Mutex<Option<Instant>>,
}

impl Slots {
    pub fn new(rate: Rate) -> Self {
        let period = (rate.per / rate.count.max(1)).max(Duration::from_nanos(1));
        Slots {
            period,
            tolerance: period * (rate.burst.max(1) - 1) + period / 4,
            tat: Mutex::new(None),
        }
    }

    /// Takes a send at `now`, or says when to ask again.
    pub fn take(&self, now: Instant) -> Result<(), Instant> {
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let theoretical = tat.unwrap_or(now);
        if let Some(earliest) = theoretical.checked_sub(self.tolerance)
            && earliest > now
        {
            return Err(earliest);
        }
        *tat = Some(theoretical.max(now) + self.period);
        Ok(())
    }

    /// Waits for a send's turn.
    async fn until_ready(&self) {
        while let Err(at) = self.take(Instant::now()) {
            tokio::time::sleep_until(at.into()).await;
        }
    }
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
            per_bot: policy.per_bot.map(Slots::new),
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
        if let Some(slots) = &self.per_bot {
            let _turn = self.bot_gate.lock().await;
            slots.until_ready().await;
            // A 429 that came while this send waited for its turn holds it too; then it
            // takes a new one.
            while let Some(until) = self.frozen_until(&key.chat) {
                tokio::time::sleep_until(until.into()).await;
                slots.until_ready().await;
            }
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
    use std::sync::Arc;

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

    #[test]
    fn bot_slots_catch_up_a_late_wake_up_but_never_burst() {
        let slots = Slots::new(Rate {
            burst: 1,
            ..Rate::per_second(50)
        });
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(slots.take(t0), Ok(()));
        // The next may go from 15 ms (a quarter period early), no sooner.
        assert_eq!(slots.take(t0 + ms(1)), Err(t0 + ms(15)));
        // It woke 3 ms late, at 18: the third keeps its time on the grid (40, from 35).
        assert_eq!(slots.take(t0 + ms(18)), Ok(()));
        assert_eq!(slots.take(t0 + ms(18)), Err(t0 + ms(35)));
        assert_eq!(slots.take(t0 + ms(40)), Ok(()));
        // After a stall of 100 ms, one send at once, the next a period later: no catch-up
        // burst.
        assert_eq!(slots.take(t0 + ms(160)), Ok(()));
        assert_eq!(slots.take(t0 + ms(160)), Err(t0 + ms(175)));
    }

    #[test]
    fn bot_slots_allow_the_burst_and_no_more_in_any_window() {
        let slots = Slots::new(Rate {
            count: 10,
            per: Duration::from_secs(1),
            burst: 3,
        });
        let t0 = Instant::now();
        // Sends asking as soon as allowed: the first three at once, then one per 100 ms.
        let mut at = Vec::new();
        let mut now = t0;
        while at.len() < 40 {
            match slots.take(now) {
                Ok(()) => at.push(now - t0),
                Err(next) => now = next,
            }
        }
        assert_eq!(&at[..3], &[Duration::ZERO; 3]);
        // In any one-second window: at most (1 s + 2.25 periods) / period + 1 = 13.
        for start in &at {
            let n = at
                .iter()
                .filter(|t| **t >= *start && **t < *start + Duration::from_secs(1))
                .count();
            assert!(n <= 13, "{n} sends in one second from {start:?}");
        }
        // And 40 sends take at least (40 - 3) periods minus the tolerance.
        assert!(at[39] >= Duration::from_millis(3700 - 225), "{:?}", at[39]);
    }

    #[tokio::test]
    async fn sends_held_by_a_bot_wide_429_leave_spaced_after_it() {
        let pacer = Arc::new(GovernorPacer::new(RatePolicy {
            per_bot: Some(Rate {
                burst: 1,
                ..Rate::per_second(50)
            }),
            ..Default::default()
        }));
        let start = Instant::now();
        // Five sends take their slots (0, 20, ... 80 ms), then the platform says wait 200 ms.
        let sends: Vec<_> = (0..5)
            .map(|i| {
                let pacer = pacer.clone();
                tokio::spawn(async move {
                    let key = PaceKey {
                        chat: format!("c{i}"),
                        kind: ConversationKind::Direct,
                    };
                    pacer.acquire(&key).await;
                    start.elapsed()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let key = PaceKey {
            chat: "c0".into(),
            kind: ConversationKind::Direct,
        };
        pacer.penalize(&key, Duration::from_millis(200), true);
        let mut at = Vec::new();
        for s in sends {
            at.push(s.await.unwrap());
        }
        at.sort();
        // The first went before the 429; the four held ones leave after it, 20 ms apart.
        assert!(at[0] < Duration::from_millis(100), "{at:?}");
        assert!(at[1] >= Duration::from_millis(195), "{at:?}");
        for w in at[1..].windows(2) {
            assert!(w[1] - w[0] >= Duration::from_millis(15), "{at:?}");
        }
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
