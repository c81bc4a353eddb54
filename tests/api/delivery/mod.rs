//! Delivery end to end: the real binary sends to local fakes of Discord,
//! Slack and a generic webhook (`fakes/`), in real time. Order, rate
//! limits, retries, dead letters, disabling a target, crash and shutdown
//! safety, the `stdout` target, `crisp-relay send`, and secrets kept out of
//! the logs.
//!
//! No test asserts how long something took. Clocks only bound the waiting
//! (`GUARD`), so that a relay that never delivers fails instead of hanging.
//! Backoffs and fake rate windows are scaled down where the exact real limit
//! is not the point (the real limits are in `tests/pacing.rs`).
//!
//! Every test runs on a multi-threaded runtime: the fakes live on the test's
//! runtime, and the CLI is run with `block_in_place` so they keep answering.
//!
//! Files: `order` (order and pacing at the rate limits, batching),
//! `failures` (retries, 429, dead letters, paused targets, secrets kept out
//! of the logs whatever the destinations answer), `crash_and_shutdown`
//! (SIGKILL and SIGTERM mid-stream, the shutdown deadline),
//! `stdout_and_send` (the `stdout` target, `crisp-relay send`). This file
//! holds what they share: configs, posting, reading what the fakes got, the
//! CLI, waiting.

mod crash_and_shutdown;
mod failures;
mod history;
mod order;
mod stdout_and_send;

use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fakes::*;
use crate::helpers::*;

/// Upper bound on waiting for anything. Only a hang guard.
const GUARD: Duration = Duration::from_secs(30);

/// Small retry schedule, so retries take milliseconds.
/// Short backoffs; `max_backoff` also caps the waits a destination asks for,
/// so it stays above the fake Discord's 500 ms window.
const FAST_RETRY: &str = "retry: {initial_backoff: 50ms, max_backoff: 1s}";

/// The sequence number in a Discord body (the embed's description holds the
/// visitor's text).
fn discord_seq(r: &Received) -> usize {
    let body = r.json();
    seq_in(
        body["embeds"][0]["description"]
            .as_str()
            .unwrap_or_else(|| {
                panic!("no embed description in {body}");
            }),
    )
}

/// The sequence number in a webhook body (the Crisp event as received).
fn hook_seq(r: &Received) -> usize {
    let body = r.json();
    seq_in(
        body["data"]["content"]
            .as_str()
            .unwrap_or_else(|| panic!("no data.content in {body}")),
    )
}

/// Posts `msg <seq>` for every seq in `seqs`, one after the other (so the
/// store's order is the seq order); each must be accepted.
async fn post_all(app: &TestApp, seqs: impl IntoIterator<Item = usize>) {
    for seq in seqs {
        let resp = app.post_event(message(seq)).await;
        assert_eq!(resp.status(), 200, "event {seq}");
    }
}

/// A target and a route sending visitor messages to it with the shipped
/// `visitor_message` template.
fn one_target(name: &str, target: &str) -> String {
    format!(
        "targets:\n  {name}: {target}\nroutes:\n  - name: visitor-messages\n    match: {{event: \"message:send\", data.from: user}}\n    to: [{name}]\n    template: visitor_message\n"
    )
}

/// Runs `crisp-relay <args> -c relay.yaml` without stalling the runtime the
/// fakes (and this test) run on.
fn cli(work: &Workdir, args: &[&str]) -> Output {
    tokio::task::block_in_place(|| work.run(args))
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `deadletters list --json`, one object per dead letter.
fn dead_letters(work: &Workdir) -> Vec<Value> {
    let out = cli(work, &["deadletters", "list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    stdout_of(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Polls `cond` every 20 ms until it holds, or fails naming `what`.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + GUARD;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the relay's log holds `needle` at least `n` times.
async fn wait_for_log(app: &TestApp, needle: &str, n: usize) {
    let deadline = Instant::now() + GUARD;
    while app.logs().matches(needle).count() < n {
        assert!(
            Instant::now() < deadline,
            "log never showed {needle:?} {n} times; logs:\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGTERM, then waits (up to `GUARD`) for the process to exit.
async fn terminate(app: &mut TestApp) -> ExitStatus {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(app.child.id().to_string())
        .status();
    let deadline = Instant::now() + GUARD;
    loop {
        if let Some(status) = app.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the relay did not exit after SIGTERM; logs:\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
