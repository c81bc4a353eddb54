//! PostgreSQL engine for the store: several replicas on one database, each
//! ingesting, each target's worker on one replica at a time under a lease.
//!
//! Owns [`PgStore`]: opening (schema in `schema`, migrated under an
//! advisory lock), the writer task doing group commits on its own
//! connection (`writer`, with the ops' statements in `ops`), leases and
//! fences (`leases`), reads on a small pool (`reads`), and the wakers that
//! cross replicas through `LISTEN`/`NOTIFY` (`notify`).
//!
//! Row times are milliseconds from the injected [`Clock`], as in SQLite;
//! lease expiry alone uses the database's `now()`, the clock all replicas
//! share. The URL's password never appears in errors, logs or `Debug`:
//! only [`DatabaseUrl::redacted`] is shown.
//!
//! This module must not know about HTTP, templates or targets.

mod history;
mod leases;
mod notify;
mod ops;
mod reads;
mod schema;
mod writer;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

pub use schema::SCHEMA_VERSION;
pub use writer::StoreStats;
use writer::{Request, Writer};

use super::{
    Accepted, AttemptRow, Committed, ConversationRow, DeadLetter, DeliveryFilter, DeliveryRow,
    DeliverySummary, EngineInfo, Fence, NewDelivery, NewEvent, Op, PendingDelivery, PendingGroup,
    Pruned, QueueStats, Store, StoreError, StoreFuture, TemplateFilter, ThreadRef,
};
use crate::clock::Clock;
use crate::secret::DatabaseUrl;

/// Room for delivery results and other changes waiting for a commit. A
/// worker waits when it is full (results are never refused).
const OPS_CAPACITY: usize = 8192;

/// Connections of the read pool (leases go through it too).
const READ_CONNECTIONS: u32 = 4;

/// How long making a connection may take (an unreachable server otherwise
/// holds the caller for the system's TCP timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects with `opts` within [`CONNECT_TIMEOUT`].
async fn connect(opts: &PgConnectOptions) -> Result<sqlx::PgConnection, sqlx::Error> {
    tokio::time::timeout(CONNECT_TIMEOUT, opts.connect())
        .await
        .unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting to PostgreSQL took longer than 10 s",
            )))
        })
}

/// The PostgreSQL store.
pub struct PgStore {
    accepts: mpsc::Sender<Request>,
    ops: mpsc::Sender<Request>,
    reads: PgPool,
    capacity: usize,
    stats: Arc<StoreStats>,
    writer: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    listener: std::sync::Mutex<Option<JoinHandle<()>>>,
    wakers: notify::Wakers,
    /// The redacted URL, for messages.
    shown: String,
    /// This process's name among the replicas: the holder of its leases.
    replica: Arc<str>,
    lease: Duration,
    /// The writer's clock, for reads that compare with now.
    clock: Clock,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.shown)
            .field("replica", &self.replica)
            .finish()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(h) = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            h.abort();
        }
    }
}

/// `HOSTNAME` (or `relay`), the process id and 4 random hex digits.
fn replica_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| "relay".to_owned());
    format!("{host}/{}/{:04x}", std::process::id(), fastrand::u16(..))
}

/// Connection options from `url`; an error names only the redacted URL.
fn options(url: &DatabaseUrl) -> Result<PgConnectOptions, StoreError> {
    let opts = PgConnectOptions::from_url(url.expose()).map_err(|e| open_error(url, e))?;
    // Named in `pg_stat_activity`, unless the URL (or PGAPPNAME) names it.
    Ok(match opts.get_application_name() {
        Some(_) => opts,
        None => opts.application_name("crisp-relay"),
    })
}

/// [`StoreError::Open`] for `url`. sqlx's connection errors name the host,
/// user or database at most, never the password; the source is kept.
fn open_error(url: &DatabaseUrl, e: sqlx::Error) -> StoreError {
    StoreError::Open {
        path: url.redacted().to_owned(),
        source: Arc::new(e),
    }
}

impl PgStore {
    /// Connects to `url`, creates or upgrades the schema, starts the writer
    /// and the listener. `lease` is a lease's term; `capacity` bounds the
    /// accepted events waiting for a commit; `clock` stamps every row.
    pub async fn open(
        url: &DatabaseUrl,
        lease: Duration,
        capacity: usize,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        let shown = url.redacted().to_owned();
        let opts = options(url)?;
        let mut conn = connect(&opts).await.map_err(|e| open_error(url, e))?;
        schema::migrate(&mut conn, &shown).await?;
        let reads = PgPoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(CONNECT_TIMEOUT)
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(opts.clone());
        let wakers = notify::Wakers::default();
        let listener = notify::listen(&opts)
            .await
            .map_err(|e| open_error(url, e))?;
        let listener = tokio::spawn(listener.run(wakers.clone()));
        let replica: Arc<str> = replica_name().into();
        let (accepts, accepts_rx) = mpsc::channel(capacity.max(1));
        let (ops, ops_rx) = mpsc::channel(OPS_CAPACITY);
        let stats = Arc::new(StoreStats::default());
        let writer = tokio::spawn(
            Writer {
                conn: Some(conn),
                options: opts,
                accepts: accepts_rx,
                ops: ops_rx,
                stats: stats.clone(),
                wakers: wakers.clone(),
                clock,
                replica: replica.clone(),
            }
            .run(),
        );
        Ok(Self {
            accepts,
            ops,
            reads,
            capacity,
            stats,
            writer: tokio::sync::Mutex::new(Some(writer)),
            listener: std::sync::Mutex::new(Some(listener)),
            wakers,
            shown,
            replica,
            lease,
            clock,
        })
    }

    /// Group-commit counters.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// This process's name among the replicas.
    pub fn replica(&self) -> &str {
        &self.replica
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

    /// Queues a request on ingest's bounded queue.
    async fn call_ingest<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.accepts.try_send(make(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Full(self.capacity),
            mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        })?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    async fn later(&self, op: Op, fence: Option<Fence>) -> Result<Committed, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.ops
            .send(Request::Op { op, fence, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(Committed::new(rx))
    }

    async fn do_close(&self) {
        let handle = self.writer.lock().await.take();
        if let Some(h) = handle {
            let _ = self.ops.send(Request::Close).await;
            let _ = h.await;
            match leases::release_all(&self.reads, &self.replica).await {
                Ok(n) if n > 0 => tracing::debug!(leases = n, "leases released"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot release this replica's leases"),
            }
            let commits = self.stats.commits.load(Ordering::Relaxed);
            let events = self.stats.events.load(Ordering::Relaxed);
            tracing::debug!(
                commits,
                events,
                max_batch = self.stats.max_batch.load(Ordering::Relaxed),
                "store closed"
            );
        }
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = listener {
            h.abort();
            let _ = h.await;
        }
        self.reads.close().await;
    }

    async fn do_prune(&self, before_ms: i64, keys_before_ms: i64) -> Result<Pruned, StoreError> {
        let mut totals = Pruned::default();
        for deliveries in [true, false] {
            let mut after = 0;
            while let Some((up_to_id, last)) =
                self.prune_window(deliveries, after, before_ms).await?
            {
                if deliveries {
                    totals.deliveries += self
                        .apply(Op::PruneDelivered {
                            after_id: after,
                            up_to_id,
                            before_ms,
                        })
                        .await?;
                } else {
                    totals.events += self
                        .apply(Op::PruneEvents {
                            after_id: after,
                            up_to_id,
                            before_ms,
                        })
                        .await?;
                }
                after = up_to_id;
                if last {
                    break;
                }
            }
        }
        loop {
            let n = self
                .apply(Op::PruneKeys {
                    before_ms: keys_before_ms,
                })
                .await?;
            totals.keys += n;
            if n == 0 {
                break;
            }
        }
        Ok(totals)
    }
}

/// The pending groups of the store at `url`, read without creating,
/// migrating or writing anything; `None` when its schema is absent (for
/// `check`).
pub async fn pending_groups_at(url: &DatabaseUrl) -> Result<Option<Vec<PendingGroup>>, StoreError> {
    let mut conn = connect(&options(url)?)
        .await
        .map_err(|e| open_error(url, e))?;
    let groups = if schema::exists(&mut conn).await? {
        Some(reads::pending_groups_on(&mut conn).await?)
    } else {
        None
    };
    let _ = conn.close().await;
    Ok(groups)
}

impl Store for PgStore {
    fn accept(&self, event: NewEvent, deliveries: Vec<NewDelivery>) -> StoreFuture<'_, Accepted> {
        Box::pin(self.call_ingest(|reply| Request::Accept {
            event,
            deliveries,
            reply,
        }))
    }

    fn probe(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.call_ingest(|reply| Request::Probe { reply }))
    }

    fn apply(&self, op: Op) -> StoreFuture<'_, u64> {
        Box::pin(self.call(|reply| Request::Op {
            op,
            fence: None,
            reply,
        }))
    }

    fn apply_later(&self, op: Op) -> StoreFuture<'_, Committed> {
        Box::pin(self.later(op, None))
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
        Box::pin(self.read_event_body(event_id))
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

    fn info(&self) -> EngineInfo {
        EngineInfo {
            engine: "postgres",
            replica: Some(self.replica.to_string()),
        }
    }

    fn lease_term(&self) -> Option<Duration> {
        Some(self.lease)
    }

    fn acquire<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<Fence>> {
        Box::pin(leases::acquire(
            &self.reads,
            name,
            &self.replica,
            self.lease,
        ))
    }

    fn renew<'a>(&'a self, fence: &'a Fence) -> StoreFuture<'a, bool> {
        Box::pin(leases::renew(&self.reads, fence, &self.replica, self.lease))
    }

    fn release<'a>(&'a self, fence: &'a Fence) -> StoreFuture<'a, ()> {
        Box::pin(leases::release(&self.reads, fence, &self.replica))
    }

    fn apply_fenced<'a>(&'a self, op: Op, fence: &'a Fence) -> StoreFuture<'a, u64> {
        Box::pin(self.call(move |reply| Request::Op {
            op,
            fence: Some(fence.clone()),
            reply,
        }))
    }

    fn apply_later_fenced<'a>(&'a self, op: Op, fence: &'a Fence) -> StoreFuture<'a, Committed> {
        Box::pin(self.later(op, Some(fence.clone())))
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
        Box::pin(self.read_deliveries())
    }

    fn event_count(&self) -> StoreFuture<'_, i64> {
        Box::pin(self.read_event_count())
    }

    fn commits(&self) -> u64 {
        self.stats.commits.load(Ordering::Relaxed)
    }
}
