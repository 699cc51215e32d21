//! Broadcasts: one content to many contacts through one bot, now or at a scheduled time.
//!
//! Creation snapshots the audience into recipient rows (contact, name, phone, the platform id
//! to send to, or why the recipient is skipped) and gives each recipient its message id. The
//! start writes every recipient's message in one transaction (multi-row, conversations opened
//! as needed) and hands them to the outbox, which paces them by the bot's rate policy; a
//! crash before that commit leaves the broadcast `scheduled`, so it starts again. A
//! recipient's status is its message's. Cancelling stops what is still queued.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::FromRow;

use super::reads::{decode_cursor, encode_cursor, limit};
use super::rows::*;
use super::sql::Sql;
use super::write_messages::{insert_messages, queued_message};
use super::writer::{Conn, Output, PendingEvent};
use super::*;
use crate::model::{Broadcast, BroadcastCounts, BroadcastRecipient, event_type as et};

/// A recipient as snapshotted at creation.
#[derive(Debug, Clone)]
pub struct RecipientSnapshot {
    pub contact_id: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    /// The platform id to send to; `None` with `skip_reason` when there is none.
    pub chat: Option<String>,
    pub skip_reason: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewBroadcast {
    pub tenant: String,
    pub bot_id: String,
    pub title: String,
    pub content: Content,
    pub to: serde_json::Value,
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Segments of each message (SMS).
    pub segments: Option<u32>,
    pub recipients: Vec<RecipientSnapshot>,
}

/// What may change while a broadcast is scheduled.
#[derive(Debug, Clone, Default)]
pub struct BroadcastPatch {
    pub title: Option<String>,
    pub content: Option<Content>,
    pub segments: Option<Option<u32>>,
    pub scheduled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default)]
pub struct BroadcastFilter {
    pub status: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// A broadcast due to start.
#[derive(Debug, Clone)]
pub struct DueBroadcast {
    pub id: String,
    pub tenant: String,
    pub bot_id: String,
    pub content: Content,
    pub scheduled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, FromRow)]
struct BroadcastRow {
    id: String,
    tenant_id: String,
    bot_id: String,
    title: String,
    content: String,
    audience: String,
    status: String,
    scheduled_at: Option<i64>,
    started_at: Option<i64>,
    started_late: i64,
    finished_at: Option<i64>,
    recipient_count: i64,
    segments: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

const BROADCAST_COLUMNS: &str = "id, tenant_id, bot_id, title, content, audience, status, scheduled_at, \
     started_at, started_late, finished_at, recipient_count, segments, created_at, updated_at";

impl BroadcastRow {
    fn into_broadcast(
        self,
        counts: BroadcastCounts,
        segments: u64,
        cost: Option<String>,
    ) -> Result<Broadcast, StoreError> {
        Ok(Broadcast {
            id: self.id,
            tenant: self.tenant_id,
            bot_id: self.bot_id,
            title: self.title,
            content: serde_json::from_str(&self.content).map_err(StoreError::corrupt)?,
            to: serde_json::from_str(&self.audience).map_err(StoreError::corrupt)?,
            status: self.status,
            scheduled_at: self.scheduled_at.map(from_micros),
            started_at: self.started_at.map(from_micros),
            started_late: self.started_late != 0,
            finished_at: self.finished_at.map(from_micros),
            recipient_count: self.recipient_count.max(0) as u64,
            counts,
            segments,
            cost,
            created_at: from_micros(self.created_at),
            updated_at: from_micros(self.updated_at),
        })
    }
}

/// Adds up costs like `"KES 0.8000"` per currency; `None` when none was reported.
fn total_cost(costs: &[(String, i64)]) -> Option<String> {
    let mut sums: std::collections::BTreeMap<String, f64> = Default::default();
    for (cost, n) in costs {
        let mut parts = cost.split_whitespace();
        let (Some(currency), Some(amount)) = (parts.next(), parts.next()) else {
            continue;
        };
        if let Ok(a) = amount.parse::<f64>() {
            *sums.entry(currency.to_owned()).or_default() += a * *n as f64;
        }
    }
    if sums.is_empty() {
        return None;
    }
    Some(
        sums.iter()
            .map(|(c, a)| format!("{c} {a:.4}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

impl Store {
    async fn broadcast_totals(&self, row: BroadcastRow) -> Result<Broadcast, StoreError> {
        // (skip reason, message status, cost, recipients, segments)
        type Tally = (
            Option<String>,
            Option<String>,
            Option<String>,
            i64,
            Option<i64>,
        );
        let rows: Vec<Tally> = sqlx::query_as(
            "SELECT r.skip_reason, m.status, m.cost, COUNT(*), CAST(SUM(m.segments) AS BIGINT) \
                 FROM broadcast_recipients r LEFT JOIN messages m ON m.id = r.message_id \
                 WHERE r.broadcast_id = $1 GROUP BY r.skip_reason, m.status, m.cost",
        )
        .bind(&row.id)
        .fetch_all(&self.pool)
        .await?;
        let mut counts = BroadcastCounts::default();
        let (mut segments, mut costs) = (0u64, Vec::new());
        for (skip, status, cost, n, segs) in rows {
            let n64 = n.max(0) as u64;
            segments += segs.unwrap_or(0).max(0) as u64;
            if let Some(c) = cost {
                costs.push((c, n));
            }
            let slot = match (skip, status.as_deref()) {
                (Some(_), _) => &mut counts.skipped,
                (None, None) if row.status == "cancelled" => &mut counts.cancelled,
                (None, None | Some("queued" | "sending")) => &mut counts.queued,
                (None, Some("sent")) => &mut counts.sent,
                (None, Some("delivered" | "read")) => &mut counts.delivered,
                (None, Some("cancelled")) => &mut counts.cancelled,
                (None, Some(_)) => &mut counts.failed,
            };
            *slot += n64;
        }
        row.into_broadcast(counts, segments, total_cost(&costs))
    }

    pub async fn get_broadcast(&self, scope: &Scope, id: &str) -> Result<Broadcast, StoreError> {
        let row: Option<BroadcastRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {BROADCAST_COLUMNS} FROM broadcasts WHERE id = $1 AND ($2 = '*' OR tenant_id = $2)"
        )))
        .bind(id)
        .bind(scope.param())
        .fetch_optional(&self.pool)
        .await?;
        self.broadcast_totals(row.ok_or(StoreError::NotFound)?)
            .await
    }

    /// Broadcasts, newest first, with their counts.
    pub async fn list_broadcasts(
        &self,
        scope: &Scope,
        filter: &BroadcastFilter,
        page: &PageRequest,
    ) -> Result<Page<Broadcast>, StoreError> {
        let limit = limit(page);
        let mut q = Sql::new(&format!(
            "SELECT {BROADCAST_COLUMNS} FROM broadcasts WHERE "
        ));
        q.scope("tenant_id", scope);
        q.and_eq("status", filter.status.clone());
        if let Some(t) = filter.since {
            q.push(" AND created_at >= ").bind(to_micros(t));
        }
        if let Some(t) = filter.until {
            q.push(" AND created_at < ").bind(to_micros(t));
        }
        if let Some(c) = &page.cursor {
            q.push(" AND id < ").bind(decode_cursor(c)?);
        }
        q.push(" ORDER BY id DESC LIMIT ").bind(limit + 1);
        let rows: Vec<BroadcastRow> = sqlx::query_as_with(sqlx::AssertSqlSafe(q.text), q.args)
            .fetch_all(&self.pool)
            .await?;
        let more = rows.len() as i64 > limit;
        let mut items = Vec::new();
        for row in rows.into_iter().take(limit as usize) {
            items.push(self.broadcast_totals(row).await?);
        }
        let next_cursor = more
            .then(|| items.last().map(|b: &Broadcast| encode_cursor(&b.id)))
            .flatten();
        Ok(Page { items, next_cursor })
    }

    /// A broadcast's recipients in audience order, with their messages' progress.
    pub async fn broadcast_recipients(
        &self,
        scope: &Scope,
        id: &str,
        page: &PageRequest,
    ) -> Result<Page<BroadcastRecipient>, StoreError> {
        let b = self.get_broadcast(scope, id).await?;
        let limit = limit(page);
        let after: i64 = match &page.cursor {
            Some(c) => decode_cursor(c)?.parse().map_err(|_| {
                StoreError::BadRequest("cursor is not one this API returned".into())
            })?,
            None => -1,
        };
        type Row = (
            i64,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT r.position, r.contact_id, r.name, r.phone, r.chat, r.skip_reason, r.message_id, \
             m.status, m.error, m.sent_at, m.delivered_at \
             FROM broadcast_recipients r LEFT JOIN messages m ON m.id = r.message_id \
             WHERE r.broadcast_id = $1 AND r.position > $2 ORDER BY r.position LIMIT $3",
        )
        .bind(id)
        .bind(after)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() as i64 > limit;
        let mut last = None;
        let mut items = Vec::new();
        for r in rows.into_iter().take(limit as usize) {
            last = Some(r.0);
            let status = match (&r.5, r.7) {
                (Some(_), _) => "skipped".to_owned(),
                (None, Some(s)) => s,
                (None, None) if b.status == "cancelled" => "cancelled".to_owned(),
                (None, None) => "queued".to_owned(),
            };
            items.push(BroadcastRecipient {
                contact_id: r.1,
                name: r.2,
                phone: r.3,
                platform_id: r.4,
                status,
                skip_reason: r.5,
                message_id: r.6,
                error: r
                    .8
                    .map(|e| serde_json::from_str(&e))
                    .transpose()
                    .map_err(StoreError::corrupt)?,
                sent_at: r.9.map(from_micros),
                delivered_at: r.10.map(from_micros),
            });
        }
        let next_cursor = more
            .then(|| last.map(|p| encode_cursor(&p.to_string())))
            .flatten();
        Ok(Page { items, next_cursor })
    }

    /// The audience of a broadcast on `bot`: the group's members or the listed contacts (in
    /// the given order), each with the platform id to send to or why there is none.
    pub async fn broadcast_audience(
        &self,
        bot: &Bot,
        group: Option<&str>,
        contacts: &[String],
    ) -> Result<Vec<RecipientSnapshot>, StoreError> {
        let tenant = &bot.tenant;
        // (contact, name, phone, its id on the bot), read with the audience: only these
        // contacts' identities, through the contact index.
        type Row = (String, Option<String>, Option<String>, Option<String>);
        let rows: Vec<Row> = match group {
            Some(g) => {
                let found: Option<(String,)> = sqlx::query_as(
                    "SELECT id FROM contact_groups WHERE id = $1 AND tenant_id = $2",
                )
                .bind(g)
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await?;
                if found.is_none() {
                    return Err(StoreError::Invalid(format!(
                        "to.group_id: group {g:?} not found"
                    )));
                }
                sqlx::query_as(
                    "SELECT c.id, c.name, c.phone, (SELECT MIN(i.external_id) FROM contact_identities i \
                     WHERE i.contact_id = c.id AND i.bot_id = $2) \
                     FROM group_members m JOIN contacts c ON c.id = m.contact_id \
                     WHERE m.group_id = $1 ORDER BY m.added_at, c.id",
                )
                .bind(g)
                .bind(&bot.id)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                let mut by_id = HashMap::new();
                for chunk in contacts.chunks(500) {
                    let mut q = Sql::new(
                        "SELECT c.id, c.name, c.phone, (SELECT MIN(i.external_id) FROM contact_identities i \
                         WHERE i.contact_id = c.id AND i.bot_id = ",
                    );
                    q.bind(bot.id.clone())
                        .push(") FROM contacts c WHERE c.tenant_id = ");
                    q.bind(tenant.clone()).push(" AND c.id IN (");
                    q.in_list(chunk.iter().cloned());
                    let found: Vec<Row> = sqlx::query_as_with(sqlx::AssertSqlSafe(q.text), q.args)
                        .fetch_all(&self.pool)
                        .await?;
                    for r in found {
                        by_id.insert(r.0.clone(), r);
                    }
                }
                let mut seen = std::collections::HashSet::new();
                let mut rows = Vec::new();
                for c in contacts {
                    if !seen.insert(c) {
                        continue;
                    }
                    rows.push(by_id.remove(c).ok_or_else(|| {
                        StoreError::Invalid(format!("to.contact_ids: contact {c:?} not found"))
                    })?);
                }
                rows
            }
        };
        let by_phone = matches!(bot.platform, Platform::Sms | Platform::Whatsapp);
        Ok(rows
            .into_iter()
            .map(|(id, name, phone, identity)| {
                let chat = identity.or_else(|| phone.clone().filter(|_| by_phone));
                let skip_reason = chat.is_none().then(|| {
                    if by_phone {
                        "the contact has no phone number".to_owned()
                    } else {
                        format!(
                            "the contact has no {} identity on bot {:?}",
                            bot.platform, bot.id
                        )
                    }
                });
                RecipientSnapshot {
                    contact_id: id,
                    name,
                    phone,
                    chat,
                    skip_reason,
                }
            })
            .collect())
    }

    /// Scheduled broadcasts whose time has come, oldest first.
    pub async fn due_broadcasts(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<DueBroadcast>, StoreError> {
        let rows: Vec<(String, String, String, String, Option<i64>)> = sqlx::query_as(
            "SELECT id, tenant_id, bot_id, content, scheduled_at FROM broadcasts \
             WHERE status = 'scheduled' AND scheduled_at <= $1 ORDER BY scheduled_at LIMIT 100",
        )
        .bind(to_micros(now))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, tenant, bot_id, content, at)| {
                Ok(DueBroadcast {
                    id,
                    tenant,
                    bot_id,
                    content: serde_json::from_str(&content).map_err(StoreError::corrupt)?,
                    scheduled_at: at.map(from_micros),
                })
            })
            .collect()
    }

    /// Broadcasts being sent: (id, tenant).
    pub async fn sending_broadcasts(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT id, tenant_id FROM broadcasts WHERE status = 'sending'")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

/// Rows per multi-row recipient insert (8 parameters each).
const RECIPIENTS_PER_INSERT: usize = 100;

pub(super) async fn create(tx: &mut Conn, b: &NewBroadcast) -> Result<Output, StoreError> {
    let id = new_id();
    let now = now_micros();
    // An instant broadcast is started by the same job, in the same transaction.
    let status = "scheduled";
    sqlx::query(
        "INSERT INTO broadcasts (id, tenant_id, bot_id, title, content, audience, status, scheduled_at, \
         started_late, recipient_count, segments, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $11, $11)",
    )
    .bind(&id)
    .bind(&b.tenant)
    .bind(&b.bot_id)
    .bind(&b.title)
    .bind(serde_json::to_string(&b.content).map_err(StoreError::corrupt)?)
    .bind(b.to.to_string())
    .bind(status)
    .bind(b.scheduled_at.map(to_micros))
    .bind(b.recipients.len() as i64)
    .bind(b.segments.map(i64::from))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    for (n, chunk) in b.recipients.chunks(RECIPIENTS_PER_INSERT).enumerate() {
        let mut q = Sql::on(
            tx,
            "INSERT INTO broadcast_recipients (broadcast_id, position, contact_id, name, phone, chat, skip_reason, message_id) VALUES ",
        );
        for (i, r) in chunk.iter().enumerate() {
            q.row(i);
            q.bind(id.clone()).push(", ");
            q.bind((n * RECIPIENTS_PER_INSERT + i) as i64).push(", ");
            q.bind(r.contact_id.clone()).push(", ");
            q.bind(r.name.clone()).push(", ");
            q.bind(r.phone.clone()).push(", ");
            q.bind(r.chat.clone()).push(", ");
            q.bind(r.skip_reason.clone()).push(", ");
            q.bind(r.chat.as_ref().map(|_| new_id())).push(")");
        }
        sqlx::query_with::<sqlx::any::Any, _>(sqlx::AssertSqlSafe(q.text), q.args)
            .execute(&mut *tx)
            .await?;
    }
    Ok(Output::Id(id))
}

async fn load(tx: &mut Conn, tenant: Option<&str>, id: &str) -> Result<BroadcastRow, StoreError> {
    let row: Option<BroadcastRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {BROADCAST_COLUMNS} FROM broadcasts WHERE id = $1 AND ($2 = '*' OR tenant_id = $2)"
    )))
    .bind(id)
    .bind(tenant.unwrap_or("*"))
    .fetch_optional(&mut *tx)
    .await?;
    row.ok_or(StoreError::NotFound)
}

/// Moves a broadcast to `status`: `finished_at` is set for `completed` and `cancelled`,
/// cleared otherwise.
async fn set_status(
    tx: &mut Conn,
    row: &mut BroadcastRow,
    status: &str,
    now: i64,
) -> Result<(), StoreError> {
    let finished = matches!(status, "completed" | "cancelled").then_some(now);
    sqlx::query(
        "UPDATE broadcasts SET status = $1, finished_at = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(status)
    .bind(finished)
    .bind(now)
    .bind(&row.id)
    .execute(&mut *tx)
    .await?;
    row.status = status.to_owned();
    Ok(())
}

fn progress_event(row: &BroadcastRow, extra: serde_json::Value) -> PendingEvent {
    let mut data = serde_json::json!({
        "id": row.id,
        "bot_id": row.bot_id,
        "title": row.title,
        "status": row.status,
        "recipient_count": row.recipient_count,
    });
    if let (Some(d), serde_json::Value::Object(extra)) = (data.as_object_mut(), extra) {
        d.extend(extra);
    }
    PendingEvent {
        tenant: row.tenant_id.clone(),
        kind: et::BROADCAST_PROGRESS,
        bot_id: Some(row.bot_id.clone()),
        data: event_data(&data),
    }
}

pub(super) async fn update(
    tx: &mut Conn,
    tenant: &str,
    id: &str,
    patch: &BroadcastPatch,
) -> Result<Output, StoreError> {
    let row = load(tx, Some(tenant), id).await?;
    if row.status != "scheduled" {
        return Err(StoreError::Conflict(format!(
            "broadcast {id} is {}: only a scheduled broadcast can be edited",
            row.status
        )));
    }
    sqlx::query(
        "UPDATE broadcasts SET title = COALESCE($1, title), content = COALESCE($2, content), \
         scheduled_at = COALESCE($3, scheduled_at), segments = CASE WHEN $4 = 1 THEN $5 ELSE segments END, \
         updated_at = $6 WHERE id = $7",
    )
    .bind(&patch.title)
    .bind(
        patch
            .content
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(StoreError::corrupt)?,
    )
    .bind(patch.scheduled_at.map(to_micros))
    .bind(patch.segments.is_some() as i64)
    .bind(patch.segments.flatten().map(i64::from))
    .bind(now_micros())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    Ok(Output::Unit)
}

pub(super) async fn cancel(
    tx: &mut Conn,
    tenant: &str,
    id: &str,
    ev: &mut Vec<PendingEvent>,
) -> Result<Output, StoreError> {
    let mut row = load(tx, Some(tenant), id).await?;
    if row.status != "scheduled" && row.status != "sending" {
        return Err(StoreError::Conflict(format!(
            "broadcast {id} is {}: there is nothing left to cancel",
            row.status
        )));
    }
    let now = now_micros();
    // What the outbox has not taken yet stays unsent: it skips a message that is no longer
    // queued when its turn comes.
    // The history (a JSON array, never empty) gets the change appended in place.
    let change = serde_json::to_string(&StatusChange {
        status: MessageStatus::Cancelled,
        at: from_micros(now),
    })
    .map_err(StoreError::corrupt)?;
    let stopped = sqlx::query(
        "UPDATE messages SET status = 'cancelled', \
         status_history = SUBSTR(status_history, 1, LENGTH(status_history) - 1) || ',' || $2 || ']' \
         WHERE status = 'queued' AND id IN \
         (SELECT message_id FROM broadcast_recipients WHERE broadcast_id = $1)",
    )
    .bind(id)
    .bind(change)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    set_status(tx, &mut row, "cancelled", now).await?;
    ev.push(progress_event(
        &row,
        serde_json::json!({"cancelled_messages": stopped}),
    ));
    Ok(Output::Unit)
}

/// Opens the conversations a broadcast needs that the bot does not have yet, in multi-row
/// inserts; returns every chat's conversation.
async fn conversations_for(
    tx: &mut Conn,
    bot: &Bot,
    chats: &[(String, Option<String>)],
) -> Result<HashMap<String, Conversation>, StoreError> {
    let keys: Vec<&str> = chats.iter().map(|(c, _)| c.as_str()).collect();
    let mut found = super::batch::conversations_in(tx, &bot.id, &keys).await?;
    let now = Utc::now();
    let mut missing: Vec<Conversation> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (chat, contact) in chats {
        if found.contains_key(chat) || !seen.insert(chat.clone()) {
            continue;
        }
        missing.push(Conversation {
            id: new_id(),
            tenant: bot.tenant.clone(),
            bot_id: bot.id.clone(),
            platform: bot.platform,
            external_chat_id: chat.clone(),
            kind: ConversationKind::Direct,
            title: None,
            contact_id: contact.clone(),
            last_message_at: None,
            last_inbound_at: None,
            created_at: now,
        });
    }
    super::batch::write_conversations(tx, &missing).await?;
    for c in missing {
        found.insert(c.external_chat_id.clone(), c);
    }
    Ok(found)
}

/// Writes the messages of `recipients` (position, contact, chat, message id) and returns
/// what the outbox must send. Recipients outside the platform's reply window are skipped.
async fn fan_out(
    tx: &mut Conn,
    bot: &Bot,
    row: &BroadcastRow,
    recipients: Vec<(i64, String, String, String)>,
    reply_window: Option<Duration>,
) -> Result<(Vec<OutboxEntry>, u64), StoreError> {
    let content: Content = serde_json::from_str(&row.content).map_err(StoreError::corrupt)?;
    let chats: Vec<(String, Option<String>)> = recipients
        .iter()
        .map(|(_, contact, chat, _)| (chat.clone(), Some(contact.clone())))
        .collect();
    let conversations = conversations_for(tx, bot, &chats).await?;
    let now = Utc::now();
    let cutoff = reply_window.map(|w| now - chrono::Duration::from_std(w).unwrap_or_default());
    let mut entries = Vec::with_capacity(recipients.len());
    let mut outside = Vec::new();
    for (position, contact, chat, message_id) in recipients {
        let conversation = conversations
            .get(&chat)
            .cloned()
            .ok_or_else(|| StoreError::corrupt("broadcast conversation missing"))?;
        if let Some(cutoff) = cutoff
            && conversation.last_inbound_at.is_none_or(|t| t < cutoff)
        {
            outside.push(position);
            continue;
        }
        let mut message = queued_message(
            bot,
            &conversation.id,
            Some(contact),
            content.clone(),
            None,
            row.segments.map(|s| s as u32),
            now,
        );
        message.id = message_id;
        entries.push(OutboxEntry {
            message,
            conversation,
            reply_to_external_id: None,
        });
    }
    let rows: Vec<(&Message, Option<&str>)> = entries.iter().map(|e| (&e.message, None)).collect();
    insert_messages(tx, &rows).await?;
    if !outside.is_empty() {
        let hours = reply_window.map_or(0, |w| w.as_secs() / 3600);
        let reason = format!(
            "outside the {} customer-service window of {hours} hours: only templates may be sent",
            bot.platform
        );
        for chunk in outside.chunks(500) {
            let mut q = Sql::on(tx, "UPDATE broadcast_recipients SET skip_reason = ");
            q.bind(reason.clone())
                .push(", message_id = NULL WHERE broadcast_id = ");
            q.bind(row.id.clone()).push(" AND position IN (");
            q.in_list(chunk.iter().copied());
            sqlx::query_with::<sqlx::any::Any, _>(sqlx::AssertSqlSafe(q.text), q.args)
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok((entries, outside.len() as u64))
}

/// Starts a scheduled broadcast: every recipient's message is written and handed to the
/// outbox. `late`: it started after its time (the gateway was down then).
pub(super) async fn start(
    tx: &mut Conn,
    bot: &Bot,
    id: &str,
    late: bool,
    reply_window: Option<Duration>,
    ev: &mut Vec<PendingEvent>,
) -> Result<Output, StoreError> {
    let mut row = load(tx, None, id).await?;
    if row.status != "scheduled" {
        return Err(StoreError::Conflict(format!(
            "broadcast {id} is {}, not scheduled",
            row.status
        )));
    }
    if bot.id != row.bot_id {
        return Err(StoreError::corrupt("broadcast started with another bot"));
    }
    let recipients: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT position, contact_id, chat, message_id FROM broadcast_recipients \
         WHERE broadcast_id = $1 AND skip_reason IS NULL AND message_id IS NOT NULL ORDER BY position",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let (entries, outside) = fan_out(tx, bot, &row, recipients, reply_window).await?;
    let now = now_micros();
    sqlx::query(
        "UPDATE broadcasts SET status = 'sending', started_at = $1, started_late = $2, updated_at = $1 WHERE id = $3",
    )
    .bind(now)
    .bind(late as i64)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    row.status = "sending".into();
    ev.push(progress_event(
        &row,
        serde_json::json!({
            "started_late": late,
            "scheduled_at": row.scheduled_at.map(from_micros),
            "queued": entries.len(),
            "skipped_outside_window": outside,
        }),
    ));
    Ok(Output::Fanout {
        id: id.to_owned(),
        entries,
    })
}

/// Sends the failed recipients again (new messages in the same conversations).
pub(super) async fn resend_failed(
    tx: &mut Conn,
    bot: &Bot,
    tenant: &str,
    id: &str,
    ev: &mut Vec<PendingEvent>,
) -> Result<Output, StoreError> {
    let mut row = load(tx, Some(tenant), id).await?;
    if row.status != "sending" && row.status != "completed" {
        return Err(StoreError::Conflict(format!(
            "broadcast {id} is {}: only a started broadcast has failed recipients",
            row.status
        )));
    }
    let failed: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT r.position, r.contact_id, r.chat FROM broadcast_recipients r \
         JOIN messages m ON m.id = r.message_id WHERE r.broadcast_id = $1 AND m.status = 'failed' \
         ORDER BY r.position",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let recipients: Vec<(i64, String, String, String)> = failed
        .into_iter()
        .map(|(p, contact, chat)| (p, contact, chat, new_id()))
        .collect();
    // The recipients point at their new messages (one multi-row upsert on the key).
    for chunk in recipients.chunks(RECIPIENTS_PER_INSERT) {
        let mut q = Sql::on(
            tx,
            "INSERT INTO broadcast_recipients (broadcast_id, position, contact_id, message_id) VALUES ",
        );
        for (i, (position, contact, _, message_id)) in chunk.iter().enumerate() {
            q.row(i);
            q.bind(id.to_owned()).push(", ");
            q.bind(*position).push(", ");
            q.bind(contact.clone()).push(", ");
            q.bind(message_id.clone()).push(")");
        }
        q.push(
            " ON CONFLICT (broadcast_id, position) DO UPDATE SET message_id = excluded.message_id",
        );
        sqlx::query_with::<sqlx::any::Any, _>(sqlx::AssertSqlSafe(q.text), q.args)
            .execute(&mut *tx)
            .await?;
    }
    let (entries, _) = fan_out(tx, bot, &row, recipients, None).await?;
    set_status(tx, &mut row, "sending", now_micros()).await?;
    ev.push(progress_event(
        &row,
        serde_json::json!({"resent": entries.len()}),
    ));
    Ok(Output::Fanout {
        id: id.to_owned(),
        entries,
    })
}

/// Marks a sending broadcast completed when none of its messages waits any more.
pub(super) async fn finish_if_done(
    tx: &mut Conn,
    id: &str,
    counts: &BroadcastCounts,
    ev: &mut Vec<PendingEvent>,
) -> Result<Output, StoreError> {
    let mut row = load(tx, None, id).await?;
    if row.status != "sending" {
        return Ok(Output::Unit);
    }
    let waiting: (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM broadcast_recipients r JOIN messages m ON m.id = r.message_id \
         WHERE r.broadcast_id = $1 AND m.status IN ('queued', 'sending')",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let done = waiting.0 == 0;
    if done {
        set_status(tx, &mut row, "completed", now_micros()).await?;
    }
    ev.push(progress_event(
        &row,
        serde_json::to_value(counts)
            .map(|c| serde_json::json!({ "counts": c }))
            .unwrap_or_default(),
    ));
    Ok(Output::Unit)
}
