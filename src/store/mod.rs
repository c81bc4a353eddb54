//! The durable queue: accepted events and one delivery row per
//! (event, route, target).
//!
//! Owns the storage interface the server and delivery use. Ingest calls
//! [`Store::accept`], which returns only once the event and its deliveries are
//! committed; concurrent calls are grouped into one transaction (group commit)
//! so throughput does not fall to one fsync per request. The SQLite engine is
//! in [`sqlite`]; a PostgreSQL one can implement the same methods later. This
//! module must not know about HTTP, templates or targets' wire formats.

pub mod sqlite;

use thiserror::Error;

pub use sqlite::{Committed, SqliteStore, StoreStats};

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
}

/// One delivery to create with the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub route: String,
    pub target: String,
    pub template: Option<String>,
}

/// A stored delivery row (for inspection and, later, the workers).
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
    /// The request body as received.
    pub body: String,
    /// Crisp's timestamp, or the receive time when Crisp left it out.
    pub timestamp_ms: i64,
    pub received_at_ms: i64,
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

/// A change to delivery rows, applied by the writer with the next commit.
#[derive(Debug, Clone)]
pub enum Op {
    /// Sent and acknowledged.
    Delivered {
        id: i64,
        attempts: i64,
        status: Option<u16>,
    },
    /// Failed for now: try again at `next_attempt_at_ms`. Also used to record
    /// an attempt on a target that then stopped (the row stays pending).
    Retry {
        id: i64,
        attempts: i64,
        next_attempt_at_ms: i64,
        status: Option<u16>,
        error: String,
    },
    /// Failed for good: a dead letter.
    Dead {
        id: i64,
        attempts: i64,
        status: Option<u16>,
        error: String,
    },
    /// Dead letters back to pending (all, one id, and/or one target).
    Replay {
        id: Option<i64>,
        target: Option<String>,
    },
    /// Deletes dead letters last changed before `before_ms`.
    PurgeDead { before_ms: i64 },
    /// Deletes delivered rows (and events left without deliveries) older
    /// than `before_ms`.
    PruneDelivered { before_ms: i64 },
}

/// What the store can fail with. `is_overloaded` errors become 503.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("the store queue is full ({0} requests waiting for a commit)")]
    Full(usize),
    #[error("the store is shut down")]
    Closed,
    #[error("cannot open the store at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "the store at {path} was written by a newer crisp-relay (schema {found}, this one knows {known}); upgrade crisp-relay or point store.path elsewhere"
    )]
    NewerSchema {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}
