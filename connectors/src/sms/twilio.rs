//! Twilio Programmable Messaging: `Messages.json` with Basic auth, status callbacks and
//! inbound SMS signed with `X-Twilio-Signature`, `Balance.json`.

use async_trait::async_trait;
use base64::Engine;
use chrono::Utc;
use hmac::{KeyInit, Mac};
use serde_json::Value;
use switchboard_core::connector::{
    Balance, InboundEvent, SendReceipt, WebhookRequest, WebhookResponse,
};
use switchboard_core::error::ConnectorError;
use switchboard_core::model::MessageStatus;
use switchboard_core::secret::Secret;

use super::{Outgoing, Provider, Settings, field, form, inbound_sms, report};

/// `X-Twilio-Signature`: base64(HMAC-SHA1(auth token, URL + every POST parameter's name and
/// value, sorted by name)).
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub(crate) struct Twilio {
    http: reqwest::Client,
    /// `{api_base}/2010-04-01/Accounts/{sid}`
    account: String,
    account_sid: String,
    auth_token: Secret,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    region: Option<phonenumber::country::Id>,
}

impl Twilio {
    pub fn new(http: reqwest::Client, s: &Settings, auth_token: Secret) -> Self {
        let account_sid = s.str("account_sid").unwrap_or_default().to_owned();
        Twilio {
            http,
            account: format!("{}/2010-04-01/Accounts/{account_sid}", s.api_base),
            account_sid,
            auth_token,
            from: s.str("from").map(str::to_owned),
            messaging_service_sid: s.str("messaging_service_sid").map(str::to_owned),
            region: s.region,
        }
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, ConnectorError> {
        let response = request
            .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
            .send()
            .await
            .map_err(|e| crate::network_error("Twilio", e))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(body);
        }
        Err(classify(status, &body))
    }
}

/// Twilio's error answers in the one classification.
fn classify(status: u16, body: &Value) -> ConnectorError {
    let code = body["code"].as_u64();
    let platform_code = Some(code.map_or(status.to_string(), |c| c.to_string()));
    let message = format!(
        "Twilio {}: {}",
        code.map_or(status.to_string(), |c| c.to_string()),
        body["message"].as_str().unwrap_or("no message")
    );
    match (status, code) {
        (_, Some(20429)) | (429, _) => ConnectorError::RateLimited {
            retry_after: None,
            whole_bot: true,
            message,
            platform_code,
        },
        // The sender's queue is full: wait for it to drain.
        (_, Some(21611)) => ConnectorError::RateLimited {
            retry_after: Some(std::time::Duration::from_secs(30)),
            whole_bot: true,
            message,
            platform_code,
        },
        (401, _) | (_, Some(20003)) => ConnectorError::Auth {
            message,
            platform_code,
        },
        // The sending number or service is not this account's.
        (_, Some(21212 | 21606 | 21659 | 21705)) => ConnectorError::Config(message),
        (500..=599, _) => ConnectorError::Transient {
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
impl Provider for Twilio {
    async fn send(&self, sms: &Outgoing<'_>) -> Result<SendReceipt, ConnectorError> {
        let mut params: Vec<(&str, &str)> = vec![("To", sms.to), ("Body", sms.body)];
        match (&self.messaging_service_sid, &self.from) {
            (Some(service), _) => params.push(("MessagingServiceSid", service)),
            (None, Some(from)) => params.push(("From", from)),
            (None, None) => return Err(ConnectorError::Config("from: is required".into())),
        }
        if let Some(callback) = &sms.status_callback {
            params.push(("StatusCallback", callback));
        }
        let body = self
            .call(
                self.http
                    .post(format!("{}/Messages.json", self.account))
                    .form(&params),
            )
            .await?;
        let sid = body["sid"].as_str().ok_or_else(|| {
            ConnectorError::transient("Twilio accepted the message without a sid")
        })?;
        let cost = match (body["price"].as_str(), body["price_unit"].as_str()) {
            (Some(price), Some(unit)) => Some(format!("{unit} {}", price.trim_start_matches('-'))),
            _ => None,
        };
        Ok(SendReceipt {
            external_id: sid.to_owned(),
            cost,
        })
    }

    async fn balance(&self) -> Result<Balance, ConnectorError> {
        let body = self
            .call(self.http.get(format!("{}/Balance.json", self.account)))
            .await?;
        Ok(Balance {
            amount: body["balance"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| body["balance"].to_string()),
            currency: body["currency"].as_str().unwrap_or("USD").to_owned(),
            checked_at: Utc::now(),
        })
    }

    fn verify(&self, request: &WebhookRequest, url: Option<&str>) -> Result<(), String> {
        let presented = request
            .header("x-twilio-signature")
            .ok_or("X-Twilio-Signature is missing")?;
        let url = url.ok_or("the request names no host to check the Twilio signature against")?;
        let expected = signature(self.auth_token.expose(), url, &form(&request.body));
        if switchboard_core::secret::constant_time_eq(
            expected.as_bytes(),
            presented.trim().as_bytes(),
        ) {
            Ok(())
        } else {
            Err("X-Twilio-Signature does not match the URL and parameters".into())
        }
    }

    fn parse_inbound(&self, request: &WebhookRequest) -> Result<Vec<InboundEvent>, String> {
        let f = form(&request.body);
        let id = field(&f, "MessageSid")
            .or_else(|| field(&f, "SmsSid"))
            .ok_or("MessageSid is missing")?;
        let from = field(&f, "From").ok_or("From is missing")?;
        let body = f
            .iter()
            .find(|(k, _)| k == "Body")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        Ok(vec![inbound_sms(id, from, body, self.region)])
    }

    fn parse_status(&self, request: &WebhookRequest) -> Result<Vec<InboundEvent>, String> {
        let f = form(&request.body);
        let id = field(&f, "MessageSid")
            .or_else(|| field(&f, "SmsSid"))
            .ok_or("MessageSid is missing")?;
        let status = field(&f, "MessageStatus")
            .or_else(|| field(&f, "SmsStatus"))
            .ok_or("MessageStatus is missing")?;
        let failure = || {
            let code = field(&f, "ErrorCode").unwrap_or("unknown").to_owned();
            let message = format!("Twilio reported the message {status} (error {code})");
            Some((code, message))
        };
        let event = match status {
            "sent" => report(id, MessageStatus::Sent, None),
            "delivered" => report(id, MessageStatus::Delivered, None),
            "read" => report(id, MessageStatus::Read, None),
            "undelivered" | "failed" | "canceled" => report(id, MessageStatus::Failed, failure()),
            // queued, accepted, scheduled, sending: nothing new.
            _ => return Ok(Vec::new()),
        };
        Ok(vec![event])
    }

    fn inbound_answer(&self) -> WebhookResponse {
        WebhookResponse {
            status: 200,
            content_type: "text/xml",
            // Exactly the empty TwiML document Twilio documents for "no reply".
            body: b"<Response></Response>".to_vec(),
        }
    }

    /// Twilio answers a send with an authentication error when the account is suspended for
    /// an exhausted balance.
    fn may_be_funds(&self, error: &ConnectorError) -> bool {
        matches!(error, ConnectorError::Auth { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_url_and_sorted_parameters() {
        // Twilio's documented example parameters; the value computed independently with
        // Python's hmac over url + sorted name/value pairs.
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    #[test]
    fn errors_classify_by_twilio_code() {
        let e = |code: u64, status: u16| {
            classify(status, &serde_json::json!({"code": code, "message": "m"}))
        };
        assert!(matches!(e(21211, 400), ConnectorError::Permanent { .. }));
        assert!(matches!(e(21611, 400), ConnectorError::RateLimited { .. }));
        assert!(matches!(e(20429, 429), ConnectorError::RateLimited { .. }));
        assert!(matches!(e(20003, 401), ConnectorError::Auth { .. }));
        assert!(matches!(e(21606, 400), ConnectorError::Config(_)));
        assert!(matches!(e(0, 503), ConnectorError::Transient { .. }));
    }
}
