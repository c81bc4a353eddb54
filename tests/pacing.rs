//! Acceptance tests of pacing at the destinations' real limits, with the
//! relay's default quotas (no `rate_limit` in the config): 200 messages to
//! a Discord-like webhook enforcing 5 requests per 2 s, and 200 to a
//! Slack-like webhook enforcing 1 per second. Each must arrive complete and
//! in order with at most one 429.
//!
//! A separate test binary because they take minutes (about 80 s and 200 s,
//! run in parallel): `cargo test --test pacing -- --nocapture`. Nothing
//! asserts a duration; the clocks only bound the waiting.

#[path = "api/helpers.rs"]
mod helpers;

#[path = "api/fakes/mod.rs"]
mod fakes;

#[path = "api/raw_http.rs"]
mod raw_http;

use std::time::{Duration, Instant};

use fakes::{FakeServer, Received};
use helpers::*;

const N: usize = 200;

/// One target (no `rate_limit`: the relay's default for its kind) and a
/// route sending visitor messages to it with the shipped template.
fn config(name: &str, kind: &str, url: &str) -> String {
    config_with(&format!(
        "targets:\n  {name}: {{kind: {kind}, url: \"{url}\"}}\n\
         routes:\n  - name: visitor-messages\n    match: {{event: \"message:send\", data.from: user}}\n    to: [{name}]\n    template: visitor_message\n"
    ))
}

/// Posts `msg 0` .. `msg N-1` one after the other, then waits (at most
/// `guard`) for `N` accepted requests and returns the fake's record.
async fn run(fake: &FakeServer, config: &str, guard: Duration) -> (TestApp, Vec<Received>) {
    let app = TestApp::spawn_with(config).await;
    for seq in 0..N {
        let resp = app.post_event(message(seq)).await;
        assert_eq!(resp.status(), 200, "event {seq}");
    }
    fake.wait_for_accepted(N, guard).await;
    (app, fake.received())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_200_messages_at_5_per_2s_with_the_default_quota() {
    let fake = FakeServer::discord(5, Duration::from_secs(2)).await;
    let started = Instant::now();
    let (app, received) = run(
        &fake,
        &config("team-discord", "discord", &fake.discord_url()),
        Duration::from_secs(240),
    )
    .await;
    let took = started.elapsed();
    let accepted: Vec<usize> = received
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| seq_in(r.json()["embeds"][0]["description"].as_str().unwrap_or("")))
        .collect();
    let rate_limited = fake.count_status(429);
    println!(
        "discord 5 per 2 s, default quota: {} delivered, {rate_limited} answered 429, {} requests, {took:.1?}",
        accepted.len(),
        received.len()
    );
    assert_eq!(accepted, (0..N).collect::<Vec<_>>(), "order");
    assert!(received.iter().all(|r| r.status == 200 || r.status == 429));
    assert!(
        rate_limited <= 1,
        "{rate_limited} requests answered 429; logs:\n{}",
        app.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_200_messages_at_1_per_second_with_the_default_quota() {
    let fake = FakeServer::slack(1, Duration::from_secs(1)).await;
    let started = Instant::now();
    let (_app, received) = run(
        &fake,
        &config("support-slack", "slack", &fake.slack_url()),
        Duration::from_secs(420),
    )
    .await;
    let took = started.elapsed();
    let accepted: Vec<usize> = received
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| seq_in(r.json()["text"].as_str().unwrap_or("")))
        .collect();
    let rate_limited = fake.count_status(429);
    // Where the 429s fell: (position in the record, seq of the message).
    let where_429: Vec<(usize, usize)> = received
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == 429)
        .map(|(i, r)| (i, seq_in(r.json()["text"].as_str().unwrap_or(""))))
        .collect();
    println!(
        "slack 1 per s, default quota (1 per s, no burst): {} delivered, {rate_limited} answered 429 at {where_429:?}, {} requests, {took:.1?}",
        accepted.len(),
        received.len()
    );
    assert_eq!(accepted, (0..N).collect::<Vec<_>>(), "order");
    assert!(received.iter().all(|r| r.status == 200 || r.status == 429));
    assert!(
        rate_limited <= 1,
        "{rate_limited} requests answered 429 at (request index, seq) {where_429:?}"
    );
}
