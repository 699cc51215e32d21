//! Outbound webhook subscriptions and their failed deliveries. A subscription follows its
//! tenant's event log from the seq it was created at (`delivered_seq`); the dispatcher
//! (`gateway/src/webhooks.rs`) reads the events after it, delivers them and writes back how
//! far it got, together with the deliveries that failed (retried with backoff, then dead).
//! The secret is stored as the API layer gave it (sealed with the master key when one is
//! configured) and only ever read by the dispatcher.

use sqlx::FromRow;

use super::reads::{decode_cursor, limit, paginate};
use super::rows::*;
use super::sql::Sql;
use super::writer::{Conn, Output};
use super::*;
use crate::model::{WebhookFailure, WebhookSubscription};

/// A subscription as the dispatcher needs it, with its stored secret.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    pub id: String,
    pub tenant: String,
    pub url: String,
    pub types: Vec<String>,
    pub secret: String,
    pub delivered_seq: i64,
}

/// A failed delivery as the dispatcher writes it (first failure or another one).
#[derive(Debug, Clone)]
pub struct FailedDelivery {
    pub seq: i64,
    pub dead: bool,
    pub attempts: u32,
    pub first_attempt_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub status: Option<u16>,
    pub error: String,
}

/// What one dispatch round did for a subscription, written in one job.
#[derive(Debug, Clone, Default)]
pub struct WebhookProgress {
    pub subscription_id: String,
    /// Every event up to here was delivered or is among the failures.
    pub delivered_seq: Option<i64>,
    pub failed: Vec<FailedDelivery>,
    /// Retried deliveries that went through.
    pub recovered: Vec<i64>,
}

pub(super) enum WebhookOp {
    Create {
        tenant: String,
        url: String,
        types: Vec<String>,
        secret: String,
    },
    Delete {
        tenant: String,
        id: String,
    },
    /// New values for what is `Some`.
    Update {
        tenant: String,
        id: String,
        url: Option<String>,
        types: Option<Vec<String>>,
        secret: Option<String>,
    },
    Progress(WebhookProgress),
    Lease {
        id: String,
        owner: String,
        until: DateTime<Utc>,
    },
}

#[derive(Debug, FromRow)]
struct SubscriptionRow {
    id: String,
    tenant_id: String,
    url: String,
    types: String,
    delivered_seq: i64,
    created_at: i64,
    retrying: i64,
    dead: i64,
}

fn split_types(types: &str) -> Vec<String> {
    types
        .split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

impl From<SubscriptionRow> for WebhookSubscription {
    fn from(r: SubscriptionRow) -> Self {
        WebhookSubscription {
            id: r.id,
            tenant: r.tenant_id,
            url: r.url,
            types: split_types(&r.types),
            delivered_seq: r.delivered_seq,
            retrying: r.retrying.max(0) as u64,
            dead_letters: r.dead.max(0) as u64,
            created_at: from_micros(r.created_at),
        }
    }
}

const SUBSCRIPTION_SELECT: &str = "SELECT s.id, s.tenant_id, s.url, s.types, s.delivered_seq, s.created_at, \
     (SELECT COUNT(*) FROM webhook_retries r WHERE r.subscription_id = s.id AND r.state = 'retrying') AS retrying, \
     (SELECT COUNT(*) FROM webhook_retries r WHERE r.subscription_id = s.id AND r.state = 'dead') AS dead \
     FROM webhook_subscriptions s WHERE ";

#[derive(Debug, FromRow)]
struct FailureRow {
    subscription_id: String,
    seq: i64,
    state: String,
    attempts: i64,
    first_attempt_at: i64,
    last_attempt_at: i64,
    next_attempt_at: i64,
    last_status: Option<i64>,
    last_error: String,
}

impl From<FailureRow> for WebhookFailure {
    fn from(r: FailureRow) -> Self {
        let retrying = r.state == "retrying";
        WebhookFailure {
            subscription_id: r.subscription_id,
            seq: r.seq,
            state: r.state,
            attempts: r.attempts.clamp(0, u32::MAX as i64) as u32,
            first_attempt_at: from_micros(r.first_attempt_at),
            last_attempt_at: from_micros(r.last_attempt_at),
            next_attempt_at: retrying.then(|| from_micros(r.next_attempt_at)),
            last_status: r.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: r.last_error,
        }
    }
}

const FAILURE_SELECT: &str = "SELECT subscription_id, seq, state, attempts, first_attempt_at, last_attempt_at, \
     next_attempt_at, last_status, last_error FROM webhook_retries WHERE ";

impl Store {
    pub async fn create_webhook(
        &self,
        tenant: &str,
        url: &str,
        types: &[String],
        secret: &str,
    ) -> Result<WebhookSubscription, StoreError> {
        let op = writer::Op::Webhook(Box::new(WebhookOp::Create {
            tenant: tenant.to_owned(),
            url: url.to_owned(),
            types: types.to_vec(),
            secret: secret.to_owned(),
        }));
        match self.write(op).await? {
            writer::Output::Id(id) => self.get_webhook(&Scope::Tenant(tenant.into()), &id).await,
            other => Err(other.unexpected()),
        }
    }

    pub async fn delete_webhook(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        let op = writer::Op::Webhook(Box::new(WebhookOp::Delete {
            tenant: tenant.to_owned(),
            id: id.to_owned(),
        }));
        self.write(op).await.map(|_| ())
    }

    /// Changes a subscription's URL, types or (sealed) secret; deliveries from then on use
    /// them.
    pub async fn update_webhook(
        &self,
        tenant: &str,
        id: &str,
        url: Option<String>,
        types: Option<Vec<String>>,
        secret: Option<String>,
    ) -> Result<WebhookSubscription, StoreError> {
        let op = writer::Op::Webhook(Box::new(WebhookOp::Update {
            tenant: tenant.to_owned(),
            id: id.to_owned(),
            url,
            types,
            secret,
        }));
        self.write(op).await?;
        self.get_webhook(&Scope::Tenant(tenant.into()), id).await
    }

    /// Writes what a dispatch round did (nothing when the subscription was deleted meanwhile).
    pub async fn record_webhook_progress(
        &self,
        progress: WebhookProgress,
    ) -> Result<(), StoreError> {
        let op = writer::Op::Webhook(Box::new(WebhookOp::Progress(progress)));
        self.write(op).await.map(|_| ())
    }

    /// Takes (or extends) the right to deliver for the subscription until `until`: true
    /// when no other instance holds it now.
    pub async fn lease_webhook(
        &self,
        id: &str,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let op = writer::Op::Webhook(Box::new(WebhookOp::Lease {
            id: id.to_owned(),
            owner: owner.to_owned(),
            until,
        }));
        match self.write(op).await? {
            writer::Output::Count(n) => Ok(n == 1),
            other => Err(other.unexpected()),
        }
    }

    pub async fn get_webhook(
        &self,
        scope: &Scope,
        id: &str,
    ) -> Result<WebhookSubscription, StoreError> {
        let mut q = Sql::new(SUBSCRIPTION_SELECT);
        q.push("s.id = ").bind(id.to_owned()).push(" AND ");
        q.scope("s.tenant_id", scope);
        let row: Option<SubscriptionRow> = sqlx::query_as_with::<sqlx::Any, SubscriptionRow, _>(
            sqlx::AssertSqlSafe(q.text),
            q.args,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.ok_or(StoreError::NotFound)?.into())
    }

    pub async fn list_webhooks(
        &self,
        scope: &Scope,
        page: &PageRequest,
    ) -> Result<Page<WebhookSubscription>, StoreError> {
        let limit = limit(page);
        let mut q = Sql::new(SUBSCRIPTION_SELECT);
        q.scope("s.tenant_id", scope);
        if let Some(c) = &page.cursor {
            q.push(" AND s.id > ").bind(decode_cursor(c)?);
        }
        q.push(" ORDER BY s.id LIMIT ").bind(limit + 1);
        let rows: Vec<SubscriptionRow> = sqlx::query_as_with::<sqlx::Any, SubscriptionRow, _>(
            sqlx::AssertSqlSafe(q.text),
            q.args,
        )
        .fetch_all(&self.pool)
        .await?;
        let items: Vec<WebhookSubscription> = rows.into_iter().map(Into::into).collect();
        Ok(paginate(items, limit, |s| s.id.clone()))
    }

    /// Every subscription, with its stored secret: the dispatcher's work list.
    pub async fn webhook_targets(&self) -> Result<Vec<WebhookTarget>, StoreError> {
        self.targets(None).await
    }

    /// One subscription as it is now (how far it was delivered), if it still exists.
    pub async fn webhook_target(&self, id: &str) -> Result<Option<WebhookTarget>, StoreError> {
        Ok(self.targets(Some(id)).await?.pop())
    }

    async fn targets(&self, id: Option<&str>) -> Result<Vec<WebhookTarget>, StoreError> {
        let mut q = Sql::new(
            "SELECT id, tenant_id, url, types, secret, delivered_seq FROM webhook_subscriptions",
        );
        if let Some(id) = id {
            q.push(" WHERE id = ").bind(id.to_owned());
        }
        q.push(" ORDER BY id");
        let rows: Vec<(String, String, String, String, String, i64)> =
            sqlx::query_as_with::<sqlx::Any, _, _>(sqlx::AssertSqlSafe(q.text), q.args)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, tenant, url, types, secret, delivered_seq)| WebhookTarget {
                    id,
                    tenant,
                    url,
                    types: split_types(&types),
                    secret,
                    delivered_seq,
                },
            )
            .collect())
    }

    /// Failed deliveries of the subscription still being retried, oldest first: those due
    /// for another attempt by `due_by`, or (with `started_before`) those whose first attempt
    /// was before it, due or not.
    pub async fn webhook_retries(
        &self,
        subscription: &str,
        due_by: Option<DateTime<Utc>>,
        started_before: Option<DateTime<Utc>>,
        max: u32,
    ) -> Result<Vec<WebhookFailure>, StoreError> {
        let mut q = Sql::new(FAILURE_SELECT);
        q.push("subscription_id = ").bind(subscription.to_owned());
        q.push(" AND state = 'retrying'");
        if let Some(due_by) = due_by {
            q.push(" AND next_attempt_at <= ").bind(to_micros(due_by));
        }
        if let Some(before) = started_before {
            q.push(" AND first_attempt_at < ").bind(to_micros(before));
        }
        q.push(" ORDER BY seq LIMIT ").bind(max as i64);
        let rows: Vec<FailureRow> =
            sqlx::query_as_with::<sqlx::Any, FailureRow, _>(sqlx::AssertSqlSafe(q.text), q.args)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The subscription's failed deliveries (`state`: `retrying` or `dead`; both when
    /// `None`), by seq.
    pub async fn webhook_failures(
        &self,
        scope: &Scope,
        subscription: &str,
        state: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<WebhookFailure>, StoreError> {
        // 404 for another tenant's subscription.
        self.get_webhook(scope, subscription).await?;
        let limit = limit(page);
        let mut q = Sql::new(FAILURE_SELECT);
        q.push("subscription_id = ").bind(subscription.to_owned());
        if let Some(state) = state {
            q.push(" AND state = ").bind(state.to_owned());
        }
        if let Some(c) = &page.cursor {
            let after: i64 = decode_cursor(c)?.parse().map_err(|_| {
                StoreError::BadRequest("cursor is not one this API returned".into())
            })?;
            q.push(" AND seq > ").bind(after);
        }
        q.push(" ORDER BY seq LIMIT ").bind(limit + 1);
        let rows: Vec<FailureRow> =
            sqlx::query_as_with::<sqlx::Any, FailureRow, _>(sqlx::AssertSqlSafe(q.text), q.args)
                .fetch_all(&self.pool)
                .await?;
        let items: Vec<WebhookFailure> = rows.into_iter().map(Into::into).collect();
        Ok(paginate(items, limit, |f| f.seq.to_string()))
    }
}

pub(super) async fn apply(tx: &mut Conn, op: &WebhookOp) -> Result<Output, StoreError> {
    match op {
        WebhookOp::Create {
            tenant,
            url,
            types,
            secret,
        } => {
            // From now on: the events already numbered are not delivered.
            let last: Option<(i64,)> = sqlx::query_as("SELECT last_seq FROM tenants WHERE id = $1")
                .bind(tenant)
                .fetch_optional(&mut *tx)
                .await?;
            let (last,) =
                last.ok_or_else(|| StoreError::Invalid(format!("unknown tenant {tenant:?}")))?;
            let id = new_id();
            sqlx::query(
                "INSERT INTO webhook_subscriptions (id, tenant_id, url, types, secret, delivered_seq, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&id)
            .bind(tenant)
            .bind(url)
            .bind(types.join(","))
            .bind(secret)
            .bind(last)
            .bind(now_micros())
            .execute(&mut *tx)
            .await?;
            Ok(Output::Id(id))
        }
        WebhookOp::Delete { tenant, id } => {
            let gone =
                sqlx::query("DELETE FROM webhook_subscriptions WHERE id = $1 AND tenant_id = $2")
                    .bind(id)
                    .bind(tenant)
                    .execute(&mut *tx)
                    .await?;
            if gone.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(Output::Unit)
        }
        WebhookOp::Update {
            tenant,
            id,
            url,
            types,
            secret,
        } => {
            let mut q = Sql::new("UPDATE webhook_subscriptions SET id = id");
            if let Some(url) = url {
                q.push(", url = ").bind(url.clone());
            }
            if let Some(types) = types {
                q.push(", types = ").bind(types.join(","));
            }
            if let Some(secret) = secret {
                q.push(", secret = ").bind(secret.clone());
            }
            q.push(" WHERE id = ").bind(id.clone());
            q.push(" AND tenant_id = ").bind(tenant.clone());
            let done = sqlx::query_with::<sqlx::Any, _>(sqlx::AssertSqlSafe(q.text), q.args)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(Output::Unit)
        }
        WebhookOp::Lease { id, owner, until } => {
            let taken = sqlx::query(
                "UPDATE webhook_subscriptions SET lease_owner = $1, lease_until = $2 \
                 WHERE id = $3 AND (lease_until < $4 OR lease_owner = $1)",
            )
            .bind(owner)
            .bind(to_micros(*until))
            .bind(id)
            .bind(now_micros())
            .execute(&mut *tx)
            .await?;
            Ok(Output::Count(taken.rows_affected()))
        }
        WebhookOp::Progress(p) => {
            let exists: Option<(String,)> =
                sqlx::query_as("SELECT id FROM webhook_subscriptions WHERE id = $1")
                    .bind(&p.subscription_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                return Ok(Output::Unit);
            }
            if let Some(seq) = p.delivered_seq {
                sqlx::query(
                    "UPDATE webhook_subscriptions SET delivered_seq = $1 WHERE id = $2 AND delivered_seq < $1",
                )
                .bind(seq)
                .bind(&p.subscription_id)
                .execute(&mut *tx)
                .await?;
            }
            for f in &p.failed {
                sqlx::query(
                    "INSERT INTO webhook_retries (subscription_id, seq, state, attempts, first_attempt_at, \
                     last_attempt_at, next_attempt_at, last_status, last_error) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (subscription_id, seq) DO UPDATE SET state = excluded.state, \
                     attempts = excluded.attempts, last_attempt_at = excluded.last_attempt_at, \
                     next_attempt_at = excluded.next_attempt_at, last_status = excluded.last_status, \
                     last_error = excluded.last_error",
                )
                .bind(&p.subscription_id)
                .bind(f.seq)
                .bind(if f.dead { "dead" } else { "retrying" })
                .bind(f.attempts as i64)
                .bind(to_micros(f.first_attempt_at))
                .bind(now_micros())
                .bind(to_micros(f.next_attempt_at))
                .bind(f.status.map(i64::from))
                .bind(&f.error)
                .execute(&mut *tx)
                .await?;
            }
            for seq in &p.recovered {
                sqlx::query("DELETE FROM webhook_retries WHERE subscription_id = $1 AND seq = $2")
                    .bind(&p.subscription_id)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(Output::Unit)
        }
    }
}
