//! The first answers of creating POSTs sent with an `Idempotency-Key` (other than
//! `POST /v1/messages`, whose key is written with its message): replayed for 24 h.

use super::rows::*;
use super::writer::{Conn, Output};
use super::*;

/// A first answer as stored.
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

    /// Keeps the first answer for `key` (a stale one is replaced).
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

pub(super) async fn remember(tx: &mut Conn, a: &NewAnswer) -> Result<Output, StoreError> {
    let now = now_micros();
    let stale = now - 24 * 3600 * 1_000_000;
    sqlx::query(
        "INSERT INTO api_idempotency (scope, key, request_hash, status, body, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (scope, key) DO UPDATE SET request_hash = excluded.request_hash, \
         status = excluded.status, body = excluded.body, created_at = excluded.created_at \
         WHERE api_idempotency.created_at < $7",
    )
    .bind(&a.scope)
    .bind(&a.key)
    .bind(&a.request_hash)
    .bind(i64::from(a.status))
    .bind(&a.body)
    .bind(now)
    .bind(stale)
    .execute(&mut *tx)
    .await?;
    Ok(Output::Unit)
}
