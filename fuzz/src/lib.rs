//! What every fuzz target shares: a connector built once per process from test settings, a
//! sink that stores nothing, and the rule every answer must keep: a webhook never panics and
//! never answers 5xx to what a caller sent (bad input is the caller's error, a 4xx).

use std::sync::{Arc, Once, OnceLock};

use async_trait::async_trait;
use serde_json::{Map, Value};
use switchboard_core::StoreError;
use switchboard_core::connector::{
    Connector, Credentials, InboundEvent, InboundSink, IngestOutcome, WebhookRequest,
};
use switchboard_core::model::{Bot, BotState, Platform};
use switchboard_core::secret::Secret;

pub const PUBLIC_URL: &str = "https://gateway.example";
pub const BOT_ID: &str = "fuzz";

/// A connector of `platform` with `settings` (a JSON object) and `credentials`.
pub fn connector(
    platform: Platform,
    settings: Value,
    credentials: &[(&str, &str)],
) -> Arc<dyn Connector> {
    let settings: Map<String, Value> = match settings {
        Value::Object(m) => m,
        _ => panic!("settings must be an object"),
    };
    let now = chrono::Utc::now();
    let bot = Bot {
        id: BOT_ID.into(),
        tenant: "acme".into(),
        platform,
        enabled: true,
        settings,
        credential_fields: credentials.iter().map(|(k, _)| (*k).to_owned()).collect(),
        state: BotState::Running,
        state_reason: None,
        last_error: None,
        last_seen_at: None,
        source: "config".into(),
        created_at: now,
        updated_at: now,
    };
    let creds: Credentials = credentials
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Secret::new(*v)))
        .collect();
    // The gateway picks rustls' provider at start-up; so must anything building its clients.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let registry = switchboard_connectors::registry();
    let factory = registry.get(platform).expect("platform compiled in");
    // Some clients (twilight's rate limiter) spawn their task when built.
    let _runtime = runtime().enter();
    let problems = factory.validate(&bot.settings, &creds);
    assert!(problems.is_empty(), "test bot settings: {problems:?}");
    factory
        .build(&bot, creds, Some(PUBLIC_URL))
        .unwrap_or_else(|e| panic!("building the test connector: {e}"))
}

/// Stores nothing; answers as a store would.
struct Discard;

#[async_trait]
impl InboundSink for Discard {
    async fn deliver(
        &self,
        _bot_id: &str,
        events: Vec<InboundEvent>,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        Ok(events
            .iter()
            .enumerate()
            .map(|(i, e)| match e {
                InboundEvent::Status(_) => IngestOutcome::StatusUnmatched,
                _ => IngestOutcome::Stored(format!("m{i}")),
            })
            .collect())
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// Hands `request` to the connector's webhook, checks the answer is not a 5xx and returns
/// its status.
pub fn webhook(connector: &Arc<dyn Connector>, request: WebhookRequest) -> u16 {
    let answer = runtime().block_on(connector.handle_webhook(request, &Discard));
    assert!(
        answer.status < 500,
        "a webhook answered {} to input: {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    answer.status
}

/// A target's whole run: first its valid `seed` must be accepted (otherwise every input
/// stops before the parser, at a wrong route, secret or signature, and the fuzzing proves
/// nothing), then `data` goes through the same `one`.
pub fn fuzz_webhook(data: &[u8], seed: &[u8], one: fn(&[u8]) -> u16) {
    static SEED: Once = Once::new();
    SEED.call_once(|| {
        let status = one(seed);
        assert!(
            (200..300).contains(&status),
            "the valid seed was answered {status}: the target does not reach the parser"
        );
    });
    one(data);
}

/// The SMS callback route a fuzz input's first byte picks: delivery report or inbound SMS.
pub fn sms_route(first: u8) -> &'static str {
    if first % 2 == 0 {
        "/status"
    } else {
        "/inbound"
    }
}

/// The webhook secret of the Africa's Talking and BulkSMS test bots.
pub const CALLBACK_SECRET: &str = "fuzz-callback-secret";

/// A callback authenticated by the bot's webhook secret in the query (Africa's Talking,
/// BulkSMS): the first byte picks the route and the body's type (form or JSON), the rest is
/// the body.
pub fn secret_callback(bot: &Arc<dyn Connector>, data: &[u8]) -> u16 {
    let Some((&first, body)) = data.split_first() else {
        return 0;
    };
    let content_type = if first & 2 == 0 {
        "application/x-www-form-urlencoded"
    } else {
        "application/json"
    };
    let headers = vec![("content-type".into(), content_type.into())];
    let query = format!("secret={CALLBACK_SECRET}");
    webhook(bot, post(sms_route(first), &query, headers, body))
}

/// A POST with `body` and `headers` (names lowercased).
pub fn post(
    subpath: &str,
    query: &str,
    headers: Vec<(String, String)>,
    body: &[u8],
) -> WebhookRequest {
    WebhookRequest {
        method: "POST".into(),
        subpath: subpath.into(),
        query: query.into(),
        headers,
        body: body.to_vec(),
    }
}
