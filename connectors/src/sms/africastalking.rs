//! Africa's Talking: `/version1/messaging` (apiKey header, form fields, a status per
//! recipient with its cost), delivery-report and incoming-message callbacks (form POSTs, not
//! signed: protect them with `webhook_secret`), `/version1/user` for the balance.

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use switchboard_core::connector::{Balance, InboundEvent, SendReceipt, WebhookRequest};
use switchboard_core::error::ConnectorError;
use switchboard_core::model::MessageStatus;
use switchboard_core::secret::Secret;

use super::{Outgoing, Provider, Settings, field, form, inbound_sms, report};

pub(crate) struct AfricasTalking {
    http: reqwest::Client,
    base: String,
    username: String,
    api_key: Secret,
    from: Option<String>,
    region: Option<phonenumber::country::Id>,
}

impl AfricasTalking {
    pub fn new(http: reqwest::Client, s: &Settings, api_key: Secret) -> Self {
        AfricasTalking {
            http,
            base: s.api_base.clone(),
            username: s.str("username").unwrap_or_default().to_owned(),
            api_key,
            from: s.str("from").map(str::to_owned),
            region: s.region,
        }
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, ConnectorError> {
        let response = request
            .header("apiKey", self.api_key.expose())
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| crate::network_error("Africa's Talking", e))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        match status {
            200..=299 => serde_json::from_str(&text).map_err(|_| {
                ConnectorError::transient(format!(
                    "Africa's Talking answered {status} without JSON"
                ))
            }),
            401 => Err(ConnectorError::Auth {
                message: format!(
                    "Africa's Talking refused the username or apiKey: {}",
                    text.trim()
                ),
                platform_code: Some("401".into()),
            }),
            429 => Err(ConnectorError::RateLimited {
                retry_after: None,
                whole_bot: true,
                message: "Africa's Talking: too many requests".into(),
                platform_code: Some("429".into()),
            }),
            500..=599 => Err(ConnectorError::Transient {
                message: format!("Africa's Talking answered {status}"),
                platform_code: Some(status.to_string()),
            }),
            _ => Err(ConnectorError::Permanent {
                message: format!("Africa's Talking answered {status}: {}", text.trim()),
                platform_code: Some(status.to_string()),
            }),
        }
    }
}

/// A recipient's statusCode in the one classification (`None`: accepted).
fn recipient_error(code: u64, status: &str, number: &str) -> Option<ConnectorError> {
    let platform_code = Some(code.to_string());
    let message = format!("Africa's Talking {code} {status} for {number}");
    match code {
        100..=102 => None,
        405 => Some(ConnectorError::InsufficientFunds {
            message,
            platform_code,
        }),
        402 => Some(ConnectorError::Config(format!(
            "{message}: the sender id `from` is not allowed on this account"
        ))),
        500..=502 => Some(ConnectorError::Transient {
            message,
            platform_code,
        }),
        _ => Some(ConnectorError::Permanent {
            message,
            platform_code,
        }),
    }
}

#[async_trait]
impl Provider for AfricasTalking {
    async fn send(&self, sms: &Outgoing<'_>) -> Result<SendReceipt, ConnectorError> {
        let mut params: Vec<(&str, &str)> = vec![
            ("username", &self.username),
            ("to", sms.to),
            ("message", sms.body),
            ("bulkSMSMode", "1"),
            ("enqueue", "1"),
        ];
        if let Some(from) = &self.from {
            params.push(("from", from));
        }
        let body = self
            .call(
                self.http
                    .post(format!("{}/version1/messaging", self.base))
                    .form(&params),
            )
            .await?;
        let recipient = body["SMSMessageData"]["Recipients"]
            .as_array()
            .and_then(|r| r.first())
            .ok_or_else(|| {
                let said = body["SMSMessageData"]["Message"]
                    .as_str()
                    .unwrap_or("no recipients");
                ConnectorError::permanent(format!("Africa's Talking sent to no one: {said}"))
            })?;
        let code = recipient["statusCode"].as_u64().unwrap_or(0);
        let status = recipient["status"].as_str().unwrap_or("unknown");
        if let Some(e) = recipient_error(code, status, sms.to) {
            return Err(e);
        }
        let id = recipient["messageId"]
            .as_str()
            .filter(|id| *id != "None")
            .ok_or_else(|| {
                ConnectorError::transient("Africa's Talking accepted without a messageId")
            })?;
        Ok(SendReceipt {
            external_id: id.to_owned(),
            cost: recipient["cost"]
                .as_str()
                .filter(|c| *c != "0")
                .map(str::to_owned),
        })
    }

    async fn balance(&self) -> Result<Balance, ConnectorError> {
        let url = format!("{}/version1/user", self.base);
        let body = self
            .call(self.http.get(url).query(&[("username", &self.username)]))
            .await?;
        let raw = body["UserData"]["balance"].as_str().ok_or_else(|| {
            ConnectorError::transient("Africa's Talking answered without a balance")
        })?;
        let (currency, amount) = raw.trim().split_once(' ').unwrap_or(("", raw));
        Ok(Balance {
            amount: amount.trim().to_owned(),
            currency: currency.to_owned(),
            checked_at: Utc::now(),
        })
    }

    fn verify(&self, _request: &WebhookRequest, _url: Option<&str>) -> Result<(), String> {
        Ok(())
    }

    fn parse_inbound(&self, request: &WebhookRequest) -> Result<Vec<InboundEvent>, String> {
        let f = form(&request.body);
        let id = field(&f, "id").ok_or("id is missing")?;
        let from = field(&f, "from").ok_or("from is missing")?;
        let text = f
            .iter()
            .find(|(k, _)| k == "text")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        Ok(vec![inbound_sms(id, from, text, self.region)])
    }

    fn parse_status(&self, request: &WebhookRequest) -> Result<Vec<InboundEvent>, String> {
        let f = form(&request.body);
        let id = field(&f, "id").ok_or("id is missing")?;
        let status = field(&f, "status").ok_or("status is missing")?;
        let event = match status {
            "Success" => report(id, MessageStatus::Delivered, None),
            "Sent" | "Submitted" | "Buffered" => report(id, MessageStatus::Sent, None),
            "Rejected" | "Failed" => {
                let reason = field(&f, "failureReason").unwrap_or("unknown");
                let message = format!("Africa's Talking reported the message {status}: {reason}");
                report(
                    id,
                    MessageStatus::Failed,
                    Some((reason.to_owned(), message)),
                )
            }
            _ => return Ok(Vec::new()),
        };
        Ok(vec![event])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipient_codes_classify() {
        assert!(recipient_error(101, "Success", "+254711000000").is_none());
        assert!(matches!(
            recipient_error(405, "InsufficientBalance", "+254711000000"),
            Some(ConnectorError::InsufficientFunds { .. })
        ));
        let invalid = recipient_error(403, "InvalidPhoneNumber", "+25471").unwrap();
        assert_eq!(invalid.platform_code(), Some("403"));
        assert!(matches!(invalid, ConnectorError::Permanent { .. }));
        assert!(matches!(
            recipient_error(501, "GatewayError", "x"),
            Some(ConnectorError::Transient { .. })
        ));
    }
}
