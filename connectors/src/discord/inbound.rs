//! Discord payloads (gateway dispatches and HTTP interactions) to inbound events.
//!
//! Read leniently from JSON: a field Discord adds or leaves out never costs a message. A
//! message's first attachment becomes its media (the text its caption, further attachments
//! listed after it); `<@id>` mentions of users the message lists read `@name`. Messages of
//! the bot itself and system messages (joins, pins...) are not conversation and are skipped.

use chrono::{DateTime, Utc};
use serde_json::Value;
use switchboard_core::connector::{ChatRef, EditReport, InboundEvent, InboundMessage, SenderRef};
use switchboard_core::model::{Content, ConversationKind, MediaKind};

/// Message types that are conversation: DEFAULT and REPLY.
const CONVERSATION_TYPES: &[u64] = &[0, 19];

fn str_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn time_of(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The chat of a message or interaction: guild channels and threads are groups, DMs direct.
fn chat_of(d: &Value, channel_id: String, sender: Option<&SenderRef>) -> ChatRef {
    let in_guild = str_of(&d["guild_id"]).is_some();
    ChatRef {
        external_chat_id: channel_id,
        kind: if in_guild {
            ConversationKind::Group
        } else {
            ConversationKind::Direct
        },
        title: if in_guild {
            d["channel"]["name"].as_str().map(str::to_owned)
        } else {
            sender.and_then(|s| s.name.clone())
        },
    }
}

/// A user (and, in a guild, their member object with a nickname).
fn sender_of(user: &Value, member: &Value) -> Option<SenderRef> {
    let id = str_of(&user["id"])?;
    let name = member["nick"]
        .as_str()
        .or_else(|| user["global_name"].as_str())
        .or_else(|| user["username"].as_str())
        .map(str::to_owned);
    Some(SenderRef {
        external_id: id,
        name,
        phone: None,
    })
}

/// `<@id>` / `<@!id>` of the users in `mentions` read `@name`.
fn render_mentions(text: &str, mentions: &Value) -> String {
    let mut out = text.to_owned();
    for user in mentions.as_array().into_iter().flatten() {
        let (Some(id), Some(name)) = (
            str_of(&user["id"]),
            user["global_name"]
                .as_str()
                .or_else(|| user["username"].as_str()),
        ) else {
            continue;
        };
        let shown = format!("@{name}");
        out = out
            .replace(&format!("<@{id}>"), &shown)
            .replace(&format!("<@!{id}>"), &shown);
    }
    out
}

fn media_kind(content_type: Option<&str>) -> MediaKind {
    match content_type.unwrap_or("").split('/').next() {
        Some("image") => MediaKind::Image,
        Some("video") => MediaKind::Video,
        Some("audio") => MediaKind::Audio,
        _ => MediaKind::Document,
    }
}

/// The content of a message: its text, or its first attachment captioned with the text.
pub(crate) fn message_content(d: &Value) -> Option<Content> {
    let text = render_mentions(d["content"].as_str().unwrap_or(""), &d["mentions"]);
    let attachments: Vec<&Value> = d["attachments"].as_array().into_iter().flatten().collect();
    let Some(first) = attachments.first() else {
        if text.trim().is_empty() {
            return None;
        }
        return Some(Content::Text { text });
    };
    let url = first["url"].as_str().map(str::to_owned)?;
    let mut caption = text;
    for more in attachments.iter().skip(1) {
        if let Some(u) = more["url"].as_str() {
            if !caption.is_empty() {
                caption.push('\n');
            }
            caption.push_str(u);
        }
    }
    let mime = first["content_type"].as_str();
    Some(Content::Media {
        kind: media_kind(mime),
        url: Some(url),
        file_id: None,
        caption: (!caption.trim().is_empty()).then_some(caption),
        filename: first["filename"].as_str().map(str::to_owned),
        mime_type: mime.map(str::to_owned),
    })
}

/// Whether a message should be skipped: the bot's own, or not conversation.
fn skipped(d: &Value, own_user_id: Option<&str>) -> bool {
    let author = str_of(&d["author"]["id"]);
    if own_user_id.is_some() && author.as_deref() == own_user_id {
        return true;
    }
    let kind = d["type"].as_u64().unwrap_or(0);
    !CONVERSATION_TYPES.contains(&kind)
}

/// MESSAGE_CREATE.
pub(crate) fn message_create(d: &Value, own_user_id: Option<&str>) -> Option<InboundEvent> {
    if skipped(d, own_user_id) {
        return None;
    }
    let id = str_of(&d["id"])?;
    let channel_id = str_of(&d["channel_id"])?;
    let sender = sender_of(&d["author"], &d["member"]);
    let Some(content) = message_content(d) else {
        tracing::debug!(message = %id, "Discord message without content (is the message_content intent enabled?)");
        return None;
    };
    let reply_to = str_of(&d["message_reference"]["message_id"])
        .or_else(|| str_of(&d["referenced_message"]["id"]));
    Some(InboundEvent::Message(InboundMessage {
        dedup_key: format!("m:{id}"),
        chat: chat_of(d, channel_id, sender.as_ref()),
        sender,
        external_id: Some(id),
        content,
        reply_to_external_id: reply_to,
        at: time_of(&d["timestamp"]).unwrap_or_else(Utc::now),
    }))
}

/// MESSAGE_UPDATE: an edit of the text or attachments (`edited_timestamp` set); updates
/// Discord makes itself (link previews) carry none and are skipped.
pub(crate) fn message_update(d: &Value, own_user_id: Option<&str>) -> Option<InboundEvent> {
    if skipped(d, own_user_id) {
        return None;
    }
    let edited = d["edited_timestamp"].as_str()?;
    let id = str_of(&d["id"])?;
    let content = message_content(d)?;
    Some(InboundEvent::Edit(EditReport {
        dedup_key: format!("e:{id}:{edited}"),
        chat_external_id: str_of(&d["channel_id"])?,
        external_id: id,
        content,
        at: time_of(&d["edited_timestamp"]).unwrap_or_else(Utc::now),
    }))
}

/// Interaction types.
pub(crate) const PING: u64 = 1;
pub(crate) const APPLICATION_COMMAND: u64 = 2;
pub(crate) const MESSAGE_COMPONENT: u64 = 3;
pub(crate) const AUTOCOMPLETE: u64 = 4;
pub(crate) const MODAL_SUBMIT: u64 = 5;

/// A slash command (`/name option:value ...`), a button press or a modal's fields as an
/// inbound message of the user who acted.
pub(crate) fn interaction(d: &Value) -> Option<InboundEvent> {
    let id = str_of(&d["id"])?;
    let channel_id = str_of(&d["channel_id"]).or_else(|| str_of(&d["channel"]["id"]))?;
    let sender = sender_of(
        if d["member"]["user"].is_object() {
            &d["member"]["user"]
        } else {
            &d["user"]
        },
        &d["member"],
    );
    let data = &d["data"];
    let (content, reply_to) = match d["type"].as_u64()? {
        APPLICATION_COMMAND => {
            let mut text = format!("/{}", data["name"].as_str().unwrap_or("command"));
            render_options(&data["options"], &mut text);
            (Content::Text { text }, None)
        }
        MESSAGE_COMPONENT => {
            let custom_id = data["custom_id"].as_str()?.to_owned();
            let title = button_label(&d["message"]["components"], &custom_id);
            (
                Content::ButtonReply {
                    id: custom_id,
                    title,
                },
                str_of(&d["message"]["id"]),
            )
        }
        MODAL_SUBMIT => {
            let mut text = data["custom_id"].as_str().unwrap_or("form").to_owned();
            for row in data["components"].as_array().into_iter().flatten() {
                for field in row["components"].as_array().into_iter().flatten() {
                    if let (Some(k), Some(v)) =
                        (field["custom_id"].as_str(), field["value"].as_str())
                    {
                        text.push_str(&format!("\n{k}: {v}"));
                    }
                }
            }
            (Content::Text { text }, None)
        }
        _ => return None,
    };
    Some(InboundEvent::Message(InboundMessage {
        dedup_key: format!("i:{id}"),
        chat: chat_of(d, channel_id, sender.as_ref()),
        sender,
        external_id: None,
        content,
        reply_to_external_id: reply_to,
        at: Utc::now(),
    }))
}

/// ` name:value` for each option, subcommands included.
fn render_options(options: &Value, out: &mut String) {
    for option in options.as_array().into_iter().flatten() {
        let name = option["name"].as_str().unwrap_or("?");
        match &option["value"] {
            Value::Null => {
                out.push(' ');
                out.push_str(name);
                render_options(&option["options"], out);
            }
            Value::String(s) => out.push_str(&format!(" {name}:{s}")),
            v => out.push_str(&format!(" {name}:{v}")),
        }
    }
}

/// The label of the button `custom_id` among a message's components.
fn button_label(components: &Value, custom_id: &str) -> Option<String> {
    components.as_array()?.iter().find_map(|c| {
        if c["custom_id"].as_str() == Some(custom_id) {
            return c["label"].as_str().map(str::to_owned);
        }
        button_label(&c["components"], custom_id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn guild_message() -> Value {
        json!({
            "id": "1001", "channel_id": "200", "guild_id": "300", "type": 0,
            "author": {"id": "42", "username": "ada", "global_name": "Ada"},
            "member": {"nick": "ada-the-admin"},
            "content": "hi <@7>, see this", "timestamp": "2026-11-22T10:00:00.000000+00:00",
            "edited_timestamp": null,
            "mentions": [{"id": "7", "username": "switchbot"}],
            "attachments": [
                {"id": "1", "filename": "cat.png", "content_type": "image/png", "url": "https://cdn.discordapp.com/a/cat.png"},
                {"id": "2", "filename": "b.pdf", "url": "https://cdn.discordapp.com/a/b.pdf"}
            ],
            "message_reference": {"message_id": "999", "channel_id": "200"}
        })
    }

    #[test]
    fn a_guild_message_is_a_group_message_with_its_attachments_and_reply() {
        let Some(InboundEvent::Message(m)) = message_create(&guild_message(), Some("7")) else {
            panic!("not a message");
        };
        assert_eq!(m.chat.kind, ConversationKind::Group);
        assert_eq!(m.chat.external_chat_id, "200");
        assert_eq!(m.external_id.as_deref(), Some("1001"));
        assert_eq!(m.reply_to_external_id.as_deref(), Some("999"));
        let sender = m.sender.unwrap();
        assert_eq!(sender.external_id, "42");
        assert_eq!(sender.name.as_deref(), Some("ada-the-admin"));
        match m.content {
            Content::Media {
                kind: MediaKind::Image,
                url,
                caption,
                filename,
                ..
            } => {
                assert_eq!(url.as_deref(), Some("https://cdn.discordapp.com/a/cat.png"));
                assert_eq!(filename.as_deref(), Some("cat.png"));
                assert_eq!(
                    caption.as_deref(),
                    Some("hi @switchbot, see this\nhttps://cdn.discordapp.com/a/b.pdf")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_bots_own_messages_and_system_messages_are_skipped() {
        let mut own = guild_message();
        own["author"]["id"] = json!("7");
        assert!(message_create(&own, Some("7")).is_none());
        let mut join = guild_message();
        join["type"] = json!(7);
        assert!(message_create(&join, Some("7")).is_none());
    }

    #[test]
    fn a_dm_is_direct_and_an_edit_needs_an_edited_timestamp() {
        let dm = json!({"id": "5", "channel_id": "6", "type": 0, "content": "yo",
                        "author": {"id": "42", "username": "ada"}, "timestamp": "2026-11-22T10:00:00Z"});
        let Some(InboundEvent::Message(m)) = message_create(&dm, None) else {
            panic!()
        };
        assert_eq!(m.chat.kind, ConversationKind::Direct);
        assert_eq!(m.chat.title.as_deref(), Some("ada"));
        assert!(
            message_update(&dm, None).is_none(),
            "an embed-only update is no edit"
        );
        let mut edited = dm.clone();
        edited["edited_timestamp"] = json!("2026-11-22T10:01:00Z");
        edited["content"] = json!("yo!");
        let Some(InboundEvent::Edit(e)) = message_update(&edited, None) else {
            panic!()
        };
        assert_eq!(e.external_id, "5");
        assert!(matches!(e.content, Content::Text { ref text } if text == "yo!"));
    }

    #[test]
    fn commands_and_button_presses_become_messages_of_the_user() {
        let command = json!({"id": "11", "type": 2, "channel_id": "200", "guild_id": "300",
            "member": {"user": {"id": "42", "username": "ada"}},
            "data": {"name": "order", "options": [{"name": "item", "type": 3, "value": "tea"}, {"name": "qty", "type": 4, "value": 2}]}});
        let Some(InboundEvent::Message(m)) = interaction(&command) else {
            panic!()
        };
        assert!(matches!(m.content, Content::Text { ref text } if text == "/order item:tea qty:2"));
        assert_eq!(m.dedup_key, "i:11");
        let press = json!({"id": "12", "type": 3, "channel_id": "6", "user": {"id": "42", "username": "ada"},
            "data": {"custom_id": "yes", "component_type": 2},
            "message": {"id": "77", "components": [{"type": 1, "components": [{"type": 2, "custom_id": "yes", "label": "Yes!"}]}]}});
        let Some(InboundEvent::Message(m)) = interaction(&press) else {
            panic!()
        };
        assert_eq!(m.chat.kind, ConversationKind::Direct);
        assert_eq!(m.reply_to_external_id.as_deref(), Some("77"));
        assert!(
            matches!(m.content, Content::ButtonReply { ref id, ref title } if id == "yes" && title.as_deref() == Some("Yes!"))
        );
    }
}
