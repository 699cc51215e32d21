//! Contacts through the API, on SQLite and PostgreSQL: create, search, edit, delete, bulk.

use serde_json::json;
use switchboard_e2e::*;

#[tokio::test]
async fn contacts_are_created_edited_deleted_and_bulk_created_with_unique_phones() {
    for backend in backends() {
        let t = TestGateway::start(Options {
            backend: Some(backend),
            ..Default::default()
        })
        .await;
        let (status, ada) = t
            .post(
                ACME_KEY,
                "/v1/contacts",
                json!({"name": "Ada", "phone": "+254 711 000 001", "tags": ["vip"], "attributes": {"city": "Nairobi"}}),
            )
            .await;
        assert_eq!(status, 201, "{ada}");
        assert_eq!(ada["phone"], "+254711000001");
        assert_eq!(ada["tags"], json!(["vip"]));
        let (status, dup) = t
            .post(
                ACME_KEY,
                "/v1/contacts",
                json!({"name": "Ada 2", "phone": "+254711000001"}),
            )
            .await;
        assert_eq!(status, 409, "{dup}");
        let (status, bad) = t
            .post(
                ACME_KEY,
                "/v1/contacts",
                json!({"name": "Bo", "phone": "0711"}),
            )
            .await;
        assert_eq!(status, 422, "{bad}");
        assert!(bad["detail"].as_str().unwrap().contains("0711"), "{bad}");
        // The same phone in another tenant is another contact.
        let (status, _) = t
            .post(
                GLOBEX_KEY,
                "/v1/contacts",
                json!({"phone": "+254711000001"}),
            )
            .await;
        assert_eq!(status, 201);

        let id = ada["id"].as_str().unwrap();
        let (status, edited) = t
            .patch(
                ACME_KEY,
                &format!("/v1/contacts/{id}"),
                json!({"name": "Ada L.", "tags": []}),
            )
            .await;
        assert_eq!(status, 200, "{edited}");
        assert_eq!(edited["name"], "Ada L.");
        assert_eq!(edited["phone"], "+254711000001");
        let (_, found) = t.get(ACME_KEY, "/v1/contacts?q=ada%20l").await;
        assert_eq!(found["items"].as_array().unwrap().len(), 1, "{found}");

        let (status, bulk) = t
            .post(
                ACME_KEY,
                "/v1/contacts/bulk",
                json!([
                    {"name": "Cy", "phone": "+254711000003"},
                    {"name": "Ada again", "phone": "+254711000001"},
                    {"name": "Cy twice", "phone": "+254711000003"},
                    {"name": "Bad", "phone": "12"},
                    {"name": "Di"}
                ]),
            )
            .await;
        assert_eq!(status, 200, "{bulk}");
        assert_eq!(bulk["created"], 2, "{bulk}");
        assert_eq!(bulk["existing"], 2, "{bulk}");
        assert_eq!(bulk["errors"][0]["index"], 3, "{bulk}");
        let (_, all) = t.get(ACME_KEY, "/v1/contacts").await;
        assert_eq!(all["items"].as_array().unwrap().len(), 3, "{all}");

        let (status, _) = t.delete(ACME_KEY, &format!("/v1/contacts/{id}")).await;
        assert_eq!(status, 204);
        let (status, _) = t.get(ACME_KEY, &format!("/v1/contacts/{id}")).await;
        assert_eq!(status, 404);
        let (status, _) = t.delete(GLOBEX_KEY, &format!("/v1/contacts/{id}")).await;
        assert_eq!(status, 404, "another tenant's id");
        t.stop().await;
    }
}
