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

/// A visitor's message `msg <seq>` in conversation `conv`.
fn conv_message(conv: usize, seq: usize) -> String {
    serde_json::json!({
        "website_id": "w1",
        "event": "message:send",
        "data": {
            "website_id": "w1",
            "session_id": format!("session_{conv}"),
            "type": "text",
            "content": format!("msg {seq}"),
            "from": "user",
            "origin": "chat",
            "user": {"nickname": format!("visitor {conv}")},
        },
        "timestamp": 1_748_952_083_417_i64,
    })
    .to_string()
}

/// With threads on, at Discord's real limit for a forum webhook (5 per 2 s,
/// shared by all its threads): 20 conversations × 5 messages, interleaved,
/// each thread complete and in order, and no 429 — with coalescing off (one
/// request per message: 100 requests) and on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_at_discords_real_limit_get_no_429() {
    const CONVS: usize = 20;
    const EACH: usize = 5;
    for coalesce in [false, true] {
        let fake = fakes::FakeDiscord::start("t", 5, Duration::from_secs(2)).await;
        fake.add_forum_channel("1200000000000000001");
        let url = fake.add_webhook("1300000000000000001", "tok", "1200000000000000001");
        let work = Workdir::new(&config_with(&format!(
            "targets:\n  forum: {{kind: discord, url: \"{url}\", threads: per_conversation, coalesce: {coalesce}}}\n\
             routes:\n  - name: visitor-messages\n    match: {{event: \"message:send\"}}\n    to: [forum]\n    template: visitor_message\n"
        )));
        let app = TestApp::spawn_in(work, &[]).await;
        let mut seq = 0;
        for _ in 0..EACH {
            for conv in 0..CONVS {
                assert_eq!(app.post_event(conv_message(conv, seq)).await.status(), 200);
                seq += 1;
            }
        }
        let started = Instant::now();
        let all = |fake: &fakes::FakeDiscord| -> Vec<(String, Vec<usize>)> {
            fake.threads()
                .into_iter()
                .map(|t| {
                    let text: String = t.messages.iter().map(|m| m.body.to_string()).collect();
                    let seqs = text
                        .match_indices("msg ")
                        .filter_map(|(at, _)| {
                            text[at + 4..]
                                .chars()
                                .take_while(char::is_ascii_digit)
                                .collect::<String>()
                                .parse()
                                .ok()
                        })
                        .collect();
                    (t.name, seqs)
                })
                .collect()
        };
        while all(&fake).iter().map(|(_, s)| s.len()).sum::<usize>() < CONVS * EACH {
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "coalesce {coalesce}: not all delivered; logs:\n{}",
                app.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let threads = all(&fake);
        assert_eq!(threads.len(), CONVS, "coalesce {coalesce}");
        for (name, seqs) in &threads {
            let conv: usize = name
                .trim_start_matches("visitor ")
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let want: Vec<usize> = (0..EACH).map(|i| conv + CONVS * i).collect();
            assert_eq!(seqs, &want, "coalesce {coalesce}: thread {name}");
        }
        let requests = fake.received().len();
        println!(
            "threads, coalesce {coalesce}: {} messages in {CONVS} threads with {requests} requests in {:.1} s, {} answered 429",
            CONVS * EACH,
            started.elapsed().as_secs_f64(),
            fake.count_status(429)
        );
        assert_eq!(fake.count_status(429), 0, "coalesce {coalesce}");
        if !coalesce {
            assert_eq!(requests, CONVS * EACH);
        }
    }
}
