//! The ingest listener, end to end: every answer Crisp (or anything else) can
//! get from `POST /crisp/hooks`, what is in the store afterwards, the resource
//! bounds (body size, header and body read timeouts, keep-alive), crash
//! safety, the admin listener, SIGTERM, and keys staying out of the logs.
//!
//! No test asserts how long something took. The only clocks are hang guards
//! (`GUARD`), which turn "the server never answered" into a failure instead of
//! a stuck test.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};
use tokio::task::JoinSet;

use crate::helpers::*;
use crate::raw_http::{self, Conn, Response};

/// Upper bound on waiting for anything (an answer, a closed connection, a log
/// line). Generous: it only exists so that a broken server fails the test
/// instead of hanging it.
const GUARD: Duration = Duration::from_secs(10);

/// The default test config's `max_body` (64KiB).
const MAX_BODY: usize = 64 * 1024;

/// A valid Crisp envelope whose `data.n` tells the events apart.
fn envelope(n: u64) -> String {
    json!({
        "website_id": "w-test",
        "event": "message:send",
        "data": {"n": n, "from": "user", "content": "hello"},
        "timestamp": 1_748_952_083_417_i64,
    })
    .to_string()
}

/// `data.n` of a stored body.
fn n_of(body: &str) -> u64 {
    let v: Value = serde_json::from_str(body).unwrap();
    v["data"]["n"].as_u64().unwrap()
}

/// A full config (same shape as `config_with`) with extra `server:` and
/// `store:` settings, each line indented by the caller's two spaces.
fn config_custom(server_extra: &str, store_extra: &str, rest: &str) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:0\n  path: /crisp/hooks\n  keys: [\"${{CRISP_HOOK_KEY}}\"]\n  max_body: 64KiB\n{server_extra}\
         admin:\n  listen: 127.0.0.1:0\nstore:\n  path: data/relay.db\n{store_extra}templates: templates\n{rest}"
    )
}

const CONSOLE_ALL: &str =
    "targets:\n  console: {kind: stdout}\nroutes:\n  - name: all\n    to: [console]\n";

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("answer {status} is not JSON ({e}): {text:?}"));
    (status, v)
}

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

/// Waits until the relay's log holds `needle` (lines arrive from a reader
/// thread, possibly after the process exited).
async fn wait_for_log(app: &TestApp, needle: &str) {
    let deadline = Instant::now() + GUARD;
    while !app.logs().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "log never showed {needle:?}; logs:\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every stored event as (id, received_at, timestamp, body), by id. The
/// store's own API has no timestamp accessor; sqlx is a dependency of the
/// crate, so the test reads the file directly (read-only).
async fn event_rows(path: &Path) -> Vec<(i64, i64, i64, String)> {
    let opts = SqliteConnectOptions::new().filename(path).read_only(true);
    let mut conn = SqliteConnection::connect_with(&opts).await.unwrap();
    let rows = sqlx::query_as("SELECT id, received_at, timestamp, body FROM events ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    rows
}

/// A second connection to the relay's database holding SQLite's write lock
/// (`BEGIN EXCLUSIVE`; in WAL mode readers still work, writers wait). This is
/// a real-world condition, e.g. an operator's `sqlite3 relay.db` session or a
/// backup tool with an open write transaction: the relay's writer waits its
/// `busy_timeout` (5 s) for the lock, then its commit fails with
/// SQLITE_BUSY. Deterministic (the lock is held until the test sees the
/// failure) and needs no test hook in the relay.
async fn hold_write_lock(path: &Path) -> SqliteConnection {
    let mut conn = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path))
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN EXCLUSIVE")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

async fn release_write_lock(mut conn: SqliteConnection) {
    sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 (`raw_http`), for what reqwest will not do (lie about
// Content-Length, stall mid-request, reuse one known connection).

/// A raw connection to the ingest listener, bounded by `GUARD`.
async fn connect(app: &TestApp) -> Conn {
    Conn::connect(app.ingest, GUARD).await
}

/// A request to the hook path with the right key: `headers`, then `body`.
fn hook_request(headers: &[&str], body: &[u8]) -> Vec<u8> {
    let target = format!("/crisp/hooks?key={KEY}");
    raw_http::request("POST", &target, "HTTP/1.1", headers, body)
}

/// Reads exactly one answer of the relay: a Content-Length body (the relay
/// always sends one) in UTF-8, and nothing after it.
async fn read_response(conn: &mut Conn) -> Response {
    let resp = conn.response().await;
    assert!(
        resp.header("content-length").is_some(),
        "the relay always sends Content-Length"
    );
    assert!(
        conn.buffered().is_empty(),
        "unexpected bytes after the response"
    );
    assert!(
        std::str::from_utf8(&resp.body).is_ok(),
        "answer {} is not UTF-8: {:?}",
        resp.status,
        resp.text()
    );
    resp
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
        assert!(
            (before..=after).contains(timestamp),
            "timestamp {timestamp} not between {before} and {after}"
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
// 413

/// A valid envelope exactly `len` bytes long.
fn envelope_of_len(len: usize) -> String {
    let base = r#"{"website_id":"w","event":"e","data":{"pad":""}}"#;
    let body = base.replace(
        r#""pad":"""#,
        &format!(r#""pad":"{}""#, "x".repeat(len - base.len())),
    );
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn body_at_max_body_is_accepted_one_byte_more_is_413() {
    let app = TestApp::spawn().await;
    let (status, _) = json_of(app.post_event(envelope_of_len(MAX_BODY)).await).await;
    assert_eq!(status, 200);
    let (status, answer) = json_of(app.post_event(envelope_of_len(MAX_BODY + 1)).await).await;
    assert_eq!(status, 413);
    assert_eq!(
        answer,
        json!({"error": "body is larger than the 65536 byte limit"})
    );
}

#[tokio::test]
async fn declared_content_length_over_max_body_is_refused_before_the_body() {
    let app = TestApp::spawn().await;
    let mut conn = connect(&app).await;
    // 100 MB declared; not one byte of it is ever sent, so the answer can
    // only come from the declared length.
    let head = hook_request(
        &[
            "Content-Type: application/json",
            "Content-Length: 104857600",
        ],
        b"",
    );
    conn.send(&head).await;
    let resp = read_response(&mut conn).await;
    assert_eq!(resp.status, 413);
    assert_eq!(
        resp.json(),
        json!({"error": "body is larger than the 65536 byte limit"})
    );
    // And the server does not wait for the 100 MB: it closes the connection.
    conn.closed().await;
    assert_eq!(app.post_event(envelope(1)).await.status(), 200);
}

/// Sends `body` with chunked transfer encoding in `chunk`-byte chunks, while
/// reading the answer concurrently (the server may answer before the end).
async fn post_chunked(app: &TestApp, body: Vec<u8>, chunk: usize) -> Response {
    let request = hook_request(
        &[
            "Content-Type: application/json",
            "Transfer-Encoding: chunked",
        ],
        &raw_http::chunked(&body, chunk),
    );
    let mut conn = connect(app).await;
    // The writer may fail (the server stopped reading) or still be blocked
    // on a full socket once the answer is read: it ends with `conn`.
    conn.send_in_background(request);
    read_response(&mut conn).await
}

#[tokio::test]
async fn chunked_body_over_max_body_is_413_while_streaming() {
    let app = TestApp::spawn().await;
    // Control: chunked bodies are read fine when within the limit.
    let ok = post_chunked(&app, envelope(1).into_bytes(), 16).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json(), json!({"accepted": true, "deliveries": 1}));

    // No Content-Length: only counting while reading can catch this one.
    let big = vec![b' '; MAX_BODY + 16 * 1024];
    let resp = post_chunked(&app, big, 1024).await;
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(
        resp.json(),
        json!({"error": "body is larger than the 65536 byte limit"})
    );
    assert_eq!(app.post_event(envelope(2)).await.status(), 200);
}

/// A client that writes its whole body before reading (8 MiB, over the
/// 64 KiB limit), as many HTTP libraries do, gets the 413, not a broken
/// pipe: the relay answers at once and reads the rest of the body (up to
/// 16 MiB) before it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_writing_a_whole_oversized_body_before_reading_gets_the_413() {
    let app = TestApp::spawn().await;
    let size = 8 * 1024 * 1024;
    let body = vec![b' '; size];
    let length = format!("Content-Length: {size}");
    for (what, request) in [
        (
            "Content-Length",
            hook_request(&["Content-Type: application/json", &length], &body),
        ),
        (
            "chunked",
            hook_request(
                &[
                    "Content-Type: application/json",
                    "Transfer-Encoding: chunked",
                ],
                &raw_http::chunked(&body, 64 * 1024),
            ),
        ),
    ] {
        let mut conn = connect(&app).await;
        // The whole request first (a write broken by a reset fails here).
        conn.send(&request).await;
        let resp = read_response(&mut conn).await;
        assert_eq!(resp.status, 413, "{what}: {}", resp.text());
        assert_eq!(
            resp.json(),
            json!({"error": "body is larger than the 65536 byte limit"}),
            "{what}"
        );
    }
    assert_eq!(app.post_event(envelope(1)).await.status(), 200);
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
// 503

#[tokio::test]
async fn store_that_cannot_commit_answers_503_with_retry_after_and_stores_nothing() {
    // queue_capacity 1: while the writer is stuck on the lock, one request
    // can wait in the queue and the rest are refused at once as "busy".
    let config = config_custom("", "  queue_capacity: 1\n", CONSOLE_ALL);
    let mut app = TestApp::spawn_with(&config).await;
    let lock = hold_write_lock(&app.store_path()).await;

    const N: u64 = 10;
    let mut posts = JoinSet::new();
    for n in 0..N {
        let (client, url) = (app.client.clone(), app.hook_url(KEY));
        posts.spawn(async move {
            let resp = client
                .post(url)
                .header("content-type", "application/json")
                .body(envelope(n))
                .send()
                .await
                .unwrap();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let (status, answer) = json_of(resp).await;
            (n, status, retry_after, answer)
        });
    }
    const BUSY: &str = "the relay is busy; retry shortly";
    const FAILED: &str = "the store cannot accept events right now; retry shortly";
    let mut lock = Some(lock);
    let (mut busy, mut failed, mut accepted) = (0, 0, BTreeSet::new());
    while let Some(r) = posts.join_next().await {
        let (n, status, retry_after, answer) = r.unwrap();
        match status {
            200 => {
                assert_eq!(answer, json!({"accepted": true, "deliveries": 1}));
                accepted.insert(n);
            }
            503 => {
                assert_eq!(retry_after.as_deref(), Some("1"), "503 without Retry-After");
                let msg = answer["error"].as_str().unwrap();
                if msg == BUSY {
                    busy += 1;
                } else if msg == FAILED {
                    failed += 1;
                    // The writer has given up on the lock: release it, so
                    // whatever is still queued can commit.
                    if let Some(l) = lock.take() {
                        release_write_lock(l).await;
                    }
                } else {
                    panic!("unexpected 503 body {answer}");
                }
            }
            _ => panic!("unexpected answer {status}: {answer}"),
        }
    }
    if let Some(l) = lock.take() {
        release_write_lock(l).await;
    }
    // At least the writer's first batch fails on the lock. And the queue
    // holds one request, which the writer drains only between commits (each
    // stuck 5 s on the lock): of 10 simultaneous requests, all but the first
    // batch (taken in one non-yielding drain) and one queued request are
    // refused as busy. The queued one commits once the lock is released.
    assert!(failed >= 1, "no commit failed while the store was locked");
    assert!(busy >= 1, "no request was refused by the full queue");

    // Once the lock is gone the relay accepts again.
    assert_eq!(app.post_event(envelope(100)).await.status(), 200);
    accepted.insert(100);

    assert!(app.terminate().success());
    let stored: BTreeSet<u64> = event_rows(&app.store_path())
        .await
        .iter()
        .map(|r| n_of(&r.3))
        .collect();
    assert_eq!(
        stored, accepted,
        "exactly the events answered 200 are stored"
    );
    let store = open_store(&app.store_path()).await;
    assert_eq!(store.deliveries().await.unwrap().len(), accepted.len());
}

// ---------------------------------------------------------------------------
// Connection handling

#[tokio::test]
async fn several_requests_share_one_keep_alive_connection() {
    let mut app = TestApp::spawn().await;
    let mut conn = connect(&app).await;
    let bodies = [envelope(1), "{".to_owned(), envelope(2), envelope(3)];
    let mut statuses = Vec::new();
    for body in &bodies {
        let request = hook_request(
            &[
                "Content-Type: application/json",
                &format!("Content-Length: {}", body.len()),
            ],
            body.as_bytes(),
        );
        conn.send(&request).await;
        let resp = read_response(&mut conn).await;
        assert_ne!(
            resp.header("connection")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("close")
        );
        statuses.push(resp.status);
    }
    assert_eq!(statuses, [200, 400, 200, 200], "all on one connection");

    // reqwest's pooled client too.
    for n in 10..15 {
        assert_eq!(app.post_event(envelope(n)).await.status(), 200);
    }
    assert!(app.terminate().success());
    let store = open_store(&app.store_path()).await;
    assert_eq!(store.event_count().await.unwrap(), 8);
}

#[tokio::test]
async fn client_stalling_in_the_headers_is_disconnected() {
    let config = config_custom("  header_read_timeout: 300ms\n", "", CONSOLE_ALL);
    let app = TestApp::spawn_with(&config).await;
    let mut conn = connect(&app).await;
    conn.send(b"POST /crisp/ho").await;
    // Then nothing more: the server must hang up (EOF or reset), whatever
    // it sends first.
    let got = conn.closed().await;
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 4"),
        "unexpected answer {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(app.post_event(envelope(1)).await.status(), 200);
}

#[tokio::test]
async fn client_stalling_in_the_body_gets_408_and_others_are_served() {
    let config = config_custom("  body_read_timeout: 300ms\n", "", CONSOLE_ALL);
    let mut app = TestApp::spawn_with(&config).await;
    let mut conn = connect(&app).await;
    let head = hook_request(
        &["Content-Type: application/json", "Content-Length: 100"],
        b"",
    );
    conn.send(&head).await;
    conn.send(br#"{"website"#).await;
    let resp = read_response(&mut conn).await;
    assert_eq!(resp.status, 408);
    assert!(
        resp.json()["error"]
            .as_str()
            .unwrap()
            .contains("body not received")
    );
    // The half-sent body makes the connection unusable: it is closed.
    conn.closed().await;

    assert_eq!(app.post_event(envelope(1)).await.status(), 200);
    assert!(app.terminate().success());
    let store = open_store(&app.store_path()).await;
    assert_eq!(
        store.event_count().await.unwrap(),
        1,
        "the stalled body is not stored"
    );
}

// ---------------------------------------------------------------------------
// Crash safety

#[tokio::test]
async fn event_answered_200_survives_sigkill() {
    let mut app = TestApp::spawn().await;
    let body = envelope(7);
    assert_eq!(app.post_event(body.clone()).await.status(), 200);
    app.kill();
    let store = open_store(&app.store_path()).await;
    assert_eq!(store.event_body(1).await.unwrap(), Some(body));
    let deliveries = store.deliveries().await.unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        (
            deliveries[0].event_id,
            deliveries[0].route.as_str(),
            deliveries[0].target.as_str()
        ),
        (1, "all", "console")
    );
}

#[tokio::test]
async fn fifty_concurrent_events_answered_200_all_survive_sigkill() {
    let mut app = TestApp::spawn().await;
    let mut posts = JoinSet::new();
    for n in 0..50u64 {
        let (client, url) = (app.client.clone(), app.hook_url(KEY));
        posts.spawn(async move {
            let resp = client
                .post(url)
                .header("content-type", "application/json")
                .body(envelope(n))
                .send()
                .await
                .unwrap();
            (n, resp.status().as_u16())
        });
    }
    let mut accepted = BTreeSet::new();
    while let Some(r) = posts.join_next().await {
        let (n, status) = r.unwrap();
        assert_eq!(status, 200, "event {n}");
        accepted.insert(n);
    }
    app.kill();

    let store = open_store(&app.store_path()).await;
    let count = store.event_count().await.unwrap();
    let mut stored = BTreeSet::new();
    for id in 1..=count {
        let body = store.event_body(id).await.unwrap().expect("ids are dense");
        stored.insert(n_of(&body));
    }
    assert_eq!(stored, accepted);
    let deliveries = store.deliveries().await.unwrap();
    let event_ids: BTreeSet<i64> = deliveries.iter().map(|d| d.event_id).collect();
    assert_eq!(deliveries.len(), 50);
    assert_eq!(event_ids, (1..=50).collect());
    assert!(
        deliveries
            .iter()
            .all(|d| (d.state == "pending" || d.state == "delivered") && d.target == "console")
    );
}

// ---------------------------------------------------------------------------
// Admin, signals, logs

#[tokio::test]
async fn admin_health_and_readiness() {
    let app = TestApp::spawn().await;
    let (status, body) = json_of(app.admin_get("/healthz").await).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let (status, body) = json_of(app.admin_get("/readyz").await).await;
    assert_eq!((status, body), (200, json!({"status": "ready"})));
    for path in ["/nope", "/", "/crisp/hooks"] {
        assert_eq!(app.admin_get(path).await.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn readyz_is_503_while_the_store_cannot_write() {
    let app = TestApp::spawn().await;
    let lock = hold_write_lock(&app.store_path()).await;
    let (status, body) = json_of(app.admin_get("/readyz").await).await;
    release_write_lock(lock).await;
    assert_eq!(
        (status, &body["status"]),
        (503, &json!("unavailable")),
        "{body}"
    );
    // Liveness does not depend on the store; readiness comes back.
    assert_eq!(app.admin_get("/healthz").await.status(), 200);
    let (status, body) = json_of(app.admin_get("/readyz").await).await;
    assert_eq!((status, body), (200, json!({"status": "ready"})));
}

#[tokio::test]
async fn sigterm_exits_0_after_shutting_down() {
    let mut app = TestApp::spawn().await;
    assert_eq!(app.post_event(envelope(1)).await.status(), 200);
    let status = app.terminate();
    assert_eq!(status.code(), Some(0), "{status}");
    wait_for_log(&app, "shutting down").await;
    let store = open_store(&app.store_path()).await;
    assert_eq!(store.event_count().await.unwrap(), 1);
}

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
