//! Telegram inbound: the long-poll loop (offset persisted after each stored batch), webhook
//! registration and verification, and normalization of updates into the unified model.

use std::time::Duration;

use chrono::Utc;
use switchboard_core::connector::*;
use switchboard_core::error::ConnectorError;
use switchboard_core::model::{Content, ConversationKind, MediaKind};
use switchboard_core::secret::constant_time_eq;
use teloxide_core::payloads::setters::*;
use teloxide_core::requests::Requester;
use teloxide_core::types::{AllowedUpdate, Chat, Message, Update, UpdateKind, User};

use super::{Mode, TelegramConnector, outbound};

/// The cursor holding the next getUpdates offset.
const OFFSET: &str = "telegram.offset";
/// Consecutive failed polls before the loop gives up and lets the supervisor restart it.
const MAX_POLL_FAILURES: u32 = 8;

fn allowed(names: &[String]) -> Vec<AllowedUpdate> {
    names
        .iter()
        .filter_map(|n| serde_json::from_value(serde_json::Value::String(n.clone())).ok())
        .collect()
}

impl TelegramConnector {
    /// Long polling: fetch, store, then advance (and persist) the offset. A crash between
    /// storing and persisting refetches the batch, which dedup stores once.
    pub(super) async fn poll(&self, ctx: RunContext) -> Result<(), ConnectorError> {
        debug_assert_eq!(self.settings.mode, Mode::Polling);
        // getUpdates answers 409 while a webhook is set (e.g. the bot was in webhook mode).
        tokio::select! {
            r = self.api.delete_webhook() => { r.map_err(outbound::classify)?; }
            _ = ctx.cancel.cancelled() => return Ok(()),
        }
        let mut offset: i32 = ctx
            .cursors
            .get(&self.bot_id, OFFSET)
            .await
            .map_err(|e| ConnectorError::transient(format!("cannot read the polling offset: {e}")))?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let allowed = allowed(&self.settings.allowed_updates);
        let mut failures = 0u32;
        ctx.health.running();
        loop {
            let request = self
                .api
                .get_updates()
                .offset(offset)
                .timeout(self.settings.poll_timeout_s as u32)
                .limit(100)
                .allowed_updates(allowed.clone());
            let updates = tokio::select! {
                r = request => r,
                _ = ctx.cancel.cancelled() => return Ok(()),
            };
            let updates = match updates {
                Ok(u) => u,
                Err(e) => {
                    let e = outbound::classify(e);
                    if e.is_fatal_for_bot() {
                        return Err(e);
                    }
                    failures += 1;
                    if failures >= MAX_POLL_FAILURES {
                        return Err(e);
                    }
                    ctx.health
                        .degraded(&format!("getUpdates failed ({failures} in a row): {e}"));
                    let wait = match &e {
                        ConnectorError::RateLimited {
                            retry_after: Some(d),
                            ..
                        } => *d,
                        _ => Duration::from_millis(500 * 2u64.pow(failures.min(6))),
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => continue,
                        _ = ctx.cancel.cancelled() => return Ok(()),
                    }
                }
            };
            if failures > 0 {
                failures = 0;
                ctx.health.running();
            }
            if updates.is_empty() {
                continue;
            }
            let next = updates.iter().map(|u| u.id.0 as i64).max().unwrap_or(0) + 1;
            let events: Vec<InboundEvent> = updates.iter().flat_map(normalize).collect();
            // Not cancellable: a batch fetched is stored before the loop may stop.
            ctx.inbound
                .deliver(&self.bot_id, events)
                .await
                .map_err(|e| ConnectorError::transient(format!("cannot store updates: {e}")))?;
            self.answer_callbacks(&updates);
            offset = next as i32;
            if let Err(e) = ctx
                .cursors
                .set(&self.bot_id, OFFSET, &offset.to_string())
                .await
            {
                tracing::warn!(bot = %self.bot_id, error = %e, "cannot persist the polling offset; dedup covers a refetch");
            }
        }
    }

    /// Answers the button presses among `updates` once they are stored: Telegram shows the
    /// user a spinner until the callback query is answered. Not awaited (the webhook's answer
    /// and the next poll do not wait for it); a failure only leaves the spinner to time out.
    fn answer_callbacks(&self, updates: &[Update]) {
        for update in updates {
            if let UpdateKind::CallbackQuery(q) = &update.kind {
                let api = self.api.clone();
                let id = q.id.clone();
                let bot = self.bot_id.clone();
                tokio::spawn(async move {
                    if let Err(e) = api.answer_callback_query(id).await {
                        tracing::debug!(bot, error = %e, "answerCallbackQuery failed");
                    }
                });
            }
        }
    }

    /// Webhook mode: register `{public_url}/webhooks/telegram/{bot_id}` with the secret.
    pub(super) async fn register_webhook(&self, ctx: RunContext) -> Result<(), ConnectorError> {
        let url = match (&self.settings.webhook_url, &ctx.public_url) {
            (Some(u), _) => u.clone(),
            (None, Some(base)) => format!(
                "{}/webhooks/telegram/{}",
                base.trim_end_matches('/'),
                self.bot_id
            ),
            (None, None) => {
                return Err(ConnectorError::Config(
                    "webhook mode needs server.public_url (or the bot's webhook_url)".into(),
                ));
            }
        };
        let url = url::Url::parse(&url)
            .map_err(|e| ConnectorError::Config(format!("webhook url {url:?}: {e}")))?;
        let secret = self.webhook_secret.as_ref().ok_or_else(|| {
            ConnectorError::Config("webhook_secret: is required in webhook mode".into())
        })?;
        let request = self
            .api
            .set_webhook(url)
            .secret_token(secret.expose().to_string())
            .allowed_updates(allowed(&self.settings.allowed_updates));
        tokio::select! {
            r = request => { r.map_err(outbound::classify)?; }
            _ = ctx.cancel.cancelled() => return Ok(()),
        }
        ctx.health.running();
        ctx.cancel.cancelled().await;
        Ok(())
    }

    /// `POST /webhooks/telegram/{bot_id}`: secret header checked in constant time before the
    /// body is parsed; 200 only after the update is stored.
    pub(super) async fn webhook(
        &self,
        request: WebhookRequest,
        sink: &dyn InboundSink,
    ) -> WebhookResponse {
        if request.method != "POST" {
            return WebhookResponse::text(405, "POST only");
        }
        // Without a secret nothing can be verified: a failed verification (API.md: 401).
        let Some(secret) = &self.webhook_secret else {
            return WebhookResponse::text(
                401,
                "this bot has no webhook_secret, so no webhook can be verified",
            );
        };
        let presented = request
            .header("x-telegram-bot-api-secret-token")
            .unwrap_or("");
        if !constant_time_eq(secret.expose().as_bytes(), presented.as_bytes()) {
            return WebhookResponse::text(401, "bad X-Telegram-Bot-Api-Secret-Token");
        }
        let update: Update = match serde_json::from_slice(&request.body) {
            Ok(u) => u,
            Err(e) => return WebhookResponse::text(400, format!("not a Telegram Update: {e}")),
        };
        match sink.deliver(&self.bot_id, normalize(&update)).await {
            Ok(_) => {
                self.answer_callbacks(std::slice::from_ref(&update));
                WebhookResponse::json(200, &serde_json::json!({}))
            }
            Err(e) => {
                tracing::error!(bot = %self.bot_id, error = %e, "cannot store a Telegram update; Telegram will retry");
                WebhookResponse::text(500, "not stored; retry")
            }
        }
    }
}

fn kind(chat: &Chat) -> ConversationKind {
    if chat.is_private() {
        ConversationKind::Direct
    } else if chat.is_channel() {
        ConversationKind::Channel
    } else {
        ConversationKind::Group
    }
}

fn chat_ref(chat: &Chat) -> ChatRef {
    let title = if chat.is_private() {
        let first = chat.first_name().unwrap_or_default();
        let name = match chat.last_name() {
            Some(last) => format!("{first} {last}"),
            None => first.to_string(),
        };
        (!name.is_empty()).then_some(name)
    } else {
        chat.title().map(str::to_string)
    };
    ChatRef {
        external_chat_id: chat.id.0.to_string(),
        kind: kind(chat),
        title,
    }
}

fn sender(user: &User) -> SenderRef {
    SenderRef {
        external_id: user.id.0.to_string(),
        name: Some(user.full_name()),
        phone: None,
    }
}

/// The unified content of a Telegram message, if it carries something we model.
pub(super) fn content(m: &Message) -> Option<Content> {
    let caption = m.caption().map(str::to_string);
    let media = |kind, file_id: String, filename: Option<String>, mime_type: Option<String>| {
        Content::Media {
            kind,
            url: None,
            file_id: Some(file_id),
            caption: caption.clone(),
            filename,
            mime_type,
        }
    };
    if let Some(text) = m.text() {
        return Some(Content::Text {
            text: text.to_string(),
        });
    }
    if let Some(sizes) = m.photo() {
        // Sizes come smallest first; keep the largest.
        let largest = sizes
            .iter()
            .max_by_key(|p| (p.width as u64) * (p.height as u64))?;
        return Some(media(
            MediaKind::Image,
            largest.file.id.0.clone(),
            None,
            None,
        ));
    }
    if let Some(d) = m.document() {
        return Some(media(
            MediaKind::Document,
            d.file.id.0.clone(),
            d.file_name.clone(),
            d.mime_type.as_ref().map(|m| m.to_string()),
        ));
    }
    if let Some(a) = m.audio() {
        return Some(media(
            MediaKind::Audio,
            a.file.id.0.clone(),
            a.file_name.clone(),
            a.mime_type.as_ref().map(|m| m.to_string()),
        ));
    }
    if let Some(v) = m.voice() {
        return Some(media(
            MediaKind::Audio,
            v.file.id.0.clone(),
            None,
            v.mime_type.as_ref().map(|m| m.to_string()),
        ));
    }
    if let Some(v) = m.video() {
        return Some(media(
            MediaKind::Video,
            v.file.id.0.clone(),
            v.file_name.clone(),
            v.mime_type.as_ref().map(|m| m.to_string()),
        ));
    }
    if let Some(v) = m.video_note() {
        return Some(media(MediaKind::Video, v.file.id.0.clone(), None, None));
    }
    if let Some(a) = m.animation() {
        return Some(media(
            MediaKind::Video,
            a.file.id.0.clone(),
            a.file_name.clone(),
            a.mime_type.as_ref().map(|m| m.to_string()),
        ));
    }
    if let Some(s) = m.sticker() {
        return Some(media(MediaKind::Image, s.file.id.0.clone(), None, None));
    }
    if let Some(l) = m.location() {
        return Some(Content::Location {
            latitude: l.latitude,
            longitude: l.longitude,
            name: None,
        });
    }
    None
}

fn message_event(update_id: u32, m: &Message) -> Option<InboundEvent> {
    let content = content(m)?;
    Some(InboundEvent::Message(InboundMessage {
        dedup_key: format!("u{update_id}"),
        chat: chat_ref(&m.chat),
        sender: m.from.as_ref().map(sender),
        external_id: Some(m.id.0.to_string()),
        content,
        reply_to_external_id: m.reply_to_message().map(|r| r.id.0.to_string()),
        at: m.date,
    }))
}

/// Normalizes one update; updates we do not model produce nothing (and are confirmed).
pub(super) fn normalize(update: &Update) -> Vec<InboundEvent> {
    let id = update.id.0;
    match &update.kind {
        UpdateKind::Message(m) | UpdateKind::ChannelPost(m) => {
            message_event(id, m).into_iter().collect()
        }
        UpdateKind::EditedMessage(m) | UpdateKind::EditedChannelPost(m) => match content(m) {
            Some(content) => vec![InboundEvent::Edit(EditReport {
                dedup_key: format!("u{id}"),
                chat_external_id: m.chat.id.0.to_string(),
                external_id: m.id.0.to_string(),
                content,
                at: m.edit_date().copied().unwrap_or_else(Utc::now),
            })],
            None => Vec::new(),
        },
        UpdateKind::CallbackQuery(q) => {
            let Some(message) = &q.message else {
                return Vec::new();
            };
            let title = message.regular_message().and_then(|m| {
                m.reply_markup()?
                    .inline_keyboard
                    .iter()
                    .flatten()
                    .find(|b| match &b.kind {
                        teloxide_core::types::InlineKeyboardButtonKind::CallbackData(d) => {
                            Some(d) == q.data.as_ref()
                        }
                        _ => false,
                    })
                    .map(|b| b.text.clone())
            });
            vec![InboundEvent::Message(InboundMessage {
                dedup_key: format!("u{id}"),
                chat: chat_ref(message.chat()),
                sender: Some(sender(&q.from)),
                external_id: None,
                content: Content::ButtonReply {
                    id: q.data.clone().unwrap_or_default(),
                    title,
                },
                reply_to_external_id: Some(message.id().0.to_string()),
                at: Utc::now(),
            })]
        }
        UpdateKind::MyChatMember(m) if m.new_chat_member.kind.is_present() => {
            vec![InboundEvent::Chat(chat_ref(&m.chat))]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(json: serde_json::Value) -> Update {
        // As on the wire: teloxide's Update parser borrows from the input text.
        serde_json::from_str(&json.to_string()).expect("a Telegram update")
    }

    #[test]
    fn a_group_photo_with_caption_keeps_the_largest_size_and_the_sender() {
        let u = update(serde_json::json!({"update_id": 7, "message": {
            "message_id": 3, "date": 1700000000,
            "chat": {"id": -100, "type": "group", "title": "Team"},
            "from": {"id": 42, "is_bot": false, "first_name": "Ada", "last_name": "L"},
            "photo": [
                {"file_id": "small", "file_unique_id": "s", "width": 90, "height": 90, "file_size": 1},
                {"file_id": "big", "file_unique_id": "b", "width": 1280, "height": 960, "file_size": 9}
            ],
            "caption": "look",
            "reply_to_message": {"message_id": 2, "date": 1700000000, "chat": {"id": -100, "type": "group", "title": "Team"}, "text": "q"}
        }}));
        let ev = normalize(&u);
        let InboundEvent::Message(m) = &ev.first().unwrap_or_else(|| panic!("{u:?}")) else {
            panic!("{ev:?}")
        };
        assert_eq!(m.dedup_key, "u7");
        assert_eq!(m.chat.kind, ConversationKind::Group);
        assert_eq!(m.chat.title.as_deref(), Some("Team"));
        assert_eq!(m.sender.as_ref().unwrap().external_id, "42");
        assert_eq!(m.sender.as_ref().unwrap().name.as_deref(), Some("Ada L"));
        assert_eq!(m.reply_to_external_id.as_deref(), Some("2"));
        match &m.content {
            Content::Media {
                kind,
                file_id,
                caption,
                ..
            } => {
                assert_eq!(*kind, MediaKind::Image);
                assert_eq!(file_id.as_deref(), Some("big"));
                assert_eq!(caption.as_deref(), Some("look"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_button_press_becomes_a_button_reply_to_the_bots_message() {
        let u = update(serde_json::json!({"update_id": 8, "callback_query": {
            "id": "cb1", "chat_instance": "x", "data": "yes",
            "from": {"id": 42, "is_bot": false, "first_name": "Ada"},
            "message": {"message_id": 5, "date": 1700000000, "chat": {"id": 42, "type": "private", "first_name": "Ada"},
                "text": "Pick", "reply_markup": {"inline_keyboard": [[{"text": "Yes", "callback_data": "yes"}]]}}
        }}));
        let ev = normalize(&u);
        let InboundEvent::Message(m) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(
            m.content,
            Content::ButtonReply {
                id: "yes".into(),
                title: Some("Yes".into())
            }
        );
        assert_eq!(m.reply_to_external_id.as_deref(), Some("5"));
        assert_eq!(m.chat.kind, ConversationKind::Direct);
    }

    #[test]
    fn an_edit_and_a_channel_post_and_a_join_are_normalized() {
        let edit = update(serde_json::json!({"update_id": 9, "edited_message": {
            "message_id": 3, "date": 1700000000, "edit_date": 1700000100,
            "chat": {"id": 42, "type": "private", "first_name": "Ada"},
            "from": {"id": 42, "is_bot": false, "first_name": "Ada"}, "text": "fixed"}}));
        let InboundEvent::Edit(e) = &normalize(&edit)[0] else {
            panic!()
        };
        assert_eq!(
            (e.chat_external_id.as_str(), e.external_id.as_str()),
            ("42", "3")
        );
        let post = update(serde_json::json!({"update_id": 10, "channel_post": {
            "message_id": 1, "date": 1700000000, "chat": {"id": -200, "type": "channel", "title": "News"}, "text": "hello"}}));
        let InboundEvent::Message(m) = &normalize(&post)[0] else {
            panic!()
        };
        assert_eq!(m.chat.kind, ConversationKind::Channel);
        assert!(m.sender.is_none());
        let join = update(serde_json::json!({"update_id": 11, "my_chat_member": {
            "chat": {"id": -300, "type": "supergroup", "title": "Ops"}, "date": 1700000000,
            "from": {"id": 42, "is_bot": false, "first_name": "Ada"},
            "old_chat_member": {"status": "left", "user": {"id": 1, "is_bot": true, "first_name": "B"}},
            "new_chat_member": {"status": "member", "user": {"id": 1, "is_bot": true, "first_name": "B"}}}}));
        let InboundEvent::Chat(c) = &normalize(&join)[0] else {
            panic!()
        };
        assert_eq!(
            (c.kind, c.title.as_deref()),
            (ConversationKind::Group, Some("Ops"))
        );
    }
}
