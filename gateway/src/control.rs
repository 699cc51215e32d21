//! What the API asks of the running gateway ([`Control`]): sending, and bot administration
//! (validated like the config file, credentials sealed before they reach the store, the
//! supervisor told to reconcile). Config-file reconciliation uses the same bot writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use switchboard_core::connector::{
    Balance, CREDENTIAL_FIELDS, ConnectorRegistry, Credentials, MediaDownload, SendOptions,
};
use switchboard_core::model::{Bot, BotCounters, Content, Direction, Message, Platform};
use switchboard_core::rate::RatePolicy;
use switchboard_core::secret::{Cipher, Sealed, Secret};
use switchboard_core::store::{BotWrite, Enqueued, NewOutbound, Recipient, Scope};
use switchboard_core::{Store, StoreError};
use switchboard_dashboard_api::{ApiError, BotAction, Control};

use crate::config::valid_id;
use crate::counters::Counters;
use crate::supervisor::Supervisor;

pub struct GatewayControl {
    pub store: Arc<Store>,
    pub supervisor: Supervisor,
    pub outbox: crate::outbox::Outbox,
    /// Messages a bot's outbox may hold before new sends get 429.
    pub max_queued_per_bot: usize,
    pub registry: ConnectorRegistry,
    pub cipher: Option<Cipher>,
    pub counters: Arc<Counters>,
    /// Private hosts outbound webhooks may reach (`security.webhook_allowed_hosts`).
    pub webhook_allowed_hosts: Vec<String>,
}

impl GatewayControl {
    /// Seals credentials for storage (`None` when there are none).
    pub fn seal(&self, creds: &Credentials) -> Result<Option<Sealed>, String> {
        if creds.is_empty() {
            return Ok(None);
        }
        let cipher = self.cipher.as_ref().ok_or_else(|| {
            "security.master_key is not configured, so credentials cannot be stored".to_string()
        })?;
        let plain: BTreeMap<&str, &str> = creds
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        let json = serde_json::to_vec(&plain).map_err(|e| e.to_string())?;
        Ok(Some(cipher.seal(&json)))
    }

    /// The stored credentials of a bot, decrypted.
    pub async fn open(&self, bot_id: &str) -> Result<Credentials, String> {
        let sealed = self
            .store
            .bot_credentials(bot_id)
            .await
            .map_err(|e| e.to_string())?;
        let Some(sealed) = sealed else {
            return Ok(Credentials::new());
        };
        let cipher = self
            .cipher
            .as_ref()
            .ok_or("the bot has stored credentials but no master key is configured")?;
        let plain = cipher.open(&sealed).map_err(|e| e.to_string())?;
        let map: BTreeMap<String, String> =
            serde_json::from_slice(&plain).map_err(|e| e.to_string())?;
        Ok(map.into_iter().map(|(k, v)| (k, Secret::new(v))).collect())
    }

    /// Problems with a bot's settings and credentials, by key.
    pub fn problems(
        &self,
        platform: Platform,
        settings: &Map<String, Value>,
        creds: &Credentials,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match settings.get("rate_limit") {
            None => {}
            Some(Value::Object(m)) => {
                if let Err(errs) = RatePolicy::default().with_overrides(m) {
                    out.extend(
                        errs.into_iter()
                            .map(|(k, e)| (format!("rate_limit.{k}"), e)),
                    );
                }
            }
            Some(_) => out.push((
                "rate_limit".into(),
                "expected an object like {\"per_chat\": \"1/s\"}".into(),
            )),
        }
        match self.registry.get(platform) {
            Some(f) => out.extend(f.validate(settings, creds)),
            None => out.push((
                "platform".into(),
                format!("this build has no connector for platform {platform}"),
            )),
        }
        out
    }

    /// Writes a bot (create or replace) with sealed credentials; `creds: None` keeps them.
    #[allow(clippy::too_many_arguments)]
    pub async fn write_bot(
        &self,
        id: &str,
        tenant: &str,
        platform: Platform,
        enabled: bool,
        settings: Map<String, Value>,
        creds: Option<&Credentials>,
        credential_fields: Vec<String>,
        source: &str,
    ) -> Result<Bot, ApiError> {
        let credentials = match creds {
            None => None,
            Some(c) => Some(self.seal(c).map_err(ApiError::unprocessable)?),
        };
        Ok(self
            .store
            .upsert_bot(BotWrite {
                id: id.to_string(),
                tenant: tenant.to_string(),
                platform,
                enabled,
                settings,
                credentials,
                credential_fields,
                source: source.to_string(),
            })
            .await?)
    }
}

fn problems_to_error(problems: Vec<(String, String)>) -> ApiError {
    let list: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
    ApiError::unprocessable(list.join("; "))
}

fn store_err(e: StoreError) -> ApiError {
    ApiError::from(e)
}

#[async_trait]
impl Control for GatewayControl {
    async fn submit(
        &self,
        bot: &Bot,
        mut new: NewOutbound,
        options: SendOptions,
    ) -> Result<Enqueued, ApiError> {
        if bot.id != new.bot_id || bot.tenant != new.tenant {
            return Err(ApiError::unprocessable("bot_id: the bot does not match"));
        }
        let factory = self.registry.get(bot.platform).ok_or_else(|| {
            ApiError::unprocessable(format!(
                "{}: this build has no connector for platform {}",
                bot.id, bot.platform
            ))
        })?;
        factory
            .check_content(&new.content, &options)
            .map_err(|reason| {
                ApiError::unprocessable(format!(
                    "content: {} cannot carry this: {reason}",
                    bot.platform
                ))
            })?;
        let depth = self.outbox.depth_of(&bot.id);
        if depth >= self.max_queued_per_bot {
            let mut e = ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "bot {:?} has {depth} messages waiting to be sent; retry later",
                    bot.id
                ),
            );
            e.retry_after = Some(5);
            return Err(e);
        }
        match &mut new.to {
            Recipient::Phone(raw) => {
                *raw = factory
                    .normalize_phone(&bot.settings, raw)
                    .map_err(|e| ApiError::unprocessable(format!("to.phone: {e}")))?;
            }
            Recipient::Chat(raw) if bot.platform == Platform::Sms => {
                *raw = factory
                    .normalize_phone(&bot.settings, raw)
                    .map_err(|e| ApiError::unprocessable(format!("to.chat_id: {e}")))?;
            }
            _ => {}
        }
        new.segments = factory
            .segments(&bot.settings, &new.content)
            .map_err(|reason| ApiError::unprocessable(format!("content: {reason}")))?;
        new.reply_window = factory.reply_window(&new.content);
        if let Recipient::Chat(chat) = &new.to {
            new.chat_kind = Some(factory.chat_kind(chat));
        }
        Ok(self.store.enqueue(new).await?)
    }

    fn check_broadcast(
        &self,
        bot: &Bot,
        content: &switchboard_core::model::Content,
    ) -> Result<(Option<u32>, Option<std::time::Duration>), ApiError> {
        let factory = self.registry.get(bot.platform).ok_or_else(|| {
            ApiError::unprocessable(format!(
                "{}: this build has no connector for platform {}",
                bot.id, bot.platform
            ))
        })?;
        let options = SendOptions { allow_split: false };
        factory.check_content(content, &options).map_err(|reason| {
            ApiError::unprocessable(format!(
                "content: {} cannot carry this: {reason}",
                bot.platform
            ))
        })?;
        let segments = factory
            .segments(&bot.settings, content)
            .map_err(|reason| ApiError::unprocessable(format!("content: {reason}")))?;
        Ok((segments, factory.reply_window(content)))
    }

    async fn create_bot(
        &self,
        tenant: &str,
        mut body: Map<String, Value>,
    ) -> Result<Bot, ApiError> {
        let id = match body.remove("id") {
            Some(Value::String(id)) if valid_id(&id) => id,
            Some(other) => {
                return Err(ApiError::unprocessable(format!(
                    "id: must match [a-z0-9-]{{1,64}}, got {other}"
                )));
            }
            None => return Err(ApiError::unprocessable("id: is required")),
        };
        let platform = match body.remove("platform") {
            Some(Value::String(p)) => Platform::parse(&p).ok_or_else(|| {
                ApiError::unprocessable(format!("platform: unknown platform {p:?}"))
            })?,
            _ => return Err(ApiError::unprocessable("platform: is required")),
        };
        let enabled = match body.remove("enabled") {
            None => true,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(ApiError::unprocessable("enabled: expected true or false")),
        };
        let (settings, creds) = split_credentials(body)?;
        let problems = self.problems(platform, &settings, &creds);
        if !problems.is_empty() {
            return Err(problems_to_error(problems));
        }
        self.store
            .get_tenant(tenant)
            .await
            .map_err(|_| ApiError::unprocessable(format!("tenant: {tenant:?} does not exist")))?;
        if self.store.get_bot(&Scope::All, &id).await.is_ok() {
            return Err(ApiError::conflict(format!("a bot with id {id:?} exists")));
        }
        let fields = creds.keys().cloned().collect();
        let bot = self
            .write_bot(
                &id,
                tenant,
                platform,
                enabled,
                settings,
                Some(&creds),
                fields,
                "api",
            )
            .await?;
        self.supervisor.reconcile(&id).await.map_err(store_err)?;
        Ok(self.store.get_bot(&Scope::All, &bot.id).await?)
    }

    async fn update_bot(
        &self,
        scope: &Scope,
        id: &str,
        patch: Map<String, Value>,
    ) -> Result<Bot, ApiError> {
        let bot = self.store.get_bot(scope, id).await?;
        let mut settings = bot.settings.clone();
        let mut enabled = bot.enabled;
        let mut creds = self.open(id).await.map_err(ApiError::unprocessable)?;
        let mut creds_changed = false;
        for (k, v) in patch {
            match k.as_str() {
                "id" | "tenant" | "platform" => {
                    let current = match k.as_str() {
                        "id" => bot.id.clone(),
                        "tenant" => bot.tenant.clone(),
                        _ => bot.platform.as_str().to_string(),
                    };
                    if v.as_str() != Some(current.as_str()) {
                        return Err(ApiError::unprocessable(format!("{k}: cannot be changed")));
                    }
                }
                "enabled" => {
                    enabled = v.as_bool().ok_or_else(|| {
                        ApiError::unprocessable("enabled: expected true or false")
                    })?;
                }
                f if CREDENTIAL_FIELDS.contains(&f) => {
                    creds_changed = true;
                    match v {
                        Value::Null => {
                            creds.remove(f);
                        }
                        Value::String(s) if !s.is_empty() => {
                            creds.insert(f.to_string(), Secret::new(s));
                        }
                        _ => {
                            return Err(ApiError::unprocessable(format!(
                                "{f}: expected a non-empty string or null"
                            )));
                        }
                    }
                }
                _ => {
                    if v.is_null() {
                        settings.remove(&k);
                    } else {
                        settings.insert(k, v);
                    }
                }
            }
        }
        let problems = self.problems(bot.platform, &settings, &creds);
        if !problems.is_empty() {
            return Err(problems_to_error(problems));
        }
        let fields = creds.keys().cloned().collect();
        let creds_arg = creds_changed.then_some(&creds);
        self.write_bot(
            id,
            &bot.tenant,
            bot.platform,
            enabled,
            settings,
            creds_arg,
            fields,
            &bot.source,
        )
        .await?;
        self.supervisor.reconcile(id).await.map_err(store_err)?;
        Ok(self.store.get_bot(scope, id).await?)
    }

    async fn delete_bot(&self, scope: &Scope, id: &str) -> Result<(), ApiError> {
        self.store.get_bot(scope, id).await?;
        self.supervisor.stop_task(id).await;
        self.store.delete_bot(scope, id).await?;
        self.counters.forget(id);
        Ok(())
    }

    async fn bot_action(&self, bot_id: &str, action: BotAction) -> Result<(), ApiError> {
        let r = match action {
            BotAction::Start => self.supervisor.start(bot_id).await,
            BotAction::Stop => self.supervisor.stop(bot_id).await,
            BotAction::Restart => self.supervisor.restart(bot_id).await,
        };
        r.map_err(store_err)
    }

    async fn balance(&self, bot: &Bot) -> Result<Balance, ApiError> {
        let connector = self.supervisor.connector(&bot.id).ok_or_else(|| {
            ApiError::unavailable(format!(
                "bot {:?} is not running; its balance cannot be read now",
                bot.id
            ))
        })?;
        connector.balance(false).await.map_err(|e| match e.class() {
            switchboard_core::ErrorClass::Permanent => {
                ApiError::unprocessable(format!("{} bots have no account balance", bot.platform))
            }
            _ => ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                format!("the provider did not tell the balance: {e}"),
            ),
        })
    }

    async fn fetch_media(&self, message: &Message) -> Result<MediaDownload, ApiError> {
        let platform_media = match &message.content {
            Content::Media {
                file_id: Some(_), ..
            } => true,
            // Inbound media by URL (Discord attachments): fetched through the connector.
            Content::Media { url: Some(_), .. } => message.direction == Direction::Inbound,
            _ => false,
        };
        if !platform_media {
            return Err(ApiError::not_found(
                "this message carries no platform media",
            ));
        }
        let connector = self.supervisor.connector(&message.bot_id).ok_or_else(|| {
            ApiError::unavailable(format!(
                "bot {:?} is not running; its media cannot be fetched now",
                message.bot_id
            ))
        })?;
        connector
            .fetch_media(&message.content)
            .await
            .map_err(|e| match e.class() {
                switchboard_core::ErrorClass::Permanent => {
                    ApiError::not_found(format!("media unavailable: {e}"))
                }
                switchboard_core::ErrorClass::RateLimited => {
                    let mut err = ApiError::new(
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        "the platform is rate limiting; retry later",
                    );
                    err.retry_after = Some(1);
                    err
                }
                _ => ApiError::new(
                    axum::http::StatusCode::BAD_GATEWAY,
                    format!("the platform did not deliver the media: {e}"),
                ),
            })
    }

    fn counters(&self, bot_id: &str) -> BotCounters {
        self.counters.get(bot_id)
    }

    fn seal_secret(&self, plain: &str) -> String {
        switchboard_core::secret::store_secret(self.cipher.as_ref(), plain)
    }

    fn open_secret(&self, stored: &str) -> Result<String, ApiError> {
        switchboard_core::secret::read_secret(self.cipher.as_ref(), stored)
            .map(|s| s.expose().to_owned())
            .map_err(|e| {
                tracing::error!(error = %e, "cannot open a stored secret");
                ApiError::internal()
            })
    }

    async fn check_webhook_url(&self, url: &str) -> Result<(), ApiError> {
        let parsed =
            url::Url::parse(url).map_err(|e| ApiError::unprocessable(format!("url: {e}")))?;
        switchboard_connectors::resolve_public(&parsed, &self.webhook_allowed_hosts)
            .await
            .map(|_| ())
            .map_err(|e| ApiError::unprocessable(format!("url: {e}")))
    }
}

/// Splits an API bot body into settings and credentials (credential fields must be strings).
fn split_credentials(
    body: Map<String, Value>,
) -> Result<(Map<String, Value>, Credentials), ApiError> {
    let mut settings = Map::new();
    let mut creds = Credentials::new();
    for (k, v) in body {
        if CREDENTIAL_FIELDS.contains(&k.as_str()) {
            match v {
                Value::String(s) if !s.is_empty() => {
                    creds.insert(k, Secret::new(s));
                }
                _ => {
                    return Err(ApiError::unprocessable(format!(
                        "{k}: expected a non-empty string"
                    )));
                }
            }
        } else {
            settings.insert(k, v);
        }
    }
    Ok((settings, creds))
}
