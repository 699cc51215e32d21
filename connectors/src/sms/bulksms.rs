//! BulkSMS.com JSON REST v1: `/v1/messages` with Basic auth (TEXT or UNICODE, parts allowed
//! up to the bot's max_segments, our message id as `userSuppliedId`), webhooks that POST arrays
//! of message objects (SENT for delivery reports, RECEIVED for inbound; not signed: protect
//! them with `webhook_secret`), `/v1/profile` for the credits.

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Value, json};
use switchboard_core::connector::{Balance, InboundEvent, SendReceipt, WebhookRequest};
use switchboard_core::error::ConnectorError;
use switchboard_core::model::MessageStatus;
use switchboard_core::secret::Secret;

use super::{Encoding, Outgoing, Provider, Settings, inbound_sms, report};

pub(crate) struct BulkSms {
    http: reqwest::Client,
    base: String,
    username: String,
    password: Secret,
    from: Option<String>,
    max_parts: u32,
    region: Option<phonenumber::country::Id>,
}

impl BulkSms {
    pub fn new(http: reqwest::Client, s: &Settings, password: Secret) -> Self {
        BulkSms {
            http,
            base: s.api_base.clone(),
            username: s.str("username").unwrap_or_default().to_owned(),
            password,
            from: s.str("from").map(str::to_owned),
            max_parts: s.max_segments,
            region: s.region,
        }
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, ConnectorError> {
        let response = request
            .basic_auth(&self.username, Some(self.password.expose()))
            .send()
            .await
            .map_err(|e| crate::network_error("BulkSMS", e))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(body);
        }
        Err(classify(status, &body))
    }
}

/// BulkSMS's problem answers in the one classification.
fn classify(status: u16, body: &Value) -> ConnectorError {
    let title = body["title"].as_str().unwrap_or("");
    let message = format!(
        "BulkSMS {status} {title}: {}",
        body["detail"].as_str().unwrap_or("")
    );
    let platform_code = Some(status.to_string());
    match status {
        403 if title.to_ascii_lowercase().contains("credit") => ConnectorError::InsufficientFunds {
            message,
            platform_code,
        },
        401 => ConnectorError::Auth {
            message,
            platform_code,
        },
        429 => ConnectorError::RateLimited {
            retry_after: None,
            whole_bot: true,
            message,
            platform_code,
        },
        500..=599 => ConnectorError::Transient {
            message,
            platform_code,
        },
        _ => ConnectorError::Permanent {
            message,
            platform_code,
        },
    }
}

#[async_trait]
impl Provider for BulkSms {
    async fn send(&self, sms: &Outgoing<'_>) -> Result<SendReceipt, ConnectorError> {
        let mut message = json!({
            "to": sms.to,
            "body": sms.body,
            "encoding": match sms.encoding { Encoding::Gsm7 => "TEXT", Encoding::Ucs2 => "UNICODE" },
            "longMessageMaxParts": self.max_parts,
            "deliveryReports": "ALL",
            "userSuppliedId": sms.reference,
        });
        if let Some(from) = &self.from {
            message["from"] = json!(from);
        }
        let url = format!("{}/v1/messages", self.base);
        let body = self
            .call(
                self.http
                    .post(url)
                    .query(&[("deduplication-id", sms.reference)])
                    .json(&json!([message])),
            )
            .await?;
        let sent = body
            .as_array()
            .and_then(|a| a.first())
            .ok_or_else(|| ConnectorError::transient("BulkSMS accepted nothing"))?;
        let id = match &sent["id"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(ConnectorError::transient("BulkSMS accepted without an id")),
        };
        Ok(SendReceipt {
            external_id: id,
            cost: sent["creditCost"].as_f64().map(|c| format!("{c} credits")),
        })
    }

    async fn balance(&self) -> Result<Balance, ConnectorError> {
        let body = self
            .call(self.http.get(format!("{}/v1/profile", self.base)))
            .await?;
        let credits = body["credits"]["balance"]
            .as_f64()
            .ok_or_else(|| ConnectorError::transient("BulkSMS answered without credits"))?;
        Ok(Balance {
            amount: credits.to_string(),
            currency: "credits".into(),
            checked_at: Utc::now(),
        })
    }

    fn verify(&self, _request: &WebhookRequest, _url: Option<&str>) -> Result<(), String> {
        Ok(())
    }

    /// One BulkSMS webhook URL may carry both triggers: RECEIVED items are inbound SMS,
    /// SENT items delivery reports, whichever path they were posted to.
    fn parse_inbound(&self, request: &WebhookRequest) -> Result<Vec<InboundEvent>, String> {
        self.parse(request)
    }

    fn parse_status(&self, request: &WebhookRequest) -> Result<Vec<InboundEvent>, String> {
        self.parse(request)
    }
}

impl BulkSms {
    /// The messages of a webhook. An item that cannot be read is skipped (a batch is not
    /// refused for it: BulkSMS would resend the good ones forever); a webhook with nothing
    /// readable is refused. Statuses we do not track (ACCEPTED, SCHEDULED...) are read and
    /// ignored.
    fn parse(&self, request: &WebhookRequest) -> Result<Vec<InboundEvent>, String> {
        let items = items(request)?;
        let read: Vec<Option<Option<InboundEvent>>> = items.iter().map(|m| self.item(m)).collect();
        let unreadable = read.iter().filter(|r| r.is_none()).count();
        if unreadable > 0 && unreadable == items.len() {
            return Err(format!(
                "none of the {} items is a BulkSMS message (id, type RECEIVED with from, or SENT with status)",
                items.len()
            ));
        }
        if unreadable > 0 {
            tracing::warn!(
                skipped = unreadable,
                "BulkSMS webhook items that could not be read were skipped"
            );
        }
        Ok(read.into_iter().flatten().flatten().collect())
    }

    /// One webhook item: `None` when it cannot be read, `Some(None)` when it is a status we
    /// do not track.
    fn item(&self, m: &Value) -> Option<Option<InboundEvent>> {
        let id = id_of(m)?;
        match m["type"].as_str()? {
            "RECEIVED" => {
                let from = m["from"].as_str()?;
                let body = m["body"].as_str().unwrap_or("");
                Some(Some(inbound_sms(&id, from, body, self.region)))
            }
            "SENT" => Some(match m["status"]["type"].as_str()? {
                "DELIVERED" => Some(report(&id, MessageStatus::Delivered, None)),
                "SENT" => Some(report(&id, MessageStatus::Sent, None)),
                "FAILED" => {
                    let code = m["status"]["id"].as_str().unwrap_or("FAILED").to_owned();
                    let subtype = m["status"]["subtype"].as_str().unwrap_or("unknown");
                    let message = format!("BulkSMS reported the message failed: {subtype}");
                    Some(report(&id, MessageStatus::Failed, Some((code, message))))
                }
                _ => None,
            }),
            _ => Some(None),
        }
    }
}

fn items(request: &WebhookRequest) -> Result<Vec<Value>, String> {
    match serde_json::from_slice::<Value>(&request.body) {
        Ok(Value::Array(items)) => Ok(items),
        Ok(item @ Value::Object(_)) => Ok(vec![item]),
        _ => Err("not a BulkSMS webhook (a JSON array of messages)".into()),
    }
}

fn id_of(m: &Value) -> Option<String> {
    match &m["id"] {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insufficient_credits_pause_and_bad_auth_fails() {
        let credits = classify(
            403,
            &json!({"title": "Insufficient Credits", "status": 403}),
        );
        assert!(matches!(credits, ConnectorError::InsufficientFunds { .. }));
        assert!(matches!(
            classify(401, &json!({"title": "Unauthorized"})),
            ConnectorError::Auth { .. }
        ));
        assert!(matches!(
            classify(400, &json!({"title": "Bad request"})),
            ConnectorError::Permanent { .. }
        ));
    }

    #[test]
    fn untracked_statuses_are_ignored_and_unreadable_webhooks_refused() {
        let provider = BulkSms {
            http: reqwest::Client::new(),
            base: String::new(),
            username: "u".into(),
            password: Secret::new("p"),
            from: None,
            max_parts: 1,
            region: None,
        };
        let webhook = |body: Value| WebhookRequest {
            method: "POST".into(),
            subpath: "/status".into(),
            query: String::new(),
            headers: vec![],
            body: body.to_string().into_bytes(),
        };
        let accepted = json!([{"id": "1", "type": "SENT", "status": {"type": "ACCEPTED"}}]);
        assert!(provider.parse(&webhook(accepted)).unwrap().is_empty());
        let mixed = json!([
            {"id": "2", "type": "SENT", "status": {"type": "DELIVERED"}},
            {"id": ["x"]},
        ]);
        assert_eq!(provider.parse(&webhook(mixed)).unwrap().len(), 1);
        assert!(provider.parse(&webhook(json!([{"id": ["x"]}]))).is_err());
    }
}
