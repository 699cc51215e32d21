//! Telegram outbound: unified content to Bot API calls, long texts split at the limit, media
//! downloads through getFile, and the classification of Telegram's errors.
//!
//! teloxide-core folds Telegram's `error_code` away and sleeps 10 s on every 5xx before it
//! returns (hard-coded); 5xx answers surface as `ApiError::Unknown("Internal Server Error")`
//! or as unparseable HTML, which [`classify`] maps to transient.

use futures::StreamExt;
use switchboard_core::connector::{MediaDownload, OutboundRequest, SendReceipt};
use switchboard_core::error::ConnectorError;
use switchboard_core::model::{Content, MediaKind};
use teloxide_core::RequestError;
use teloxide_core::errors::ApiError;
use teloxide_core::net::Download;
use teloxide_core::payloads::setters::*;
use teloxide_core::requests::Requester;
use teloxide_core::types::{
    ChatId, FileId, InlineKeyboardButton, InlineKeyboardButtonKind, InlineKeyboardMarkup,
    InputFile, Message, MessageId, Recipient, ReplyParameters,
};

use super::MAX_TEXT;

fn recipient(chat: &str) -> Recipient {
    match chat.parse::<i64>() {
        Ok(id) => Recipient::Id(ChatId(id)),
        Err(_) => Recipient::ChannelUsername(chat.to_string()),
    }
}

/// Maps a teloxide error to the one classification.
pub fn classify(e: RequestError) -> ConnectorError {
    match e {
        RequestError::RetryAfter(s) => ConnectorError::RateLimited {
            retry_after: Some(s.duration()),
            // Telegram does not say which limit; the chat's is the common one.
            whole_bot: false,
            message: format!("Too Many Requests: retry after {}", s.seconds()),
            platform_code: Some("429".into()),
        },
        RequestError::Api(api) => classify_api(api),
        RequestError::MigrateToChatId(id) => ConnectorError::Permanent {
            message: format!(
                "the group was upgraded to a supergroup; its new chat id is {}",
                id.0
            ),
            platform_code: Some("400".into()),
        },
        RequestError::Network(e) => {
            ConnectorError::transient(format!("network: {}", without_url(&e)))
        }
        RequestError::InvalidJson { raw, .. } => {
            let head: String = raw.chars().take(80).collect();
            ConnectorError::transient(format!("unexpected answer from Telegram: {head}"))
        }
        RequestError::Io(e) => ConnectorError::transient(format!("i/o: {e}")),
    }
}

/// reqwest errors print the URL, which holds the bot token: print the kind only.
fn without_url(e: &reqwest012::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "broken response body"
    } else {
        "request failed"
    };
    match e.status() {
        Some(s) => format!("{kind} (HTTP {})", s.as_u16()),
        None => kind.to_string(),
    }
}

fn classify_api(api: ApiError) -> ConnectorError {
    let message = api.to_string();
    match api {
        ApiError::InvalidToken => ConnectorError::Auth {
            message: "Unauthorized: the bot token was rejected".into(),
            platform_code: Some("401".into()),
        },
        ApiError::BotBlocked
        | ApiError::BotKicked
        | ApiError::BotKickedFromSupergroup
        | ApiError::BotKickedFromChannel
        | ApiError::UserDeactivated
        | ApiError::CantInitiateConversation
        | ApiError::CantTalkWithBots
        | ApiError::NotEnoughRightsToPostMessages
        | ApiError::GroupDeactivated => ConnectorError::Permanent {
            message,
            platform_code: Some("403".into()),
        },
        ApiError::TerminatedByOtherGetUpdates | ApiError::CantGetUpdates => {
            ConnectorError::Transient {
                message,
                platform_code: Some("409".into()),
            }
        }
        ApiError::Unknown(text) => {
            let lower = text.to_ascii_lowercase();
            if lower.starts_with("too many requests") {
                ConnectorError::RateLimited {
                    retry_after: None,
                    whole_bot: false,
                    message: text,
                    platform_code: Some("429".into()),
                }
            } else if [
                "internal server error",
                "bad gateway",
                "service unavailable",
                "gateway timeout",
                "timeout",
                "restart",
            ]
            .iter()
            .any(|p| lower.contains(p))
            {
                ConnectorError::Transient {
                    message: text,
                    platform_code: Some("5xx".into()),
                }
            } else if lower.starts_with("unauthorized") {
                ConnectorError::Auth {
                    message: text,
                    platform_code: Some("401".into()),
                }
            } else {
                ConnectorError::Permanent {
                    message: text,
                    platform_code: Some(
                        if lower.starts_with("forbidden") {
                            "403"
                        } else {
                            "400"
                        }
                        .into(),
                    ),
                }
            }
        }
        _ => ConnectorError::Permanent {
            message,
            platform_code: Some("400".into()),
        },
    }
}

fn input_file(
    url: &Option<String>,
    file_id: &Option<String>,
    filename: &Option<String>,
) -> Result<InputFile, ConnectorError> {
    let file = match (url, file_id) {
        (Some(u), _) => InputFile::url(
            url::Url::parse(u).map_err(|e| ConnectorError::permanent(format!("media url: {e}")))?,
        ),
        (None, Some(id)) => InputFile::file_id(FileId(id.clone())),
        (None, None) => {
            return Err(ConnectorError::permanent(
                "media content has neither url nor file_id",
            ));
        }
    };
    Ok(match filename {
        Some(name) => file.file_name(name.clone()),
        None => file,
    })
}

/// Sends one message; a long text goes out as several, the receipt names the first.
pub async fn send(
    api: &teloxide_core::Bot,
    progress: &crate::SplitProgress,
    upload: Option<&crate::ConnectorOptions>,
    request: &OutboundRequest,
) -> Result<SendReceipt, ConnectorError> {
    let chat = recipient(&request.chat.external_chat_id);
    let reply = request
        .reply_to_external_id
        .as_deref()
        .and_then(|id| id.parse::<i32>().ok())
        .map(|id| ReplyParameters::new(MessageId(id)).allow_sending_without_reply());
    let sent: Message = match &request.message.content {
        Content::Text { text } => {
            let parts = crate::split_text(text, MAX_TEXT);
            let external_id = progress
                .send(&request.message.id, parts, |part, first| {
                    let mut r = api.send_message(chat.clone(), part);
                    if first && let Some(rp) = reply.clone() {
                        r = r.reply_parameters(rp);
                    }
                    async move { r.await.map(|m| m.id.0.to_string()).map_err(classify) }
                })
                .await?;
            return Ok(SendReceipt::new(external_id));
        }
        Content::Media {
            kind,
            url,
            file_id,
            caption,
            filename,
            ..
        } => {
            let file = match (upload, url) {
                (Some(options), Some(u)) => {
                    let fetched = crate::fetch_media(u, options).await?;
                    let name = filename.clone().unwrap_or(fetched.file_name);
                    InputFile::memory(fetched.bytes).file_name(name)
                }
                _ => input_file(url, file_id, filename)?,
            };
            macro_rules! media {
                ($call:expr) => {{
                    let mut r = $call;
                    if let Some(c) = caption {
                        r = r.caption(c.clone());
                    }
                    if let Some(rp) = reply.clone() {
                        r = r.reply_parameters(rp);
                    }
                    r.await.map_err(classify)?
                }};
            }
            match kind {
                MediaKind::Image => media!(api.send_photo(chat, file)),
                MediaKind::Document => media!(api.send_document(chat, file)),
                MediaKind::Audio => media!(api.send_audio(chat, file)),
                MediaKind::Video => media!(api.send_video(chat, file)),
            }
        }
        Content::Location {
            latitude,
            longitude,
            ..
        } => {
            let mut r = api.send_location(chat, *latitude, *longitude);
            if let Some(rp) = reply {
                r = r.reply_parameters(rp);
            }
            r.await.map_err(classify)?
        }
        Content::Buttons { text, buttons } => {
            let rows: Vec<Vec<InlineKeyboardButton>> = buttons
                .iter()
                .map(|b| {
                    vec![InlineKeyboardButton::new(
                        b.title.clone(),
                        InlineKeyboardButtonKind::CallbackData(b.id.clone()),
                    )]
                })
                .collect();
            let mut r = api
                .send_message(chat, text.clone())
                .reply_markup(InlineKeyboardMarkup::new(rows));
            if let Some(rp) = reply {
                r = r.reply_parameters(rp);
            }
            r.await.map_err(classify)?
        }
        Content::Template { .. } | Content::ButtonReply { .. } => {
            return Err(ConnectorError::permanent(format!(
                "telegram cannot send {} content",
                request.message.content.type_name()
            )));
        }
    };
    Ok(SendReceipt::new(sent.id.0.to_string()))
}

/// getFile, then streams `{api_base}/file/bot<token>/<path>` (the token stays here).
pub async fn fetch_media(
    api: &teloxide_core::Bot,
    content: &Content,
) -> Result<MediaDownload, ConnectorError> {
    let Content::Media {
        file_id: Some(file_id),
        mime_type,
        filename,
        kind,
        ..
    } = content
    else {
        return Err(ConnectorError::permanent(
            "the message carries no Telegram file",
        ));
    };
    let file = api
        .get_file(FileId(file_id.clone()))
        .await
        .map_err(classify)?;
    let content_type = mime_type.clone().unwrap_or_else(|| {
        match kind {
            MediaKind::Image => "image/jpeg",
            MediaKind::Audio => "audio/ogg",
            MediaKind::Video => "video/mp4",
            MediaKind::Document => "application/octet-stream",
        }
        .to_string()
    });
    let file_name = filename
        .clone()
        .or_else(|| file.path.rsplit('/').next().map(str::to_string));
    let body = api
        .download_file_stream(&file.path)
        .map(|chunk| {
            chunk
                .map(|b| b.to_vec())
                .map_err(|e| ConnectorError::transient(format!("download: {}", without_url(&e))))
        })
        .boxed();
    Ok(MediaDownload {
        content_type,
        file_name,
        length: Some(file.meta.size as u64).filter(|n| *n > 0),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_what_the_caller_should_do() {
        assert!(matches!(
            classify(RequestError::Api(ApiError::InvalidToken)),
            ConnectorError::Auth { .. }
        ));
        assert!(matches!(
            classify(RequestError::Api(ApiError::BotBlocked)),
            ConnectorError::Permanent { .. }
        ));
        assert!(matches!(
            classify(RequestError::Api(ApiError::ChatNotFound)),
            ConnectorError::Permanent { .. }
        ));
        assert!(matches!(
            classify(RequestError::Api(ApiError::Unknown(
                "Internal Server Error".into()
            ))),
            ConnectorError::Transient { .. }
        ));
        let e = classify(RequestError::RetryAfter(
            teloxide_core::types::Seconds::from_seconds(5),
        ));
        assert!(
            matches!(e, ConnectorError::RateLimited { retry_after: Some(d), .. } if d.as_secs() == 5)
        );
    }
}
