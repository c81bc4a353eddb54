//! A store seen through a lease: every change made through it carries the
//! lease's [`Fence`], so it commits only while this process still holds
//! the lease with that token. A worker is handed one of these, so that
//! nothing it writes can land after another replica took its target over.
//! Reads and everything else pass through unchanged.

use std::sync::Arc;

use tokio::sync::Notify;

use super::{
    Accepted, AttemptRow, Committed, ConversationRow, DeadLetter, DeliveryFilter, DeliveryRow,
    DeliverySummary, EngineInfo, Fence, NewDelivery, NewEvent, Op, PendingDelivery, PendingGroup,
    Pruned, QueueStats, Store, StoreFuture, TemplateFilter, ThreadRef,
};

/// `inner`, with its changes fenced by `fence`.
#[derive(Debug)]
pub struct FencedStore {
    inner: Arc<dyn Store>,
    fence: Fence,
}

impl FencedStore {
    pub fn new(inner: Arc<dyn Store>, fence: Fence) -> Self {
        Self { inner, fence }
    }
}

impl Store for FencedStore {
    fn accept(&self, event: NewEvent, deliveries: Vec<NewDelivery>) -> StoreFuture<'_, Accepted> {
        self.inner.accept(event, deliveries)
    }
    fn probe(&self) -> StoreFuture<'_, ()> {
        self.inner.probe()
    }
    fn apply(&self, op: Op) -> StoreFuture<'_, u64> {
        self.inner.apply_fenced(op, &self.fence)
    }
    fn apply_later(&self, op: Op) -> StoreFuture<'_, Committed> {
        self.inner.apply_later_fenced(op, &self.fence)
    }
    fn barrier(&self) -> StoreFuture<'_, ()> {
        self.inner.barrier()
    }
    fn pending<'a>(
        &'a self,
        target: &'a str,
        after_id: i64,
        limit: u32,
        filter: &'a TemplateFilter,
    ) -> StoreFuture<'a, Vec<PendingDelivery>> {
        self.inner.pending(target, after_id, limit, filter)
    }
    fn conversation_of<'a>(
        &'a self,
        target: &'a str,
        thread: &'a str,
    ) -> StoreFuture<'a, Option<String>> {
        self.inner.conversation_of(target, thread)
    }
    fn active_threads<'a>(
        &'a self,
        target: &'a str,
        since_ms: i64,
    ) -> StoreFuture<'a, Vec<String>> {
        self.inner.active_threads(target, since_ms)
    }
    fn remembered<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, bool> {
        self.inner.remembered(keys)
    }
    fn thread<'a>(
        &'a self,
        target: &'a str,
        conversation: &'a str,
    ) -> StoreFuture<'a, Option<ThreadRef>> {
        self.inner.thread(target, conversation)
    }
    fn pending_groups(&self) -> StoreFuture<'_, Vec<PendingGroup>> {
        self.inner.pending_groups()
    }
    fn queue_stats(&self) -> StoreFuture<'_, Vec<QueueStats>> {
        self.inner.queue_stats()
    }
    fn dead_letters<'a>(&'a self, target: Option<&'a str>) -> StoreFuture<'a, Vec<DeadLetter>> {
        self.inner.dead_letters(target)
    }
    fn event_body(&self, event_id: i64) -> StoreFuture<'_, Option<String>> {
        self.inner.event_body(event_id)
    }
    fn prune(&self, before_ms: i64, keys_before_ms: i64) -> StoreFuture<'_, Pruned> {
        self.inner.prune(before_ms, keys_before_ms)
    }
    fn recent_deliveries<'a>(
        &'a self,
        filter: &'a DeliveryFilter,
    ) -> StoreFuture<'a, Vec<DeliverySummary>> {
        self.inner.recent_deliveries(filter)
    }
    fn attempts_of(&self, delivery_id: i64) -> StoreFuture<'_, Vec<AttemptRow>> {
        self.inner.attempts_of(delivery_id)
    }
    fn conversations<'a>(
        &'a self,
        target: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<ConversationRow>> {
        self.inner.conversations(target, limit)
    }
    fn waker(&self, target: &str) -> Arc<Notify> {
        self.inner.waker(target)
    }
    fn close(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        self.inner.close()
    }
    fn info(&self) -> EngineInfo {
        self.inner.info()
    }
    fn lease_term(&self) -> Option<std::time::Duration> {
        self.inner.lease_term()
    }
    fn acquire<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<Fence>> {
        self.inner.acquire(name)
    }
    fn renew<'a>(&'a self, fence: &'a Fence) -> StoreFuture<'a, bool> {
        self.inner.renew(fence)
    }
    fn release<'a>(&'a self, fence: &'a Fence) -> StoreFuture<'a, ()> {
        self.inner.release(fence)
    }
    fn apply_fenced<'a>(&'a self, op: Op, fence: &'a Fence) -> StoreFuture<'a, u64> {
        self.inner.apply_fenced(op, fence)
    }
    fn apply_later_fenced<'a>(&'a self, op: Op, fence: &'a Fence) -> StoreFuture<'a, Committed> {
        self.inner.apply_later_fenced(op, fence)
    }
    fn deliveries(&self) -> StoreFuture<'_, Vec<DeliveryRow>> {
        self.inner.deliveries()
    }
    fn event_count(&self) -> StoreFuture<'_, i64> {
        self.inner.event_count()
    }
    fn commits(&self) -> u64 {
        self.inner.commits()
    }
}
