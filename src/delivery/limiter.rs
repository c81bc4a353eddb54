//! Per-target pacing: the configured quota (governor, on a clock driven by
//! tokio's time so paused-clock tests control it) plus what the destination
//! says about itself (Discord's bucket headers, 429 `retry_after`). Every
//! attempt, retries included, passes here.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use super::classify::RateHints;
use crate::model::RateLimit;

/// A governor clock reading tokio's time (which tests can pause).
#[derive(Debug, Clone)]
pub struct TokioClock {
    base: Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.base.elapsed()
    }
}

fn limiter(
    r: RateLimit,
    clock: &TokioClock,
) -> Option<RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>> {
    let interval = r.per.checked_div(r.requests.max(1))?;
    let period = interval + guard(interval);
    let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(r.burst.max(1))?);
    Some(RateLimiter::direct_with_clock(quota, clock.clone()))
}

/// Added to the quota's interval between two sends, so that network jitter
/// cannot make two sends arrive closer together than the destination allows
/// (Slack's 1 per second becomes one per 1.02 s). 5 ms was too little: on a
/// loaded machine, 4 of 200 sends at Slack's 1 per second got a 429.
pub const GUARD: Duration = Duration::from_millis(20);

/// [`GUARD`], or a twentieth of `interval` when that is less (Discord's 5
/// per 2 s becomes one per 420 ms): a fixed guard would cap fast quotas (5
/// ms would make 1,000/s into 133/s).
pub fn guard(interval: Duration) -> Duration {
    GUARD.min(interval / 20)
}

/// Why a send was held back (for logs and, later, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The configured quota.
    Quota,
    /// The destination said to wait (bucket exhausted or 429).
    Remote,
}

/// The pacing state of one target.
pub struct TargetLimiter {
    quota: Option<RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>>,
    rate: Option<RateLimit>,
    clock: TokioClock,
    /// No send before this instant (from the destination's headers).
    blocked_until: Option<Instant>,
}

impl std::fmt::Debug for TargetLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetLimiter")
            .field("limited", &self.quota.is_some())
            .field("blocked_until", &self.blocked_until)
            .finish()
    }
}

impl TargetLimiter {
    /// A new quota, keeping what the destination said (a reload that
    /// changes `rate_limit`): the new quota starts with its burst spent.
    pub fn set_rate(&mut self, rate: Option<RateLimit>) {
        if rate != self.rate {
            self.rate = rate;
            self.quota = rate.and_then(|r| limiter(r, &self.clock));
            self.drain();
        }
    }

    /// `None`: no quota (only the destination's own signals apply).
    pub fn new(rate: Option<RateLimit>) -> Self {
        let clock = TokioClock::new();
        let quota = rate.and_then(|r| limiter(r, &clock));
        Self {
            quota,
            rate,
            clock,
            blocked_until: None,
        }
    }

    /// After the destination made us wait, its budget is used up: start the
    /// quota over with no burst left (the next send may go, later ones are
    /// spaced by the quota's period), instead of bursting the cells that
    /// piled up during the wait into a destination that just said "slow down".
    fn drain(&mut self) {
        if let Some(r) = self.rate
            && let Some(fresh) = limiter(r, &self.clock)
        {
            for _ in 1..r.burst {
                let _ = fresh.check();
            }
            self.quota = Some(fresh);
        }
    }

    /// How long to wait before the next send may go, and why; `None` when it
    /// may go now. Takes a quota cell when it answers `None`.
    pub fn check(&mut self) -> Option<(Duration, Held)> {
        let now = Instant::now();
        if let Some(until) = self.blocked_until {
            if until > now {
                return Some((until - now, Held::Remote));
            }
            self.blocked_until = None;
            self.drain();
        }
        match &self.quota {
            None => None,
            Some(limiter) => match limiter.check() {
                Ok(()) => None,
                Err(not_until) => Some((not_until.wait_time_from(self.clock.now()), Held::Quota)),
            },
        }
    }

    /// Waits until a send may go. `None` if `cancel` fired first; else
    /// whether the local quota held the send back.
    pub async fn wait(&mut self, cancel: &tokio_util::sync::CancellationToken) -> Option<bool> {
        self.wait_reporting(cancel, |_| {}).await
    }

    /// [`Self::wait`], telling `report` each wait as it begins and, after
    /// any wait, `None` once a send may go (or the wait was cancelled). A
    /// send that need not wait reports nothing (the hot path stays free).
    pub async fn wait_reporting(
        &mut self,
        cancel: &tokio_util::sync::CancellationToken,
        report: impl Fn(Option<Duration>),
    ) -> Option<bool> {
        let (mut held_by_quota, mut waited) = (false, false);
        let outcome = loop {
            let Some((wait, why)) = self.check() else {
                break Some(held_by_quota);
            };
            held_by_quota |= why == Held::Quota;
            waited = true;
            report(Some(wait));
            tracing::trace!(wait_ms = wait.as_millis() as u64, held = ?why, "waiting for the rate limit");
            tokio::select! {
                () = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {}
                () = cancel.cancelled() => break None,
            }
        };
        if waited {
            report(None);
        }
        outcome
    }

    /// Waits until a send may go (or `cancel` fires: then `false`).
    pub async fn ready(&mut self, cancel: &tokio_util::sync::CancellationToken) -> bool {
        self.wait(cancel).await.is_some()
    }

    /// Learns from an answer: an exhausted Discord bucket blocks until it
    /// resets; a 429's hint blocks for that long. The hints are already
    /// capped ([`super::classify::rate_hints`]); an instant past what the
    /// clock can hold blocks for a day instead of panicking.
    pub fn observe(&mut self, status: u16, hints: &RateHints) {
        let now = Instant::now();
        let after = |d: Duration| {
            now.checked_add(d)
                .unwrap_or_else(|| now + Duration::from_secs(86_400))
        };
        let mut until = None;
        if hints.remaining == Some(0)
            && let Some(reset) = hints.reset_after
        {
            until = Some(after(reset));
        }
        if status == 429
            && let Some(wait) = hints.retry_after
        {
            let u = after(wait);
            until = Some(until.map_or(u, |v: Instant| v.max(u)));
        }
        if let Some(u) = until {
            self.blocked_until = Some(self.blocked_until.map_or(u, |b| b.max(u)));
        }
    }
}

/// What a target's limiter is kept for: while these are unchanged, a
/// reload hands the same limiter to the new worker.
#[derive(Clone, PartialEq, Eq)]
struct LimiterKey {
    kind: crate::model::TargetKind,
    /// The destination URL (it holds a token: never printed).
    url: Option<String>,
}

/// Every target's pacing state, kept across reloads: a reload that keeps a
/// target's kind and URL keeps its quota's used burst and what Discord's
/// headers said, so a configuration-management loop sending SIGHUP every
/// minute cannot provoke 429s. One worker at a time holds a target's
/// limiter (a reload joins the old workers before starting new ones).
#[derive(Clone, Default)]
pub struct Limiters(Arc<std::sync::Mutex<HashMap<String, (LimiterKey, Shared)>>>);

/// One target's limiter, handed from worker to worker.
pub type Shared = Arc<tokio::sync::Mutex<TargetLimiter>>;

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Limiters")
    }
}

impl Limiters {
    /// The limiter for `target`: the one it had, if its kind and URL are
    /// unchanged (with its quota updated), else a new one.
    pub fn for_target(&self, target: &crate::config::Target) -> Shared {
        let key = LimiterKey {
            kind: target.kind,
            url: target.url.as_ref().map(|u| u.expose().as_str().to_owned()),
        };
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, limiter)) = map.get(&target.name)
            && *k == key
        {
            let limiter = limiter.clone();
            if let Ok(mut l) = limiter.try_lock() {
                l.set_rate(target.rate_limit);
            }
            return limiter;
        }
        let limiter = Arc::new(tokio::sync::Mutex::new(TargetLimiter::new(
            target.rate_limit,
        )));
        map.insert(target.name.clone(), (key, limiter.clone()));
        limiter
    }

    /// Forgets the targets not named in `keep`.
    pub fn retain(&self, keep: &[&str]) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|name, _| keep.contains(&name.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn quota_paces_sends() {
        let mut l = TargetLimiter::new(Some(RateLimit {
            requests: 5,
            per: Duration::from_secs(2),
            burst: 5,
        }));
        let cancel = tokio_util::sync::CancellationToken::new();
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..10 {
            assert!(l.ready(&cancel).await);
            at.push((Instant::now() - start).as_millis());
        }
        // A burst of 5, then one every 400 ms plus the guard.
        assert_eq!(at, vec![0, 0, 0, 0, 0, 420, 840, 1260, 1680, 2100]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_quota_keeps_its_rate() {
        // 1,000 per second: the guard is a twentieth of 1 ms, not 20 ms.
        let mut l = TargetLimiter::new(Some(RateLimit {
            requests: 1000,
            per: Duration::from_secs(1),
            burst: 10,
        }));
        let cancel = tokio_util::sync::CancellationToken::new();
        let start = Instant::now();
        for _ in 0..1010 {
            assert!(l.ready(&cancel).await);
        }
        // 10 at once, then 1,000 at 1.05 ms (timer ticks are 1 ms; the
        // burst absorbs a late wake). A 20 ms guard would take 21 s.
        let took = (Instant::now() - start).as_millis();
        assert!((1049..=1051).contains(&took), "{took} ms");
        assert_eq!(guard(Duration::from_millis(400)), GUARD);
        assert_eq!(guard(Duration::from_secs(1)), GUARD);
        assert_eq!(guard(Duration::from_millis(100)), Duration::from_millis(5));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_remote_wait_the_burst_is_not_spent_at_once() {
        // Slack-like: 1 per second, burst 3. A 429 with Retry-After 1 s.
        let mut l = TargetLimiter::new(Some(RateLimit {
            requests: 1,
            per: Duration::from_secs(1),
            burst: 3,
        }));
        let cancel = tokio_util::sync::CancellationToken::new();
        let start = Instant::now();
        assert!(l.ready(&cancel).await);
        assert!(l.ready(&cancel).await);
        l.observe(
            429,
            &RateHints {
                retry_after: Some(Duration::from_secs(1)),
                ..Default::default()
            },
        );
        let mut at = Vec::new();
        for _ in 0..4 {
            assert!(l.ready(&cancel).await);
            at.push((Instant::now() - start).as_millis());
        }
        assert_eq!(at, vec![1000, 2020, 3040, 4060]);
    }

    #[tokio::test(start_paused = true)]
    async fn remote_signals_block() {
        let mut l = TargetLimiter::new(None);
        let cancel = tokio_util::sync::CancellationToken::new();
        let start = Instant::now();
        assert!(l.check().is_none());
        l.observe(
            200,
            &RateHints {
                remaining: Some(0),
                reset_after: Some(Duration::from_millis(1250)),
                ..Default::default()
            },
        );
        assert_eq!(l.check().map(|(_, h)| h), Some(Held::Remote));
        assert!(l.ready(&cancel).await);
        assert_eq!((Instant::now() - start).as_millis(), 1250);
        l.observe(
            429,
            &RateHints {
                retry_after: Some(Duration::from_millis(337)),
                ..Default::default()
            },
        );
        assert!(l.ready(&cancel).await);
        assert_eq!((Instant::now() - start).as_millis(), 1587);
        // Remaining > 0 does not block.
        l.observe(
            200,
            &RateHints {
                remaining: Some(3),
                reset_after: Some(Duration::from_secs(9)),
                ..Default::default()
            },
        );
        assert!(l.check().is_none());
    }
}
