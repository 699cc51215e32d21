//! The one set of metric names, shared by every platform and part (Vector-style: a noun,
//! a verb in the past tense, `_total` for counters). Per-bot metrics carry `bot` and
//! `platform` labels.

pub const MESSAGES_RECEIVED: &str = "switchboard_messages_received_total";
pub const MESSAGES_SENT: &str = "switchboard_messages_sent_total";
pub const MESSAGES_FAILED: &str = "switchboard_messages_failed_total";
pub const MESSAGES_DUPLICATE: &str = "switchboard_messages_duplicate_total";
pub const RATE_LIMITED: &str = "switchboard_rate_limited_total";
pub const SEND_RETRIES: &str = "switchboard_send_retries_total";
pub const SEND_SECONDS: &str = "switchboard_send_duration_seconds";
pub const BOT_RESTARTS: &str = "switchboard_bot_restarts_total";
/// Gauge: 1 for the bot's current state, 0 for the others (label `state`).
pub const BOT_STATE: &str = "switchboard_bot_state";
pub const OUTBOX_DEPTH: &str = "switchboard_outbox_queue_depth";
pub const FEED_CLIENTS: &str = "switchboard_feed_clients";
pub const FEED_LAGGED: &str = "switchboard_feed_lagged_total";
/// Outbound webhooks: deliveries answered 2xx, failed attempts, deliveries given up on.
pub const WEBHOOK_DELIVERIES: &str = "switchboard_webhook_deliveries_total";
pub const WEBHOOK_FAILURES: &str = "switchboard_webhook_failures_total";
pub const WEBHOOK_DEAD_LETTERS: &str = "switchboard_webhook_dead_letters_total";
pub const HTTP_REQUEST_SECONDS: &str = "switchboard_http_request_duration_seconds";
pub const STORE_COMMIT_SECONDS: &str = "switchboard_store_commit_duration_seconds";
pub const STORE_BATCH_SIZE: &str = "switchboard_store_batch_size";
pub const WEBHOOK_REJECTED: &str = "switchboard_webhook_rejected_total";
