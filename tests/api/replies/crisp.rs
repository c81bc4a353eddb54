//! Crisp down, refusing, or the relay killed: replies wait, in order, and
//! none is lost.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_wait_out_a_crisp_outage_and_arrive_in_order() {
    let (slack, crisp, app) = start().await;
    let ann = open_thread(&app, &slack, "ann", 1).await;
    // Crisp is down for the next three requests, then back: each retry
    // waits its backoff (at most 1, 2, 4 s), nothing is lost or reordered.
    crisp.fail_next(
        3,
        503,
        r#"{"error":true,"reason":"service_unavailable","data":{}}"#,
        &[],
    );
    for n in 1..=3 {
        let e = reply_event(
            &format!("Ev{n}"),
            &ann,
            &format!("1.00000{n}"),
            &format!("reply {n}"),
            "Ana",
        );
        assert_eq!(
            send_slack(&app, &e, SIGNING_SECRET, now_secs(), &[])
                .await
                .0,
            200
        );
    }
    eventually("three replies", || crisp.messages().len() == 3).await;
    assert_eq!(crisp.count_status(503), 3);
    let got: Vec<String> = crisp.messages().iter().map(|m| m.content()).collect();
    assert_eq!(got, vec!["reply 1", "reply 2", "reply 3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_crisp_token_pauses_replies_until_a_reload() {
    let slack = FakeSlackApi::start(BOT_TOKEN).await;
    slack.add_channel(CHANNEL, true);
    // The relay's key is not the one Crisp accepts.
    let crisp = FakeCrisp::start(CRISP_ID, "the-right-key").await;
    let app = TestApp::spawn_in(replies_config(&slack, &crisp), ENV).await;
    let ann = open_thread(&app, &slack, "ann", 1).await;
    let e = reply_event("Ev1", &ann, "1.000001", "kept", "Ana");
    assert_eq!(
        send_slack(&app, &e, SIGNING_SECRET, now_secs(), &[])
            .await
            .0,
        200
    );
    eventually("replies paused", || app.logs().contains("target paused")).await;
    let ready = app.admin_get("/readyz").await.text().await.unwrap();
    assert!(ready.contains("\"crisp\""), "{ready}");
    assert_eq!(crisp.count_status(401), 1, "one refusal pauses");
    assert!(!app.logs().contains(CRISP_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_acknowledged_to_slack_survives_a_sigkill() {
    let (slack, crisp, mut app) = start().await;
    let ann = open_thread(&app, &slack, "ann", 1).await;
    // Crisp is down: the reply is taken (200 to Slack) but cannot be sent.
    crisp.always(
        503,
        r#"{"error":true,"reason":"service_unavailable","data":{}}"#,
    );
    let e = reply_event("Ev1", &ann, "1.000001", "survives", "Ana");
    assert_eq!(
        send_slack(&app, &e, SIGNING_SECRET, now_secs(), &[])
            .await
            .0,
        200
    );
    app.kill();
    crisp.clear();
    assert!(crisp.messages().is_empty());
    let app = TestApp::spawn_in(app.into_work(), ENV).await;
    // Its next attempt waits out the backoff of those before the kill
    // (longer if a loaded machine let several fail first).
    eventually_within("the reply in Crisp", 120, || !crisp.messages().is_empty()).await;
    let got: Vec<String> = crisp.messages().iter().map(|m| m.content()).collect();
    assert_eq!(got, vec!["survives"]);
    drop(app);
}
