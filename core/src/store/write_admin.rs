//! Writes of the operator's objects: bots (tenants, keys and cursors are inline in the
//! writer's dispatch, one statement each).

use sqlx::any::Any;

use super::rows::*;
use super::writer::{Conn, Output};
use super::*;

pub(super) async fn load_bot(tx: &mut Conn, id: &str) -> Result<Bot, StoreError> {
    let row: Option<BotRow> = sqlx::query_as(concat!(
        "SELECT ",
        crate::bot_columns!(),
        " FROM bots WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    row.ok_or(StoreError::NotFound)?.try_into()
}

pub(super) async fn upsert_bot(tx: &mut Conn, b: &BotWrite) -> Result<Output, StoreError> {
    let existing: Option<(String, String)> =
        sqlx::query_as("SELECT tenant_id, platform FROM bots WHERE id = $1")
            .bind(&b.id)
            .fetch_optional(&mut *tx)
            .await?;
    let tenant_exists: Option<(String,)> = sqlx::query_as("SELECT id FROM tenants WHERE id = $1")
        .bind(&b.tenant)
        .fetch_optional(&mut *tx)
        .await?;
    if tenant_exists.is_none() {
        return Err(StoreError::Invalid(format!(
            "tenant {:?} does not exist",
            b.tenant
        )));
    }
    let settings = serde_json::Value::Object(b.settings.clone()).to_string();
    let fields = serde_json::to_string(&b.credential_fields).map_err(StoreError::corrupt)?;
    let now = now_micros();
    match existing {
        Some((tenant, platform)) => {
            if tenant != b.tenant {
                return Err(StoreError::Conflict(format!("bot id {:?} is taken", b.id)));
            }
            if platform != b.platform.as_str() {
                return Err(StoreError::Conflict(format!(
                    "bot {:?} is a {platform} bot; its platform cannot change",
                    b.id
                )));
            }
            let mut q = super::sql::Sql::new("UPDATE bots SET enabled = ");
            q.bind(b.enabled as i64)
                .push(", settings = ")
                .bind(settings);
            q.push(", credential_fields = ").bind(fields);
            q.push(", source = ").bind(b.source.clone());
            q.push(", updated_at = ").bind(now);
            if let Some(creds) = &b.credentials {
                let sealed = creds
                    .as_ref()
                    .map(|s| serde_json::to_string(s).map_err(StoreError::corrupt))
                    .transpose()?;
                q.push(", credentials = ").bind(sealed);
            }
            q.push(" WHERE id = ").bind(b.id.clone());
            sqlx::query_with::<Any, _>(sqlx::AssertSqlSafe(q.text), q.args)
                .execute(&mut *tx)
                .await?;
        }
        None => {
            let sealed = b
                .credentials
                .clone()
                .flatten()
                .map(|s| serde_json::to_string(&s).map_err(StoreError::corrupt))
                .transpose()?;
            sqlx::query(
                "INSERT INTO bots (id, tenant_id, platform, enabled, settings, credentials, credential_fields, \
                 state, state_reason, last_error, last_seen_at, source, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'stopped', NULL, NULL, NULL, $8, $9, $9)",
            )
            .bind(&b.id)
            .bind(&b.tenant)
            .bind(b.platform.as_str())
            .bind(b.enabled as i64)
            .bind(settings)
            .bind(sealed)
            .bind(fields)
            .bind(&b.source)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(Output::Bot(Box::new(load_bot(tx, &b.id).await?)))
}
