//! The gateway session: READY, heartbeats, dispatches by intent, resume with replay, op 7,
//! op 9 and close codes.

use super::*;
use twilight_model::gateway::event::DispatchEvent;

#[tokio::test]
async fn identify_gets_ready_with_resume_url_then_guild_create() {
    let (sim, bot_id) = sim().await;
    let (mut client, hello) = Client::connect(&sim.gateway_url()).await;
    assert_eq!(hello["d"]["heartbeat_interval"], 2000);
    client
        .send(
            json!({ "op": 2, "d": { "token": TOKEN, "intents": ALL_MESSAGES,
            "properties": { "os": "linux", "browser": "x", "device": "x" } } }),
        )
        .await;
    let (ready, text) = client.raw_payload().await;
    assert_eq!(
        (ready["t"].as_str(), ready["s"].as_u64()),
        (Some("READY"), Some(1))
    );
    assert_eq!(ready["d"]["resume_gateway_url"], sim.gateway_url());
    assert_eq!(ready["d"]["user"]["id"], bot_id.as_str());
    assert_eq!(ready["d"]["application"]["id"], bot_id.as_str());
    assert_eq!(
        ready["d"]["guilds"],
        json!([{ "id": GUILD, "unavailable": true }])
    );
    match twilight_parse(&text) {
        GatewayEvent::Dispatch(1, DispatchEvent::Ready(ready)) => {
            assert_eq!(ready.user.name, "switchboard");
            assert_eq!(ready.resume_gateway_url, sim.gateway_url());
        }
        other => panic!("not READY: {other:?}"),
    }
    let (guild, text) = client.raw_payload().await;
    assert_eq!(
        (guild["t"].as_str(), guild["s"].as_u64()),
        (Some("GUILD_CREATE"), Some(2))
    );
    assert!(matches!(
        twilight_parse(&text),
        GatewayEvent::Dispatch(2, DispatchEvent::GuildCreate(_))
    ));
    assert_eq!(sim.identifies(TOKEN), 1);
}

#[tokio::test]
async fn heartbeats_are_acked_until_the_connection_turns_zombie() {
    let (sim, _) = sim().await;
    let (mut client, _) = Client::connect(&sim.gateway_url()).await;
    client.identify(ALL_MESSAGES).await;
    client.send(json!({ "op": 1, "d": 2 })).await;
    assert_eq!(client.payload().await["op"], 11);
    sim.stop_acking_heartbeats(TOKEN, true);
    client.send(json!({ "op": 1, "d": 2 })).await;
    let silence = tokio::time::timeout(Duration::from_millis(300), client.ws.next()).await;
    assert!(silence.is_err(), "a zombie connection must not ACK");
}

#[tokio::test]
async fn user_messages_arrive_as_message_create_with_increasing_seq() {
    let (sim, bot_id) = sim().await;
    let (mut client, _) = Client::connect(&sim.gateway_url()).await;
    client.identify(GUILD_MESSAGES | DIRECT_MESSAGES).await;
    sim.user_message(CHANNEL, USER, "alice", "hello", None);
    let first = client.dispatch("MESSAGE_CREATE").await;
    assert_eq!(first["s"], 3);
    assert_eq!(first["d"]["guild_id"], GUILD);
    assert_eq!(first["d"]["content"], "", "no MESSAGE_CONTENT intent");
    assert!(first["d"]["member"].is_object());
    let mention = format!("<@{bot_id}> help");
    sim.user_message(CHANNEL, USER, "alice", &mention, None);
    let second = client.dispatch("MESSAGE_CREATE").await;
    assert_eq!(second["s"], 4);
    assert_eq!(
        second["d"]["content"],
        mention.as_str(),
        "mentions are visible"
    );
    let dm = sim.user_message(DM, USER, "alice", "in private", None);
    let (_, text) = client.raw_payload().await;
    match twilight_parse(&text) {
        GatewayEvent::Dispatch(5, DispatchEvent::MessageCreate(message)) => {
            assert_eq!(message.id.to_string(), dm);
            assert_eq!(message.content, "in private");
            assert!(message.guild_id.is_none());
            assert_eq!(message.author.id.to_string(), USER);
        }
        other => panic!("not MESSAGE_CREATE: {other:?}"),
    }
}

#[tokio::test]
async fn edits_and_replies_parse_with_twilight() {
    let (sim, _) = sim().await;
    let (mut client, _) = Client::connect(&sim.gateway_url()).await;
    client.identify(ALL_MESSAGES).await;
    let first = sim.user_message(CHANNEL, USER, "alice", "hello", None);
    client.dispatch("MESSAGE_CREATE").await;
    sim.user_edits(CHANNEL, &first, "hello, edited");
    let (_, text) = client.raw_payload().await;
    match twilight_parse(&text) {
        GatewayEvent::Dispatch(_, DispatchEvent::MessageUpdate(update)) => {
            assert_eq!(update.content, "hello, edited");
            assert!(update.edited_timestamp.is_some());
        }
        other => panic!("not MESSAGE_UPDATE: {other:?}"),
    }
    sim.user_message(CHANNEL, USER, "alice", "a reply", Some(&first));
    let (reply, text) = client.raw_payload().await;
    assert_eq!(reply["d"]["type"], 19);
    assert_eq!(
        reply["d"]["message_reference"]["message_id"],
        first.as_str()
    );
    assert!(matches!(
        twilight_parse(&text),
        GatewayEvent::Dispatch(_, DispatchEvent::MessageCreate(m))
            if m.referenced_message.is_some()
    ));
}

#[tokio::test]
async fn a_dropped_socket_resumes_with_the_missed_messages_then_resumed() {
    let (sim, _) = sim().await;
    let (mut client, _) = Client::connect(&sim.gateway_url()).await;
    let ready = client.identify(ALL_MESSAGES).await;
    let session_id = ready["d"]["session_id"].as_str().unwrap().to_owned();
    let resume_url = ready["d"]["resume_gateway_url"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.drop_socket(TOKEN);
    assert_eq!(client.closed().await, None, "dropped without a close frame");
    let missed = sim.user_message(CHANNEL, USER, "alice", "while you were away", None);

    let (mut client, _) = Client::connect(&resume_url).await;
    client
        .send(json!({ "op": 6, "d": { "token": TOKEN, "session_id": session_id, "seq": 2 } }))
        .await;
    let replayed = client.payload().await;
    assert_eq!(
        (replayed["t"].as_str(), replayed["s"].as_u64()),
        (Some("MESSAGE_CREATE"), Some(3))
    );
    assert_eq!(replayed["d"]["id"], missed.as_str());
    let resumed = client.payload().await;
    assert_eq!(
        (resumed["t"].as_str(), resumed["s"].as_u64()),
        (Some("RESUMED"), Some(4))
    );
    assert_eq!((sim.identifies(TOKEN), sim.resumes(TOKEN)), (1, 1));
    sim.user_message(CHANNEL, USER, "alice", "back", None);
    assert_eq!(client.dispatch("MESSAGE_CREATE").await["s"], 5);
}

#[tokio::test]
async fn resuming_an_unknown_session_gets_invalid_session_false() {
    let (sim, _) = sim().await;
    let (mut client, _) = Client::connect(&sim.gateway_url()).await;
    client
        .send(json!({ "op": 6, "d": { "token": TOKEN, "session_id": "nope", "seq": 1 } }))
        .await;
    let invalid = client.payload().await;
    assert_eq!(
        (invalid["op"].as_u64(), invalid["d"].as_bool()),
        (Some(9), Some(false))
    );
    assert_eq!(sim.resumes(TOKEN), 0);
}

#[tokio::test]
async fn a_bad_or_revoked_token_closes_with_4004() {
    let (sim, _) = sim().await;
    let (mut client, _) = Client::connect(&sim.gateway_url()).await;
    client
        .send(json!({ "op": 2, "d": { "token": "wrong", "intents": 0, "properties": {} } }))
        .await;
    assert_eq!(client.closed().await, Some(4004));

    let (mut client, _) = Client::connect(&sim.gateway_url()).await;
    client.identify(ALL_MESSAGES).await;
    sim.revoke_token(TOKEN);
    assert_eq!(client.closed().await, Some(4004));
}

#[tokio::test]
async fn commanded_reconnect_invalid_session_and_close_codes_reach_the_client() {
    let (sim, _) = sim().await;
    let (mut client, _) = Client::connect(&sim.gateway_url()).await;
    client.identify(ALL_MESSAGES).await;
    sim.send_reconnect(TOKEN);
    assert_eq!(client.payload().await["op"], 7);
    sim.invalidate_session(TOKEN, true);
    assert_eq!(
        client.payload().await,
        json!({ "op": 9, "d": true, "s": null, "t": null })
    );
    sim.close_with(TOKEN, 4000);
    assert_eq!(client.closed().await, Some(4000));

    sim.refuse_identify(true);
    let (mut client, _) = Client::connect(&sim.gateway_url()).await;
    client
        .send(json!({ "op": 2, "d": { "token": TOKEN, "intents": 0, "properties": {} } }))
        .await;
    assert_eq!(client.payload().await["d"], false);
    assert_eq!(sim.identifies(TOKEN), 1);
}

#[tokio::test]
async fn oversized_payloads_and_floods_are_closed() {
    let (sim, _) = sim_with(DiscordConfig {
        events_per_minute: 3,
        ..DiscordConfig::default()
    })
    .await;
    let (mut client, _) = Client::connect(&sim.gateway_url()).await;
    client
        .send(json!({ "op": 3, "d": { "padding": "x".repeat(5000) } }))
        .await;
    assert_eq!(client.closed().await, Some(4002));

    let (mut client, _) = Client::connect(&sim.gateway_url()).await;
    for _ in 0..4 {
        client.send(json!({ "op": 1, "d": null })).await;
    }
    assert_eq!(client.closed().await, Some(4008));
}

#[tokio::test]
async fn a_session_that_missed_more_than_its_buffer_cannot_resume() {
    let (sim, _) = sim_with(DiscordConfig {
        resume_buffer: 2,
        ..DiscordConfig::default()
    })
    .await;
    let (mut client, _) = Client::connect(&sim.gateway_url()).await;
    let ready = client.identify(ALL_MESSAGES).await;
    let session_id = ready["d"]["session_id"].as_str().unwrap().to_owned();
    sim.drop_socket(TOKEN);
    client.closed().await;
    for n in 0..3 {
        sim.user_message(CHANNEL, USER, "alice", &format!("m{n}"), None);
    }
    let (mut client, _) = Client::connect(&sim.gateway_url()).await;
    client
        .send(json!({ "op": 6, "d": { "token": TOKEN, "session_id": session_id, "seq": 2 } }))
        .await;
    assert_eq!(client.payload().await["op"], 9);
    assert_eq!(sim.resumes(TOKEN), 0);
}
