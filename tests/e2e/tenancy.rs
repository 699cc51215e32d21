//! Tenant isolation: a tenant's key never sees or touches another tenant's data.

use serde_json::json;
use switchboard_e2e::*;

#[tokio::test]
async fn a_tenant_key_gets_404_for_every_other_tenant_resource() {
    for backend in backends() {
        let t = TestGateway::start(Options {
            backend: Some(backend),
            extra_toml: String::new(),
            ..Default::default()
        })
        .await;
        t.create_bot(
            GLOBEX_KEY,
            "globex-bot",
            json!({"webhook_secret": "whsec-globex"}),
        )
        .await;
        t.create_bot(ACME_KEY, "acme-bot", json!({})).await;
        t.wait_state(
            GLOBEX_KEY,
            "globex-bot",
            "running",
            std::time::Duration::from_secs(5),
        )
        .await;
        // Globex receives and sends a message.
        let r = t
            .http
            .post(t.url("/webhooks/telegram/globex-bot"))
            .header("x-fake-secret", "whsec-globex")
            .json(&json!({"update_id": 1, "chat": "55", "text": "globex secret"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let (_, sent) = t
            .post(GLOBEX_KEY, "/v1/messages", json!({"bot_id": "globex-bot", "to": {"chat_id": "55"}, "content": {"type": "text", "text": "hi"}}))
            .await;
        let msg_id = sent["id"].as_str().unwrap().to_string();
        let conv_id = sent["conversation_id"].as_str().unwrap().to_string();

        // Acme's key with Globex's ids: 404 on every endpoint.
        for path in [
            "/v1/bots/globex-bot".to_string(),
            format!("/v1/messages/{msg_id}"),
            format!("/v1/conversations/{conv_id}"),
            format!("/v1/conversations/{conv_id}/messages"),
        ] {
            let (s, body) = t.get(ACME_KEY, &path).await;
            assert_eq!(s, 404, "{backend:?} GET {path}: {body}");
        }
        for path in [
            "/v1/bots/globex-bot/stop",
            "/v1/bots/globex-bot/start",
            "/v1/bots/globex-bot/restart",
        ] {
            assert_eq!(
                t.post(ACME_KEY, path, json!({})).await.0,
                404,
                "POST {path}"
            );
        }
        assert_eq!(
            t.patch(ACME_KEY, "/v1/bots/globex-bot", json!({"mode": "polling"}))
                .await
                .0,
            404
        );
        assert_eq!(t.delete(ACME_KEY, "/v1/bots/globex-bot").await.0, 404);
        let (_, r) = t
            .post(
                ACME_KEY,
                "/v1/bots/actions",
                json!({"action": "stop", "bots": ["globex-bot"]}),
            )
            .await;
        assert_eq!(r["results"][0]["ok"], false);
        // Sending through Globex's bot or into Globex's conversation is refused.
        let (s, _) = t
            .post(ACME_KEY, "/v1/messages", json!({"bot_id": "globex-bot", "to": {"chat_id": "55"}, "content": {"type": "text", "text": "x"}}))
            .await;
        assert_eq!(s, 422);
        let (s, _) = t
            .post(ACME_KEY, "/v1/messages", json!({"bot_id": "acme-bot", "to": {"conversation_id": conv_id}, "content": {"type": "text", "text": "x"}}))
            .await;
        assert_eq!(s, 422);
        // Lists and the event log show only Acme's own rows.
        for path in [
            "/v1/bots",
            "/v1/messages",
            "/v1/conversations",
            "/v1/events",
        ] {
            let (s, body) = t.get(ACME_KEY, path).await;
            assert_eq!(s, 200);
            let text = body.to_string();
            assert!(!text.contains("globex"), "{backend:?} {path} leaks: {text}");
        }
        // A key cannot claim another tenant through the tenant header.
        let r = t
            .http
            .get(t.url("/v1/bots"))
            .bearer_auth(ACME_KEY)
            .header("x-switchboard-tenant", "globex")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        // Globex's bot was untouched.
        let (_, b) = t.get(GLOBEX_KEY, "/v1/bots/globex-bot").await;
        assert_eq!(b["state"], "running");
        // The admin token sees across tenants, or acts for the one it names.
        let (_, all) = t.get(ADMIN_TOKEN, "/v1/bots").await;
        assert_eq!(all["items"].as_array().unwrap().len(), 2);
        let r = t
            .http
            .get(t.url("/v1/messages"))
            .bearer_auth(ADMIN_TOKEN)
            .header("x-switchboard-tenant", "globex")
            .send()
            .await
            .unwrap();
        let page: serde_json::Value = r.json().await.unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
        assert_eq!(
            t.get(ADMIN_TOKEN, "/v1/events").await.0,
            400,
            "events need a tenant"
        );
        t.stop().await;
    }
}

#[tokio::test]
async fn tenants_and_api_keys_are_managed_by_the_admin() {
    let t = TestGateway::start(Options::default()).await;
    assert_eq!(
        t.post(ACME_KEY, "/v1/tenants", json!({"id": "initech"}))
            .await
            .0,
        403
    );
    let (s, tenant) = t
        .post(
            ADMIN_TOKEN,
            "/v1/tenants",
            json!({"id": "initech", "name": "Initech"}),
        )
        .await;
    assert_eq!(s, 201, "{tenant}");
    assert_eq!(
        t.post(ADMIN_TOKEN, "/v1/tenants", json!({"id": "initech"}))
            .await
            .0,
        409
    );
    let (s, key) = t
        .post(ADMIN_TOKEN, "/v1/tenants/initech/api-keys", json!({}))
        .await;
    assert_eq!(s, 201);
    let secret = key["key"].as_str().unwrap().to_string();
    assert!(secret.starts_with("sk_"));
    let (s, list) = t.get(&secret, "/v1/tenants").await;
    assert_eq!(s, 200);
    assert_eq!(list["items"][0]["id"], "initech");
    let (_, keys) = t.get(&secret, "/v1/tenants/initech/api-keys").await;
    assert!(
        !keys.to_string().contains(&secret),
        "keys are never shown again"
    );
    assert_eq!(t.get(ACME_KEY, "/v1/tenants/initech/api-keys").await.0, 404);
    let key_id = key["id"].as_str().unwrap();
    assert_eq!(
        t.delete(&secret, &format!("/v1/tenants/initech/api-keys/{key_id}"))
            .await
            .0,
        204
    );
    assert_eq!(
        t.get(&secret, "/v1/bots").await.0,
        401,
        "revoked key is refused"
    );
    t.stop().await;
}

#[tokio::test]
async fn the_admin_token_edits_a_tenants_resource_by_id_without_naming_the_tenant() {
    let t = TestGateway::start(Options::default()).await;
    let (_, contact) = t
        .post(
            ACME_KEY,
            "/v1/contacts",
            json!({"name": "Ada", "phone": "+14155550101"}),
        )
        .await;
    let (_, group) = t
        .post(GLOBEX_KEY, "/v1/groups", json!({"name": "Globex VIPs"}))
        .await;
    let contact_path = format!("/v1/contacts/{}", contact["id"].as_str().unwrap());
    let group_path = format!("/v1/groups/{}", group["id"].as_str().unwrap());
    // Two tenants, no X-Switchboard-Tenant: the resource names its tenant.
    let (status, edited) = t
        .patch(ADMIN_TOKEN, &contact_path, json!({"name": "Ada L."}))
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["name"], "Ada L.");
    let (status, _) = t.get(ACME_KEY, &contact_path).await;
    assert_eq!(status, 200);
    let (status, _) = t.delete(ADMIN_TOKEN, &group_path).await;
    assert_eq!(status, 204);
    let (status, _) = t.get(GLOBEX_KEY, &group_path).await;
    assert_eq!(status, 404);
    // An unknown id is still 404; creating still needs the tenant named.
    let (status, _) = t.delete(ADMIN_TOKEN, "/v1/groups/nope").await;
    assert_eq!(status, 404);
    let (status, _) = t
        .post(ADMIN_TOKEN, "/v1/groups", json!({"name": "Whose?"}))
        .await;
    assert_eq!(status, 422);
    t.stop().await;
}
