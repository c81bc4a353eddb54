//! Supervision of the workers: every worker's end is observed. A worker
//! that ends unexpectedly (a panic, the store failing under it) is logged
//! at `error`, counted (`crisp_relay_worker_restarts_total`), shown as down
//! (`crisp_relay_target_up` 0, `/readyz`), and restarted with backoff. Before
//! the new worker reads the queue, the results the old one queued are
//! committed (a store barrier), so nothing it held is lost or reordered:
//! its rows are still pending, in order, and are read again from the start.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::Context;
use super::worker::{self, End};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::fenced::FencedStore;

/// First wait before restarting a worker that ended unexpectedly; doubles
/// with each restart in a row, up to [`RESTART_MAX`].
const RESTART_FIRST: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(60);
/// A worker that ran this long before failing starts the backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// What a target's worker is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    Running,
    /// The destination refused the target itself; waiting for a reload.
    Paused {
        reason: String,
    },
    /// The worker ended unexpectedly; restarting after a backoff.
    Down {
        reason: String,
        restarts: u32,
    },
    /// Switched off in the configuration (empty url, `enabled: false`).
    Disabled,
    /// Another replica holds the target's lease and runs its worker; this
    /// one takes over if that lease expires.
    Standby,
}

impl TargetState {
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running)
    }

    /// Whether the target is served: its worker runs here, or on another
    /// replica (`target_up` is 1 for both).
    pub fn is_served(&self) -> bool {
        matches!(self, Self::Running | Self::Standby)
    }

    /// A short word for the state (`/readyz`, logs).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused { .. } => "paused",
            Self::Down { .. } => "down",
            Self::Disabled => "disabled",
            Self::Standby => "standby",
        }
    }
}

/// Every configured target's state, shared by the supervisors (writers) and
/// the admin listener (reader).
#[derive(Debug, Clone, Default)]
pub struct TargetStates(Arc<RwLock<BTreeMap<String, TargetState>>>);

impl TargetStates {
    /// The states of the targets not running, by name.
    pub fn not_running(&self) -> Vec<(String, TargetState)> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, s)| !s.is_running())
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect()
    }

    /// Every target's state, by name.
    pub fn all(&self) -> Vec<(String, TargetState)> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect()
    }

    pub fn get(&self, target: &str) -> Option<TargetState> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(target)
            .cloned()
    }

    pub(super) fn set(&self, metrics: &Metrics, target: &str, state: TargetState) {
        metrics.target_up(target, state.is_served());
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target.to_owned(), state);
    }

    /// The targets of `cfg`: enabled ones start as running, the others are
    /// disabled; targets no longer configured are forgotten.
    pub(super) fn reset(&self, cfg: &Config, metrics: &Metrics) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|name, _| {
            let kept = cfg.target_index(name).is_some();
            if !kept {
                metrics.forget_target_up(name);
            }
            kept
        });
        for t in &cfg.targets {
            let state = if t.enabled {
                TargetState::Running
            } else {
                TargetState::Disabled
            };
            metrics.target_up(&t.name, state.is_running());
            map.insert(t.name.clone(), state);
        }
    }
}

/// The wait before restart number `restarts` (0-based) in a row.
pub(super) fn restart_delay(restarts: u32) -> Duration {
    RESTART_FIRST
        .saturating_mul(1u32 << restarts.min(16))
        .min(RESTART_MAX)
}

/// Runs the worker of target `index` until `stop`, while this process
/// holds the target's lease (at once on SQLite; with several replicas on
/// PostgreSQL, only one runs it at a time). The worker writes through the
/// lease's fence; when the lease is lost it is stopped at once, and this
/// waits to take the lease again.
pub(super) async fn supervise(
    ctx: Arc<Context>,
    index: usize,
    stop: CancellationToken,
    abort: CancellationToken,
) {
    let name = ctx.relay.config.targets[index].name.clone();
    let lease_name = format!("target:{name}");
    loop {
        let standby = || ctx.states.set(&ctx.metrics, &name, TargetState::Standby);
        let Some(held) = crate::lease::hold(&ctx.store, &lease_name, &stop, standby).await else {
            return;
        };
        ctx.metrics.lease_held(&lease_name, true);
        let fenced = Arc::new(Context {
            store: Arc::new(FencedStore::new(ctx.store.clone(), held.fence().clone())),
            ..(*ctx).clone()
        });
        // The worker stops on shutdown, or at once when the lease is lost.
        let (wstop, wabort) = (stop.child_token(), abort.child_token());
        let watch = {
            let (lost, wstop, wabort) = (held.lost().clone(), wstop.clone(), wabort.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = lost.cancelled() => { wstop.cancel(); wabort.cancel(); }
                    () = wstop.cancelled() => {}
                }
            })
        };
        run_restarting(fenced, index, &name, wstop, wabort).await;
        watch.abort();
        ctx.metrics.lease_held(&lease_name, false);
        if stop.is_cancelled() {
            held.release(ctx.store.as_ref()).await;
            return;
        }
        // Lost: what the worker queued is settled (refused by the fence, or
        // committed while the lease held) before waiting for it again.
        if let Err(e) = ctx.store.barrier().await {
            warn!(target_name = %name, error = %e, "cannot confirm the stopped worker's results; some may be sent again");
        }
        drop(held);
        ctx.states.set(&ctx.metrics, &name, TargetState::Standby);
    }
}

/// Runs the worker of target `index` until `stop`, restarting it whenever
/// it ends unexpectedly.
async fn run_restarting(
    ctx: Arc<Context>,
    index: usize,
    name: &str,
    stop: CancellationToken,
    abort: CancellationToken,
) {
    let name = name.to_owned();
    let mut restarts = 0u32;
    loop {
        ctx.states.set(&ctx.metrics, &name, TargetState::Running);
        let started = Instant::now();
        let ended =
            tokio::spawn(worker::run(ctx.clone(), index, stop.clone(), abort.clone())).await;
        let reason = match ended {
            Ok(End::Stopped) => return,
            Ok(End::StoreClosed) if stop.is_cancelled() => return,
            Ok(End::Paused(reason)) => {
                ctx.states
                    .set(&ctx.metrics, &name, TargetState::Paused { reason });
                stop.cancelled().await;
                return;
            }
            Ok(End::StoreClosed) => "the store was closed under it".to_owned(),
            Ok(End::StoreFailed(e)) if stop.is_cancelled() => {
                warn!(target_name = %name, error = %e, "a result was not recorded while stopping; it will be sent again");
                return;
            }
            Ok(End::StoreFailed(e)) => format!("cannot record results: {e}"),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                format!("panicked: {text}")
            }
            Err(e) => format!("was cancelled: {e}"),
        };
        if stop.is_cancelled() {
            return;
        }
        if started.elapsed() >= HEALTHY_RUN {
            restarts = 0;
        }
        let delay = restart_delay(restarts);
        restarts = restarts.saturating_add(1);
        error!(target_name = %name, reason = %reason, restarts, retry_in_ms = delay.as_millis() as u64, "delivery worker ended unexpectedly; restarting it");
        ctx.metrics.worker_restart(&name);
        ctx.states.set(
            &ctx.metrics,
            &name,
            TargetState::Down {
                reason: reason.clone(),
                restarts,
            },
        );
        // What the old worker queued is committed before the new one reads.
        if let Err(e) = ctx.store.barrier().await {
            warn!(target_name = %name, error = %e, "cannot confirm the stopped worker's results; some may be sent again");
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
        info!(target_name = %name, "delivery worker restarted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(targets: &str) -> Config {
        let yaml = format!(
            "server: {{keys: [k]}}\ntargets:\n{targets}routes:\n  - {{name: all, to: [a]}}\n"
        );
        Config::parse(&yaml, "t.yaml", std::path::Path::new("."), &|_| None).unwrap()
    }

    /// States and `target_up` follow the configuration: a target removed by
    /// a reload loses its series instead of showing its last value forever.
    #[test]
    fn states_follow_the_configuration() {
        let metrics = Metrics::new();
        let states = TargetStates::default();
        states.reset(
            &config("  a: {kind: stdout}\n  b: {kind: stdout, enabled: false}\n"),
            &metrics,
        );
        assert_eq!(states.get("a"), Some(TargetState::Running));
        assert_eq!(
            states.not_running(),
            vec![("b".to_owned(), TargetState::Disabled)]
        );
        let text = metrics.render();
        assert!(
            text.contains("crisp_relay_target_up{target=\"a\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("crisp_relay_target_up{target=\"b\"} 0"),
            "{text}"
        );
        states.reset(&config("  a: {kind: stdout}\n"), &metrics);
        assert_eq!(states.get("b"), None);
        let text = metrics.render();
        assert!(!text.contains("target=\"b\""), "{text}");
    }

    #[test]
    fn restart_backoff_doubles_to_a_minute() {
        let secs: Vec<u64> = (0..9).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(restart_delay(u32::MAX), RESTART_MAX);
    }
}
