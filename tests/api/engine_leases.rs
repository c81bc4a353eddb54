//! The lease around a target's worker, through the library with a store
//! whose lease the test controls (SQLite underneath, its leases made to
//! expire and be refused as a PostgreSQL store's would when another replica
//! takes over): the worker stops when its lease is lost, the target shows
//! as standing by, nothing is sent meanwhile, and when the lease comes back
//! the queue goes out in order with nothing lost. A write carrying a lost
//! lease's token is refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use crisp_relay::clock::Clock;
use crisp_relay::delivery::TargetState;
use crisp_relay::store::{
    Accepted, AttemptRow, Committed, ConversationRow, DeadLetter, DeliveryFilter, DeliverySummary,
    Fence, NewDelivery, NewEvent, Op, PendingDelivery, PendingGroup, Pruned, QueueStats,
    SqliteStore, StoreError, StoreFuture, TemplateFilter, ThreadRef,
};
use tokio::sync::{Notify, oneshot};

use crate::engine::{Scripted, hook_config, wait_until};
use crate::helpers::*;

/// SQLite with a lease the test grants and revokes.
#[derive(Debug)]
struct Switched {
    inner: SqliteStore,
    /// Whether `acquire` grants a free lease.
    granting: AtomicBool,
    /// The token currently holding the lease; 0: nobody here.
    current: AtomicI64,
    next: AtomicI64,
    refused_writes: AtomicUsize,
    releases: AtomicUsize,
}

impl Switched {
    /// Another replica takes the lease: renewals and fenced writes of the
    /// current token are refused, and it cannot be acquired.
    fn revoke(&self) {
        self.granting.store(false, Ordering::SeqCst);
        self.current.store(0, Ordering::SeqCst);
    }

    fn grant(&self) {
        self.granting.store(true, Ordering::SeqCst);
    }

    fn holds(&self, fence: &Fence) -> bool {
        fence.token == self.current.load(Ordering::SeqCst)
    }
}

impl crisp_relay::store::Store for Switched {
    fn accept(&self, event: NewEvent, deliveries: Vec<NewDelivery>) -> StoreFuture<'_, Accepted> {
        self.inner.accept(event, deliveries)
    }
    fn probe(&self) -> StoreFuture<'_, ()> {
        self.inner.probe()
    }
    fn apply(&self, op: Op) -> StoreFuture<'_, u64> {
        self.inner.apply(op)
    }
    fn apply_later(&self, op: Op) -> StoreFuture<'_, Committed> {
        self.inner.apply_later(op)
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
    fn conversation_of<'a>(&'a self, t: &'a str, th: &'a str) -> StoreFuture<'a, Option<String>> {
        self.inner.conversation_of(t, th)
    }
    fn active_threads<'a>(&'a self, t: &'a str, since: i64) -> StoreFuture<'a, Vec<String>> {
        self.inner.active_threads(t, since)
    }
    fn remembered<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, bool> {
        self.inner.remembered(keys)
    }
    fn thread<'a>(&'a self, t: &'a str, c: &'a str) -> StoreFuture<'a, Option<ThreadRef>> {
        self.inner.thread(t, c)
    }
    fn pending_groups(&self) -> StoreFuture<'_, Vec<PendingGroup>> {
        self.inner.pending_groups()
    }
    fn queue_stats(&self) -> StoreFuture<'_, Vec<QueueStats>> {
        self.inner.queue_stats()
    }
    fn dead_letters<'a>(&'a self, t: Option<&'a str>) -> StoreFuture<'a, Vec<DeadLetter>> {
        self.inner.dead_letters(t)
    }
    fn event_body(&self, id: i64) -> StoreFuture<'_, Option<String>> {
        crisp_relay::store::Store::event_body(&self.inner, id)
    }
    fn prune(&self, b: i64, k: i64) -> StoreFuture<'_, Pruned> {
        self.inner.prune(b, k)
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
    fn lease_term(&self) -> Option<Duration> {
        Some(Duration::from_secs(3))
    }
    fn acquire<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<Fence>> {
        Box::pin(async move {
            if !self.granting.load(Ordering::SeqCst) || self.current.load(Ordering::SeqCst) != 0 {
                return Ok(None);
            }
            let token = self.next.fetch_add(1, Ordering::SeqCst) + 1;
            self.current.store(token, Ordering::SeqCst);
            Ok(Some(Fence {
                name: name.into(),
                token,
            }))
        })
    }
    fn renew<'a>(&'a self, fence: &'a Fence) -> StoreFuture<'a, bool> {
        Box::pin(async move { Ok(self.holds(fence)) })
    }
    fn release<'a>(&'a self, fence: &'a Fence) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if self.holds(fence) {
                self.current.store(0, Ordering::SeqCst);
            }
            self.releases.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
    fn apply_fenced<'a>(&'a self, op: Op, fence: &'a Fence) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            if !self.holds(fence) {
                self.refused_writes.fetch_add(1, Ordering::SeqCst);
                return Err(StoreError::LeaseLost(fence.name.to_string()));
            }
            self.inner.apply(op).await
        })
    }
    fn apply_later_fenced<'a>(&'a self, op: Op, fence: &'a Fence) -> StoreFuture<'a, Committed> {
        Box::pin(async move {
            if !self.holds(fence) {
                self.refused_writes.fetch_add(1, Ordering::SeqCst);
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Err(StoreError::LeaseLost(fence.name.to_string())));
                return Ok(Committed::new(rx));
            }
            self.inner.apply_later(op).await
        })
    }
    fn deliveries(&self) -> StoreFuture<'_, Vec<crisp_relay::store::DeliveryRow>> {
        crisp_relay::store::Store::deliveries(&self.inner)
    }
    fn event_count(&self) -> StoreFuture<'_, i64> {
        crisp_relay::store::Store::event_count(&self.inner)
    }
    fn commits(&self) -> u64 {
        crisp_relay::store::Store::commits(&self.inner)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stops_when_its_lease_is_lost_and_resumes_in_order_when_it_returns() {
    let work = hook_config("retry: {initial_backoff: 50ms, max_backoff: 1s}");
    let inner = SqliteStore::open(&work.path().join("data/relay.db"), 64, Clock::system())
        .await
        .unwrap();
    let store = Arc::new(Switched {
        inner,
        granting: AtomicBool::new(true),
        current: AtomicI64::new(0),
        next: AtomicI64::new(0),
        refused_writes: AtomicUsize::new(0),
        releases: AtomicUsize::new(0),
    });
    let dest = Scripted::new(&[]);
    let app = LibApp::start_on(work, dest.clone(), Clock::system(), Some(store.clone())).await;
    for seq in 1..=3 {
        assert_eq!(app.post_event(message(seq)).await, 200);
    }
    wait_until("the first three", || dest.delivered() == vec![1, 2, 3]).await;

    // Another replica takes the lease: the next renewal (every second) is
    // refused and the worker stops; the target stands by.
    store.revoke();
    let states = app.running().states.clone();
    wait_until("the target to stand by", || {
        states.get("hook") == Some(TargetState::Standby)
    })
    .await;
    let ready: serde_json::Value = serde_json::from_str(&app.admin_text("/readyz").await).unwrap();
    assert_eq!(
        ready["status"], "ready",
        "standing by is not degraded: {ready}"
    );
    // Ingest goes on; nothing is sent while another replica holds it.
    for seq in 4..=6 {
        assert_eq!(app.post_event(message(seq)).await, 200);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(dest.delivered(), vec![1, 2, 3]);

    // The lease is free again: taken within a fifth of the term, and the
    // queue goes out in order.
    store.grant();
    wait_until("the rest", || dest.delivered().len() >= 6).await;
    assert_eq!(dest.delivered(), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(states.get("hook"), Some(TargetState::Running));
    let metrics = app.admin_text("/metrics").await;
    assert_eq!(
        metric(&metrics, r#"crisp_relay_lease_held{lease="target:hook"}"#),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(store.refused_writes.load(Ordering::SeqCst), 0);
    let releases_before = store.releases.load(Ordering::SeqCst);
    app.stop().await;
    // Stopping releases the lease at once.
    assert_eq!(store.releases.load(Ordering::SeqCst), releases_before + 1);
    assert_eq!(store.current.load(Ordering::SeqCst), 0);
}
