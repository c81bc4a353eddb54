//! The I/O of one attempt, shared by the plain worker (`worker`) and the
//! conversation-aware one (`conversation`): rendering a row, waiting for the
//! limiter and sending (`exchange`), and turning the pure decision into what
//! the worker records, with its log line and metrics (`conclude`).

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::Context;
use super::classify::{Answer, RateHints, TransportError, rate_hints};
use super::decide::{Decision, Row, Verdict};
use super::limiter::TargetLimiter;
use crate::config::Target;
use crate::event::Event;
use crate::store::{Op, PendingDelivery};
use crate::targets::{Body, OutgoingRequest};

/// What an attempt leads to.
pub(super) enum Step {
    /// Delivered or dead-lettered: record, go on with the next rows.
    Done(Vec<Op>),
    /// Try again later (each op is an [`Op::Retry`]); the rows stay first.
    Retry(Vec<Op>),
    /// The destination refuses the target: record, then stop.
    Pause(Vec<Op>, String),
    /// Shutting down; the rows stay pending.
    Stop,
}

/// A request's answer (or the failure to get one), read for rate hints.
pub(super) struct Exchanged {
    pub result: Result<Answer, TransportError>,
    pub hints: RateHints,
    pub latency: Duration,
    /// When the send started, by the relay's clock; `None`: nothing was
    /// sent (the request could not be built).
    pub started_ms: Option<i64>,
    /// When the answer (or the failure) came, by the relay's clock.
    pub now_ms: i64,
}

/// Waits for `limiter`, sends `req` and reads the answer's hints into the
/// limiter. `None`: stopped or aborted first (the rows stay pending).
pub(super) async fn exchange(
    ctx: &Context,
    target: &Target,
    limiter: &mut TargetLimiter,
    req: &OutgoingRequest,
    stop: &CancellationToken,
    abort: &CancellationToken,
) -> Option<Exchanged> {
    let metrics = &ctx.metrics;
    let wait = limiter.wait_reporting(stop, |w| metrics.rate_wait(&target.name, w));
    match wait.await {
        None => return None,
        Some(true) => metrics.rate_limited(&target.name, "local"),
        Some(false) => {}
    }
    let started = Instant::now();
    let started_ms = ctx.clock.now_ms();
    let result = tokio::select! {
        r = ctx.transport.send(req, target.timeout) => r,
        () = abort.cancelled() => {
            warn!(target_name = %target.name, "send abandoned at the shutdown deadline; it stays queued");
            return None;
        }
    };
    let latency = started.elapsed();
    metrics.observe_send(&target.name, latency);
    let now_ms = ctx.clock.now_ms();
    let hints = match &result {
        Ok(answer) => {
            let hints = rate_hints(answer, now_ms, target.retry.max_backoff);
            limiter.observe(answer.status, &hints);
            if answer.status == 429 {
                metrics.rate_limited(&target.name, "remote");
            }
            hints
        }
        Err(_) => RateHints::default(),
    };
    Some(Exchanged {
        result,
        hints,
        latency,
        started_ms: Some(started_ms),
        now_ms,
    })
}

/// The rows as the decision needs them.
pub(super) fn rows(group: &[&PendingDelivery]) -> Vec<Row> {
    group
        .iter()
        .map(|d| Row {
            id: d.id,
            attempts: d.attempts,
            queued_at_ms: d.queued_at_ms,
        })
        .collect()
}

/// Logs and counts decision `d` about `group` after exchange `x`, and says
/// what to record (the attempts stamped with the send's times). A thread
/// gone reaching here (not handled by the caller) pauses.
pub(super) fn conclude(
    ctx: &Context,
    target: &Target,
    group: &[&PendingDelivery],
    d: Decision,
    x: &Exchanged,
) -> Step {
    let (latency, now) = (x.latency, x.now_ms);
    let d = match x.started_ms {
        Some(at) => d.sent(at, now.saturating_sub(at)),
        None => d,
    };
    let metrics = &ctx.metrics;
    let first = group[0];
    let (name, route, id, attempt_no, n) = (
        target.name.as_str(),
        first.route.as_str(),
        first.id,
        first.attempts + 1,
        group.len(),
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

/// The request for `d`; an error (stored event unreadable, template fails)
/// is permanent.
pub(super) fn prepare(
    ctx: &Context,
    target: &Target,
    d: &PendingDelivery,
) -> Result<OutgoingRequest, String> {
    let value: serde_json::Value =
        serde_json::from_str(&d.body).map_err(|e| format!("stored event is not JSON: {e}"))?;
    let event = Event::from_value(value, d.timestamp_ms)
        .map_err(|e| format!("stored event is invalid: {e}"))?;
    ctx.relay
        .prepare_for(target, d.template.as_deref(), event.value())
        .map_err(|e| e.to_string())
}

/// The dead letter of a row that cannot be rendered (logged and counted).
pub(super) fn unrenderable(
    ctx: &Context,
    target: &Target,
    d: &PendingDelivery,
    reason: String,
) -> Step {
    error!(target_name = %target.name, route = %d.route, delivery = d.id, error = %reason, "cannot render; dead-lettered");
    ctx.metrics.delivery(&target.name, "dead_lettered");
    Step::Done(vec![Op::Dead {
        id: d.id,
        attempts: d.attempts + 1,
        status: None,
        error: reason,
        at_ms: ctx.clock.now_ms(),
        latency_ms: None,
    }])
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
