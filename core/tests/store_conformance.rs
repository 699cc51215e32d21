//! Store conformance suite: the same behaviours on SQLite and PostgreSQL.
//!
//! Every test runs against a fresh SQLite file and, when `SWITCHBOARD_TEST_POSTGRES_URL` is
//! set, against a fresh PostgreSQL schema (it prints that it skipped PostgreSQL otherwise).

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use switchboard_core::StoreError;
use switchboard_core::connector::{
    ChatRef, EditReport, InboundEvent, InboundMessage, IngestOutcome, SenderRef, StatusReport,
};
use switchboard_core::model::*;
use switchboard_core::secret::Cipher;
use switchboard_core::store::*;

struct Backend {
    name: &'static str,
    store: Arc<Store>,
    _dir: Option<tempfile::TempDir>,
}

async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let mut out = vec![Backend {
        name: "sqlite",
        store: Store::open(&url, StoreOptions::default()).await.unwrap(),
        _dir: Some(dir),
    }];
    match std::env::var("SWITCHBOARD_TEST_POSTGRES_URL") {
        Ok(base) if !base.is_empty() => {
            let schema = format!("sb_{}", uuid::Uuid::now_v7().simple());
            sqlx::any::install_default_drivers();
            let admin = sqlx::AnyPool::connect(&base)
                .await
                .expect("postgres reachable");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&admin)
                .await
                .unwrap();
            admin.close().await;
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
            out.push(Backend {
                name: "postgres",
                store: Store::open(&url, StoreOptions::default()).await.unwrap(),
                _dir: None,
            });
        }
        _ => eprintln!("SWITCHBOARD_TEST_POSTGRES_URL not set: skipped the PostgreSQL backend"),
    }
    out
}

async fn tenant_with_bot(store: &Store, tenant: &str, bot: &str) -> Bot {
    store
        .upsert_tenant(tenant, "T", "UTC", "test")
        .await
        .unwrap();
    store
        .upsert_bot(BotWrite {
            id: bot.into(),
            tenant: tenant.into(),
            platform: Platform::Telegram,
            enabled: true,
            settings: serde_json::Map::new(),
            credentials: Some(None),
            credential_fields: vec![],
            source: "test".into(),
        })
        .await
        .unwrap()
}

fn inbound(key: &str, chat: &str, user: &str, text: &str) -> InboundEvent {
    InboundEvent::Message(InboundMessage {
        dedup_key: key.into(),
        chat: ChatRef {
            external_chat_id: chat.into(),
            kind: ConversationKind::Direct,
            title: None,
        },
        sender: Some(SenderRef {
            external_id: user.into(),
            name: Some("Ada".into()),
            phone: None,
        }),
        external_id: Some(format!("ext-{key}")),
        content: Content::Text { text: text.into() },
        reply_to_external_id: None,
        at: Utc::now(),
    })
}

fn text(t: &str) -> Content {
    Content::Text { text: t.into() }
}

fn outbound(tenant: &str, bot: &str, chat: &str, t: &str) -> NewOutbound {
    NewOutbound {
        tenant: tenant.into(),
        bot_id: bot.into(),
        to: Recipient::Chat(chat.into()),
        content: text(t),
        reply_to: None,
        idempotency: None,
        reply_window: None,
        chat_kind: None,
        segments: None,
    }
}

fn page(limit: u32) -> PageRequest {
    PageRequest {
        limit,
        cursor: None,
    }
}

#[tokio::test]
async fn migrations_apply_on_reopen_without_changes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/dir/t.db", dir.path().display());
    let s = Store::open(&url, StoreOptions::default()).await.unwrap();
    tenant_with_bot(&s, "acme", "b1").await;
    s.close().await;
    let s = Store::open(&url, StoreOptions::default()).await.unwrap();
    assert_eq!(s.get_bot(&Scope::All, "b1").await.unwrap().tenant, "acme");
    s.close().await;
    for b in backends().await {
        b.store.ping().await.unwrap();
    }
}

#[tokio::test]
async fn inbound_message_creates_contact_conversation_message_and_event() {
    for b in backends().await {
        let s = &b.store;
        tenant_with_bot(s, "acme", "tg1").await;
        let out = s
            .ingest("tg1", vec![inbound("u1", "100", "7", "hello")])
            .await
            .unwrap();
        let IngestOutcome::Stored(id) = &out[0] else {
            panic!("{}: {out:?}", b.name)
        };
        let scope = Scope::Tenant("acme".into());
        let m = s.get_message(&scope, id).await.unwrap();
        assert_eq!(m.direction, Direction::Inbound, "{}", b.name);
        assert_eq!(m.status, MessageStatus::Received);
        assert_eq!(m.external_id.as_deref(), Some("ext-u1"));
        let contact = s
            .get_contact(&scope, m.contact_id.as_deref().unwrap())
            .await
            .unwrap();
        assert_eq!(contact.identities[0].external_id, "7");
        let conv = s
            .get_conversation(&scope, &m.conversation_id)
            .await
            .unwrap();
        assert_eq!(conv.external_chat_id, "100");
        assert_eq!(conv.contact_id, m.contact_id);
        let events = s.list_events("acme", 0, None, None, 100).await.unwrap();
        let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["conversation.updated", "message.received"],
            "{}",
            b.name
        );
        assert_eq!(events[1].seq, 2);
        assert_eq!(events[1].data_value()["id"], id.as_str());
    }
}

#[tokio::test]
async fn redelivered_inbound_update_is_stored_once() {
    for b in backends().await {
        let s = &b.store;
        tenant_with_bot(s, "acme", "tg1").await;
        let first = s
            .ingest("tg1", vec![inbound("u1", "100", "7", "hi")])
            .await
            .unwrap();
        let again = s
            .ingest(
                "tg1",
                vec![
                    inbound("u1", "100", "7", "hi"),
                    inbound("u1", "100", "7", "hi"),
                ],
            )
            .await
            .unwrap();
        let IngestOutcome::Stored(id) = &first[0] else {
            panic!()
        };
        assert_eq!(
            again,
            vec![
                IngestOutcome::Duplicate(id.clone()),
                IngestOutcome::Duplicate(id.clone())
            ]
        );
        let all = s
            .list_messages(
                &Scope::Tenant("acme".into()),
                &MessageFilter::default(),
                &page(50),
            )
            .await
            .unwrap();
        assert_eq!(all.items.len(), 1, "{}", b.name);
    }
}

#[tokio::test]
async fn concurrent_writes_get_gapless_sequence_numbers() {
    for b in backends().await {
        let s = b.store.clone();
        tenant_with_bot(&s, "acme", "tg1").await;
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.ingest("tg1", vec![inbound(&format!("k{i}"), "100", "7", "x")])
                    .await
            }));
        }
        for t in tasks {
            assert!(matches!(
                t.await.unwrap().unwrap()[0],
                IngestOutcome::Stored(_)
            ));
        }
        let events = s.list_events("acme", 0, None, None, 1000).await.unwrap();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=201).collect::<Vec<_>>(), "{}", b.name);
        // Group commit: concurrent writes share transactions (and fsyncs).
        use std::sync::atomic::Ordering::Relaxed;
        let (commits, writes) = (
            s.writer_stats().commits.load(Relaxed),
            s.writer_stats().writes.load(Relaxed),
        );
        assert!(
            writes >= 202 && commits < writes / 2,
            "{}: {writes} writes in {commits} commits",
            b.name
        );
        assert_eq!(s.last_seq("acme").await.unwrap(), 201);
    }
}

#[tokio::test]
async fn a_failing_write_does_not_fail_the_writes_committed_with_it() {
    for b in backends().await {
        let s = b.store.clone();
        tenant_with_bot(&s, "acme", "tg1").await;
        let good = {
            let s = s.clone();
            tokio::spawn(async move { s.enqueue(outbound("acme", "tg1", "100", "ok")).await })
        };
        let bad = {
            let s = s.clone();
            tokio::spawn(async move {
                let mut o = outbound("acme", "tg1", "100", "x");
                o.to = Recipient::Conversation("nope".into());
                s.enqueue(o).await
            })
        };
        let bad = bad.await.unwrap().unwrap_err();
        assert!(
            matches!(bad, StoreError::Invalid(ref m) if m.contains("to.conversation_id")),
            "{bad}"
        );
        let good = good.await.unwrap().unwrap();
        assert_eq!(
            s.get_message(&Scope::All, &good.message.id)
                .await
                .unwrap()
                .status,
            MessageStatus::Queued
        );
        let seqs: Vec<i64> = s
            .list_events("acme", 0, None, None, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn only_tenant_names_the_single_tenant_and_none_once_there_are_two() {
    for b in backends().await {
        let s = &b.store;
        assert_eq!(s.only_tenant().await.unwrap(), None);
        tenant_with_bot(s, "acme", "a-bot").await;
        assert_eq!(s.only_tenant().await.unwrap().as_deref(), Some("acme"));
        tenant_with_bot(s, "globex", "g-bot").await;
        assert_eq!(s.only_tenant().await.unwrap(), None);
    }
}

#[tokio::test]
async fn one_instance_at_a_time_holds_a_webhook_subscriptions_lease() {
    for b in backends().await {
        let s = &b.store;
        tenant_with_bot(s, "acme", "a-bot").await;
        let sub = s
            .create_webhook("acme", "https://app.example/hook", &[], "plain:whsec_x")
            .await
            .unwrap();
        let soon = chrono::Utc::now() + chrono::Duration::seconds(60);
        assert!(s.lease_webhook(&sub.id, "instance-a", soon).await.unwrap());
        assert!(!s.lease_webhook(&sub.id, "instance-b", soon).await.unwrap());
        // The holder extends it; once it has run out, another instance takes it.
        assert!(s.lease_webhook(&sub.id, "instance-a", soon).await.unwrap());
        let past = chrono::Utc::now() - chrono::Duration::seconds(1);
        assert!(s.lease_webhook(&sub.id, "instance-a", past).await.unwrap());
        assert!(s.lease_webhook(&sub.id, "instance-b", soon).await.unwrap());
        assert!(!s.lease_webhook(&sub.id, "instance-a", soon).await.unwrap());
        assert!(
            !s.lease_webhook("no-such-subscription", "instance-a", soon)
                .await
                .unwrap()
        );
    }
}

#[tokio::test]
async fn an_idempotency_key_is_claimed_by_one_request_until_answered_or_released() {
    for b in backends().await {
        let s = &b.store;
        // Two instances given one key at once: one claims it, the other does not.
        assert!(s.claim_answer("scope", "k", "h1").await.unwrap());
        assert!(!s.claim_answer("scope", "k", "h1").await.unwrap());
        let pending = s.recall_answer("scope", "k").await.unwrap().unwrap();
        assert_eq!(pending.status, 0, "in progress");
        // The claimant's answer replaces its claim and then stays.
        s.remember_answer("scope", "k", "h1", 201, "{\"id\":1}")
            .await
            .unwrap();
        let kept = s.recall_answer("scope", "k").await.unwrap().unwrap();
        assert_eq!((kept.status, kept.body.as_str()), (201, "{\"id\":1}"));
        assert!(!s.claim_answer("scope", "k", "h1").await.unwrap());
        s.remember_answer("scope", "k", "h1", 201, "{\"id\":2}")
            .await
            .unwrap();
        assert_eq!(
            s.recall_answer("scope", "k").await.unwrap().unwrap().body,
            "{\"id\":1}",
            "the first answer stays"
        );
        // A claim given up (the request failed) frees the key; an answer is not released.
        assert!(s.claim_answer("scope", "other", "h").await.unwrap());
        s.release_answer("scope", "other").await.unwrap();
        assert!(s.claim_answer("scope", "other", "h").await.unwrap());
        s.release_answer("scope", "k").await.unwrap();
        assert!(s.recall_answer("scope", "k").await.unwrap().is_some());
    }
}

#[tokio::test]
async fn tenant_scope_hides_other_tenants_rows() {
    for b in backends().await {
        let s = &b.store;
        tenant_with_bot(s, "acme", "a-bot").await;
        tenant_with_bot(s, "globex", "g-bot").await;
        let out = s
            .ingest("a-bot", vec![inbound("1", "100", "7", "secret")])
            .await
            .unwrap();
        let IngestOutcome::Stored(id) = &out[0] else {
            panic!()
        };
        let acme = Scope::Tenant("acme".into());
        let globex = Scope::Tenant("globex".into());
        let m = s.get_message(&acme, id).await.unwrap();
        assert!(matches!(
            s.get_message(&globex, id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            s.get_conversation(&globex, &m.conversation_id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            s.get_bot(&globex, "a-bot").await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            s.get_contact(&globex, m.contact_id.as_deref().unwrap())
                .await,
            Err(StoreError::NotFound)
        ));
        let g = s
            .list_messages(&globex, &MessageFilter::default(), &page(50))
            .await
            .unwrap();
        assert!(g.items.is_empty(), "{}", b.name);
        let bots = s.list_bots(&globex, &page(50)).await.unwrap();
        assert_eq!(
            bots.items.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
            ["g-bot"]
        );
        assert!(
            s.list_events("globex", 0, None, None, 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            s.delete_bot(&globex, "a-bot").await,
            Err(StoreError::NotFound)
        ));
        // A tenant cannot send through another tenant's bot.
        assert!(
            s.enqueue(outbound("globex", "a-bot", "100", "x"))
                .await
                .is_err()
        );
        assert_eq!(
            s.list_bots(&Scope::All, &page(50))
                .await
                .unwrap()
                .items
                .len(),
            2
        );
    }
}

#[tokio::test]
async fn idempotency_key_returns_the_first_message() {
    for b in backends().await {
        let s = &b.store;
        tenant_with_bot(s, "acme", "tg1").await;
        let mut o = outbound("acme", "tg1", "100", "hi");
        o.idempotency = Some(("key-1".into(), "hash-a".into()));
        let first = s.enqueue(o.clone()).await.unwrap();
        let second = s.enqueue(o.clone()).await.unwrap();
        assert!(!first.replayed && second.replayed, "{}", b.name);
        assert_eq!(first.message.id, second.message.id);
        o.idempotency = Some(("key-1".into(), "hash-b".into()));
        assert!(matches!(s.enqueue(o).await, Err(StoreError::Conflict(_))));
        assert_eq!(s.outbox("tg1").await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn outbound_transitions_record_history_and_events() {
    for b in backends().await {
        let s = &b.store;
        tenant_with_bot(s, "acme", "tg1").await;
        let e = s
            .enqueue(outbound("acme", "tg1", "100", "hi"))
            .await
            .unwrap();
        let id = &e.message.id;
        let m = s.mark_sending(id).await.unwrap();
        assert_eq!((m.status, m.attempts), (MessageStatus::Sending, 1));
        // A process killed here leaves the row in the outbox.
        let pending = s.outbox("tg1").await.unwrap();
        assert_eq!(pending[0].message.status, MessageStatus::Sending);
        assert_eq!(pending[0].conversation.external_chat_id, "100");
        let m = s.mark_sent(id, "555", Some("KES 0.80")).await.unwrap();
        assert_eq!(m.external_id.as_deref(), Some("555"));
        assert!(m.sent_at.is_some());
        assert!(s.outbox("tg1").await.unwrap().is_empty(), "{}", b.name);
        let statuses: Vec<_> = m.status_history.iter().map(|h| h.status).collect();
        assert_eq!(
            statuses,
            [
                MessageStatus::Queued,
                MessageStatus::Sending,
                MessageStatus::Sent
            ]
        );
        let types = vec!["message.sent".to_string()];
        let sent = s
            .list_events("acme", 0, Some(&types), None, 10)
            .await
            .unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].data_value()["external_id"], "555");
        // Delivery reports move it forward, once each; an unknown id is kept unmatched.
        let report = |st| {
            InboundEvent::Status(StatusReport {
                external_id: "555".into(),
                status: st,
                at: Utc::now(),
                error: None,
            })
        };
        let out = s
            .ingest(
                "tg1",
                vec![
                    report(MessageStatus::Read),
                    report(MessageStatus::Delivered),
                    report(MessageStatus::Read),
                ],
            )
            .await
            .unwrap();
        assert_eq!(out[2], IngestOutcome::StatusIgnored, "{}", b.name);
        let m = s.get_message(&Scope::All, id).await.unwrap();
        assert_eq!(
            m.status,
            MessageStatus::Read,
            "a late delivered does not demote read"
        );
        assert!(m.delivered_at.is_some() && m.read_at.is_some());
        let unknown = s
            .ingest(
                "tg1",
                vec![InboundEvent::Status(StatusReport {
                    external_id: "999".into(),
                    status: MessageStatus::Delivered,
                    at: Utc::now(),
                    error: None,
                })],
            )
            .await
            .unwrap();
        assert_eq!(unknown, vec![IngestOutcome::StatusUnmatched]);
        // A failed message leaves the outbox with its error.
        let e2 = s
            .enqueue(outbound("acme", "tg1", "100", "x"))
            .await
            .unwrap();
        s.mark_sending(&e2.message.id).await.unwrap();
        let err = MessageError {
            code: "permanent".into(),
            message: "chat not found".into(),
            platform_code: Some("400".into()),
        };
        let f = s.mark_failed(&e2.message.id, err.clone()).await.unwrap();
        assert_eq!((f.status, f.error), (MessageStatus::Failed, Some(err)));
    }
}

#[tokio::test]
async fn lists_paginate_with_cursors_and_filters() {
    for b in backends().await {
        let s = &b.store;
        tenant_with_bot(s, "acme", "tg1").await;
        for i in 0..7 {
            s.ingest(
                "tg1",
                vec![inbound(
                    &format!("{i}"),
                    &format!("chat{}", i % 2),
                    "7",
                    "x",
                )],
            )
            .await
            .unwrap();
        }
        s.enqueue(outbound("acme", "tg1", "chat0", "out"))
            .await
            .unwrap();
        let scope = Scope::Tenant("acme".into());
        let mut seen = HashSet::new();
        let mut req = page(3);
        loop {
            let p = s
                .list_messages(&scope, &MessageFilter::default(), &req)
                .await
                .unwrap();
            assert!(p.items.len() <= 3);
            for m in &p.items {
                assert!(
                    seen.insert(m.id.clone()),
                    "{}: duplicate across pages",
                    b.name
                );
            }
            match p.next_cursor {
                Some(c) => req.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen.len(), 8);
        let inbound_only = MessageFilter {
            direction: Some(Direction::Inbound),
            ..Default::default()
        };
        assert_eq!(
            s.list_messages(&scope, &inbound_only, &page(50))
                .await
                .unwrap()
                .items
                .len(),
            7
        );
        let convs = s
            .list_conversations(&scope, &ConversationFilter::default(), &page(50))
            .await
            .unwrap();
        assert_eq!(convs.items.len(), 2);
        let q = ConversationFilter {
            q: Some("CHAT1".into()),
            ..Default::default()
        };
        assert_eq!(
            s.list_conversations(&scope, &q, &page(50))
                .await
                .unwrap()
                .items
                .len(),
            1
        );
        let bad = PageRequest {
            limit: 3,
            cursor: Some("!!".into()),
        };
        assert!(matches!(
            s.list_messages(&scope, &MessageFilter::default(), &bad)
                .await,
            Err(StoreError::BadRequest(_))
        ));
    }
}

#[tokio::test]
async fn bot_credentials_are_stored_sealed_and_state_changes_are_events() {
    for b in backends().await {
        let s = &b.store;
        s.upsert_tenant("acme", "Acme", "UTC", "test")
            .await
            .unwrap();
        let cipher = Cipher::from_base64(&Cipher::generate_key()).unwrap();
        let sealed = cipher.seal(b"{\"token\":\"123:abc\"}");
        s.upsert_bot(BotWrite {
            id: "tg1".into(),
            tenant: "acme".into(),
            platform: Platform::Telegram,
            enabled: true,
            settings: serde_json::Map::new(),
            credentials: Some(Some(sealed.clone())),
            credential_fields: vec!["token".into()],
            source: "api".into(),
        })
        .await
        .unwrap();
        let stored = s.bot_credentials("tg1").await.unwrap().unwrap();
        assert_eq!(stored, sealed);
        assert!(!stored.ct.contains("123:abc"));
        assert_eq!(cipher.open(&stored).unwrap(), b"{\"token\":\"123:abc\"}");
        let bot = s
            .set_bot_state(
                "tg1",
                BotState::Failed,
                Some("token rejected".into()),
                Some("401".into()),
            )
            .await
            .unwrap();
        assert_eq!(bot.state, BotState::Failed, "{}", b.name);
        let ev = s
            .list_events("acme", 0, None, Some("tg1"), 10)
            .await
            .unwrap();
        assert_eq!(ev[0].kind, "bot.state");
        assert_eq!(ev[0].data_value()["state"], "failed");
        // Changing the platform of an existing bot is refused.
        let err = s
            .upsert_bot(BotWrite {
                id: "tg1".into(),
                tenant: "acme".into(),
                platform: Platform::Discord,
                enabled: true,
                settings: serde_json::Map::new(),
                credentials: None,
                credential_fields: vec![],
                source: "api".into(),
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)));
        assert_eq!(s.bot_credentials("tg1").await.unwrap(), Some(sealed));
    }
}

#[tokio::test]
async fn api_keys_resolve_to_their_tenant_until_revoked() {
    for b in backends().await {
        let s = &b.store;
        s.upsert_tenant("acme", "Acme", "UTC", "test")
            .await
            .unwrap();
        s.replace_api_keys("acme", "config", vec![("h1".into(), "sk_a…".into())])
            .await
            .unwrap();
        assert_eq!(
            s.tenant_for_key_hash("h1").await.unwrap().as_deref(),
            Some("acme")
        );
        let id = s.add_api_key("acme", "h2", "sk_b…").await.unwrap();
        s.revoke_api_key("acme", &id).await.unwrap();
        assert_eq!(
            s.tenant_for_key_hash("h2").await.unwrap(),
            None,
            "{}",
            b.name
        );
        s.replace_api_keys("acme", "config", vec![]).await.unwrap();
        assert_eq!(s.tenant_for_key_hash("h1").await.unwrap(), None);
    }
}

#[tokio::test]
async fn enqueues_and_transitions_committed_together_stay_exact() {
    // Many writes in flight at once share batches: recipients read once per batch, messages
    // written together. The outcome must be what one-at-a-time writes would give.
    for b in backends().await {
        let s = b.store.clone();
        tenant_with_bot(&s, "acme", "tg1").await;
        let mut jobs = tokio::task::JoinSet::new();
        for i in 0..63 {
            let s = s.clone();
            jobs.spawn(async move {
                let mut o = outbound("acme", "tg1", &format!("c{}", i % 5), &format!("m{i}"));
                if i % 21 == 20 {
                    o.to = Recipient::Conversation("nope".into());
                }
                (i, s.enqueue(o).await)
            });
        }
        let mut ids = Vec::new();
        while let Some(done) = jobs.join_next().await {
            match done.unwrap() {
                (i, Ok(e)) if i % 21 != 20 => ids.push(e.message.id),
                (i, r) => assert!(
                    i % 21 == 20 && matches!(r, Err(StoreError::Invalid(_))),
                    "{}: enqueue {i}: {:?}",
                    b.name,
                    r.map(|e| e.message.id)
                ),
            }
        }
        assert_eq!(ids.len(), 60);
        let filter = ConversationFilter {
            bot: Some("tg1".into()),
            ..Default::default()
        };
        let conversations = s
            .list_conversations(&Scope::All, &filter, &page(100))
            .await
            .unwrap();
        assert_eq!(conversations.items.len(), 5, "{}: one per chat", b.name);
        // A delivery report that arrives before its message is marked sent waits for it.
        s.ingest(
            "tg1",
            vec![InboundEvent::Status(StatusReport {
                external_id: "x7".into(),
                status: MessageStatus::Delivered,
                at: Utc::now(),
                error: None,
            })],
        )
        .await
        .unwrap();
        let mut jobs = tokio::task::JoinSet::new();
        for (i, id) in ids.iter().enumerate() {
            let (s1, id) = (s.clone(), id.clone());
            jobs.spawn(async move {
                s1.mark_sending(&id).await?;
                s1.mark_sent(&id, &format!("x{i}"), None).await
            });
            // New messages committed beside the transitions.
            let s2 = s.clone();
            jobs.spawn(async move {
                s2.enqueue(outbound("acme", "tg1", &format!("c{}", i % 7), "more"))
                    .await
                    .map(|e| e.message)
            });
        }
        while let Some(done) = jobs.join_next().await {
            done.unwrap().unwrap();
        }
        for (i, id) in ids.iter().enumerate() {
            let m = s.get_message(&Scope::All, id).await.unwrap();
            let want = if i == 7 {
                MessageStatus::Delivered
            } else {
                MessageStatus::Sent
            };
            assert_eq!((m.status, m.attempts), (want, 1), "{}: message {i}", b.name);
            assert_eq!(m.external_id, Some(format!("x{i}")));
            let history: Vec<_> = m.status_history.iter().map(|h| h.status).collect();
            assert_eq!(
                &history[..3],
                &[
                    MessageStatus::Queued,
                    MessageStatus::Sending,
                    MessageStatus::Sent
                ]
            );
        }
        let queued = s.outbox("tg1").await.unwrap();
        assert_eq!(
            queued.len(),
            60,
            "{}: the new messages wait to be sent",
            b.name
        );
        let conversations = s
            .list_conversations(&Scope::All, &filter, &page(100))
            .await
            .unwrap();
        assert_eq!(conversations.items.len(), 7, "{}", b.name);
        let seqs: Vec<i64> = s
            .list_events("acme", 0, None, None, 1000)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn inbound_messages_committed_together_stay_exact() {
    for b in backends().await {
        let s = b.store.clone();
        tenant_with_bot(&s, "acme", "tg1").await;
        let mut jobs = tokio::task::JoinSet::new();
        for i in 0..60 {
            let s = s.clone();
            jobs.spawn(async move {
                let n = i % 50;
                let key = format!("k{n}");
                let event = inbound(&key, &format!("c{}", n % 7), &format!("u{}", n % 7), "hi");
                (key, s.ingest("tg1", vec![event]).await)
            });
        }
        let mut stored: std::collections::HashMap<String, String> = Default::default();
        let mut dups = Vec::new();
        while let Some(done) = jobs.join_next().await {
            let (key, out) = done.unwrap();
            match out.unwrap().remove(0) {
                IngestOutcome::Stored(id) => {
                    assert!(stored.insert(key, id).is_none(), "{}: stored twice", b.name)
                }
                IngestOutcome::Duplicate(id) => dups.push((key, id)),
                other => panic!("{}: {other:?}", b.name),
            }
        }
        assert_eq!((stored.len(), dups.len()), (50, 10), "{}", b.name);
        for (key, id) in dups {
            assert_eq!(
                stored[&key], id,
                "{}: a duplicate names the stored message",
                b.name
            );
        }
        let filter = ConversationFilter {
            bot: Some("tg1".into()),
            ..Default::default()
        };
        let conversations = s
            .list_conversations(&Scope::All, &filter, &page(100))
            .await
            .unwrap();
        assert_eq!(conversations.items.len(), 7, "{}", b.name);
        assert!(
            conversations
                .items
                .iter()
                .all(|c| c.last_inbound_at.is_some() && c.contact_id.is_some()),
            "{}",
            b.name
        );
        // A reply to a message of the same job finds it before either is written.
        let first = inbound("r1", "c1", "u1", "question");
        let mut second = inbound("r2", "c1", "u1", "answer");
        let InboundEvent::Message(m) = &mut second else {
            unreachable!()
        };
        m.reply_to_external_id = Some("ext-r1".into());
        let out = s.ingest("tg1", vec![first, second]).await.unwrap();
        let (IngestOutcome::Stored(q), IngestOutcome::Stored(a)) = (&out[0], &out[1]) else {
            panic!("{out:?}")
        };
        let a = s.get_message(&Scope::All, a).await.unwrap();
        assert_eq!(a.reply_to.as_deref(), Some(q.as_str()), "{}", b.name);
    }
}

/// First messages from new senders, many in one batch and on two bots of a tenant: one
/// contact per phone with an identity on each bot, each conversation naming it.
#[tokio::test]
async fn new_senders_committed_together_get_one_contact_per_phone() {
    for b in backends().await {
        let s = b.store.clone();
        tenant_with_bot(&s, "acme", "wa1").await;
        tenant_with_bot(&s, "acme", "wa2").await;
        let mut jobs = tokio::task::JoinSet::new();
        for i in 0..40 {
            let s = s.clone();
            jobs.spawn(async move {
                let phone = format!("+2547000000{:02}", i % 5);
                let mut event = inbound(&format!("k{i}"), &phone, &phone, "hi");
                let InboundEvent::Message(m) = &mut event else {
                    unreachable!()
                };
                m.sender.as_mut().unwrap().phone = Some(phone);
                let bot = if i % 2 == 0 { "wa1" } else { "wa2" };
                s.ingest(bot, vec![event]).await
            });
        }
        while let Some(done) = jobs.join_next().await {
            let out = done.unwrap().unwrap();
            assert!(
                matches!(out[0], IngestOutcome::Stored(_)),
                "{}: {out:?}",
                b.name
            );
        }
        let contacts = s
            .list_contacts(&Scope::All, None, &page(100))
            .await
            .unwrap();
        assert_eq!(contacts.items.len(), 5, "{}: one contact per phone", b.name);
        for c in &contacts.items {
            let mut bots: Vec<&str> = c.identities.iter().map(|i| i.bot_id.as_str()).collect();
            bots.sort_unstable();
            assert_eq!(bots, ["wa1", "wa2"], "{}: {c:?}", b.name);
        }
        let by_phone: std::collections::HashMap<&str, &str> = contacts
            .items
            .iter()
            .map(|c| (c.phone.as_deref().unwrap(), c.id.as_str()))
            .collect();
        let conversations = s
            .list_conversations(&Scope::All, &ConversationFilter::default(), &page(100))
            .await
            .unwrap();
        assert_eq!(conversations.items.len(), 10, "{}", b.name);
        for c in &conversations.items {
            assert_eq!(
                c.contact_id.as_deref(),
                Some(by_phone[c.external_chat_id.as_str()]),
                "{}",
                b.name
            );
        }
        let messages = s
            .list_messages(&Scope::All, &MessageFilter::default(), &page(100))
            .await
            .unwrap();
        assert_eq!(messages.items.len(), 40, "{}", b.name);
        assert!(
            messages.items.iter().all(|m| m.contact_id.as_deref()
                == Some(
                    by_phone[conversations
                        .items
                        .iter()
                        .find(|c| c.id == m.conversation_id)
                        .unwrap()
                        .external_chat_id
                        .as_str()]
                )),
            "{}",
            b.name
        );
    }
}

/// One delivery holding a new chat's first message, then an edit of it and the chat's new
/// title (a polling batch can): the edit and the title find what the message created.
#[tokio::test]
async fn edit_and_title_in_the_same_delivery_as_a_new_chats_first_message_apply() {
    for b in backends().await {
        let s = b.store.clone();
        tenant_with_bot(&s, "acme", "tg1").await;
        let first = inbound("m1", "g1", "u1", "draft");
        let edit = InboundEvent::Edit(EditReport {
            dedup_key: "e1".into(),
            chat_external_id: "g1".into(),
            external_id: "ext-m1".into(),
            content: text("final"),
            at: Utc::now(),
        });
        let title = InboundEvent::Chat(ChatRef {
            external_chat_id: "g1".into(),
            kind: ConversationKind::Direct,
            title: Some("Team".into()),
        });
        let out = s.ingest("tg1", vec![first, edit, title]).await.unwrap();
        let IngestOutcome::Stored(id) = &out[0] else {
            panic!("{}: {out:?}", b.name)
        };
        assert!(
            matches!(out[1], IngestOutcome::StatusApplied(_)),
            "{}: {out:?}",
            b.name
        );
        let m = s.get_message(&Scope::All, id).await.unwrap();
        assert!(
            matches!(&m.content, Content::Text { text } if text == "final"),
            "{}: {:?}",
            b.name,
            m.content
        );
        let conversations = s
            .list_conversations(&Scope::All, &ConversationFilter::default(), &page(10))
            .await
            .unwrap();
        assert_eq!(conversations.items.len(), 1, "{}", b.name);
        assert_eq!(conversations.items[0].id, m.conversation_id, "{}", b.name);
        assert_eq!(
            conversations.items[0].title.as_deref(),
            Some("Team"),
            "{}",
            b.name
        );
    }
}

/// A first message from a known contact's phone and a send to that contact committed in
/// one batch (both wait behind a slow import): the send finds the identity and the
/// conversation the message made.
#[tokio::test]
async fn a_send_to_a_contact_sees_the_identity_its_first_message_made_in_the_same_batch() {
    for b in backends().await {
        let s = b.store.clone();
        tenant_with_bot(&s, "acme", "tg1").await;
        let phone = "+254700000099";
        let ada = s
            .create_contact(
                "acme",
                NewContact {
                    name: Some("Ada".into()),
                    phone: Some(phone.into()),
                    tags: vec![],
                    attributes: Default::default(),
                },
            )
            .await
            .unwrap();
        let slow: Vec<NewContact> = (0..5000)
            .map(|i| NewContact {
                name: None,
                phone: Some(format!("+2547100{i:05}")),
                tags: vec![],
                attributes: Default::default(),
            })
            .collect();
        let mut first = inbound("k1", "user-ada", "user-ada", "hello");
        let InboundEvent::Message(m) = &mut first else {
            unreachable!()
        };
        m.sender.as_mut().unwrap().phone = Some(phone.into());
        let mut reply = outbound("acme", "tg1", "", "hi Ada");
        reply.to = Recipient::Contact(ada.id.clone());
        let (imported, ingested, sent) = tokio::join!(
            s.bulk_contacts("acme", slow),
            s.ingest("tg1", vec![first]),
            s.enqueue(reply),
        );
        imported.unwrap();
        let ingested = ingested.unwrap();
        let IngestOutcome::Stored(id) = &ingested[0] else {
            panic!("{}: {ingested:?}", b.name)
        };
        let received = s.get_message(&Scope::All, id).await.unwrap();
        assert_eq!(
            received.contact_id.as_deref(),
            Some(ada.id.as_str()),
            "{}",
            b.name
        );
        let sent = sent.unwrap_or_else(|e| panic!("{}: {e}", b.name));
        assert_eq!(
            sent.message.conversation_id, received.conversation_id,
            "{}",
            b.name
        );
    }
}

/// The counters a restart starts from: messages received, sent and failed per bot.
#[tokio::test]
async fn start_up_counts_are_the_bots_received_sent_and_failed_messages() {
    for b in backends().await {
        let s = &b.store;
        tenant_with_bot(s, "acme", "tg1").await;
        tenant_with_bot(s, "acme", "tg2").await;
        let events = (0..3)
            .map(|i| inbound(&format!("k{i}"), "c1", "u1", "hi"))
            .collect();
        s.ingest("tg1", events).await.unwrap();
        s.ingest("tg2", vec![inbound("k9", "c9", "u9", "hi")])
            .await
            .unwrap();
        let sent = s.enqueue(outbound("acme", "tg1", "c1", "a")).await.unwrap();
        let failed = s.enqueue(outbound("acme", "tg1", "c1", "b")).await.unwrap();
        s.enqueue(outbound("acme", "tg1", "c1", "still queued"))
            .await
            .unwrap();
        s.mark_sending(&sent.message.id).await.unwrap();
        s.mark_sent(&sent.message.id, "77", None).await.unwrap();
        s.mark_sending(&failed.message.id).await.unwrap();
        let error = MessageError {
            code: "permanent".into(),
            message: "blocked".into(),
            platform_code: None,
        };
        s.mark_failed(&failed.message.id, error).await.unwrap();
        let counts = s.bot_message_counts().await.unwrap();
        let tg1 = counts["tg1"];
        assert_eq!(
            (tg1.received, tg1.sent, tg1.failed),
            (3, 1, 1),
            "{}",
            b.name
        );
        let tg2 = counts["tg2"];
        assert_eq!(
            (tg2.received, tg2.sent, tg2.failed),
            (1, 0, 0),
            "{}",
            b.name
        );
    }
}
