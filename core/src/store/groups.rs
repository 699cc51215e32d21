//! Groups of contacts: reads (with member counts) and the writes the writer applies. A name
//! is unique per tenant; adding a member twice or removing one twice changes nothing.

use sqlx::FromRow;

use super::reads::{decode_cursor, limit, paginate};
use super::rows::*;
use super::sql::Sql;
use super::writer::{Conn, Output};
use super::*;
use crate::model::Group;

#[derive(Debug, FromRow)]
struct GroupRow {
    id: String,
    tenant_id: String,
    name: String,
    description: Option<String>,
    created_at: i64,
    updated_at: i64,
    contact_count: i64,
}

impl From<GroupRow> for Group {
    fn from(r: GroupRow) -> Group {
        Group {
            id: r.id,
            tenant: r.tenant_id,
            name: r.name,
            description: r.description,
            contact_count: r.contact_count.max(0) as u64,
            created_at: from_micros(r.created_at),
            updated_at: from_micros(r.updated_at),
        }
    }
}

const GROUP_SELECT: &str = "SELECT g.id, g.tenant_id, g.name, g.description, g.created_at, g.updated_at, \
     (SELECT COUNT(*) FROM group_members m WHERE m.group_id = g.id) AS contact_count \
     FROM contact_groups g WHERE ";

impl Store {
    pub async fn get_group(&self, scope: &Scope, id: &str) -> Result<Group, StoreError> {
        let mut q = Sql::new(GROUP_SELECT);
        q.push("g.id = ").bind(id.to_owned());
        q.push(" AND (")
            .bind(scope.param())
            .push(" = '*' OR g.tenant_id = ");
        q.bind(scope.param()).push(")");
        let row: Option<GroupRow> =
            sqlx::query_as_with::<sqlx::Any, GroupRow, _>(sqlx::AssertSqlSafe(q.text), q.args)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.ok_or(StoreError::NotFound)?.into())
    }

    /// The caller's groups by id, with their member counts.
    pub async fn list_groups(
        &self,
        scope: &Scope,
        page: &PageRequest,
    ) -> Result<Page<Group>, StoreError> {
        let limit = limit(page);
        let mut q = Sql::new(GROUP_SELECT);
        q.scope("g.tenant_id", scope);
        if let Some(c) = &page.cursor {
            q.push(" AND g.id > ").bind(decode_cursor(c)?);
        }
        q.push(" ORDER BY g.id LIMIT ").bind(limit + 1);
        let rows: Vec<GroupRow> =
            sqlx::query_as_with::<sqlx::Any, GroupRow, _>(sqlx::AssertSqlSafe(q.text), q.args)
                .fetch_all(&self.pool)
                .await?;
        let groups: Vec<Group> = rows.into_iter().map(Group::from).collect();
        Ok(paginate(groups, limit, |g| g.id.clone()))
    }
}

async fn name_taken(
    tx: &mut Conn,
    tenant: &str,
    name: &str,
    except: Option<&str>,
) -> Result<bool, StoreError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT id FROM contact_groups WHERE tenant_id = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(row.is_some_and(|(id,)| Some(id.as_str()) != except))
}

pub(super) async fn create_group(
    tx: &mut Conn,
    tenant: &str,
    name: &str,
    description: Option<&str>,
) -> Result<Output, StoreError> {
    if name_taken(tx, tenant, name, None).await? {
        return Err(StoreError::Conflict(format!(
            "name: a group named {name:?} already exists"
        )));
    }
    let id = new_id();
    let now = now_micros();
    sqlx::query(
        "INSERT INTO contact_groups (id, tenant_id, name, description, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(&id)
    .bind(tenant)
    .bind(name)
    .bind(description)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(Output::Id(id))
}

pub(super) async fn update_group(
    tx: &mut Conn,
    tenant: &str,
    id: &str,
    name: Option<&str>,
    description: Option<Option<&str>>,
) -> Result<Output, StoreError> {
    let current: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT name, description FROM contact_groups WHERE id = $1 AND tenant_id = $2",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    let (old_name, old_description) = current.ok_or(StoreError::NotFound)?;
    let name = name.map(str::to_owned).unwrap_or(old_name);
    if name_taken(tx, tenant, &name, Some(id)).await? {
        return Err(StoreError::Conflict(format!(
            "name: a group named {name:?} already exists"
        )));
    }
    let description = match description {
        Some(d) => d.map(str::to_owned),
        None => old_description,
    };
    sqlx::query(
        "UPDATE contact_groups SET name = $1, description = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(name)
    .bind(description)
    .bind(now_micros())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    Ok(Output::Id(id.to_owned()))
}

pub(super) async fn delete_group(
    tx: &mut Conn,
    tenant: &str,
    id: &str,
) -> Result<Output, StoreError> {
    // Its memberships go with it (ON DELETE CASCADE).
    let gone = sqlx::query("DELETE FROM contact_groups WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    if gone.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(Output::Unit)
}

/// Adds contacts of the tenant to the group (those already in it stay); an unknown contact
/// fails the whole call, naming it.
pub(super) async fn add_members(
    tx: &mut Conn,
    tenant: &str,
    group: &str,
    contacts: &[String],
) -> Result<Output, StoreError> {
    group_in_tenant(tx, tenant, group).await?;
    for contact in contacts {
        let exists: Option<(String,)> =
            sqlx::query_as("SELECT id FROM contacts WHERE id = $1 AND tenant_id = $2")
                .bind(contact)
                .bind(tenant)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(StoreError::Invalid(format!(
                "contact_ids: no contact {contact:?}"
            )));
        }
    }
    Ok(Output::Count(insert_members(tx, group, contacts).await?))
}

/// The group exists in the tenant, else `NotFound`.
pub(super) async fn group_in_tenant(
    tx: &mut Conn,
    tenant: &str,
    group: &str,
) -> Result<(), StoreError> {
    let found: Option<(String,)> =
        sqlx::query_as("SELECT id FROM contact_groups WHERE id = $1 AND tenant_id = $2")
            .bind(group)
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
    found.map(|_| ()).ok_or(StoreError::NotFound)
}

/// Puts contacts (known to exist) in the group; those already in it stay. How many joined.
pub(super) async fn insert_members(
    tx: &mut Conn,
    group: &str,
    contacts: &[String],
) -> Result<u64, StoreError> {
    let now = now_micros();
    let mut added = 0;
    for chunk in contacts.chunks(200) {
        let mut q = Sql::on(
            tx,
            "INSERT INTO group_members (group_id, contact_id, added_at) VALUES ",
        );
        for (i, contact) in chunk.iter().enumerate() {
            q.row(i);
            q.bind(group.to_owned()).push(", ");
            q.bind(contact.clone()).push(", ");
            q.bind(now).push(")");
        }
        q.push(" ON CONFLICT (group_id, contact_id) DO NOTHING");
        let r = sqlx::query_with::<sqlx::any::Any, _>(sqlx::AssertSqlSafe(q.text), q.args)
            .execute(&mut *tx)
            .await?;
        added += r.rows_affected();
    }
    Ok(added)
}

pub(super) async fn remove_member(
    tx: &mut Conn,
    tenant: &str,
    group: &str,
    contact: &str,
) -> Result<Output, StoreError> {
    group_in_tenant(tx, tenant, group).await?;
    let r = sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND contact_id = $2")
        .bind(group)
        .bind(contact)
        .execute(&mut *tx)
        .await?;
    Ok(Output::Count(r.rows_affected()))
}
