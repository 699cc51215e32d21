//! Dashboard totals from `message_tallies` (kept by the writer per quarter hour) and the
//! contact and group counts: a few hundred rows read, whatever the number of messages.

use chrono_tz::Tz;

use super::*;
use crate::model::{BotStats, Stats};

/// The starts of "today", "this week" (Monday) and "this month" in `tz`, as tally buckets.
fn period_buckets(tz: Tz, now: DateTime<Utc>) -> (i64, i64, i64) {
    use chrono::{Datelike, TimeZone};
    let local = now.with_timezone(&tz).date_naive();
    let start = |day: chrono::NaiveDate| -> i64 {
        let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
        // A midnight skipped by a DST change: the first instant of that day.
        let at = tz
            .from_local_datetime(&midnight)
            .earliest()
            .or_else(|| {
                tz.from_local_datetime(&(midnight + chrono::Duration::hours(1)))
                    .earliest()
            })
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(now);
        at.timestamp().div_euclid(900)
    };
    let week = local - chrono::Duration::days(local.weekday().num_days_from_monday() as i64);
    let month = local.with_day(1).unwrap_or(local);
    (start(local), start(week), start(month))
}

/// Parses an IANA time zone name (`"Africa/Nairobi"`).
pub fn parse_time_zone(name: &str) -> Option<Tz> {
    name.parse().ok()
}

impl Store {
    /// A tenant's totals, per bot and for the periods in its time zone (balances are the
    /// caller's to add).
    pub async fn stats(&self, tenant: &str) -> Result<Stats, StoreError> {
        let t = self.get_tenant(tenant).await?;
        let tz = parse_time_zone(&t.time_zone).unwrap_or(Tz::UTC);
        let (today, week, month) = period_buckets(tz, Utc::now());
        type Row = (String, Option<String>, i64, i64, i64, i64, i64, i64);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT t.bot_id, b.platform, CAST(SUM(t.sent) AS BIGINT), CAST(SUM(t.received) AS BIGINT), \
             CAST(SUM(t.failed) AS BIGINT), \
             CAST(SUM(CASE WHEN t.bucket >= $2 THEN t.sent ELSE 0 END) AS BIGINT), \
             CAST(SUM(CASE WHEN t.bucket >= $3 THEN t.sent ELSE 0 END) AS BIGINT), \
             CAST(SUM(CASE WHEN t.bucket >= $4 THEN t.sent ELSE 0 END) AS BIGINT) \
             FROM message_tallies t LEFT JOIN bots b ON b.id = t.bot_id \
             WHERE t.tenant_id = $1 GROUP BY t.bot_id, b.platform ORDER BY t.bot_id",
        )
        .bind(tenant)
        .bind(today)
        .bind(week)
        .bind(month)
        .fetch_all(&self.pool)
        .await?;
        let n = |v: i64| v.max(0) as u64;
        let per_bot: Vec<BotStats> = rows
            .into_iter()
            .map(|r| BotStats {
                bot_id: r.0,
                platform: r.1.as_deref().and_then(Platform::parse),
                sent: n(r.2),
                received: n(r.3),
                failed: n(r.4),
                sent_today: n(r.5),
                sent_this_week: n(r.6),
                sent_this_month: n(r.7),
            })
            .collect();
        let (contacts,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM contacts WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&self.pool)
                .await?;
        let (groups,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM contact_groups WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&self.pool)
                .await?;
        let sum = |f: fn(&BotStats) -> u64| per_bot.iter().map(f).sum::<u64>();
        Ok(Stats {
            total_sent: sum(|b| b.sent),
            total_received: sum(|b| b.received),
            total_contacts: n(contacts),
            total_groups: n(groups),
            failed: sum(|b| b.failed),
            sent_today: sum(|b| b.sent_today),
            sent_this_week: sum(|b| b.sent_this_week),
            sent_this_month: sum(|b| b.sent_this_month),
            time_zone: tz.name().to_owned(),
            balances: Vec::new(),
            per_bot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_at_local_midnight_monday_and_the_first() {
        // Thursday 2026-11-19 22:30 UTC is Friday 01:30 in Nairobi (UTC+3).
        let now: DateTime<Utc> = "2026-11-19T22:30:00Z".parse().unwrap();
        let (day, week, month) = period_buckets(Tz::Africa__Nairobi, now);
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap().timestamp() / 900;
        assert_eq!(day, at("2026-11-19T21:00:00Z"));
        assert_eq!(week, at("2026-11-15T21:00:00Z"));
        assert_eq!(month, at("2026-10-31T21:00:00Z"));
        // Kolkata is UTC+5:30: quarter-hour buckets line up with its midnight.
        let (day, _, _) = period_buckets(Tz::Asia__Kolkata, now);
        assert_eq!(day, at("2026-11-19T18:30:00Z"));
    }
}
