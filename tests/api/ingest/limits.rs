//! The bounds on one request and its connection, over raw HTTP/1.1 where
//! reqwest will not go: 413 for a body over `max_body` (declared, chunked,
//! or written whole before reading), clients stalling in the head or the
//! body, and several requests on one keep-alive connection.

use serde_json::json;

use super::*;
use crate::helpers::*;
use crate::raw_http::{self, Conn, Response};

/// The default test config's `max_body` (64KiB).
const MAX_BODY: usize = 64 * 1024;

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
