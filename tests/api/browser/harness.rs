//! The harness's own tests, which need no console: chromedriver, Chromium
//! and the relay work together, and the window takes a phone's width.

use serde_json::Value;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_the_relays_health_as_json() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let b = browser.at(app.admin);

    b.open("/healthz").await;
    assert_eq!(b.path().await, "/healthz");
    // Chromium shows a JSON answer as text in the page's body.
    let shown = b.text("body").await;
    let health: Value = serde_json::from_str(&shown)
        .unwrap_or_else(|e| panic!("the page does not read as JSON ({e}): {shown:?}"));
    assert_eq!(health["status"], "ok", "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_takes_a_phones_width() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let b = browser.at(app.admin);

    b.open("/healthz").await;
    assert_eq!(b.execute("return window.innerWidth").await, 1280);
    b.resize(390, 844).await;
    b.open("/healthz").await;
    assert_eq!(b.execute("return window.innerWidth").await, 390);
    assert!(b.find_all("#no-such-element").await.is_empty());
}
