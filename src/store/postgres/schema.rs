//! The PostgreSQL schema and its migrations.
//!
//! Owns the tables, their indexes and the `meta` row `schema_version`.
//! Migrations run at open in one transaction under a transaction-scoped
//! advisory lock, so several replicas (or `crisp-relay migrate` beside
//! them) starting at once are safe: the first creates or upgrades, the
//! others wait, then find the schema current. Table names are unqualified:
//! the schema is whichever the connection's `search_path` names first.
//!
//! Times are BIGINT milliseconds from the store's injected clock, as in the
//! SQLite engine, except a lease's `expires_at`, which is the database's
//! own time (the one clock every replica shares).
//!
//! Version 2 adds the attempt history: `attempts` (the last 20 sends of
//! each delivery, deleted with it), the delivery's `attempt_seq` (attempts
//! ever recorded, not reset by a replay: the history's key) and an index of
//! events by conversation. Every statement is idempotent, so upgrading from
//! version 1 is running them all again.
//!
//! This module must not read or write the queue's rows.

use sqlx::{Connection, PgConnection};

use crate::store::StoreError;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 2;

/// The advisory lock key held while migrating ("crisp-re" in ASCII).
const MIGRATION_LOCK: i64 = 0x6372_6973_702d_7265;

/// The whole schema at [`SCHEMA_VERSION`]. Statements are idempotent.
const TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    id           BIGSERIAL PRIMARY KEY,
    received_at  BIGINT NOT NULL,
    website_id   TEXT NOT NULL,
    name         TEXT NOT NULL,
    timestamp    BIGINT NOT NULL,
    body         TEXT NOT NULL,
    conversation TEXT
);
CREATE TABLE IF NOT EXISTS deliveries (
    id              BIGSERIAL PRIMARY KEY,
    event_id        BIGINT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    route           TEXT NOT NULL,
    target          TEXT NOT NULL,
    template        TEXT,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    queued_at       BIGINT NOT NULL DEFAULT 0
);
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS attempt_seq BIGINT NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS attempts (
    delivery_id BIGINT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    seq         BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    at_ms       BIGINT NOT NULL,
    latency_ms  BIGINT,
    status      BIGINT,
    error       TEXT,
    outcome     TEXT NOT NULL CHECK (outcome IN ('delivered', 'retry', 'dead')),
    PRIMARY KEY (delivery_id, seq)
);
CREATE TABLE IF NOT EXISTS seen (
    key     TEXT PRIMARY KEY,
    seen_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS threads (
    target       TEXT NOT NULL,
    conversation TEXT NOT NULL,
    thread       TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'open',
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (target, conversation)
);
CREATE TABLE IF NOT EXISTS leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT,
    token      BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(target, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries(target, id) WHERE state = 'dead';
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries(event_id);
CREATE INDEX IF NOT EXISTS seen_age ON seen(seen_at);
CREATE INDEX IF NOT EXISTS threads_by_thread ON threads(target, thread);
CREATE INDEX IF NOT EXISTS events_conversation ON events(conversation, received_at);
"#;

/// Creates or upgrades the schema on `conn`. `path` (the redacted URL) is
/// for messages.
pub async fn migrate(conn: &mut PgConnection, path: &str) -> Result<(), StoreError> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        .execute(&mut *tx)
        .await?;
    let found: Option<String> =
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'schema_version'")
            .fetch_optional(&mut *tx)
            .await?;
    let version = found
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0);
    if version > SCHEMA_VERSION {
        tx.rollback().await?;
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    if version < SCHEMA_VERSION {
        sqlx::raw_sql(TABLES).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('schema_version', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(SCHEMA_VERSION.to_string())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Whether the queue's tables exist (without creating anything).
pub async fn exists(conn: &mut PgConnection) -> Result<bool, StoreError> {
    let found: Option<String> = sqlx::query_scalar("SELECT to_regclass('deliveries')::text")
        .fetch_one(&mut *conn)
        .await?;
    Ok(found.is_some())
}
