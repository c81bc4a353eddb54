//! Actions need the token: a browser that never logged in submits the
//! replay form by hand, and is refused; the dead letter stays.

use super::*;
use crate::fakes::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_without_the_token_is_refused_and_the_dead_letter_stays() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let fake = FakeServer::webhook().await;
    fake.fail_next(1, 400, r#"{"error": "unknown field"}"#, &[]);
    let app = spawn_console(&webhook_target(
        "crm",
        &fake.url("/in/crisp"),
        "{initial_backoff: 50ms, max_backoff: 1s}",
    ))
    .await;
    post_events(&app, [message(1)]).await;
    wait_for_log(&app, "dead-lettered", 1).await;
    let before = api_dead_letters(&app).await;
    assert_eq!(before.len(), 1, "{before:?}");
    let id = dead_letter_id(&before[0]);

    // Never logged in: a page of the relay's that needs none, then a form
    // built and sent by hand, as another site's page could.
    let b = browser.at(app.admin);
    b.open("/healthz").await;
    let script = format!(
        "const f = document.createElement('form');
         f.method = 'post';
         f.action = '/ui/deadletters/replay';
         const i = document.createElement('input');
         i.name = 'id';
         i.value = {id};
         f.appendChild(i);
         document.body.appendChild(f);
         f.submit();
         return null;",
        id = serde_json::Value::String(id.clone())
    );
    b.execute(&script).await;
    let deadline = Instant::now() + WAIT;
    while b.path().await == "/healthz" {
        assert!(Instant::now() < deadline, "the form was not sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let path = b.path().await;
    if path != "/ui/login" {
        // Not sent to the login page: then a 403 page saying why.
        b.wait_for("p.error").await;
        assert!(
            b.find_all("p.flash").await.is_empty(),
            "a refused action shows a success flash"
        );
    }

    let after = api_dead_letters(&app).await;
    assert_eq!(
        after.iter().map(dead_letter_id).collect::<Vec<_>>(),
        vec![id],
        "the dead letter must stay"
    );
    assert_eq!(fake.received().len(), 1, "nothing was sent again");
}
