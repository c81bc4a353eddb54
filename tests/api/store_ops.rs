//! The store's maintenance operations on a real SQLite file: retention
//! pruning, dead-letter purge and replay, as the delivery engine and the
//! `deadletters` commands use them.

use crisp_relay::store::{NewDelivery, NewEvent, Op, SqliteStore};

async fn store_with(n: usize) -> (tempfile::TempDir, SqliteStore, Vec<i64>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("relay.db"), 16)
        .await
        .unwrap();
    let mut events = Vec::new();
    for i in 0..n {
        let body = format!(r#"{{"website_id":"w","event":"message:send","data":{{"n":{i}}}}}"#);
        let event = NewEvent {
            received_at_ms: 1_000,
            website_id: "w".into(),
            name: "message:send".into(),
            timestamp_ms: 1_000,
            body,
        };
        let delivery = NewDelivery {
            route: "r".into(),
            target: "t".into(),
            template: None,
        };
        events.push(store.accept(event, vec![delivery]).await.unwrap());
    }
    (dir, store, events)
}

#[tokio::test]
async fn pruning_removes_delivered_rows_and_their_events_past_retention_only() {
    let (_dir, store, _) = store_with(3).await;
    let rows = store.deliveries().await.unwrap();
    store
        .apply(Op::Delivered {
            id: rows[0].id,
            attempts: 1,
            status: Some(200),
        })
        .await
        .unwrap();
    store
        .apply(Op::Dead {
            id: rows[1].id,
            attempts: 1,
            status: Some(400),
            error: "bad".into(),
        })
        .await
        .unwrap();

    // Nothing is old enough yet.
    assert_eq!(
        store
            .apply(Op::PruneDelivered { before_ms: 0 })
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.deliveries().await.unwrap().len(), 3);

    // Past retention: only the delivered row goes, with its event; the dead
    // letter and the pending row stay, and so do their events.
    let later = crisp_relay::now_ms() + 1_000;
    assert_eq!(
        store
            .apply(Op::PruneDelivered { before_ms: later })
            .await
            .unwrap(),
        1
    );
    let left: Vec<(String, i64)> = store
        .deliveries()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.state, d.event_id))
        .collect();
    assert_eq!(
        left,
        vec![("dead".to_owned(), 2), ("pending".to_owned(), 3)]
    );
    assert_eq!(store.event_count().await.unwrap(), 2);
    assert!(store.event_body(1).await.unwrap().is_none());
    store.close().await;
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_by_id_or_target_and_purged() {
    let (_dir, store, _) = store_with(3).await;
    let rows = store.deliveries().await.unwrap();
    for r in &rows {
        store
            .apply(Op::Dead {
                id: r.id,
                attempts: 3,
                status: Some(500),
                error: format!("failed {}", r.id),
            })
            .await
            .unwrap();
    }
    let dead = store.dead_letters(None).await.unwrap();
    assert_eq!(dead.iter().map(|d| d.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(dead[0].last_error.as_deref(), Some("failed 1"));
    assert_eq!(dead[0].last_status, Some(500));
    assert_eq!(dead[0].event, "message:send");
    assert!(store.dead_letters(Some("other")).await.unwrap().is_empty());

    // Replay one: it is pending again with its attempts reset.
    assert_eq!(
        store
            .apply(Op::Replay {
                id: Some(2),
                target: None
            })
            .await
            .unwrap(),
        1
    );
    let pending = store
        .next_pending("t")
        .await
        .unwrap()
        .expect("replayed row is pending");
    assert_eq!((pending.id, pending.attempts), (2, 0));
    // Replaying a row that is not dead changes nothing.
    assert_eq!(
        store
            .apply(Op::Replay {
                id: Some(2),
                target: None
            })
            .await
            .unwrap(),
        0
    );
    // Replay by target takes the rest.
    assert_eq!(
        store
            .apply(Op::Replay {
                id: None,
                target: Some("t".into())
            })
            .await
            .unwrap(),
        2
    );
    assert!(store.dead_letters(None).await.unwrap().is_empty());

    // Purge only removes dead letters older than the cut.
    store
        .apply(Op::Dead {
            id: 1,
            attempts: 1,
            status: None,
            error: "x".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        store.apply(Op::PurgeDead { before_ms: 0 }).await.unwrap(),
        0
    );
    assert_eq!(
        store
            .apply(Op::PurgeDead {
                before_ms: crisp_relay::now_ms() + 1_000
            })
            .await
            .unwrap(),
        1
    );
    assert!(store.dead_letters(None).await.unwrap().is_empty());
    assert_eq!(store.pending_count("t").await.unwrap(), 2);
    store.close().await;
}

#[tokio::test]
async fn a_store_written_by_a_newer_version_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    let store = SqliteStore::open(&path, 4).await.unwrap();
    store.close().await;
    // Bump the schema version as a newer relay would.
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query("PRAGMA user_version = 99")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let err = SqliteStore::open(&path, 4).await.unwrap_err().to_string();
    assert!(
        err.contains("newer crisp-relay") && err.contains("99"),
        "{err}"
    );
}

#[tokio::test]
async fn results_queued_together_apply_in_order_with_per_op_counts() {
    let (_dir, store, _) = store_with(5).await;
    let rows = store.deliveries().await.unwrap();
    let id = |i: usize| rows[i].id;
    let delivered = |id: i64, attempts: i64, status: Option<u16>| Op::Delivered {
        id,
        attempts,
        status,
    };
    // On this single-threaded runtime the writer cannot run before the last
    // of these is queued, so they are one commit: runs of `Delivered` are
    // applied as one statement, around a `Dead` and a `Retry` of the same
    // row that must come first.
    let ops = vec![
        delivered(id(0), 1, Some(200)),
        delivered(id(1), 3, Some(204)),
        delivered(999_999, 1, Some(200)),
        Op::Retry {
            id: id(4),
            attempts: 1,
            next_attempt_at_ms: 0,
            status: Some(503),
            error: "busy".into(),
        },
        Op::Dead {
            id: id(2),
            attempts: 2,
            status: Some(400),
            error: "bad".into(),
        },
        delivered(id(3), 1, None),
        delivered(id(4), 2, Some(200)),
        // Already dead: `Delivered` does not look at the state.
        delivered(id(2), 5, Some(200)),
    ];
    let mut pending = Vec::new();
    for op in ops {
        pending.push(store.apply_later(op).await.unwrap());
    }
    let mut counts = Vec::new();
    for c in pending {
        counts.push(c.wait().await.unwrap());
    }
    assert_eq!(counts, vec![1, 1, 0, 1, 1, 1, 1, 1]);
    let got: Vec<(String, i64)> = store
        .deliveries()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.state, d.attempts))
        .collect();
    assert_eq!(
        got,
        vec![
            ("delivered".to_owned(), 1),
            ("delivered".to_owned(), 3),
            ("delivered".to_owned(), 5),
            ("delivered".to_owned(), 1),
            ("delivered".to_owned(), 2),
        ]
    );
}
