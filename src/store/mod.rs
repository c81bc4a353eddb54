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

pub use sqlite::{SqliteStore, StoreStats};

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
