//! The durable queue: accepted events and one delivery row per
//! (event, route, target).
//!
//! Owns the [`Store`] interface that ingest, the delivery workers, reload and
//! the CLI use, and the types that cross it. [`Store::accept`] returns only
//! once the event and its deliveries are durable; engines group concurrent
//! calls into one transaction (group commit) so throughput does not fall to
//! one fsync per request. Times are stamped with the [`Clock`] the engine
//! was opened with, the same one the workers read. The SQLite engine is in
//! [`sqlite`], the PostgreSQL one in [`postgres`]; nothing above this module
//! knows which engine is underneath ([`open`] picks it from a [`Location`]).
//!
//! Leases ([`Store::acquire`]) decide which process runs a target's worker
//! (or a reply listener) when several replicas share one database: a
//! [`Fence`] names the lease and its token, and writes made under it
//! ([`Store::apply_fenced`]) commit only while that token still holds the
//! lease. On SQLite one process owns the file, so every lease is granted at
//! once and never expires.
//!
//! This module must not know about HTTP, templates or targets' wire formats.

pub mod fenced;
pub mod history;
pub mod postgres;
pub mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::{Notify, oneshot};

pub use history::{
    ATTEMPTS_KEPT, AttemptRow, ConversationRow, DeliveryFilter, DeliveryState, DeliverySummary,
};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

#[allow(unused_imports)] // for the doc links
use crate::clock::Clock;

/// An accepted event, as stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub received_at_ms: i64,
    pub website_id: String,
    pub name: String,
    /// Crisp's timestamp, or the receive time when Crisp left it out.
    pub timestamp_ms: i64,
    /// The request body as received (valid JSON).
    pub body: String,
    /// `website_id/session_id`, when the event has a session.
    pub conversation: Option<String>,
    /// What identifies a resend of this event (see
    /// [`crate::event::Event::dedupe_key`]); `None`: never a duplicate.
    pub dedupe: Option<String>,
}

/// What [`Store::accept`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Stored, with this id, and its deliveries.
    New(i64),
    /// An event with the same dedupe key was accepted within the last
    /// [`DEDUPE_WINDOW_MS`]: nothing was stored.
    Duplicate,
}

/// How long an accepted event's dedupe key is remembered (24 h).
pub const DEDUPE_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub deliveries: u64,
    pub events: u64,
    /// Dedupe keys older than [`DEDUPE_WINDOW_MS`].
    pub keys: u64,
}

/// One delivery to create with the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub route: String,
    pub target: String,
    pub template: Option<String>,
}

/// A stored delivery row (for inspection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub id: i64,
    pub event_id: i64,
    pub route: String,
    pub target: String,
    pub template: Option<String>,
    pub state: String,
    pub attempts: i64,
}

/// A pending delivery with its event, for a worker.
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    pub id: i64,
    pub event_id: i64,
    pub route: String,
    pub target: String,
    pub template: Option<String>,
    /// Attempts made so far.
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub created_at_ms: i64,
    /// When it entered the queue: its creation, or its last replay. Its
    /// `max_age` counts from here.
    pub queued_at_ms: i64,
    /// The request body as received.
    pub body: String,
    /// Crisp's timestamp, or the receive time when Crisp left it out.
    pub timestamp_ms: i64,
    pub received_at_ms: i64,
    /// `website_id/session_id`, when the event has a session.
    pub conversation: Option<String>,
}

/// A delivery that failed for good, kept for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: i64,
    pub event_id: i64,
    pub route: String,
    pub target: String,
    /// The event name, e.g. `message:send`.
    pub event: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub failed_at_ms: i64,
}

/// Pending deliveries that share a target and a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingGroup {
    pub target: String,
    pub template: Option<String>,
    pub count: i64,
}

/// What the metrics show about one target's queue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueStats {
    pub target: String,
    pub pending: i64,
    /// When the delivery at the head of the queue (the next to go) entered
    /// it.
    pub head_queued_at_ms: Option<i64>,
    pub dead: i64,
}

/// A conversation's thread on a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRef {
    /// The platform's id: a Discord channel id, a Slack message `ts`.
    pub thread: String,
    pub state: ThreadState,
}

/// Where a conversation's thread stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadState {
    /// Messages go into it.
    Open,
    /// Discord bot in a text channel: its first message is posted (the
    /// thread id is that message's), the thread is not started yet.
    Starting,
    /// Archived after the conversation was resolved; a new message reopens
    /// it.
    Archived,
}

impl ThreadState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Starting => "starting",
            Self::Archived => "archived",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "starting" => Self::Starting,
            "archived" => Self::Archived,
            _ => Self::Open,
        }
    }
}

/// Which pending rows a worker may take: those whose template it can
/// render. Rows outside the filter stay queued (orphaned) until a
/// configuration that knows their template comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateFilter {
    /// Every row (webhook and stdout targets fall back to the event).
    Any,
    /// Only rows naming one of these templates.
    OneOf(Vec<String>),
}

/// A change to delivery rows, applied by the writer with the next commit.
///
/// `Delivered`, `Retry` and `Dead` are an attempt's result: with the row's
/// change they record the attempt (see [`history`]): `at_ms`, when the
/// send started; `latency_ms`, how long it took (`None`: nothing was sent).
#[derive(Debug, Clone)]
pub enum Op {
    /// Sent and acknowledged.
    Delivered {
        id: i64,
        attempts: i64,
        status: Option<u16>,
        at_ms: i64,
        latency_ms: Option<i64>,
    },
    /// Failed for now: try again at `next_attempt_at_ms`. Also used to record
    /// an attempt on a target that then stopped (the row stays pending).
    Retry {
        id: i64,
        attempts: i64,
        next_attempt_at_ms: i64,
        status: Option<u16>,
        error: String,
        at_ms: i64,
        latency_ms: Option<i64>,
    },
    /// Failed for good: a dead letter.
    Dead {
        id: i64,
        attempts: i64,
        status: Option<u16>,
        error: String,
        at_ms: i64,
        latency_ms: Option<i64>,
    },
    /// Dead letters back to pending (all, one id, and/or one target), due at
    /// once and with a fresh `max_age`.
    Replay {
        id: Option<i64>,
        target: Option<String>,
    },
    /// Deletes dead letters last changed before `before_ms`.
    PurgeDead { before_ms: i64 },
    /// Pending rows of target `from` (only those naming `template`, if
    /// given) to target `to` and/or template `to_template`; they keep their
    /// place in line.
    MovePending {
        from: String,
        template: Option<String>,
        to: Option<String>,
        to_template: Option<String>,
    },
    /// Deletes the pending rows of `target` (only those naming `template`,
    /// if given).
    PurgePending {
        target: String,
        template: Option<String>,
    },
    /// One chunk of retention: deletes delivered rows last changed before
    /// `before_ms` among ids in `(after_id, up_to_id]`.
    PruneDelivered {
        after_id: i64,
        up_to_id: i64,
        before_ms: i64,
    },
    /// One chunk of retention: deletes events received before `before_ms`
    /// with no delivery left, among ids in `(after_id, up_to_id]`.
    PruneEvents {
        after_id: i64,
        up_to_id: i64,
        before_ms: i64,
    },
    /// Deletes up to 500 dedupe keys recorded before `before_ms`.
    PruneKeys { before_ms: i64 },
    /// Records (or replaces) a conversation's thread on a target.
    SetThread {
        target: String,
        conversation: String,
        thread: ThreadRef,
    },
    /// Forgets a conversation's thread on a target (it was deleted or
    /// locked; the next message starts a new one).
    ForgetThread {
        target: String,
        conversation: String,
    },
    /// Records a key for [`DEDUPE_WINDOW_MS`] (what a reply sent to Crisp
    /// looks like when it comes back: see [`Store::remembered`]).
    Remember { key: String },
}

/// What the store can fail with. `Full` and `Closed` are temporary (ingest
/// answers 503).
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    #[error("the store queue is full ({0} requests waiting for a commit)")]
    Full(usize),
    #[error("the store is shut down")]
    Closed,
    #[error("cannot open the store at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "the store at {path} was written by a newer crisp-relay (schema {found}, this one knows {known}); upgrade crisp-relay or point store.path elsewhere"
    )]
    NewerSchema {
        path: String,
        found: i64,
        known: i64,
    },
    #[error(
        "cannot make the commit durable: switching to synchronous = FULL failed ({0}); nothing was written"
    )]
    NotDurable(String),
    #[error("database error: {0}")]
    Db(#[source] Arc<sqlx::Error>),
    /// The lease a fenced write was made under is no longer this process's
    /// (it expired, or another replica took it): nothing was written.
    #[error("lease `{0}` is no longer held by this replica; the write was refused")]
    LeaseLost(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(Arc::new(e))
    }
}

/// A lease this process holds: its name (`target:NAME`, `gateway:NAME`)
/// and the token it was granted with. Each grant of a name gets a higher
/// token than the last, so a write carrying an older one is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    pub name: Arc<str>,
    pub token: i64,
}

/// Which engine a store is, and what it shows in `/readyz` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// `sqlite` or `postgres`.
    pub engine: &'static str,
    /// This process's name among the replicas (PostgreSQL), e.g.
    /// `relay-0/4711/9f3a`.
    pub replica: Option<String>,
}

/// Where the store lives, from `store.path` or `store.url`.
#[derive(Debug, Clone)]
pub enum Location {
    Sqlite(std::path::PathBuf),
    Postgres {
        url: crate::secret::DatabaseUrl,
        /// How long a lease lasts without a renewal (`store.lease`).
        lease: std::time::Duration,
    },
}

/// Opens the store at `location` (creating or upgrading its schema).
/// `capacity` bounds the accepted events waiting for a commit; `clock`
/// stamps every row.
pub async fn open(
    location: &Location,
    capacity: usize,
    clock: Clock,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match location {
        Location::Sqlite(path) => Arc::new(SqliteStore::open(path, capacity, clock).await?),
        Location::Postgres { url, lease } => {
            Arc::new(PgStore::open(url, *lease, capacity, clock).await?)
        }
    })
}

/// The answer to [`Store::apply_later`]: resolves once committed.
pub struct Committed(oneshot::Receiver<Result<u64, StoreError>>);

impl Committed {
    pub fn new(rx: oneshot::Receiver<Result<u64, StoreError>>) -> Self {
        Self(rx)
    }

    /// The outcome if the commit is over, without waiting.
    pub fn try_take(&mut self) -> Option<Result<u64, StoreError>> {
        match self.0.try_recv() {
            Ok(r) => Some(r),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(StoreError::Closed)),
        }
    }

    pub async fn wait(self) -> Result<u64, StoreError> {
        self.0.await.unwrap_or(Err(StoreError::Closed))
    }
}

/// A boxed future of a store call (the trait is used as `dyn Store`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The durable queue, whatever the engine.
///
/// Writes go through one ordered stream per store: results queued with
/// [`Store::apply_later`] are committed in the order given, and a call that
/// returns after them (a [`Store::barrier`]) sees them committed.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores `event` and `deliveries` and returns once both are durable
    /// — unless an event with the same dedupe key was accepted within
    /// [`DEDUPE_WINDOW_MS`] (then nothing is stored: [`Accepted::Duplicate`]).
    /// Fails at once with [`StoreError::Full`] when too many requests already
    /// wait for a commit. Delivery results never take that room: they queue
    /// separately.
    fn accept(&self, event: NewEvent, deliveries: Vec<NewDelivery>) -> StoreFuture<'_, Accepted>;

    /// Proves the store takes durable writes (a tiny one).
    fn probe(&self) -> StoreFuture<'_, ()>;

    /// Applies `op` once committed; answers the number of rows it changed.
    fn apply(&self, op: Op) -> StoreFuture<'_, u64>;

    /// Queues `op` for the next commit and returns at once.
    fn apply_later(&self, op: Op) -> StoreFuture<'_, Committed>;

    /// Returns once every write queued before it is committed (or failed).
    fn barrier(&self) -> StoreFuture<'_, ()>;

    /// Up to `limit` pending deliveries of `target` with an id above
    /// `after_id` that `filter` admits, oldest first, with their events.
    fn pending<'a>(
        &'a self,
        target: &'a str,
        after_id: i64,
        limit: u32,
        filter: &'a TemplateFilter,
    ) -> StoreFuture<'a, Vec<PendingDelivery>>;

    /// The conversation whose thread on `target` is `thread`, if any.
    fn conversation_of<'a>(
        &'a self,
        target: &'a str,
        thread: &'a str,
    ) -> StoreFuture<'a, Option<String>>;

    /// The threads on `target` of conversations with an event received
    /// since `since_ms` (where replies may have been written meanwhile).
    fn active_threads<'a>(&'a self, target: &'a str, since_ms: i64)
    -> StoreFuture<'a, Vec<String>>;

    /// Whether any of `keys` was recorded (by an accepted event's dedupe
    /// key or [`Op::Remember`]) within [`DEDUPE_WINDOW_MS`].
    fn remembered<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, bool>;

    /// The thread of `conversation` on `target`, if one was recorded.
    fn thread<'a>(
        &'a self,
        target: &'a str,
        conversation: &'a str,
    ) -> StoreFuture<'a, Option<ThreadRef>>;

    /// Pending deliveries counted by target and template.
    fn pending_groups(&self) -> StoreFuture<'_, Vec<PendingGroup>>;

    /// Per target with pending or dead rows: what the metrics show. Reads
    /// only the queued rows, never the delivered history.
    fn queue_stats(&self) -> StoreFuture<'_, Vec<QueueStats>>;

    /// Dead letters, oldest first, optionally of one target.
    fn dead_letters<'a>(&'a self, target: Option<&'a str>) -> StoreFuture<'a, Vec<DeadLetter>>;

    /// The stored body of event `event_id` (the request as Crisp sent it),
    /// if the event is still stored (inspection: the console).
    fn event_body(&self, event_id: i64) -> StoreFuture<'_, Option<String>>;

    /// Deletes delivered rows and emptied events older than `before_ms`,
    /// and dedupe keys recorded before `keys_before_ms`, in chunks, each its
    /// own commit, so ingest commits go on in between.
    fn prune(&self, before_ms: i64, keys_before_ms: i64) -> StoreFuture<'_, Pruned>;

    /// The notification a worker for `target` waits on for new work: it is
    /// signalled after a commit that gives the target rows.
    fn waker(&self, target: &str) -> Arc<Notify>;

    /// Commits what is queued, then refuses new requests.
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// Which engine this is, and this process's replica name.
    fn info(&self) -> EngineInfo {
        EngineInfo {
            engine: "sqlite",
            replica: None,
        }
    }

    /// How long a lease lasts without renewal; `None`: leases never expire
    /// (one process owns the store).
    fn lease_term(&self) -> Option<std::time::Duration> {
        None
    }

    /// Takes lease `name` if it is free, released or expired; `None` while
    /// another replica (or an earlier grant still in force) holds it.
    fn acquire<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<Fence>> {
        Box::pin(async move {
            Ok(Some(Fence {
                name: name.into(),
                token: 1,
            }))
        })
    }

    /// Extends the lease `fence` holds by a whole term; `false`: it is no
    /// longer held (expired, or taken by another replica).
    fn renew<'a>(&'a self, fence: &'a Fence) -> StoreFuture<'a, bool> {
        let _ = fence;
        Box::pin(async { Ok(true) })
    }

    /// Gives the lease up at once, so another replica may take it.
    fn release<'a>(&'a self, fence: &'a Fence) -> StoreFuture<'a, ()> {
        let _ = fence;
        Box::pin(async { Ok(()) })
    }

    /// [`Store::apply`] under `fence`: fails with [`StoreError::LeaseLost`]
    /// (and writes nothing) unless the lease is still held with that token
    /// when the commit is made.
    fn apply_fenced<'a>(&'a self, op: Op, fence: &'a Fence) -> StoreFuture<'a, u64> {
        let _ = fence;
        self.apply(op)
    }

    /// [`Store::apply_later`] under `fence` (see [`Store::apply_fenced`]).
    fn apply_later_fenced<'a>(&'a self, op: Op, fence: &'a Fence) -> StoreFuture<'a, Committed> {
        let _ = fence;
        self.apply_later(op)
    }

    /// Deliveries that `filter` admits, newest first, with their events'
    /// names and conversations (the console's Deliveries page).
    fn recent_deliveries<'a>(
        &'a self,
        filter: &'a DeliveryFilter,
    ) -> StoreFuture<'a, Vec<DeliverySummary>>;

    /// The attempts kept of delivery `delivery_id` (the last
    /// [`ATTEMPTS_KEPT`]), oldest first.
    fn attempts_of(&self, delivery_id: i64) -> StoreFuture<'_, Vec<AttemptRow>>;

    /// Conversations' threads (of `target`, or of every target), most
    /// recently active first, at most `limit` (up to
    /// [`history::MAX_LIMIT`]).
    fn conversations<'a>(
        &'a self,
        target: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<ConversationRow>>;

    /// Every delivery row, oldest first (inspection: tests, operators).
    fn deliveries(&self) -> StoreFuture<'_, Vec<DeliveryRow>>;

    /// How many events are stored (inspection).
    fn event_count(&self) -> StoreFuture<'_, i64>;

    /// How many commits the writer has made since the store was opened
    /// (inspection: group commit).
    fn commits(&self) -> u64;
}
