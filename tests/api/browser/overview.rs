//! The overview (`/ui/`): a target's queue as the relay counts it, kept up
//! to date by the page itself while it stays open; and the same page on a
//! phone's screen.

use super::*;
use crate::fakes::*;

/// Retries without end (within the test), about once a second: the events
/// stay queued while the fake fails, and leave soon after it recovers.
const KEEP_RETRYING: &str = "{max_attempts: 1000, initial_backoff: 200ms, max_backoff: 1s}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_a_targets_queue_and_follows_it_without_a_reload() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let fake = FakeServer::webhook().await;
    fake.always(500, "upstream unavailable");
    let app = spawn_console(&webhook_target(
        "crm",
        &fake.url("/in/crisp"),
        KEEP_RETRYING,
    ))
    .await;
    post_events(&app, (0..3).map(message)).await;

    let b = browser.at(app.admin);
    b.login(TOKEN).await;
    let row = "#targets tr[data-target=crm]";
    let cell = |class: &str| format!("{row} td.{class}");
    b.wait_for_text(&format!("{row} th[scope=row]"), "crm")
        .await;
    b.wait_for_text(&cell("kind"), "webhook").await;
    b.wait_for_text(&cell("queue-depth"), "3").await;
    b.wait_for_text("#ingest dd[data-ingest=accepted]", "3")
        .await;
    b.wait_for_text("#store dd[data-store=engine]", "sqlite")
        .await;
    b.screenshot("overview").await;

    // A mark in this document: a reload would lose it.
    b.execute("window.__sameDocument = true; return null").await;

    // Two more arrive while the destination still fails.
    post_events(&app, (3..5).map(message)).await;
    b.wait_for_text(&cell("queue-depth"), "5").await;
    b.wait_for_text("#ingest dd[data-ingest=accepted]", "5")
        .await;

    // The destination recovers: the queue empties, in the open page.
    fake.clear();
    fake.wait_for_accepted(5, WAIT).await;
    b.wait_for_text(&cell("queue-depth"), "0").await;
    b.wait_for_text(&cell("delivered-1h"), "5").await;
    assert_eq!(
        b.execute("return window.__sameDocument === true").await,
        true,
        "the page was reloaded, not updated in place"
    );
    assert_eq!(b.path().await, "/ui/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_phone_the_overview_fits_the_screens_width() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let fake = FakeServer::webhook().await;
    let app = spawn_console(&webhook_target(
        "crm-webhook-eu-west-1",
        &fake.url("/in/crisp"),
        KEEP_RETRYING,
    ))
    .await;
    post_events(&app, [message(1)]).await;
    fake.wait_for_accepted(1, WAIT).await;

    let b = browser.at(app.admin);
    b.resize(390, 844).await;
    b.login(TOKEN).await;
    assert_eq!(b.execute("return window.innerWidth").await, 390);
    let table = b.find("#targets").await;
    assert!(table.is_displayed().await.unwrap(), "#targets is hidden");
    b.wait_for_text(
        "#targets tr[data-target=crm-webhook-eu-west-1] td.delivered-1h",
        "1",
    )
    .await;
    // Tables may scroll inside their own box; the page itself must not.
    let widths = b
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth, document.body.scrollWidth]",
        )
        .await;
    let fits = b
        .execute("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        .await;
    assert_eq!(
        fits, true,
        "the page scrolls sideways on a phone: [scrollWidth, innerWidth, body.scrollWidth] = {widths}"
    );
    b.screenshot("overview-phone").await;
}
