//! Twilio: the create answer, signed status callbacks, errors, balance, the per-sender queue,
//! messaging services, failing numbers, concurrency and inbound SMS.

use std::time::Duration;

use switchboard_sim::{Faults, Provider, SmsConfig};

use super::*;

#[tokio::test]
async fn twilio_send_answers_201_queued_then_signed_callbacks_report_sent_and_delivered() {
    let (sim, receiver) = start().await;
    let callback = receiver.url("/status?bot=7");
    let form = [
        ("To", USER),
        ("From", TWILIO_NUMBER),
        ("Body", "hello"),
        ("StatusCallback", &callback),
    ];
    let (status, answer) = twilio_create(&sim, &form).await;
    assert_eq!(status, 201, "{answer}");
    let sid = answer["sid"].as_str().unwrap().to_owned();
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
    assert_eq!(answer["account_sid"], TWILIO_SID);
    assert_eq!(
        (answer["to"].as_str(), answer["from"].as_str()),
        (Some(USER), Some(TWILIO_NUMBER))
    );
    assert_eq!(answer["status"], "queued");
    assert_eq!(answer["num_segments"], "1");
    assert_eq!(answer["direction"], "outbound-api");
    assert_eq!(answer["price_unit"], "USD");
    assert!(answer["error_code"].is_null() && answer["price"].is_null());
    assert!(answer["date_created"].as_str().unwrap().ends_with(" +0000"));
    assert_eq!(
        answer["uri"],
        format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages/{sid}.json")
    );

    let posts = receiver.wait_for("/status?bot=7", 2).await;
    let statuses: Vec<String> = posts.iter().map(|p| p.param("MessageStatus")).collect();
    assert_eq!(statuses, ["sent", "delivered"]);
    for post in &posts {
        assert_eq!(post.signature_valid, Some(true), "{post:?}");
        assert!(
            post.content_type
                .starts_with("application/x-www-form-urlencoded")
        );
        assert_eq!(post.param("MessageSid"), sid);
        assert_eq!(post.param("SmsSid"), sid);
        assert_eq!(post.param("AccountSid"), TWILIO_SID);
        assert_eq!(
            (post.param("From"), post.param("To")),
            (TWILIO_NUMBER.into(), USER.into())
        );
        assert_eq!(post.param("ApiVersion"), "2010-04-01");
        assert_eq!(post.param("ErrorCode"), "");
    }
    assert!(sim.settle(Duration::from_secs(2)).await);
    let (status, fetched) = twilio_get(&sim, &format!("Messages/{sid}.json")).await;
    assert_eq!(
        (status, fetched["status"].as_str()),
        (200, Some("delivered"))
    );
    assert_eq!(fetched["price"], "-0.00790");
    let sent = sim.sent(Provider::Twilio, TWILIO_SID);
    assert_eq!(
        (sent.len(), sent[0].encoding.as_str(), sent[0].segments),
        (1, "GSM-7", 1)
    );
}

#[tokio::test]
async fn twilio_rejects_bad_credentials_invalid_to_foreign_from_and_long_bodies() {
    let (sim, _receiver) = start().await;
    let ok = [("To", USER), ("From", TWILIO_NUMBER), ("Body", "hi")];
    let (status, answer) = twilio_create_as(&sim, "wrong-token", &ok).await;
    assert_eq!(
        (status, answer["code"].as_u64()),
        (401, Some(20003)),
        "{answer}"
    );
    assert_eq!(
        answer["more_info"],
        "https://www.twilio.com/docs/errors/20003"
    );

    let (status, answer) = twilio_create(
        &sim,
        &[
            ("To", "0711000000"),
            ("From", TWILIO_NUMBER),
            ("Body", "hi"),
        ],
    )
    .await;
    assert_eq!(
        (status, answer["code"].as_u64(), answer["status"].as_u64()),
        (400, Some(21211), Some(400))
    );
    assert!(answer["message"].as_str().unwrap().contains("0711000000"));

    let (status, answer) = twilio_create(
        &sim,
        &[("To", USER), ("From", "+15559999999"), ("Body", "hi")],
    )
    .await;
    assert_eq!((status, answer["code"].as_u64()), (400, Some(21606)));

    let long = "a".repeat(1601);
    let (status, answer) = twilio_create(
        &sim,
        &[("To", USER), ("From", TWILIO_NUMBER), ("Body", &long)],
    )
    .await;
    assert_eq!((status, answer["code"].as_u64()), (400, Some(21617)));
    assert_eq!(
        answer["message"],
        "The concatenated message body exceeds the 1600 character limit"
    );

    assert!(sim.sent(Provider::Twilio, TWILIO_SID).is_empty());
    assert_eq!(sim.balance(Provider::Twilio, TWILIO_SID), 10.0);
}

#[tokio::test]
async fn twilio_balance_runs_out_mid_run_with_20003_and_a_top_up_resumes_sending() {
    let config = SmsConfig {
        twilio_price: 1.0,
        ..fast()
    };
    let (sim, _receiver) = start_with(config, 0).await;
    sim.set_balance(Provider::Twilio, TWILIO_SID, 2.5);
    let form = [("To", USER), ("From", TWILIO_NUMBER), ("Body", "x")];
    let statuses = [
        twilio_create(&sim, &form).await,
        twilio_create(&sim, &form).await,
        twilio_create(&sim, &form).await,
    ];
    assert_eq!(
        statuses.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [201, 201, 401]
    );
    let refused = &statuses[2].1;
    assert_eq!(refused["code"], 20003);
    assert_eq!(
        refused["message"],
        "Permission Denied: the account's balance is exhausted"
    );
    let (status, balance) = twilio_get(&sim, "Balance.json").await;
    assert_eq!(status, 200);
    assert_eq!(
        (balance["balance"].as_str(), balance["currency"].as_str()),
        (Some("0.50000"), Some("USD"))
    );
    assert_eq!(balance["account_sid"], TWILIO_SID);
    // Two segments cost twice: 1.5 is not enough for 200 characters.
    sim.set_balance(Provider::Twilio, TWILIO_SID, 1.5);
    let long = "b".repeat(200);
    let (status, _) = twilio_create(
        &sim,
        &[("To", USER), ("From", TWILIO_NUMBER), ("Body", &long)],
    )
    .await;
    assert_eq!(status, 401);
    sim.set_balance(Provider::Twilio, TWILIO_SID, 5.0);
    let (status, answer) = twilio_create(
        &sim,
        &[("To", USER), ("From", TWILIO_NUMBER), ("Body", &long)],
    )
    .await;
    assert_eq!((status, answer["num_segments"].as_str()), (201, Some("2")));
    assert!((sim.balance(Provider::Twilio, TWILIO_SID) - 3.0).abs() < 1e-9);
    assert_eq!(sim.sent(Provider::Twilio, TWILIO_SID).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_sender_queue_drains_at_the_configured_segments_per_second() {
    let config = SmsConfig {
        twilio_segments_per_second: 20.0,
        ..fast()
    };
    let (sim, receiver) = start_with(config, 0).await;
    let callback = receiver.url("/status");
    let two_segments = "c".repeat(200);
    let bodies = [two_segments.as_str(), "one", "two", "three"];
    for body in bodies {
        let form = [
            ("To", USER),
            ("From", TWILIO_NUMBER),
            ("Body", body),
            ("StatusCallback", &callback),
        ];
        assert_eq!(twilio_create(&sim, &form).await.0, 201);
    }
    assert!(sim.settle(Duration::from_secs(2)).await);
    // When each `sent` callback was POSTed (the receiver's clock would add connection setup).
    let sent_at: Vec<_> = sim
        .deliveries()
        .into_iter()
        .filter(|d| d.param("MessageStatus").as_deref() == Some("sent"))
        .map(|d| d.at)
        .collect();
    assert_eq!(sent_at.len(), 4);
    // 2 segments then 1, 1: departures at 0, 100, 150, 200 ms (50 ms per segment).
    let gaps: Vec<u128> = sent_at
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert!((70..=150).contains(&gaps[0]), "{gaps:?}");
    assert!(gaps[1..].iter().all(|g| (25..=100).contains(g)), "{gaps:?}");
    let span = (sent_at[3] - sent_at[0]).as_millis();
    assert!((160..=320).contains(&span), "{span}");
}

#[tokio::test]
async fn twilio_full_sender_queue_answers_21611() {
    let config = SmsConfig {
        twilio_segments_per_second: 1.0,
        twilio_queue_limit: 2,
        ..fast()
    };
    let (sim, _receiver) = start_with(config, 0).await;
    let form = [("To", USER), ("From", TWILIO_NUMBER), ("Body", "q")];
    // The first leaves at once; the next two wait; the fourth finds the queue full.
    for _ in 0..3 {
        assert_eq!(twilio_create(&sim, &form).await.0, 201);
    }
    let (status, answer) = twilio_create(&sim, &form).await;
    assert_eq!(
        (status, answer["code"].as_u64()),
        (400, Some(21611)),
        "{answer}"
    );
    assert!((sim.balance(Provider::Twilio, TWILIO_SID) - (10.0 - 3.0 * 0.0079)).abs() < 1e-9);
}

#[tokio::test]
async fn twilio_messaging_service_sends_from_its_pool_and_answers_accepted() {
    let (sim, receiver) = start().await;
    sim.add_twilio_messaging_service(TWILIO_SID, "MG0001", &["+15550002222"]);
    let callback = receiver.url("/status");
    let form = [
        ("To", USER),
        ("MessagingServiceSid", "MG0001"),
        ("Body", "svc"),
        ("StatusCallback", &callback),
    ];
    let (status, answer) = twilio_create(&sim, &form).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (201, Some("accepted")),
        "{answer}"
    );
    assert_eq!(answer["messaging_service_sid"], "MG0001");
    let posts = receiver.wait_for("/status", 1).await;
    assert_eq!(posts[0].param("From"), "+15550002222");
    let (status, answer) = twilio_create(
        &sim,
        &[("To", USER), ("MessagingServiceSid", "MG9"), ("Body", "x")],
    )
    .await;
    assert_eq!((status, answer["code"].as_u64()), (400, Some(21701)));
}

#[tokio::test]
async fn twilio_failed_numbers_report_undelivered_30003_or_failed_30007_without_sent() {
    let (sim, receiver) = start().await;
    sim.fail_number("+254700000001", "30003");
    sim.fail_number("+254700000002", "30007");
    for (to, path) in [("+254700000001", "/a"), ("+254700000002", "/b")] {
        let callback = receiver.url(path);
        let form = [
            ("To", to),
            ("From", TWILIO_NUMBER),
            ("Body", "x"),
            ("StatusCallback", &callback),
        ];
        assert_eq!(twilio_create(&sim, &form).await.0, 201);
    }
    assert!(sim.settle(Duration::from_secs(2)).await);
    let undelivered = receiver.posts_to("/a");
    let statuses: Vec<String> = undelivered
        .iter()
        .map(|p| p.param("MessageStatus"))
        .collect();
    assert_eq!(statuses, ["sent", "undelivered"]);
    assert_eq!(undelivered[1].param("ErrorCode"), "30003");
    let failed = receiver.posts_to("/b");
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (
            failed[0].param("MessageStatus"),
            failed[0].param("ErrorCode")
        ),
        ("failed".into(), "30007".into())
    );
    assert_eq!(failed[0].signature_valid, Some(true));
}

#[tokio::test]
async fn twilio_requests_over_the_account_concurrency_answer_20429() {
    let config = SmsConfig {
        twilio_concurrency: 1,
        ..fast()
    };
    let (sim, _receiver) = start_with(config, 0).await;
    sim.set_faults(Faults {
        latency: Duration::from_millis(300),
        ..Faults::default()
    });
    let form = [("To", USER), ("From", TWILIO_NUMBER), ("Body", "x")];
    let (first, second) = tokio::join!(twilio_create(&sim, &form), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        twilio_create(&sim, &form).await
    });
    assert_eq!(first.0, 201);
    assert_eq!((second.0, second.1["code"].as_u64()), (429, Some(20429)));
    assert_eq!(sim.counters().responses_429, 1);
    assert_eq!(sim.requests().len(), 2);
}

#[tokio::test]
async fn twilio_inbound_posts_a_signed_form_to_the_numbers_sms_url() {
    let (sim, receiver) = start().await;
    let status = sim
        .twilio_inbound(TWILIO_SID, USER, TWILIO_NUMBER, "hi 😀")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let posts = receiver.posts_to("/inbound?number=1");
    assert_eq!(posts.len(), 1);
    let post = &posts[0];
    assert_eq!(post.signature_valid, Some(true));
    assert!(post.param("MessageSid").starts_with("SM"));
    assert_eq!(post.param("SmsSid"), post.param("MessageSid"));
    assert_eq!(
        (post.param("From"), post.param("To")),
        (USER.into(), TWILIO_NUMBER.into())
    );
    assert_eq!(
        (post.param("Body"), post.param("NumMedia")),
        ("hi 😀".into(), "0".into())
    );
    assert_eq!(
        (post.param("NumSegments"), post.param("AccountSid")),
        ("1".into(), TWILIO_SID.into())
    );
    assert!(
        post.params()
            .iter()
            .any(|(k, v)| k == "MessagingServiceSid" && v.is_empty())
    );
    assert!(
        sim.twilio_inbound(TWILIO_SID, USER, "+15550009999", "x")
            .await
            .is_err()
    );
    assert_eq!(sim.counters().updates_delivered, 1);
}
