//! Discord outbound: content to `POST /channels/{id}/messages`.
//!
//! Texts over 2,000 characters go out as several messages, resumable after a failure part
//! way (or are refused with `allow_split: false`). Media by URL: an image as an embed showing
//! it, other kinds as a link Discord unfurls into a player or file card; Discord has no file
//! ids. Buttons become action rows of up to 5 buttons. A location is a text with a map link.
//! Replies reference the earlier message (and do not fail if it was deleted).

use serde_json::Value;
use switchboard_core::connector::{OutboundRequest, SendOptions, SendReceipt};
use switchboard_core::error::ConnectorError;
use switchboard_core::model::{Button as ButtonSpec, Content, MediaKind};
use twilight_model::channel::message::component::{ActionRow, Button, ButtonStyle, Component};
use twilight_model::channel::message::embed::{Embed, EmbedImage};
use twilight_model::channel::message::{AllowedMentions, MentionType};
use twilight_model::id::Id;
use twilight_model::id::marker::{ChannelMarker, MessageMarker};

use super::{DiscordConnector, MAX_BUTTON_LABEL, MAX_BUTTONS, MAX_CUSTOM_ID, MAX_TEXT};

/// Refuses what Discord cannot carry (answered 422 at the API).
pub(crate) fn check(content: &Content, options: &SendOptions) -> Result<(), String> {
    let too_long = |text: &str| text.chars().count() > MAX_TEXT;
    match content {
        Content::Text { text } if !options.allow_split && too_long(text) => Err(format!(
            "the text has {} characters, over Discord's {MAX_TEXT}, and allow_split is false",
            text.chars().count()
        )),
        Content::Media {
            file_id: Some(_), ..
        } => Err("Discord has no file ids: give the media by url".into()),
        Content::Media {
            caption: Some(c),
            url: Some(u),
            filename,
            ..
        } if c.chars().count()
            + u.chars().count()
            + filename.as_ref().map_or(0, |f| f.chars().count() + 4)
            + 1
            > MAX_TEXT =>
        {
            Err(format!(
                "the caption and the media link are over Discord's {MAX_TEXT} characters together"
            ))
        }
        Content::Buttons { text, .. } if too_long(text) => Err(format!(
            "the buttons text is over Discord's {MAX_TEXT} characters"
        )),
        Content::Buttons { buttons, .. } if buttons.len() > MAX_BUTTONS => Err(format!(
            "Discord allows at most {MAX_BUTTONS} buttons (5 rows of 5), got {}",
            buttons.len()
        )),
        Content::Buttons { buttons, .. }
            if buttons
                .iter()
                .any(|b| b.title.chars().count() > MAX_BUTTON_LABEL) =>
        {
            Err(format!(
                "a button title is over Discord's {MAX_BUTTON_LABEL} characters"
            ))
        }
        Content::Buttons { buttons, .. }
            if buttons.iter().any(|b| b.id.chars().count() > MAX_CUSTOM_ID) =>
        {
            Err(format!(
                "a button id is over Discord's {MAX_CUSTOM_ID} characters"
            ))
        }
        Content::Template { .. } => {
            Err("templates are WhatsApp's; Discord has none (send text)".into())
        }
        Content::ButtonReply { .. } => Err("button_reply is inbound only".into()),
        _ => Ok(()),
    }
}

fn channel_id(chat: &str) -> Result<Id<ChannelMarker>, ConnectorError> {
    super::snowflake(chat).map(Id::new).ok_or_else(|| {
        ConnectorError::permanent(format!(
            "{chat:?} is not a Discord channel id (a snowflake)"
        ))
    })
}

fn message_id(id: &str) -> Option<Id<MessageMarker>> {
    super::snowflake(id).map(Id::new)
}

/// One message to create.
#[derive(Default)]
struct Draft {
    content: String,
    embeds: Vec<Embed>,
    components: Vec<Component>,
}

fn image_embed(url: &str) -> Embed {
    Embed {
        author: None,
        color: None,
        description: None,
        fields: Vec::new(),
        flags: None,
        footer: None,
        image: Some(EmbedImage {
            content_type: None,
            flags: None,
            height: None,
            placeholder: None,
            placeholder_version: None,
            proxy_url: None,
            url: url.to_owned(),
            width: None,
        }),
        kind: "rich".to_owned(),
        provider: None,
        thumbnail: None,
        timestamp: None,
        title: None,
        url: None,
        video: None,
    }
}

fn rows(buttons: &[ButtonSpec]) -> Vec<Component> {
    buttons
        .chunks(5)
        .map(|chunk| {
            Component::ActionRow(ActionRow {
                id: None,
                components: chunk
                    .iter()
                    .map(|b| {
                        Component::Button(Button {
                            custom_id: Some(b.id.clone()),
                            disabled: false,
                            emoji: None,
                            id: None,
                            label: Some(b.title.clone()),
                            sku_id: None,
                            style: ButtonStyle::Primary,
                            url: None,
                        })
                    })
                    .collect(),
            })
        })
        .collect()
}

fn draft(content: &Content) -> Result<Draft, ConnectorError> {
    Ok(match content {
        Content::Media {
            kind,
            url: Some(url),
            caption,
            filename,
            ..
        } => {
            let caption = caption.clone().unwrap_or_default();
            if *kind == MediaKind::Image {
                Draft {
                    content: caption,
                    embeds: vec![image_embed(url)],
                    ..Draft::default()
                }
            } else {
                let link = match filename {
                    Some(name) => format!("[{}]({url})", name.replace(['[', ']'], "")),
                    None => url.clone(),
                };
                Draft {
                    content: [caption, link]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join("\n"),
                    ..Draft::default()
                }
            }
        }
        Content::Location {
            latitude,
            longitude,
            name,
        } => {
            let map = format!(
                "https://www.openstreetmap.org/?mlat={latitude}&mlon={longitude}#map=16/{latitude}/{longitude}"
            );
            Draft {
                content: match name {
                    Some(n) => format!("📍 {n}\n{map}"),
                    None => format!("📍 {latitude}, {longitude}\n{map}"),
                },
                ..Draft::default()
            }
        }
        Content::Buttons { text, buttons } => Draft {
            content: text.clone(),
            components: rows(buttons),
            ..Draft::default()
        },
        other => {
            return Err(ConnectorError::permanent(format!(
                "Discord cannot carry {} content",
                other.type_name()
            )));
        }
    })
}

/// Users may be mentioned; `@everyone`, `@here` and roles in a text stay inert.
fn allowed_mentions() -> AllowedMentions {
    AllowedMentions {
        parse: vec![MentionType::Users],
        replied_user: true,
        roles: Vec::new(),
        users: Vec::new(),
    }
}

/// Creates one message; its id.
async fn create(
    connector: &DiscordConnector,
    channel: Id<ChannelMarker>,
    draft: &Draft,
    reply_to: Option<Id<MessageMarker>>,
) -> Result<String, ConnectorError> {
    let mentions = allowed_mentions();
    let mut request = connector
        .rest
        .build()
        .create_message(channel)
        .allowed_mentions(Some(&mentions));
    if !draft.content.is_empty() {
        request = request.content(&draft.content);
    }
    if !draft.embeds.is_empty() {
        request = request.embeds(&draft.embeds);
    }
    if !draft.components.is_empty() {
        request = request.components(&draft.components);
    }
    if let Some(id) = reply_to {
        request = request.reply(id).fail_if_not_exists(false);
    }
    let bucket = channel.to_string();
    let message: Value = connector.rest.execute(request, Some(&bucket)).await?;
    match &message["id"] {
        Value::String(id) => Ok(id.clone()),
        _ => Err(ConnectorError::transient(
            "Discord created the message but answered without its id",
        )),
    }
}

/// Sends one message; a long text goes out as several, the receipt names the first.
pub(crate) async fn send(
    connector: &DiscordConnector,
    request: &OutboundRequest,
) -> Result<SendReceipt, ConnectorError> {
    let channel = channel_id(&request.chat.external_chat_id)?;
    let reply_to = request.reply_to_external_id.as_deref().and_then(message_id);
    if let Content::Text { text } = &request.message.content {
        let parts = crate::split_text(text, MAX_TEXT);
        let bucket = channel.to_string();
        let external_id = connector
            .split
            .send(&request.message.id, parts, |part, first| {
                let bucket = bucket.clone();
                async move {
                    if !first {
                        // The dispatcher paced the first part; the rest are paced here.
                        connector.rest.pace(&bucket).await;
                    }
                    let draft = Draft {
                        content: part,
                        ..Draft::default()
                    };
                    create(
                        connector,
                        channel,
                        &draft,
                        if first { reply_to } else { None },
                    )
                    .await
                }
            })
            .await?;
        return Ok(SendReceipt::new(external_id));
    }
    let draft = draft(&request.message.content)?;
    let external_id = create(connector, channel, &draft, reply_to).await?;
    Ok(SendReceipt::new(external_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_discord_cannot_carry_is_refused_with_the_reason() {
        let strict = SendOptions { allow_split: false };
        let long = Content::Text {
            text: "x".repeat(2001),
        };
        assert!(check(&long, &SendOptions::default()).is_ok());
        assert!(check(&long, &strict).unwrap_err().contains("2000"));
        let file_id = Content::Media {
            kind: MediaKind::Image,
            url: None,
            file_id: Some("abc".into()),
            caption: None,
            filename: None,
            mime_type: None,
        };
        assert!(check(&file_id, &strict).unwrap_err().contains("file ids"));
        let many = Content::Buttons {
            text: "pick".into(),
            buttons: (0..26)
                .map(|i| ButtonSpec {
                    id: i.to_string(),
                    title: i.to_string(),
                })
                .collect(),
        };
        assert!(check(&many, &strict).unwrap_err().contains("25"));
    }

    #[test]
    fn buttons_are_rows_of_five_and_images_are_embeds() {
        let buttons: Vec<ButtonSpec> = (0..7)
            .map(|i| ButtonSpec {
                id: format!("b{i}"),
                title: format!("B{i}"),
            })
            .collect();
        let d = draft(&Content::Buttons {
            text: "pick".into(),
            buttons,
        })
        .unwrap();
        assert_eq!(d.components.len(), 2);
        let json = serde_json::to_value(&d.components).unwrap();
        assert_eq!(json[0]["type"], 1);
        assert_eq!(json[0]["components"][4]["custom_id"], "b4");
        assert_eq!(json[1]["components"][1]["label"], "B6");
        let image = draft(&Content::Media {
            kind: MediaKind::Image,
            url: Some("https://example.com/a.png".into()),
            file_id: None,
            caption: Some("look".into()),
            filename: None,
            mime_type: None,
        })
        .unwrap();
        assert_eq!(image.content, "look");
        assert_eq!(
            serde_json::to_value(&image.embeds).unwrap()[0]["image"]["url"],
            "https://example.com/a.png"
        );
    }
}
