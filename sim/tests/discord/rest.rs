//! REST: sending messages, Discord's error answers, rate-limit buckets and headers, the global
//! limit, and interactions pressed by users and answered by callback.

use super::*;
use twilight_model::gateway::event::DispatchEvent;

#[tokio::test]
async fn gateway_discovery_needs_the_bot_token() {
    let (sim, _) = sim().await;
    let client = reqwest::Client::new();
    let gateway: Value = client
        .get(api(&sim, "/gateway"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(gateway["url"], sim.gateway_url());
    let bot: Value = client
        .get(api(&sim, "/gateway/bot"))
        .header("authorization", format!("Bot {TOKEN}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bot["shards"], 1);
    assert_eq!(bot["session_start_limit"]["remaining"], 1000);
    let anonymous = client.get(api(&sim, "/gateway/bot")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body, json!({ "message": "401: Unauthorized", "code": 0 }));
}

#[tokio::test]
async fn a_sent_message_is_a_twilight_message_with_bucket_headers() {
    let (sim, bot_id) = sim().await;
    let asked = sim.user_message(CHANNEL, USER, "alice", "hi", None);
    let response = post_message(
        &sim,
        CHANNEL,
        json!({ "content": "hello", "message_reference": { "message_id": asked } }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["x-ratelimit-limit"], "5");
    assert_eq!(headers["x-ratelimit-remaining"], "4");
    for name in ["x-ratelimit-reset", "x-ratelimit-reset-after"] {
        let value: f64 = headers[name].to_str().unwrap().parse().unwrap();
        assert!(value > 0.0, "{name}: {value}");
    }
    assert!(!headers["x-ratelimit-bucket"].is_empty());
    let message: twilight_model::channel::Message = response.json().await.unwrap();
    assert_eq!(message.author.id.to_string(), bot_id);
    assert_eq!(message.content, "hello");
    assert_eq!(message.referenced_message.unwrap().id.to_string(), asked);
    let sent = sim.sent(CHANNEL);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message_id, message.id.to_string());
    assert_eq!(sent[0].body["content"], "hello");
}

#[tokio::test]
async fn invalid_messages_get_discord_errors() {
    let (sim, _) = sim().await;
    let too_long = post_message(&sim, CHANNEL, json!({ "content": "x".repeat(2001) })).await;
    assert_eq!(too_long.status(), 400);
    assert!(too_long.headers().contains_key("x-ratelimit-remaining"));
    let body: Value = too_long.json().await.unwrap();
    assert_eq!(body["code"], 50035);
    assert!(body["errors"]["content"]["_errors"].is_array());
    let empty: Value = post_message(&sim, CHANNEL, json!({ "content": "" }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(empty["code"], 50006);
    let unknown = post_message(&sim, "123", json!({ "content": "hi" })).await;
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body, json!({ "message": "Unknown Channel", "code": 10003 }));
    assert!(sim.sent(CHANNEL).is_empty());
}

#[tokio::test]
async fn the_sixth_quick_send_to_a_channel_is_rate_limited() {
    let (sim, _) = sim().await;
    for n in 0..5 {
        let response = post_message(&sim, CHANNEL, json!({ "content": format!("m{n}") })).await;
        assert_eq!(response.status(), 200);
    }
    let limited = post_message(&sim, CHANNEL, json!({ "content": "m5" })).await;
    assert_eq!(limited.status(), 429);
    let headers = limited.headers().clone();
    assert_eq!(headers["x-ratelimit-scope"], "user");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert!(headers.contains_key("retry-after"));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["message"], "You are being rate limited.");
    assert_eq!(body["global"], false);
    let retry_after = body["retry_after"].as_f64().unwrap();
    assert!(retry_after > 0.0 && retry_after <= 5.0, "{retry_after}");
    assert_eq!(sim.counters().responses_429, 1);
    assert_eq!(sim.sent(CHANNEL).len(), 5);
    let other_channel = post_message(&sim, DM, json!({ "content": "elsewhere" })).await;
    assert_eq!(other_channel.status(), 200, "buckets are per channel");
}

#[tokio::test]
async fn the_global_limit_spans_routes() {
    let (sim, _) = sim_with(DiscordConfig {
        global_per_second: 3,
        ..DiscordConfig::default()
    })
    .await;
    let client = reqwest::Client::new();
    let get_me = || {
        client
            .get(api(&sim, "/gateway/bot"))
            .header("authorization", format!("Bot {TOKEN}"))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(get_me().await.unwrap().status(), 200);
    }
    assert_eq!(
        post_message(&sim, CHANNEL, json!({ "content": "x" }))
            .await
            .status(),
        200
    );
    let limited = get_me().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["x-ratelimit-global"], "true");
    assert_eq!(limited.headers()["x-ratelimit-scope"], "global");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["global"], true);
    assert!(body["retry_after"].as_f64().unwrap() <= 1.0);
    assert_eq!(sim.counters().responses_429, 1);
}

#[tokio::test]
async fn a_button_press_arrives_as_an_interaction_and_takes_one_callback() {
    let (sim, bot_id) = sim().await;
    let (mut client, _) = Client::connect(&sim.gateway_url()).await;
    client.identify(ALL_MESSAGES).await;
    let components = json!([{ "type": 1, "components": [
        { "type": 2, "style": 1, "label": "Yes", "custom_id": "yes" }
    ] }]);
    let posted: Value = post_message(
        &sim,
        CHANNEL,
        json!({ "content": "Continue?", "components": components }),
    )
    .await
    .json()
    .await
    .unwrap();
    let own = client.dispatch("MESSAGE_CREATE").await;
    assert_eq!(own["d"]["author"]["id"], bot_id.as_str());
    let message_id = posted["id"].as_str().unwrap();
    let interaction_id = sim.press_button(CHANNEL, USER, message_id, "yes");
    let (raw, text) = client.raw_payload().await;
    assert_eq!(raw["t"], "INTERACTION_CREATE");
    match twilight_parse(&text) {
        GatewayEvent::Dispatch(_, DispatchEvent::InteractionCreate(interaction)) => {
            assert_eq!(interaction.id.to_string(), interaction_id);
            assert_eq!(interaction.author_id().unwrap().to_string(), USER);
        }
        other => panic!("not INTERACTION_CREATE: {other:?}"),
    }
    let token = raw["d"]["token"].as_str().unwrap();
    let callback = api(
        &sim,
        &format!("/interactions/{interaction_id}/{token}/callback"),
    );
    let http = reqwest::Client::new();
    let ack = json!({ "type": 6 });
    let first = http.post(&callback).json(&ack).send().await.unwrap();
    assert_eq!(first.status(), 204);
    let second: Value = http
        .post(&callback)
        .json(&ack)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["code"], 40060);
}

#[tokio::test]
async fn revoked_tokens_and_injected_faults_answer_like_discord() {
    let (sim, _) = sim().await;
    sim.set_faults(switchboard_sim::Faults {
        error_rate: 1.0,
        ..Default::default()
    });
    let failed = post_message(&sim, CHANNEL, json!({ "content": "x" })).await;
    assert!(matches!(failed.status().as_u16(), 500 | 502));
    assert!(
        sim.sent(CHANNEL).is_empty(),
        "a faulty request has no effect"
    );
    sim.set_faults(switchboard_sim::Faults::default());
    sim.revoke_token(TOKEN);
    let refused = post_message(&sim, CHANNEL, json!({ "content": "x" })).await;
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body, json!({ "message": "401: Unauthorized", "code": 0 }));
    let counters = sim.counters();
    assert_eq!(
        (
            counters.requests,
            counters.responses_5xx,
            counters.responses_4xx
        ),
        (2, 1, 1)
    );
}

#[tokio::test]
async fn the_control_api_plays_users_and_reports_sessions() {
    let (sim, _) = sim().await;
    let (mut client, _) = Client::connect(&sim.gateway_url()).await;
    client.identify(ALL_MESSAGES).await;
    let http = reqwest::Client::new();
    let control = |path: &str| format!("{}/_sim/discord/{path}", sim.base_url());
    let posted: Value = http
        .post(control("messages"))
        .json(
            &json!({ "channel_id": CHANNEL, "author_id": USER, "username": "alice",
                       "content": "from outside" }),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created = client.dispatch("MESSAGE_CREATE").await;
    assert_eq!(created["d"]["id"], posted["message_id"]);
    let sessions: Value = http
        .get(control(&format!("sessions?token={TOKEN}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        sessions,
        json!({ "identifies": 1, "resumes": 0, "connected": 1 })
    );
    let unknown = http
        .post(control("messages"))
        .json(&json!({ "channel_id": "1", "author_id": USER, "username": "a", "content": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}
