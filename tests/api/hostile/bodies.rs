//! Hostile bodies: not a Crisp envelope (400 naming the problem), nested
//! 100,000 deep (400, not a stack overflow), 10 MB or a declared 100 MB
//! (413), and a declared body that never comes (408).

use serde_json::Value;

use super::*;
use crate::helpers::*;

/// POSTs `body` with the right key; the status and the `error` of the JSON
/// answer ("" for a success).
async fn post(app: &TestApp, body: impl Into<reqwest::Body>) -> (u16, String) {
    let resp = client()
        .post(app.hook_url(KEY))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("answer {status} is not JSON ({e}): {text:?}"));
    (status, v["error"].as_str().unwrap_or("").to_owned())
}

// ---------------------------------------------------------------------------
// The cases. Each takes the running relay, asserts the answer, and ends with
// `still_serves`.

/// Bodies that are not a Crisp envelope: 400, the error naming the problem.
pub(super) async fn case_malformed_bodies(app: &TestApp) {
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "malformed JSON",
            br#"{"website_id": "w", "event": "#.to_vec(),
            &["not valid JSON", "EOF"],
        ),
        ("empty body", Vec::new(), &["not valid JSON", "EOF"]),
        (
            "trailing garbage",
            br#"{"website_id":"w","event":"e","data":{}} x"#.to_vec(),
            &["not valid JSON", "trailing"],
        ),
        (
            "array",
            br#"[{"website_id":"w","event":"e","data":{}}]"#.to_vec(),
            &["must be a JSON object", "an array"],
        ),
        (
            "number",
            b"42".to_vec(),
            &["must be a JSON object", "a number"],
        ),
        (
            "string",
            br#""message:send""#.to_vec(),
            &["must be a JSON object", "a string"],
        ),
        (
            "boolean",
            b"true".to_vec(),
            &["must be a JSON object", "a boolean"],
        ),
        ("null", b"null".to_vec(), &["must be a JSON object", "null"]),
        (
            "event: 5",
            br#"{"event":5,"website_id":"w","data":{}}"#.to_vec(),
            &["`event`", "a string", "a number"],
        ),
        (
            "data: \"x\"",
            br#"{"event":"e","website_id":"w","data":"x"}"#.to_vec(),
            &["`data`", "an object", "a string"],
        ),
        (
            "website_id: []",
            br#"{"event":"e","website_id":["w"],"data":{}}"#.to_vec(),
            &["`website_id`", "a string", "an array"],
        ),
        (
            "timestamp: 1.5",
            br#"{"event":"e","website_id":"w","data":{},"timestamp":1.5}"#.to_vec(),
            &["`timestamp`", "an integer", "a number"],
        ),
        (
            "number out of range",
            br#"{"event":"e","website_id":"w","data":{},"timestamp":1e400}"#.to_vec(),
            &["not valid JSON", "out of range"],
        ),
        (
            "invalid UTF-8 in a string",
            b"{\"event\":\"message:send\",\"website_id\":\"w\xff\xfe\",\"data\":{}}".to_vec(),
            &["not valid JSON"],
        ),
        (
            "invalid UTF-8 outside strings",
            b"\xff\xfe{\"event\":\"e\",\"website_id\":\"w\",\"data\":{}}".to_vec(),
            &["not valid JSON"],
        ),
        (
            "lone surrogate escape",
            br#"{"event":"\ud800","website_id":"w","data":{}}"#.to_vec(),
            &["not valid JSON", "escape"],
        ),
        (
            "byte-order mark",
            b"\xef\xbb\xbf{\"event\":\"e\",\"website_id\":\"w\",\"data\":{}}".to_vec(),
            &["not valid JSON"],
        ),
    ];
    expect_400(app, cases).await;
    case_deep_nesting(app).await;
}

/// Posts each body; each must be answered 400 with an error holding every
/// one of its words.
async fn expect_400(app: &TestApp, cases: Vec<(&str, Vec<u8>, &[&str])>) {
    for (what, body, wants) in cases {
        assert!(
            body.len() <= MAX_BODY,
            "{what} must be refused for its shape"
        );
        let (status, error) = post(app, body).await;
        assert_eq!(status, 400, "{what}: {error}");
        for want in wants {
            assert!(error.contains(want), "{what}: {error:?} lacks {want:?}");
        }
        still_serves(app, what).await;
    }
}

/// 100,000 levels of nesting (100 KB, within `max_body`): 400 from
/// serde_json's recursion limit, not a stack overflow. Nesting within the
/// limit is a valid event, stored and delivered like any other.
pub(super) async fn case_deep_nesting(app: &TestApp) {
    let wants: &[&str] = &["not valid JSON", "recursion limit"];
    let in_data = format!(
        "{{\"website_id\":\"w\",\"event\":\"message:send\",\"data\":{{\"x\":{}",
        "[".repeat(100_000)
    );
    expect_400(
        app,
        vec![
            (
                "100,000-deep arrays",
                "[".repeat(100_000).into_bytes(),
                wants,
            ),
            (
                "100,000-deep objects",
                "{\"a\":".repeat(100_000).into_bytes(),
                wants,
            ),
            (
                "100,000-deep arrays inside data",
                in_data.into_bytes(),
                wants,
            ),
        ],
    )
    .await;

    let nested = format!(
        "{{\"website_id\":\"w\",\"event\":\"message:send\",\"data\":{{\"x\":{}{}}}}}",
        "[".repeat(120),
        "]".repeat(120)
    );
    assert_eq!(post(app, nested).await, (200, String::new()));
    still_serves(app, "120-deep nesting").await;
}

/// 10 MB bodies: refused from the declared length, or while streaming a
/// chunked body; a declared 100 MB whose body never comes: 413 at once.
pub(super) async fn case_oversized_bodies(app: &TestApp) {
    let ten_mb = vec![b'x'; 10 * 1024 * 1024];

    let head = [
        "Content-Type: application/json".to_owned(),
        format!("Content-Length: {}", ten_mb.len()),
    ];
    let (a, mut raw) = exchange(app, raw_request(&hook_target(), "HTTP/1.1", &head, &ten_mb)).await;
    assert_eq!((a.status, a.error()), (413, TOO_LARGE.to_owned()));
    raw.closed().await;
    still_serves(app, "10 MB with Content-Length").await;

    let chunked = raw_http::chunked(&ten_mb, 64 * 1024);
    let head = [
        "Content-Type: application/json".to_owned(),
        "Transfer-Encoding: chunked".to_owned(),
    ];
    let (a, mut raw) = exchange(
        app,
        raw_request(&hook_target(), "HTTP/1.1", &head, &chunked),
    )
    .await;
    assert_eq!((a.status, a.error()), (413, TOO_LARGE.to_owned()));
    raw.closed().await;
    still_serves(app, "10 MB chunked").await;

    // 100 MB declared, not one byte sent: only the declared length can
    // answer this, and the server must not wait for the body.
    let head = [
        "Content-Type: application/json".to_owned(),
        "Content-Length: 104857600".to_owned(),
    ];
    let mut raw = connect(app).await;
    raw.send(&raw_request(&hook_target(), "HTTP/1.1", &head, b""))
        .await;
    let a = raw.response().await;
    assert_eq!((a.status, a.error()), (413, TOO_LARGE.to_owned()));
    raw.closed().await;
    still_serves(app, "100 MB declared, never sent").await;
}

/// A small declared body that never comes: 408 after `body_read_timeout`,
/// then the connection is closed.
pub(super) async fn case_body_never_comes(app: &TestApp) {
    let head = [
        "Content-Type: application/json".to_owned(),
        "Content-Length: 1000".to_owned(),
    ];
    let mut raw = connect(app).await;
    raw.send(&raw_request(
        &hook_target(),
        "HTTP/1.1",
        &head,
        br#"{"website"#,
    ))
    .await;
    let a = raw.response().await;
    assert_eq!(a.status, 408);
    assert!(a.error().contains("body not received"), "{}", a.error());
    raw.closed().await;
    still_serves(app, "a body that never comes").await;
}

// ---------------------------------------------------------------------------
// The tests

#[tokio::test]
async fn malformed_bodies_are_400_naming_the_problem() {
    let app = battery_app().await;
    case_malformed_bodies(&app).await;
}

#[tokio::test]
async fn oversized_bodies_are_413_and_a_body_that_never_comes_408() {
    let app = battery_app().await;
    case_oversized_bodies(&app).await;
    case_body_never_comes(&app).await;
}
