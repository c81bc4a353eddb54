//! An event answered 200 is stored, whatever happens next: a store that
//! cannot commit answers 503 with `Retry-After` and stores nothing, events
//! survive SIGKILL, `/readyz` follows the store, and SIGTERM exits 0 after
//! shutting down.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::json;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};
use tokio::task::JoinSet;

use super::*;
use crate::helpers::*;

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
// Admin, signals

#[tokio::test]
async fn admin_health_and_readiness() {
    let app = TestApp::spawn().await;
    let (status, body) = json_of(app.admin_get("/healthz").await).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let (status, body) = json_of(app.admin_get("/readyz").await).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status": "ready", "store": {"engine": "sqlite", "database": "ok"}})
        )
    );
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
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status": "ready", "store": {"engine": "sqlite", "database": "ok"}})
        )
    );
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
