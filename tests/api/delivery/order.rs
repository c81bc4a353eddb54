//! Every message arrives, in order: at Discord paced by its rate-limit
//! headers, at Slack at its rate (at most one 429 each), and at a batching
//! webhook as arrays in order, a batch retried or dead-lettered whole.

use serde_json::json;

use super::*;
use crate::fakes::*;
use crate::helpers::*;

/// The sequence number in a Slack body (`text`, the notification line).
fn slack_seq(r: &Received) -> usize {
    let body = r.json();
    seq_in(
        body["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text in {body}")),
    )
}

// ---------------------------------------------------------------------------
// Order and pacing, scaled down

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_gets_every_message_in_order_paced_by_its_rate_limit_headers() {
    const N: usize = 40;
    let fake = FakeServer::discord(5, Duration::from_millis(500)).await;
    let target = format!(
        "{{kind: discord, url: \"{}\", rate_limit: {{requests: 5, per: 500ms}}, {FAST_RETRY}}}",
        fake.discord_url()
    );
    let app = TestApp::spawn_with(&config_with(&one_target("team-discord", &target))).await;
    post_all(&app, 0..N).await;
    let accepted = fake.wait_for_accepted(N, GUARD).await;

    let seqs: Vec<usize> = accepted.iter().map(discord_seq).collect();
    assert_eq!(seqs, (0..N).collect::<Vec<_>>(), "order");
    for r in fake.received() {
        assert!(
            r.status == 200 || r.status == 429,
            "{} {}",
            r.status,
            r.body_text()
        );
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/api/v10/webhooks/123456/fake-token");
        assert_eq!(r.query_param("wait").as_deref(), Some("true"), "{r:?}");
        let ua = r.header("user-agent").unwrap_or("");
        assert!(ua.starts_with("DiscordBot ("), "User-Agent {ua:?}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body = r.json();
        assert_eq!(body["allowed_mentions"], json!({"parse": []}), "{body}");
        assert!(body["embeds"][0]["title"].is_string(), "{body}");
    }
    let rate_limited = fake.count_status(429);
    println!("discord (5 per 500ms): {N} delivered, {rate_limited} answered 429");
    assert!(rate_limited <= 1, "{rate_limited} requests answered 429");
    assert_eq!(fake.received().len(), N + rate_limited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_gets_every_message_in_order_at_its_rate() {
    const N: usize = 40;
    let fake = FakeServer::slack(1, Duration::from_millis(200)).await;
    // The relay paces at 1 per 250 ms, a margin over the fake's 200 ms
    // window for requests that a loaded machine delays unevenly in transit.
    let target = format!(
        "{{kind: slack, url: \"{}\", rate_limit: {{requests: 1, per: 250ms, burst: 1}}, {FAST_RETRY}}}",
        fake.slack_url()
    );
    let app = TestApp::spawn_with(&config_with(&one_target("support-slack", &target))).await;
    post_all(&app, 0..N).await;
    let accepted = fake.wait_for_accepted(N, GUARD).await;

    let seqs: Vec<usize> = accepted.iter().map(slack_seq).collect();
    assert_eq!(seqs, (0..N).collect::<Vec<_>>(), "order");
    for r in fake.received() {
        assert!(
            r.status == 200 || r.status == 429,
            "{} {}",
            r.status,
            r.body_text()
        );
        assert_eq!(r.path, "/services/T000/B000/fake-secret");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body = r.json();
        assert!(body["blocks"].is_array(), "{body}");
        assert!(body.get("link_names").is_none() && body.get("parse").is_none());
    }
    let rate_limited = fake.count_status(429);
    println!("slack (1 per 200ms): {N} delivered, {rate_limited} answered 429");
    assert!(rate_limited <= 1, "{rate_limited} requests answered 429");
    assert_eq!(fake.received().len(), N + rate_limited);
}

// ---------------------------------------------------------------------------
// Batching

/// The seqs in a batched webhook body: a JSON array of Crisp events.
fn batch_seqs(r: &Received) -> Vec<usize> {
    let body = r.json();
    let items = body
        .as_array()
        .unwrap_or_else(|| panic!("a batching target sent a non-array: {body}"));
    items
        .iter()
        .map(|e| {
            seq_in(
                e["data"]["content"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no data.content in {e}")),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batching_webhook_gets_arrays_in_order_and_a_batch_is_retried_or_dead_lettered_whole() {
    const N: usize = 25;
    let fake = FakeServer::webhook().await;
    // Slow answers, so the queue fills up behind the first send.
    fake.set_delay(Duration::from_millis(500));
    let target = format!(
        "{{kind: webhook, url: \"{}\", batch: 10, {FAST_RETRY}}}",
        fake.url("/in/crisp")
    );
    let app = TestApp::spawn_with(&config_with(&one_target("crm", &target))).await;
    post_all(&app, 0..N).await;
    wait_until("all 25 delivered", || {
        fake.accepted()
            .iter()
            .map(|r| batch_seqs(r).len())
            .sum::<usize>()
            >= N
    })
    .await;
    let batches: Vec<Vec<usize>> = fake.accepted().iter().map(batch_seqs).collect();
    assert!(
        batches.iter().all(|b| !b.is_empty() && b.len() <= 10),
        "{batches:?}"
    );
    assert!(
        batches.iter().any(|b| b.len() > 1),
        "nothing was batched: {batches:?}"
    );
    assert_eq!(batches.concat(), (0..N).collect::<Vec<_>>(), "order");
    let logs = app.logs();
    assert!(
        logs.contains("\"rows\":10") || logs.contains("rows=10"),
        "{logs}"
    );

    // A 503 retries the whole batch: the retry starts with the same rows.
    // (The fake keeps its record: look only at what comes after.)
    fake.set_delay(Duration::ZERO);
    let seen = fake.received().len();
    let after = |from: usize| fake.received()[from..].to_vec();
    fake.fail_next(1, 503, "upstream unavailable", &[]);
    post_all(&app, N..N + 5).await;
    let ok_rows = |from: usize| -> Vec<usize> {
        after(from)
            .iter()
            .filter(|r| r.status == 200)
            .flat_map(batch_seqs)
            .collect()
    };
    wait_until("the 5 after the 503", || ok_rows(seen).len() >= 5).await;
    let received = after(seen);
    assert_eq!(received[0].status, 503);
    let failed = batch_seqs(&received[0]);
    let retried = batch_seqs(&received[1]);
    assert!(retried.starts_with(&failed), "{failed:?} then {retried:?}");
    assert_eq!(ok_rows(seen), (N..N + 5).collect::<Vec<_>>());

    // A 400 dead-letters every row of the batch; the queue moves on.
    let seen = fake.received().len();
    fake.fail_next(1, 400, "bad batch", &[]);
    post_all(&app, [N + 5]).await;
    wait_for_log(&app, "dead-lettered", 1).await;
    post_all(&app, [N + 6]).await;
    wait_until("the one after the 400", || !ok_rows(seen).is_empty()).await;
    assert_eq!(ok_rows(seen), vec![N + 6]);
    assert_eq!(batch_seqs(&after(seen)[0]), vec![N + 5]);
    wait_until("the dead letter", || dead_letters(&app.work).len() == 1).await;
    assert_eq!(dead_letters(&app.work)[0]["last_status"], 400);
}
