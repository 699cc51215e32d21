//! The Discord simulator over real sockets: a bare tokio-tungstenite client on the gateway,
//! reqwest on REST, and twilight-model (the types our connector uses) parsing what arrives.
//!
//! Helpers here; the gateway session (READY, heartbeats, dispatches, resume, op 7/9, close
//! codes) in `gateway`; REST (messages, errors, rate limits, interactions) in `rest`;
//! Ed25519-signed HTTP interactions in `interactions`.

#[path = "discord/gateway.rs"]
mod gateway;
#[path = "discord/interactions.rs"]
mod interactions;
#[path = "discord/rest.rs"]
mod rest;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_sim::{DiscordConfig, DiscordSim};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use twilight_model::gateway::event::{GatewayEvent, GatewayEventDeserializer};

const TOKEN: &str = "MTIzNDU2Nzg5.bot-token";
const GUILD: &str = "900000000000000001";
const CHANNEL: &str = "900000000000000010";
const DM: &str = "900000000000000020";
const USER: &str = "800000000000000001";
const GUILD_MESSAGES: u64 = 1 << 9;
const DIRECT_MESSAGES: u64 = 1 << 12;
const MESSAGE_CONTENT: u64 = 1 << 15;
const ALL_MESSAGES: u64 = GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT;

/// A simulator with one bot, one guild text channel and one DM channel.
async fn sim_with(config: DiscordConfig) -> (DiscordSim, String) {
    let sim = DiscordSim::start(config).await.unwrap();
    let bot_id = sim.add_bot(TOKEN, "switchboard");
    sim.add_guild_channel(GUILD, CHANNEL, "general");
    sim.add_dm_channel(DM, USER);
    (sim, bot_id)
}

async fn sim() -> (DiscordSim, String) {
    sim_with(DiscordConfig::default()).await
}

/// What the gateway did next.
#[derive(Debug)]
enum Next {
    Payload(Value, String),
    Closed(Option<u16>),
    /// The stream ended without a close frame.
    Gone,
}

/// A bare gateway client.
struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Connects to `url` as twilight does and reads Hello.
    async fn connect(url: &str) -> (Client, Value) {
        let (ws, _) = tokio_tungstenite::connect_async(format!("{url}/?v=10&encoding=json"))
            .await
            .unwrap();
        let mut client = Client { ws };
        let hello = client.payload().await;
        assert_eq!(hello["op"], 10, "{hello}");
        (client, hello)
    }

    async fn send(&mut self, payload: Value) {
        self.ws
            .send(Message::Text(payload.to_string().into()))
            .await
            .unwrap();
    }

    async fn next(&mut self) -> Next {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("nothing from the gateway within 5 s");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let value = serde_json::from_str(text.as_str()).unwrap();
                    return Next::Payload(value, text.to_string());
                }
                Some(Ok(Message::Close(frame))) => {
                    return Next::Closed(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Next::Gone,
            }
        }
    }

    async fn payload(&mut self) -> Value {
        self.raw_payload().await.0
    }

    async fn raw_payload(&mut self) -> (Value, String) {
        match self.next().await {
            Next::Payload(value, text) => (value, text),
            other => panic!("expected a payload, got {other:?}"),
        }
    }

    /// Reads until a dispatch of type `event`, checking every frame parses with twilight.
    async fn dispatch(&mut self, event: &str) -> Value {
        loop {
            let (value, text) = self.raw_payload().await;
            twilight_parse(&text);
            if value["op"] == 0 && value["t"] == event {
                return value;
            }
        }
    }

    async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.next().await {
                Next::Closed(code) => return code,
                Next::Gone => return None,
                Next::Payload(..) => continue,
            }
        }
    }

    /// Identifies and reads READY (and the GUILD_CREATE of the one guild).
    async fn identify(&mut self, intents: u64) -> Value {
        self.send(json!({ "op": 2, "d": {
            "token": TOKEN, "intents": intents,
            "properties": { "os": "linux", "browser": "twilight", "device": "twilight" },
        }}))
        .await;
        let ready = self.dispatch("READY").await;
        self.dispatch("GUILD_CREATE").await;
        ready
    }
}

/// Parses a gateway frame as twilight-gateway does, panicking on failure.
fn twilight_parse(text: &str) -> GatewayEvent {
    use serde::de::DeserializeSeed;
    let seed = GatewayEventDeserializer::from_json(text).expect("op not found");
    let mut json = serde_json::Deserializer::from_str(text);
    seed.deserialize(&mut json)
        .unwrap_or_else(|e| panic!("twilight cannot parse {text}: {e}"))
}

fn api(sim: &DiscordSim, path: &str) -> String {
    format!("{}/api/v10{path}", sim.base_url())
}

async fn post_message(sim: &DiscordSim, channel: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(api(sim, &format!("/channels/{channel}/messages")))
        .header("authorization", format!("Bot {TOKEN}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}
