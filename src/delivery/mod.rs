//! Delivery: draining the store to the destinations.
//!
//! Owns one supervised worker per enabled target (`worker`: the I/O shell
//! that reads the target's queue in order, renders, paces, sends and
//! records) around the pure pieces: what an answer means (`classify`), what
//! to record and how long to wait (`decide`), the backoff schedule
//! (`backoff`) and pacing (`limiter`). Each worker runs under a supervisor
//! (`supervise`) that restarts it, with backoff, if it ends unexpectedly (a
//! panic, a store error), and keeps [`TargetStates`] and the `target_up`
//! metric true.
//!
//! Must not: accept events (the server does), decide escaping and limits
//! (render and targets do), or read the system time (the [`Clock`] in
//! [`Context`] is the store's).

pub mod backoff;
pub mod classify;
pub mod codes;
mod conversation;
pub mod decide;
pub mod limiter;
pub mod line;
mod reply;
mod send;
mod supervise;
pub mod transport;
pub mod worker;

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use supervise::{TargetState, TargetStates};
pub use worker::WINDOW;

use crate::app::Relay;
use crate::clock::Clock;
use crate::config::Target;
use crate::metrics::Metrics;
use crate::model::TargetKind;
use crate::store::Store;
use crate::targets::OutgoingRequest;
use classify::{Answer, Outcome, classify, classify_error, rate_hints};
use limiter::Limiters;
use transport::Transport;

/// What every worker shares.
#[derive(Clone)]
pub struct Context {
    pub relay: Arc<Relay>,
    pub store: Arc<dyn Store>,
    pub transport: Arc<dyn Transport>,
    pub clock: Clock,
    /// Seeds the backoff jitter (tests); `None`: random.
    pub seed: Option<u64>,
    pub metrics: Arc<Metrics>,
    /// Pacing state, kept across reloads.
    pub limiters: Limiters,
    /// What each target's worker is doing, for `/readyz`.
    pub states: TargetStates,
}

/// The running workers' supervisors.
pub struct Engine {
    handles: Vec<JoinHandle<()>>,
}

impl Engine {
    /// Starts a supervised worker per enabled target. `stop`: take no new
    /// work; `abort`: give up sends in flight (the shutdown deadline).
    pub fn start(ctx: Arc<Context>, stop: CancellationToken, abort: CancellationToken) -> Self {
        let cfg = &ctx.relay.config;
        ctx.states.reset(cfg, &ctx.metrics);
        ctx.limiters.retain(
            &cfg.targets
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
        );
        let mut handles = Vec::new();
        for (index, target) in cfg.targets.iter().enumerate() {
            if !target.enabled {
                continue;
            }
            info!(target_name = %target.name, kind = %target.kind, "delivery worker started");
            handles.push(tokio::spawn(supervise::supervise(
                ctx.clone(),
                index,
                stop.clone(),
                abort.clone(),
            )));
        }
        Self { handles }
    }

    /// Waits for every worker to stop.
    pub async fn join(self) {
        for h in self.handles {
            let _ = h.await;
        }
    }
}

/// Sends one request now, outside any queue (for `crisp-relay send`), and
/// says what happened. `now_ms` resolves an HTTP date in the answer.
pub async fn send_once(
    transport: &dyn Transport,
    target: &Target,
    req: &OutgoingRequest,
    now_ms: i64,
) -> (Outcome, Option<Answer>) {
    if target.kind == TargetKind::Stdout {
        send::print_stdout(req);
        return (Outcome::Delivered, None);
    }
    match transport.send(req, target.timeout).await {
        Ok(answer) => {
            let hints = rate_hints(&answer, now_ms, target.retry.max_backoff);
            (classify(target.kind, &answer, &hints), Some(answer))
        }
        Err(e) => (classify_error(&e), None),
    }
}
