//! The upgrade of a store written before the attempt history (SQLite
//! schema 4, PostgreSQL schema 1), on each engine: its rows stay readable
//! by the console's reads, new results record attempts, and a newer
//! schema is still refused.

use crisp_relay::clock::Clock;
use crisp_relay::store::DeliveryFilter;

use crate::store_engines::{Engine, both_engines};
use crate::store_history::{T0, delivered, outline, retry};

both_engines!(a_store_at_the_previous_schema_is_upgraded_with_its_rows);

/// The schema before the history: SQLite 4, PostgreSQL 1, with an event,
/// a delivered row and a pending one.
async fn a_store_at_the_previous_schema_is_upgraded_with_its_rows(engine: Engine) {
    match &engine {
        Engine::Sqlite(dir) => {
            use sqlx::Connection;
            let path = dir.path().join("relay.db");
            let mut conn =
                sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
                    .await
                    .unwrap();
            sqlx::raw_sql(SQLITE_V4).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        Engine::Postgres(schema) => schema.execute(PG_V1).await,
    }
    let store = engine.open(16, Clock::starting_at(T0)).await;
    let rows = store
        .recent_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    let got: Vec<(i64, &str, Option<&str>, &str)> = rows
        .iter()
        .map(|d| {
            (
                d.id,
                d.state.as_str(),
                d.session_id.as_deref(),
                d.event.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (2, "pending", Some("s1"), "message:send"),
            (1, "delivered", Some("s1"), "message:send")
        ]
    );
    assert!(store.attempts_of(1).await.unwrap().is_empty());
    store.apply(retry(2, 1, 500, T0)).await.unwrap();
    store.apply(delivered(2, 2, T0 + 1)).await.unwrap();
    assert_eq!(
        outline(&store.attempts_of(2).await.unwrap()),
        vec![(1, Some(500), "retry"), (2, Some(200), "delivered")]
    );
    let conversations = store.conversations(None, 10).await.unwrap();
    assert_eq!(conversations.len(), 1);
    assert_eq!(
        (conversations[0].thread.as_str(), conversations[0].replies),
        ("ts", 0)
    );
    store.close().await;
    // Opened again: current, nothing changes; a newer schema is refused.
    let again = engine.open(16, Clock::starting_at(T0)).await;
    assert_eq!(again.attempts_of(2).await.unwrap().len(), 2);
    again.close().await;
    engine.set_schema_version(99).await;
    assert!(
        engine
            .open_err(16, Clock::starting_at(T0))
            .await
            .contains("schema 99")
    );
}

/// A file as crisp-relay wrote it at schema 4 (before the history).
const SQLITE_V4: &str = r#"
CREATE TABLE events (id INTEGER PRIMARY KEY, received_at INTEGER NOT NULL, website_id TEXT NOT NULL, name TEXT NOT NULL, timestamp INTEGER NOT NULL, body TEXT NOT NULL, conversation TEXT) STRICT;
CREATE TABLE deliveries (id INTEGER PRIMARY KEY, event_id INTEGER NOT NULL REFERENCES events(id) ON DELETE CASCADE, route TEXT NOT NULL, target TEXT NOT NULL, template TEXT, state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')), attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL, last_status INTEGER, last_error TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, queued_at INTEGER NOT NULL DEFAULT 0) STRICT;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE seen (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, seen_at INTEGER NOT NULL) STRICT;
CREATE INDEX seen_age ON seen(seen_at);
CREATE TABLE threads (target TEXT NOT NULL, conversation TEXT NOT NULL, thread TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'open', created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY (target, conversation)) STRICT, WITHOUT ROWID;
CREATE INDEX deliveries_pending ON deliveries(target, id) WHERE state = 'pending';
CREATE INDEX deliveries_dead ON deliveries(target, id) WHERE state = 'dead';
CREATE INDEX deliveries_event ON deliveries(event_id);
CREATE INDEX threads_by_thread ON threads(target, thread);
INSERT INTO events VALUES (1, 5, 'w', 'message:send', 5, '{}', 'w/s1');
INSERT INTO deliveries (event_id, route, target, state, attempts, next_attempt_at, created_at, updated_at, queued_at) VALUES
  (1, 'r', 't', 'delivered', 1, 5, 5, 7, 5), (1, 'r', 'u', 'pending', 0, 5, 5, 5, 5);
INSERT INTO threads VALUES ('t', 'w/s1', 'ts', 'open', 5, 5);
PRAGMA user_version = 4;
"#;

/// A schema as crisp-relay wrote it at PostgreSQL schema 1.
const PG_V1: &str = r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (id BIGSERIAL PRIMARY KEY, received_at BIGINT NOT NULL, website_id TEXT NOT NULL, name TEXT NOT NULL, timestamp BIGINT NOT NULL, body TEXT NOT NULL, conversation TEXT);
CREATE TABLE deliveries (id BIGSERIAL PRIMARY KEY, event_id BIGINT NOT NULL REFERENCES events(id) ON DELETE CASCADE, route TEXT NOT NULL, target TEXT NOT NULL, template TEXT, state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')), attempts BIGINT NOT NULL DEFAULT 0, next_attempt_at BIGINT NOT NULL, last_status BIGINT, last_error TEXT, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, queued_at BIGINT NOT NULL DEFAULT 0);
CREATE TABLE seen (key TEXT PRIMARY KEY, seen_at BIGINT NOT NULL);
CREATE TABLE threads (target TEXT NOT NULL, conversation TEXT NOT NULL, thread TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'open', created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, PRIMARY KEY (target, conversation));
CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT, token BIGINT NOT NULL, expires_at TIMESTAMPTZ NOT NULL);
CREATE INDEX deliveries_pending ON deliveries(target, id) WHERE state = 'pending';
CREATE INDEX deliveries_dead ON deliveries(target, id) WHERE state = 'dead';
CREATE INDEX deliveries_event ON deliveries(event_id);
CREATE INDEX seen_age ON seen(seen_at);
CREATE INDEX threads_by_thread ON threads(target, thread);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO events (id, received_at, website_id, name, timestamp, body, conversation) VALUES (1, 5, 'w', 'message:send', 5, '{}', 'w/s1');
SELECT setval('events_id_seq', 1);
INSERT INTO deliveries (event_id, route, target, state, attempts, next_attempt_at, created_at, updated_at, queued_at) VALUES
  (1, 'r', 't', 'delivered', 1, 5, 5, 7, 5), (1, 'r', 'u', 'pending', 0, 5, 5, 5, 5);
INSERT INTO threads VALUES ('t', 'w/s1', 'ts', 'open', 5, 5);
"#;
