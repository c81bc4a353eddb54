//! Hostile input against the running relay: bodies that are not Crisp
//! envelopes (malformed, empty, wrong shapes and types, invalid UTF-8,
//! 100,000-deep nesting), bodies too large or never sent, heads too large
//! (1,000 headers, a 64 KiB URL), protocol edge cases (HTTP/1.0, broken
//! chunked encoding, `Expect: 100-continue`, smuggling-shaped headers),
//! slow-loris clients, one at a time and by the hundred, and wrong keys.
//!
//! Each case asserts the exact answer (and the JSON error naming the problem
//! where the relay writes one; hyper's own answers to unparseable heads have
//! no body) and is followed by a valid signed request, which must still be
//! answered 200. The relay's memory must stay within a fixed bound (on its
//! growth, at the peak): through the whole battery and its heavy cases 20
//! more times, and under hundreds of huge heads or stalled bodies at once.
//!
//! Raw `TcpStream`s write what reqwest will not. No test asserts how long
//! anything took: the only clock is `GUARD`, which turns "never answered" or
//! "never closed" into a failure instead of a stuck test.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;
use crate::raw_http::{self, Conn, Response};

/// Upper bound on waiting for anything; only there so that a broken server
/// fails the test instead of hanging it.
const GUARD: Duration = Duration::from_secs(30);

/// The valid, signed request sent after every hostile one.
const FIXTURE: &str = "message_send_text_basic.json";

/// The relay's `max_body` in these tests: the default, 1 MiB (large enough
/// for 100,000 levels of nesting to be parsed rather than refused by size).
const MAX_BODY: usize = 1024 * 1024;
const TOO_LARGE: &str = "body is larger than the 1048576 byte limit";
const BUSY: &str = "the relay is busy; retry shortly";

/// The most a request head may take (`server::MAX_HEAD_BYTES`).
const MAX_HEAD: usize = crisp_relay::server::MAX_HEAD_BYTES;

const BAD_KEY: &str = "missing or wrong key";

/// The bound on the relay's memory growth in every test here (KiB).
const BOUND_KIB: u64 = 30 * 1024;

/// A config with `max_body: 1MiB`, a console target for every event, and
/// `server_extra` (lines indented by two spaces) under `server:`.
fn config(server_extra: &str) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:0\n  path: /crisp/hooks\n  keys: [\"${{CRISP_HOOK_KEY}}\"]\n  max_body: 1MiB\n{server_extra}\
         admin:\n  listen: 127.0.0.1:0\nstore:\n  path: data/relay.db\ntemplates: templates\n\
         targets:\n  console: {{kind: stdout}}\nroutes:\n  - name: all\n    to: [console]\n"
    )
}

/// The battery's relay: short header and body timeouts, so that the cases
/// waiting for them end soon.
async fn battery_app() -> TestApp {
    TestApp::spawn_with(&config(
        "  header_read_timeout: 1s\n  body_read_timeout: 1s\n",
    ))
    .await
}

/// A client without a connection pool: each request on a new connection, so
/// no request can land on one the relay is closing (its header timeout also
/// closes idle keep-alive connections).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(GUARD)
        .build()
        .unwrap()
}

/// The valid request that must succeed after every hostile one.
async fn still_serves(app: &TestApp, after: &str) {
    let resp = client()
        .post(app.hook_url(KEY))
        .header("content-type", "application/json")
        .body(fixture(FIXTURE))
        .send()
        .await
        .unwrap_or_else(|e| panic!("valid request after {after}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            json!({"accepted": true, "deliveries": 1})
                .to_string()
                .as_str()
        ),
        "valid request after {after}"
    );
}

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
// Raw HTTP/1.1 (`raw_http`), every wait bounded by `GUARD`

/// A raw connection to the ingest listener.
async fn connect(app: &TestApp) -> Conn {
    Conn::connect(app.ingest, GUARD).await
}

/// A request to the hook path (with the right key unless `target` says
/// otherwise): request line, `headers`, blank line, `body`.
fn raw_request(target: &str, version: &str, headers: &[String], body: &[u8]) -> Vec<u8> {
    raw_http::request("POST", target, version, headers, body)
}

fn hook_target() -> String {
    format!("/crisp/hooks?key={KEY}")
}

/// Sends `request` on a new connection (in the background) and reads the
/// answer.
async fn exchange(app: &TestApp, request: Vec<u8>) -> (Response, Conn) {
    raw_http::exchange(app.ingest, request, GUARD).await
}

/// A field of /proc/PID/status of the relay, in KiB: `VmRSS` (resident
/// memory now) or `VmHWM` (its peak since the relay started).
fn mem_kib(app: &TestApp, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", app.child.id()))
        .expect("the relay process is alive");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// Warms the relay up (first requests allocate pools, caches, the store's
/// pages) and returns its resident memory then.
async fn warm_rss(app: &TestApp) -> u64 {
    for _ in 0..5 {
        still_serves(app, "warm-up").await;
    }
    mem_kib(app, "VmRSS")
}

/// The relay's peak memory so far has not grown past `before` + the bound.
/// The peak (`VmHWM`) covers every moment since `before`, not just now.
fn assert_peak_within_bound(app: &TestApp, before: u64, what: &str) {
    let peak = mem_kib(app, "VmHWM");
    eprintln!("relay memory {what}: {before} KiB resident before, {peak} KiB peak");
    assert!(
        peak.saturating_sub(before) < BOUND_KIB,
        "{what}: the relay's peak memory grew from {before} KiB to {peak} KiB"
    );
}

// ---------------------------------------------------------------------------
// The cases. Each takes the running relay, asserts the answer, and ends with
// `still_serves`.

/// Bodies that are not a Crisp envelope: 400, the error naming the problem.
async fn case_malformed_bodies(app: &TestApp) {
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
async fn case_deep_nesting(app: &TestApp) {
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
async fn case_oversized_bodies(app: &TestApp) {
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
async fn case_body_never_comes(app: &TestApp) {
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

/// Heads over the relay's limits (16 KiB, 100 headers): 1,000 headers, a
/// 64 KiB URL, a 20 KB header, all 431 (hyper's own answer, without a body),
/// then the connection is closed. A 12 KiB URL is within the limits and
/// served.
async fn case_oversized_heads(app: &TestApp) {
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
async fn case_protocol(app: &TestApp) {
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
async fn case_expect_continue(app: &TestApp) {
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
async fn case_keys(app: &TestApp) {
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

/// One client dribbling its request head a byte at a time, never finishing:
/// `header_read_timeout` is a deadline for the whole head, so the server
/// closes the connection (without an answer: hyper just drops it).
async fn case_slow_head(app: &TestApp) {
    let slow = open_slow(app.ingest).await;
    let got = dribble_until_closed(slow, Duration::from_millis(50)).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    still_serves(app, "a slow-loris head").await;
}

/// The start of a request head, whose last header never ends.
fn slow_head_start() -> Vec<u8> {
    format!(
        "POST /crisp/hooks?key={KEY} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Slow: "
    )
    .into_bytes()
}

/// A connection that has sent the start of a head that never ends.
async fn open_slow(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&slow_head_start()).await.unwrap();
    stream
}

/// Sends one more byte of the head every `every` until the server closes
/// the connection; what the server sent before that.
async fn dribble_until_closed(stream: TcpStream, every: Duration) -> Vec<u8> {
    let (mut rd, mut wr) = stream.into_split();
    tokio::time::timeout(GUARD, async move {
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        let mut ticks = tokio::time::interval(every);
        loop {
            tokio::select! {
                r = rd.read(&mut chunk) => match r {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                },
                _ = ticks.tick() => {
                    // A failed write also means the server is gone; the read
                    // side then sees the end.
                    let _ = wr.write_all(b"a").await;
                }
            }
        }
    })
    .await
    .expect("the server kept a slow-loris connection open")
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

#[tokio::test]
async fn a_slow_loris_head_is_disconnected() {
    let app = battery_app().await;
    case_slow_head(&app).await;
}

/// 200 slow-loris connections hang (a long `header_read_timeout`, the default
/// `max_connections` of 1024): a valid request is served meanwhile, and every
/// one of the 200 was still open and served once it finished its request.
#[tokio::test]
async fn two_hundred_slow_loris_connections_do_not_starve_a_valid_request() {
    const N: usize = 200;
    let app = TestApp::spawn_with(&config("  header_read_timeout: 120s\n")).await;
    let stop = CancellationToken::new();
    let mut slow = JoinSet::new();
    for i in 0..N {
        let (rd, mut wr) = open_slow(app.ingest).await.into_split();
        let stop = stop.clone();
        slow.spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = ticks.tick() => wr.write_all(b"a").await.unwrap_or_else(|e| panic!("slow connection {i} closed: {e}")),
                }
            }
            (i, rd, wr)
        });
    }
    still_serves(&app, "200 slow-loris connections").await;

    // Each hanging connection now finishes its request, and is answered.
    stop.cancel();
    let body = fixture(FIXTURE);
    let mut finish = JoinSet::new();
    while let Some(r) = slow.join_next().await {
        let (i, rd, mut wr) = r.unwrap();
        let mut rest = format!("\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        rest.extend_from_slice(&body);
        finish.spawn(async move {
            wr.write_all(&rest).await.unwrap();
            let mut raw = Conn::from_halves(rd, wr, GUARD);
            (i, raw.response().await.status)
        });
    }
    let mut answered = 0;
    while let Some(r) = finish.join_next().await {
        let (i, status) = r.unwrap();
        assert_eq!(status, 200, "slow connection {i}");
        answered += 1;
    }
    assert_eq!(answered, N);
}

/// With a short `header_read_timeout`, 200 slow-loris connections are all
/// closed by the server, however long they keep dribbling.
#[tokio::test]
async fn two_hundred_slow_loris_connections_are_all_disconnected() {
    let app = battery_app().await;
    let mut slow = JoinSet::new();
    for _ in 0..200 {
        let ingest = app.ingest;
        slow.spawn(async move {
            let stream = open_slow(ingest).await;
            dribble_until_closed(stream, Duration::from_millis(200)).await
        });
    }
    while let Some(r) = slow.join_next().await {
        let got = r.unwrap();
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    }
    still_serves(&app, "200 slow-loris connections, closed").await;
}

/// At `max_connections`, further connections wait in the kernel's backlog
/// until a slot frees: slow-loris connections hold their slots until
/// `header_read_timeout`, so a valid request behind twice as many of them as
/// there are slots waits for them to be dropped, and is then served.
#[tokio::test]
async fn at_max_connections_a_valid_request_is_served_once_slow_loris_slots_expire() {
    let app =
        TestApp::spawn_with(&config("  header_read_timeout: 1s\n  max_connections: 8\n")).await;
    // All 16 are connected (accepted, or queued in the backlog) before the
    // valid request connects.
    let mut slow = JoinSet::new();
    for _ in 0..16 {
        let stream = open_slow(app.ingest).await;
        slow.spawn(dribble_until_closed(stream, Duration::from_millis(200)));
    }
    let started = Instant::now();
    still_serves(&app, "16 slow-loris connections over 8 slots").await;
    // Not asserted (no timing assertions): printed for the record.
    eprintln!(
        "valid request behind 16 slow-loris connections over 8 slots (header_read_timeout 1s): answered after {:?}",
        started.elapsed()
    );
    while let Some(r) = slow.join_next().await {
        let got = r.unwrap();
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    }
}

/// The whole battery on one relay, then its heavy cases 20 more times: the
/// relay's memory stays within a fixed bound (a bound on growth, not a
/// timing), at its peak as well as at the end.
#[tokio::test]
async fn memory_stays_bounded_through_the_battery_and_repeats() {
    let app = battery_app().await;
    let before = warm_rss(&app).await;

    case_malformed_bodies(&app).await;
    case_oversized_bodies(&app).await;
    case_body_never_comes(&app).await;
    case_oversized_heads(&app).await;
    case_protocol(&app).await;
    case_expect_continue(&app).await;
    case_keys(&app).await;
    case_slow_head(&app).await;
    let after_battery = mem_kib(&app, "VmRSS");

    for _ in 0..20 {
        case_deep_nesting(&app).await;
        case_oversized_bodies(&app).await;
        case_oversized_heads(&app).await;
    }
    let after_repeats = mem_kib(&app, "VmRSS");
    eprintln!(
        "relay VmRSS: {before} KiB before, {after_battery} KiB after the battery, {after_repeats} KiB after 20 repeats of the heavy cases"
    );
    for (when, now) in [
        ("the battery", after_battery),
        ("20 repeats", after_repeats),
    ] {
        assert!(
            now.saturating_sub(before) < BOUND_KIB,
            "resident memory grew from {before} KiB to {now} KiB after {when}"
        );
    }
    assert_peak_within_bound(&app, before, "through the battery and 20 repeats");
}

/// Heads are read before the key is checked, so anyone can send them: 200
/// connections at once each sending 300 KB of a head that never ends. Each
/// is refused (431) once it passes the head limit, instead of being buffered
/// (hyper's default limit is about 400 KiB per connection: 200 of them held
/// 60 MB until `header_read_timeout`), and the relay's peak memory stays
/// within the bound.
#[tokio::test]
async fn hundreds_of_huge_heads_at_once_are_refused_within_bounded_memory() {
    let app = TestApp::spawn_with(&config("  header_read_timeout: 3s\n")).await;
    let before = warm_rss(&app).await;
    let mut huge = slow_head_start();
    huge.extend(std::iter::repeat_n(b'a', 300_000));
    let mut conns = JoinSet::new();
    for _ in 0..200 {
        let mut raw = connect(&app).await;
        raw.send_in_background(huge.clone());
        // The answer, or none if the server closed at its header timeout.
        conns.spawn(async move { raw.try_response().await.map(|a| a.status) });
    }
    let mut answers = Vec::new();
    while let Some(r) = conns.join_next().await {
        answers.push(r.unwrap());
    }
    assert_peak_within_bound(&app, before, "after 200 huge heads at once");
    assert!(answers.iter().all(|a| *a == Some(431)), "{answers:?}");
    still_serves(&app, "200 huge heads at once").await;
}

/// Bodies are read only with a valid key, but then into memory: 100
/// connections at once each declaring 1 MiB (the limit) and sending all of it
/// but the last byte. Only `BODY_BUDGET_BYTES` (16 MiB) of them are read at
/// once; the others wait for the budget, and each gets 408 (its body never
/// ended) or 503 with `Retry-After` (no budget within `body_read_timeout`).
/// Before the budget, the relay held all 100 MiB.
#[tokio::test]
async fn hundreds_of_stalled_bodies_hold_no_more_than_the_body_budget() {
    let app = TestApp::spawn_with(&config("  body_read_timeout: 2s\n")).await;
    let before = warm_rss(&app).await;
    let head = [
        "Content-Type: application/json".to_owned(),
        format!("Content-Length: {MAX_BODY}"),
    ];
    let request = raw_request(&hook_target(), "HTTP/1.1", &head, &vec![b' '; MAX_BODY - 1]);
    let mut conns = JoinSet::new();
    for _ in 0..100 {
        let mut raw = connect(&app).await;
        raw.send_in_background(request.clone());
        conns.spawn(async move {
            let a = raw.response().await;
            let retry_after = a.header("retry-after").map(str::to_owned);
            (a.status, a.error(), retry_after)
        });
    }
    let (mut timed_out, mut busy) = (0, 0);
    while let Some(r) = conns.join_next().await {
        match r.unwrap() {
            (408, error, _) if error.contains("body not received") => timed_out += 1,
            (503, error, Some(retry)) if error == BUSY && retry == "1" => busy += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    eprintln!("100 stalled 1 MiB bodies: {timed_out} answered 408, {busy} answered 503");
    // The first 16 to reserve are read until their body timeout.
    assert!(timed_out >= 16, "{timed_out} bodies were read");
    assert_peak_within_bound(&app, before, "after 100 stalled 1 MiB bodies at once");
    still_serves(&app, "100 stalled 1 MiB bodies at once").await;
}
