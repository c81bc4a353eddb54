//! The relay's memory stays within a fixed bound (on its growth, at the
//! peak): through the whole battery and its heavy cases 20 more times,
//! under 200 huge heads at once, and under 100 stalled 1 MiB bodies at once
//! (no more than the body budget is read).

use tokio::task::JoinSet;

use super::bodies::{
    case_body_never_comes, case_deep_nesting, case_malformed_bodies, case_oversized_bodies,
};
use super::heads::{case_expect_continue, case_keys, case_oversized_heads, case_protocol};
use super::slow_loris::{case_slow_head, slow_head_start};
use super::*;
use crate::helpers::*;

const BUSY: &str = "the relay is busy; retry shortly";

/// The bound on the relay's memory growth in every test here (KiB).
const BOUND_KIB: u64 = 30 * 1024;

/// A field of /proc/PID/status of the relay, in KiB: `VmRSS` (resident
/// memory now) or `VmHWM` (its peak since the relay started).
fn mem_kib(app: &TestApp, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", app.child.id()))
        .expect("the relay process is alive");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// Warms the relay up (first requests allocate pools, caches, the store's
/// pages) and returns its resident memory then.
async fn warm_rss(app: &TestApp) -> u64 {
    for _ in 0..5 {
        still_serves(app, "warm-up").await;
    }
    mem_kib(app, "VmRSS")
}

/// The relay's peak memory so far has not grown past `before` + the bound.
/// The peak (`VmHWM`) covers every moment since `before`, not just now.
fn assert_peak_within_bound(app: &TestApp, before: u64, what: &str) {
    let peak = mem_kib(app, "VmHWM");
    eprintln!("relay memory {what}: {before} KiB resident before, {peak} KiB peak");
    assert!(
        peak.saturating_sub(before) < BOUND_KIB,
        "{what}: the relay's peak memory grew from {before} KiB to {peak} KiB"
    );
}

// ---------------------------------------------------------------------------
// The tests

/// The whole battery on one relay, then its heavy cases 20 more times: the
/// relay's memory stays within a fixed bound (a bound on growth, not a
/// timing), at its peak as well as at the end.
#[tokio::test]
async fn memory_stays_bounded_through_the_battery_and_repeats() {
    let app = battery_app().await;
    let before = warm_rss(&app).await;

    case_malformed_bodies(&app).await;
    case_oversized_bodies(&app).await;
    case_body_never_comes(&app).await;
    case_oversized_heads(&app).await;
    case_protocol(&app).await;
    case_expect_continue(&app).await;
    case_keys(&app).await;
    case_slow_head(&app).await;
    let after_battery = mem_kib(&app, "VmRSS");

    for _ in 0..20 {
        case_deep_nesting(&app).await;
        case_oversized_bodies(&app).await;
        case_oversized_heads(&app).await;
    }
    let after_repeats = mem_kib(&app, "VmRSS");
    eprintln!(
        "relay VmRSS: {before} KiB before, {after_battery} KiB after the battery, {after_repeats} KiB after 20 repeats of the heavy cases"
    );
    for (when, now) in [
        ("the battery", after_battery),
        ("20 repeats", after_repeats),
    ] {
        assert!(
            now.saturating_sub(before) < BOUND_KIB,
            "resident memory grew from {before} KiB to {now} KiB after {when}"
        );
    }
    assert_peak_within_bound(&app, before, "through the battery and 20 repeats");
}

/// Heads are read before the key is checked, so anyone can send them: 200
/// connections at once each sending 300 KB of a head that never ends. Each
/// is refused (431) once it passes the head limit, instead of being buffered
/// (hyper's default limit is about 400 KiB per connection: 200 of them held
/// 60 MB until `header_read_timeout`), and the relay's peak memory stays
/// within the bound.
#[tokio::test]
async fn hundreds_of_huge_heads_at_once_are_refused_within_bounded_memory() {
    let app = TestApp::spawn_with(&config("  header_read_timeout: 3s\n")).await;
    let before = warm_rss(&app).await;
    let mut huge = slow_head_start();
    huge.extend(std::iter::repeat_n(b'a', 300_000));
    let mut conns = JoinSet::new();
    for _ in 0..200 {
        let mut raw = connect(&app).await;
        raw.send_in_background(huge.clone());
        // The answer, or none if the server closed at its header timeout.
        conns.spawn(async move { raw.try_response().await.map(|a| a.status) });
    }
    let mut answers = Vec::new();
    while let Some(r) = conns.join_next().await {
        answers.push(r.unwrap());
    }
    assert_peak_within_bound(&app, before, "after 200 huge heads at once");
    assert!(answers.iter().all(|a| *a == Some(431)), "{answers:?}");
    still_serves(&app, "200 huge heads at once").await;
}

/// Bodies are read only with a valid key, but then into memory: 100
/// connections at once each declaring 1 MiB (the limit) and sending all of it
/// but the last byte. Only `BODY_BUDGET_BYTES` (16 MiB) of them are read at
/// once; the others wait for the budget, and each gets 408 (its body never
/// ended) or 503 with `Retry-After` (no budget within `body_read_timeout`).
/// Before the budget, the relay held all 100 MiB.
#[tokio::test]
async fn hundreds_of_stalled_bodies_hold_no_more_than_the_body_budget() {
    let app = TestApp::spawn_with(&config("  body_read_timeout: 2s\n")).await;
    let before = warm_rss(&app).await;
    let head = [
        "Content-Type: application/json".to_owned(),
        format!("Content-Length: {MAX_BODY}"),
    ];
    let request = raw_request(&hook_target(), "HTTP/1.1", &head, &vec![b' '; MAX_BODY - 1]);
    let mut conns = JoinSet::new();
    for _ in 0..100 {
        let mut raw = connect(&app).await;
        raw.send_in_background(request.clone());
        conns.spawn(async move {
            let a = raw.response().await;
            let retry_after = a.header("retry-after").map(str::to_owned);
            (a.status, a.error(), retry_after)
        });
    }
    let (mut timed_out, mut busy) = (0, 0);
    while let Some(r) = conns.join_next().await {
        match r.unwrap() {
            (408, error, _) if error.contains("body not received") => timed_out += 1,
            (503, error, Some(retry)) if error == BUSY && retry == "1" => busy += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    eprintln!("100 stalled 1 MiB bodies: {timed_out} answered 408, {busy} answered 503");
    // The first 16 to reserve are read until their body timeout.
    assert!(timed_out >= 16, "{timed_out} bodies were read");
    assert_peak_within_bound(&app, before, "after 100 stalled 1 MiB bodies at once");
    still_serves(&app, "100 stalled 1 MiB bodies at once").await;
}
