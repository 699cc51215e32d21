//! The Telegram simulator over real HTTP: what a bot sees through reqwest.
//!
//! Helpers and authentication here; polling, webhooks and update shapes in `updates`; sending,
//! flood control and files in `sending`; faults, the request log and the control API in
//! `faults`.

#[path = "telegram/faults.rs"]
mod faults;
#[path = "telegram/sending.rs"]
mod sending;
#[path = "telegram/updates.rs"]
mod updates;

use serde_json::{Value, json};
use switchboard_sim::{TelegramConfig, TelegramSim, UserMessage};

const TOKEN: &str = "123456:AAE-secret";
const USER: i64 = 4242;

async fn start(config: TelegramConfig) -> TelegramSim {
    let sim = TelegramSim::start(config).await.unwrap();
    sim.add_bot(TOKEN, "switchboard_test_bot");
    sim
}

async fn sim() -> TelegramSim {
    start(TelegramConfig::default()).await
}

/// POSTs JSON parameters to a Bot API method; returns (HTTP status, body).
async fn call(sim: &TelegramSim, method: &str, params: Value) -> (u16, Value) {
    call_as(sim, TOKEN, method, params).await
}

async fn call_as(sim: &TelegramSim, token: &str, method: &str, params: Value) -> (u16, Value) {
    let url = format!("{}/bot{token}/{method}", sim.base_url());
    let response = reqwest::Client::new()
        .post(url)
        .json(&params)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A user has written, so the bot may post in their private chat.
fn user_writes(sim: &TelegramSim, text: &str) -> i64 {
    sim.user_message(TOKEN, UserMessage::text(USER, USER, text))
}

#[tokio::test]
async fn get_me_describes_the_bot_and_a_bad_token_is_unauthorized() {
    let sim = sim().await;
    let (status, body) = call(&sim, "getMe", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["ok"], true);
    assert_eq!(body["result"]["id"], 123456);
    assert_eq!(body["result"]["is_bot"], true);
    assert_eq!(body["result"]["username"], "switchboard_test_bot");
    assert!(body["result"]["can_join_groups"].is_boolean());

    let (status, body) = call_as(&sim, "999:nope", "getMe", json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
    );
}

#[tokio::test]
async fn method_names_are_case_insensitive_and_unknown_methods_are_404() {
    let sim = sim().await;
    let url = format!("{}/bot{TOKEN}/GETME", sim.base_url());
    let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(body["ok"], true);

    let (status, body) = call(&sim, "sendTelepathy", json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 404, "description": "Not Found"})
    );
}

#[tokio::test]
async fn a_revoked_token_is_unauthorized_everywhere() {
    let sim = sim().await;
    sim.revoke_token(TOKEN);
    let (status, _) = call(&sim, "getMe", json!({})).await;
    assert_eq!(status, 401);
    let (status, _) = call(&sim, "getUpdates", json!({})).await;
    assert_eq!(status, 401);
}
