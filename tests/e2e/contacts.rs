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

#[tokio::test]
async fn groups_have_unique_names_counts_and_idempotent_membership() {
    for backend in backends() {
        let t = TestGateway::start(Options {
            backend: Some(backend),
            ..Default::default()
        })
        .await;
        let mut ids = Vec::new();
        for i in 1..=3 {
            let (_, c) = t
                .post(
                    ACME_KEY,
                    "/v1/contacts",
                    json!({"phone": format!("+25471100000{i}")}),
                )
                .await;
            ids.push(c["id"].as_str().unwrap().to_owned());
        }
        let (status, g) = t
            .post(
                ACME_KEY,
                "/v1/groups",
                json!({"name": "Customers", "description": "all"}),
            )
            .await;
        assert_eq!(status, 201, "{g}");
        assert_eq!(g["contact_count"], 0);
        let (status, _) = t
            .post(ACME_KEY, "/v1/groups", json!({"name": "Customers"}))
            .await;
        assert_eq!(status, 409);
        let gid = g["id"].as_str().unwrap();
        let members = format!("/v1/groups/{gid}/members");
        let (status, g) = t
            .post(ACME_KEY, &members, json!({"contact_ids": [ids[0], ids[1]]}))
            .await;
        assert_eq!(status, 200, "{g}");
        assert_eq!(g["contact_count"], 2);
        let (_, g) = t
            .post(ACME_KEY, &members, json!({"contact_ids": [ids[1], ids[2]]}))
            .await;
        assert_eq!(
            g["contact_count"], 3,
            "adding a member twice changes nothing"
        );
        let (status, bad) = t
            .post(
                ACME_KEY,
                &members,
                json!({"contact_ids": ["no-such-contact"]}),
            )
            .await;
        assert_eq!(status, 422, "{bad}");
        assert!(bad["detail"].as_str().unwrap().contains("no-such-contact"));
        for _ in 0..2 {
            let (status, _) = t.delete(ACME_KEY, &format!("{members}/{}", ids[0])).await;
            assert_eq!(status, 204);
        }
        // A deleted contact leaves its groups.
        t.delete(ACME_KEY, &format!("/v1/contacts/{}", ids[1]))
            .await;
        let (_, g) = t.get(ACME_KEY, &format!("/v1/groups/{gid}")).await;
        assert_eq!(g["contact_count"], 1, "{g}");
        let (status, g) = t
            .patch(
                ACME_KEY,
                &format!("/v1/groups/{gid}"),
                json!({"name": "Buyers", "description": null}),
            )
            .await;
        assert_eq!(status, 200, "{g}");
        assert!(g["description"].is_null());
        let (_, list) = t.get(ACME_KEY, "/v1/groups").await;
        assert_eq!(list["items"][0]["name"], "Buyers");
        let (status, _) = t.get(GLOBEX_KEY, &format!("/v1/groups/{gid}")).await;
        assert_eq!(status, 404);
        let (status, _) = t.delete(ACME_KEY, &format!("/v1/groups/{gid}")).await;
        assert_eq!(status, 204);
        t.stop().await;
    }
}

fn xlsx(rows: &[(&str, &str)]) -> Vec<u8> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    // Shuffled headers: the phone first.
    sheet.write_string(0, 0, "Phone Number").unwrap();
    sheet.write_string(0, 1, "Name").unwrap();
    for (i, (phone, name)) in rows.iter().enumerate() {
        let r = i as u32 + 1;
        if !phone.is_empty() {
            sheet.write_string(r, 0, *phone).unwrap();
        }
        if !name.is_empty() {
            sheet.write_string(r, 1, *name).unwrap();
        }
    }
    book.save_to_buffer().unwrap()
}

async fn upload(
    t: &TestGateway,
    path: &str,
    name: &str,
    bytes: Vec<u8>,
) -> (u16, serde_json::Value) {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()),
    );
    let r = t
        .http
        .post(t.url(path))
        .bearer_auth(ACME_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn a_spreadsheet_import_previews_then_creates_exactly_the_good_rows() {
    for backend in backends() {
        let t = TestGateway::start(Options {
            backend: Some(backend),
            ..Default::default()
        })
        .await;
        let (_, g) = t
            .post(ACME_KEY, "/v1/groups", json!({"name": "Imported"}))
            .await;
        let path = format!("/v1/groups/{}/import", g["id"].as_str().unwrap());
        let (_, _) = t
            .post(
                ACME_KEY,
                "/v1/contacts",
                json!({"name": "Known", "phone": "+254711000009"}),
            )
            .await;
        let file = xlsx(&[
            ("0711 000 001", "Ada"),
            ("", ""),
            ("+254711000009", "Known again"),
            ("0711000001", "Ada twice"),
            ("12345", "Bad number"),
            ("0722 000 002", "Bo"),
        ]);
        let (status, dry) = upload(
            &t,
            &format!("{path}?dry_run=true&default_region=KE"),
            "people.xlsx",
            file.clone(),
        )
        .await;
        assert_eq!(status, 200, "{dry}");
        assert_eq!(
            (
                dry["created"].as_u64(),
                dry["existing"].as_u64(),
                dry["skipped"].as_u64()
            ),
            (Some(2), Some(2), Some(1)),
            "{dry}"
        );
        assert_eq!(dry["errors"][0]["row"], 6, "{dry}");
        assert_eq!(dry["errors"][0]["value"], "12345");
        let (_, before) = t.get(ACME_KEY, "/v1/contacts").await;
        assert_eq!(
            before["items"].as_array().unwrap().len(),
            1,
            "a dry run writes nothing"
        );

        let (status, done) = upload(
            &t,
            &format!("{path}?default_region=KE"),
            "people.xlsx",
            file,
        )
        .await;
        assert_eq!(status, 200, "{done}");
        assert_eq!(done["created"], 2, "{done}");
        let (_, group) = t
            .get(
                ACME_KEY,
                &format!("/v1/groups/{}", g["id"].as_str().unwrap()),
            )
            .await;
        assert_eq!(
            group["contact_count"], 3,
            "the new ones and the known one: {group}"
        );

        let csv = b"name,phone\nCy,+254711000003\n".to_vec();
        let (status, c) = upload(&t, &path, "more.csv", csv).await;
        assert_eq!((status, c["created"].as_u64()), (200, Some(1)), "{c}");
        let (status, _) = upload(&t, &path, "notes.pdf", b"%PDF-1.4".to_vec()).await;
        assert_eq!(status, 415);
        let (status, _) = upload(&t, &path, "broken.xlsx", b"PK\x03\x04garbage".to_vec()).await;
        assert_eq!(status, 422);
        let (status, _) = upload(&t, &path, "huge.csv", vec![b'1'; 6 << 20]).await;
        assert_eq!(status, 413);
        t.stop().await;
    }
}

#[tokio::test]
async fn xls_and_ods_workbooks_import_like_xlsx() {
    // tests/fixtures/make_workbooks.py wrote these with the .xlsx test's rows.
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    for backend in backends() {
        let t = TestGateway::start(Options {
            backend: Some(backend),
            ..Default::default()
        })
        .await;
        t.post(
            ACME_KEY,
            "/v1/contacts",
            json!({"name": "Known", "phone": "+254711000009"}),
        )
        .await;
        for (n, file) in ["people.xls", "people.ods"].into_iter().enumerate() {
            let bytes = std::fs::read(fixtures.join(file)).unwrap();
            let (_, g) = t
                .post(
                    ACME_KEY,
                    "/v1/groups",
                    json!({"name": format!("From {file}")}),
                )
                .await;
            let path = format!("/v1/groups/{}/import", g["id"].as_str().unwrap());
            let (status, dry) = upload(
                &t,
                &format!("{path}?dry_run=true&default_region=KE"),
                file,
                bytes.clone(),
            )
            .await;
            assert_eq!(status, 200, "{file}: {dry}");
            // The second file finds the first one's contacts.
            let new = if n == 0 { 2 } else { 0 };
            assert_eq!(
                (
                    dry["created"].as_u64(),
                    dry["existing"].as_u64(),
                    dry["skipped"].as_u64()
                ),
                (Some(new), Some(4 - new), Some(1)),
                "{file}: {dry}"
            );
            assert_eq!(dry["errors"][0]["row"], 6, "{file}: {dry}");
            assert_eq!(dry["errors"][0]["value"], "12345", "{file}");
            let (status, done) =
                upload(&t, &format!("{path}?default_region=KE"), file, bytes).await;
            assert_eq!(status, 200, "{file}: {done}");
            assert_eq!(done["created"], new, "{file}: {done}");
            let (_, group) = t
                .get(
                    ACME_KEY,
                    &format!("/v1/groups/{}", g["id"].as_str().unwrap()),
                )
                .await;
            assert_eq!(group["contact_count"], 3, "{file}: {group}");
        }
        let (_, all) = t.get(ACME_KEY, "/v1/contacts").await;
        assert_eq!(all["items"].as_array().unwrap().len(), 3);
        t.stop().await;
    }
}

/// A POST with an `Idempotency-Key`: its status and body.
async fn post_with_key(
    t: &TestGateway,
    path: &str,
    key: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value, bool) {
    let r = t
        .http
        .post(t.url(path))
        .bearer_auth(ACME_KEY)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let replayed = r.headers().get("idempotent-replayed").is_some();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap(), replayed)
}

#[tokio::test]
async fn creating_posts_replay_their_first_answer_for_the_same_idempotency_key() {
    for backend in backends() {
        let t = TestGateway::start(Options {
            backend: Some(backend),
            ..Default::default()
        })
        .await;
        let ada = json!({"name": "Ada", "phone": "+14155550101"});
        let (status, first, replayed) = post_with_key(&t, "/v1/contacts", "c-1", ada.clone()).await;
        assert_eq!((status, replayed), (201, false), "{first}");
        // A retry gets the first answer, not a 409 for the phone it created itself.
        let (status, again, replayed) = post_with_key(&t, "/v1/contacts", "c-1", ada.clone()).await;
        assert_eq!((status, replayed), (201, true));
        assert_eq!(again, first);
        // The same key for another request is refused; without a key the duplicate is 409.
        let (status, problem, _) = post_with_key(
            &t,
            "/v1/contacts",
            "c-1",
            json!({"name": "Bob", "phone": "+14155550102"}),
        )
        .await;
        assert_eq!(status, 409, "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key")
        );
        let (status, _) = t.post(ACME_KEY, "/v1/contacts", ada).await;
        assert_eq!(status, 409);
        // Two concurrent first requests with one key create once.
        let group = json!({"name": "VIPs"});
        let (a, b) = tokio::join!(
            post_with_key(&t, "/v1/groups", "g-1", group.clone()),
            post_with_key(&t, "/v1/groups", "g-1", group.clone()),
        );
        assert_eq!((a.0, b.0), (201, 201), "{} {}", a.1, b.1);
        assert_eq!(a.1["id"], b.1["id"]);
        assert!(a.2 != b.2, "one of them is the replay");
        let (_, groups) = t.get(ACME_KEY, "/v1/groups").await;
        assert_eq!(groups["items"].as_array().unwrap().len(), 1);
        let (_, contacts) = t.get(ACME_KEY, "/v1/contacts").await;
        assert_eq!(contacts["items"].as_array().unwrap().len(), 1);
        // Another tenant's identical key is its own.
        let r = t
            .http
            .post(t.url("/v1/groups"))
            .bearer_auth(GLOBEX_KEY)
            .header("idempotency-key", "g-1")
            .json(&group)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert!(r.headers().get("idempotent-replayed").is_none());
        t.stop().await;
    }
}

#[tokio::test]
async fn imports_go_by_the_extension_in_any_case_or_by_the_content_and_refuse_text_files() {
    let t = TestGateway::start(Options::default()).await;
    let (_, g) = t
        .post(ACME_KEY, "/v1/groups", json!({"name": "Imported"}))
        .await;
    let path = format!(
        "/v1/groups/{}/import?dry_run=true",
        g["id"].as_str().unwrap()
    );
    let book = xlsx(&[("+254711000001", "Ada")]);
    for name in ["CONTACTS.XLSX", "contacts"] {
        let (status, preview) = upload(&t, &path, name, book.clone()).await;
        assert_eq!(status, 200, "{name}: {preview}");
        assert_eq!(preview["created"], 1, "{name}: {preview}");
    }
    // A header written with underscores is still the phone column.
    let csv = b"Full_Name,Phone_Number\nAda,+254711000001\n".to_vec();
    let (status, preview) = upload(&t, &path, "list.csv", csv).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["created"], 1, "{preview}");
    assert_eq!(preview["errors"], json!([]), "{preview}");
    // Plain text is not a spreadsheet or CSV.
    let (status, problem) = upload(&t, &path, "notes.txt", b"call Ada back".to_vec()).await;
    assert_eq!(status, 415, "{problem}");
    t.stop().await;
}
