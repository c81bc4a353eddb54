//! PostgreSQL engine for the store (several replicas on one database).
//! Placeholder until the engine lands: opening it fails with a clear error.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::{
    Accepted, Committed, DeadLetter, NewDelivery, NewEvent, Op, PendingDelivery, PendingGroup,
    Pruned, QueueStats, Store, StoreError, StoreFuture, TemplateFilter, ThreadRef,
};
use crate::clock::Clock;
use crate::secret::DatabaseUrl;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 1;

/// The PostgreSQL store.
#[derive(Debug)]
pub enum PgStore {}

impl PgStore {
    pub async fn open(
        url: &DatabaseUrl,
        lease: Duration,
        capacity: usize,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        let _ = (lease, capacity, clock);
        Err(StoreError::Open {
            path: url.redacted().to_owned(),
            source: Arc::new(std::io::Error::other(
                "the PostgreSQL engine is not built yet",
            )),
        })
    }
}

impl Store for PgStore {
    fn accept(&self, _: NewEvent, _: Vec<NewDelivery>) -> StoreFuture<'_, Accepted> {
        match *self {}
    }
    fn probe(&self) -> StoreFuture<'_, ()> {
        match *self {}
    }
    fn apply(&self, _: Op) -> StoreFuture<'_, u64> {
        match *self {}
    }
    fn apply_later(&self, _: Op) -> StoreFuture<'_, Committed> {
        match *self {}
    }
    fn barrier(&self) -> StoreFuture<'_, ()> {
        match *self {}
    }
    fn pending<'a>(
        &'a self,
        _: &'a str,
        _: i64,
        _: u32,
        _: &'a TemplateFilter,
    ) -> StoreFuture<'a, Vec<PendingDelivery>> {
        match *self {}
    }
    fn conversation_of<'a>(&'a self, _: &'a str, _: &'a str) -> StoreFuture<'a, Option<String>> {
        match *self {}
    }
    fn active_threads<'a>(&'a self, _: &'a str, _: i64) -> StoreFuture<'a, Vec<String>> {
        match *self {}
    }
    fn remembered<'a>(&'a self, _: &'a [String]) -> StoreFuture<'a, bool> {
        match *self {}
    }
    fn thread<'a>(&'a self, _: &'a str, _: &'a str) -> StoreFuture<'a, Option<ThreadRef>> {
        match *self {}
    }
    fn pending_groups(&self) -> StoreFuture<'_, Vec<PendingGroup>> {
        match *self {}
    }
    fn queue_stats(&self) -> StoreFuture<'_, Vec<QueueStats>> {
        match *self {}
    }
    fn dead_letters<'a>(&'a self, _: Option<&'a str>) -> StoreFuture<'a, Vec<DeadLetter>> {
        match *self {}
    }
    fn prune(&self, _: i64, _: i64) -> StoreFuture<'_, Pruned> {
        match *self {}
    }
    fn waker(&self, _: &str) -> Arc<Notify> {
        match *self {}
    }
    fn close(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        match *self {}
    }
}
