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
//!
//! Files: `bodies` (malformed, deeply nested, oversized and never-sent
//! bodies), `heads` (oversized heads, protocol edge cases, `Expect:
//! 100-continue`, wrong keys), `slow_loris` (slow heads, one and by the
//! hundred, and `max_connections`), `memory` (the whole battery and
//! hundreds of huge heads or stalled bodies at once, within a memory bound).
//! The cases of the battery live in `bodies`, `heads` and `slow_loris`, each
//! beside its own tests; `memory` runs them all. This file holds what they
//! share: the relay's config, the valid request after each case, raw
//! HTTP/1.1.

mod bodies;
mod heads;
mod memory;
mod slow_loris;

use std::time::Duration;

use serde_json::json;

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
