//! What a WhatsApp simulator is started with ([`WhatsAppConfig`]) and the business phone
//! numbers it serves ([`PhoneNumber`]).

use std::time::Duration;

use crate::framework::rate::Rate;

/// Limits and timings of the simulated Cloud API. Defaults follow Meta's documentation
/// (PLATFORMS.md §2) where it gives numbers.
#[derive(Debug, Clone)]
pub struct WhatsAppConfig {
    /// The Graph version the simulator reports; any `v<digits>.<digits>` in a path is accepted.
    pub api_version: String,
    /// Messages per business phone number; over it: code 130429.
    pub throughput: Rate,
    /// Messages from one phone number to one user; over it: code 131056.
    pub pair_rate: Rate,
    /// After an accepted send, when the `sent`, `delivered` and `read` statuses are queued.
    pub status_delays: (Duration, Duration, Duration),
    /// Whether users read what they receive (a `read` status follows `delivered`).
    pub read_receipts: bool,
    /// A webhook POST carries everything that became due within this window after its first
    /// item, up to `batch_max` items.
    pub batch_window: Duration,
    pub batch_max: usize,
    /// Probability (0..=1) that a successfully delivered POST is POSTed again later.
    pub redelivery_rate: f64,
    /// Pause before the first retry of a failed delivery; doubles per retry up to 10 s.
    pub retry_delay: Duration,
}

impl Default for WhatsAppConfig {
    fn default() -> Self {
        WhatsAppConfig {
            api_version: "v21.0".to_owned(),
            throughput: Rate::new(80, Duration::from_secs(1), 80),
            pair_rate: Rate::new(1, Duration::from_secs(6), 45),
            status_delays: (
                Duration::from_millis(50),
                Duration::from_millis(100),
                Duration::from_millis(200),
            ),
            read_receipts: true,
            batch_window: Duration::from_millis(20),
            batch_max: 10,
            redelivery_rate: 0.0,
            retry_delay: Duration::from_millis(200),
        }
    }
}

impl WhatsAppConfig {
    /// The defaults without throughput or pair limits (benchmarks of the gateway itself).
    pub fn without_rate_limits() -> Self {
        WhatsAppConfig {
            throughput: Rate::unlimited(),
            pair_rate: Rate::unlimited(),
            ..Self::default()
        }
    }
}

/// Longest pause between two retries of a failed webhook delivery.
pub(crate) const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// A business phone number of a WhatsApp Business Account, with the credentials of the app
/// that uses it and that app's webhook callback (where Meta POSTs).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PhoneNumber {
    pub phone_number_id: String,
    /// As Meta shows it in webhooks' `metadata`, e.g. `15550001111`.
    pub display_phone_number: String,
    pub waba_id: String,
    /// The system-user token that may act on this phone number.
    pub access_token: String,
    /// Keys `X-Hub-Signature-256` on webhook POSTs.
    pub app_secret: String,
    pub callback_url: Option<String>,
    pub verified_name: String,
}

impl PhoneNumber {
    /// A phone number with made-up display number, WABA id and name.
    pub fn new(phone_number_id: &str, access_token: &str, app_secret: &str) -> Self {
        let digits: String = phone_number_id
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        let tail = format!("{:0>7}", &digits[digits.len().saturating_sub(7)..]);
        PhoneNumber {
            phone_number_id: phone_number_id.to_owned(),
            display_phone_number: format!("1555{tail}"),
            waba_id: format!("{}0", phone_number_id),
            access_token: access_token.to_owned(),
            app_secret: app_secret.to_owned(),
            callback_url: None,
            verified_name: "Switchboard Test".to_owned(),
        }
    }

    /// Sets the webhook callback URL.
    pub fn with_callback(mut self, callback_url: &str) -> Self {
        self.callback_url = Some(callback_url.to_owned());
        self
    }

    /// The display number's digits, as `context.from` carries them.
    pub(crate) fn digits(&self) -> String {
        self.display_phone_number
            .chars()
            .filter(char::is_ascii_digit)
            .collect()
    }
}

impl std::fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneNumber")
            .field("phone_number_id", &self.phone_number_id)
            .field("display_phone_number", &self.display_phone_number)
            .field("waba_id", &self.waba_id)
            .field("access_token", &"***")
            .field("app_secret", &"***")
            .field("callback_url", &self.callback_url)
            .field("verified_name", &self.verified_name)
            .finish()
    }
}
