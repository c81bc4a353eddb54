//! Crash and shutdown safety: after a SIGKILL mid-stream or while a backlog
//! drains, a restart delivers everything in order, repeating at most the
//! uncommitted window; SIGTERM with a backed-up target exits 0 and the rest
//! goes out after a restart; a send still in flight at the shutdown deadline
//! is abandoned and stays queued.

use std::collections::BTreeSet;
use std::time::Duration;

use super::*;
use crate::fakes::*;
use crate::helpers::*;

/// A full config like `config_with`, with `server_extra` lines (indented by
/// two spaces) in the `server:` section.
fn config_with_server(server_extra: &str, rest: &str) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:0\n  path: /crisp/hooks\n  keys: [\"${{CRISP_HOOK_KEY}}\"]\n  max_body: 64KiB\n{server_extra}\
         admin:\n  listen: 127.0.0.1:0\nstore:\n  path: data/relay.db\ntemplates: templates\n{rest}"
    )
}

/// The most sends a worker may have made without their results committed:
/// what a crash can make it repeat (`crisp_relay::delivery::WINDOW`).
const WINDOW: usize = crisp_relay::delivery::WINDOW;

/// Checks a received stream of sequence numbers against `0..n` delivered
/// in order at least once: it starts at 0, ends at n-1, and each next number
/// is one more, except at a restart, where the stream may go back at most
/// `WINDOW` numbers (sends whose results were not committed) and go on in
/// order from there. Returns how many numbers were received twice.
#[track_caller]
fn repeats_in_order(seqs: &[usize], n: usize) -> usize {
    assert_eq!(seqs.first(), Some(&0), "first delivered: {seqs:?}");
    assert_eq!(seqs.last(), Some(&(n - 1)), "last delivered: {seqs:?}");
    let mut rewinds = 0;
    for (i, w) in seqs.windows(2).enumerate() {
        if w[1] != w[0] + 1 {
            rewinds += 1;
            assert!(
                w[1] <= w[0] && w[0] - w[1] < WINDOW,
                "at position {}: neither the next number nor a step back of at most {WINDOW} (a restart repeating uncommitted sends): {:?}",
                i + 1,
                &seqs[i.saturating_sub(3)..(i + 5).min(seqs.len())]
            );
        }
    }
    assert!(
        rewinds <= 1,
        "{rewinds} steps back for one restart: {seqs:?}"
    );
    seqs.len() - n
}

// ---------------------------------------------------------------------------
// Crash and shutdown

/// Two webhook targets on one fake (`/a`, `/b`), each getting every event
/// as is.
fn two_hooks(fake: &FakeServer) -> String {
    config_with(&format!(
        "targets:\n  hook-a: {{kind: webhook, url: \"{}\"}}\n  hook-b: {{kind: webhook, url: \"{}\"}}\n\
         routes:\n  - name: all\n    to: [hook-a, hook-b]\n",
        fake.url("/a"),
        fake.url("/b"),
    ))
}

/// The sequence numbers the fake received on `path`, in arrival order.
fn seqs_on(fake: &FakeServer, path: &str) -> Vec<usize> {
    fake.received()
        .iter()
        .filter(|r| r.path == path)
        .map(hook_seq)
        .collect()
}

/// After a SIGKILL: restarts the relay on the same store, posts the rest of
/// the stream (`next..n`), waits for everything, and checks both targets got
/// `0..n` in order, each message at least once and at most `WINDOW` of them
/// twice (the send in flight at the kill and results not yet committed).
/// Prints the counts.
async fn restart_and_check(fake: &FakeServer, app: TestApp, next: usize, n: usize, label: &str) {
    let at_kill = (seqs_on(fake, "/a").len(), seqs_on(fake, "/b").len());
    assert!(
        at_kill.0 < n && at_kill.1 < n,
        "everything was delivered before the kill ({at_kill:?}): nothing was tested"
    );
    let app = TestApp::spawn_in(app.into_work(), &[]).await;
    post_all(&app, next..n).await;
    wait_until("every message on both targets", || {
        seqs_on(fake, "/a").last() == Some(&(n - 1)) && seqs_on(fake, "/b").last() == Some(&(n - 1))
    })
    .await;
    assert!(fake.received().iter().all(|r| r.status == 200));

    let (a, b) = (seqs_on(fake, "/a"), seqs_on(fake, "/b"));
    // Sent more than once: the send the crash interrupted, and any whose
    // result was not yet stored.
    let duplicates = |seqs: &[usize]| seqs.len() - seqs.iter().collect::<BTreeSet<_>>().len();
    let dups = (duplicates(&a), duplicates(&b));
    println!(
        "{label}: SIGKILL after {next} posted, {at_kill:?} received (hook-a, hook-b); sent again after restart: hook-a {}, hook-b {}",
        dups.0, dups.1
    );
    assert!(
        dups.0 <= WINDOW && dups.1 <= WINDOW,
        "more than {WINDOW} sends were repeated (hook-a, hook-b): {dups:?}"
    );
    assert_eq!(repeats_in_order(&a, n), dups.0);
    assert_eq!(repeats_in_order(&b, n), dups.1);
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_delivers_everything_in_order_with_bounded_repeats() {
    const N: usize = 1000;
    const KILL_AT: usize = 300;
    let fake = FakeServer::webhook().await;
    fake.set_delay(Duration::from_millis(5));
    let mut app = TestApp::spawn_with(&two_hooks(&fake)).await;

    // Post the stream; kill the relay between two posts once a good part has
    // been delivered (or after the last post, if posting is the slower).
    let mut next = 0;
    while next < N && seqs_on(&fake, "/a").len() < KILL_AT {
        post_all(&app, [next]).await;
        next += 1;
    }
    wait_until("deliveries before the kill", || {
        seqs_on(&fake, "/a").len() >= KILL_AT
    })
    .await;
    app.kill();
    restart_and_check(&fake, app, next, N, "slow webhook").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_a_backlog_drains_fast_repeats_at_most_the_uncommitted_window() {
    const N: usize = 1000;
    const BACKLOG: usize = 600;
    let fake = FakeServer::webhook().await;
    // A slow destination while the backlog builds up ...
    fake.set_delay(Duration::from_millis(50));
    let mut app = TestApp::spawn_with(&two_hooks(&fake)).await;
    post_all(&app, 0..BACKLOG).await;
    // ... then a fast one: many sends per store commit.
    fake.set_delay(Duration::ZERO);
    let kill_at = seqs_on(&fake, "/a").len() + 150;
    wait_until("deliveries before the kill", || {
        seqs_on(&fake, "/a").len() >= kill_at
    })
    .await;
    app.kill();
    restart_and_check(&fake, app, BACKLOG, N, "fast drain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_backed_up_target_exits_0_and_the_rest_is_delivered_after_restart() {
    const N: usize = 50;
    let fake = FakeServer::webhook().await;
    fake.set_delay(Duration::from_millis(200));
    let target = format!(
        "{{kind: webhook, url: \"{}\", {FAST_RETRY}}}",
        fake.url("/in")
    );
    let config = config_with_server("  shutdown_timeout: 1s\n", &one_target("crm", &target));
    let mut app = TestApp::spawn_with(&config).await;
    post_all(&app, 0..N).await;
    fake.wait_for_accepted(2, GUARD).await;

    let status = terminate(&mut app).await;
    assert_eq!(status.code(), Some(0), "{status}; logs:\n{}", app.logs());
    wait_for_log(&app, "shutting down", 1).await;
    let before = fake.received().len();
    assert!(before < N, "the queue was not backed up ({before} sent)");
    let store = open_store(&app.store_path()).await;
    let pending = store.pending_count("crm").await.unwrap();
    store.close().await;
    assert!(pending > 0, "nothing left pending");
    assert!(
        N - pending as usize <= before,
        "{pending} pending but only {before} sent"
    );

    let first_logs = app.logs();
    fake.clear();
    let app = TestApp::spawn_in(app.into_work(), &[]).await;
    wait_until("every message", || {
        fake.received().last().map(hook_seq) == Some(N - 1)
    })
    .await;
    let seqs: Vec<usize> = fake.received().iter().map(hook_seq).collect();
    let repeats = repeats_in_order(&seqs, N);
    println!(
        "SIGTERM after {before} sent, {pending} left pending; repeats after restart: {repeats}"
    );
    // The send in flight (200 ms) ends well within the deadline (1 s), and
    // its result is stored before the relay exits: nothing is sent twice,
    // unless the deadline cut it off.
    let max_repeats = usize::from(first_logs.contains("send abandoned at the shutdown deadline"));
    assert!(repeats <= max_repeats, "{repeats} repeats");
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_still_in_flight_at_the_shutdown_deadline_is_abandoned_and_stays_queued() {
    let fake = FakeServer::webhook().await;
    // Far longer than the shutdown deadline.
    fake.set_delay(Duration::from_secs(5));
    let target = format!(
        "{{kind: webhook, url: \"{}\", timeout: 20s, {FAST_RETRY}}}",
        fake.url("/in")
    );
    let config = config_with_server("  shutdown_timeout: 1s\n", &one_target("crm", &target));
    let mut app = TestApp::spawn_with(&config).await;
    post_all(&app, 0..3).await;
    wait_until("the first send", || !fake.received().is_empty()).await;

    let status = terminate(&mut app).await;
    assert_eq!(status.code(), Some(0), "{status}; logs:\n{}", app.logs());
    wait_for_log(&app, "send abandoned at the shutdown deadline", 1).await;
    assert_eq!(fake.received().len(), 1);
    let store = open_store(&app.store_path()).await;
    assert_eq!(store.pending_count("crm").await.unwrap(), 3);
    store.close().await;

    fake.clear();
    let app = TestApp::spawn_in(app.into_work(), &[]).await;
    fake.wait_for_accepted(4, GUARD).await;
    let seqs: Vec<usize> = fake.received().iter().map(hook_seq).collect();
    assert_eq!(seqs, vec![0, 0, 1, 2], "the abandoned send is sent again");
    drop(app);
}
