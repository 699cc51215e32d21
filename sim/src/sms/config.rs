//! What an SMS simulator is started with ([`SmsConfig`]), the providers it plays
//! ([`Provider`]) and the mistakes in driving it ([`SmsSimError`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

/// Throughput, prices and timings of the simulated providers.
#[derive(Debug, Clone)]
pub struct SmsConfig {
    /// Segments per second one Twilio sender drains (a long code: 1; a messaging service
    /// drains this times its number count).
    pub twilio_segments_per_second: f64,
    /// Messages per second one Africa's Talking account drains.
    pub at_messages_per_second: f64,
    /// Messages per second one BulkSMS account drains.
    pub bulksms_messages_per_second: f64,
    /// From leaving the queue (`sent`) to the final delivery report.
    pub delivery_delay: Duration,
    /// Send every delivery report twice (at-least-once delivery, as real providers may).
    pub redeliver_reports: bool,
    /// USD per Twilio segment.
    pub twilio_price: f64,
    /// KES per Africa's Talking segment.
    pub at_price: f64,
    /// BulkSMS credits per part.
    pub bulksms_credits_per_part: f64,
    /// Messages a Twilio sender may have waiting; over it: 21611 at create.
    pub twilio_queue_limit: usize,
    /// Requests of one Twilio account in flight at once; over it: 20429 (HTTP 429).
    pub twilio_concurrency: usize,
    /// Attempts per webhook (the first POST included) before giving up.
    pub webhook_attempts: u32,
    /// Pause before the first retry of a failed webhook POST; doubles per retry.
    pub retry_delay: Duration,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            twilio_segments_per_second: 1.0,
            at_messages_per_second: 50.0,
            bulksms_messages_per_second: 50.0,
            delivery_delay: Duration::from_millis(50),
            redeliver_reports: false,
            twilio_price: 0.0079,
            at_price: 0.8,
            bulksms_credits_per_part: 1.0,
            twilio_queue_limit: 14_400,
            twilio_concurrency: 100,
            webhook_attempts: 4,
            retry_delay: Duration::from_millis(100),
        }
    }
}

impl SmsConfig {
    /// The defaults without throughput, queue or concurrency limits (benchmarks of the gateway
    /// itself).
    pub fn without_rate_limits() -> Self {
        SmsConfig {
            twilio_segments_per_second: f64::INFINITY,
            at_messages_per_second: f64::INFINITY,
            bulksms_messages_per_second: f64::INFINITY,
            twilio_queue_limit: usize::MAX,
            twilio_concurrency: usize::MAX,
            ..Self::default()
        }
    }
}

/// One of the simulated SMS providers. Serialized (and parsed) as `twilio`,
/// `africastalking`, `bulksms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Twilio,
    AfricasTalking,
    BulkSms,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Twilio => "twilio",
            Provider::AfricasTalking => "africastalking",
            Provider::BulkSms => "bulksms",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = SmsSimError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "twilio" => Ok(Provider::Twilio),
            "africastalking" | "africas_talking" | "at" => Ok(Provider::AfricasTalking),
            "bulksms" | "bulk_sms" => Ok(Provider::BulkSms),
            _ => Err(SmsSimError::UnknownProvider(s.to_owned())),
        }
    }
}

/// A request to the simulator's own API that cannot be carried out (a test's mistake).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmsSimError {
    #[error("no {0} account {1} was added to the simulator")]
    UnknownAccount(Provider, String),
    #[error("unknown SMS provider {0:?} (twilio, africastalking, bulksms)")]
    UnknownProvider(String),
    #[error("no webhook URL is set for {0} {1}")]
    NoWebhookUrl(Provider, String),
}
