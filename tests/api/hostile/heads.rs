//! Hostile request heads: over the head limits (431), protocol edge cases
//! (HTTP/1.0, broken chunked encoding, smuggling-shaped headers, garbage),
//! `Expect: 100-continue`, and wrong keys (401 with one body for all).

use serde_json::{Value, json};

use super::*;
use crate::helpers::*;

/// The most a request head may take (`server::MAX_HEAD_BYTES`).
const MAX_HEAD: usize = crisp_relay::server::MAX_HEAD_BYTES;

const BAD_KEY: &str = "missing or wrong key";

// ---------------------------------------------------------------------------
// The cases. Each takes the running relay, asserts the answer, and ends with
// `still_serves`.

/// Heads over the relay's limits (16 KiB, 100 headers): 1,000 headers, a
/// 64 KiB URL, a 20 KB header, all 431 (hyper's own answer, without a body),
/// then the connection is closed. A 12 KiB URL is within the limits and
/// served.
pub(super) async fn case_oversized_heads(app: &TestApp) {
    // Short headers: 1,000 of them fit in 16 KiB, so it is their number that
    // is refused.
    let headers: Vec<String> = (0..1000).map(|i| format!("h{i}:")).collect();
    let request = raw_request(&hook_target(), "HTTP/1.1", &headers, b"");
    assert!(request.len() < MAX_HEAD);
    let (a, mut raw) = exchange(app, request).await;
    assert_eq!(a.status, 431, "{}", a.status_line);
    assert_eq!(a.header("content-length"), Some("0"));
    raw.closed().await;
    still_serves(app, "1,000 headers").await;

    let prefix = format!("/crisp/hooks?key={KEY}&pad=");
    let target = format!("{prefix}{}", "a".repeat(64 * 1024 - prefix.len()));
    assert_eq!(target.len(), 64 * 1024);
    let (a, mut raw) = exchange(app, raw_request(&target, "HTTP/1.1", &[], b"")).await;
    assert_eq!(a.status, 431, "{}", a.status_line);
    raw.closed().await;
    still_serves(app, "a 64 KiB URL").await;

    let big = [format!("X-Hostile: {}", "v".repeat(20_000))];
    let (a, mut raw) = exchange(app, raw_request(&hook_target(), "HTTP/1.1", &big, b"")).await;
    assert_eq!(a.status, 431, "{}", a.status_line);
    raw.closed().await;
    still_serves(app, "a 20 KB header").await;

    // Long, but within the limits: the key is still found.
    let body = fixture(FIXTURE);
    let target = format!("{prefix}{}", "a".repeat(12 * 1024 - prefix.len()));
    let head = [
        "Content-Type: application/json".to_owned(),
        format!("Content-Length: {}", body.len()),
    ];
    let (a, _) = exchange(app, raw_request(&target, "HTTP/1.1", &head, &body)).await;
    assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));
    still_serves(app, "a 12 KiB URL").await;
}

/// HTTP/1.0, broken chunked encoding, smuggling-shaped headers, garbage.
pub(super) async fn case_protocol(app: &TestApp) {
    let body = fixture(FIXTURE);
    let json_len = [
        "Content-Type: application/json".to_owned(),
        format!("Content-Length: {}", body.len()),
    ];

    // A valid request in HTTP/1.0: served, then closed (no keep-alive).
    let (a, mut raw) = exchange(
        app,
        raw_request(&hook_target(), "HTTP/1.0", &json_len, &body),
    )
    .await;
    assert_eq!(a.status_line, "HTTP/1.0 200 OK");
    assert_eq!(
        serde_json::from_slice::<Value>(&a.body).unwrap(),
        json!({"accepted": true, "deliveries": 1})
    );
    raw.closed().await;
    still_serves(app, "HTTP/1.0").await;

    let chunked = [
        "Content-Type: application/json".to_owned(),
        "Transfer-Encoding: chunked".to_owned(),
    ];
    for (what, bytes) in [
        ("chunk size not hex", &b"zz\r\n{}\r\n0\r\n\r\n"[..]),
        (
            "chunk size overflowing",
            &b"fffffffffffffffffffff\r\n{}\r\n0\r\n\r\n"[..],
        ),
        (
            "chunk longer than its size",
            &b"2\r\n{}}}}\r\n0\r\n\r\n"[..],
        ),
    ] {
        let (a, mut raw) = exchange(
            app,
            raw_request(&hook_target(), "HTTP/1.1", &chunked, bytes),
        )
        .await;
        assert_eq!(a.status, 400, "{what}");
        let error = a.error();
        assert!(
            error.contains("could not read body") && error.contains("chunk"),
            "{what}: {error}"
        );
        raw.closed().await;
        still_serves(app, what).await;
    }

    // Heads hyper refuses outright (400, no body, closed).
    let len = body.len();
    for (what, request) in [
        (
            "two different Content-Lengths",
            raw_request(
                &hook_target(),
                "HTTP/1.1",
                &[
                    format!("Content-Length: {len}"),
                    format!("Content-Length: {}", len + 1),
                ],
                &body,
            ),
        ),
        (
            "Transfer-Encoding not ending in chunked",
            raw_request(
                &hook_target(),
                "HTTP/1.1",
                &["Transfer-Encoding: chunked, gzip".to_owned()],
                &body,
            ),
        ),
        (
            "a NUL in a header value",
            raw_request(
                &hook_target(),
                "HTTP/1.1",
                &["X-Hostile: a\0b".to_owned()],
                b"",
            ),
        ),
        ("a garbage request line", b"HELLO THERE\r\n\r\n".to_vec()),
        (
            "a space in the request target",
            raw_request("/crisp/hooks?key=a b", "HTTP/1.1", &[], b""),
        ),
        (
            "an unknown HTTP version",
            raw_request(&hook_target(), "HTTP/9.9", &[], b""),
        ),
    ] {
        let (a, mut raw) = exchange(app, request).await;
        assert_eq!(a.status, 400, "{what}: {}", a.status_line);
        raw.closed().await;
        still_serves(app, what).await;
    }

    // Content-Length and Transfer-Encoding together: chunked wins (RFC 9112
    // §6.3) and the body is read as chunks; the relay sees one request.
    let chunks = raw_http::chunked(&body, body.len());
    let head = [
        "Content-Type: application/json".to_owned(),
        "Content-Length: 5".to_owned(),
        "Transfer-Encoding: chunked".to_owned(),
    ];
    let (a, mut raw) = exchange(app, raw_request(&hook_target(), "HTTP/1.1", &head, &chunks)).await;
    assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));
    raw.closed().await;
    still_serves(app, "Content-Length with chunked").await;
}

/// `Expect: 100-continue`: `100 Continue`, then the body, then 200. A request
/// refused on its head gets its answer without the 100.
pub(super) async fn case_expect_continue(app: &TestApp) {
    let body = fixture(FIXTURE);
    let head = [
        "Content-Type: application/json".to_owned(),
        format!("Content-Length: {}", body.len()),
        "Expect: 100-continue".to_owned(),
    ];
    let mut raw = connect(app).await;
    raw.send(&raw_request(&hook_target(), "HTTP/1.1", &head, b""))
        .await;
    let a = raw.response().await;
    assert_eq!(
        (a.status, a.status_line.as_str()),
        (100, "HTTP/1.1 100 Continue")
    );
    raw.send(&body).await;
    let a = raw.response().await;
    assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));
    assert_eq!(
        serde_json::from_slice::<Value>(&a.body).unwrap(),
        json!({"accepted": true, "deliveries": 1})
    );
    still_serves(app, "Expect: 100-continue").await;

    for (what, target, length, status, error) in [
        (
            "a wrong key",
            "/crisp/hooks?key=wrong".to_owned(),
            body.len(),
            401,
            BAD_KEY,
        ),
        (
            "a declared 100 MB",
            hook_target(),
            104_857_600,
            413,
            TOO_LARGE,
        ),
    ] {
        let head = [
            "Content-Type: application/json".to_owned(),
            format!("Content-Length: {length}"),
            "Expect: 100-continue".to_owned(),
        ];
        let mut raw = connect(app).await;
        raw.send(&raw_request(&target, "HTTP/1.1", &head, b""))
            .await;
        let a = raw.response().await;
        assert_eq!((a.status, a.error()), (status, error.to_owned()), "{what}");
        still_serves(app, &format!("Expect: 100-continue with {what}")).await;
    }
}

/// Wrong, missing, empty, differently cased keys, or the key elsewhere than
/// `?key=`: 401 with one body for all (404 for the key in the path).
pub(super) async fn case_keys(app: &TestApp) {
    let base = format!("http://{}/crisp/hooks", app.ingest);
    let mut one_letter = KEY.to_owned();
    one_letter.replace_range(0..1, &KEY[0..1].to_uppercase());
    assert_ne!(one_letter, KEY);
    let cases = [
        format!("{base}?key=wrong-key"),
        base.clone(),
        format!("{base}?key="),
        format!("{base}?key"),
        format!("{base}?key={}", KEY.to_uppercase()),
        format!("{base}?key={one_letter}"),
        format!("{base}?KEY={KEY}"),
        format!("{base}?key={KEY}%00"),
        format!("{base}?key=%20{KEY}"),
        format!("{base}?key[]={KEY}"),
    ];
    for url in &cases {
        let resp = client()
            .post(url)
            .header("content-type", "application/json")
            .body(fixture(FIXTURE))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(
            (status, text),
            (401, json!({"error": BAD_KEY}).to_string()),
            "{url}"
        );
        still_serves(app, url).await;
    }
    // The key in a header or as a bearer token does not count.
    for (name, value) in [
        ("x-crisp-key", KEY.to_owned()),
        ("authorization", format!("Bearer {KEY}")),
    ] {
        let resp = client()
            .post(&base)
            .header(name, value)
            .body(fixture(FIXTURE))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{name}");
        still_serves(app, name).await;
    }
    // The key as a path segment is another path.
    let resp = client()
        .post(format!("{base}/{KEY}"))
        .body(fixture(FIXTURE))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    still_serves(app, "the key in the path").await;
}

// ---------------------------------------------------------------------------
// The tests

#[tokio::test]
async fn oversized_heads_are_431() {
    let app = battery_app().await;
    case_oversized_heads(&app).await;
}

#[tokio::test]
async fn protocol_edge_cases() {
    let app = battery_app().await;
    case_protocol(&app).await;
    case_expect_continue(&app).await;
}

#[tokio::test]
async fn wrong_keys_are_401_and_a_differently_cased_key_is_wrong() {
    let mut app = battery_app().await;
    case_keys(&app).await;
    assert!(app.terminate().success());
    // Only the valid requests were stored (one after each case).
    let store = open_store(&app.store_path()).await;
    assert_eq!(store.event_count().await.unwrap(), 10 + 2 + 1);
}
