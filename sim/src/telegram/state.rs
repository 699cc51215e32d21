//! The Telegram world as one bot sees it: its chats, the users it met, the messages in each
//! chat, its queue of pending updates, its webhook, and its flood-control buckets.
//!
//! Everything here is synchronous and runs under the simulator's one lock; the HTTP handlers
//! and the webhook task only take the lock, read or change a [`BotState`], and let go.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::error::{ApiError, SimError};
use super::files::FileStore;
use super::{ChatType, SentMessage, TelegramConfig, WebhookInfo};
use crate::framework::rate::{TokenBucket, retry_after_secs, take_all};
use crate::framework::unix_now;

/// Update types a bot receives when it never chose (Telegram's default list excludes these).
const NOT_SENT_BY_DEFAULT: [&str; 3] =
    ["chat_member", "message_reaction", "message_reaction_count"];

/// All bots and files. Bots are keyed by token; a revoked token keeps its state but every API
/// call with it answers 401.
#[derive(Debug, Default)]
pub(crate) struct World {
    bots: HashMap<String, BotState>,
    revoked: HashSet<String>,
    pub files: FileStore,
    next_bot_id: i64,
}

impl World {
    /// Adds a bot (or returns the id of the one already holding `token`).
    pub fn add_bot(&mut self, token: &str, username: &str, config: &TelegramConfig) -> i64 {
        if let Some(bot) = self.bots.get(token) {
            return bot.id;
        }
        let id = match token.split_once(':').map(|(id, _)| id.parse::<i64>()) {
            Some(Ok(id)) if id > 0 => id,
            _ => {
                self.next_bot_id += 1;
                7_000_000_000 + self.next_bot_id
            }
        };
        self.revoked.remove(token);
        self.bots
            .insert(token.to_owned(), BotState::new(id, username, config));
        id
    }

    pub fn revoke(&mut self, token: &str) {
        if let Some(bot) = self.bots.get(token) {
            bot.wake.notify_waiters();
            self.revoked.insert(token.to_owned());
        }
    }

    /// The bot, whether or not its token was revoked (the simulator's own API).
    pub fn bot(&mut self, token: &str) -> Result<&mut BotState, SimError> {
        self.bots.get_mut(token).ok_or(SimError::UnknownBot)
    }

    /// The bot with the file store, whether or not its token was revoked.
    pub fn bot_and_files(
        &mut self,
        token: &str,
    ) -> Result<(&mut BotState, &mut FileStore), SimError> {
        let bot = self.bots.get_mut(token).ok_or(SimError::UnknownBot)?;
        Ok((bot, &mut self.files))
    }

    /// The bot a Bot API call authenticates as: 401 for unknown or revoked tokens.
    pub fn api_bot(&mut self, token: &str) -> Result<&mut BotState, ApiError> {
        Ok(self.with_files(token)?.0)
    }

    /// Like [`api_bot`](Self::api_bot), together with the file store.
    pub fn with_files(&mut self, token: &str) -> Result<(&mut BotState, &mut FileStore), ApiError> {
        if self.revoked.contains(token) {
            return Err(ApiError::unauthorized());
        }
        let bot = self
            .bots
            .get_mut(token)
            .ok_or_else(ApiError::unauthorized)?;
        Ok((bot, &mut self.files))
    }

    pub fn token_is_valid(&self, token: &str) -> bool {
        self.bots.contains_key(token) && !self.revoked.contains(token)
    }
}

/// A chat as the bot knows it.
#[derive(Debug, Clone)]
pub(crate) struct ChatState {
    pub id: i64,
    pub kind: ChatType,
    pub title: Option<String>,
    pub first_name: Option<String>,
    pub username: Option<String>,
    next_message_id: i64,
    /// Private chat whose user blocked the bot.
    pub blocked: bool,
}

impl ChatState {
    pub fn json(&self) -> Value {
        let mut chat = json!({ "id": self.id, "type": self.kind.as_str() });
        if self.kind == ChatType::Private {
            chat["first_name"] = json!(self.first_name.as_deref().unwrap_or("User"));
            if let Some(username) = &self.username {
                chat["username"] = json!(username);
            }
        } else {
            chat["title"] = json!(self.title.as_deref().unwrap_or("Chat"));
        }
        chat
    }
}

/// A user as the bot knows it.
#[derive(Debug, Clone)]
pub(crate) struct UserInfo {
    pub first_name: String,
    pub username: Option<String>,
}

/// A message in a chat, as Telegram would return it.
#[derive(Debug, Clone)]
pub(crate) struct StoredMessage {
    pub json: Value,
    pub from_bot: bool,
}

/// An update waiting to be fetched or delivered.
#[derive(Debug, Clone)]
pub(crate) struct QueuedUpdate {
    pub id: i64,
    pub json: Value,
}

/// The webhook a bot set.
#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    pub url: String,
    pub secret: Option<String>,
    pub max_connections: u32,
    pub last_error: Option<(i64, String)>,
    /// Stops this webhook's delivery task.
    pub stop: CancellationToken,
}

/// Flood control: one bucket per bot, one per chat, one per group chat.
#[derive(Debug)]
struct SendLimits {
    bot: TokenBucket,
    chats: HashMap<i64, TokenBucket>,
    groups: HashMap<i64, TokenBucket>,
}

#[derive(Debug)]
pub(crate) struct BotState {
    pub id: i64,
    pub username: String,
    chats: HashMap<i64, ChatState>,
    users: HashMap<i64, UserInfo>,
    messages: HashMap<(i64, i64), StoredMessage>,
    pub updates: VecDeque<QueuedUpdate>,
    next_update_id: i64,
    /// The update types last chosen by getUpdates or setWebhook (None or empty: the default).
    pub allowed_updates: Option<Vec<String>>,
    pub webhook: Option<Webhook>,
    /// Increased by every getUpdates; a waiting poll whose number is no longer current was
    /// superseded by a newer one.
    pub poll_generation: u64,
    callbacks: HashMap<String, (i64, i64)>,
    next_callback: u64,
    pub sent: Vec<SentMessage>,
    limits: SendLimits,
    config: TelegramConfig,
    /// Woken when an update is queued or the bot's settings change.
    pub wake: Arc<Notify>,
}

impl BotState {
    fn new(id: i64, username: &str, config: &TelegramConfig) -> Self {
        BotState {
            id,
            username: username.trim_start_matches('@').to_owned(),
            chats: HashMap::new(),
            users: HashMap::new(),
            messages: HashMap::new(),
            updates: VecDeque::new(),
            next_update_id: 1,
            allowed_updates: None,
            webhook: None,
            poll_generation: 0,
            callbacks: HashMap::new(),
            next_callback: 0,
            sent: Vec::new(),
            limits: SendLimits {
                bot: TokenBucket::new(config.per_bot, Instant::now()),
                chats: HashMap::new(),
                groups: HashMap::new(),
            },
            config: config.clone(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// The bot as a `User` object (getMe adds its capabilities).
    pub fn user_json(&self) -> Value {
        json!({
            "id": self.id,
            "is_bot": true,
            "first_name": display_name(&self.username),
            "username": self.username,
        })
    }

    /// A user as a `User` object (first name "User" if the bot never met them).
    pub fn user(&self, user_id: i64) -> Value {
        let mut user = json!({ "id": user_id, "is_bot": false });
        match self.users.get(&user_id) {
            Some(info) => {
                user["first_name"] = json!(info.first_name);
                if let Some(username) = &info.username {
                    user["username"] = json!(username);
                }
            }
            None => user["first_name"] = json!("User"),
        }
        user
    }

    pub fn meet_user(&mut self, user_id: i64, first_name: &str, username: Option<&str>) {
        self.users.insert(
            user_id,
            UserInfo {
                first_name: first_name.to_owned(),
                username: username.map(str::to_owned),
            },
        );
    }

    /// Finds or creates a chat; a known chat keeps its type and takes a new title if given.
    pub fn ensure_chat(&mut self, id: i64, kind: ChatType, title: Option<&str>) -> &mut ChatState {
        let user = self.users.get(&id).cloned();
        let chat = self.chats.entry(id).or_insert_with(|| ChatState {
            id,
            kind,
            title: None,
            first_name: None,
            username: None,
            next_message_id: 1,
            blocked: false,
        });
        if let Some(title) = title {
            chat.title = Some(title.to_owned());
        }
        if chat.kind == ChatType::Private
            && let Some(user) = user
        {
            chat.first_name = Some(user.first_name);
            chat.username = user.username;
        }
        chat
    }

    pub fn chat(&self, id: i64) -> Option<&ChatState> {
        self.chats.get(&id)
    }

    /// A chat the bot may post in: 400 if unknown, 403 if its user blocked the bot.
    pub fn sendable_chat(&self, id: i64) -> Result<&ChatState, ApiError> {
        let chat = self.chats.get(&id).ok_or_else(ApiError::chat_not_found)?;
        if chat.blocked {
            return Err(ApiError::new(403, "Forbidden: bot was blocked by the user"));
        }
        Ok(chat)
    }

    /// Spends one send from the bot's, the chat's and (for groups) the group's buckets, or
    /// answers 429 without spending any.
    pub fn take_send_token(&mut self, chat_id: i64) -> Result<(), ApiError> {
        let now = Instant::now();
        let is_group = self
            .chats
            .get(&chat_id)
            .is_some_and(|c| matches!(c.kind, ChatType::Group | ChatType::Supergroup));
        let limits = &mut self.limits;
        let (per_chat, per_group) = (self.config.per_chat, self.config.per_group);
        let chat = limits
            .chats
            .entry(chat_id)
            .or_insert_with(|| TokenBucket::new(per_chat, now));
        let result = if is_group {
            let group = limits
                .groups
                .entry(chat_id)
                .or_insert_with(|| TokenBucket::new(per_group, now));
            take_all(&mut [&mut limits.bot, chat, group], now)
        } else {
            take_all(&mut [&mut limits.bot, chat], now)
        };
        result.map_err(|wait| ApiError::too_many_requests(retry_after_secs(wait)))
    }

    pub fn message(&self, chat_id: i64, message_id: i64) -> Option<&StoredMessage> {
        self.messages.get(&(chat_id, message_id))
    }

    /// The message as embedded in `reply_to_message` (Telegram nests only one level).
    pub fn reply_json(&self, chat_id: i64, message_id: i64) -> Option<Value> {
        let mut json = self.message(chat_id, message_id)?.json.clone();
        if let Some(obj) = json.as_object_mut() {
            obj.remove("reply_to_message");
        }
        Some(json)
    }

    /// Creates a message in a known chat: assigns its id, stores and returns it. `sender` is
    /// the `from` user (None for channel posts); `content` holds text, media, markup...
    pub fn post_message(
        &mut self,
        chat_id: i64,
        sender: Option<Value>,
        content: Map<String, Value>,
        reply_to: Option<i64>,
    ) -> Result<Value, SimError> {
        let reply = match reply_to {
            Some(id) => Some(
                self.reply_json(chat_id, id)
                    .ok_or(SimError::UnknownMessage {
                        chat_id,
                        message_id: id,
                    })?,
            ),
            None => None,
        };
        let chat = self
            .chats
            .get_mut(&chat_id)
            .ok_or(SimError::UnknownChat(chat_id))?;
        let message_id = chat.next_message_id;
        chat.next_message_id += 1;
        let chat_json = chat.json();
        let mut message = Map::new();
        message.insert("message_id".into(), json!(message_id));
        let from_bot = sender.as_ref().is_some_and(|s| s["is_bot"] == true);
        match sender {
            Some(from) => message.insert("from".into(), from),
            None => message.insert("sender_chat".into(), chat_json.clone()),
        };
        message.insert("chat".into(), chat_json);
        message.insert("date".into(), json!(unix_now()));
        if let Some(reply) = reply {
            message.insert("reply_to_message".into(), reply);
        }
        message.extend(content);
        let json = Value::Object(message);
        self.messages.insert(
            (chat_id, message_id),
            StoredMessage {
                json: json.clone(),
                from_bot,
            },
        );
        Ok(json)
    }

    /// Replaces a stored message (after an edit).
    pub fn replace_message(&mut self, chat_id: i64, message_id: i64, json: Value) {
        if let Some(stored) = self.messages.get_mut(&(chat_id, message_id)) {
            stored.json = json;
        }
    }

    /// Whether updates of `kind` are produced for this bot.
    fn wants(&self, kind: &str) -> bool {
        match &self.allowed_updates {
            Some(list) if !list.is_empty() => list.iter().any(|k| k == kind),
            _ => !NOT_SENT_BY_DEFAULT.contains(&kind),
        }
    }

    /// Assigns the next update_id and queues `{update_id, kind: payload}` unless the bot's
    /// allowed_updates exclude `kind` (Telegram then never creates it).
    pub fn push_update(&mut self, kind: &str, payload: Value) -> i64 {
        let id = self.next_update_id;
        self.next_update_id += 1;
        if self.wants(kind) {
            let json = json!({ "update_id": id, kind: payload });
            self.updates.push_back(QueuedUpdate { id, json });
            self.wake.notify_waiters();
        }
        id
    }

    /// getUpdates' `offset`: a positive offset forgets every update below it; a negative one
    /// keeps only the last `-offset` updates.
    pub fn confirm(&mut self, offset: i64) {
        if offset > 0 {
            while self.updates.front().is_some_and(|u| u.id < offset) {
                self.updates.pop_front();
            }
        } else if offset < 0 {
            let keep = usize::try_from(offset.unsigned_abs()).unwrap_or(usize::MAX);
            while self.updates.len() > keep {
                self.updates.pop_front();
            }
        }
    }

    pub fn register_callback(&mut self, chat_id: i64, message_id: i64) -> String {
        self.next_callback += 1;
        let id = format!("{}{:010}", self.id, self.next_callback);
        self.callbacks.insert(id.clone(), (chat_id, message_id));
        id
    }

    /// Answers a callback query once; returns the message it came from.
    pub fn answer_callback(&mut self, id: &str) -> Option<(i64, i64)> {
        self.callbacks.remove(id)
    }

    pub fn webhook_info(&self) -> WebhookInfo {
        let hook = self.webhook.as_ref();
        WebhookInfo {
            url: hook.map(|h| h.url.clone()).unwrap_or_default(),
            has_custom_certificate: false,
            pending_update_count: self.updates.len() as u64,
            last_error_date: hook.and_then(|h| h.last_error.as_ref().map(|e| e.0)),
            last_error_message: hook.and_then(|h| h.last_error.as_ref().map(|e| e.1.clone())),
            max_connections: hook.map(|h| h.max_connections),
            allowed_updates: self.allowed_updates.clone().filter(|l| !l.is_empty()),
        }
    }
}

/// `my_bot` → `My Bot`: a first name for a bot added with only a username.
fn display_name(username: &str) -> String {
    let base = username
        .strip_suffix("_bot")
        .or_else(|| username.strip_suffix("bot"));
    let words: Vec<String> = base
        .filter(|b| !b.is_empty())
        .unwrap_or(username)
        .split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect())
                .unwrap_or_default()
        })
        .collect();
    if words.is_empty() {
        "Bot".to_owned()
    } else {
        words.join(" ")
    }
}
