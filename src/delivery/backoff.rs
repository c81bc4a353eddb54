//! The retry schedule: exponential backoff with full jitter, capped, and
//! the give-up rule. Pure; the random source is passed in.

use std::time::Duration;

use crate::model::RetryPolicy;

/// The cap for the delay after failed attempt `attempt` (1-based):
/// `initial_backoff * 2^(attempt-1)`, at most `max_backoff`.
pub fn cap(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(32);
    policy
        .initial_backoff
        .saturating_mul(1u32 << exp.min(31))
        .min(policy.max_backoff)
}

/// The delay before the next attempt: uniform in `[0, cap]` ("full
/// jitter"), but never shorter than the destination's own hint.
pub fn delay(
    policy: &RetryPolicy,
    attempt: u32,
    hint: Option<Duration>,
    rng: &mut fastrand::Rng,
) -> Duration {
    let cap = cap(policy, attempt);
    let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    let jittered = Duration::from_millis(rng.u64(0..=cap_ms));
    match hint {
        Some(h) if h > jittered => h,
        _ => jittered,
    }
}

/// Whether a delivery that has failed `attempts` times and is `age` old
/// goes to the dead letters instead of being retried.
pub fn give_up(policy: &RetryPolicy, attempts: u32, age: Duration) -> bool {
    attempts >= policy.max_attempts || age >= policy.max_age
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            max_age: Duration::from_secs(3600),
        }
    }

    #[test]
    fn caps_double_then_stop() {
        let caps: Vec<u64> = (1..=7).map(|a| cap(&policy(), a).as_secs()).collect();
        assert_eq!(caps, vec![1, 2, 4, 8, 10, 10, 10]);
        assert_eq!(cap(&policy(), 1000), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_within_the_cap_and_hints_win_when_longer() {
        let mut rng = fastrand::Rng::with_seed(7);
        for attempt in 1..=6 {
            for _ in 0..200 {
                let d = delay(&policy(), attempt, None, &mut rng);
                assert!(d <= cap(&policy(), attempt));
            }
        }
        let d = delay(&policy(), 1, Some(Duration::from_secs(30)), &mut rng);
        assert_eq!(d, Duration::from_secs(30));
        // Full jitter spreads delays over the whole range.
        let spread: Vec<Duration> = (0..100)
            .map(|_| delay(&policy(), 4, None, &mut rng))
            .collect();
        assert!(
            spread.iter().any(|d| *d < Duration::from_secs(2))
                && spread.iter().any(|d| *d > Duration::from_secs(6))
        );
    }

    #[test]
    fn giving_up() {
        assert!(!give_up(&policy(), 4, Duration::from_secs(10)));
        assert!(give_up(&policy(), 5, Duration::from_secs(10)));
        assert!(give_up(&policy(), 1, Duration::from_secs(3600)));
    }
}
