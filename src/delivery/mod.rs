//! Delivery: draining the store to the destinations.
//!
//! Owns one worker per enabled target. A worker takes that target's oldest
//! pending delivery (FIFO by id, so a channel reads in Crisp's order), waits
//! until it is due, renders it, waits for the target's limiter, sends it,
//! classifies the answer and records the result. Results are committed in
//! groups while the next rows are sent (at most [`WINDOW`] uncommitted at
//! once), so a fast destination is not held to one commit per send.
//! A delivery waiting for a retry therefore holds back later deliveries to
//! the same target, and no other target. Rows stay `pending` while in
//! flight: after a crash, the send in flight and those whose results were
//! not yet committed (at most [`WINDOW`]) are repeated (at-least-once).
//!
//! Must not: accept events (the server does), or decide escaping and
//! limits (render and targets do).

pub mod backoff;
pub mod classify;
pub mod limiter;
pub mod transport;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, warn};

use crate::app::Relay;
use crate::config::Target;
use crate::event::Event;
use crate::model::TargetKind;
use crate::store::{Op, PendingDelivery, SqliteStore, StoreError};
use crate::targets::{Body, OutgoingRequest};
use classify::{Answer, Outcome, RateHints, classify, classify_error, rate_hints};
use limiter::TargetLimiter;
use transport::Transport;

/// How often an idle worker looks at the store even without a wake-up
/// (replays made by another process, e.g. `crisp-relay deadletters replay`).
const IDLE_POLL: Duration = Duration::from_secs(5);
/// How often delivered rows past `store.retention` are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Wall-clock milliseconds that advance with tokio's clock, so tests on a
/// paused clock see schedules move with virtual time.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    base_ms: i64,
    base: Instant,
}

impl WallClock {
    pub fn new() -> Self {
        Self {
            base_ms: crate::now_ms(),
            base: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.base_ms + self.base.elapsed().as_millis() as i64
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

/// What every worker shares.
pub struct Shared {
    pub relay: Arc<Relay>,
    pub store: SqliteStore,
    pub transport: Arc<dyn Transport>,
    pub clock: WallClock,
    /// Seeds the backoff jitter (tests); `None`: random.
    pub seed: Option<u64>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The running workers.
pub struct Engine {
    handles: Vec<JoinHandle<()>>,
}

impl Engine {
    /// An engine with no workers (for [`Engine::with_pruning`] alone).
    pub fn none() -> Self {
        Self {
            handles: Vec::new(),
        }
    }

    /// Starts a worker per enabled target. `stop`: take
    /// no new work; `abort`: give up sends in flight (the shutdown deadline).
    pub fn start(shared: Arc<Shared>, stop: CancellationToken, abort: CancellationToken) -> Self {
        let mut handles = Vec::new();
        for (index, target) in shared.relay.config.targets.iter().enumerate() {
            if !target.enabled {
                continue;
            }
            info!(target_name = %target.name, kind = %target.kind, "delivery worker started");
            handles.push(tokio::spawn(run_worker(
                shared.clone(),
                index,
                stop.clone(),
                abort.clone(),
            )));
        }
        Self { handles }
    }

    /// Also prunes delivered rows past `store.retention`, now and hourly.
    pub fn with_pruning(mut self, shared: Arc<Shared>, stop: CancellationToken) -> Self {
        self.handles.push(tokio::spawn(prune(shared, stop)));
        self
    }

    /// Waits for every worker to stop.
    pub async fn join(self) {
        for h in self.handles {
            let _ = h.await;
        }
    }
}

async fn prune(shared: Arc<Shared>, stop: CancellationToken) {
    let retention = shared.relay.config.store.retention;
    loop {
        let before_ms = shared.clock.now_ms() - retention.as_millis() as i64;
        match shared.store.apply(Op::PruneDelivered { before_ms }).await {
            Ok(0) => {}
            Ok(n) => info!(rows = n, "pruned delivered rows past retention"),
            Err(StoreError::Closed) => return,
            Err(e) => warn!(error = %e, "pruning failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(PRUNE_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Rows a worker reads at once (or its target's `batch`, if larger).
/// Results are committed before the queue is read from the start again.
const BATCH: u32 = 64;

/// Results a worker may have sent but not yet committed. Sends go on while
/// earlier results wait for the store's next group commit, which matters
/// when commits are slow (an fsync behind a burst of ingest) and the
/// destination fast; a rate-limited target's results are committed long
/// before its next send, so for it this is one. Also the most sends a
/// crash can repeat per target.
pub const WINDOW: usize = 64;

/// What an attempt leads to. An attempt sends the first rows in line: one,
/// or up to the target's `batch` as one request; the ops are theirs, in
/// line order.
enum Step {
    /// Delivered or dead-lettered: record them, go on with the next rows.
    Done(Vec<Op>),
    /// Try again later (each op is an [`Op::Retry`]); the rows stay first
    /// in line.
    Retry(Vec<Op>),
    /// The destination is gone: record, then stop sending until the config
    /// changes.
    Disable(Vec<Op>),
    /// Shutting down; the rows stay pending.
    Stop,
}

async fn run_worker(
    shared: Arc<Shared>,
    index: usize,
    stop: CancellationToken,
    abort: CancellationToken,
) {
    let target = &shared.relay.config.targets[index];
    let waker = shared.store.waker(&target.name);
    let mut limiter = TargetLimiter::new(target.rate_limit);
    let mut rng = shared.seed.map_or_else(fastrand::Rng::new, |s| {
        fastrand::Rng::with_seed(s.wrapping_add(index as u64))
    });
    let mut line: std::collections::VecDeque<PendingDelivery> = std::collections::VecDeque::new();
    let mut unconfirmed = std::collections::VecDeque::new();
    let window = WINDOW.max(2 * target.batch);
    let read = BATCH.max(u32::try_from(target.batch).unwrap_or(BATCH));
    // Highest id taken from the store; 0 rescans from the start (replays can
    // put old rows back).
    let mut cursor = 0i64;
    'work: loop {
        if stop.is_cancelled() {
            break;
        }
        if line.is_empty() {
            // Rows past the cursor have no results yet; a rescan from the
            // start must not see a row whose result is still uncommitted.
            if cursor == 0 {
                confirm(&mut unconfirmed).await;
            }
            let batch = match shared.store.pending_batch(&target.name, cursor, read).await {
                Ok(b) => b,
                Err(e) => {
                    error!(target_name = %target.name, error = %e, "cannot read the queue; retrying in 1s");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = stop.cancelled() => break,
                    }
                }
            };
            if batch.is_empty() {
                if cursor != 0 {
                    cursor = 0;
                    continue;
                }
                tokio::select! {
                    () = waker.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    () = stop.cancelled() => break,
                }
                continue;
            }
            cursor = batch.last().map_or(cursor, |d| d.id);
            line.extend(batch);
        }
        let Some(delivery) = line.front() else {
            continue;
        };
        let due_in = delivery.next_attempt_at_ms - shared.clock.now_ms();
        if due_in > 0 {
            tokio::select! {
                biased;
                () = tokio::time::sleep(Duration::from_millis(due_in as u64)) => {}
                // New rows queue behind this one; replays are read once the
                // line is empty and the cursor starts over.
                () = waker.notified() => {}
                () = stop.cancelled() => break,
            }
            continue;
        }
        // The rows that go now: the first, and for a batching target the
        // due rows right after it.
        let now = shared.clock.now_ms();
        let take = line
            .iter()
            .take(target.batch)
            .take_while(|d| d.next_attempt_at_ms <= now)
            .count()
            .max(1);
        // Bounds what a crash can repeat: the rows sent whose results are
        // not yet on disk stay within `window`.
        settle(&mut unconfirmed, window.saturating_sub(take)).await;
        let group = &line.make_contiguous()[..take];
        let span = tracing::info_span!(
            "delivery",
            target_name = %target.name,
            route = %group[0].route,
            delivery = group[0].id,
            attempt = group[0].attempts + 1
        );
        let step = attempt(
            &shared,
            target,
            &mut limiter,
            &mut rng,
            group,
            &stop,
            &abort,
        )
        .instrument(span)
        .await;
        match step {
            Step::Done(ops) => {
                line.drain(..ops.len().min(line.len()));
                if !record_later(&shared, ops, &mut unconfirmed).await {
                    break 'work;
                }
            }
            Step::Retry(ops) => {
                for (row, op) in line.iter_mut().zip(&ops) {
                    if let Op::Retry {
                        attempts,
                        next_attempt_at_ms,
                        ..
                    } = op
                    {
                        row.attempts = *attempts;
                        row.next_attempt_at_ms = *next_attempt_at_ms;
                    }
                }
                if !record_later(&shared, ops, &mut unconfirmed).await {
                    break 'work;
                }
            }
            Step::Disable(ops) => {
                if record_later(&shared, ops, &mut unconfirmed).await {
                    confirm(&mut unconfirmed).await;
                    stop.cancelled().await;
                }
                break;
            }
            Step::Stop => break,
        }
    }
    confirm(&mut unconfirmed).await;
    debug!(target_name = %target.name, "delivery worker stopped");
}

/// Queues results for the next commit; `false` when the store is closed.
async fn record_later(shared: &Shared, ops: Vec<Op>, unconfirmed: &mut Unconfirmed) -> bool {
    for op in ops {
        match shared.store.apply_later(op).await {
            Ok(c) => unconfirmed.push_back(c),
            Err(_) => return false,
        }
    }
    true
}

/// Results queued for a commit, oldest first.
type Unconfirmed = std::collections::VecDeque<crate::store::Committed>;

/// Waits until every queued result is committed.
async fn confirm(unconfirmed: &mut Unconfirmed) {
    settle(unconfirmed, 0).await;
}

/// Forgets the results already committed, then waits for the oldest until
/// at most `keep` are left. A result that failed to commit leaves its row
/// pending: it is sent again (at-least-once).
async fn settle(unconfirmed: &mut Unconfirmed, keep: usize) {
    while let Some(front) = unconfirmed.front_mut() {
        let outcome = match front.try_take() {
            Some(outcome) => outcome,
            None if unconfirmed.len() > keep => match unconfirmed.pop_front() {
                Some(c) => {
                    report(c.wait().await);
                    continue;
                }
                None => break,
            },
            None => break,
        };
        unconfirmed.pop_front();
        report(outcome);
    }
}

fn report(outcome: Result<u64, StoreError>) {
    match outcome {
        Ok(_) | Err(StoreError::Closed) => {}
        Err(e) => error!(error = %e, "cannot record a delivery result; it will be sent again"),
    }
}

/// One attempt at the first rows in line (`group`, at least one; more
/// only for a batching target): one request, whose answer decides for all.
async fn attempt(
    shared: &Shared,
    target: &Target,
    limiter: &mut TargetLimiter,
    rng: &mut fastrand::Rng,
    group: &[PendingDelivery],
    stop: &CancellationToken,
    abort: &CancellationToken,
) -> Step {
    // Render in line order. A row that cannot be rendered is dead-lettered
    // alone when it comes first; otherwise the group ends before it.
    let mut reqs = Vec::with_capacity(group.len());
    for d in group {
        match prepare(shared, target, d) {
            Ok(r) => reqs.push(r),
            Err(reason) if reqs.is_empty() => {
                error!(target_name = %target.name, route = %d.route, delivery = d.id, error = %reason, "cannot render; dead-lettered");
                return Step::Done(vec![Op::Dead {
                    id: d.id,
                    attempts: d.attempts + 1,
                    status: None,
                    error: reason,
                }]);
            }
            Err(_) => break,
        }
    }
    let group = &group[..reqs.len()];
    let first = &group[0];
    let attempt_no = first.attempts + 1;
    let rows = group.len();
    let req = combine(reqs, target.batch > 1);
    let each = |f: &dyn Fn(&PendingDelivery) -> Op| group.iter().map(f).collect::<Vec<_>>();
    if target.kind == TargetKind::Stdout {
        print_stdout(&req);
        for _ in group {
            shared.metrics.delivery(&target.name, "delivered");
        }
        return Step::Done(each(&|d| Op::Delivered {
            id: d.id,
            attempts: d.attempts + 1,
            status: None,
        }));
    }
    match limiter.wait(stop).await {
        None => return Step::Stop,
        Some(true) => shared.metrics.rate_limited(&target.name, "local"),
        Some(false) => {}
    }
    let started = Instant::now();
    let result = tokio::select! {
        r = shared.transport.send(&req, target.timeout) => r,
        () = abort.cancelled() => {
            warn!(target_name = %target.name, delivery = first.id, rows, "send abandoned at the shutdown deadline; it stays queued");
            return Step::Stop;
        }
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let metrics = &shared.metrics;
    let label = crate::metrics::TargetLabel {
        target: target.name.clone(),
    };
    metrics
        .delivery_duration
        .get_or_create(&label)
        .observe(latency_ms / 1000.0);
    let (outcome, status) = match &result {
        Ok(answer) => {
            let hints = rate_hints(answer, shared.clock.now_ms());
            limiter.observe(answer.status, &hints);
            if answer.status == 429 {
                metrics.rate_limited(&target.name, "remote");
            }
            (classify(target.kind, answer, &hints), Some(answer.status))
        }
        Err(e) => (classify_error(e), None),
    };
    let fields = (
        target.name.as_str(),
        first.route.as_str(),
        first.id,
        attempt_no,
        status.unwrap_or(0),
    );
    let dead = |error: &str| {
        for _ in group {
            metrics.delivery(&target.name, "dead_lettered");
        }
        each(&|d| Op::Dead {
            id: d.id,
            attempts: d.attempts + 1,
            status,
            error: error.to_owned(),
        })
    };
    match outcome {
        Outcome::Delivered => {
            let now = shared.clock.now_ms();
            let e2e_ms = now - first.received_at_ms;
            info!(
                target_name = fields.0,
                route = fields.1,
                delivery = fields.2,
                attempt = fields.3,
                status = fields.4,
                rows,
                latency_ms,
                e2e_ms,
                "delivered"
            );
            let end_to_end = metrics.end_to_end.get_or_create(&label);
            for d in group {
                metrics.delivery(&target.name, "delivered");
                end_to_end.observe((now - d.received_at_ms).max(0) as f64 / 1000.0);
            }
            Step::Done(each(&|d| Op::Delivered {
                id: d.id,
                attempts: d.attempts + 1,
                status,
            }))
        }
        Outcome::Retry { after, reason } => {
            let age =
                Duration::from_millis((shared.clock.now_ms() - first.created_at_ms).max(0) as u64);
            if backoff::give_up(&target.retry, attempt_no as u32, age) {
                error!(target_name = fields.0, route = fields.1, delivery = fields.2, attempt = fields.3, status = fields.4, rows, error = %reason, "giving up; dead-lettered");
                return Step::Done(dead(&reason));
            }
            let delay = backoff::delay(&target.retry, attempt_no as u32, after, rng);
            warn!(target_name = fields.0, route = fields.1, delivery = fields.2, attempt = fields.3, status = fields.4, rows, delay_ms = delay.as_millis() as u64, error = %reason, "retrying");
            for _ in group {
                metrics.delivery(&target.name, "retried");
            }
            let next_attempt_at_ms = shared.clock.now_ms() + delay.as_millis() as i64;
            Step::Retry(each(&|d| Op::Retry {
                id: d.id,
                attempts: d.attempts + 1,
                next_attempt_at_ms,
                status,
                error: reason.clone(),
            }))
        }
        Outcome::Failed {
            reason,
            disable: false,
        } => {
            error!(target_name = fields.0, route = fields.1, delivery = fields.2, attempt = fields.3, status = fields.4, rows, error = %reason, "rejected; dead-lettered");
            Step::Done(dead(&reason))
        }
        Outcome::Failed {
            reason,
            disable: true,
        } => {
            error!(
                target_name = fields.0, route = fields.1, delivery = fields.2, status = fields.4, error = %reason,
                "target disabled: the destination says this webhook does not exist or is not allowed; deliveries stay queued until the config changes (fix the url and restart)"
            );
            let now = shared.clock.now_ms();
            Step::Disable(each(&|d| Op::Retry {
                id: d.id,
                attempts: d.attempts + 1,
                next_attempt_at_ms: now,
                status,
                error: reason.clone(),
            }))
        }
    }
}

/// One request for a group: without batching, the row's request; with it
/// (even for one row, so the receiver always sees one shape), the first's
/// URL and headers with the bodies as one JSON array, in line order.
fn combine(mut reqs: Vec<OutgoingRequest>, batching: bool) -> OutgoingRequest {
    if !batching && reqs.len() == 1 {
        return reqs.remove(0);
    }
    let bodies = reqs
        .iter_mut()
        .map(
            |r| match std::mem::replace(&mut r.body, Body::Json(serde_json::Value::Null)) {
                Body::Json(v) => v,
                Body::Text(t) => serde_json::Value::String(t),
            },
        )
        .collect();
    let mut first = reqs.swap_remove(0);
    first.body = Body::Json(serde_json::Value::Array(bodies));
    first
}

/// The request for `d`; an error (stored event unreadable, template fails)
/// is permanent.
fn prepare(
    shared: &Shared,
    target: &Target,
    d: &PendingDelivery,
) -> Result<OutgoingRequest, String> {
    let value: serde_json::Value =
        serde_json::from_str(&d.body).map_err(|e| format!("stored event is not JSON: {e}"))?;
    let event = Event::from_value(value, d.timestamp_ms)
        .map_err(|e| format!("stored event is invalid: {e}"))?;
    shared
        .relay
        .prepare_for(target, d.template.as_deref(), event.value())
        .map_err(|e| e.to_string())
}

/// The `stdout` target: the rendered message, then a blank line.
fn print_stdout(req: &OutgoingRequest) {
    use std::io::Write;
    let text = match &req.body {
        Body::Text(t) => t.clone(),
        Body::Json(v) => v.to_string(),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}\n");
    let _ = out.flush();
}

/// Sends one request now, outside any queue (for `crisp-relay send`), and
/// says what happened.
pub async fn send_once(
    transport: &dyn Transport,
    target: &Target,
    req: &OutgoingRequest,
) -> (Outcome, Option<Answer>) {
    if target.kind == TargetKind::Stdout {
        print_stdout(req);
        return (Outcome::Delivered, None);
    }
    match transport.send(req, target.timeout).await {
        Ok(answer) => {
            let hints: RateHints = rate_hints(&answer, crate::now_ms());
            (classify(target.kind, &answer, &hints), Some(answer))
        }
        Err(e) => (classify_error(&e), None),
    }
}
