//! WhatsApp outbound: unified content to Graph `/messages` bodies, media downloads through
//! the Graph media endpoints, and the classification of Meta's error codes.

use futures::StreamExt;
use serde_json::{Value, json};
use switchboard_core::connector::{MediaDownload, OutboundRequest, SendReceipt};
use switchboard_core::error::ConnectorError;
use switchboard_core::model::{Content, MediaKind};

use super::{MAX_TEXT, WhatsAppConnector};

/// Meta's codes that mean "slow down": throughput, pair rate, app and account call limits,
/// the spam (quality) limit on the number.
const RATE_LIMITED: &[i64] = &[130429, 131056, 4, 80007, 613, 131048];
/// The pair rate lets about one message per 6 s through to one user once its burst is spent.
const PAIR_RATE_WAIT: std::time::Duration = std::time::Duration::from_secs(6);

/// Maps a Graph error answer to the one classification.
pub fn classify(http_status: u16, body: &Value) -> ConnectorError {
    let e = &body["error"];
    let code = e["code"].as_i64();
    let title = e["message"].as_str().unwrap_or("request failed");
    let message = match e["error_data"]["details"].as_str() {
        Some(d) => format!("{title}: {d}"),
        None => title.to_string(),
    };
    let platform_code = Some(
        code.map(|c| c.to_string())
            .unwrap_or_else(|| http_status.to_string()),
    );
    match code {
        Some(c) if RATE_LIMITED.contains(&c) => ConnectorError::RateLimited {
            retry_after: (c == 131056).then_some(PAIR_RATE_WAIT),
            // The pair rate is one recipient's; the others are the number's or the app's.
            whole_bot: c != 131056,
            message,
            platform_code,
        },
        Some(190) => ConnectorError::Auth {
            message,
            platform_code,
        },
        _ if http_status == 401 => ConnectorError::Auth {
            message,
            platform_code,
        },
        _ if http_status >= 500
            || e["is_transient"].as_bool() == Some(true)
            || matches!(code, Some(1 | 2 | 131000 | 131016)) =>
        {
            ConnectorError::Transient {
                message,
                platform_code,
            }
        }
        _ if http_status == 429 => ConnectorError::RateLimited {
            retry_after: None,
            whole_bot: true,
            message,
            platform_code,
        },
        _ => ConnectorError::Permanent {
            message,
            platform_code,
        },
    }
}

/// The Graph `/messages` body for one piece of content (texts already split).
fn body(to: &str, content: &Content, reply_to: Option<&str>) -> Result<Value, ConnectorError> {
    let mut b = match content {
        Content::Text { text } => {
            json!({"type": "text", "text": {"preview_url": false, "body": text}})
        }
        Content::Media {
            kind,
            url,
            file_id,
            caption,
            filename,
            ..
        } => {
            let key = match kind {
                MediaKind::Image => "image",
                MediaKind::Document => "document",
                MediaKind::Audio => "audio",
                MediaKind::Video => "video",
            };
            let mut media = match (url, file_id) {
                (Some(u), _) => json!({"link": u}),
                (None, Some(id)) => json!({"id": id}),
                (None, None) => {
                    return Err(ConnectorError::permanent(
                        "media content has neither url nor file_id",
                    ));
                }
            };
            if let Some(c) = caption
                && *kind != MediaKind::Audio
            {
                media["caption"] = json!(c);
            }
            if let Some(f) = filename
                && *kind == MediaKind::Document
            {
                media["filename"] = json!(f);
            }
            json!({"type": key, key: media})
        }
        Content::Location {
            latitude,
            longitude,
            name,
        } => {
            let mut l = json!({"latitude": latitude, "longitude": longitude});
            if let Some(n) = name {
                l["name"] = json!(n);
            }
            json!({"type": "location", "location": l})
        }
        Content::Buttons { text, buttons } => json!({"type": "interactive", "interactive": {
            "type": "button",
            "body": {"text": text},
            "action": {"buttons": buttons.iter().map(|b| json!({"type": "reply", "reply": {"id": b.id, "title": b.title}})).collect::<Vec<_>>()}
        }}),
        Content::Template {
            name,
            language,
            params,
        } => {
            let mut t = json!({"name": name, "language": {"code": language}});
            if !params.is_empty() {
                t["components"] = json!([{"type": "body", "parameters": params.iter().map(|p| json!({"type": "text", "text": p})).collect::<Vec<_>>()}]);
            }
            json!({"type": "template", "template": t})
        }
        Content::ButtonReply { .. } => {
            return Err(ConnectorError::permanent(
                "button_reply content is inbound only",
            ));
        }
    };
    b["messaging_product"] = json!("whatsapp");
    b["recipient_type"] = json!("individual");
    b["to"] = json!(to.trim_start_matches('+'));
    if let Some(id) = reply_to {
        b["context"] = json!({"message_id": id});
    }
    Ok(b)
}

fn network(e: reqwest::Error) -> ConnectorError {
    crate::network_error("network", e)
}

impl WhatsAppConnector {
    async fn answer(&self, resp: reqwest::Response) -> Result<Value, ConnectorError> {
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(network)?;
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| json!({"raw": text.chars().take(120).collect::<String>()}));
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err(classify(status, &v))
        }
    }

    pub(super) async fn graph_get(&self, url: &str) -> Result<Value, ConnectorError> {
        let resp = self
            .http
            .get(url)
            .bearer_auth(self.access_token.expose())
            .send()
            .await
            .map_err(network)?;
        self.answer(resp).await
    }

    async fn post_message(&self, body: &Value) -> Result<String, ConnectorError> {
        let url = format!(
            "{}/{}/messages",
            self.settings.graph, self.settings.phone_number_id
        );
        let resp = self
            .http
            .post(url)
            .bearer_auth(self.access_token.expose())
            .json(body)
            .send()
            .await
            .map_err(network)?;
        let v = self.answer(resp).await?;
        v["messages"][0]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ConnectorError::transient("the answer named no message id"))
    }

    /// Sends one message; a long text goes out as several, the receipt names the first.
    pub(super) async fn send_message(
        &self,
        request: &OutboundRequest,
    ) -> Result<SendReceipt, ConnectorError> {
        let to = &request.chat.external_chat_id;
        let reply = request.reply_to_external_id.as_deref();
        let external_id = match &request.message.content {
            Content::Text { text } => {
                let parts = crate::split_text(text, MAX_TEXT);
                self.split
                    .send(&request.message.id, parts, |part, first| async move {
                        let b = body(
                            to,
                            &Content::Text { text: part },
                            if first { reply } else { None },
                        )?;
                        self.post_message(&b).await
                    })
                    .await?
            }
            other => self.post_message(&body(to, other, reply)?).await?,
        };
        Ok(SendReceipt::new(external_id))
    }

    /// Media metadata (`GET /{media_id}`), then the bytes from Meta's short-lived URL, both
    /// with the access token, which never leaves the gateway.
    pub(super) async fn download(
        &self,
        content: &Content,
    ) -> Result<MediaDownload, ConnectorError> {
        let Content::Media {
            file_id: Some(id),
            filename,
            ..
        } = content
        else {
            return Err(ConnectorError::permanent(
                "the message carries no WhatsApp media",
            ));
        };
        let meta = self
            .graph_get(&format!("{}/{id}", self.settings.graph))
            .await?;
        let url = meta["url"].as_str().ok_or_else(|| {
            ConnectorError::permanent("the media has no download URL (expired or deleted)")
        })?;
        let resp = self
            .http
            .get(url)
            .bearer_auth(self.access_token.expose())
            .send()
            .await
            .map_err(network)?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(classify(status, &v));
        }
        let content_type = meta["mime_type"]
            .as_str()
            .map(str::to_string)
            .or_else(|| {
                resp.headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "application/octet-stream".into());
        let length = meta["file_size"].as_u64().or(resp.content_length());
        let body = resp
            .bytes_stream()
            .map(|chunk| chunk.map(|b| b.to_vec()).map_err(network))
            .boxed();
        Ok(MediaDownload {
            content_type,
            file_name: filename.clone(),
            length,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_codes_are_classified_as_the_issue_says() {
        let err = |code: i64| json!({"error": {"message": "x", "code": code}});
        assert!(matches!(
            classify(400, &err(130429)),
            ConnectorError::RateLimited {
                whole_bot: true,
                ..
            }
        ));
        assert!(matches!(
            classify(400, &err(131056)),
            ConnectorError::RateLimited {
                whole_bot: false,
                retry_after: Some(PAIR_RATE_WAIT),
                ..
            }
        ));
        assert!(matches!(
            classify(400, &err(131048)),
            ConnectorError::RateLimited {
                whole_bot: true,
                ..
            }
        ));
        assert!(matches!(
            classify(400, &err(4)),
            ConnectorError::RateLimited { .. }
        ));
        assert!(matches!(
            classify(400, &err(80007)),
            ConnectorError::RateLimited { .. }
        ));
        assert!(matches!(
            classify(401, &err(190)),
            ConnectorError::Auth { .. }
        ));
        for c in [131047, 131026, 100] {
            assert!(
                matches!(classify(400, &err(c)), ConnectorError::Permanent { .. }),
                "{c}"
            );
        }
        assert!(matches!(
            classify(500, &err(2)),
            ConnectorError::Transient { .. }
        ));
        assert!(matches!(
            classify(502, &json!({"raw": "<html>"})),
            ConnectorError::Transient { .. }
        ));
    }

    #[test]
    fn bodies_follow_the_graph_shapes() {
        let b = body(
            "+15551234567",
            &Content::Text { text: "hi".into() },
            Some("wamid.X"),
        )
        .unwrap();
        assert_eq!(b["to"], "15551234567");
        assert_eq!(b["text"]["body"], "hi");
        assert_eq!(b["context"]["message_id"], "wamid.X");
        let t = body(
            "1",
            &Content::Template {
                name: "hello".into(),
                language: "en_US".into(),
                params: vec!["Ada".into()],
            },
            None,
        )
        .unwrap();
        assert_eq!(
            t["template"]["components"][0]["parameters"][0]["text"],
            "Ada"
        );
        let i = body(
            "1",
            &Content::Buttons {
                text: "Pick".into(),
                buttons: vec![switchboard_core::model::Button {
                    id: "y".into(),
                    title: "Yes".into(),
                }],
            },
            None,
        )
        .unwrap();
        assert_eq!(i["interactive"]["action"]["buttons"][0]["reply"]["id"], "y");
    }
}
