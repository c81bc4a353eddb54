//! Dead letters in the console: the list, one dead letter's page with the
//! event as received, replay from that page; and an event whose text is
//! hostile HTML shows as text, never as markup.

use super::*;
use crate::fakes::*;

/// Short retries (a 400 is not retried anyway).
const FAST_RETRY: &str = "{initial_backoff: 50ms, max_backoff: 1s}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_opened_and_replayed_from_the_console() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let fake = FakeServer::webhook().await;
    // A 400 from a webhook fails for good: the event becomes a dead letter.
    fake.fail_next(1, 400, r#"{"error": "unknown field"}"#, &[]);
    let app = spawn_console(&webhook_target("crm", &fake.url("/in/crisp"), FAST_RETRY)).await;
    post_events(&app, [message(7)]).await;
    wait_for_log(&app, "dead-lettered", 1).await;

    let b = browser.at(app.admin);
    b.login(TOKEN).await;
    b.open("/ui/deadletters").await;
    let row = "#deadletters tr[data-target=crm]";
    let id = b
        .find(row)
        .await
        .attr("data-id")
        .await
        .unwrap()
        .expect("the row has a data-id");
    b.wait_for_text(&format!("{row} td.event"), "message:send")
        .await;
    b.wait_for_text(&format!("{row} td.target"), "crm").await;
    b.wait_for_text(&format!("{row} td.attempts"), "1").await;
    let reason = b.text(&format!("{row} td.reason")).await;
    assert!(reason.contains("400"), "reason: {reason:?}");
    assert!(
        !b.text(&format!("{row} td.failed-at")).await.is_empty(),
        "no failed-at"
    );
    b.screenshot("deadletters").await;

    b.click(&format!("{row} a.open")).await;
    b.wait_for_path(&format!("/ui/deadletters/{id}")).await;
    b.find("#deadletter").await;
    let shown: serde_json::Value = serde_json::from_str(&b.text("#event-body").await)
        .expect("#event-body holds the event's JSON");
    assert_eq!(shown["data"]["content"], "msg 7", "{shown}");
    assert_eq!(fake.accepted().len(), 0, "nothing delivered yet");

    // The destination is fine again (the 400 was a one-off); replay.
    b.click("form#replay button[type=submit]").await;
    b.wait_for_path("/ui/deadletters").await;
    b.wait_for("p.flash").await;
    let got = fake.wait_for_accepted(1, WAIT).await;
    assert_eq!(
        seq_in(got[0].json()["data"]["content"].as_str().unwrap()),
        7
    );
    assert_eq!(fake.received().len(), 2, "one 400, then the replay");

    // Gone from the list once delivered.
    let deadline = Instant::now() + WAIT;
    loop {
        b.open("/ui/deadletters").await;
        if b.find_all(&format!("#deadletters tr[data-id=\"{id}\"]"))
            .await
            .is_empty()
        {
            break;
        }
        assert!(Instant::now() < deadline, "dead letter {id} still listed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_html_in_an_event_shows_as_text_and_never_runs() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let fake = FakeServer::webhook().await;
    // The destination's answer is shown too (the reason): hostile as well.
    fake.always(
        400,
        r#"<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>"#,
    );
    let app = spawn_console(&webhook_target("crm", &fake.url("/in/crisp"), FAST_RETRY)).await;
    // Its visitor text: <script>alert('xss')</script> ... <img src=x onerror=alert(1)> ...
    post_events(
        &app,
        [String::from_utf8(fixture("message_send_text_html.json")).unwrap()],
    )
    .await;
    wait_for_log(&app, "dead-lettered", 1).await;

    let b = browser.at(app.admin);
    b.login(TOKEN).await;
    b.open("/ui/deadletters").await;
    let row = "#deadletters tr[data-target=crm]";
    b.wait_for_text(&format!("{row} td.target"), "crm").await;
    assert_no_script_ran(&b).await;

    b.click(&format!("{row} a.open")).await;
    b.wait_for("#event-body").await;
    let text = b.text("#event-body").await;
    assert!(text.contains("<script>alert('xss')</script>"), "{text}");
    assert!(text.contains("<img src=x onerror=alert(1)>"), "{text}");
    assert!(
        b.find_all("#event-body *").await.is_empty(),
        "the event's text became elements in #event-body"
    );
    assert_no_script_ran(&b).await;
}

/// No element from the hostile text exists, nothing it carried ran, and no
/// `alert` is open.
async fn assert_no_script_ran(b: &Browser) {
    assert!(
        b.find_all("img[onerror]").await.is_empty(),
        "an img[onerror] in the page"
    );
    assert!(
        b.find_all("a[href^='javascript:']").await.is_empty(),
        "a javascript: link in the page"
    );
    let ran = b
        .execute(
            "return window.__xss !== undefined || [...document.scripts].some(s => s.text.includes('xss'))",
        )
        .await;
    assert_eq!(
        ran, false,
        "a script from the event or the answer is in the page"
    );
    assert!(
        b.client().get_alert_text().await.is_err(),
        "an alert is open"
    );
}
