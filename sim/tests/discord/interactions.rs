//! HTTP interactions: signed POSTs to the application's endpoint, checked here with the
//! application's public key as a real application would.

use super::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};

/// An application's interactions endpoint; checks signatures unless `trusting`.
async fn endpoint(public_key: String, trusting: bool) -> String {
    let key =
        VerifyingKey::from_bytes(&hex::decode(public_key).unwrap().try_into().unwrap()).unwrap();
    let app = axum::Router::new()
        .route("/interactions", axum::routing::post(answer))
        .with_state((key, trusting));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/interactions", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn answer(
    State((key, trusting)): State<(VerifyingKey, bool)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let signature = hex::decode(header("x-signature-ed25519")).unwrap_or_default();
    let mut signed = header("x-signature-timestamp").as_bytes().to_vec();
    signed.extend_from_slice(&body);
    let valid = Signature::from_slice(&signature).is_ok_and(|s| key.verify(&signed, &s).is_ok());
    if !valid && !trusting {
        return (StatusCode::UNAUTHORIZED, "invalid request signature").into_response();
    }
    let interaction: Value = serde_json::from_slice(&body).unwrap();
    match interaction["type"].as_u64() {
        Some(1) => axum::Json(json!({ "type": 1 })).into_response(),
        _ => {
            // What the simulator POSTs must be an Interaction for twilight.
            let parsed: Result<twilight_model::application::interaction::Interaction, _> =
                serde_json::from_slice(&body);
            if let Err(error) = parsed {
                return (StatusCode::BAD_REQUEST, error.to_string()).into_response();
            }
            let name = interaction["data"]["name"].as_str().unwrap_or_default();
            axum::Json(json!({ "type": 4, "data": { "content": format!("ran /{name}") } }))
                .into_response()
        }
    }
}

#[tokio::test]
async fn an_endpoint_that_checks_signatures_passes_discords_check_and_answers_commands() {
    let (sim, _) = sim().await;
    let url = endpoint(sim.public_key(TOKEN).unwrap(), false).await;
    sim.set_interactions_endpoint(TOKEN, &url);
    assert!(sim.verify_interactions_endpoint(TOKEN).await.unwrap());
    let reply = sim
        .slash_command(TOKEN, CHANNEL, USER, "status")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        json!({ "type": 4, "data": { "content": "ran /status" } })
    );
    let sent = sim.sent(CHANNEL);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body["data"]["content"], "ran /status");
}

#[tokio::test]
async fn an_endpoint_that_skips_signature_checks_fails_discords_check() {
    let (sim, _) = sim().await;
    let url = endpoint(sim.public_key(TOKEN).unwrap(), true).await;
    sim.set_interactions_endpoint(TOKEN, &url);
    assert!(!sim.verify_interactions_endpoint(TOKEN).await.unwrap());
}
