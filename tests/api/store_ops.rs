//! The store's operations, on each engine (a real SQLite file; a
//! PostgreSQL schema when a server is given, see `store_engines`):
//! retention pruning in chunks, dead-letter purge and replay, moving and
//! purging orphaned rows, the workers' filtered reads, the queue figures
//! behind `/metrics`, group commit, resends, a newer schema, and the
//! separate room of ingest and results — as the delivery engine, the
//! server and the `deadletters` and `queue` commands use them. The SQLite
//! file's own migration is tested at the end, on SQLite only.

use std::sync::Arc;

use crisp_relay::clock::Clock;
use crisp_relay::store::{
    Accepted, NewDelivery, NewEvent, Op, PendingDelivery, PendingGroup, Pruned, SqliteStore, Store,
    StoreError, TemplateFilter,
};

use crate::store_engines::{Engine, both_engines};

both_engines!(
    pruning_removes_delivered_rows_and_their_events_past_retention_only,
    dead_letters_are_listed_replayed_by_id_or_target_and_purged,
    a_store_written_by_a_newer_version_is_refused_with_a_clear_error,
    results_queued_together_apply_in_order_with_per_op_counts,
    a_replayed_dead_letter_is_due_at_once_with_a_fresh_max_age,
    orphaned_rows_are_counted_skipped_by_a_filtered_read_moved_and_purged,
    queue_figures_count_pending_and_dead_and_date_the_head_of_each_queue,
    retention_prunes_in_chunks_each_its_own_commit,
    waiting_results_never_take_the_room_of_accepted_events,
    resends_within_a_day_are_duplicates_and_store_nothing,
    concurrent_accepts_share_commits,
);

/// The store's clock in these tests: a fixed start, far from the real time.
const T0: i64 = 1_700_000_000_000;

async fn store_with(engine: &Engine, n: usize) -> (Arc<dyn Store>, Vec<i64>) {
    let store = engine.open(16, Clock::starting_at(T0)).await;
    let events = accept_n(&*store, n, "t", None).await;
    (store, events)
}

/// The oldest pending delivery for `target`, with its event.
async fn next_pending(store: &dyn Store, target: &str) -> Option<PendingDelivery> {
    store
        .pending(target, 0, 1, &TemplateFilter::Any)
        .await
        .unwrap()
        .into_iter()
        .next()
}

/// How many deliveries for `target` are pending.
async fn pending_count(store: &dyn Store, target: &str) -> i64 {
    store
        .pending_groups()
        .await
        .unwrap()
        .iter()
        .filter(|g| g.target == target)
        .map(|g| g.count)
        .sum()
}

fn pruned(deliveries: u64, events: u64) -> Pruned {
    Pruned {
        deliveries,
        events,
        keys: 0,
    }
}

/// Accepts `n` events with one delivery each to `target` with `template`.
async fn accept_n(store: &dyn Store, n: usize, target: &str, template: Option<&str>) -> Vec<i64> {
    let mut events = Vec::new();
    for i in 0..n {
        let body = format!(r#"{{"website_id":"w","event":"message:send","data":{{"n":{i}}}}}"#);
        let event = NewEvent {
            received_at_ms: 1_000,
            website_id: "w".into(),
            name: "message:send".into(),
            timestamp_ms: 1_000,
            body,
            conversation: None,
            dedupe: None,
        };
        let delivery = NewDelivery {
            route: "r".into(),
            target: target.into(),
            template: template.map(str::to_owned),
        };
        match store.accept(event, vec![delivery]).await.unwrap() {
            Accepted::New(id) => events.push(id),
            Accepted::Duplicate => panic!("not a duplicate: it has no dedupe key"),
        }
    }
    events
}

async fn pruning_removes_delivered_rows_and_their_events_past_retention_only(engine: Engine) {
    let (store, _) = store_with(&engine, 3).await;
    let rows = store.deliveries().await.unwrap();
    store
        .apply(Op::Delivered {
            id: rows[0].id,
            attempts: 1,
            status: Some(200),
            at_ms: 0,
            latency_ms: None,
        })
        .await
        .unwrap();
    store
        .apply(Op::Dead {
            id: rows[1].id,
            attempts: 1,
            status: Some(400),
            error: "bad".into(),
            at_ms: 0,
            latency_ms: None,
        })
        .await
        .unwrap();

    // Nothing is old enough yet.
    assert_eq!(store.prune(T0 - 1, 0).await.unwrap(), pruned(0, 0));
    assert_eq!(store.deliveries().await.unwrap().len(), 3);

    // Past retention: only the delivered row goes, with its event; the dead
    // letter and the pending row stay, and so do their events.
    let later = T0 + 60_000;
    assert_eq!(store.prune(later, 0).await.unwrap(), pruned(1, 1));
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
    // Events 2 and 3 are still referenced: event 1 went.
    assert_eq!(store.event_count().await.unwrap(), 2);
    store.close().await;
}

async fn dead_letters_are_listed_replayed_by_id_or_target_and_purged(engine: Engine) {
    let (store, _) = store_with(&engine, 3).await;
    let rows = store.deliveries().await.unwrap();
    for r in &rows {
        store
            .apply(Op::Dead {
                id: r.id,
                attempts: 3,
                status: Some(500),
                error: format!("failed {}", r.id),
                at_ms: 0,
                latency_ms: None,
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
    let pending = next_pending(&*store, "t")
        .await
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
            at_ms: 0,
            latency_ms: None,
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
                before_ms: T0 + 60_000
            })
            .await
            .unwrap(),
        1
    );
    assert!(store.dead_letters(None).await.unwrap().is_empty());
    assert_eq!(pending_count(&*store, "t").await, 2);
    store.close().await;
}

async fn a_store_written_by_a_newer_version_is_refused_with_a_clear_error(engine: Engine) {
    let store = engine.open(4, Clock::starting_at(T0)).await;
    store.close().await;
    // Bump the schema version as a newer relay would.
    engine.set_schema_version(99).await;
    let err = engine.open_err(4, Clock::starting_at(T0)).await;
    assert!(
        err.contains("newer crisp-relay") && err.contains("99"),
        "{err}"
    );
    if let Engine::Postgres(schema) = &engine {
        // Where: the URL, without its password if it has one.
        let url = schema.url.expose();
        assert!(err.contains(url.host_str().unwrap()), "{err}");
        if let Some(password) = url.password() {
            assert!(!err.contains(&format!(":{password}@")), "{err}");
        }
    }
}

async fn results_queued_together_apply_in_order_with_per_op_counts(engine: Engine) {
    let (store, _) = store_with(&engine, 5).await;
    let rows = store.deliveries().await.unwrap();
    let id = |i: usize| rows[i].id;
    let delivered = |id: i64, attempts: i64, status: Option<u16>| Op::Delivered {
        id,
        attempts,
        status,
        at_ms: 0,
        latency_ms: None,
    };
    // On this single-threaded runtime the writer cannot run before the last
    // of these is queued, so they are one commit (counted below): runs of
    // `Delivered` are applied as one statement, around a `Dead` and a
    // `Retry` of the same row that must come first.
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
            at_ms: 0,
            latency_ms: None,
        },
        Op::Dead {
            id: id(2),
            attempts: 2,
            status: Some(400),
            error: "bad".into(),
            at_ms: 0,
            latency_ms: None,
        },
        delivered(id(3), 1, None),
        delivered(id(4), 2, Some(200)),
        // Already dead: `Delivered` does not look at the state.
        delivered(id(2), 5, Some(200)),
    ];
    let commits_before = store.commits();
    let mut pending = Vec::new();
    for op in ops {
        pending.push(store.apply_later(op).await.unwrap());
    }
    let mut counts = Vec::new();
    for c in pending {
        counts.push(c.wait().await.unwrap());
    }
    assert_eq!(counts, vec![1, 1, 0, 1, 1, 1, 1, 1]);
    assert_eq!(
        store.commits() - commits_before,
        1,
        "the results were not one commit"
    );
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

async fn a_replayed_dead_letter_is_due_at_once_with_a_fresh_max_age(engine: Engine) {
    // Accepted and dead-lettered by a relay whose clock read T0 ...
    let store = engine.open(4, Clock::starting_at(T0)).await;
    accept_n(&*store, 1, "t", None).await;
    store
        .apply(Op::Dead {
            id: 1,
            attempts: 12,
            status: Some(503),
            error: "gone".into(),
            at_ms: 0,
            latency_ms: None,
        })
        .await
        .unwrap();
    store.close().await;
    // ... replayed a day later (another process: `deadletters replay`).
    let day = 86_400_000;
    let later = engine.open(4, Clock::starting_at(T0 + day)).await;
    let replayed = later
        .apply(Op::Replay {
            id: Some(1),
            target: None,
        })
        .await
        .unwrap();
    assert_eq!(replayed, 1);
    let row = next_pending(&*later, "t").await.unwrap();
    assert_eq!(row.attempts, 0);
    // max_age counts from the replay, not from the first acceptance ...
    assert!(row.queued_at_ms >= T0 + day, "{row:?}");
    assert!(row.created_at_ms < T0 + day, "{row:?}");
    // ... and it is due whatever the reading relay's clock says.
    assert!(row.next_attempt_at_ms <= T0, "{row:?}");
    later.close().await;
}

async fn orphaned_rows_are_counted_skipped_by_a_filtered_read_moved_and_purged(engine: Engine) {
    let (store, _) = store_with(&engine, 0).await;
    accept_n(&*store, 2, "chat", Some("old_tpl")).await;
    accept_n(&*store, 3, "chat", Some("visitor")).await;
    accept_n(&*store, 1, "gone", Some("visitor")).await;
    let group = |target: &str, template: &str, count| PendingGroup {
        target: target.into(),
        template: Some(template.into()),
        count,
    };
    assert_eq!(
        store.pending_groups().await.unwrap(),
        vec![
            group("chat", "old_tpl", 2),
            group("chat", "visitor", 3),
            group("gone", "visitor", 1)
        ]
    );
    // A worker that can only render `visitor` reads past the others, in
    // order, and leaves them queued.
    let filter = TemplateFilter::OneOf(vec!["visitor".into()]);
    let ids: Vec<i64> = store
        .pending("chat", 0, 10, &filter)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, vec![3, 4, 5]);
    assert!(
        store
            .pending("chat", 0, 10, &TemplateFilter::OneOf(Vec::new()))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .pending("chat", 0, 10, &TemplateFilter::Any)
            .await
            .unwrap()
            .len(),
        5
    );

    // Renamed template: the two rows get the new name and keep their place.
    let moved = store
        .apply(Op::MovePending {
            from: "chat".into(),
            template: Some("old_tpl".into()),
            to: None,
            to_template: Some("visitor".into()),
        })
        .await
        .unwrap();
    assert_eq!(moved, 2);
    let ids: Vec<i64> = store
        .pending("chat", 0, 10, &filter)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    // Renamed target: moved to `chat`, behind nothing (ids keep order).
    let moved = store
        .apply(Op::MovePending {
            from: "gone".into(),
            template: None,
            to: Some("chat".into()),
            to_template: None,
        })
        .await
        .unwrap();
    assert_eq!(moved, 1);
    assert_eq!(
        store.pending_groups().await.unwrap(),
        vec![group("chat", "visitor", 6)]
    );
    // Purge by target and template; other templates stay.
    accept_n(&*store, 2, "chat", Some("stale")).await;
    let purged = store
        .apply(Op::PurgePending {
            target: "chat".into(),
            template: Some("stale".into()),
        })
        .await
        .unwrap();
    assert_eq!(purged, 2);
    assert_eq!(
        store.pending_groups().await.unwrap(),
        vec![group("chat", "visitor", 6)]
    );
    store.close().await;
}

async fn queue_figures_count_pending_and_dead_and_date_the_head_of_each_queue(engine: Engine) {
    let (store, _) = store_with(&engine, 3).await;
    accept_n(&*store, 2, "other", None).await;
    store
        .apply(Op::Dead {
            id: 1,
            attempts: 1,
            status: Some(400),
            error: "bad".into(),
            at_ms: 0,
            latency_ms: None,
        })
        .await
        .unwrap();
    store
        .apply(Op::Delivered {
            id: 4,
            attempts: 1,
            status: Some(200),
            at_ms: 0,
            latency_ms: None,
        })
        .await
        .unwrap();
    let mut stats = store.queue_stats().await.unwrap();
    stats.sort_by(|a, b| a.target.cmp(&b.target));
    let got: Vec<(&str, i64, i64, bool)> = stats
        .iter()
        .map(|s| {
            (
                s.target.as_str(),
                s.pending,
                s.dead,
                s.head_queued_at_ms.is_some_and(|t| t >= T0),
            )
        })
        .collect();
    assert_eq!(got, vec![("other", 1, 0, true), ("t", 2, 1, true)]);
    store.close().await;
}

async fn retention_prunes_in_chunks_each_its_own_commit(engine: Engine) {
    let (store, _) = store_with(&engine, 1_200).await;
    for id in 1..=1_200 {
        store
            .apply_later(Op::Delivered {
                id,
                attempts: 1,
                status: Some(200),
                at_ms: 0,
                latency_ms: None,
            })
            .await
            .unwrap();
    }
    store.barrier().await.unwrap();
    let before = store.commits();
    assert_eq!(
        store.prune(T0 + 60_000, 0).await.unwrap(),
        pruned(1_200, 1_200)
    );
    let commits = store.commits() - before;
    // 1,200 rows and 1,200 events at 500 per chunk: 3 + 3 commits, and one
    // for the (no) dedupe keys; an ingest commit waits for one chunk at
    // most, never for the whole prune.
    assert_eq!(commits, 7);
    assert_eq!(store.event_count().await.unwrap(), 0);
    store.close().await;
}

/// Delivery results queue apart from ingest: however many wait for a
/// commit, an event still finds room (`store.queue_capacity` is ingest's).
async fn waiting_results_never_take_the_room_of_accepted_events(engine: Engine) {
    let store = engine.open(2, Clock::starting_at(T0)).await;
    accept_n(&*store, 1, "t", None).await;
    // On this single-threaded runtime the writer cannot take these before
    // the accept below is queued.
    let mut waiting = Vec::new();
    for _ in 0..50 {
        waiting.push(
            store
                .apply_later(Op::Retry {
                    id: 1,
                    attempts: 1,
                    next_attempt_at_ms: 0,
                    status: Some(503),
                    error: "busy".into(),
                    at_ms: 0,
                    latency_ms: None,
                })
                .await
                .unwrap(),
        );
    }
    let accepted = accept_n(&*store, 1, "t", None).await;
    assert_eq!(accepted, vec![2]);
    for w in waiting {
        w.wait().await.unwrap();
    }
    store.close().await;
    assert!(matches!(
        store
            .accept(
                NewEvent {
                    received_at_ms: 0,
                    website_id: "w".into(),
                    name: "e".into(),
                    timestamp_ms: 0,
                    body: "{}".into(),
                    conversation: None,
                    dedupe: None
                },
                Vec::new()
            )
            .await,
        Err(StoreError::Closed)
    ));
}

/// A file written by the first release (schema 1) is upgraded in place:
/// queued rows keep their ages and stay readable in order.
#[tokio::test]
async fn sqlite_a_schema_1_store_is_migrated_with_its_queue() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    {
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
                .await
                .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, received_at INTEGER NOT NULL, website_id TEXT NOT NULL, name TEXT NOT NULL, timestamp INTEGER NOT NULL, body TEXT NOT NULL) STRICT;
             CREATE TABLE deliveries (id INTEGER PRIMARY KEY, event_id INTEGER NOT NULL REFERENCES events(id) ON DELETE CASCADE, route TEXT NOT NULL, target TEXT NOT NULL, template TEXT, state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')), attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL, last_status INTEGER, last_error TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL) STRICT;
             CREATE INDEX deliveries_queue ON deliveries(target, state, id);
             CREATE INDEX deliveries_event ON deliveries(event_id);
             CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
             INSERT INTO events VALUES (1, 5, 'w', 'message:send', 5, '{}'), (2, 6, 'w', 'message:send', 6, '{}');
             INSERT INTO deliveries (event_id, route, target, state, next_attempt_at, created_at, updated_at) VALUES
               (1, 'r', 't', 'delivered', 5, 5, 7), (2, 'r', 't', 'pending', 6, 6, 6);
             PRAGMA user_version = 1;",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    let store = SqliteStore::open(&path, 4, Clock::starting_at(T0))
        .await
        .unwrap();
    let row = store.next_pending("t").await.unwrap().unwrap();
    assert_eq!((row.id, row.queued_at_ms, row.created_at_ms), (2, 6, 6));
    assert_eq!(store.deliveries().await.unwrap().len(), 2);
    store.close().await;
    // Opening again changes nothing (the version is now current).
    let again = SqliteStore::open(&path, 4, Clock::starting_at(T0))
        .await
        .unwrap();
    assert_eq!(again.next_pending("t").await.unwrap().unwrap().id, 2);
    again.close().await;
}

fn keyed_event(key: Option<&str>) -> NewEvent {
    NewEvent {
        received_at_ms: T0,
        website_id: "w".into(),
        name: "message:send".into(),
        timestamp_ms: T0,
        body: r#"{"website_id":"w","event":"message:send","data":{}}"#.into(),
        conversation: Some("w/s".into()),
        dedupe: key.map(str::to_owned),
    }
}

fn one_delivery() -> Vec<NewDelivery> {
    vec![NewDelivery {
        route: "r".into(),
        target: "t".into(),
        template: None,
    }]
}

/// Crisp's resends: an event whose dedupe key was accepted in the last
/// 24 h stores nothing (also within one commit); past 24 h, or without a
/// key, it is a new event; retention forgets keys older than 24 h.
async fn resends_within_a_day_are_duplicates_and_store_nothing(engine: Engine) {
    let store = engine.open(16, Clock::starting_at(T0)).await;
    let first = store
        .accept(keyed_event(Some("k1")), one_delivery())
        .await
        .unwrap();
    assert_eq!(first, Accepted::New(1));
    assert_eq!(
        store
            .accept(keyed_event(Some("k1")), one_delivery())
            .await
            .unwrap(),
        Accepted::Duplicate
    );
    // Two resends racing into one commit: the second is the duplicate.
    let (a, b) = tokio::join!(
        store.accept(keyed_event(Some("k2")), one_delivery()),
        store.accept(keyed_event(Some("k2")), one_delivery())
    );
    let mut got = vec![a.unwrap(), b.unwrap()];
    got.sort_by_key(|g| matches!(g, Accepted::Duplicate));
    assert_eq!(got, vec![Accepted::New(2), Accepted::Duplicate]);
    // No key: never a duplicate.
    assert_eq!(
        store
            .accept(keyed_event(None), one_delivery())
            .await
            .unwrap(),
        Accepted::New(3)
    );
    assert_eq!(
        store
            .accept(keyed_event(None), one_delivery())
            .await
            .unwrap(),
        Accepted::New(4)
    );
    assert_eq!(store.event_count().await.unwrap(), 4);
    assert_eq!(store.deliveries().await.unwrap().len(), 4);
    let row = next_pending(&*store, "t").await.unwrap();
    assert_eq!(row.conversation.as_deref(), Some("w/s"));
    store.close().await;

    // A day and a second later the same key is a new event, and retention
    // drops the keys of the day before.
    let day = crisp_relay::store::DEDUPE_WINDOW_MS;
    let later = engine.open(16, Clock::starting_at(T0 + day + 1_000)).await;
    assert_eq!(
        later
            .accept(keyed_event(Some("k1")), one_delivery())
            .await
            .unwrap(),
        Accepted::New(5)
    );
    let pruned = later.prune(0, T0 + day).await.unwrap();
    assert_eq!(pruned.keys, 1, "k2 was recorded a day ago; k1 just now");
    assert_eq!(
        later
            .accept(keyed_event(Some("k2")), one_delivery())
            .await
            .unwrap(),
        Accepted::New(6)
    );
    later.close().await;
}

/// Concurrent accepts (one request each) are grouped into fewer commits
/// than events, each answered with its own id.
async fn concurrent_accepts_share_commits(engine: Engine) {
    let store = engine.open(1024, Clock::starting_at(T0)).await;
    let before = store.commits();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.spawn(async move {
            let event = NewEvent {
                received_at_ms: T0,
                website_id: "w".into(),
                name: "message:send".into(),
                timestamp_ms: T0,
                body: format!(r#"{{"n":{i}}}"#),
                conversation: None,
                dedupe: Some(format!("k{i}")),
            };
            store.accept(event, one_delivery()).await
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.unwrap().unwrap() {
            Accepted::New(id) => ids.push(id),
            Accepted::Duplicate => panic!("distinct keys"),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 200);
    let commits = store.commits() - before;
    assert!(commits < 200, "{commits} commits for 200 events");
    assert_eq!(store.event_count().await.unwrap(), 200);
    assert_eq!(store.deliveries().await.unwrap().len(), 200);
    store.close().await;
}
