//! Read queries. They go straight to the pool (SQLite WAL readers never wait for the writer).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::any::Any;

use super::rows::*;
use super::sql::Sql;
use super::*;
use crate::model::BotCounters;

pub(crate) fn encode_cursor(last: &str) -> String {
    URL_SAFE_NO_PAD.encode(last.as_bytes())
}

pub(crate) fn decode_cursor(cursor: &str) -> Result<String, StoreError> {
    URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| StoreError::BadRequest("cursor is not one this API returned".into()))
}

pub(super) fn limit(page: &PageRequest) -> i64 {
    page.limit.clamp(1, 500) as i64
}

/// Turns `limit + 1` fetched rows into a page with a cursor when there is more.
pub(super) fn paginate<T>(mut items: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|t| encode_cursor(&key(t)))
    } else {
        None
    };
    Page { items, next_cursor }
}

impl Store {
    pub async fn get_tenant(&self, id: &str) -> Result<Tenant, StoreError> {
        let row: Option<TenantRow> =
            sqlx::query_as("SELECT id, name, time_zone, created_at FROM tenants WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(Tenant::from).ok_or(StoreError::NotFound)
    }

    /// The tenant, when there is exactly one.
    pub async fn only_tenant(&self) -> Result<Option<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT id FROM tenants ORDER BY id LIMIT 2")
            .fetch_all(&self.pool)
            .await?;
        Ok(match rows.as_slice() {
            [(only,)] => Some(only.clone()),
            _ => None,
        })
    }

    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows: Vec<TenantRow> =
            sqlx::query_as("SELECT id, name, time_zone, created_at FROM tenants ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(Tenant::from).collect())
    }

    /// The tenant owning a live (not revoked) API key with this hash.
    pub async fn tenant_for_key_hash(&self, hash: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.0))
    }

    pub async fn list_api_keys(&self, tenant: &str) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let rows: Vec<(String, String, String, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT id, tenant_id, hint, source, created_at, revoked_at FROM api_keys \
             WHERE tenant_id = $1 ORDER BY id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, tenant, hint, source, created, revoked)| ApiKeyInfo {
                id,
                tenant,
                hint,
                source,
                created_at: from_micros(created),
                revoked_at: revoked.map(from_micros),
            })
            .collect())
    }

    pub async fn get_bot(&self, scope: &Scope, id: &str) -> Result<Bot, StoreError> {
        let sql = concat!(
            "SELECT ",
            crate::bot_columns!(),
            " FROM bots WHERE id = $1 AND ($2 = '*' OR tenant_id = $2)"
        );
        let row: Option<BotRow> = sqlx::query_as(sql)
            .bind(id)
            .bind(scope.param())
            .fetch_optional(&self.pool)
            .await?;
        row.ok_or(StoreError::NotFound)?.try_into()
    }

    pub async fn list_bots(
        &self,
        scope: &Scope,
        page: &PageRequest,
    ) -> Result<Page<Bot>, StoreError> {
        let limit = limit(page);
        let mut q = Sql::new(concat!(
            "SELECT ",
            crate::bot_columns!(),
            " FROM bots WHERE "
        ));
        q.scope("tenant_id", scope);
        if let Some(c) = &page.cursor {
            q.push(" AND id > ").bind(decode_cursor(c)?);
        }
        q.push(" ORDER BY id LIMIT ").bind(limit + 1);
        let rows: Vec<BotRow> =
            sqlx::query_as_with::<Any, BotRow, _>(sqlx::AssertSqlSafe(q.text), q.args)
                .fetch_all(&self.pool)
                .await?;
        let bots = rows
            .into_iter()
            .map(Bot::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(bots, limit, |b| b.id.clone()))
    }

    /// Every bot of every tenant (the supervisor's reconciliation).
    pub async fn all_bots(&self) -> Result<Vec<Bot>, StoreError> {
        let sql = concat!("SELECT ", crate::bot_columns!(), " FROM bots ORDER BY id");
        let rows: Vec<BotRow> = sqlx::query_as(sql).fetch_all(&self.pool).await?;
        rows.into_iter().map(Bot::try_from).collect()
    }

    /// The sealed credentials of a bot (never leaves the gateway).
    pub async fn bot_credentials(&self, id: &str) -> Result<Option<Sealed>, StoreError> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT credentials FROM bots WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        match row {
            None => Err(StoreError::NotFound),
            Some((None,)) => Ok(None),
            Some((Some(s),)) => serde_json::from_str(&s)
                .map(Some)
                .map_err(|e| StoreError::corrupt(format!("sealed credentials: {e}"))),
        }
    }

    /// Messages received, sent and failed per bot, to seed the in-memory counters at
    /// start-up: summed from `message_tallies` (a few hundred rows per bot and week), which
    /// the writer keeps from the message events. Counting the messages themselves took a
    /// second per million at every start.
    pub async fn bot_message_counts(&self) -> Result<HashMap<String, BotCounters>, StoreError> {
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT bot_id, CAST(SUM(received) AS BIGINT), CAST(SUM(sent) AS BIGINT), \
             CAST(SUM(failed) AS BIGINT) FROM message_tallies GROUP BY bot_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(bot, received, sent, failed)| {
                let counters = BotCounters {
                    received: received.max(0) as u64,
                    sent: sent.max(0) as u64,
                    failed: failed.max(0) as u64,
                    rate_limited: 0,
                };
                (bot, counters)
            })
            .collect())
    }

    pub async fn get_conversation(
        &self,
        scope: &Scope,
        id: &str,
    ) -> Result<Conversation, StoreError> {
        let sql = concat!(
            "SELECT ",
            crate::conversation_columns!(),
            " FROM conversations WHERE id = $1 AND ($2 = '*' OR tenant_id = $2)"
        );
        let row: Option<ConversationRow> = sqlx::query_as(sql)
            .bind(id)
            .bind(scope.param())
            .fetch_optional(&self.pool)
            .await?;
        row.ok_or(StoreError::NotFound)?.try_into()
    }

    /// Conversations, newest first.
    pub async fn list_conversations(
        &self,
        scope: &Scope,
        filter: &ConversationFilter,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, StoreError> {
        let limit = limit(page);
        let mut q = Sql::new(concat!(
            "SELECT ",
            crate::conversation_columns!(),
            " FROM conversations WHERE "
        ));
        q.scope("tenant_id", scope);
        q.and_eq("bot_id", filter.bot.clone());
        q.and_eq("platform", filter.platform.map(|p| p.as_str().to_string()));
        if let Some(t) = filter.updated_since {
            q.push(" AND last_message_at >= ").bind(to_micros(t));
        }
        if let Some(text) = &filter.q {
            let pattern = format!("%{}%", text.to_lowercase());
            q.push(" AND (LOWER(COALESCE(title, '')) LIKE ")
                .bind(pattern.clone());
            q.push(" OR LOWER(external_chat_id) LIKE ")
                .bind(pattern)
                .push(")");
        }
        if let Some(c) = &page.cursor {
            q.push(" AND id < ").bind(decode_cursor(c)?);
        }
        q.push(" ORDER BY id DESC LIMIT ").bind(limit + 1);
        let rows: Vec<ConversationRow> =
            sqlx::query_as_with::<Any, ConversationRow, _>(sqlx::AssertSqlSafe(q.text), q.args)
                .fetch_all(&self.pool)
                .await?;
        let items = rows
            .into_iter()
            .map(Conversation::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(items, limit, |c| c.id.clone()))
    }

    pub async fn get_message(&self, scope: &Scope, id: &str) -> Result<Message, StoreError> {
        let sql = concat!(
            "SELECT ",
            crate::message_columns!(),
            " FROM messages WHERE id = $1 AND ($2 = '*' OR tenant_id = $2)"
        );
        let row: Option<MessageRow> = sqlx::query_as(sql)
            .bind(id)
            .bind(scope.param())
            .fetch_optional(&self.pool)
            .await?;
        row.ok_or(StoreError::NotFound)?.try_into()
    }

    /// Messages, newest first.
    pub async fn list_messages(
        &self,
        scope: &Scope,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> Result<Page<Message>, StoreError> {
        let limit = limit(page);
        let mut q = Sql::new(concat!(
            "SELECT ",
            crate::message_columns!(),
            " FROM messages WHERE "
        ));
        q.scope("tenant_id", scope);
        q.and_eq("bot_id", filter.bot.clone());
        q.and_eq("conversation_id", filter.conversation.clone());
        q.and_eq(
            "direction",
            filter.direction.map(|d| d.as_str().to_string()),
        );
        q.and_eq("status", filter.status.map(|s| s.as_str().to_string()));
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
        let rows: Vec<MessageRow> =
            sqlx::query_as_with::<Any, MessageRow, _>(sqlx::AssertSqlSafe(q.text), q.args)
                .fetch_all(&self.pool)
                .await?;
        let items = rows
            .into_iter()
            .map(Message::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(items, limit, |m| m.id.clone()))
    }

    /// The tenant's events after `since`, oldest first, optionally filtered.
    pub async fn list_events(
        &self,
        tenant: &str,
        since: i64,
        types: Option<&[String]>,
        bot: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let mut q = Sql::new(
            "SELECT tenant_id, seq, type, bot_id, at, data FROM events WHERE tenant_id = ",
        );
        q.bind(tenant.to_string()).push(" AND seq > ").bind(since);
        if let Some(types) = types.filter(|t| !t.is_empty()) {
            q.push(" AND type IN (");
            q.in_list(types.iter().cloned());
        }
        q.and_eq("bot_id", bot.map(str::to_string));
        q.push(" ORDER BY seq LIMIT ")
            .bind(limit.clamp(1, 10_000) as i64);
        let rows: Vec<EventRow> =
            sqlx::query_as_with::<Any, EventRow, _>(sqlx::AssertSqlSafe(q.text), q.args)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(Event::try_from).collect()
    }

    /// The highest seq of a tenant's event log (0 when empty).
    pub async fn last_seq(&self, tenant: &str) -> Result<i64, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT last_seq FROM tenants WHERE id = $1")
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.0).ok_or(StoreError::NotFound)
    }

    /// A bot's outbox: its `queued` and `sending` messages in creation order, with what is
    /// needed to send them. `sending` rows are those a killed process left in flight.
    pub async fn outbox(&self, bot_id: &str) -> Result<Vec<OutboxEntry>, StoreError> {
        let sql = concat!(
            "SELECT ",
            crate::message_columns!(),
            " FROM messages WHERE bot_id = $1 AND status IN ('queued', 'sending') ORDER BY id"
        );
        let rows: Vec<MessageRow> = sqlx::query_as(sql)
            .bind(bot_id)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut conversations: HashMap<String, Conversation> = HashMap::new();
        for row in rows {
            let message = Message::try_from(row)?;
            let conversation = match conversations.get(&message.conversation_id) {
                Some(c) => c.clone(),
                None => {
                    let c = self
                        .get_conversation(
                            &Scope::Tenant(message.tenant.clone()),
                            &message.conversation_id,
                        )
                        .await?;
                    conversations.insert(c.id.clone(), c.clone());
                    c
                }
            };
            let reply_to_external_id = self.reply_external_id(&message).await?;
            out.push(OutboxEntry {
                message,
                conversation,
                reply_to_external_id,
            });
        }
        Ok(out)
    }

    /// The platform id of the message `message` replies to, if known.
    pub async fn reply_external_id(&self, message: &Message) -> Result<Option<String>, StoreError> {
        let Some(reply_to) = &message.reply_to else {
            return Ok(None);
        };
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT external_id FROM messages WHERE id = $1 AND tenant_id = $2")
                .bind(reply_to)
                .bind(&message.tenant)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.and_then(|r| r.0))
    }

    pub async fn get_cursor(&self, bot_id: &str, name: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT value FROM bot_cursors WHERE bot_id = $1 AND name = $2")
                .bind(bot_id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.0))
    }

    pub async fn get_contact(&self, scope: &Scope, id: &str) -> Result<Contact, StoreError> {
        let sql = format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts WHERE id = $1 AND ($2 = '*' OR tenant_id = $2)"
        );
        let row: Option<ContactRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(scope.param())
            .fetch_optional(&self.pool)
            .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        let mut identities = self.identities_of(std::slice::from_ref(&row.id)).await?;
        row.into_contact(identities.remove(id).unwrap_or_default())
    }

    /// The caller's contacts by id, `q` matching the name (case-insensitively) or the phone.
    pub async fn list_contacts(
        &self,
        scope: &Scope,
        q: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<Contact>, StoreError> {
        let limit = limit(page);
        let select = format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE ");
        let mut sql = Sql::new(&select);
        sql.scope("tenant_id", scope);
        if let Some(q) = q.map(str::trim).filter(|q| !q.is_empty()) {
            let pattern = format!(
                "%{}%",
                q.to_lowercase()
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            );
            sql.push(" AND (LOWER(name) LIKE ").bind(pattern.clone());
            sql.push(" ESCAPE '\\' OR phone LIKE ").bind(pattern);
            sql.push(" ESCAPE '\\')");
        }
        if let Some(c) = &page.cursor {
            sql.push(" AND id > ").bind(decode_cursor(c)?);
        }
        sql.push(" ORDER BY id LIMIT ").bind(limit + 1);
        let rows: Vec<ContactRow> =
            sqlx::query_as_with::<Any, ContactRow, _>(sqlx::AssertSqlSafe(sql.text), sql.args)
                .fetch_all(&self.pool)
                .await?;
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let mut identities = self.identities_of(&ids).await?;
        let contacts = rows
            .into_iter()
            .map(|r| {
                let own = identities.remove(&r.id).unwrap_or_default();
                r.into_contact(own)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(contacts, limit, |c| c.id.clone()))
    }

    /// The platform identities of these contacts, by contact id.
    async fn identities_of(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<Identity>>, StoreError> {
        let mut out: std::collections::HashMap<String, Vec<Identity>> = Default::default();
        for chunk in ids.chunks(200) {
            let mut sql = Sql::new(
                "SELECT contact_id, bot_id, platform, external_id FROM contact_identities WHERE contact_id IN (",
            );
            sql.in_list(chunk.iter().cloned());
            sql.push(" ORDER BY contact_id, bot_id");
            let rows: Vec<IdentityRow> =
                sqlx::query_as_with::<Any, IdentityRow, _>(sqlx::AssertSqlSafe(sql.text), sql.args)
                    .fetch_all(&self.pool)
                    .await?;
            for r in rows {
                let contact = r.contact_id.clone();
                out.entry(contact).or_default().push(Identity::try_from(r)?);
            }
        }
        Ok(out)
    }
}

impl Store {
    /// Which of these phones (E.164) already belong to a contact of the tenant.
    pub async fn existing_phones(
        &self,
        tenant: &str,
        phones: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut found = std::collections::HashSet::new();
        for chunk in phones.chunks(200) {
            let mut sql = Sql::new("SELECT phone FROM contacts WHERE tenant_id = ");
            sql.bind(tenant.to_owned()).push(" AND phone IN (");
            sql.in_list(chunk.iter().cloned());
            let rows: Vec<(String,)> =
                sqlx::query_as_with::<Any, (String,), _>(sqlx::AssertSqlSafe(sql.text), sql.args)
                    .fetch_all(&self.pool)
                    .await?;
            found.extend(rows.into_iter().map(|r| r.0));
        }
        Ok(found)
    }
}
