//! WhatsApp inbound: Meta's verification handshake, `X-Hub-Signature-256` over the raw body
//! (checked before any parsing, in constant time), and normalization of every message and
//! status of every entry and change of a POST.

use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;
use switchboard_core::connector::*;
use switchboard_core::model::{Content, ConversationKind, MediaKind, MessageError, MessageStatus};
use switchboard_core::secret::constant_time_eq;

use super::WhatsAppConnector;

/// `sha256=<hex>` of HMAC-SHA256(app_secret, body), as Meta signs notifications.
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// True when `header` is `sha256=<hex>` of HMAC-SHA256(app_secret, body).
pub fn signature_valid(app_secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(app_secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl WhatsAppConnector {
    pub(super) async fn webhook(
        &self,
        request: WebhookRequest,
        sink: &dyn InboundSink,
    ) -> WebhookResponse {
        match request.method.as_str() {
            "GET" => self.verification(&request.query),
            "POST" => self.notification(request, sink).await,
            _ => WebhookResponse::text(405, "GET (verification) or POST (notifications) only"),
        }
    }

    /// `hub.mode=subscribe&hub.verify_token=...&hub.challenge=...`: answer the challenge.
    fn verification(&self, query: &str) -> WebhookResponse {
        let mode = query_param(query, "hub.mode");
        let token = query_param(query, "hub.verify_token").unwrap_or_default();
        let challenge = query_param(query, "hub.challenge");
        // A wrong token is 403 whatever else the request holds (PLATFORMS.md: "if the token
        // matches, else 403"); a right one with a malformed request is 400.
        if !constant_time_eq(self.verify_token.expose().as_bytes(), token.as_bytes()) {
            return WebhookResponse::text(403, "verify token mismatch");
        }
        match (mode.as_deref(), challenge) {
            (Some("subscribe"), Some(challenge)) => WebhookResponse::text(200, challenge),
            _ => WebhookResponse::text(
                400,
                "expected hub.mode=subscribe with hub.verify_token and hub.challenge",
            ),
        }
    }

    async fn notification(
        &self,
        request: WebhookRequest,
        sink: &dyn InboundSink,
    ) -> WebhookResponse {
        if !signature_valid(
            self.app_secret.expose().as_bytes(),
            &request.body,
            request.header("x-hub-signature-256"),
        ) {
            return WebhookResponse::text(401, "X-Hub-Signature-256 does not match the body");
        }
        let payload: Payload = match serde_json::from_slice(&request.body) {
            Ok(p) if request.body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => p,
            Ok(_) => {
                return WebhookResponse::text(400, "not a WhatsApp notification: not an object");
            }
            Err(e) => {
                return WebhookResponse::text(400, format!("not a WhatsApp notification: {e}"));
            }
        };
        if payload.object != "whatsapp_business_account" {
            return WebhookResponse::text(
                400,
                format!(
                    "not a WhatsApp notification: object is {:?}, not \"whatsapp_business_account\"",
                    payload.object
                ),
            );
        }
        let events = normalize(&payload, &self.settings.phone_number_id);
        match sink.deliver(&self.bot_id, events).await {
            Ok(_) => WebhookResponse::text(200, "EVENT_RECEIVED"),
            Err(e) => {
                tracing::error!(bot = %self.bot_id, error = %e, "cannot store a WhatsApp notification; Meta will retry");
                WebhookResponse::text(500, "not stored; retry")
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Payload {
    /// Always `whatsapp_business_account`.
    pub object: String,
    #[serde(default)]
    pub entry: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
pub struct Entry {
    #[serde(default)]
    pub changes: Vec<Change>,
}

#[derive(Debug, Deserialize)]
pub struct Change {
    #[serde(default)]
    pub field: String,
    #[serde(default)]
    pub value: Value,
}

#[derive(Debug, Default, Deserialize)]
pub struct Value {
    pub metadata: Option<Metadata>,
    #[serde(default)]
    pub contacts: Vec<WaContact>,
    #[serde(default)]
    pub messages: Vec<serde_json::Value>,
    #[serde(default)]
    pub statuses: Vec<WaStatus>,
}

#[derive(Debug, Deserialize)]
pub struct Metadata {
    pub phone_number_id: String,
}

#[derive(Debug, Deserialize)]
pub struct WaContact {
    pub wa_id: String,
    pub profile: Option<Profile>,
}

#[derive(Debug, Deserialize)]
pub struct Profile {
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct WaStatus {
    pub id: String,
    pub status: String,
    pub timestamp: Option<String>,
    #[serde(default)]
    pub errors: Vec<WaError>,
}

#[derive(Debug, Deserialize)]
pub struct WaError {
    pub code: Option<i64>,
    pub title: Option<String>,
    pub message: Option<String>,
    pub error_data: Option<ErrorData>,
}

#[derive(Debug, Deserialize)]
pub struct ErrorData {
    pub details: Option<String>,
}

fn time(ts: Option<&str>) -> DateTime<Utc> {
    ts.and_then(|t| t.parse::<i64>().ok())
        .and_then(|s| Utc.timestamp_opt(s, 0).single())
        .unwrap_or_else(Utc::now)
}

fn s(v: &serde_json::Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str().map(str::to_string)
}

/// The unified content of an inbound WhatsApp message; `None` for types we do not model
/// (reactions, system notices, unsupported).
fn content(m: &serde_json::Value) -> Option<Content> {
    let kind = m.get("type")?.as_str()?;
    let media = |mk: MediaKind, key: &str| {
        let o = m.get(key)?;
        Some(Content::Media {
            kind: mk,
            url: None,
            file_id: Some(o.get("id")?.as_str()?.to_string()),
            caption: s(o, &["caption"]),
            filename: s(o, &["filename"]),
            mime_type: s(o, &["mime_type"]),
        })
    };
    match kind {
        "text" => Some(Content::Text {
            text: s(m, &["text", "body"])?,
        }),
        "image" => media(MediaKind::Image, "image"),
        "sticker" => media(MediaKind::Image, "sticker"),
        "document" => media(MediaKind::Document, "document"),
        "audio" => media(MediaKind::Audio, "audio"),
        "voice" => media(MediaKind::Audio, "voice"),
        "video" => media(MediaKind::Video, "video"),
        "location" => {
            let l = m.get("location")?;
            Some(Content::Location {
                latitude: l.get("latitude")?.as_f64()?,
                longitude: l.get("longitude")?.as_f64()?,
                name: s(l, &["name"]).or_else(|| s(l, &["address"])),
            })
        }
        "interactive" => {
            let i = m.get("interactive")?;
            let reply = i.get("button_reply").or_else(|| i.get("list_reply"))?;
            Some(Content::ButtonReply {
                id: s(reply, &["id"])?,
                title: s(reply, &["title"]),
            })
        }
        "button" => Some(Content::ButtonReply {
            id: s(m, &["button", "payload"])?,
            title: s(m, &["button", "text"]),
        }),
        _ => None,
    }
}

fn status(w: &WaStatus) -> Option<StatusReport> {
    let status = match w.status.as_str() {
        "sent" => MessageStatus::Sent,
        "delivered" => MessageStatus::Delivered,
        "read" => MessageStatus::Read,
        "failed" => MessageStatus::Failed,
        _ => return None,
    };
    let error = w.errors.first().map(|e| {
        let title = e
            .title
            .clone()
            .or_else(|| e.message.clone())
            .unwrap_or_else(|| "failed".into());
        let details = e.error_data.as_ref().and_then(|d| d.details.clone());
        MessageError {
            code: "permanent".into(),
            message: match details {
                Some(d) => format!("{title}: {d}"),
                None => title,
            },
            platform_code: e.code.map(|c| c.to_string()),
        }
    });
    Some(StatusReport {
        external_id: w.id.clone(),
        status,
        at: time(w.timestamp.as_deref()),
        error,
    })
}

/// Every message and status for `phone_number_id` in the notification, in order.
pub fn normalize(payload: &Payload, phone_number_id: &str) -> Vec<InboundEvent> {
    let mut out = Vec::new();
    for change in payload.entry.iter().flat_map(|e| &e.changes) {
        if change.field != "messages" {
            continue;
        }
        let v = &change.value;
        match &v.metadata {
            Some(m) if m.phone_number_id == phone_number_id => {}
            Some(m) => {
                tracing::warn!(
                    phone_number_id = %m.phone_number_id,
                    "notification for another phone number of the app ignored; give each number its own bot"
                );
                continue;
            }
            None => continue,
        }
        for m in &v.messages {
            let (Some(from), Some(id)) = (s(m, &["from"]), s(m, &["id"])) else {
                continue;
            };
            let Some(content) = content(m) else {
                continue;
            };
            let name = v
                .contacts
                .iter()
                .find(|c| c.wa_id == from)
                .and_then(|c| c.profile.as_ref()?.name.clone());
            // The chat is the contact's number in E.164, so a send `to: {phone}` and a reply
            // in the conversation land in the same conversation.
            out.push(InboundEvent::Message(InboundMessage {
                dedup_key: id.clone(),
                chat: ChatRef {
                    external_chat_id: format!("+{from}"),
                    kind: ConversationKind::Direct,
                    title: name.clone(),
                },
                sender: Some(SenderRef {
                    external_id: format!("+{from}"),
                    name,
                    phone: Some(format!("+{from}")),
                }),
                external_id: Some(id),
                content,
                reply_to_external_id: s(m, &["context", "id"]),
                at: time(m.get("timestamp").and_then(|t| t.as_str())),
            }));
        }
        out.extend(
            v.statuses
                .iter()
                .filter_map(status)
                .map(InboundEvent::Status),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, body: &[u8]) -> String {
        super::sign(secret.as_bytes(), body)
    }

    #[test]
    fn the_signature_covers_the_exact_bytes() {
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let sig = sign("s3cret", body);
        assert!(signature_valid(b"s3cret", body, Some(&sig)));
        let mut flipped = body.to_vec();
        flipped[5] ^= 1;
        assert!(!signature_valid(b"s3cret", &flipped, Some(&sig)));
        assert!(!signature_valid(b"other", body, Some(&sig)));
        assert!(!signature_valid(b"s3cret", body, None));
        assert!(!signature_valid(b"s3cret", body, Some("sha1=abc")));
    }

    #[test]
    fn messages_and_statuses_of_a_post_are_all_normalized() {
        let p: Payload = serde_json::from_value(serde_json::json!({"object":"whatsapp_business_account","entry":[{"id":"W","changes":[{"field":"messages","value":{
            "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"1065"},
            "contacts":[{"profile":{"name":"Ada"},"wa_id":"15551234567"}],
            "messages":[
                {"from":"15551234567","id":"wamid.A1","timestamp":"1700000000","type":"text","text":{"body":"hi"}},
                {"from":"15551234567","id":"wamid.A2","timestamp":"1700000001","type":"image","image":{"id":"M1","mime_type":"image/jpeg","sha256":"x","caption":"pic"},
                 "context":{"from":"15550001111","id":"wamid.OUT"}},
                {"from":"15551234567","id":"wamid.A3","timestamp":"1700000002","type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"y","title":"Yes"}}},
                {"from":"15551234567","id":"wamid.A4","timestamp":"1700000003","type":"reaction","reaction":{"message_id":"x","emoji":"👍"}}
            ],
            "statuses":[{"id":"wamid.OUT","status":"failed","timestamp":"1700000004","recipient_id":"15551234567",
                "errors":[{"code":131047,"title":"Re-engagement message","error_data":{"details":"more than 24 hours"}}]}]
        }}]}]})).unwrap();
        let ev = normalize(&p, "1065");
        assert_eq!(
            ev.len(),
            4,
            "three modelled messages and one status: {ev:?}"
        );
        let InboundEvent::Message(m) = &ev[0] else {
            panic!()
        };
        assert_eq!(m.dedup_key, "wamid.A1");
        assert_eq!(
            m.sender.as_ref().unwrap().phone.as_deref(),
            Some("+15551234567")
        );
        assert_eq!(m.chat.title.as_deref(), Some("Ada"));
        let InboundEvent::Message(img) = &ev[1] else {
            panic!()
        };
        assert_eq!(img.reply_to_external_id.as_deref(), Some("wamid.OUT"));
        assert!(
            matches!(&img.content, Content::Media { file_id: Some(f), caption: Some(c), .. } if f == "M1" && c == "pic")
        );
        let InboundEvent::Message(b) = &ev[2] else {
            panic!()
        };
        assert_eq!(
            b.content,
            Content::ButtonReply {
                id: "y".into(),
                title: Some("Yes".into())
            }
        );
        let InboundEvent::Status(s) = &ev[3] else {
            panic!()
        };
        assert_eq!(s.status, MessageStatus::Failed);
        let e = s.error.as_ref().unwrap();
        assert_eq!(e.platform_code.as_deref(), Some("131047"));
        assert!(e.message.contains("Re-engagement") && e.message.contains("24 hours"));
        assert!(
            normalize(&p, "9999").is_empty(),
            "another number's notification is not ours"
        );
    }
}
