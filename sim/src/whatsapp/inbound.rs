//! What users write to a business ([`WaUserMessage`]) and how Meta shows it in the `messages`
//! webhook: `{from, id, timestamp, type, <type>: {...}, context?}` (PLATFORMS.md §2).

use serde_json::{Map, Value, json};

use super::error::WhatsAppSimError;
use super::media::MediaStore;

/// A message a user sends to a business phone number. Media are ids from
/// [`WhatsAppSim::add_media`](super::WhatsAppSim::add_media).
#[derive(Debug, Clone, PartialEq)]
pub struct WaUserMessage {
    /// The user's wa_id (digits).
    pub from: String,
    pub profile_name: String,
    pub kind: WaInbound,
    /// The wamid this message replies to (a business message or the user's own).
    pub context: Option<String>,
}

impl WaUserMessage {
    pub fn text(from: &str, name: &str, body: &str) -> Self {
        WaUserMessage {
            from: from.to_owned(),
            profile_name: name.to_owned(),
            kind: WaInbound::Text(body.to_owned()),
            context: None,
        }
    }

    /// This message as a reply to `wamid`.
    pub fn replying_to(mut self, wamid: &str) -> Self {
        self.context = Some(wamid.to_owned());
        self
    }
}

/// The content of a user's message, one variant per inbound `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum WaInbound {
    Text(String),
    Image {
        media_id: String,
        caption: Option<String>,
    },
    Document {
        media_id: String,
        filename: String,
        caption: Option<String>,
    },
    Audio {
        media_id: String,
    },
    Video {
        media_id: String,
        caption: Option<String>,
    },
    Sticker {
        media_id: String,
    },
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
        address: Option<String>,
    },
    /// A tap on a reply button of an interactive message.
    ButtonReply {
        id: String,
        title: String,
    },
    /// A choice in an interactive list.
    ListReply {
        id: String,
        title: String,
        description: Option<String>,
    },
    /// A tap on a quick-reply button of a template.
    TemplateButton {
        payload: String,
        text: String,
    },
}

impl WaInbound {
    /// The media the message carries, if any.
    pub fn media_id(&self) -> Option<&str> {
        match self {
            WaInbound::Image { media_id, .. }
            | WaInbound::Document { media_id, .. }
            | WaInbound::Audio { media_id }
            | WaInbound::Video { media_id, .. }
            | WaInbound::Sticker { media_id } => Some(media_id),
            _ => None,
        }
    }
}

/// The message object of the webhook. `context_from` is who wrote the message replied to.
pub(crate) fn message_json(
    msg: &WaUserMessage,
    wamid: &str,
    timestamp: i64,
    media: &MediaStore,
    context_from: Option<String>,
) -> Result<Value, WhatsAppSimError> {
    let mut message = Map::new();
    if let (Some(id), Some(from)) = (&msg.context, context_from) {
        message.insert("context".into(), json!({ "from": from, "id": id }));
    }
    message.insert("from".into(), json!(msg.from));
    message.insert("id".into(), json!(wamid));
    message.insert("timestamp".into(), json!(timestamp.to_string()));
    let media_object = |id: &str, extra: &[(&str, Option<&str>)]| {
        let stored = media
            .get(id)
            .ok_or_else(|| WhatsAppSimError::UnknownMedia(id.to_owned()))?;
        let mut object = Map::new();
        for (key, value) in extra {
            if let Some(value) = value {
                object.insert((*key).into(), json!(value));
            }
        }
        object.insert("mime_type".into(), json!(stored.mime));
        object.insert("sha256".into(), json!(stored.sha256_base64()));
        object.insert("id".into(), json!(id));
        Ok::<_, WhatsAppSimError>(Value::Object(object))
    };
    let (kind, object) = match &msg.kind {
        WaInbound::Text(body) => ("text", json!({ "body": body })),
        WaInbound::Image { media_id, caption } => (
            "image",
            media_object(media_id, &[("caption", caption.as_deref())])?,
        ),
        WaInbound::Document {
            media_id,
            filename,
            caption,
        } => (
            "document",
            media_object(
                media_id,
                &[
                    ("caption", caption.as_deref()),
                    ("filename", Some(filename)),
                ],
            )?,
        ),
        WaInbound::Audio { media_id } => ("audio", media_object(media_id, &[])?),
        WaInbound::Video { media_id, caption } => (
            "video",
            media_object(media_id, &[("caption", caption.as_deref())])?,
        ),
        WaInbound::Sticker { media_id } => {
            let mut sticker = media_object(media_id, &[])?;
            sticker["animated"] = json!(false);
            ("sticker", sticker)
        }
        WaInbound::Location {
            latitude,
            longitude,
            name,
            address,
        } => {
            let mut location = json!({ "latitude": latitude, "longitude": longitude });
            if let Some(name) = name {
                location["name"] = json!(name);
            }
            if let Some(address) = address {
                location["address"] = json!(address);
            }
            ("location", location)
        }
        WaInbound::ButtonReply { id, title } => (
            "interactive",
            json!({ "type": "button_reply", "button_reply": { "id": id, "title": title } }),
        ),
        WaInbound::ListReply {
            id,
            title,
            description,
        } => {
            let mut reply = json!({ "id": id, "title": title });
            if let Some(description) = description {
                reply["description"] = json!(description);
            }
            (
                "interactive",
                json!({ "type": "list_reply", "list_reply": reply }),
            )
        }
        WaInbound::TemplateButton { payload, text } => {
            ("button", json!({ "payload": payload, "text": text }))
        }
    };
    message.insert("type".into(), json!(kind));
    message.insert(kind.into(), object);
    Ok(Value::Object(message))
}
