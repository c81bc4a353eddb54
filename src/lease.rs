//! Holding a lease: which replica runs a target's worker (`target:NAME`)
//! or a reply listener (`gateway:NAME`) when several share one PostgreSQL
//! store.
//!
//! [`hold`] waits until the store grants the lease, then keeps it renewed
//! in the background every third of its term. When renewals fail for long
//! enough that the lease may have expired in the database (or the database
//! says another replica took it), [`Held::lost`] is cancelled: the holder
//! must stop at once. The database refuses a lost holder's writes anyway
//! (the fence); stopping early keeps it from sending what it cannot
//! record. On SQLite every lease is granted at once and never expires.
//!
//! The timing rules are the pure [`after_renewal`] (table-tested); this
//! module must not decide anything about deliveries.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::store::{Fence, Store, StoreError};

/// The longest wait between two tries at a lease another replica holds.
const POLL_MAX: Duration = Duration::from_secs(2);
/// The shortest, whatever the term.
const POLL_MIN: Duration = Duration::from_millis(200);
/// The wait before trying a renewal again after the database failed to
/// answer.
const RENEW_RETRY: Duration = Duration::from_millis(500);

/// How often to try a lease held elsewhere: a fifth of the term, within
/// [`POLL_MIN`]..=[`POLL_MAX`]. A replica takes over at most this long
/// after the lease expired.
pub fn poll_every(term: Duration) -> Duration {
    (term / 5).clamp(POLL_MIN, POLL_MAX)
}

/// What the renewer does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Renew again at this instant.
    RenewAt(Instant),
    /// The lease is (or may be) gone: stop.
    Lost,
}

/// The outcome of one renewal attempt, as the renewer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The database extended the lease by a term from its `now()`.
    Renewed,
    /// The database says the lease is no longer this replica's.
    Refused,
    /// No answer (connection lost, timeout).
    Failed,
}

/// Decides after a renewal attempt sent at `sent`, given when the last
/// successful one was sent (`last_ok`). A lease is safe until `last_ok +
/// term` in the database (it counts from after that request arrived); the
/// holder gives it up locally a tenth of the term earlier, so it has
/// stopped before another replica can have taken over.
pub fn after_renewal(outcome: Renewal, sent: Instant, last_ok: Instant, term: Duration) -> Next {
    let every = term / 3;
    match outcome {
        Renewal::Refused => Next::Lost,
        Renewal::Renewed => Next::RenewAt(sent + every),
        Renewal::Failed => {
            let give_up = last_ok + term - term / 10;
            let retry = sent + RENEW_RETRY.min(every);
            if retry >= give_up {
                Next::Lost
            } else {
                Next::RenewAt(retry)
            }
        }
    }
}

/// A lease this process holds, renewed until released or lost.
pub struct Held {
    fence: Fence,
    lost: CancellationToken,
    renewer: Option<JoinHandle<()>>,
}

impl Held {
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Cancelled when the lease is (or may be) lost.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Stops renewing and gives the lease up at once (unless it was lost),
    /// so another replica may take over without waiting for the term.
    pub async fn release(mut self, store: &dyn Store) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        if !self.lost.is_cancelled()
            && let Err(e) = store.release(&self.fence).await
        {
            warn!(lease = %self.fence.name, error = %e, "cannot release the lease; another replica takes it when it expires");
        }
        self.lost.cancel();
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }
}

/// Waits until lease `name` is this process's, or `stop`. `waiting` is
/// called once if another replica holds it (to show the standby state).
pub async fn hold(
    store: &Arc<dyn Store>,
    name: &str,
    stop: &CancellationToken,
    mut waiting: impl FnMut(),
) -> Option<Held> {
    let term = store.lease_term();
    let poll = term.map_or(POLL_MAX, poll_every);
    let mut told = false;
    loop {
        if stop.is_cancelled() {
            return None;
        }
        let sent = Instant::now();
        match store.acquire(name).await {
            Ok(Some(fence)) => {
                if told {
                    info!(
                        lease = name,
                        token = fence.token,
                        "lease taken over; starting"
                    );
                } else {
                    debug!(lease = name, token = fence.token, "lease acquired");
                }
                let lost = CancellationToken::new();
                let renewer = term.map(|term| {
                    tokio::spawn(renew(
                        store.clone(),
                        fence.clone(),
                        term,
                        sent,
                        lost.clone(),
                    ))
                });
                return Some(Held {
                    fence,
                    lost,
                    renewer,
                });
            }
            Ok(None) => {
                if !told {
                    told = true;
                    info!(lease = name, "another replica holds the lease; standing by");
                    waiting();
                }
            }
            Err(StoreError::Closed) => return None,
            Err(e) => {
                warn!(lease = name, error = %e, "cannot take the lease; trying again");
                if !told {
                    told = true;
                    waiting();
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = stop.cancelled() => return None,
        }
    }
}

async fn renew(
    store: Arc<dyn Store>,
    fence: Fence,
    term: Duration,
    acquired: Instant,
    lost: CancellationToken,
) {
    let mut last_ok = acquired;
    let mut next = after_renewal(Renewal::Renewed, acquired, acquired, term);
    loop {
        let Next::RenewAt(at) = next else {
            warn!(lease = %fence.name, token = fence.token, "lease lost; stopping what it covers");
            lost.cancel();
            return;
        };
        tokio::time::sleep_until(at).await;
        let sent = Instant::now();
        // An answer that comes after the lease may have lapsed is no answer.
        let wait = (last_ok + term).saturating_duration_since(sent);
        let outcome = match tokio::time::timeout(wait, store.renew(&fence)).await {
            Ok(Ok(true)) => Renewal::Renewed,
            Ok(Ok(false)) => Renewal::Refused,
            Ok(Err(e)) => {
                warn!(lease = %fence.name, error = %e, "cannot renew the lease");
                Renewal::Failed
            }
            Err(_) => Renewal::Failed,
        };
        if outcome == Renewal::Renewed {
            last_ok = sent;
        }
        next = after_renewal(outcome, sent, last_ok, term);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (outcome, sent at s after the last success) → next step, for a 9 s
    /// term (renew every 3 s, give up 8.1 s after the last success).
    #[tokio::test(start_paused = true)]
    async fn renewal_table() {
        let t0 = Instant::now();
        let term = Duration::from_secs(9);
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let cases = [
            (Renewal::Renewed, 0, Next::RenewAt(ms(3_000))),
            (Renewal::Renewed, 3_000, Next::RenewAt(ms(6_000))),
            (Renewal::Refused, 3_000, Next::Lost),
            (Renewal::Failed, 3_000, Next::RenewAt(ms(3_500))),
            (Renewal::Failed, 7_500, Next::RenewAt(ms(8_000))),
            (Renewal::Failed, 7_600, Next::Lost),
            (Renewal::Failed, 9_000, Next::Lost),
        ];
        for (outcome, sent, want) in cases {
            let last_ok = if outcome == Renewal::Renewed {
                ms(sent)
            } else {
                t0
            };
            assert_eq!(
                after_renewal(outcome, ms(sent), last_ok, term),
                want,
                "{outcome:?} at {sent} ms"
            );
        }
    }

    #[test]
    fn polling_is_a_fifth_of_the_term_within_bounds() {
        let secs = |s: f64| Duration::from_secs_f64(s);
        assert_eq!(poll_every(secs(10.0)), secs(2.0));
        assert_eq!(poll_every(secs(5.0)), secs(1.0));
        assert_eq!(poll_every(secs(600.0)), POLL_MAX);
        assert_eq!(poll_every(secs(0.5)), POLL_MIN);
    }
}
