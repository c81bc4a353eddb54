//! What an attempt's result means for its rows: the one decision of the
//! delivery path, as a pure function of the answer (or the failure to get
//! one), the rows sent, the target's retry policy and the time — tested by
//! tables, like Vector's `RetryLogic`. The worker (`worker`) is the I/O shell
//! around it: it sends, calls [`decide`], records the ops and waits.

use std::time::Duration;

use super::backoff;
use super::classify::{Answer, Outcome, RateHints, TransportError, classify, classify_error};
use crate::model::{RetryPolicy, TargetKind};
use crate::store::Op;

/// One row of an attempt, as the decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub id: i64,
    /// Attempts before this one.
    pub attempts: i64,
    /// When it entered the queue; `max_age` counts from here.
    pub queued_at_ms: i64,
}

/// The verdict on an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Delivered,
    /// Try the same rows again after `delay`; they stay first in line.
    Retry {
        delay: Duration,
        reason: String,
    },
    /// Failed for good (a permanent error, or retries exhausted).
    Dead {
        reason: String,
        gave_up: bool,
    },
    /// The destination refuses the target itself (webhook gone, token
    /// revoked): stop sending to it until the configuration changes; the
    /// rows stay queued.
    Pause {
        reason: String,
    },
    /// The conversation's thread was deleted or locked: the rows stay first
    /// in line, due at once, for a new thread (the worker decides; on a
    /// post that was not into a thread it pauses).
    ThreadGone {
        reason: String,
    },
}

/// What to record and what to do next. The ops' attempts are stamped
/// `now_ms` with no latency; the worker stamps the send's own times
/// ([`Decision::sent`]).
#[derive(Debug, Clone)]
pub struct Decision {
    pub verdict: Verdict,
    /// One op per row, in the rows' order.
    pub ops: Vec<Op>,
    /// The answer's status, if there was one.
    pub status: Option<u16>,
}

impl Decision {
    /// Stamps the ops' attempts with the send's start and latency.
    pub fn sent(mut self, at_ms: i64, latency_ms: i64) -> Self {
        for op in &mut self.ops {
            if let Op::Delivered {
                at_ms: at,
                latency_ms: l,
                ..
            }
            | Op::Retry {
                at_ms: at,
                latency_ms: l,
                ..
            }
            | Op::Dead {
                at_ms: at,
                latency_ms: l,
                ..
            } = op
            {
                *at = at_ms;
                *l = Some(latency_ms);
            }
        }
        self
    }
}

/// Decides what the `result` of sending `rows` (in line order, at least
/// one) to a target of `kind` means at `now_ms`. `hints` are the answer's
/// rate-limit hints, already capped; `rng` draws the backoff's jitter.
pub fn decide(
    kind: TargetKind,
    policy: &RetryPolicy,
    result: Result<&Answer, &TransportError>,
    hints: &RateHints,
    rows: &[Row],
    now_ms: i64,
    rng: &mut fastrand::Rng,
) -> Decision {
    let (outcome, status) = match result {
        Ok(answer) => (classify(kind, answer, hints), Some(answer.status)),
        Err(e) => (classify_error(e), None),
    };
    let attempts = |r: &Row| r.attempts + 1;
    let each = |f: &dyn Fn(&Row) -> Op| rows.iter().map(f).collect::<Vec<_>>();
    let dead = |reason: String, gave_up: bool| Decision {
        ops: each(&|r| Op::Dead {
            id: r.id,
            attempts: attempts(r),
            status,
            error: reason.clone(),
            at_ms: now_ms,
            latency_ms: None,
        }),
        verdict: Verdict::Dead { reason, gave_up },
        status,
    };
    match outcome {
        Outcome::Delivered => Decision {
            verdict: Verdict::Delivered,
            ops: each(&|r| Op::Delivered {
                id: r.id,
                attempts: attempts(r),
                status,
                at_ms: now_ms,
                latency_ms: None,
            }),
            status,
        },
        Outcome::Retry { after, reason } => {
            let Some(first) = rows.first() else {
                return dead(reason, false);
            };
            let attempt = u32::try_from(attempts(first)).unwrap_or(u32::MAX);
            let age_ms = u64::try_from(now_ms.saturating_sub(first.queued_at_ms)).unwrap_or(0);
            if backoff::give_up(policy, attempt, Duration::from_millis(age_ms)) {
                return dead(reason, true);
            }
            let delay = backoff::delay(policy, attempt, after, rng);
            let at = now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
            Decision {
                ops: each(&|r| Op::Retry {
                    id: r.id,
                    attempts: attempts(r),
                    next_attempt_at_ms: at,
                    status,
                    error: reason.clone(),
                    at_ms: now_ms,
                    latency_ms: None,
                }),
                verdict: Verdict::Retry { delay, reason },
                status,
            }
        }
        Outcome::Failed {
            reason,
            disable: false,
        } => dead(reason, false),
        Outcome::ThreadGone { reason } => {
            // Counted, so a thread that vanishes every time cannot loop.
            let attempt = rows
                .first()
                .map_or(u32::MAX, |r| u32::try_from(attempts(r)).unwrap_or(u32::MAX));
            if attempt >= policy.max_attempts {
                return dead(reason, true);
            }
            Decision {
                ops: each(&|r| Op::Retry {
                    id: r.id,
                    attempts: attempts(r),
                    next_attempt_at_ms: now_ms,
                    status,
                    error: reason.clone(),
                    at_ms: now_ms,
                    latency_ms: None,
                }),
                verdict: Verdict::ThreadGone { reason },
                status,
            }
        }
        Outcome::Failed {
            reason,
            disable: true,
        } => Decision {
            ops: each(&|r| Op::Retry {
                id: r.id,
                attempts: attempts(r),
                next_attempt_at_ms: now_ms,
                status,
                error: reason.clone(),
                at_ms: now_ms,
                latency_ms: None,
            }),
            verdict: Verdict::Pause { reason },
            status,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::classify::rate_hints;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
        }
    }

    const NOW: i64 = 1_000_000_000;

    /// What the verdict is called in the tables, and its delay if a retry.
    fn name(v: &Verdict) -> (&'static str, Option<Duration>) {
        match v {
            Verdict::Delivered => ("delivered", None),
            Verdict::Retry { delay, .. } => ("retry", Some(*delay)),
            Verdict::Dead { gave_up: true, .. } => ("gave up", None),
            Verdict::Dead { gave_up: false, .. } => ("dead", None),
            Verdict::Pause { .. } => ("pause", None),
            Verdict::ThreadGone { .. } => ("thread gone", None),
        }
    }

    fn run(
        kind: TargetKind,
        result: Result<Answer, TransportError>,
        attempts: i64,
        age_ms: i64,
    ) -> Decision {
        let hints = match &result {
            Ok(a) => rate_hints(a, NOW, policy().max_backoff),
            Err(_) => RateHints::default(),
        };
        let rows = [
            Row {
                id: 7,
                attempts,
                queued_at_ms: NOW - age_ms,
            },
            Row {
                id: 8,
                attempts,
                queued_at_ms: NOW - age_ms,
            },
        ];
        decide(
            kind,
            &policy(),
            result.as_ref(),
            &hints,
            &rows,
            NOW,
            &mut fastrand::Rng::with_seed(1),
        )
    }

    /// (kind, answer or failure, attempts so far, age) → verdict and, for a
    /// retry, the bounds of its delay.
    #[test]
    fn decision_table() {
        use TargetKind::*;
        let ok = |s, h: &[(&str, &str)], b| Ok(Answer::new(s, h, b));
        /// (kind, answer or failure, attempts, age ms, verdict, delay bounds ms)
        type Case = (
            TargetKind,
            Result<Answer, TransportError>,
            i64,
            i64,
            &'static str,
            Option<(u64, u64)>,
        );
        let cases: Vec<Case> = vec![
            (Webhook, ok(200, &[], ""), 0, 0, "delivered", None),
            (Webhook, ok(503, &[], ""), 0, 0, "retry", Some((0, 1000))),
            (Webhook, ok(503, &[], ""), 3, 0, "retry", Some((0, 8000))),
            // The fifth failure exhausts max_attempts 5.
            (Webhook, ok(503, &[], ""), 4, 0, "gave up", None),
            // Older than max_age (1 h) counted from when it was queued.
            (Webhook, ok(503, &[], ""), 0, 3_600_000, "gave up", None),
            (
                Webhook,
                ok(503, &[], ""),
                0,
                3_599_000,
                "retry",
                Some((0, 1000)),
            ),
            // A hint longer than the backoff wins; a hostile one is capped
            // at max_backoff (60 s).
            (
                Discord,
                ok(429, &[], r#"{"retry_after": 2.5}"#),
                0,
                0,
                "retry",
                Some((2500, 2500)),
            ),
            (
                Discord,
                ok(429, &[], r#"{"retry_after": 1e30}"#),
                0,
                0,
                "retry",
                Some((60_000, 60_000)),
            ),
            (
                Webhook,
                ok(503, &[("Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT")], ""),
                0,
                0,
                "retry",
                Some((60_000, 60_000)),
            ),
            (
                Webhook,
                ok(503, &[("Retry-After", "-5")], ""),
                0,
                0,
                "retry",
                Some((0, 1000)),
            ),
            (Webhook, ok(400, &[], "bad"), 0, 0, "dead", None),
            (Webhook, ok(401, &[], ""), 0, 0, "pause", None),
            (Webhook, ok(403, &[], ""), 2, 0, "pause", None),
            (
                Discord,
                ok(404, &[], r#"{"code": 10003}"#),
                0,
                0,
                "thread gone",
                None,
            ),
            (
                Discord,
                ok(403, &[], r#"{"code": 160005}"#),
                4,
                0,
                "gave up",
                None,
            ),
            (
                Slack,
                ok(200, &[], r#"{"ok": false, "error": "thread_not_found"}"#),
                0,
                0,
                "thread gone",
                None,
            ),
            (
                Slack,
                ok(200, &[], r#"{"ok": false, "error": "ratelimited"}"#),
                0,
                0,
                "retry",
                Some((0, 1000)),
            ),
            (
                Slack,
                ok(200, &[], r#"{"ok": true, "ts": "1.2"}"#),
                0,
                0,
                "delivered",
                None,
            ),
            (
                Discord,
                ok(404, &[], r#"{"code": 10015}"#),
                0,
                0,
                "pause",
                None,
            ),
            (
                Webhook,
                Err(TransportError::Timeout),
                0,
                0,
                "retry",
                Some((0, 1000)),
            ),
            (
                Webhook,
                Err(TransportError::Build("x".into())),
                0,
                0,
                "dead",
                None,
            ),
        ];
        for (kind, result, attempts, age, want, bounds) in cases {
            let label = format!("{kind} {result:?} attempts {attempts} age {age}");
            let d = run(kind, result, attempts, age);
            let (got, delay) = name(&d.verdict);
            assert_eq!(got, want, "{label}");
            if let (Some((lo, hi)), Some(delay)) = (bounds, delay) {
                let ms = delay.as_millis() as u64;
                assert!((lo..=hi).contains(&ms), "{label}: {ms} ms");
            }
            // One op per row, for both rows, with the attempt counted.
            assert_eq!(d.ops.len(), 2, "{label}");
            for (op, id) in d.ops.iter().zip([7, 8]) {
                let (op_id, op_attempts) = match op {
                    Op::Delivered { id, attempts, .. }
                    | Op::Retry { id, attempts, .. }
                    | Op::Dead { id, attempts, .. } => (*id, *attempts),
                    other => panic!("{label}: unexpected {other:?}"),
                };
                assert_eq!((op_id, op_attempts), (id, attempts + 1), "{label}");
            }
        }
    }

    #[test]
    fn a_retry_is_scheduled_at_now_plus_its_delay_and_a_pause_at_now() {
        let d = run(
            TargetKind::Webhook,
            Ok(Answer::new(503, &[("Retry-After", "7")], "")),
            0,
            0,
        );
        assert!(matches!(
            d.ops[0],
            Op::Retry { next_attempt_at_ms, .. } if next_attempt_at_ms == NOW + 7000
        ));
        let d = run(TargetKind::Webhook, Ok(Answer::new(410, &[], "")), 0, 0);
        assert!(matches!(
            d.ops[0],
            Op::Retry { next_attempt_at_ms, .. } if next_attempt_at_ms == NOW
        ));
        assert_eq!(d.status, Some(410));
    }
}
