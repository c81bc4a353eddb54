//! Hot reload: `POST /-/reload` and SIGHUP re-read `relay.yaml` and the
//! templates; a valid config applies to the next event, an invalid one is
//! rejected with its errors and the old one keeps working.

use std::process::Command;
use std::time::Duration;

use crate::fakes::FakeServer;
use crate::helpers::*;

fn config(url: &str) -> String {
    config_with(&format!(
        "targets:\n  hook: {{kind: webhook, url: \"{url}\"}}\n\
         routes:\n  - name: all\n    to: [hook]\n    template: note\n"
    ))
}

async fn reload(app: &TestApp) -> (u16, String) {
    let resp = app
        .client
        .post(format!("http://{}/-/reload", app.admin))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn wait_for_log(app: &TestApp, needle: &str) {
    for _ in 0..400 {
        if app.logs().contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no `{needle}` in the logs:\n{}", app.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_reload_applies_a_new_url_and_template_to_the_next_event() {
    let fake = FakeServer::webhook().await;
    let work = Workdir::new(&config(&fake.url("/first")));
    work.write(
        "templates/note.webhook.json.hbs",
        r#"{"v": "one", "event": "{{event}}"}"#,
    );
    let app = TestApp::spawn_in(work, &[]).await;
    assert_eq!(
        app.post_event(fixture("message_send_text_basic.json"))
            .await
            .status(),
        200
    );
    let got = fake.wait_for_accepted(1, Duration::from_secs(20)).await;
    assert_eq!(
        (got[0].path.as_str(), got[0].json()["v"].as_str()),
        ("/first", Some("one"))
    );

    app.work.write("relay.yaml", &config(&fake.url("/second")));
    app.work.write(
        "templates/note.webhook.json.hbs",
        r#"{"v": "two", "event": "{{event}}"}"#,
    );
    assert_eq!(reload(&app).await, (200, r#"{"reloaded":true}"#.to_owned()));
    assert_eq!(
        app.post_event(fixture("message_send_text_basic.json"))
            .await
            .status(),
        200
    );
    let got = fake.wait_for_accepted(2, Duration::from_secs(20)).await;
    assert_eq!(
        (got[1].path.as_str(), got[1].json()["v"].as_str()),
        ("/second", Some("two"))
    );

    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"crisp_relay_config_reloads_total{outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(app.logs().contains("configuration reloaded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_rejected_with_its_errors_and_the_old_one_keeps_working() {
    let fake = FakeServer::webhook().await;
    let work = Workdir::new(&config(&fake.url("/old")));
    work.write("templates/note.webhook.json.hbs", r#"{"v": "old"}"#);
    let app = TestApp::spawn_in(work, &[]).await;

    // A typo in a key, and a template that does not compile.
    app.work.write(
        "relay.yaml",
        &config(&fake.url("/new")).replace("routes:", "routs:"),
    );
    let (status, body) = reload(&app).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("relay.yaml:13:1") && body.contains("routes"),
        "{body}"
    );
    app.work.write("relay.yaml", &config(&fake.url("/new")));
    app.work
        .write("templates/note.webhook.json.hbs", r#"{"v": "{{#if x}}"}"#);
    let (status, body) = reload(&app).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("note.webhook.json.hbs"), "{body}");

    // Still the old config: old URL, old template.
    assert_eq!(
        app.post_event(fixture("message_send_text_basic.json"))
            .await
            .status(),
        200
    );
    let got = fake.wait_for_accepted(1, Duration::from_secs(20)).await;
    assert_eq!(
        (got[0].path.as_str(), got[0].json()["v"].as_str()),
        ("/old", Some("old"))
    );
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"crisp_relay_config_reloads_total{outcome="rejected"} 2"#),
        "{metrics}"
    );
    assert!(app.logs().contains("configuration rejected"));
    let get = app.admin_get("/-/reload").await;
    assert_eq!(get.status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_template_edit_for_the_next_event() {
    let fake = FakeServer::webhook().await;
    let work = Workdir::new(&config(&fake.url("/hook")));
    work.write("templates/note.webhook.json.hbs", r#"{"v": "before"}"#);
    let app = TestApp::spawn_in(work, &[]).await;
    app.work
        .write("templates/note.webhook.json.hbs", r#"{"v": "after"}"#);
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(app.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    wait_for_log(&app, "configuration reloaded").await;
    assert_eq!(
        app.post_event(fixture("message_send_text_basic.json"))
            .await
            .status(),
        200
    );
    let got = fake.wait_for_accepted(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].json()["v"].as_str(), Some("after"));
}
