//! One target's worker: the I/O shell of the delivery path. It reads the
//! target's queue in order, waits until the first row is due, renders it,
//! waits for the target's limiter, sends, hands the result to the pure
//! [`decide`], records the ops and logs the outcome.
//!
//! Results are committed in groups while the next rows are sent (at most
//! [`WINDOW`] uncommitted at once), so a fast destination is not held to one
//! commit per send. A row waiting for a retry holds back later rows to the
//! same target, and no other target. Rows stay `pending` while in flight:
//! after a crash, the send in flight and those whose results were not yet
//! committed are repeated (at-least-once).
//!
//! Must not: decide what an answer means (that is `decide`), escape or fit
//! bodies (render and targets do), or outlive its supervisor's stop.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, warn};

use super::Context;
use super::classify::{RateHints, rate_hints};
use super::decide::{Row, Verdict, decide};
use super::limiter::TargetLimiter;
use crate::config::Target;
use crate::event::Event;
use crate::model::TargetKind;
use crate::store::{Committed, Op, PendingDelivery, StoreError};
use crate::targets::{Body, OutgoingRequest};

/// How often an idle worker looks at the store even without a wake-up
/// (replays made by another process, e.g. `crisp-relay deadletters replay`),
/// and how often a busy one reads its queue from the start again: it reads
/// ahead past the last row it took, so rows put back behind that point
/// (replays, `queue move`) are seen within this, even under a backlog.
const RESCAN: Duration = Duration::from_secs(5);

/// Rows a worker reads at once (or its target's `batch`, if larger).
const READ: u32 = 64;

/// Results a worker may have sent but not yet committed. Sends go on while
/// earlier results wait for the store's next group commit, which matters
/// when commits are slow (an fsync behind a burst of ingest) and the
/// destination fast; a rate-limited target's results are committed long
/// before its next send, so for it this is one. Also the most sends a
/// crash can repeat per target.
pub const WINDOW: usize = 64;

/// How a worker ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Asked to stop (reload or shutdown).
    Stopped,
    /// The destination refuses the target: paused until the config changes.
    Paused(String),
    /// The store is closed: the relay is shutting down.
    StoreClosed,
}

/// What an attempt leads to.
enum Step {
    /// Delivered or dead-lettered: record, go on with the next rows.
    Done(Vec<Op>),
    /// Try again later (each op is an [`Op::Retry`]); the rows stay first.
    Retry(Vec<Op>),
    /// The destination refuses the target: record, then stop.
    Pause(Vec<Op>, String),
    /// Shutting down; the rows stay pending.
    Stop,
}

/// Runs the worker for `ctx.relay.config.targets[index]` until `stop`.
/// `abort`: give up a send in flight (the shutdown deadline).
pub async fn run(
    ctx: Arc<Context>,
    index: usize,
    stop: CancellationToken,
    abort: CancellationToken,
) -> End {
    let target = &ctx.relay.config.targets[index];
    let limiter = ctx.limiters.for_target(target);
    let mut limiter = limiter.lock_owned().await;
    let waker = ctx.store.waker(&target.name);
    let filter = ctx.relay.template_filter(target);
    let mut rng = ctx.seed.map_or_else(fastrand::Rng::new, |s| {
        fastrand::Rng::with_seed(s.wrapping_add(index as u64))
    });
    let mut line: VecDeque<PendingDelivery> = VecDeque::new();
    let mut unconfirmed = Unconfirmed::new();
    let window = WINDOW.max(2 * target.batch);
    let read = READ.max(u32::try_from(target.batch).unwrap_or(READ));
    // Highest id taken from the store; 0 rescans from the start (replays can
    // put old rows back).
    let mut cursor = 0i64;
    let mut rescanned = Instant::now();
    let end = loop {
        if stop.is_cancelled() {
            break End::Stopped;
        }
        if line.is_empty() {
            if rescanned.elapsed() >= RESCAN {
                cursor = 0;
            }
            // Rows past the cursor have no results yet; a rescan from the
            // start must not see a row whose result is still uncommitted.
            if cursor == 0 {
                confirm(&mut unconfirmed).await;
                rescanned = Instant::now();
            }
            let batch = match ctx.store.pending(&target.name, cursor, read, &filter).await {
                Ok(b) => b,
                Err(StoreError::Closed) => break End::StoreClosed,
                Err(e) => {
                    error!(target_name = %target.name, error = %e, "cannot read the queue; retrying in 1s");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = stop.cancelled() => break End::Stopped,
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
                    () = tokio::time::sleep(RESCAN) => {}
                    () = stop.cancelled() => break End::Stopped,
                }
                continue;
            }
            cursor = batch.last().map_or(cursor, |d| d.id);
            line.extend(batch);
        }
        let Some(first) = line.front() else {
            continue;
        };
        let due_in = first.next_attempt_at_ms.saturating_sub(ctx.clock.now_ms());
        if due_in > 0 {
            tokio::select! {
                biased;
                () = tokio::time::sleep(Duration::from_millis(due_in.unsigned_abs())) => {}
                // New rows queue behind this one; replays are read once the
                // line is empty and the cursor starts over.
                () = waker.notified() => {}
                () = stop.cancelled() => break End::Stopped,
            }
            continue;
        }
        // The rows that go now: the first, and for a batching target the
        // due rows right after it.
        let now = ctx.clock.now_ms();
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
        let step = attempt(&ctx, target, &mut limiter, &mut rng, group, &stop, &abort)
            .instrument(span)
            .await;
        let recorded = match step {
            Step::Done(ops) => {
                line.drain(..ops.len().min(line.len()));
                record_later(&ctx, ops, &mut unconfirmed).await
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
                record_later(&ctx, ops, &mut unconfirmed).await
            }
            Step::Pause(ops, reason) => {
                if record_later(&ctx, ops, &mut unconfirmed).await {
                    break End::Paused(reason);
                }
                false
            }
            Step::Stop => break End::Stopped,
        };
        if !recorded {
            break End::StoreClosed;
        }
    };
    confirm(&mut unconfirmed).await;
    debug!(target_name = %target.name, ?end, "delivery worker stopped");
    end
}

/// Results queued for a commit, oldest first.
type Unconfirmed = VecDeque<Committed>;

/// Queues results for the next commit; `false` when the store is closed.
async fn record_later(ctx: &Context, ops: Vec<Op>, unconfirmed: &mut Unconfirmed) -> bool {
    for op in ops {
        match ctx.store.apply_later(op).await {
            Ok(c) => unconfirmed.push_back(c),
            Err(_) => return false,
        }
    }
    true
}

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
    ctx: &Context,
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
        match prepare(ctx, target, d) {
            Ok(r) => reqs.push(r),
            Err(reason) if reqs.is_empty() => {
                error!(target_name = %target.name, route = %d.route, delivery = d.id, error = %reason, "cannot render; dead-lettered");
                ctx.metrics.delivery(&target.name, "dead_lettered");
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
    let rows: Vec<Row> = group
        .iter()
        .map(|d| Row {
            id: d.id,
            attempts: d.attempts,
            queued_at_ms: d.queued_at_ms,
        })
        .collect();
    let req = combine(reqs, target.batch > 1);
    let metrics = &ctx.metrics;
    if target.kind == TargetKind::Stdout {
        print_stdout(&req);
        for _ in group {
            metrics.delivery(&target.name, "delivered");
        }
        return Step::Done(
            rows.iter()
                .map(|r| Op::Delivered {
                    id: r.id,
                    attempts: r.attempts + 1,
                    status: None,
                })
                .collect(),
        );
    }
    match limiter.wait(stop).await {
        None => return Step::Stop,
        Some(true) => metrics.rate_limited(&target.name, "local"),
        Some(false) => {}
    }
    let started = Instant::now();
    let result = tokio::select! {
        r = ctx.transport.send(&req, target.timeout) => r,
        () = abort.cancelled() => {
            warn!(target_name = %target.name, delivery = first.id, rows = rows.len(), "send abandoned at the shutdown deadline; it stays queued");
            return Step::Stop;
        }
    };
    let latency = started.elapsed();
    metrics.observe_send(&target.name, latency);
    let now = ctx.clock.now_ms();
    let hints = match &result {
        Ok(answer) => {
            let hints = rate_hints(answer, now, target.retry.max_backoff);
            limiter.observe(answer.status, &hints);
            if answer.status == 429 {
                metrics.rate_limited(&target.name, "remote");
            }
            hints
        }
        Err(_) => RateHints::default(),
    };
    let d = decide(
        target.kind,
        &target.retry,
        result.as_ref(),
        &hints,
        &rows,
        now,
        rng,
    );
    let (name, route, id, attempt_no, n) = (
        target.name.as_str(),
        first.route.as_str(),
        first.id,
        first.attempts + 1,
        rows.len(),
    );
    let status = d.status.unwrap_or(0);
    match d.verdict {
        Verdict::Delivered => {
            let latency_ms = latency.as_secs_f64() * 1000.0;
            let e2e_ms = now - first.received_at_ms;
            info!(
                target_name = name,
                route,
                delivery = id,
                attempt = attempt_no,
                status,
                rows = n,
                latency_ms,
                e2e_ms,
                "delivered"
            );
            for d in group {
                metrics.delivered(&target.name, (now - d.received_at_ms).max(0));
            }
            Step::Done(d.ops)
        }
        Verdict::Retry { delay, reason } => {
            warn!(target_name = name, route, delivery = id, attempt = attempt_no, status, rows = n, delay_ms = delay.as_millis() as u64, error = %reason, "retrying");
            for _ in group {
                metrics.delivery(&target.name, "retried");
            }
            Step::Retry(d.ops)
        }
        Verdict::Dead { reason, gave_up } => {
            let what = if gave_up {
                "giving up; dead-lettered"
            } else {
                "rejected; dead-lettered"
            };
            error!(target_name = name, route, delivery = id, attempt = attempt_no, status, rows = n, error = %reason, "{what}");
            for _ in group {
                metrics.delivery(&target.name, "dead_lettered");
            }
            Step::Done(d.ops)
        }
        // Without a thread to replace, a channel that is gone pauses the
        // target like any refusal.
        Verdict::ThreadGone { reason } | Verdict::Pause { reason } => {
            error!(
                target_name = name, route, delivery = id, status, error = %reason,
                "target paused: the destination refuses this target (gone, or its credentials are refused); deliveries stay queued until the config changes (fix it, then reload)"
            );
            Step::Pause(d.ops, reason)
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
fn prepare(ctx: &Context, target: &Target, d: &PendingDelivery) -> Result<OutgoingRequest, String> {
    let value: serde_json::Value =
        serde_json::from_str(&d.body).map_err(|e| format!("stored event is not JSON: {e}"))?;
    let event = Event::from_value(value, d.timestamp_ms)
        .map_err(|e| format!("stored event is invalid: {e}"))?;
    ctx.relay
        .prepare_for(target, d.template.as_deref(), event.value())
        .map_err(|e| e.to_string())
}

/// The `stdout` target: the rendered message, then a blank line.
pub(super) fn print_stdout(req: &OutgoingRequest) {
    use std::io::Write;
    let text = match &req.body {
        Body::Text(t) => t.clone(),
        Body::Json(v) => v.to_string(),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}\n");
    let _ = out.flush();
}
