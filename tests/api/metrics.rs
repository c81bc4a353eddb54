//! `/metrics` on the admin listener changes as events flow, and never shows
//! a key, a URL or event content.

use std::time::Duration;

use crate::fakes::FakeServer;
use crate::helpers::*;

/// The value of the series whose line starts with `series `; a missing
/// series fails the test (it must not read as 0).
#[track_caller]
fn value(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

async fn scrape(app: &TestApp) -> String {
    let resp = app.admin_get("/metrics").await;
    assert_eq!(resp.status(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_events_deliveries_and_queue() {
    let hook = FakeServer::webhook().await;
    let config = config_with(&format!(
        "targets:\n  hook: {{kind: webhook, url: \"{}?token=URLSECRET\", headers: {{Authorization: \"Bearer HDRSECRET\"}}}}\n\
         routes:\n  - name: all\n    match: {{event: \"message:send\"}}\n    to: [hook]\n",
        hook.url("/in")
    ));
    let app = TestApp::spawn_with(&config).await;
    let before = scrape(&app).await;
    let accepted = r#"crisp_relay_events_received_total{event="message:send",outcome="accepted"}"#;
    let delivered = r#"crisp_relay_deliveries_total{target="hook",outcome="delivered"}"#;
    // Per-event series appear with the first such event; per-target ones
    // exist from the start.
    assert_eq!(metric(&before, accepted), None, "{before}");
    assert_eq!(value(&before, delivered), 0.0, "{before}");
    assert!(
        before.contains(r#"crisp_relay_build_info{version=""#),
        "{before}"
    );

    for _ in 0..3 {
        assert_eq!(
            app.post_event(fixture("message_send_text_basic.json"))
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        app.post_event(fixture("session_set_email.json"))
            .await
            .status(),
        200
    );
    let wrong = app
        .client
        .post(app.hook_url("nope"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let bad = app.post_event(r#"{"event": "x"}"#).await;
    assert_eq!(bad.status(), 400);
    hook.wait_for_accepted(3, Duration::from_secs(20)).await;

    // Deliveries are counted once recorded; give the worker a moment.
    let mut after = scrape(&app).await;
    for _ in 0..100 {
        if value(&after, delivered) >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = scrape(&app).await;
    }
    assert_eq!(value(&after, accepted), 3.0, "{after}");
    assert_eq!(
        value(
            &after,
            r#"crisp_relay_events_received_total{event="session:set_email",outcome="accepted"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            r#"crisp_relay_events_received_total{event="unknown",outcome="unauthorized"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            r#"crisp_relay_events_received_total{event="unknown",outcome="invalid"}"#
        ),
        1.0
    );
    assert_eq!(value(&after, delivered), 3.0);
    assert_eq!(
        value(
            &after,
            r#"crisp_relay_delivery_duration_seconds_count{target="hook"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            &after,
            r#"crisp_relay_end_to_end_seconds_count{target="hook"}"#
        ),
        3.0
    );
    assert_eq!(
        value(&after, r#"crisp_relay_queue_depth{target="hook"}"#),
        0.0
    );
    for secret in [KEY, "URLSECRET", "HDRSECRET", "/in", "visitor493603"] {
        assert!(!after.contains(secret), "{secret} in metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_and_retries_show_a_struggling_target() {
    let hook = FakeServer::webhook().await;
    hook.always(503, "down");
    let config = config_with(&format!(
        "targets:\n  hook: {{kind: webhook, url: \"{}\", retry: {{initial_backoff: 20ms, max_backoff: 50ms, max_attempts: 1000}}}}\n\
         routes:\n  - name: all\n    to: [hook]\n",
        hook.url("/in")
    ));
    let app = TestApp::spawn_with(&config).await;
    for _ in 0..4 {
        assert_eq!(
            app.post_event(fixture("message_send_text_basic.json"))
                .await
                .status(),
            200
        );
    }
    let retried = r#"crisp_relay_deliveries_total{target="hook",outcome="retried"}"#;
    let mut text = scrape(&app).await;
    for _ in 0..200 {
        if metric(&text, retried).unwrap_or(0.0) >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        text = scrape(&app).await;
    }
    assert!(value(&text, retried) >= 2.0, "{text}");
    assert_eq!(
        value(&text, r#"crisp_relay_queue_depth{target="hook"}"#),
        4.0,
        "{text}"
    );
    // The head of the queue has waited through at least two retries.
    let oldest = value(
        &text,
        r#"crisp_relay_oldest_pending_seconds{target="hook"}"#,
    );
    assert!(oldest > 0.0, "{text}");
    // Failing, but running: up, never restarted, nothing orphaned.
    assert_eq!(value(&text, r#"crisp_relay_target_up{target="hook"}"#), 1.0);
    // One process on SQLite: it holds every lease, and the store answers.
    assert_eq!(
        value(&text, r#"crisp_relay_lease_held{lease="target:hook"}"#),
        1.0
    );
    assert_eq!(
        value(&text, r#"crisp_relay_store_up{engine="sqlite"}"#),
        1.0
    );
    assert_eq!(
        value(&text, r#"crisp_relay_worker_restarts_total{target="hook"}"#),
        0.0
    );
    assert_eq!(
        value(&text, r#"crisp_relay_orphaned_deliveries{target="hook"}"#),
        0.0
    );
    assert_eq!(
        value(
            &text,
            r#"crisp_relay_deliveries_total{target="hook",outcome="delivered"}"#
        ),
        0.0
    );
}

#[test]
fn json_log_lines_carry_structured_fields_and_no_key() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let work = Workdir::new(&default_config());
    let mut child = Command::new(bin())
        .args(["serve", "--log-format", "json", "-c"])
        .arg(work.config_path())
        .env("CRISP_HOOK_KEY", KEY)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut listening = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(!line.contains(KEY));
        if v["message"] == "listening" {
            assert_eq!(v["level"], "INFO");
            assert!(
                v["addr"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("127.0.0.1:")),
                "{line}"
            );
            listening.push(v["listener"].as_str().unwrap_or("").to_owned());
            if listening.len() == 2 {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(listening, vec!["ingest", "admin"]);
}
