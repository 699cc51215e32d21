//! The WebSocket feed: replay then live with no gap and no duplicate, filters, auth, and a
//! lagging client that is told and closed without slowing the others.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use switchboard_e2e::*;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(t: &TestGateway, key: &str, query: &str) -> Socket {
    let url = format!("{}/v1/feed{query}", t.base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .expect("feed connects")
        .0
}

/// The next event frame (pings skipped), or None on close / timeout.
async fn next_event<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    within: Duration,
) -> Option<Value>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(within, ws.next()).await {
            Ok(Some(Ok(Ws::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Ws::Ping(_) | Ws::Pong(_)))) => continue,
            _ => return None,
        }
    }
}

#[tokio::test]
async fn replay_then_live_has_no_gap_and_no_duplicate_under_concurrent_writes() {
    for backend in backends() {
        let t = TestGateway::start(Options {
            backend: Some(backend),
            ..Default::default()
        })
        .await;
        t.create_bot(ACME_KEY, "feed-bot", json!({"webhook_secret": "s1"}))
            .await;
        t.wait_state(ACME_KEY, "feed-bot", "running", Duration::from_secs(5))
            .await;
        for u in 0..50 {
            t.fake_update("feed-bot", "s1", u).await;
        }
        // Writers keep going while clients connect with since=0 and mid-stream.
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let http = t.http.clone();
                let url = t.url("/webhooks/telegram/feed-bot");
                tokio::spawn(async move {
                    for i in 0..60 {
                        let u = 1000 + w * 100 + i;
                        let r = http
                            .post(&url)
                            .header("x-fake-secret", "s1")
                            .json(&json!({"update_id": u, "chat": format!("c{}", u % 7), "text": "x"}))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 200);
                    }
                })
            })
            .collect();
        let mut clients = Vec::new();
        for since in [0, 10, 40] {
            clients.push((
                since,
                connect(&t, ACME_KEY, &format!("?since={since}")).await,
            ));
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        for w in writers {
            w.await.unwrap();
        }
        let all = t.get_all(ACME_KEY, "/v1/events?limit=500").await;
        let final_seq = all.last().unwrap()["seq"].as_i64().unwrap();
        for (since, mut ws) in clients {
            let mut expected = since + 1;
            while expected <= final_seq {
                let e = next_event(&mut ws, Duration::from_secs(10))
                    .await
                    .unwrap_or_else(|| {
                        panic!("{backend:?}: client since={since} stopped before seq {expected}")
                    });
                assert_eq!(
                    e["seq"].as_i64().unwrap(),
                    expected,
                    "{backend:?}: gap or duplicate for since={since}"
                );
                assert_eq!(e["tenant"], "acme");
                assert!(e["at"].is_string() && e["type"].is_string() && e["data"].is_object());
                expected += 1;
            }
        }
        t.stop().await;
    }
}

#[tokio::test]
async fn feed_filters_by_type_and_bot_and_accepts_access_token() {
    let t = TestGateway::start(Options::default()).await;
    t.create_bot(ACME_KEY, "f1", json!({"webhook_secret": "s1"}))
        .await;
    t.create_bot(ACME_KEY, "f2", json!({"webhook_secret": "s2"}))
        .await;
    t.wait_state(ACME_KEY, "f2", "running", Duration::from_secs(5))
        .await;
    let url = format!(
        "{}/v1/feed?types=message.received&bot=f2&access_token={ACME_KEY}",
        t.base.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("token in the query works");
    t.fake_update("f1", "s1", 1).await;
    t.fake_update("f2", "s2", 2).await;
    let e = next_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(e["type"], "message.received");
    assert_eq!(e["data"]["bot_id"], "f2");
    assert_eq!(e["data"]["direction"], "inbound");
    assert_eq!(e["data"]["status"], "received");
    assert!(
        next_event(&mut ws, Duration::from_millis(300))
            .await
            .is_none(),
        "nothing else matches"
    );
    // Without credentials, or with another tenant's feed filter, nothing leaks.
    let bare = format!("{}/v1/feed", t.base.replace("http://", "ws://"));
    assert!(tokio_tungstenite::connect_async(bare).await.is_err());
    let mut other = connect(&t, GLOBEX_KEY, "?since=0").await;
    assert!(
        next_event(&mut other, Duration::from_millis(300))
            .await
            .is_none()
    );
    drop(ws);
    t.stop().await;
}

#[tokio::test]
async fn a_lagging_client_gets_feed_lagged_and_is_closed_while_others_keep_up() {
    let t = TestGateway::start(Options {
        extra_toml: "[feed]\nbuffer = 64\nsend_timeout_ms = 200\n".into(),
        ..Default::default()
    })
    .await;
    t.create_bot(ACME_KEY, "lag-bot", json!({"webhook_secret": "s1"}))
        .await;
    t.wait_state(ACME_KEY, "lag-bot", "running", Duration::from_secs(5))
        .await;
    // A client with a tiny receive buffer that does not read.
    let addr = t.gw().addr;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(2048).unwrap();
    let stream = sock.connect(addr).await.unwrap();
    let mut req = format!("ws://{addr}/v1/feed?since=0")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {ACME_KEY}").parse().unwrap(),
    );
    let (mut slow, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    let mut fast = connect(&t, ACME_KEY, "?since=0").await;
    let fast_reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while let Some(e) = next_event(&mut fast, Duration::from_secs(3)).await {
            seqs.push(e["seq"].as_i64().unwrap());
        }
        seqs
    });
    // Large messages fill the slow client's socket buffers quickly.
    let big = "x".repeat(50_000);
    let mut lagged = false;
    for u in 0..1000 {
        let r = t
            .http
            .post(t.url("/webhooks/telegram/lag-bot"))
            .header("x-fake-secret", "s1")
            .json(&json!({"update_id": u, "chat": "c1", "text": big}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        if u % 20 == 19 {
            let m = reqwest::get(t.url("/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if m.lines()
                .any(|l| l.starts_with("switchboard_feed_lagged_total") && !l.ends_with(" 0"))
            {
                lagged = true;
                break;
            }
        }
    }
    assert!(lagged, "the slow client was never detected");
    let total = t.get_all(ACME_KEY, "/v1/events?limit=500").await.len() as i64;
    // The slow client reads what was buffered, then feed.lagged, then the close.
    let mut last_seq = 0;
    let mut saw_lagged = None;
    while let Some(e) = next_event(&mut slow, Duration::from_secs(5)).await {
        if e["type"] == "feed.lagged" {
            saw_lagged = Some(e);
            break;
        }
        let seq = e["seq"].as_i64().unwrap();
        assert_eq!(seq, last_seq + 1);
        last_seq = seq;
    }
    let lagged = saw_lagged.expect("feed.lagged before the close");
    // `last_seq` is the last frame the server finished writing; a frame whose write timed
    // out may still arrive, so the client resumes from the last seq it received.
    assert!(
        lagged["data"]["last_seq"].as_i64().unwrap() <= last_seq,
        "{lagged}"
    );
    assert!(
        next_event(&mut slow, Duration::from_secs(2))
            .await
            .is_none(),
        "closed after feed.lagged"
    );
    // The fast client saw every event, in order.
    let seqs = fast_reader.await.unwrap();
    assert!(
        seqs.len() as i64 >= total.min(1000),
        "fast client got {} of {total}",
        seqs.len()
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "fast client has a gap"
    );
    // A lagged client resumes with since=last_seq and misses nothing.
    let mut resumed = connect(&t, ACME_KEY, &format!("?since={last_seq}")).await;
    let e = next_event(&mut resumed, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(e["seq"].as_i64().unwrap(), last_seq + 1);
    t.stop().await;
}

#[tokio::test]
async fn events_arriving_within_the_write_gap_all_arrive_in_order() {
    // A long gap, so that nearly every write carries many frames (and some more than one
    // write's worth).
    let t = TestGateway::start(Options {
        extra_toml: "[feed]\nwrite_gap_ms = 100\n".into(),
        ..Default::default()
    })
    .await;
    t.create_bot(ACME_KEY, "gap-bot", json!({"webhook_secret": "s1"}))
        .await;
    t.wait_state(ACME_KEY, "gap-bot", "running", Duration::from_secs(5))
        .await;
    let mut ws = connect(&t, ACME_KEY, "?types=message.received").await;
    const N: i64 = 600;
    futures::stream::iter(0..N)
        .for_each_concurrent(32, |u| t.fake_update("gap-bot", "s1", u))
        .await;
    let mut seqs = Vec::new();
    let mut texts = std::collections::BTreeSet::new();
    while seqs.len() < N as usize {
        let Some(e) = next_event(&mut ws, Duration::from_secs(5)).await else {
            break;
        };
        seqs.push(e["seq"].as_i64().unwrap());
        texts.insert(e["data"]["content"]["text"].as_str().unwrap().to_owned());
    }
    assert_eq!(seqs.len(), N as usize, "every event arrived");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in seq order");
    assert_eq!(texts.len(), N as usize, "each message once");
    drop(ws);
    t.stop().await;
}
