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

/// Sends `signal` (`-HUP`, `-TERM`) to the relay.
fn signal(app: &TestApp, signal: &str) {
    let status = Command::new("kill")
        .arg(signal)
        .arg(app.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A Discord target with the default quota (5 per 2 s) and a template
/// that carries the message text.
fn discord_config(url: &str, template: &str, extra: &str) -> String {
    config_with(&format!(
        "targets:\n  chat: {{kind: discord, url: \"{url}\"{extra}}}\n\
         routes:\n  - name: all\n    to: [chat]\n    template: {template}\n"
    ))
}

/// A configuration-management loop sending SIGHUP every second must not
/// cost the rate limit: each reload keeps the target's limiter (its spent
/// burst, what Discord's headers said) while the kind and URL are the same.
/// With a fresh limiter per reload, every reload would allow a new burst of
/// five into a bucket Discord says is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_every_second_keeps_the_rate_limit_and_provokes_no_429() {
    const N: usize = 25;
    let fake = FakeServer::discord(5, Duration::from_secs(2)).await;
    let work = Workdir::new(&discord_config(&fake.discord_url(), "note", ""));
    work.write("templates/note.discord.hbs", "{{data.content}}");
    let app = TestApp::spawn_in(work, &[]).await;
    for seq in 1..=N {
        assert_eq!(app.post_event(message(seq)).await.status(), 200);
    }
    let mut reloads = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fake.accepted().len() < N {
        assert!(
            std::time::Instant::now() < deadline,
            "not all delivered: {} of {N}",
            fake.accepted().len()
        );
        signal(&app, "-HUP");
        reloads += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let seqs: Vec<usize> = fake
        .accepted()
        .iter()
        .map(|r| seq_in(&r.body_text()))
        .collect();
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>());
    let ok = app.logs().matches("configuration reloaded").count();
    println!(
        "{N} messages to a 5-per-2s Discord bucket across {reloads} SIGHUPs ({ok} reloads done)"
    );
    assert!(ok >= 5, "only {ok} reloads happened");
    assert_eq!(fake.count_status(429), 0, "requests answered 429");
}

/// A SIGTERM that arrives while a reload waits for an in-flight send is
/// honoured at once: the signal loop only asks for the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_a_reload_stops_the_relay_at_once() {
    let fake = FakeServer::webhook().await;
    // The destination takes two minutes to answer; the send may wait five.
    fake.set_delay(Duration::from_secs(120));
    let work = Workdir::new(&config_with(&format!(
        "targets:\n  hook: {{kind: webhook, url: \"{}\", timeout: 300s}}\n\
         routes:\n  - name: all\n    to: [hook]\n",
        fake.url("/slow")
    )));
    work.write(
        "relay.yaml",
        &std::fs::read_to_string(work.config_path())
            .unwrap()
            .replace("max_body: 64KiB", "max_body: 64KiB\n  shutdown_timeout: 1s"),
    );
    let mut app = TestApp::spawn_in(work, &[]).await;
    assert_eq!(app.post_event(message(1)).await.status(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fake.received().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the send never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The reload now waits for the in-flight send to finish (two minutes).
    signal(&app, "-HUP");
    wait_for_log(&app, "SIGHUP: reloading").await;
    signal(&app, "-TERM");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = app.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "SIGTERM was not honoured during the reload; logs:\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}\n{}", app.logs());
    assert!(app.logs().contains("signal received; shutting down"));
}

/// What a reload cannot apply is named; the rest applies at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_names_the_start_up_settings_it_cannot_apply_and_applies_the_rest() {
    let fake = FakeServer::webhook().await;
    let base = config(&fake.url("/hook"));
    let work = Workdir::new(&base.replace(
        "max_body: 64KiB",
        "max_body: 64KiB\n  body_read_timeout: 60s",
    ));
    work.write("templates/note.webhook.json.hbs", r#"{"v": 1}"#);
    let app = TestApp::spawn_in(work, &[]).await;

    // Start-up settings change (connection limit, store queue), and so do
    // settings that apply at once (the body timeout).
    app.work.write(
        "relay.yaml",
        &base
            .replace(
                "max_body: 64KiB",
                "max_body: 64KiB\n  body_read_timeout: 1s\n  max_connections: 7",
            )
            .replace(
                "path: data/relay.db",
                "path: data/relay.db\n  queue_capacity: 9",
            ),
    );
    assert_eq!(reload(&app).await.0, 200);
    wait_for_log(&app, "only take effect after a restart").await;
    let line = app
        .logs()
        .lines()
        .find(|l| l.contains("only take effect after a restart"))
        .unwrap()
        .to_owned();
    assert!(
        line.contains("settings=server.max_connections, store.queue_capacity")
            && !line.contains("listen")
            && !line.contains("store.path"),
        "{line}"
    );
    // The new body timeout (1 s, was 60 s) applies to the next request: a
    // body that never comes is answered 408 well before the old timeout.
    let mut stream = tokio::net::TcpStream::connect(app.ingest).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            format!(
                "POST /crisp/hooks?key={KEY} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut answer))
        .await
        .expect("no answer: the old 60 s body timeout still applies")
        .unwrap();
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
}

/// Queued deliveries whose template a reload removes are neither sent, nor
/// dead-lettered, nor stranded silently: they are logged and counted
/// (`crisp_relay_orphaned_deliveries`), `check` lists them, and they go out,
/// in order, once a reload brings the template back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_orphaned_by_a_reload_wait_for_their_template_and_then_go_in_order() {
    let fake = FakeServer::discord(50, Duration::from_secs(1)).await;
    // The destination is down while the events arrive.
    fake.always(503, "down");
    let retry = ", retry: {initial_backoff: 50ms, max_backoff: 1s}";
    let work = Workdir::new(&discord_config(&fake.discord_url(), "note", retry));
    work.write("templates/note.discord.hbs", "{{data.content}}");
    let app = TestApp::spawn_in(work, &[]).await;
    for seq in 1..=3 {
        assert_eq!(app.post_event(message(seq)).await.status(), 200);
    }
    // The template is renamed while they wait; the destination recovers.
    std::fs::remove_file(app.work.path().join("templates/note.discord.hbs")).unwrap();
    app.work
        .write("templates/note2.discord.hbs", "{{data.content}}");
    app.work.write(
        "relay.yaml",
        &discord_config(&fake.discord_url(), "note2", retry),
    );
    assert_eq!(reload(&app).await.0, 200);
    fake.clear();
    wait_for_log(
        &app,
        "queued deliveries cannot be sent with this configuration",
    )
    .await;
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert_eq!(
        metric(&metrics, "crisp_relay_orphaned_deliveries{target=\"chat\"}"),
        Some(3.0),
        "{metrics}"
    );
    // New events (with the new template) still go; the orphans wait.
    assert_eq!(app.post_event(message(4)).await.status(), 200);
    let got = fake.wait_for_accepted(1, Duration::from_secs(20)).await;
    assert_eq!(seq_in(&got[0].body_text()), 4);
    let check = app.work.run(&["check"]);
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{out}");
    assert!(
        out.contains("3 queued deliveries") && out.contains("template `note`"),
        "{out}"
    );

    // The template comes back: the three go, in their order.
    app.work
        .write("templates/note.discord.hbs", "{{data.content}}");
    app.work.write(
        "relay.yaml",
        &discord_config(&fake.discord_url(), "note", retry),
    );
    assert_eq!(reload(&app).await.0, 200);
    let got = fake.wait_for_accepted(4, Duration::from_secs(20)).await;
    let seqs: Vec<usize> = got.iter().map(|r| seq_in(&r.body_text())).collect();
    assert_eq!(seqs, vec![4, 1, 2, 3]);
    let dead = open_store(&app.store_path()).await;
    assert!(dead.dead_letters(None).await.unwrap().is_empty());
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert_eq!(
        metric(&metrics, "crisp_relay_orphaned_deliveries{target=\"chat\"}"),
        Some(0.0),
        "{metrics}"
    );
}
