//! The first answers of creating POSTs sent with an `Idempotency-Key` (other than
//! `POST /v1/messages`, whose key is written with its message): replayed for 24 h. A request
//! claims its key first (a row with status 0, "in progress"), so that two instances given the
//! same key at once do not both act; a claim whose request died is taken over after
//! [`ABANDONED_AFTER`].

use super::rows::*;
use super::writer::{Conn, Output};
use super::*;

/// How long an unanswered claim holds its key (a request that takes longer, or whose
/// instance died, lets a retry act again).
pub const ABANDONED_AFTER: chrono::Duration = chrono::Duration::minutes(2);
const DAY_MICROS: i64 = 24 * 3600 * 1_000_000;

/// A first answer as stored; `status` 0 while its request is in progress.
#[derive(Debug, Clone)]
pub struct StoredAnswer {
    pub request_hash: String,
    pub status: u16,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

pub(super) struct NewAnswer {
    pub scope: String,
    pub key: String,
    pub request_hash: String,
    pub status: u16,
    pub body: String,
}

impl Store {
    /// The answer stored for `key` in `scope`, if any (stale ones included: the caller
    /// decides what is fresh).
    pub async fn recall_answer(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<StoredAnswer>, StoreError> {
        let row: Option<(String, i64, String, i64)> = sqlx::query_as(
            "SELECT request_hash, status, body, created_at FROM api_idempotency WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(
            row.map(|(request_hash, status, body, created_at)| StoredAnswer {
                request_hash,
                status: u16::try_from(status).unwrap_or(200),
                body,
                created_at: from_micros(created_at),
            }),
        )
    }

    /// Claims `key` for a request about to act: true when it is this request's (no answer
    /// or claim within 24 h, or only an abandoned claim).
    pub async fn claim_answer(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
    ) -> Result<bool, StoreError> {
        let op = writer::Op::RememberAnswer(Box::new(NewAnswer {
            scope: scope.to_owned(),
            key: key.to_owned(),
            request_hash: request_hash.to_owned(),
            status: 0,
            body: String::new(),
        }));
        match self.write(op).await? {
            writer::Output::Count(n) => Ok(n == 1),
            other => Err(other.unexpected()),
        }
    }

    /// Gives up a claim whose request did not succeed (a retry may act).
    pub async fn release_answer(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        let op = writer::Op::ReleaseAnswer {
            scope: scope.to_owned(),
            key: key.to_owned(),
        };
        self.write(op).await.map(|_| ())
    }

    /// Keeps the first answer for `key` over this request's claim (or a stale row).
    pub async fn remember_answer(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        let op = writer::Op::RememberAnswer(Box::new(NewAnswer {
            scope: scope.to_owned(),
            key: key.to_owned(),
            request_hash: request_hash.to_owned(),
            status,
            body: body.to_owned(),
        }));
        self.write(op).await.map(|_| ())
    }
}

/// A claim (status 0) or an answer for the key. A claim takes a key that is free, stale
/// or abandoned; an answer replaces its own claim. `Count(1)` when written.
pub(super) async fn remember(tx: &mut Conn, a: &NewAnswer) -> Result<Output, StoreError> {
    let now = now_micros();
    let stale = now - DAY_MICROS;
    let abandoned = now - ABANDONED_AFTER.num_microseconds().unwrap_or(DAY_MICROS);
    let done = sqlx::query(
        "INSERT INTO api_idempotency (scope, key, request_hash, status, body, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (scope, key) DO UPDATE SET request_hash = excluded.request_hash, \
         status = excluded.status, body = excluded.body, created_at = excluded.created_at \
         WHERE api_idempotency.created_at < $7 \
         OR (api_idempotency.status = 0 AND (excluded.status <> 0 OR api_idempotency.created_at < $8))",
    )
    .bind(&a.scope)
    .bind(&a.key)
    .bind(&a.request_hash)
    .bind(i64::from(a.status))
    .bind(&a.body)
    .bind(now)
    .bind(stale)
    .bind(abandoned)
    .execute(&mut *tx)
    .await?;
    Ok(Output::Count(done.rows_affected()))
}

pub(super) async fn release(tx: &mut Conn, scope: &str, key: &str) -> Result<Output, StoreError> {
    sqlx::query("DELETE FROM api_idempotency WHERE scope = $1 AND key = $2 AND status = 0")
        .bind(scope)
        .bind(key)
        .execute(&mut *tx)
        .await?;
    Ok(Output::Unit)
}
