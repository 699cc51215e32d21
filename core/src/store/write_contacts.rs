//! Writes of contacts as the API manages them: create (one, or many at once), edit, delete.
//! A phone is unique per tenant: a second contact with it is a conflict.

use serde_json::{Map, Value};

use super::rows::*;
use super::writer::{Conn, Output};
use super::*;

/// A contact to create.
#[derive(Debug, Clone, Default)]
pub struct NewContact {
    pub name: Option<String>,
    /// E.164, already validated.
    pub phone: Option<String>,
    pub tags: Vec<String>,
    pub attributes: Map<String, Value>,
}

/// A partial edit: `Some(None)` clears a field.
#[derive(Debug, Clone, Default)]
pub struct ContactPatch {
    pub name: Option<Option<String>>,
    pub phone: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub attributes: Option<Map<String, Value>>,
}

/// What a bulk create did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    /// Ids of the contacts created, in input order.
    pub created: Vec<String>,
    /// Input indexes whose phone already belonged to a contact (left unchanged).
    pub existing: Vec<usize>,
    /// The ids of those contacts (an entry repeating a phone of the list: the first's id).
    pub existing_ids: Vec<String>,
}

pub(super) async fn phone_owner(
    tx: &mut Conn,
    tenant: &str,
    phone: &str,
) -> Result<Option<String>, StoreError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT id FROM contacts WHERE tenant_id = $1 AND phone = $2")
            .bind(tenant)
            .bind(phone)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(row.map(|r| r.0))
}

async fn insert(tx: &mut Conn, tenant: &str, c: &NewContact) -> Result<String, StoreError> {
    let id = new_id();
    let now = now_micros();
    sqlx::query(
        "INSERT INTO contacts (id, tenant_id, name, phone, tags, attributes, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(&id)
    .bind(tenant)
    .bind(&c.name)
    .bind(&c.phone)
    .bind(serde_json::to_string(&c.tags).map_err(StoreError::corrupt)?)
    .bind(Value::Object(c.attributes.clone()).to_string())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(id)
}

pub(super) async fn create_contact(
    tx: &mut Conn,
    tenant: &str,
    c: &NewContact,
) -> Result<Output, StoreError> {
    if let Some(phone) = &c.phone
        && phone_owner(tx, tenant, phone).await?.is_some()
    {
        return Err(StoreError::Conflict(format!(
            "phone: a contact with {phone} already exists"
        )));
    }
    Ok(Output::Id(insert(tx, tenant, c).await?))
}

/// Rows per multi-row statement of the bulk writes.
const ROWS_PER_STATEMENT: usize = 100;

/// Creates each contact whose phone is new to the tenant (and to the list): the phones'
/// owners are read in a few `IN (...)` queries and the new contacts inserted in multi-row
/// statements.
pub(super) async fn bulk_contacts(
    tx: &mut Conn,
    tenant: &str,
    items: &[NewContact],
) -> Result<BulkOutcome, StoreError> {
    let phones: Vec<&str> = items.iter().filter_map(|c| c.phone.as_deref()).collect();
    let mut owners: std::collections::HashMap<String, String> =
        super::batch::pairs_in(tx, &super::batch::CONTACT_BY_PHONE, tenant, phones)
            .await?
            .into_iter()
            .filter_map(|(phone, id)| Some((phone, id?)))
            .collect();
    let mut out = BulkOutcome::default();
    let mut new: Vec<(String, &NewContact)> = Vec::new();
    for (i, c) in items.iter().enumerate() {
        if let Some(phone) = &c.phone {
            if let Some(id) = owners.get(phone) {
                out.existing.push(i);
                out.existing_ids.push(id.clone());
                continue;
            }
            let id = new_id();
            owners.insert(phone.clone(), id.clone());
            new.push((id, c));
        } else {
            new.push((new_id(), c));
        }
    }
    let now = now_micros();
    for chunk in new.chunks(ROWS_PER_STATEMENT) {
        let mut q = super::sql::Sql::on(
            tx,
            "INSERT INTO contacts (id, tenant_id, name, phone, tags, attributes, created_at, updated_at) VALUES ",
        );
        for (i, (id, c)) in chunk.iter().enumerate() {
            q.row(i);
            q.bind(id.clone()).push(", ");
            q.bind(tenant.to_owned()).push(", ");
            q.bind(c.name.clone()).push(", ");
            q.bind(c.phone.clone()).push(", ");
            q.bind(serde_json::to_string(&c.tags).map_err(StoreError::corrupt)?)
                .push(", ");
            q.bind(Value::Object(c.attributes.clone()).to_string())
                .push(", ");
            q.bind(now).push(", ");
            q.bind(now).push(")");
        }
        sqlx::query_with::<sqlx::any::Any, _>(sqlx::AssertSqlSafe(q.text), q.args)
            .execute(&mut *tx)
            .await?;
    }
    out.created = new.into_iter().map(|(id, _)| id).collect();
    Ok(out)
}

pub(super) async fn update_contact(
    tx: &mut Conn,
    tenant: &str,
    id: &str,
    patch: &ContactPatch,
) -> Result<Output, StoreError> {
    let current: Option<(Option<String>, Option<String>, String, String)> = sqlx::query_as(
        "SELECT name, phone, tags, attributes FROM contacts WHERE id = $1 AND tenant_id = $2",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    let (name, phone, tags, attributes) = current.ok_or(StoreError::NotFound)?;
    let name = patch.name.clone().unwrap_or(name);
    let phone = patch.phone.clone().unwrap_or(phone);
    if let Some(p) = &phone
        && let Some(owner) = phone_owner(tx, tenant, p).await?
        && owner != id
    {
        return Err(StoreError::Conflict(format!(
            "phone: a contact with {p} already exists"
        )));
    }
    let tags = match &patch.tags {
        Some(t) => serde_json::to_string(t).map_err(StoreError::corrupt)?,
        None => tags,
    };
    let attributes = match &patch.attributes {
        Some(a) => Value::Object(a.clone()).to_string(),
        None => attributes,
    };
    sqlx::query(
        "UPDATE contacts SET name = $1, phone = $2, tags = $3, attributes = $4, updated_at = $5 \
         WHERE id = $6",
    )
    .bind(name)
    .bind(phone)
    .bind(tags)
    .bind(attributes)
    .bind(now_micros())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    Ok(Output::Id(id.to_owned()))
}

/// Deletes a contact and its identities; its conversations keep their history without it
/// (a later message from the same person makes a new contact).
pub(super) async fn delete_contact(
    tx: &mut Conn,
    tenant: &str,
    id: &str,
) -> Result<Output, StoreError> {
    let gone = sqlx::query("DELETE FROM contacts WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    if gone.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    // Its identities and memberships go with it (ON DELETE CASCADE).
    sqlx::query(
        "UPDATE conversations SET contact_id = NULL WHERE contact_id = $1 AND tenant_id = $2",
    )
    .bind(id)
    .bind(tenant)
    .execute(&mut *tx)
    .await?;
    Ok(Output::Unit)
}

/// Creates the new contacts and puts them, and the existing ones, in the group: one
/// transaction (the import of a spreadsheet).
pub(super) async fn import_contacts(
    tx: &mut Conn,
    tenant: &str,
    group: &str,
    items: &[NewContact],
) -> Result<BulkOutcome, StoreError> {
    super::groups::group_in_tenant(tx, tenant, group).await?;
    let out = bulk_contacts(tx, tenant, items).await?;
    super::groups::insert_members(tx, group, &out.created).await?;
    super::groups::insert_members(tx, group, &out.existing_ids).await?;
    Ok(out)
}
