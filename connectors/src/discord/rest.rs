//! Discord REST: requests built and validated by twilight-http, sent here over reqwest.
//!
//! Sending them ourselves is what makes the pacing ours: every answer's `X-RateLimit-*`
//! headers go to the bot's [`DiscordPacer`], and a 429 comes back as
//! `ConnectorError::RateLimited` for the dispatcher to wait out, where twilight-http without
//! its limiter would resend at once. Errors map to the one classification: 401 is the
//! token (bot `failed`), 429 rate limited (global or the route's), 5xx and network failures
//! transient, other 4xx permanent with Discord's code and message.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use switchboard_core::error::ConnectorError;
use switchboard_core::rate::{Pacer, RatePolicy};
use switchboard_core::secret::Secret;
use twilight_http::request::{Request, TryIntoRequest};

use super::ratelimit::{BucketHeaders, DiscordPacer};

pub(crate) struct Rest {
    http: reqwest::Client,
    /// Builds and validates requests; never sends (and holds no token).
    builder: Arc<twilight_http::Client>,
    /// `{api_base}/api/v10`
    api: String,
    token: Secret,
    pacer: Mutex<Option<Arc<DiscordPacer>>>,
}

impl Rest {
    pub fn new(
        http: reqwest::Client,
        builder: Arc<twilight_http::Client>,
        api: String,
        token: Secret,
    ) -> Self {
        Rest {
            http,
            builder,
            api,
            token,
            pacer: Mutex::new(None),
        }
    }

    /// The twilight client to build requests with.
    pub fn build(&self) -> &twilight_http::Client {
        &self.builder
    }

    /// A fresh pacer for this bot (one per run of the bot), which this client feeds.
    pub fn pacer(&self, policy: RatePolicy) -> Arc<dyn Pacer> {
        let pacer = Arc::new(DiscordPacer::new(policy));
        *self.pacer.lock().unwrap_or_else(|e| e.into_inner()) = Some(pacer.clone());
        pacer
    }

    fn current_pacer(&self) -> Option<Arc<DiscordPacer>> {
        self.pacer.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Paces a send the dispatcher did not (parts beyond the first of a split text): the
    /// channel's bucket, then the global limit.
    pub async fn pace(&self, channel: &str) {
        if let Some(pacer) = self.current_pacer() {
            let key = switchboard_core::rate::PaceKey {
                chat: channel.to_owned(),
                kind: switchboard_core::model::ConversationKind::Group,
            };
            pacer.acquire(&key).await;
        }
    }

    pub async fn current_user(&self) -> Result<Value, ConnectorError> {
        self.execute(self.builder.current_user(), None).await
    }

    /// `GET /gateway/bot`: the gateway URL and the session start limit.
    pub async fn gateway_bot(&self) -> Result<Value, ConnectorError> {
        self.execute(self.builder.gateway().authed(), None).await
    }

    /// Sends a request; `bucket` names the rate-limit bucket it counts against (the channel
    /// of a message send), whose headers are recorded.
    pub async fn execute(
        &self,
        request: impl TryIntoRequest,
        bucket: Option<&str>,
    ) -> Result<Value, ConnectorError> {
        let request = request.try_into_request().map_err(|e| {
            ConnectorError::permanent(format!("Discord would refuse this request: {e}"))
        })?;
        self.send(request, bucket).await
    }

    async fn send(&self, request: Request, bucket: Option<&str>) -> Result<Value, ConnectorError> {
        let method = reqwest::Method::from_bytes(request.method().name().as_bytes())
            .unwrap_or(reqwest::Method::GET);
        let path = request.path().trim_start_matches('/');
        let mut builder = self.http.request(method, format!("{}/{path}", self.api));
        if request.use_authorization_token() {
            builder = builder.header(
                reqwest::header::AUTHORIZATION,
                format!("Bot {}", self.token.expose()),
            );
        }
        if let Some(headers) = request.headers() {
            for (name, value) in headers {
                builder = builder.header(name.as_str(), value.as_bytes());
            }
        }
        if let Some(body) = request.body() {
            let has_type = request
                .headers()
                .is_some_and(|h| h.contains_key("content-type"));
            if !has_type {
                builder = builder.header(reqwest::header::CONTENT_TYPE, "application/json");
            }
            builder = builder.body(body.to_vec());
        }
        let response = builder.send().await.map_err(network_error)?;
        let status = response.status().as_u16();
        let pacer = bucket.and_then(|key| Some((key, self.current_pacer()?)));
        if let Some((key, pacer)) = &pacer
            && let Some(headers) = BucketHeaders::parse(response.headers())
        {
            pacer.observe(key, headers);
        }
        let success = (200..300).contains(&status);
        // Only an error answer needs its headers after the body (Retry-After, scope).
        let headers = (!success).then(|| response.headers().clone());
        let bytes = response.bytes().await.map_err(network_error)?;
        if success {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes).map_err(|e| {
                ConnectorError::transient(format!("Discord answered {status} with bad JSON: {e}"))
            });
        }
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let error = classify(status, &headers.unwrap_or_default(), &body);
        if let ConnectorError::RateLimited {
            retry_after: Some(wait),
            whole_bot: false,
            ..
        } = &error
            && let Some((key, pacer)) = &pacer
        {
            pacer.exhausted(key, *wait);
        }
        Err(error)
    }
}

fn network_error(e: reqwest::Error) -> ConnectorError {
    crate::network_error("Discord REST", e)
}

/// Maps a Discord error answer to the error classification.
pub(crate) fn classify(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
) -> ConnectorError {
    let code = body["code"].as_u64().map(|c| c.to_string());
    let message = body["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("HTTP {status}"));
    let detail = match first_field_error(&body["errors"], String::new()) {
        Some(field) => format!("{message} ({field})"),
        None => message,
    };
    match status {
        429 => {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            let retry_after = body["retry_after"]
                .as_f64()
                .or_else(|| header("retry-after").and_then(|v| v.trim().parse().ok()))
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s.min(3600.0)));
            let global = body["global"].as_bool() == Some(true)
                || header("x-ratelimit-global") == Some("true")
                || header("x-ratelimit-scope") == Some("global");
            ConnectorError::RateLimited {
                retry_after,
                whole_bot: global,
                message: detail,
                platform_code: Some("429".into()),
            }
        }
        401 => ConnectorError::Auth {
            message: format!("the bot token was refused: {detail}"),
            platform_code: code.or(Some("401".into())),
        },
        500..=599 | 408 => ConnectorError::Transient {
            message: format!("Discord answered {status}: {detail}"),
            platform_code: code,
        },
        _ => ConnectorError::Permanent {
            message: detail,
            platform_code: code.or(Some(status.to_string())),
        },
    }
}

/// The first `{"_errors":[{"code","message"}]}` of Discord's nested form errors, with its path.
fn first_field_error(errors: &Value, path: String) -> Option<String> {
    let map = errors.as_object()?;
    if let Some(first) = map.get("_errors").and_then(|e| e.get(0)) {
        let message = first["message"].as_str().unwrap_or("invalid");
        return Some(if path.is_empty() {
            message.to_owned()
        } else {
            format!("{path}: {message}")
        });
    }
    map.iter().find_map(|(key, value)| {
        let path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        first_field_error(value, path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn discord_errors_map_to_the_classification() {
        let none = reqwest::header::HeaderMap::new();
        let limited = classify(
            429,
            &none,
            &json!({"message": "You are being rate limited.", "retry_after": 0.25, "global": false}),
        );
        assert!(matches!(
            limited,
            ConnectorError::RateLimited { retry_after: Some(d), whole_bot: false, .. } if d == Duration::from_millis(250)
        ));
        let global = classify(429, &none, &json!({"retry_after": 1.0, "global": true}));
        assert!(matches!(
            global,
            ConnectorError::RateLimited {
                whole_bot: true,
                ..
            }
        ));
        assert!(matches!(
            classify(
                401,
                &none,
                &json!({"message": "401: Unauthorized", "code": 0})
            ),
            ConnectorError::Auth { .. }
        ));
        assert!(matches!(
            classify(502, &none, &Value::Null),
            ConnectorError::Transient { .. }
        ));
        let form = classify(
            400,
            &none,
            &json!({"code": 50035, "message": "Invalid Form Body",
                    "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}}}),
        );
        match form {
            ConnectorError::Permanent {
                message,
                platform_code,
            } => {
                assert_eq!(platform_code.as_deref(), Some("50035"));
                assert!(message.contains("content: Must be 2000"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}
