//! SQLite engine for the store: one file, WAL mode, `synchronous = FULL`, a
//! single writer task doing group commits, and a small pool for reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{DeliveryRow, NewDelivery, NewEvent, StoreError};

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    website_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    timestamp   INTEGER NOT NULL,
    body        TEXT NOT NULL
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
    updated_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS deliveries_queue ON deliveries(target, state, id);
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries(event_id);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
"#;

/// Most requests folded into one transaction.
const MAX_BATCH: usize = 1024;
/// Rows per multi-row INSERT (SQLite allows 32766 parameters).
const ROWS_PER_INSERT: usize = 500;

enum Request {
    Accept {
        event: NewEvent,
        deliveries: Vec<NewDelivery>,
        reply: oneshot::Sender<Result<i64, Arc<sqlx::Error>>>,
    },
    Probe {
        reply: oneshot::Sender<Result<(), Arc<sqlx::Error>>>,
    },
    /// Commit what is queued, then refuse new requests and stop.
    Close,
}

/// Group-commit counters, for the throughput note and later for metrics.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub commits: AtomicU64,
    pub events: AtomicU64,
    pub max_batch: AtomicU64,
}

/// The SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    tx: mpsc::Sender<Request>,
    reads: SqlitePool,
    capacity: usize,
    stats: Arc<StoreStats>,
    writer: Arc<tokio::sync::Mutex<Option<JoinHandle<()>>>>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5))
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, applies the schema and
    /// starts the writer. `capacity` bounds the requests waiting for a commit.
    pub async fn open(path: &Path, capacity: usize) -> Result<Self, StoreError> {
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(Box::new(e)))?;
        }
        let mut conn = SqliteConnection::connect_with(&options(path))
            .await
            .map_err(|e| open_err(Box::new(e)))?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut conn)
            .await?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: path.display().to_string(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        sqlx::raw_sql(SCHEMA).execute(&mut conn).await?;
        sqlx::query(AssertSqlSafe(format!(
            "PRAGMA user_version = {SCHEMA_VERSION}"
        )))
        .execute(&mut conn)
        .await?;
        let next_id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM events")
            .fetch_one(&mut conn)
            .await?;

        let reads = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options(path))
            .await
            .map_err(|e| open_err(Box::new(e)))?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(StoreStats::default());
        let writer = tokio::spawn(writer(conn, rx, next_id, stats.clone()));
        Ok(Self {
            tx,
            reads,
            capacity,
            stats,
            writer: Arc::new(tokio::sync::Mutex::new(Some(writer))),
            path: path.to_owned(),
        })
    }

    /// Stores `event` and `deliveries` and returns the event's id once both
    /// are committed. Fails at once with [`StoreError::Full`] when
    /// `capacity` requests already wait for a commit.
    pub async fn accept(
        &self,
        event: NewEvent,
        deliveries: Vec<NewDelivery>,
    ) -> Result<i64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Request::Accept {
                event,
                deliveries,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Full(self.capacity),
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            })?;
        match rx.await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(e)) => Err(StoreError::Db(unwrap_arc(e))),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// Proves the store takes writes (a tiny write through the writer).
    pub async fn probe(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Request::Probe { reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Full(self.capacity),
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            })?;
        match rx.await {
            Ok(r) => r.map_err(|e| StoreError::Db(unwrap_arc(e))),
            Err(_) => Err(StoreError::Closed),
        }
    }

    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Stops the writer after it has committed everything already queued;
    /// later `accept` calls fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        let handle = self.writer.lock().await.take();
        if let Some(h) = handle {
            let _ = self.tx.send(Request::Close).await;
            let _ = h.await;
            let commits = self.stats.commits.load(Ordering::Relaxed);
            let events = self.stats.events.load(Ordering::Relaxed);
            tracing::info!(
                commits,
                events,
                mean_batch = if commits == 0 {
                    0.0
                } else {
                    events as f64 / commits as f64
                },
                max_batch = self.stats.max_batch.load(Ordering::Relaxed),
                "store closed"
            );
        }
        self.reads.close().await;
    }

    pub async fn event_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&self.reads)
            .await?)
    }

    /// The stored body of event `id`.
    pub async fn event_body(&self, id: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT body FROM events WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reads)
            .await?)
    }

    /// All delivery rows, oldest first.
    pub async fn deliveries(&self) -> Result<Vec<DeliveryRow>, StoreError> {
        let rows = sqlx::query("SELECT id, event_id, route, target, template, state, attempts FROM deliveries ORDER BY id")
            .fetch_all(&self.reads)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryRow {
                    id: r.try_get(0)?,
                    event_id: r.try_get(1)?,
                    route: r.try_get(2)?,
                    target: r.try_get(3)?,
                    template: r.try_get(4)?,
                    state: r.try_get(5)?,
                    attempts: r.try_get(6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

fn unwrap_arc(e: Arc<sqlx::Error>) -> sqlx::Error {
    Arc::try_unwrap(e).unwrap_or_else(|shared| sqlx::Error::Protocol(shared.to_string()))
}

/// The single writer: takes every request waiting, commits them in one
/// transaction, then answers each.
async fn writer(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Request>,
    mut next_id: i64,
    stats: Arc<StoreStats>,
) {
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        if batch.iter().any(|r| matches!(r, Request::Close)) {
            rx.close();
        }
        let first_id = next_id;
        let result = commit(&mut conn, &batch, first_id).await;
        let accepted = batch
            .iter()
            .filter(|r| matches!(r, Request::Accept { .. }))
            .count();
        match result {
            Ok(()) => {
                next_id += accepted as i64;
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.events.fetch_add(accepted as u64, Ordering::Relaxed);
                stats
                    .max_batch
                    .fetch_max(accepted as u64, Ordering::Relaxed);
                let mut id = first_id;
                for req in batch.drain(..) {
                    match req {
                        Request::Accept { reply, .. } => {
                            let _ = reply.send(Ok(id));
                            id += 1;
                        }
                        Request::Probe { reply } => {
                            let _ = reply.send(Ok(()));
                        }
                        Request::Close => {}
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = batch.len(), "store commit failed; answering 503");
                let e = Arc::new(e);
                for req in batch.drain(..) {
                    match req {
                        Request::Accept { reply, .. } => {
                            let _ = reply.send(Err(e.clone()));
                        }
                        Request::Probe { reply } => {
                            let _ = reply.send(Err(e.clone()));
                        }
                        Request::Close => {}
                    }
                }
                // Ids of a failed batch may be reused: nothing was written.
                if let Ok(id) =
                    sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(id), 0) + 1 FROM events")
                        .fetch_one(&mut conn)
                        .await
                {
                    next_id = id;
                }
            }
        }
    }
    let _ = conn.close().await;
}

async fn commit(
    conn: &mut SqliteConnection,
    batch: &[Request],
    first_id: i64,
) -> Result<(), sqlx::Error> {
    let now = crate::now_ms();
    let mut tx = conn.begin().await?;
    let events: Vec<(i64, &NewEvent, &[NewDelivery])> = batch
        .iter()
        .filter_map(|r| match r {
            Request::Accept {
                event, deliveries, ..
            } => Some((event, deliveries.as_slice())),
            Request::Probe { .. } | Request::Close => None,
        })
        .enumerate()
        .map(|(i, (e, d))| (first_id + i as i64, e, d))
        .collect();
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let sql = values_sql(
            "INSERT INTO events (id, received_at, website_id, name, timestamp, body) VALUES ",
            6,
            chunk.len(),
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (id, e, _) in chunk {
            q = q
                .bind(id)
                .bind(e.received_at_ms)
                .bind(&e.website_id)
                .bind(&e.name)
                .bind(e.timestamp_ms)
                .bind(&e.body);
        }
        q.execute(&mut *tx).await?;
    }
    let deliveries: Vec<(i64, &NewDelivery)> = events
        .iter()
        .flat_map(|(id, _, ds)| ds.iter().map(move |d| (*id, d)))
        .collect();
    for chunk in deliveries.chunks(ROWS_PER_INSERT) {
        let sql = values_sql(
            "INSERT INTO deliveries (event_id, route, target, template, next_attempt_at, created_at, updated_at) VALUES ",
            7,
            chunk.len(),
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (id, d) in chunk {
            q = q
                .bind(id)
                .bind(&d.route)
                .bind(&d.target)
                .bind(&d.template)
                .bind(now)
                .bind(now)
                .bind(now);
        }
        q.execute(&mut *tx).await?;
    }
    if batch.iter().any(|r| matches!(r, Request::Probe { .. })) {
        sqlx::query("INSERT INTO meta (key, value) VALUES ('ready_probe', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(now.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// `prefix (?, ?, ...), (?, ?, ...)` with `rows` groups of `cols` parameters.
fn values_sql(prefix: &str, cols: usize, rows: usize) -> String {
    let group = format!("({})", vec!["?"; cols].join(", "));
    let mut sql = String::with_capacity(prefix.len() + rows * (group.len() + 2));
    sql.push_str(prefix);
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&group);
    }
    sql
}
