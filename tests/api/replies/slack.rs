//! Replies written in a Slack thread reach the visitor in Crisp.

use super::*;

/// The texts of a Slack thread's replies, in order.
fn thread_texts(slack: &FakeSlackApi, ts: &str) -> Vec<String> {
    slack
        .replies(CHANNEL, ts)
        .into_iter()
        .map(|m| m.text)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_in_a_thread_reach_crisp_in_order_as_the_agent() {
    let (slack, crisp, app) = start().await;
    let ann = open_thread(&app, &slack, "ann", 1).await;
    let bob = open_thread(&app, &slack, "bob", 2).await;

    let replies = [
        (
            "Ev1",
            &ann,
            "1.000001",
            "Hello &amp; welcome, <@U0VISIT|ann>!",
            "Ana",
        ),
        ("Ev2", &bob, "1.000002", "Hi Bob", "Ana"),
        (
            "Ev3",
            &ann,
            "1.000003",
            "It is billed monthly: <https://x.io/p|pricing>",
            "Ana",
        ),
        ("Ev4", &ann, "1.000004", "Anything else?", "Ben"),
    ];
    for (id, thread, ts, text, name) in replies {
        let (status, _) = send_slack(
            &app,
            &reply_event(id, thread, ts, text, name),
            SIGNING_SECRET,
            now_secs(),
            &[],
        )
        .await;
        assert_eq!(status, 200, "{id}");
    }
    eventually("four replies in Crisp", || crisp.messages().len() == 4).await;
    let got: Vec<(String, String, String)> = crisp
        .messages()
        .iter()
        .filter(|m| m.session_id == "session_ann")
        .map(|m| (m.website_id.clone(), m.content(), m.nickname().to_owned()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("w1".into(), "Hello & welcome, @ann!".into(), "Ana".into()),
            (
                "w1".into(),
                "It is billed monthly: pricing (https://x.io/p)".into(),
                "Ana".into()
            ),
            ("w1".into(), "Anything else?".into(), "Ben".into()),
        ]
    );
    let bobs: Vec<String> = crisp
        .messages()
        .iter()
        .filter(|m| m.session_id == "session_bob")
        .map(|m| m.content())
        .collect();
    assert_eq!(bobs, vec!["Hi Bob"]);
    let m = &crisp.messages()[0];
    assert_eq!(m.body["type"], "text");
    assert_eq!(m.body["from"], "operator");
    assert_eq!(m.body["origin"], "chat");
    assert_eq!(m.body["user"]["avatar"], "https://avatars.example/72.png");
    let req = &crisp.received()[0];
    assert_eq!(req.header("x-crisp-tier"), Some("website"));
    // Nothing went back into the threads, and no secret reached the logs.
    assert!(thread_texts(&slack, &ann).is_empty());
    let logs = app.logs();
    for secret in [SIGNING_SECRET, CRISP_KEY, BOT_TOKEN] {
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_signed_fresh_requests_from_people_in_mapped_threads_become_replies() {
    let (slack, crisp, app) = start().await;
    let ann = open_thread(&app, &slack, "ann", 1).await;

    // The handshake Slack does when the Request URL is set.
    let (status, body) = send_slack(
        &app,
        &json!({"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}),
        SIGNING_SECRET,
        now_secs(),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );

    let event = |id: &str, text: &str| reply_event(id, &ann, "1.000009", text, "Ana");
    // Refused: another secret, a stale timestamp, no signature.
    let (status, body) = send_slack(
        &app,
        &event("EvBad1", "forged"),
        "wrong-secret",
        now_secs(),
        &[],
    )
    .await;
    assert_eq!(status, 401);
    assert!(!body.contains("signature"), "no detail: {body}");
    let (status, _) = send_slack(
        &app,
        &event("EvBad2", "replayed"),
        SIGNING_SECRET,
        now_secs() - 301,
        &[],
    )
    .await;
    assert_eq!(status, 401);
    let unsigned = app
        .client
        .post(format!("http://{}/slack/events", app.ingest))
        .header("content-type", "application/json")
        .body(event("EvBad3", "unsigned").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);

    // Acknowledged, but not replies: a bot (the relay's own posts carry a
    // bot_id), an edit, a thread that is no conversation's, the parent.
    let mut bot = event("EvBot", "from a bot");
    bot["event"]["bot_id"] = json!("B0FAKEBOT01");
    let mut edit = event("EvEdit", "an edit");
    edit["event"]["subtype"] = json!("message_changed");
    let elsewhere = reply_event("EvElse", "9.999999", "9.999998", "elsewhere", "Ana");
    let mut parent = event("EvParent", "the parent");
    parent["event"]["ts"] = json!(ann);
    for e in [bot, edit, elsewhere, parent] {
        let (status, _) = send_slack(&app, &e, SIGNING_SECRET, now_secs(), &[]).await;
        assert_eq!(status, 200, "{e}");
    }
    // Slack's retries of one event: relayed once.
    let good = event("EvGood", "the real one");
    assert_eq!(
        send_slack(&app, &good, SIGNING_SECRET, now_secs(), &[])
            .await
            .0,
        200
    );
    for n in ["1", "2"] {
        let (status, _) = send_slack(
            &app,
            &good,
            SIGNING_SECRET,
            now_secs(),
            &[
                ("X-Slack-Retry-Num", n),
                ("X-Slack-Retry-Reason", "http_timeout"),
            ],
        )
        .await;
        assert_eq!(status, 200);
    }
    // A later reply marks the end: everything before it has been decided.
    let last = event("EvLast", "the last one");
    assert_eq!(
        send_slack(&app, &last, SIGNING_SECRET, now_secs(), &[])
            .await
            .0,
        200
    );
    eventually("the last reply", || {
        crisp
            .messages()
            .iter()
            .any(|m| m.content() == "the last one")
    })
    .await;
    let contents: Vec<String> = crisp.messages().iter().map(|m| m.content()).collect();
    assert_eq!(contents, vec!["the real one", "the last one"]);
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    for (outcome, want) in [("accepted", 2.0), ("duplicate", 2.0), ("unauthorized", 3.0)] {
        let series =
            format!("crisp_relay_replies_received_total{{source=\"slack\",outcome=\"{outcome}\"}}");
        assert_eq!(metric(&metrics, &series), Some(want), "{series}\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_coming_back_from_crisp_is_not_posted_again_but_crisp_operators_are() {
    let (slack, crisp, app) = start().await;
    let ann = open_thread(&app, &slack, "ann", 1).await;
    let e = reply_event("Ev1", &ann, "1.000001", "We ship on Monday.", "Ana");
    assert_eq!(
        send_slack(&app, &e, SIGNING_SECRET, now_secs(), &[])
            .await
            .0,
        200
    );
    eventually("the reply in Crisp", || crisp.messages().len() == 1).await;
    let fingerprint = crisp.messages()[0].fingerprint;

    // Crisp's hook sends the operator message back: by fingerprint and text,
    // then one with the text only (as if the hook beat Crisp's answer).
    let echo = operator_message("ann", "We ship on Monday.", fingerprint);
    assert_eq!(app.post_event(echo).await.status(), 200);
    let echo_text_only = operator_message("ann", "We ship on Monday.", 1);
    assert_eq!(app.post_event(echo_text_only).await.status(), 200);
    // An operator writing in the Crisp app is shown in the thread.
    let typed = operator_message("ann", "Typed in Crisp", 99);
    assert_eq!(app.post_event(typed).await.status(), 200);
    // And the visitor's next message, after them all.
    assert_eq!(app.post_event(conv_message("ann", 2)).await.status(), 200);
    eventually("the visitor's next message", || {
        thread_texts(&slack, &ann)
            .iter()
            .any(|t| t.contains("msg 2"))
    })
    .await;
    assert_eq!(thread_texts(&slack, &ann), vec!["Typed in Crisp", "msg 2"]);
    assert!(app.logs().contains("came back"), "{}", app.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_sees_a_check_mark_or_a_warning_and_why() {
    let (slack, crisp, app) = start().await;
    let ann = open_thread(&app, &slack, "ann", 1).await;
    // Two replies written in the thread; Crisp refuses the second for good.
    let ok_ts = slack.post_as_person(CHANNEL, &ann, "first");
    let bad_ts = slack.post_as_person(CHANNEL, &ann, "second");
    let e = reply_event("Ev1", &ann, &ok_ts, "first", "Ana");
    assert_eq!(
        send_slack(&app, &e, SIGNING_SECRET, now_secs(), &[])
            .await
            .0,
        200
    );
    eventually("the check mark", || {
        slack.reactions(CHANNEL, &ok_ts) == vec!["white_check_mark".to_string()]
    })
    .await;
    crisp.fail_next(
        1,
        400,
        r#"{"error":true,"reason":"invalid_data","data":{}}"#,
        &[],
    );
    let e = reply_event("Ev2", &ann, &bad_ts, "second", "Ana");
    assert_eq!(
        send_slack(&app, &e, SIGNING_SECRET, now_secs(), &[])
            .await
            .0,
        200
    );
    eventually("the warning", || {
        slack.reactions(CHANNEL, &bad_ts) == vec!["warning".to_string()]
    })
    .await;
    eventually("the note", || {
        thread_texts(&slack, &ann)
            .iter()
            .any(|t| t.starts_with("⚠️ This reply did not reach the visitor in Crisp"))
    })
    .await;
    let note = thread_texts(&slack, &ann)
        .into_iter()
        .find(|t| t.starts_with("⚠️"))
        .unwrap();
    assert!(note.contains("400"), "{note}");
    assert!(!note.contains(CRISP_KEY) && !note.contains(BOT_TOKEN));
    let contents: Vec<String> = crisp.messages().iter().map(|m| m.content()).collect();
    assert_eq!(contents, vec!["first"]);
}
