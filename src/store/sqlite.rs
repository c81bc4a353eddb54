//! SQLite engine for the store: one file, WAL mode, `synchronous = FULL`, a
//! single writer task doing group commits, and a small pool for reads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{DeadLetter, DeliveryRow, NewDelivery, NewEvent, Op, PendingDelivery, StoreError};

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

type Reply<T> = oneshot::Sender<Result<T, Arc<sqlx::Error>>>;

enum Request {
    Accept {
        event: NewEvent,
        deliveries: Vec<NewDelivery>,
        reply: Reply<i64>,
    },
    Probe {
        reply: Reply<()>,
    },
    /// A change to delivery rows; answers the number of rows changed.
    Op {
        op: Op,
        reply: Reply<u64>,
    },
    /// Commit what is queued, then refuse new requests and stop.
    Close,
}

/// The answer to [`SqliteStore::apply_later`]: resolves once committed.
pub struct Committed(oneshot::Receiver<Result<u64, Arc<sqlx::Error>>>);

impl Committed {
    /// The outcome if the commit is over, without waiting.
    pub fn try_take(&mut self) -> Option<Result<u64, StoreError>> {
        match self.0.try_recv() {
            Ok(r) => Some(r.map_err(|e| StoreError::Db(unwrap_arc(e)))),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(StoreError::Closed)),
        }
    }

    pub async fn wait(self) -> Result<u64, StoreError> {
        match self.0.await {
            Ok(r) => r.map_err(|e| StoreError::Db(unwrap_arc(e))),
            Err(_) => Err(StoreError::Closed),
        }
    }
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
    wakers: Wakers,
}

/// One `Notify` per target, signalled after a commit that gives the target
/// work (new deliveries, replays). `notify_one` keeps a permit when nobody
/// waits, so a worker busy while the commit lands does not miss it.
#[derive(Clone, Default)]
struct Wakers(Arc<std::sync::Mutex<HashMap<String, Arc<Notify>>>>);

impl Wakers {
    fn get(&self, target: &str) -> Arc<Notify> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(target.to_owned()).or_default().clone()
    }

    fn wake(&self, target: &str) {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get(target) {
            n.notify_one();
        }
    }

    fn wake_all(&self) {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for n in map.values() {
            n.notify_one();
        }
    }
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

        // No idle timeout, lifetime or ping: SQLite connections to a local
        // file do not go stale, and without them reads start no timers (which
        // keeps tests on tokio's paused clock exact).
        let reads = SqlitePoolOptions::new()
            .max_connections(2)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_with(options(path))
            .await
            .map_err(|e| open_err(Box::new(e)))?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(StoreStats::default());
        let wakers = Wakers::default();
        let writer = tokio::spawn(writer(conn, rx, next_id, stats.clone(), wakers.clone()));
        Ok(Self {
            tx,
            reads,
            capacity,
            stats,
            writer: Arc::new(tokio::sync::Mutex::new(Some(writer))),
            path: path.to_owned(),
            wakers,
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

    /// The notification a worker for `target` waits on for new work.
    pub fn waker(&self, target: &str) -> Arc<Notify> {
        self.wakers.get(target)
    }

    /// Applies `op` (waiting for room in the queue, unlike `accept`) and
    /// returns the number of rows it changed, once committed.
    pub async fn apply(&self, op: Op) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Op { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        match rx.await {
            Ok(r) => r.map_err(|e| StoreError::Db(unwrap_arc(e))),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// Queues `op` for the next commit and returns at once; the receiver
    /// answers once it is committed. Lets a worker send the next delivery
    /// while the last result is being written.
    pub async fn apply_later(&self, op: Op) -> Result<Committed, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Op { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(Committed(rx))
    }

    /// The oldest pending delivery for `target` (FIFO by id), with its event.
    pub async fn next_pending(&self, target: &str) -> Result<Option<PendingDelivery>, StoreError> {
        Ok(self.pending_batch(target, 0, 1).await?.into_iter().next())
    }

    /// Up to `limit` pending deliveries for `target` with an id above
    /// `after_id`, oldest first, with their events.
    pub async fn pending_batch(
        &self,
        target: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.event_id, d.route, d.template, d.attempts, d.next_attempt_at, d.created_at, e.body, e.timestamp, e.received_at \
             FROM deliveries d JOIN events e ON e.id = d.event_id \
             WHERE d.target = ? AND d.state = 'pending' AND d.id > ? ORDER BY d.id LIMIT ?",
        )
        .bind(target)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.reads)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PendingDelivery {
                    id: r.try_get(0)?,
                    event_id: r.try_get(1)?,
                    route: r.try_get(2)?,
                    target: target.to_owned(),
                    template: r.try_get(3)?,
                    attempts: r.try_get(4)?,
                    next_attempt_at_ms: r.try_get(5)?,
                    created_at_ms: r.try_get(6)?,
                    body: r.try_get(7)?,
                    timestamp_ms: r.try_get(8)?,
                    received_at_ms: r.try_get(9)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Dead letters, oldest first, optionally for one target.
    pub async fn dead_letters(&self, target: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.event_id, d.route, d.target, e.name, d.attempts, d.last_status, d.last_error, d.created_at, d.updated_at \
             FROM deliveries d JOIN events e ON e.id = d.event_id \
             WHERE d.state = 'dead' AND (?1 IS NULL OR d.target = ?1) ORDER BY d.id",
        )
        .bind(target)
        .fetch_all(&self.reads)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    id: r.try_get(0)?,
                    event_id: r.try_get(1)?,
                    route: r.try_get(2)?,
                    target: r.try_get(3)?,
                    event: r.try_get(4)?,
                    attempts: r.try_get(5)?,
                    last_status: r.try_get(6)?,
                    last_error: r.try_get(7)?,
                    created_at_ms: r.try_get(8)?,
                    failed_at_ms: r.try_get(9)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Per target: pending count, creation time of the oldest pending
    /// delivery (ms), and dead-letter count — for the metrics.
    pub async fn queue_stats(&self) -> Result<Vec<(String, i64, Option<i64>, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT target, SUM(state = 'pending'), MIN(CASE WHEN state = 'pending' THEN created_at END), SUM(state = 'dead') \
             FROM deliveries WHERE state != 'delivered' GROUP BY target",
        )
        .fetch_all(&self.reads)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// How many deliveries for `target` are pending.
    pub async fn pending_count(&self, target: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries WHERE target = ? AND state = 'pending'",
        )
        .bind(target)
        .fetch_one(&self.reads)
        .await?)
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
            tracing::debug!(
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
    wakers: Wakers,
) {
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    let mut full_sync = true;
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
        // Accepted events must survive power loss (`synchronous = FULL`: the
        // commit waits for fsync). A batch of delivery results alone only
        // needs to survive the process dying, which WAL with `NORMAL`
        // already gives without an fsync per commit; if the machine loses
        // power, such a result may be lost and its delivery sent again.
        let need_full = batch
            .iter()
            .any(|r| matches!(r, Request::Accept { .. } | Request::Probe { .. }));
        if need_full != full_sync {
            let pragma = if need_full {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            if sqlx::query(pragma).execute(&mut conn).await.is_ok() {
                full_sync = need_full;
            }
        }
        let first_id = next_id;
        let result = commit(&mut conn, &batch, first_id).await;
        if result.is_ok() {
            wake_targets(&wakers, &batch);
        }
        let accepted = batch
            .iter()
            .filter(|r| matches!(r, Request::Accept { .. }))
            .count();
        match result {
            Ok(counts) => {
                let mut counts = counts.into_iter();
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
                        Request::Op { reply, .. } => {
                            let _ = reply.send(Ok(counts.next().unwrap_or(0)));
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
                        Request::Op { reply, .. } => {
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
) -> Result<Vec<u64>, sqlx::Error> {
    let now = crate::now_ms();
    let mut tx = conn.begin().await?;
    let events: Vec<(i64, &NewEvent, &[NewDelivery])> = batch
        .iter()
        .filter_map(|r| match r {
            Request::Accept {
                event, deliveries, ..
            } => Some((event, deliveries.as_slice())),
            Request::Probe { .. } | Request::Op { .. } | Request::Close => None,
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
    // Ops apply in the order they came; a run of consecutive `Delivered`
    // (a fast target's results) is one statement rather than one each.
    let ops: Vec<&Op> = batch
        .iter()
        .filter_map(|r| match r {
            Request::Op { op, .. } => Some(op),
            _ => None,
        })
        .collect();
    let mut counts = Vec::with_capacity(ops.len());
    let mut rest = ops.as_slice();
    while let Some((first, _)) = rest.split_first() {
        let run = rest
            .iter()
            .take_while(|op| matches!(op, Op::Delivered { .. }))
            .count();
        if run > 1 {
            for chunk in rest[..run].chunks(ROWS_PER_INSERT) {
                counts.extend(mark_delivered(&mut tx, chunk, now).await?);
            }
            rest = &rest[run..];
        } else {
            counts.push(apply_op(&mut tx, first, now).await?);
            rest = &rest[1..];
        }
    }
    tx.commit().await?;
    Ok(counts)
}

/// Applies a run of [`Op::Delivered`] in one `UPDATE … FROM (VALUES …)`;
/// answers the rows changed per op, as [`apply_op`] would. Other ops in
/// `ops` are skipped (answered 0); callers pass only `Delivered`.
async fn mark_delivered(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    ops: &[&Op],
    now: i64,
) -> Result<Vec<u64>, sqlx::Error> {
    let sql = values_sql("WITH v(id, attempts, status) AS (VALUES ", 3, ops.len())
        + ") UPDATE deliveries SET state = 'delivered', attempts = v.attempts, \
         last_status = v.status, last_error = NULL, updated_at = ? \
         FROM v WHERE deliveries.id = v.id RETURNING deliveries.id";
    let mut q = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql));
    for op in ops {
        if let Op::Delivered {
            id,
            attempts,
            status,
        } = op
        {
            q = q.bind(id).bind(attempts).bind(status.map(i64::from));
        } else {
            q = q.bind(None::<i64>).bind(None::<i64>).bind(None::<i64>);
        }
    }
    let changed: std::collections::HashSet<i64> = q
        .bind(now)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
    Ok(ops
        .iter()
        .map(|op| match op {
            Op::Delivered { id, .. } => u64::from(changed.contains(id)),
            _ => 0,
        })
        .collect())
}

/// Wakes the workers that a committed batch gave work to.
fn wake_targets(wakers: &Wakers, batch: &[Request]) {
    for req in batch {
        match req {
            Request::Accept { deliveries, .. } => {
                for d in deliveries {
                    wakers.wake(&d.target);
                }
            }
            Request::Op {
                op: Op::Replay {
                    target: Some(t), ..
                },
                ..
            } => wakers.wake(t),
            Request::Op {
                op: Op::Replay { target: None, .. },
                ..
            } => wakers.wake_all(),
            _ => {}
        }
    }
}

async fn apply_op(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    op: &Op,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let done = match op {
        Op::Delivered { id, attempts, status } => {
            sqlx::query("UPDATE deliveries SET state = 'delivered', attempts = ?, last_status = ?, last_error = NULL, updated_at = ? WHERE id = ?")
                .bind(attempts)
                .bind(status.map(i64::from))
                .bind(now)
                .bind(id)
                .execute(&mut **tx)
                .await?
        }
        Op::Retry { id, attempts, next_attempt_at_ms, status, error } => {
            sqlx::query("UPDATE deliveries SET attempts = ?, next_attempt_at = ?, last_status = ?, last_error = ?, updated_at = ? WHERE id = ? AND state = 'pending'")
                .bind(attempts)
                .bind(next_attempt_at_ms)
                .bind(status.map(i64::from))
                .bind(error)
                .bind(now)
                .bind(id)
                .execute(&mut **tx)
                .await?
        }
        Op::Dead { id, attempts, status, error } => {
            sqlx::query("UPDATE deliveries SET state = 'dead', attempts = ?, last_status = ?, last_error = ?, updated_at = ? WHERE id = ? AND state = 'pending'")
                .bind(attempts)
                .bind(status.map(i64::from))
                .bind(error)
                .bind(now)
                .bind(id)
                .execute(&mut **tx)
                .await?
        }
        Op::Replay { id, target } => {
            sqlx::query("UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?1, updated_at = ?1 WHERE state = 'dead' AND (?2 IS NULL OR id = ?2) AND (?3 IS NULL OR target = ?3)")
                .bind(now)
                .bind(id)
                .bind(target)
                .execute(&mut **tx)
                .await?
        }
        Op::PurgeDead { before_ms } => {
            sqlx::query("DELETE FROM deliveries WHERE state = 'dead' AND updated_at < ?")
                .bind(before_ms)
                .execute(&mut **tx)
                .await?
        }
        Op::PruneDelivered { before_ms } => {
            let n = sqlx::query("DELETE FROM deliveries WHERE state = 'delivered' AND updated_at < ?")
                .bind(before_ms)
                .execute(&mut **tx)
                .await?;
            // Events whose every delivery is gone, once past retention too.
            sqlx::query("DELETE FROM events WHERE received_at < ? AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)")
                .bind(before_ms)
                .execute(&mut **tx)
                .await?;
            n
        }
    };
    Ok(done.rows_affected())
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
