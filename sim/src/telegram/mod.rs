//! A simulated Telegram Bot API (PLATFORMS.md §1), served on loopback.
//!
//! [`TelegramSim`] plays both sides a test needs: the Bot API a bot calls
//! (`{base_url}/bot<token>/<method>`, downloads at `{base_url}/file/bot<token>/<path>`) and the
//! users who write to bots ([`TelegramSim::user_message`] and friends), which become updates
//! the bot fetches with getUpdates or receives on its webhook. It enforces Telegram's flood
//! limits with token buckets and injects the faults set with [`TelegramSim::set_faults`].
//!
//! The methods that play users take the bot's token and panic if no bot holds it (a test's
//! mistake); their `try_` twins return a [`SimError`] instead.

mod api;
mod error;
mod files;
mod params;
mod state;
mod webhook;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

pub use error::SimError;

use crate::framework::rate::Rate;
use crate::framework::{Counters, Faults, RecordedRequest, SimCore, bump, server, unix_now};
use files::FileKind;
use state::{BotState, World};

/// Limits and timings of the simulated Telegram. Telegram publishes no exact flood limits;
/// the defaults follow its Bot FAQ.
#[derive(Debug, Clone)]
pub struct TelegramConfig {
    /// Sends per bot across all chats.
    pub per_bot: Rate,
    /// Sends per chat.
    pub per_chat: Rate,
    /// Sends per group or supergroup chat (on top of `per_chat`).
    pub per_group: Rate,
    /// Pause before a failed webhook delivery is retried.
    pub webhook_retry_delay: Duration,
    /// Longest wait a getUpdates `timeout` can ask for.
    pub max_long_poll: Duration,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        TelegramConfig {
            per_bot: Rate::new(30, Duration::from_secs(1), 30),
            per_chat: Rate::new(1, Duration::from_secs(1), 3),
            per_group: Rate::new(20, Duration::from_secs(60), 20),
            webhook_retry_delay: Duration::from_secs(1),
            max_long_poll: Duration::from_secs(50),
        }
    }
}

impl TelegramConfig {
    /// The defaults without flood limits (benchmarks of the gateway itself).
    pub fn without_rate_limits() -> Self {
        TelegramConfig {
            per_bot: Rate::unlimited(),
            per_chat: Rate::unlimited(),
            per_group: Rate::unlimited(),
            ..Self::default()
        }
    }
}

/// Telegram's chat types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatType {
    #[default]
    Private,
    Group,
    Supergroup,
    Channel,
}

impl ChatType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatType::Private => "private",
            ChatType::Group => "group",
            ChatType::Supergroup => "supergroup",
            ChatType::Channel => "channel",
        }
    }
}

/// A message a user writes to a bot. Media are file ids from [`TelegramSim::add_file`].
#[derive(Debug, Clone, Default)]
pub struct UserMessage {
    pub chat_id: i64,
    pub chat_type: ChatType,
    /// Title of a group, supergroup or channel.
    pub chat_title: Option<String>,
    pub from_id: i64,
    pub from_first_name: String,
    pub from_username: Option<String>,
    pub text: Option<String>,
    pub caption: Option<String>,
    pub photo_file_id: Option<String>,
    pub document_file_id: Option<String>,
    /// (latitude, longitude)
    pub location: Option<(f64, f64)>,
    pub reply_to_message_id: Option<i64>,
}

impl UserMessage {
    /// A text in the private chat of user `from_id` (normally `chat_id == from_id`).
    pub fn text(chat_id: i64, from_id: i64, text: &str) -> Self {
        UserMessage {
            chat_id,
            from_id,
            from_first_name: format!("User{from_id}"),
            text: Some(text.to_owned()),
            ..UserMessage::default()
        }
    }
}

/// Something a bot did in a chat: a send, an edit or a callback answer, in call order.
#[derive(Debug, Clone, Serialize)]
pub struct SentMessage {
    /// The API method, lowercase: `sendmessage`, `sendphoto`, `senddocument`,
    /// `editmessagetext`, `answercallbackquery`.
    pub method: String,
    pub chat_id: i64,
    pub message_id: i64,
    pub text: Option<String>,
    pub caption: Option<String>,
    pub reply_to_message_id: Option<i64>,
    pub reply_markup: Option<Value>,
    /// A file_id, a URL, or `upload:<filename>`.
    pub media: Option<String>,
    /// All parameters as received.
    pub params: Value,
    #[serde(skip)]
    pub at: Instant,
}

/// getWebhookInfo's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookInfo {
    pub url: String,
    pub has_custom_certificate: bool,
    pub pending_update_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_date: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_updates: Option<Vec<String>>,
}

/// A running Telegram simulator; clones share it. Stops with [`shutdown`](Self::shutdown) or
/// when its tokio runtime ends.
#[derive(Clone)]
pub struct TelegramSim {
    inner: Arc<Inner>,
}

struct Inner {
    config: TelegramConfig,
    core: Arc<SimCore>,
    world: Mutex<World>,
    addr: SocketAddr,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for TelegramSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramSim")
            .field("base_url", &self.base_url())
            .finish()
    }
}

impl TelegramSim {
    /// Starts the simulator on 127.0.0.1 with an ephemeral port.
    pub async fn start(config: TelegramConfig) -> anyhow::Result<TelegramSim> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Starts the simulator on `addr`.
    pub async fn start_on(addr: SocketAddr, config: TelegramConfig) -> anyhow::Result<TelegramSim> {
        let (listener, addr) = crate::framework::server::bind(addr).await?;
        let sim = TelegramSim {
            inner: Arc::new(Inner {
                config,
                core: Arc::new(SimCore::new()),
                world: Mutex::default(),
                addr,
                shutdown: CancellationToken::new(),
            }),
        };
        let router = Router::new()
            .merge(crate::control::core_routes(sim.inner.core.clone()))
            .merge(crate::control::telegram_routes(sim.clone()))
            .merge(api::router(sim.clone()));
        server::serve_listener(listener, router, sim.inner.shutdown.clone());
        Ok(sim)
    }

    /// `http://127.0.0.1:PORT`; the Bot API is at `{base_url}/bot<token>/<method>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Stops serving and stops webhook deliveries.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        self.inner
            .world
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn core(&self) -> &SimCore {
        &self.inner.core
    }

    pub(crate) fn core_arc(&self) -> Arc<SimCore> {
        self.inner.core.clone()
    }

    pub(crate) fn config(&self) -> &TelegramConfig {
        &self.inner.config
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Queues an update for the bot and counts it.
    fn publish(&self, bot: &mut BotState, kind: &str, payload: Value) -> i64 {
        let before = bot.updates.len();
        let id = bot.push_update(kind, payload);
        if bot.updates.len() > before {
            bump(&self.core().counters().updates_created, 1);
        }
        id
    }

    /// Adds a bot; returns its user id (the number before `:` in a `<id>:<secret>` token).
    pub fn add_bot(&self, token: &str, username: &str) -> i64 {
        self.world().add_bot(token, username, self.config())
    }

    /// Every later Bot API call with this token answers 401 Unauthorized.
    pub fn revoke_token(&self, token: &str) {
        self.world().revoke(token);
    }

    /// Makes a chat known to the bot without any update (as if it existed before).
    pub fn add_chat(&self, token: &str, chat_id: i64, chat_type: ChatType, title: Option<&str>) {
        if let Ok(bot) = self.world().bot(token) {
            bot.ensure_chat(chat_id, chat_type, title);
        }
    }

    /// A user writes to the bot; creates the chat and user if new. Returns the update_id.
    pub fn user_message(&self, token: &str, msg: UserMessage) -> i64 {
        self.try_user_message(token, msg)
            .unwrap_or_else(|e| panic!("user_message: {e}"))
    }

    pub fn try_user_message(&self, token: &str, msg: UserMessage) -> Result<i64, SimError> {
        let mut world = self.world();
        let (bot, files) = world.bot_and_files(token)?;
        let channel = msg.chat_type == ChatType::Channel;
        if !channel {
            bot.meet_user(
                msg.from_id,
                &msg.from_first_name,
                msg.from_username.as_deref(),
            );
        }
        bot.ensure_chat(msg.chat_id, msg.chat_type, msg.chat_title.as_deref());
        let mut content = msg.text.as_deref().map(text_content).unwrap_or_default();
        if let Some(caption) = &msg.caption {
            content.insert("caption".into(), json!(caption));
        }
        if let Some(id) = &msg.photo_file_id {
            let sizes = files
                .photo_sizes(id)
                .ok_or_else(|| SimError::UnknownFile(id.clone()))?;
            content.insert("photo".into(), sizes);
        }
        if let Some(id) = &msg.document_file_id {
            let doc = files
                .document(id)
                .ok_or_else(|| SimError::UnknownFile(id.clone()))?;
            content.insert("document".into(), doc);
        }
        if let Some((latitude, longitude)) = msg.location {
            content.insert(
                "location".into(),
                json!({"latitude": latitude, "longitude": longitude}),
            );
        }
        let from = (!channel).then(|| bot.user(msg.from_id));
        let message = bot.post_message(msg.chat_id, from, content, msg.reply_to_message_id)?;
        let kind = if channel { "channel_post" } else { "message" };
        Ok(self.publish(bot, kind, message))
    }

    /// The user edits their message: an `edited_message` update. Returns the update_id.
    pub fn user_edits(&self, token: &str, chat_id: i64, message_id: i64, new_text: &str) -> i64 {
        self.try_user_edits(token, chat_id, message_id, new_text)
            .unwrap_or_else(|e| panic!("user_edits: {e}"))
    }

    pub fn try_user_edits(
        &self,
        token: &str,
        chat_id: i64,
        message_id: i64,
        new_text: &str,
    ) -> Result<i64, SimError> {
        let mut world = self.world();
        let bot = world.bot(token)?;
        let unknown = SimError::UnknownMessage {
            chat_id,
            message_id,
        };
        let stored = bot
            .message(chat_id, message_id)
            .filter(|m| !m.from_bot)
            .ok_or(unknown)?;
        let mut message = stored.json.clone();
        if let Some(obj) = message.as_object_mut() {
            obj.remove("entities");
            obj.extend(text_content(new_text));
            obj.insert("edit_date".into(), json!(unix_now()));
        }
        bot.replace_message(chat_id, message_id, message.clone());
        let channel = bot
            .chat(chat_id)
            .is_some_and(|c| c.kind == ChatType::Channel);
        let kind = if channel {
            "edited_channel_post"
        } else {
            "edited_message"
        };
        Ok(self.publish(bot, kind, message))
    }

    /// The user presses an inline button of the bot's message: a `callback_query` update.
    pub fn user_presses_button(
        &self,
        token: &str,
        chat_id: i64,
        user_id: i64,
        message_id: i64,
        data: &str,
    ) -> i64 {
        self.try_user_presses_button(token, chat_id, user_id, message_id, data)
            .unwrap_or_else(|e| panic!("user_presses_button: {e}"))
    }

    pub fn try_user_presses_button(
        &self,
        token: &str,
        chat_id: i64,
        user_id: i64,
        message_id: i64,
        data: &str,
    ) -> Result<i64, SimError> {
        let mut world = self.world();
        let bot = world.bot(token)?;
        let unknown = SimError::UnknownMessage {
            chat_id,
            message_id,
        };
        let message = bot
            .message(chat_id, message_id)
            .ok_or(unknown)?
            .json
            .clone();
        let id = bot.register_callback(chat_id, message_id);
        let query = json!({
            "id": id,
            "from": bot.user(user_id),
            "message": message,
            "chat_instance": chat_instance(bot.id, chat_id),
            "data": data,
        });
        Ok(self.publish(bot, "callback_query", query))
    }

    /// A post in a channel where the bot is an administrator: a `channel_post` update.
    pub fn channel_post(&self, token: &str, chat_id: i64, title: &str, text: &str) -> i64 {
        let msg = UserMessage {
            chat_type: ChatType::Channel,
            chat_title: Some(title.to_owned()),
            ..UserMessage::text(chat_id, 0, text)
        };
        self.try_user_message(token, msg)
            .unwrap_or_else(|e| panic!("channel_post: {e}"))
    }

    /// A user adds the bot to a group (ids below -10^12 are supergroups): a `my_chat_member`
    /// update.
    pub fn bot_added_to_group(&self, token: &str, chat_id: i64, title: &str, by_user: i64) -> i64 {
        self.try_bot_added_to_group(token, chat_id, title, by_user)
            .unwrap_or_else(|e| panic!("bot_added_to_group: {e}"))
    }

    pub fn try_bot_added_to_group(
        &self,
        token: &str,
        chat_id: i64,
        title: &str,
        by_user: i64,
    ) -> Result<i64, SimError> {
        let kind = if chat_id < -1_000_000_000_000 {
            ChatType::Supergroup
        } else {
            ChatType::Group
        };
        let mut world = self.world();
        let bot = world.bot(token)?;
        let chat = bot.ensure_chat(chat_id, kind, Some(title)).json();
        let change = self.member_change(bot, chat, by_user, "left", "member");
        Ok(self.publish(bot, "my_chat_member", change))
    }

    /// The user blocks the bot: a `my_chat_member` update (member → kicked); later sends to the
    /// private chat answer 403.
    pub fn block_bot(&self, token: &str, user_id: i64) {
        self.try_set_blocked(token, user_id, true)
            .unwrap_or_else(|e| panic!("block_bot: {e}"));
    }

    /// The user unblocks the bot: a `my_chat_member` update (kicked → member).
    pub fn unblock_bot(&self, token: &str, user_id: i64) {
        self.try_set_blocked(token, user_id, false)
            .unwrap_or_else(|e| panic!("unblock_bot: {e}"));
    }

    /// Blocks or unblocks; returns the update_id of the `my_chat_member` update, if any.
    pub fn try_set_blocked(
        &self,
        token: &str,
        user_id: i64,
        blocked: bool,
    ) -> Result<Option<i64>, SimError> {
        let mut world = self.world();
        let bot = world.bot(token)?;
        let chat = bot.ensure_chat(user_id, ChatType::Private, None);
        if chat.blocked == blocked {
            return Ok(None);
        }
        chat.blocked = blocked;
        let chat = chat.json();
        let (old, new) = if blocked {
            ("member", "kicked")
        } else {
            ("kicked", "member")
        };
        let change = self.member_change(bot, chat, user_id, old, new);
        Ok(Some(self.publish(bot, "my_chat_member", change)))
    }

    fn member_change(
        &self,
        bot: &BotState,
        chat: Value,
        by_user: i64,
        old: &str,
        new: &str,
    ) -> Value {
        let member = |status: &str| {
            let mut m = json!({ "status": status, "user": bot.user_json() });
            if status == "kicked" {
                m["until_date"] = json!(0);
            }
            m
        };
        json!({
            "chat": chat,
            "from": bot.user(by_user),
            "date": unix_now(),
            "old_chat_member": member(old),
            "new_chat_member": member(new),
        })
    }

    /// Everything the bot sent, edited or answered, in order.
    pub fn sent(&self, token: &str) -> Vec<SentMessage> {
        self.world()
            .bot(token)
            .map(|b| b.sent.clone())
            .unwrap_or_default()
    }

    /// Every platform API request received, in arrival order (control API calls excluded).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.core().requests()
    }

    pub fn counters(&self) -> Counters {
        self.core().counters().snapshot()
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        self.core().set_faults(faults);
    }

    pub fn faults(&self) -> Faults {
        self.core().faults()
    }

    /// The bot's webhook, or None if it has none (or no bot holds the token).
    pub fn webhook_info(&self, token: &str) -> Option<WebhookInfo> {
        let mut world = self.world();
        let bot = world.bot(token).ok()?;
        bot.webhook.is_some().then(|| bot.webhook_info())
    }

    /// Updates queued for the bot and not yet confirmed or delivered.
    pub fn pending_updates(&self, token: &str) -> usize {
        self.world().bot(token).map_or(0, |b| b.updates.len())
    }

    /// Stores a file users can send (`photo_file_id`, `document_file_id`); returns its
    /// file_id. Files are shared by all bots of the simulator.
    pub fn add_file(&self, _token: &str, bytes: Vec<u8>, file_name: &str, mime: &str) -> String {
        let kind = if mime.starts_with("image/") {
            FileKind::Photo
        } else {
            FileKind::Document
        };
        let name = (!file_name.is_empty()).then_some(file_name);
        let mime = (!mime.is_empty()).then_some(mime);
        self.world().files.add(Bytes::from(bytes), name, mime, kind)
    }
}

/// `text` plus Telegram's `bot_command` entity when the text starts with a command.
fn text_content(text: &str) -> Map<String, Value> {
    let mut content = Map::new();
    content.insert("text".into(), json!(text));
    if text.starts_with('/') {
        let command = text.split_whitespace().next().unwrap_or(text);
        let length = command.encode_utf16().count();
        content.insert(
            "entities".into(),
            json!([{ "type": "bot_command", "offset": 0, "length": length }]),
        );
    }
    content
}

/// A stable opaque id for "this chat as seen by this bot".
fn chat_instance(bot_id: i64, chat_id: i64) -> String {
    let mixed =
        (chat_id as u64 ^ (bot_id as u64).rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{}", mixed >> 1)
}
