//! The SQLite schema and its migrations (`PRAGMA user_version`).
//!
//! Version 2 adds `queued_at` (when a delivery entered the queue: created,
//! or replayed; `max_age` counts from it) and replaces the index over every
//! delivery by two partial ones over the queued rows only, so reads of the
//! queue (the workers' reads, the metrics, orphan counts) cost what is
//! queued, not what was delivered over the retention period.
//!
//! Version 3 adds the event's conversation (`website_id/session_id`), the
//! keys of recently accepted events (`seen`, to answer Crisp's resends as
//! duplicates) and the conversation → thread map (`threads`).
//!
//! Version 4 indexes the thread map by thread.
//!
//! Version 5 adds the attempt history: `attempts` (the last 20 sends of
//! each delivery, deleted with it), the delivery's `attempt_seq` (attempts
//! ever recorded, not reset by a replay: the history's key) and an index of
//! events by conversation (the console's reads, and the reply listeners'
//! active threads).

use sqlx::{AssertSqlSafe, SqliteConnection};

use crate::store::StoreError;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 5;

const TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    website_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    timestamp   INTEGER NOT NULL,
    body        TEXT NOT NULL,
    conversation TEXT
) STRICT;
CREATE TABLE IF NOT EXISTS deliveries (
    id              INTEGER PRIMARY KEY,
    event_id        INTEGER NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    route           TEXT NOT NULL,
    target          TEXT NOT NULL,
    template        TEXT,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    queued_at       INTEGER NOT NULL DEFAULT 0,
    attempt_seq     INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
"#;

/// Tables added by version 3 (also created on a new file).
const TABLES_V3: &str = r#"
CREATE TABLE IF NOT EXISTS seen (
    id      INTEGER PRIMARY KEY,
    key     TEXT NOT NULL UNIQUE,
    seen_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS seen_age ON seen(seen_at);
CREATE TABLE IF NOT EXISTS threads (
    target       TEXT NOT NULL,
    conversation TEXT NOT NULL,
    thread       TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'open',
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (target, conversation)
) STRICT, WITHOUT ROWID;
"#;

/// Tables added by version 5 (also created on a new file).
const TABLES_V5: &str = r#"
CREATE TABLE IF NOT EXISTS attempts (
    delivery_id INTEGER NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    latency_ms  INTEGER,
    status      INTEGER,
    error       TEXT,
    outcome     TEXT NOT NULL CHECK (outcome IN ('delivered', 'retry', 'dead')),
    PRIMARY KEY (delivery_id, seq)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_conversation ON events(conversation, received_at);
"#;

/// The queue's indexes. Queries must say `state = 'pending'` (or `'dead'`)
/// literally for SQLite to use them.
const INDEXES: &str = r#"
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(target, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries(target, id) WHERE state = 'dead';
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries(event_id);
CREATE INDEX IF NOT EXISTS threads_by_thread ON threads(target, thread);
"#;

/// Version 1 → 2.
const V1_TO_V2: &str = r#"
ALTER TABLE deliveries ADD COLUMN queued_at INTEGER NOT NULL DEFAULT 0;
UPDATE deliveries SET queued_at = created_at WHERE state != 'delivered';
DROP INDEX IF EXISTS deliveries_queue;
"#;

/// Version 2 → 3 (the new tables come from [`TABLES_V3`]).
const V2_TO_V3: &str = r#"
ALTER TABLE events ADD COLUMN conversation TEXT;
"#;

/// Version 4 → 5 (the new table and index come from [`TABLES_V5`]).
const V4_TO_V5: &str = r#"
ALTER TABLE deliveries ADD COLUMN attempt_seq INTEGER NOT NULL DEFAULT 0;
"#;

/// Creates or upgrades the schema on `conn`, in one transaction. `path` is
/// for messages.
pub async fn migrate(conn: &mut SqliteConnection, path: &str) -> Result<(), StoreError> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let mut script = String::from("BEGIN IMMEDIATE;");
    script.push_str(TABLES);
    if version == 1 {
        script.push_str(V1_TO_V2);
    }
    if (1..=2).contains(&version) {
        script.push_str(V2_TO_V3);
    }
    if (1..=4).contains(&version) {
        script.push_str(V4_TO_V5);
    }
    script.push_str(TABLES_V3);
    script.push_str(TABLES_V5);
    script.push_str(INDEXES);
    script.push_str(&format!("PRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;"));
    sqlx::raw_sql(AssertSqlSafe(script))
        .execute(&mut *conn)
        .await?;
    Ok(())
}
