//! SQLite engine for the store: one file, WAL mode, `synchronous = FULL`
//! for accepted events, a single writer task doing group commits
//! (`writer`), a small pool for reads, and the schema's migrations
//! (`schema`).

mod attempts;
mod dedupe;
mod history;
mod maps;
mod queue_reads;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

pub use schema::SCHEMA_VERSION;
pub use writer::StoreStats;
use writer::{Request, Wakers, Writer};

use super::{
    Accepted, AttemptRow, Committed, ConversationRow, DeadLetter, DeliveryFilter, DeliveryRow,
    DeliverySummary, NewDelivery, NewEvent, Op, PendingDelivery, PendingGroup, Pruned, QueueStats,
    Store, StoreError, StoreFuture, TemplateFilter, ThreadRef,
};
use crate::clock::Clock;

/// Room for delivery results and other changes waiting for a commit. A
/// worker waits when it is full (results are never refused).
const OPS_CAPACITY: usize = 8192;

/// Rows looked at per retention chunk (one commit each).
const PRUNE_CHUNK: i64 = 500;

// The reads of the queue: each must use a partial index over queued rows
// (checked by a test), never scan the delivered history.
const PENDING_COUNTS: &str =
    "SELECT target, COUNT(*) FROM deliveries WHERE state = 'pending' GROUP BY target";
const DEAD_COUNTS: &str =
    "SELECT target, COUNT(*) FROM deliveries WHERE state = 'dead' GROUP BY target";
const QUEUE_HEAD: &str =
    "SELECT queued_at FROM deliveries WHERE state = 'pending' AND target = ? ORDER BY id LIMIT 1";
const PENDING_GROUPS: &str = "SELECT target, template, COUNT(*) FROM deliveries WHERE state = 'pending' \
     GROUP BY target, template ORDER BY target, template";
const PENDING_READ: &str = "SELECT d.id, d.event_id, d.route, d.template, d.attempts, d.next_attempt_at, d.created_at, d.queued_at, e.body, e.timestamp, e.received_at, e.conversation \
     FROM deliveries d JOIN events e ON e.id = d.event_id \
     WHERE d.state = 'pending' AND d.target = ";

/// The SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    accepts: mpsc::Sender<Request>,
    ops: mpsc::Sender<Request>,
    reads: SqlitePool,
    capacity: usize,
    stats: Arc<StoreStats>,
    writer: Arc<tokio::sync::Mutex<Option<JoinHandle<()>>>>,
    path: PathBuf,
    wakers: Wakers,
    /// The writer's clock, for reads that compare with now.
    clock: Clock,
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
    /// Opens (creating if needed) the store at `path`, creates or upgrades
    /// the schema and starts the writer. `capacity` bounds the accepted
    /// events waiting for a commit; `clock` stamps every row.
    pub async fn open(path: &Path, capacity: usize, clock: Clock) -> Result<Self, StoreError> {
        let open_err = |source: Arc<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(Arc::new(e)))?;
        }
        let mut conn = SqliteConnection::connect_with(&options(path))
            .await
            .map_err(|e| open_err(Arc::new(e)))?;
        schema::migrate(&mut conn, &path.display().to_string()).await?;
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
            .map_err(|e| open_err(Arc::new(e)))?;
        let (accepts, accepts_rx) = mpsc::channel(capacity.max(1));
        let (ops, ops_rx) = mpsc::channel(OPS_CAPACITY);
        let stats = Arc::new(StoreStats::default());
        let wakers = Wakers::default();
        let writer = tokio::spawn(
            Writer {
                conn,
                accepts: accepts_rx,
                ops: ops_rx,
                next_id,
                stats: stats.clone(),
                wakers: wakers.clone(),
                clock,
            }
            .run(),
        );
        Ok(Self {
            accepts,
            ops,
            reads,
            capacity,
            stats,
            writer: Arc::new(tokio::sync::Mutex::new(Some(writer))),
            path: path.to_owned(),
            wakers,
            clock,
        })
    }

    /// Sends a request on the results queue and waits for its answer.
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.ops
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    async fn do_close(&self) {
        let handle = self.writer.lock().await.take();
        if let Some(h) = handle {
            let _ = self.ops.send(Request::Close).await;
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

    /// Group-commit counters.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// The oldest pending delivery for `target` (FIFO by id), with its event.
    pub async fn next_pending(&self, target: &str) -> Result<Option<PendingDelivery>, StoreError> {
        Ok(self
            .pending(target, 0, 1, &TemplateFilter::Any)
            .await?
            .into_iter()
            .next())
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

    /// All delivery rows, oldest first (for inspection and tests).
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

    /// The next window of at most [`PRUNE_CHUNK`] ids of `table` after
    /// `after`: its last id, and whether it reached rows at or past
    /// `before_ms` (by `time_col`), which ends the pass. `None`: no rows.
    async fn prune_window(
        &self,
        table: &str,
        time_col: &str,
        after: i64,
        before_ms: i64,
    ) -> Result<Option<(i64, bool)>, StoreError> {
        let sql = format!(
            "SELECT MAX(id), MAX({time_col}), COUNT(*) FROM (SELECT id, {time_col} FROM {table} WHERE id > ? ORDER BY id LIMIT ?)"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(PRUNE_CHUNK)
            .fetch_one(&self.reads)
            .await?;
        let count: i64 = row.try_get(2)?;
        if count == 0 {
            return Ok(None);
        }
        let last: i64 = row.try_get(0)?;
        let newest: i64 = row.try_get(1)?;
        Ok(Some((last, newest >= before_ms || count < PRUNE_CHUNK)))
    }

    async fn do_prune(&self, before_ms: i64, keys_before_ms: i64) -> Result<Pruned, StoreError> {
        let mut totals = (0, 0);
        for (table, time_col) in [("deliveries", "created_at"), ("events", "received_at")] {
            let mut after = 0;
            while let Some((up_to_id, last)) =
                self.prune_window(table, time_col, after, before_ms).await?
            {
                let op = if table == "deliveries" {
                    Op::PruneDelivered {
                        after_id: after,
                        up_to_id,
                        before_ms,
                    }
                } else {
                    Op::PruneEvents {
                        after_id: after,
                        up_to_id,
                        before_ms,
                    }
                };
                let n = self.apply(op).await?;
                if table == "deliveries" {
                    totals.0 += n;
                } else {
                    totals.1 += n;
                }
                after = up_to_id;
                if last {
                    break;
                }
            }
        }
        let mut keys = 0;
        loop {
            let n = self
                .apply(Op::PruneKeys {
                    before_ms: keys_before_ms,
                })
                .await?;
            keys += n;
            if n == 0 {
                break;
            }
        }
        Ok(Pruned {
            deliveries: totals.0,
            events: totals.1,
            keys,
        })
    }

    async fn read_pending(
        &self,
        target: &str,
        after_id: i64,
        limit: u32,
        filter: &TemplateFilter,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(PENDING_READ);
        q.push_bind(target).push(" AND d.id > ").push_bind(after_id);
        if let TemplateFilter::OneOf(names) = filter {
            if names.is_empty() {
                return Ok(Vec::new());
            }
            q.push(" AND d.template IN (");
            let mut list = q.separated(", ");
            for n in names {
                list.push_bind(n.as_str());
            }
            q.push(")");
        }
        q.push(" ORDER BY d.id LIMIT ").push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.reads).await?;
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
                    queued_at_ms: r.try_get(7)?,
                    body: r.try_get(8)?,
                    timestamp_ms: r.try_get(9)?,
                    received_at_ms: r.try_get(10)?,
                    conversation: r.try_get(11)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

/// The pending groups of the store file at `path`, read without creating,
/// migrating or writing it; `None` when there is no file (for `check`).
pub async fn pending_groups_at(path: &Path) -> Result<Option<Vec<PendingGroup>>, StoreError> {
    if !path.is_file() {
        return Ok(None);
    }
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .busy_timeout(Duration::from_secs(5));
    let mut conn = SqliteConnection::connect_with(&opts).await?;
    let rows = sqlx::query(PENDING_GROUPS).fetch_all(&mut conn).await?;
    let _ = conn.close().await;
    rows.iter()
        .map(|r| {
            Ok(PendingGroup {
                target: r.try_get(0)?,
                template: r.try_get(1)?,
                count: r.try_get(2)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map(Some)
        .map_err(StoreError::from)
}

impl Store for SqliteStore {
    fn accept(&self, event: NewEvent, deliveries: Vec<NewDelivery>) -> StoreFuture<'_, Accepted> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.accepts
                .try_send(Request::Accept {
                    event,
                    deliveries,
                    reply,
                })
                .map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => StoreError::Full(self.capacity),
                    mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
                })?;
            rx.await.unwrap_or(Err(StoreError::Closed))
        })
    }

    fn probe(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.accepts
                .try_send(Request::Probe { reply })
                .map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => StoreError::Full(self.capacity),
                    mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
                })?;
            rx.await.unwrap_or(Err(StoreError::Closed))
        })
    }

    fn apply(&self, op: Op) -> StoreFuture<'_, u64> {
        Box::pin(self.call(|reply| Request::Op { op, reply }))
    }

    fn apply_later(&self, op: Op) -> StoreFuture<'_, Committed> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.ops
                .send(Request::Op { op, reply })
                .await
                .map_err(|_| StoreError::Closed)?;
            Ok(Committed::new(rx))
        })
    }

    fn barrier(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.call(|reply| Request::Barrier { reply }))
    }

    fn pending<'a>(
        &'a self,
        target: &'a str,
        after_id: i64,
        limit: u32,
        filter: &'a TemplateFilter,
    ) -> StoreFuture<'a, Vec<PendingDelivery>> {
        Box::pin(self.read_pending(target, after_id, limit, filter))
    }

    fn conversation_of<'a>(
        &'a self,
        target: &'a str,
        thread: &'a str,
    ) -> StoreFuture<'a, Option<String>> {
        Box::pin(self.read_conversation_of(target, thread))
    }

    fn active_threads<'a>(
        &'a self,
        target: &'a str,
        since_ms: i64,
    ) -> StoreFuture<'a, Vec<String>> {
        Box::pin(self.read_active_threads(target, since_ms))
    }

    fn remembered<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, bool> {
        Box::pin(self.read_remembered(keys))
    }

    fn thread<'a>(
        &'a self,
        target: &'a str,
        conversation: &'a str,
    ) -> StoreFuture<'a, Option<ThreadRef>> {
        Box::pin(self.read_thread(target, conversation))
    }

    fn pending_groups(&self) -> StoreFuture<'_, Vec<PendingGroup>> {
        Box::pin(self.read_pending_groups())
    }

    fn queue_stats(&self) -> StoreFuture<'_, Vec<QueueStats>> {
        Box::pin(self.read_queue_stats())
    }

    fn dead_letters<'a>(&'a self, target: Option<&'a str>) -> StoreFuture<'a, Vec<DeadLetter>> {
        Box::pin(self.read_dead_letters(target))
    }

    fn event_body(&self, event_id: i64) -> StoreFuture<'_, Option<String>> {
        Box::pin(SqliteStore::event_body(self, event_id))
    }

    fn prune(&self, before_ms: i64, keys_before_ms: i64) -> StoreFuture<'_, Pruned> {
        Box::pin(self.do_prune(before_ms, keys_before_ms))
    }

    fn waker(&self, target: &str) -> Arc<Notify> {
        self.wakers.get(target)
    }

    fn close(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(self.do_close())
    }

    fn recent_deliveries<'a>(
        &'a self,
        filter: &'a DeliveryFilter,
    ) -> StoreFuture<'a, Vec<DeliverySummary>> {
        Box::pin(self.read_recent_deliveries(filter))
    }

    fn attempts_of(&self, delivery_id: i64) -> StoreFuture<'_, Vec<AttemptRow>> {
        Box::pin(self.read_attempts_of(delivery_id))
    }

    fn conversations<'a>(
        &'a self,
        target: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<ConversationRow>> {
        Box::pin(self.read_conversations(target, limit))
    }

    fn deliveries(&self) -> StoreFuture<'_, Vec<DeliveryRow>> {
        Box::pin(SqliteStore::deliveries(self))
    }

    fn event_count(&self) -> StoreFuture<'_, i64> {
        Box::pin(SqliteStore::event_count(self))
    }

    fn commits(&self) -> u64 {
        self.stats.commits.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/metrics`, orphan counts and the workers' reads look only at queued
    /// rows: every plan goes through a partial index, none scans the
    /// deliveries table (which holds the whole retention period).
    #[tokio::test]
    async fn queue_reads_use_the_partial_indexes_not_a_table_scan() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("relay.db"), 4, Clock::starting_at(0))
            .await
            .unwrap();
        let read = format!(
            "{PENDING_READ}'t' AND d.id > 0 AND d.template IN ('a', 'b') ORDER BY d.id LIMIT 64"
        );
        for sql in [
            PENDING_COUNTS,
            DEAD_COUNTS,
            QUEUE_HEAD,
            PENDING_GROUPS,
            read.as_str(),
        ] {
            let plan: Vec<String> =
                sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .bind("t")
                    .fetch_all(&store.reads)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get::<String, _>(3))
                    .collect();
            let on_deliveries: Vec<&String> = plan
                .iter()
                .filter(|p| p.contains("deliveries") || p.contains(" d "))
                .collect();
            assert!(!on_deliveries.is_empty(), "{sql}: {plan:?}");
            for step in on_deliveries {
                assert!(
                    step.contains("deliveries_pending") || step.contains("deliveries_dead"),
                    "{sql}: {plan:?}"
                );
            }
        }
        store.close().await;
    }
}
