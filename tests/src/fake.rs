//! A scriptable connector double, registered as the `telegram` platform in tests.
//!
//! Behaviour per bot comes from its settings (`panic_runs`, `fail_runs`, `fatal`,
//! `probe_fatal`) and from the [`FakeWorld`] the test holds (scripted send outcomes, send
//! delay). The world records every run start and every send, in order. Webhooks: a JSON body
//! `{"update_id", "chat", "user", "text"}` with header `x-fake-secret` equal to the bot's
//! `webhook_secret` (compared in constant time), stored before the 200.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use switchboard_core::connector::*;
use switchboard_core::error::ConnectorError;
use switchboard_core::model::{Bot, Content, ConversationKind, Platform};
use switchboard_core::rate::{Rate, RatePolicy};
use switchboard_core::secret::constant_time_eq;

/// What the next send of a bot does.
#[derive(Debug, Clone)]
pub enum SendOutcome {
    Ok,
    Transient,
    Permanent,
    RateLimited(Duration),
    Auth,
}

/// One send the fake platform received.
#[derive(Debug, Clone)]
pub struct Sent {
    pub bot: String,
    pub chat: String,
    pub text: String,
    pub message_id: String,
    pub at: Instant,
}

#[derive(Default)]
pub struct FakeWorld {
    pub runs: Mutex<HashMap<String, Vec<Instant>>>,
    /// Runs that started and have not returned yet, per bot.
    pub active: Mutex<HashMap<String, i64>>,
    pub sent: Mutex<Vec<Sent>>,
    pub attempts: Mutex<Vec<(String, Instant)>>,
    script: Mutex<HashMap<String, VecDeque<SendOutcome>>>,
    delay: Mutex<HashMap<String, Duration>>,
    counter: Mutex<u64>,
}

impl FakeWorld {
    pub fn new() -> Arc<FakeWorld> {
        Arc::new(FakeWorld::default())
    }

    pub fn factory(self: &Arc<Self>) -> Arc<dyn ConnectorFactory> {
        Arc::new(FakeFactory(self.clone()))
    }

    /// The next sends of `bot` do these, in order; after them, sends succeed.
    pub fn script(&self, bot: &str, outcomes: Vec<SendOutcome>) {
        self.script
            .lock()
            .unwrap()
            .insert(bot.into(), outcomes.into());
    }

    pub fn set_send_delay(&self, bot: &str, d: Duration) {
        self.delay.lock().unwrap().insert(bot.into(), d);
    }

    pub fn runs(&self, bot: &str) -> Vec<Instant> {
        self.runs
            .lock()
            .unwrap()
            .get(bot)
            .cloned()
            .unwrap_or_default()
    }

    pub fn active_runs(&self, bot: &str) -> i64 {
        self.active.lock().unwrap().get(bot).copied().unwrap_or(0)
    }

    pub fn sent_to(&self, bot: &str) -> Vec<Sent> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.bot == bot)
            .cloned()
            .collect()
    }

    /// Send attempts (successful or not) of `message_id`.
    pub fn attempts_of(&self, message_id: &str) -> usize {
        self.attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| m == message_id)
            .count()
    }
}

struct FakeFactory(Arc<FakeWorld>);

impl ConnectorFactory for FakeFactory {
    fn platform(&self) -> Platform {
        Platform::Telegram
    }

    fn validate(
        &self,
        settings: &serde_json::Map<String, serde_json::Value>,
        credentials: &Credentials,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !credentials.contains_key("token") {
            out.push(("token".into(), "is required".into()));
        }
        if let Some(mode) = settings.get("mode")
            && mode != "polling"
            && mode != "webhook"
        {
            out.push((
                "mode".into(),
                format!("must be \"polling\" or \"webhook\", got {mode}"),
            ));
        }
        out
    }

    fn check_content(&self, content: &Content, _options: &SendOptions) -> Result<(), String> {
        match content {
            Content::Template { .. } => Err("templates are a WhatsApp feature".into()),
            _ => Ok(()),
        }
    }

    fn rate_policy(&self, settings: &serde_json::Map<String, serde_json::Value>) -> RatePolicy {
        let per_chat = settings
            .get("per_chat_per_second")
            .and_then(|v| v.as_u64())
            .unwrap_or(1000) as u32;
        RatePolicy {
            per_bot: Some(Rate::per_second(1000)),
            per_chat: Some(Rate::per_second(per_chat)),
            per_group: None,
            default_retry_after: Duration::from_millis(100),
        }
    }

    fn build(
        &self,
        bot: &Bot,
        credentials: Credentials,
        _public_url: Option<&str>,
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        let n = |k: &str| bot.settings.get(k).and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        Ok(Arc::new(FakeConnector {
            world: self.0.clone(),
            bot_id: bot.id.clone(),
            panic_runs: n("panic_runs"),
            fail_runs: n("fail_runs"),
            fatal: bot
                .settings
                .get("fatal")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            probe_fatal: bot
                .settings
                .get("probe_fatal")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            credentials,
        }))
    }
}

struct FakeConnector {
    world: Arc<FakeWorld>,
    bot_id: String,
    panic_runs: usize,
    fail_runs: usize,
    fatal: bool,
    probe_fatal: bool,
    credentials: Credentials,
}

#[async_trait]
impl Connector for FakeConnector {
    async fn run(&self, ctx: RunContext) -> Result<(), ConnectorError> {
        let run_no = {
            let mut runs = self.world.runs.lock().unwrap();
            let v = runs.entry(self.bot_id.clone()).or_default();
            v.push(Instant::now());
            v.len()
        };
        if self.fatal {
            return Err(ConnectorError::Auth {
                message: "Unauthorized: the token was rejected".into(),
                platform_code: Some("401".into()),
            });
        }
        if run_no <= self.panic_runs {
            panic!("fake connector panics on run {run_no}");
        }
        if run_no <= self.panic_runs + self.fail_runs {
            tokio::time::sleep(Duration::from_millis(10)).await;
            return Err(ConnectorError::transient(format!(
                "connection reset on run {run_no}"
            )));
        }
        ctx.health.running();
        *self
            .world
            .active
            .lock()
            .unwrap()
            .entry(self.bot_id.clone())
            .or_default() += 1;
        ctx.cancel.cancelled().await;
        *self
            .world
            .active
            .lock()
            .unwrap()
            .entry(self.bot_id.clone())
            .or_default() -= 1;
        Ok(())
    }

    async fn send(&self, request: &OutboundRequest) -> Result<SendReceipt, ConnectorError> {
        self.world
            .attempts
            .lock()
            .unwrap()
            .push((request.message.id.clone(), Instant::now()));
        let delay = self.world.delay.lock().unwrap().get(&self.bot_id).copied();
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let outcome = self
            .world
            .script
            .lock()
            .unwrap()
            .get_mut(&self.bot_id)
            .and_then(|q| q.pop_front())
            .unwrap_or(SendOutcome::Ok);
        match outcome {
            SendOutcome::Ok => {}
            SendOutcome::Transient => {
                return Err(ConnectorError::transient("HTTP 502 Bad Gateway"));
            }
            SendOutcome::Permanent => {
                return Err(ConnectorError::Permanent {
                    message: "Bad Request: chat not found".into(),
                    platform_code: Some("400".into()),
                });
            }
            SendOutcome::RateLimited(d) => {
                return Err(ConnectorError::RateLimited {
                    retry_after: Some(d),
                    whole_bot: false,
                    message: "Too Many Requests".into(),
                    platform_code: Some("429".into()),
                });
            }
            SendOutcome::Auth => return Err(ConnectorError::auth("Unauthorized")),
        }
        let text = match &request.message.content {
            Content::Text { text } => text.clone(),
            other => other.type_name().to_string(),
        };
        let id = {
            let mut c = self.world.counter.lock().unwrap();
            *c += 1;
            *c
        };
        self.world.sent.lock().unwrap().push(Sent {
            bot: self.bot_id.clone(),
            chat: request.chat.external_chat_id.clone(),
            text,
            message_id: request.message.id.clone(),
            at: Instant::now(),
        });
        Ok(SendReceipt::new(id.to_string()))
    }

    async fn probe(&self) -> Result<(), ConnectorError> {
        if self.probe_fatal {
            Err(ConnectorError::auth("Unauthorized (probe)"))
        } else {
            Ok(())
        }
    }

    async fn handle_webhook(
        &self,
        request: WebhookRequest,
        sink: &dyn InboundSink,
    ) -> WebhookResponse {
        let Some(secret) = self.credentials.get("webhook_secret") else {
            return WebhookResponse::text(404, "webhooks are off for this bot");
        };
        let presented = request.header("x-fake-secret").unwrap_or("");
        if !constant_time_eq(secret.expose().as_bytes(), presented.as_bytes()) {
            return WebhookResponse::text(401, "bad secret");
        }
        let v: serde_json::Value = match serde_json::from_slice(&request.body) {
            Ok(v) => v,
            Err(e) => return WebhookResponse::text(400, format!("bad JSON: {e}")),
        };
        let (Some(update), Some(chat), Some(text)) = (
            v["update_id"].as_i64(),
            v["chat"].as_str(),
            v["text"].as_str(),
        ) else {
            return WebhookResponse::text(400, "update_id, chat and text are required");
        };
        let event = InboundEvent::Message(InboundMessage {
            dedup_key: format!("u{update}"),
            chat: ChatRef {
                external_chat_id: chat.to_string(),
                kind: ConversationKind::Direct,
                title: None,
            },
            sender: Some(SenderRef {
                external_id: v["user"].as_str().unwrap_or(chat).to_string(),
                name: v["name"].as_str().map(str::to_string),
                phone: None,
            }),
            external_id: Some(format!("m{update}")),
            content: Content::Text {
                text: text.to_string(),
            },
            reply_to_external_id: None,
            at: Utc::now(),
        });
        match sink.deliver(&self.bot_id, vec![event]).await {
            Ok(_) => WebhookResponse::json(200, &serde_json::json!({"ok": true})),
            Err(e) => WebhookResponse::text(500, format!("not stored: {e}")),
        }
    }
}
