//! The relay's one clock, for everything that stamps or compares times: the
//! store (when a row was accepted, when it is due, when it was delivered),
//! the workers (is it due, how old is it) and ingest (when it arrived).
//!
//! It reads the system's wall clock once, when it is made, and from then on
//! advances with the monotonic clock (tokio's, so tests on a paused clock
//! drive it). A step of the system clock after start-up (NTP correcting a
//! wrong RTC after boot, a VM restored from a snapshot, an operator's `date
//! -s`) therefore moves nothing: a retry due in 5 s is sent 5 s later, and a
//! delivery does not age by the step. Because the store and the workers read
//! the same clock, they can never disagree about what "now" is. The price:
//! timestamps written after a step are off by the step until the next
//! restart, which re-reads the wall clock.
//!
//! A leaf: it imports nothing from the crate. Nothing else in the crate may
//! read the system time (a test scans the sources for it).

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Unix milliseconds that never step: a wall-clock reading taken once, plus
/// monotonic time since. Cheap to copy; every copy agrees.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_ms: i64,
    base: Instant,
}

impl Clock {
    /// Starts from the system's wall clock now.
    pub fn system() -> Self {
        Self::starting_at(system_now_ms())
    }

    /// Starts from `unix_ms` now (tests; and a clock that must agree with a
    /// given instant).
    pub fn starting_at(unix_ms: i64) -> Self {
        Self {
            base_ms: unix_ms,
            base: Instant::now(),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.base.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.base_ms.saturating_add(elapsed)
    }
}

/// The system's wall clock, read once for [`Clock::system`].
fn system_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn advances_with_monotonic_time_only() {
        let clock = Clock::starting_at(1_000_000);
        assert_eq!(clock.now_ms(), 1_000_000);
        tokio::time::advance(std::time::Duration::from_millis(2500)).await;
        assert_eq!(clock.now_ms(), 1_002_500);
        let copy = clock;
        assert_eq!(copy.now_ms(), clock.now_ms());
    }

    /// The store and the workers agree on "now" only if nothing else reads
    /// the wall clock: every time in the relay comes from [`Clock`].
    #[test]
    fn nothing_else_reads_the_system_time() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("clock.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    if text.contains("SystemTime::now") {
                        offenders.push(path.display().to_string());
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "read the time through clock::Clock: {offenders:?}"
        );
    }
}
