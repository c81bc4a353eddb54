//! Per-target figures over the last hour (delivered, failed, 429s), from
//! the metrics' totals: a ring of [`SLOTS`] samples, one a minute, taken by
//! [`run_sampler`] on the relay's [`Clock`]. The figure for the last hour is
//! the total now minus the total in the newest sample at least an hour old
//! ([`last_hour`], pure and table-tested); while the process is younger
//! than an hour, the first sample (taken at start, near zero) stands in.
//!
//! Lock-light: the sampler holds the lock to push one sample a minute, a
//! reader to copy a few numbers; never across an `.await`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::{Metrics, TargetTotals};

/// Samples kept: an hour of minutes, plus the one an hour back.
pub const SLOTS: usize = 61;

/// How often a sample is taken.
pub const EVERY: Duration = Duration::from_secs(60);

const HOUR_MS: i64 = 3600 * 1000;

/// One sample: when, and each target's totals then.
#[derive(Debug, Clone, Default)]
struct Sample {
    at_ms: i64,
    totals: Vec<(String, TargetTotals)>,
}

/// The ring of samples.
#[derive(Debug, Default, Clone)]
pub struct Window {
    samples: Arc<Mutex<VecDeque<Sample>>>,
}

impl Window {
    /// Records every target's totals at `at_ms`, dropping the oldest sample
    /// beyond [`SLOTS`].
    pub fn record(&self, at_ms: i64, totals: Vec<(String, TargetTotals)>) {
        let mut ring = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == SLOTS {
            ring.pop_front();
        }
        ring.push_back(Sample { at_ms, totals });
    }

    /// `target`'s counts over the last hour, given its totals `now`.
    pub fn last_hour(&self, target: &str, now_ms: i64, now: TargetTotals) -> TargetTotals {
        let points: Vec<(i64, TargetTotals)> = self
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|s| {
                let t = s
                    .totals
                    .iter()
                    .find(|(n, _)| n == target)
                    .map(|(_, t)| *t)
                    .unwrap_or_default();
                (s.at_ms, t)
            })
            .collect();
        let pick = |f: fn(&TargetTotals) -> u64| {
            let series: Vec<(i64, u64)> = points.iter().map(|(at, t)| (*at, f(t))).collect();
            last_hour(&series, now_ms, f(&now))
        };
        TargetTotals {
            delivered: pick(|t| t.delivered),
            failed: pick(|t| t.failed),
            throttled: pick(|t| t.throttled),
        }
    }
}

/// How much a counter grew over the last hour: `current` minus the value in
/// the newest sample taken at least an hour before `now_ms`; with none that
/// old, minus the oldest sample (the process is younger than an hour); with
/// no sample at all, `current` (counters start at zero). Samples are oldest
/// first. A counter never goes down; if a sample is above `current` (a
/// restart's reset), the answer is 0, not a wrap.
pub fn last_hour(samples: &[(i64, u64)], now_ms: i64, current: u64) -> u64 {
    let cutoff = now_ms.saturating_sub(HOUR_MS);
    let base = samples
        .iter()
        .rev()
        .find(|(at, _)| *at <= cutoff)
        .or_else(|| samples.first())
        .map_or(0, |(_, v)| *v);
    current.saturating_sub(base)
}

/// Takes a sample at once, then every [`EVERY`], until `stop`.
pub async fn run_sampler(
    window: Window,
    metrics: Arc<Metrics>,
    targets: impl Fn() -> Vec<String> + Send + 'static,
    clock: Clock,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let totals = targets()
            .into_iter()
            .map(|t| {
                let totals = metrics.target_totals(&t);
                (t, totals)
            })
            .collect();
        window.record(clock.now_ms(), totals);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000;

    #[test]
    fn last_hour_table() {
        let t0 = 1_750_000_000_000;
        let minutes = |n: i64, step: u64| -> Vec<(i64, u64)> {
            (0..n).map(|i| (t0 + i * M, i as u64 * step)).collect()
        };
        // (what, samples, now, current total, expected)
        type Case = (&'static str, Vec<(i64, u64)>, i64, u64, u64);
        let cases: Vec<Case> = vec![
            ("no samples: all since start", vec![], t0, 5, 5),
            (
                "younger than an hour: since the first sample",
                vec![(t0, 2)],
                t0 + 10 * M,
                9,
                7,
            ),
            ("exactly an hour back", minutes(61, 1), t0 + 60 * M, 60, 60),
            (
                "the newest sample an hour old wins",
                minutes(61, 1),
                t0 + 60 * M + 30_000,
                61,
                61,
            ),
            (
                "a full ring, later",
                minutes(61, 2),
                t0 + 70 * M,
                130,
                130 - 20,
            ),
            ("nothing happened", minutes(61, 0), t0 + 61 * M, 0, 0),
            (
                "a sample above the total: 0, never a wrap",
                vec![(t0, 10)],
                t0 + 2 * M,
                3,
                0,
            ),
        ];
        for (what, samples, now, current, want) in cases {
            assert_eq!(last_hour(&samples, now, current), want, "{what}");
        }
    }

    #[test]
    fn the_ring_keeps_61_samples_and_reads_per_target() {
        let w = Window::default();
        let t0 = 1_750_000_000_000;
        for i in 0..100u64 {
            let totals = TargetTotals {
                delivered: i,
                failed: i / 2,
                throttled: 0,
            };
            w.record(t0 + i as i64 * M, vec![("a".into(), totals)]);
        }
        assert_eq!(w.samples.lock().unwrap().len(), SLOTS);
        let now = TargetTotals {
            delivered: 100,
            failed: 50,
            throttled: 3,
        };
        let got = w.last_hour("a", t0 + 100 * M, now);
        assert_eq!(got.delivered, 60, "{got:?}");
        assert_eq!(got.failed, 30, "{got:?}");
        // A target the samples do not know counted from zero.
        assert_eq!(w.last_hour("b", t0 + 100 * M, now).throttled, 3);
    }
}
