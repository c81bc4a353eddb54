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
use tracing::{Instrument, debug, error};

use super::Context;
use super::conversation::{self, Convs};
use super::decide::decide;
use super::limiter::TargetLimiter;
use super::line::{self, Held, Next};
use super::send::{self, Step, conclude, exchange, prepare, print_stdout, unrenderable};
use crate::config::Target;
use crate::model::{TargetKind, Threads};
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

/// With threads, how many rows a worker may hold while looking past
/// conversations that wait for a retry.
const LINE_MAX: usize = 1024;

/// With threads and `coalesce`, the most queued messages of one
/// conversation offered to one coalesced message (Discord's 10 embeds).
const COALESCE_MAX: usize = 10;

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
    /// A result could not be committed (the database went away, the lease
    /// was lost): the rows stay pending, and a new worker reads them again
    /// in order rather than this one sending past them.
    StoreFailed(String),
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
    let mut line: Vec<PendingDelivery> = Vec::new();
    let mut unconfirmed = Unconfirmed::new();
    let window = WINDOW.max(2 * target.batch);
    let read = READ.max(u32::try_from(target.batch).unwrap_or(READ));
    let chat = (target.bot.is_some() || target.threads == Threads::PerConversation)
        && target.kind != TargetKind::Crisp;
    let threaded = target.threads == Threads::PerConversation;
    let group_max = if threaded && target.coalesce {
        COALESCE_MAX
    } else {
        target.batch
    };
    let mut convs = Convs::default();
    // Highest id taken from the store; 0 rescans from the start (replays can
    // put old rows back).
    let mut cursor = 0i64;
    let mut rescanned = Instant::now();
    // Whether the last read filled its batch (more rows may follow).
    let mut more = false;
    let end = loop {
        if stop.is_cancelled() {
            break End::Stopped;
        }
        let now = ctx.clock.now_ms();
        let held: Vec<Held<'_>> = line
            .iter()
            .map(|d| Held {
                conversation: d.conversation.as_deref().filter(|_| threaded),
                due_at_ms: d.next_attempt_at_ms,
            })
            .collect();
        let next = line::next(&held, now, threaded, group_max);
        // Nothing held, or (with threads) nothing due among what is held
        // while more rows wait in the store: read on. When coalescing, also
        // before sending: a conversation's next rows may be past those held
        // (with 20 conversations interleaved, 64 rows hold about 3 of each).
        let read_on = match &next {
            Next::Empty => true,
            Next::WaitUntil(_) => threaded && more && line.len() < LINE_MAX,
            Next::Send(_) => threaded && target.coalesce && more && line.len() < LINE_MAX,
        };
        if read_on {
            if line.is_empty() {
                if rescanned.elapsed() >= RESCAN {
                    cursor = 0;
                }
                // Rows past the cursor have no results yet; a rescan from
                // the start must not see a row whose result is still
                // uncommitted.
                if cursor == 0 {
                    if let Err(e) = confirm(&mut unconfirmed).await {
                        break End::StoreFailed(e.to_string());
                    }
                    rescanned = Instant::now();
                }
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
            more = batch.len() >= read as usize;
            if batch.is_empty() {
                if line.is_empty() && cursor != 0 {
                    cursor = 0;
                    continue;
                }
                if line.is_empty() {
                    tokio::select! {
                        () = waker.notified() => {}
                        () = tokio::time::sleep(RESCAN) => {}
                        () = stop.cancelled() => break End::Stopped,
                    }
                }
                continue;
            }
            cursor = batch.last().map_or(cursor, |d| d.id);
            line.extend(batch);
            continue;
        }
        let indices = match next {
            Next::Send(indices) => indices,
            Next::WaitUntil(at) => {
                let due_in = at.saturating_sub(now).max(1);
                tokio::select! {
                    biased;
                    () = tokio::time::sleep(Duration::from_millis(due_in.unsigned_abs())) => {}
                    // New rows queue behind; with threads they may be due.
                    () = waker.notified() => { more = true; }
                    () = stop.cancelled() => break End::Stopped,
                }
                continue;
            }
            Next::Empty => continue,
        };
        // Bounds what a crash can repeat: the rows sent whose results are
        // not yet on disk stay within `window`.
        if let Err(e) = settle(&mut unconfirmed, window.saturating_sub(indices.len())).await {
            break End::StoreFailed(e.to_string());
        }
        let group: Vec<&PendingDelivery> = indices.iter().map(|&i| &line[i]).collect();
        let span = tracing::info_span!(
            "delivery",
            target_name = %target.name,
            route = %group[0].route,
            delivery = group[0].id,
            attempt = group[0].attempts + 1
        );
        let step = if chat {
            conversation::attempt(
                &ctx,
                target,
                &mut limiter,
                &mut rng,
                &group,
                &mut convs,
                &stop,
                &abort,
            )
            .instrument(span)
            .await
        } else if target.kind == TargetKind::Crisp {
            super::reply::attempt(
                &ctx,
                target,
                &mut limiter,
                &mut rng,
                group[0],
                &stop,
                &abort,
            )
            .instrument(span)
            .await
        } else {
            attempt(&ctx, target, &mut limiter, &mut rng, &group, &stop, &abort)
                .instrument(span)
                .await
        };
        let recorded = match step {
            Step::Done(ops) => {
                let done: Vec<i64> = ops.iter().filter_map(op_id).collect();
                line.retain(|r| !done.contains(&r.id));
                record_later(&ctx, ops, &mut unconfirmed).await
            }
            Step::Retry(ops) => {
                for op in &ops {
                    if let Op::Retry {
                        id,
                        attempts,
                        next_attempt_at_ms,
                        ..
                    } = op
                        && let Some(row) = line.iter_mut().find(|r| r.id == *id)
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
    let _ = confirm(&mut unconfirmed).await;
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

/// Waits until every queued result is committed; the first that failed.
async fn confirm(unconfirmed: &mut Unconfirmed) -> Result<(), StoreError> {
    settle(unconfirmed, 0).await
}

/// Forgets the results already committed, then waits for the oldest until
/// at most `keep` are left. A result that failed to commit leaves its row
/// pending: it is sent again (at-least-once); the first such failure is
/// returned, so that the worker stops rather than sending past it.
async fn settle(unconfirmed: &mut Unconfirmed, keep: usize) -> Result<(), StoreError> {
    let mut failed = None;
    while let Some(front) = unconfirmed.front_mut() {
        let outcome = match front.try_take() {
            Some(outcome) => outcome,
            None if unconfirmed.len() > keep => match unconfirmed.pop_front() {
                Some(c) => {
                    report(c.wait().await, &mut failed);
                    continue;
                }
                None => break,
            },
            None => break,
        };
        unconfirmed.pop_front();
        report(outcome, &mut failed);
    }
    failed.map_or(Ok(()), Err)
}

fn report(outcome: Result<u64, StoreError>, failed: &mut Option<StoreError>) {
    match outcome {
        Ok(_) | Err(StoreError::Closed) => {}
        Err(e) => {
            error!(error = %e, "cannot record a delivery result; it will be sent again");
            failed.get_or_insert(e);
        }
    }
}

/// One attempt at the first rows in line (`group`, at least one; more
/// only for a batching target): one request, whose answer decides for all.
async fn attempt(
    ctx: &Context,
    target: &Target,
    limiter: &mut TargetLimiter,
    rng: &mut fastrand::Rng,
    group: &[&PendingDelivery],
    stop: &CancellationToken,
    abort: &CancellationToken,
) -> Step {
    // Render in line order. A row that cannot be rendered is dead-lettered
    // alone when it comes first; otherwise the group ends before it.
    let mut reqs = Vec::with_capacity(group.len());
    for d in group {
        match prepare(ctx, target, d) {
            Ok(r) => reqs.push(r),
            Err(reason) if reqs.is_empty() => return unrenderable(ctx, target, d, reason),
            Err(_) => break,
        }
    }
    let group = &group[..reqs.len()];
    let rows = send::rows(group);
    let req = combine(reqs, target.batch > 1);
    if target.kind == TargetKind::Stdout {
        let at_ms = ctx.clock.now_ms();
        print_stdout(&req);
        for _ in group {
            ctx.metrics.delivery(&target.name, "delivered");
        }
        return Step::Done(
            rows.iter()
                .map(|r| Op::Delivered {
                    id: r.id,
                    attempts: r.attempts + 1,
                    status: None,
                    at_ms,
                    latency_ms: None,
                })
                .collect(),
        );
    }
    let Some(x) = exchange(ctx, target, limiter, &req, stop, abort).await else {
        return Step::Stop;
    };
    let d = decide(
        target.kind,
        &target.retry,
        x.result.as_ref(),
        &x.hints,
        &rows,
        x.now_ms,
        rng,
    );
    conclude(ctx, target, group, d, &x)
}

/// The row an op is about.
fn op_id(op: &Op) -> Option<i64> {
    match op {
        Op::Delivered { id, .. } | Op::Retry { id, .. } | Op::Dead { id, .. } => Some(*id),
        _ => None,
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
