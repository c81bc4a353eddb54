//! The ingest listener, end to end: every answer Crisp (or anything else) can
//! get from `POST /crisp/hooks`, what is in the store afterwards, the resource
//! bounds (body size, header and body read timeouts, keep-alive), crash
//! safety, the admin listener, SIGTERM, and keys staying out of the logs.
//!
//! No test asserts how long something took. The only clocks are hang guards
//! (`GUARD`), which turn "the server never answered" into a failure instead of
//! a stuck test.
//!
//! Files: `answers` (200 and what is stored, 401 and the keys, 400, 415,
//! 404/405, keys kept out of the logs), `limits` (413, slow clients and
//! keep-alive, over raw HTTP/1.1), `durability` (a store that cannot commit,
//! SIGKILL, health and readiness, SIGTERM). This file holds what they share:
//! envelopes, configs, reading answers, the log and the stored rows.

mod answers;
mod durability;
mod limits;
mod plugin_hooks;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

use crate::helpers::*;

/// Upper bound on waiting for anything (an answer, a closed connection, a log
/// line). Generous: it only exists so that a broken server fails the test
/// instead of hanging it.
const GUARD: Duration = Duration::from_secs(10);

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
