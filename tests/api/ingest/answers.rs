//! What `POST /crisp/hooks` answers, and what is stored: 200 with the
//! number of deliveries (the event and each delivery stored), 401 for a
//! wrong key and how keys are compared, 400 naming the problem, 415, 404 and
//! 405 with `Allow: POST`; and no key, right or wrong, in the logs.

use std::collections::BTreeSet;

use serde_json::json;

use super::*;
use crate::helpers::*;

/// POSTs `body` as JSON to the hook URL with `key`.
async fn post_with_key(
    app: &TestApp,
    key: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    app.client
        .post(app.hook_url(key))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------
// 200

#[tokio::test]
async fn accepted_event_and_every_delivery_are_stored_and_counted() {
    // Route `first` fans out to two targets and lets matching continue, so
    // `second` adds a third delivery; `never` matches nothing.
    let config = config_with(
        "targets:\n  a: {kind: stdout}\n  b: {kind: stdout}\n  c: {kind: stdout}\n\
         routes:\n\
         \x20 - name: first\n    match: {event: \"message:send\"}\n    to: [a, b]\n    template: visitor_message\n    continue: true\n\
         \x20 - name: second\n    match: {event: \"message:send\"}\n    to: [c]\n\
         \x20 - name: never\n    match: {event: \"nope\"}\n    to: [a]\n",
    );
    let mut app = TestApp::spawn_with(&config).await;

    let first = fixture("message_send_text_basic.json");
    let (status, body) = json_of(app.post_event(first.clone()).await).await;
    assert_eq!(
        (status, body),
        (200, json!({"accepted": true, "deliveries": 3}))
    );

    let unrouted = json!({"website_id": "w", "event": "session:set_email", "data": {"email": "a@b.c"}, "timestamp": 1})
        .to_string();
    let (status, body) = json_of(app.post_event(unrouted.clone()).await).await;
    assert_eq!(
        (status, body),
        (200, json!({"accepted": true, "deliveries": 0}))
    );

    assert!(app.terminate().success());
    let store = open_store(&app.store_path()).await;
    assert_eq!(store.event_count().await.unwrap(), 2);
    assert_eq!(
        store.event_body(1).await.unwrap().as_deref(),
        Some(std::str::from_utf8(&first).unwrap()),
        "the body is stored as received"
    );
    assert_eq!(store.event_body(2).await.unwrap(), Some(unrouted));
    let rows: Vec<_> = store
        .deliveries()
        .await
        .unwrap()
        .into_iter()
        .map(|d| {
            (
                d.event_id, d.route, d.target, d.template, d.state, d.attempts,
            )
        })
        .collect();
    // The stdout targets deliver at once: each row is pending or delivered.
    let tpl = Some("visitor_message".to_owned());
    let shape: Vec<_> = rows
        .iter()
        .map(|r| (r.0, r.1.as_str(), r.2.as_str(), r.3.clone()))
        .collect();
    assert_eq!(
        shape,
        vec![
            (1, "first", "a", tpl.clone()),
            (1, "first", "b", tpl),
            (1, "second", "c", None)
        ]
    );
    assert!(
        rows.iter()
            .all(|r| (r.4 == "pending" && r.5 == 0) || (r.4 == "delivered" && r.5 == 1)),
        "{rows:?}"
    );
}

#[tokio::test]
async fn event_matching_no_route_is_still_accepted_with_zero_deliveries() {
    let config = config_with(
        "targets:\n  a: {kind: stdout}\nroutes:\n  - name: never\n    match: {event: \"nope\"}\n    to: [a]\n",
    );
    let mut app = TestApp::spawn_with(&config).await;
    let body = fixture("message_send_text_basic.json");
    let (status, answer) = json_of(app.post_event(body.clone()).await).await;
    assert_eq!(
        (status, answer),
        (200, json!({"accepted": true, "deliveries": 0}))
    );

    assert!(app.terminate().success());
    let store = open_store(&app.store_path()).await;
    assert_eq!(store.event_count().await.unwrap(), 1);
    assert_eq!(
        store.event_body(1).await.unwrap().as_deref(),
        Some(std::str::from_utf8(&body).unwrap())
    );
    assert!(store.deliveries().await.unwrap().is_empty());
}

/// The system's wall clock in milliseconds (the relay's clock starts from it).
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn missing_timestamp_is_tolerated_and_stored_as_the_receive_time() {
    let mut app = TestApp::spawn().await;
    let with_ts = envelope(1);
    let without_ts = r#"{"website_id":"w","event":"message:send","data":{"n":2}}"#;
    let null_ts = r#"{"website_id":"w","event":"message:send","data":{"n":3},"timestamp":null}"#;

    assert_eq!(app.post_event(with_ts.clone()).await.status(), 200);
    let before = wall_ms();
    assert_eq!(app.post_event(without_ts).await.status(), 200);
    assert_eq!(app.post_event(null_ts).await.status(), 200);
    let after = wall_ms();

    assert!(app.terminate().success());
    let rows = event_rows(&app.store_path()).await;
    assert_eq!(rows.len(), 3);
    // Crisp's timestamp is kept as sent.
    assert_eq!(
        (rows[0].2, rows[0].3.as_str()),
        (1_748_952_083_417, with_ts.as_str())
    );
    // Missing or null: the receive time, and the body is stored untouched.
    for (row, body) in rows[1..].iter().zip([without_ts, null_ts]) {
        let (_, received_at, timestamp, stored) = row;
        assert_eq!(timestamp, received_at, "timestamp is the receive time");
        // The relay's clock is the wall time read once at start plus monotonic
        // time since, so it may differ from the system clock by a few ms.
        const SLACK_MS: i64 = 1_000;
        assert!(
            (before - SLACK_MS..=after + SLACK_MS).contains(timestamp),
            "timestamp {timestamp} not within {SLACK_MS} ms of [{before}, {after}]"
        );
        assert_eq!(stored, body);
    }
    let store = open_store(&app.store_path()).await;
    assert_eq!(
        store.event_body(2).await.unwrap().as_deref(),
        Some(without_ts)
    );
}

// ---------------------------------------------------------------------------
// 401

#[tokio::test]
async fn wrong_missing_empty_or_miscased_key_is_401_with_one_body() {
    let mut app = TestApp::spawn().await;
    let base = format!("http://{}/crisp/hooks", app.ingest);
    let urls = [
        format!("{base}?key=wrong-key"),
        base.clone(),
        format!("{base}?"),
        format!("{base}?key="),
        format!("{base}?key={}", KEY.to_uppercase()),
        format!("{base}?key={}", &KEY[..KEY.len() - 1]),
        format!("{base}?key={KEY}x"),
        format!("{base}?kee={KEY}"),
    ];
    let mut bodies = BTreeSet::new();
    for url in &urls {
        for body in [envelope(1), "not json".to_owned()] {
            let resp = app
                .client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 401, "{url}");
            bodies.insert(resp.text().await.unwrap());
        }
    }
    assert_eq!(
        bodies.into_iter().collect::<Vec<_>>(),
        vec![json!({"error": "missing or wrong key"}).to_string()],
        "every key failure answers the same body"
    );
    // Control: the same requests with the right key get through.
    assert_eq!(post_with_key(&app, KEY, envelope(2)).await.status(), 200);

    assert!(app.terminate().success());
    let store = open_store(&app.store_path()).await;
    assert_eq!(
        store.event_count().await.unwrap(),
        1,
        "only the control is stored"
    );
    assert_eq!(n_of(&store.event_body(1).await.unwrap().unwrap()), 2);
}

#[tokio::test]
async fn either_of_two_configured_keys_is_accepted() {
    let second = "second-key-abcdef";
    let config = default_config().replace(
        "keys: [\"${CRISP_HOOK_KEY}\"]",
        &format!("keys: [\"${{CRISP_HOOK_KEY}}\", \"{second}\"]"),
    );
    assert!(config.contains(second));
    let app = TestApp::spawn_with(&config).await;
    assert_eq!(post_with_key(&app, KEY, envelope(1)).await.status(), 200);
    assert_eq!(post_with_key(&app, second, envelope(2)).await.status(), 200);
    for near in [
        "second-key-abcde",
        "second-key-abcdefg",
        "SECOND-KEY-ABCDEF",
    ] {
        assert_eq!(
            post_with_key(&app, near, envelope(3)).await.status(),
            401,
            "{near}"
        );
    }
}

/// A hook key is compared as configured: `+` is a plus (not a space, as
/// form decoding would have it), and `%XX` escapes of it match too.
#[tokio::test]
async fn a_key_with_plus_and_percent_matches_as_configured() {
    let work = Workdir::new(
        &config_custom("", "", CONSOLE_ALL)
            .replace("keys: [\"${CRISP_HOOK_KEY}\"]", "keys: [\"a+b/c%d\"]"),
    );
    let app = TestApp::spawn_in(work, &[]).await;
    for (query, want) in [
        ("a+b/c%d", 200),
        ("a%2Bb%2Fc%25d", 200),
        ("a%20b/c%d", 401),
        ("a b/c%d", 401),
        ("a+b/c", 401),
    ] {
        let status = app
            .client
            .post(format!("http://{}/crisp/hooks?key={query}", app.ingest))
            .header("content-type", "application/json")
            .body(envelope(1))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, want, "?key={query}");
    }
}

// ---------------------------------------------------------------------------
// 400

#[tokio::test]
async fn malformed_envelopes_are_400_naming_the_problem() {
    let mut app = TestApp::spawn().await;
    let cases: &[(&str, &[&str])] = &[
        ("{", &["not valid JSON"]),
        ("not json at all", &["not valid JSON"]),
        ("", &["not valid JSON"]),
        ("[]", &["must be a JSON object", "an array"]),
        (
            r#"[{"website_id":"w","event":"e","data":{}}]"#,
            &["must be a JSON object", "an array"],
        ),
        ("42", &["must be a JSON object", "a number"]),
        (r#""message:send""#, &["must be a JSON object", "a string"]),
        ("null", &["must be a JSON object", "null"]),
        (
            r#"{"website_id":"w","data":{}}"#,
            &["missing field `event`"],
        ),
        (
            r#"{"event":"e","data":{}}"#,
            &["missing field `website_id`"],
        ),
        (
            r#"{"event":"e","website_id":"w"}"#,
            &["missing field `data`"],
        ),
        (
            r#"{"event":"e","website_id":"w","data":[]}"#,
            &["`data`", "an object", "an array"],
        ),
        (
            r#"{"event":"e","website_id":"w","data":"x"}"#,
            &["`data`", "an object", "a string"],
        ),
        (
            r#"{"event":1,"website_id":"w","data":{}}"#,
            &["`event`", "a string"],
        ),
        (
            r#"{"event":"e","website_id":null,"data":{}}"#,
            &["`website_id`"],
        ),
        (
            r#"{"event":"e","website_id":"w","data":{},"timestamp":"soon"}"#,
            &["`timestamp`", "an integer"],
        ),
    ];
    for (body, wants) in cases {
        let (status, answer) = json_of(app.post_event(*body).await).await;
        assert_eq!(status, 400, "{body:?} -> {answer}");
        let msg = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        for want in *wants {
            assert!(msg.contains(want), "{body:?}: {msg:?} lacks {want:?}");
        }
    }
    assert!(app.terminate().success());
    let store = open_store(&app.store_path()).await;
    assert_eq!(
        store.event_count().await.unwrap(),
        0,
        "nothing rejected is stored"
    );
}

// ---------------------------------------------------------------------------
// 415

#[tokio::test]
async fn declared_non_json_content_type_is_415_none_or_json_with_charset_is_accepted() {
    let mut app = TestApp::spawn().await;
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/json",
    ] {
        let resp = app
            .client
            .post(app.hook_url(KEY))
            .header("content-type", ct)
            .body(envelope(0))
            .send()
            .await
            .unwrap();
        let (status, answer) = json_of(resp).await;
        assert_eq!(status, 415, "{ct}");
        assert_eq!(
            answer,
            json!({"error": "content type must be application/json"})
        );
    }
    // reqwest sets no Content-Type for a plain body.
    let resp = app
        .client
        .post(app.hook_url(KEY))
        .body(envelope(1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "no content type at all");
    let resp = app
        .client
        .post(app.hook_url(KEY))
        .header("content-type", "application/json; charset=utf-8")
        .body(envelope(2))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "application/json with charset");

    assert!(app.terminate().success());
    let store = open_store(&app.store_path()).await;
    assert_eq!(store.event_count().await.unwrap(), 2);
}

// ---------------------------------------------------------------------------
// 404 / 405

#[tokio::test]
async fn other_paths_are_404_other_methods_405_with_allow_post() {
    let app = TestApp::spawn().await;
    for path in [
        "/",
        "/crisp/hooks/",
        "/crisp/hook",
        "/crisp/hooks/x",
        "/CRISP/HOOKS",
        "/healthz",
    ] {
        let url = format!("http://{}{path}?key={KEY}", app.ingest);
        let resp = app
            .client
            .post(&url)
            .body(envelope(1))
            .send()
            .await
            .unwrap();
        let (status, answer) = json_of(resp).await;
        assert_eq!(
            (status, answer),
            (404, json!({"error": "not found"})),
            "{path}"
        );
    }
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ] {
        let resp = app
            .client
            .request(method.clone(), app.hook_url(KEY))
            .body(envelope(1))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method}");
        assert_eq!(
            resp.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some("POST"),
            "{method}"
        );
        let (_, answer) = json_of(resp).await;
        assert!(
            answer["error"].as_str().unwrap().contains("POST"),
            "{answer}"
        );
    }
}

// ---------------------------------------------------------------------------
// Keys in the logs

#[tokio::test]
async fn hook_keys_never_reach_the_logs() {
    let wrong = "wrong-key-5f3a9c81d2";
    // Debug level: what an operator turns on when troubleshooting.
    let mut app =
        TestApp::spawn_in(Workdir::new(&default_config()), &[("RUST_LOG", "debug")]).await;
    assert_eq!(post_with_key(&app, KEY, envelope(1)).await.status(), 200);
    assert_eq!(post_with_key(&app, KEY, "nope").await.status(), 400);
    assert_eq!(post_with_key(&app, wrong, envelope(2)).await.status(), 401);
    let resp = app.client.get(app.hook_url(KEY)).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let resp = app
        .client
        .post(format!("http://{}/elsewhere?key={KEY}", app.ingest))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    assert!(app.terminate().success());
    // Everything logged before shutdown is in once this line is.
    wait_for_log(&app, "shutting down").await;
    let logs = app.logs();
    assert!(
        logs.contains("rejected"),
        "the requests were logged:\n{logs}"
    );
    assert!(!logs.contains(KEY), "the key is in the logs:\n{logs}");
    assert!(!logs.contains(wrong), "a wrong key is in the logs:\n{logs}");
}

/// Crisp resends an event (a retry after a lost answer): the same
/// `website_id`, `event` and `data.fingerprint` within 24 h is answered 200
/// with `"duplicate": true`, stores nothing and sends nothing twice.
/// Events without a fingerprint are never deduplicated.
#[tokio::test]
async fn a_resent_event_is_answered_as_a_duplicate_and_stored_once() {
    let mut app = TestApp::spawn().await;
    let sent = fixture_as_is("message_send_text_basic.json");
    let (status, body) = json_of(app.post_event(sent.clone()).await).await;
    assert_eq!(
        (status, body),
        (200, json!({"accepted": true, "deliveries": 1}))
    );
    let (status, body) = json_of(app.post_event(sent.clone()).await).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"accepted": true, "duplicate": true, "deliveries": 0})
        )
    );
    // Another message (its own fingerprint) and events without one go on.
    let other = fixture("message_send_text_basic.json");
    assert_eq!(
        json_of(app.post_event(other).await).await.1["deliveries"],
        1
    );
    for _ in 0..2 {
        assert_eq!(
            json_of(app.post_event(envelope(7)).await).await.1["deliveries"],
            1
        );
    }
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert_eq!(
        metric(
            &metrics,
            r#"crisp_relay_events_received_total{event="message:send",outcome="duplicate"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        app.logs()
            .contains("duplicate of an event accepted in the last 24 h")
    );
    assert!(app.terminate().success());
    let store = open_store(&app.store_path()).await;
    assert_eq!(store.event_count().await.unwrap(), 4);
    store.close().await;
}
