//! Delivery end to end: the real binary sends to local fakes of Discord,
//! Slack and a generic webhook (`fakes.rs`), in real time. Order, rate
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

use std::collections::BTreeSet;
use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

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

/// The sequence number in a Slack body (`text`, the notification line).
fn slack_seq(r: &Received) -> usize {
    let body = r.json();
    seq_in(
        body["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text in {body}")),
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

/// A full config like `config_with`, with `server_extra` lines (indented by
/// two spaces) in the `server:` section.
fn config_with_server(server_extra: &str, rest: &str) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:0\n  path: /crisp/hooks\n  keys: [\"${{CRISP_HOOK_KEY}}\"]\n  max_body: 64KiB\n{server_extra}\
         admin:\n  listen: 127.0.0.1:0\nstore:\n  path: data/relay.db\ntemplates: templates\n{rest}"
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

/// The delay the relay chose for its retries of `target_name`, from its
/// `retrying` log lines (the computed schedule, not a measured time).
fn retry_delays_ms(logs: &str, target_name: &str) -> Vec<u64> {
    logs.lines()
        .filter(|l| l.contains("retrying") && l.contains(target_name))
        .map(|l| {
            let v = l
                .split("delay_ms=")
                .nth(1)
                .unwrap_or_else(|| panic!("no delay_ms in {l}"));
            v.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect()
}

const DISCORD_429: &str =
    r#"{"message": "You are being rate limited.", "retry_after": 0.2, "global": false}"#;
const DISCORD_400: &str = r#"{"code": 50035, "errors": {"embeds": {"_errors": [{"code": "BASE_TYPE_BAD_LENGTH", "message": "Must be between 1 and 10 in length."}]}}, "message": "Invalid Form Body"}"#;
const DISCORD_404: &str = r#"{"code":10015,"message":"Unknown Webhook"}"#;

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
    let target = format!(
        "{{kind: slack, url: \"{}\", rate_limit: {{requests: 1, per: 200ms, burst: 1}}, {FAST_RETRY}}}",
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
// Retries

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_answering_503_is_retried_until_it_recovers_and_nothing_is_lost() {
    const N: usize = 20;
    const FAILURES: usize = 4;
    let fake = FakeServer::webhook().await;
    fake.fail_next(FAILURES, 503, "upstream unavailable", &[]);
    let target = format!(
        "{{kind: webhook, url: \"{}\", {FAST_RETRY}}}",
        fake.url("/in/crisp")
    );
    let app = TestApp::spawn_with(&config_with(&one_target("crm", &target))).await;
    post_all(&app, 0..N).await;
    let accepted = fake.wait_for_accepted(N, GUARD).await;

    let seqs: Vec<usize> = accepted.iter().map(hook_seq).collect();
    assert_eq!(seqs, (0..N).collect::<Vec<_>>(), "order");
    assert_eq!(fake.count_status(503), FAILURES);
    // The first message was retried while the others waited behind it.
    let received: Vec<(u16, usize)> = fake
        .received()
        .iter()
        .map(|r| (r.status, hook_seq(r)))
        .collect();
    let mut want = vec![(503, 0); FAILURES];
    want.extend((0..N).map(|s| (200, s)));
    assert_eq!(received, want);
    assert_eq!(app.logs().matches("retrying").count(), FAILURES);
    assert!(dead_letters(&app.work).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discord_429_is_waited_out_and_the_message_then_arrives() {
    let fake = FakeServer::discord(50, Duration::from_secs(1)).await;
    fake.fail_next(1, 429, DISCORD_429, &[("Retry-After", "1")]);
    let target = format!(
        "{{kind: discord, url: \"{}\", {FAST_RETRY}}}",
        fake.discord_url()
    );
    let app = TestApp::spawn_with(&config_with(&one_target("team-discord", &target))).await;
    post_all(&app, 0..3).await;
    fake.wait_for_accepted(3, GUARD).await;

    let received: Vec<(u16, usize)> = fake
        .received()
        .iter()
        .map(|r| (r.status, discord_seq(r)))
        .collect();
    assert_eq!(received, vec![(429, 0), (200, 0), (200, 1), (200, 2)]);
    // The retry was scheduled after the body's precise `retry_after` (0.2 s;
    // the backoff alone would be at most 50 ms, the header says 1 s).
    assert_eq!(retry_delays_ms(&app.logs(), "team-discord"), vec![200]);
    assert!(dead_letters(&app.work).is_empty());
}

// ---------------------------------------------------------------------------
// Dead letters, disabling

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_dead_lettered_the_queue_moves_on_and_replay_sends_it_again() {
    let fake = FakeServer::discord(50, Duration::from_secs(1)).await;
    fake.fail_next(1, 400, DISCORD_400, &[]);
    let target = format!(
        "{{kind: discord, url: \"{}\", {FAST_RETRY}}}",
        fake.discord_url()
    );
    let app = TestApp::spawn_with(&config_with(&one_target("team-discord", &target))).await;

    post_all(&app, [0]).await;
    wait_for_log(&app, "dead-lettered", 1).await;
    // The next message is not held back by the dead one.
    post_all(&app, [1]).await;
    let accepted = fake.wait_for_accepted(1, GUARD).await;
    assert_eq!(discord_seq(&accepted[0]), 1);
    assert_eq!(fake.received().len(), 2, "a 400 is not retried");

    // While the relay runs, the CLI shows the dead letter.
    wait_until("the dead letter", || !dead_letters(&app.work).is_empty()).await;
    let dead = dead_letters(&app.work);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    assert_eq!(d["target"], "team-discord");
    assert_eq!(d["route"], "visitor-messages");
    assert_eq!(d["event"], "message:send");
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["last_status"], 400);
    let error = d["last_error"].as_str().unwrap_or("");
    assert!(
        error.contains("50035") && error.contains("Invalid Form Body"),
        "{error}"
    );
    let id = d["id"].as_i64().unwrap().to_string();
    let human = stdout_of(&cli(&app.work, &["deadletters", "list"]));
    assert!(human.contains("status 400"), "{human}");

    // Replay: the running relay picks it up on its next look at the store.
    fake.clear();
    let out = cli(&app.work, &["deadletters", "replay", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("1 dead letter(s) queued again"));
    let accepted = fake.wait_for_accepted(2, Duration::from_secs(20)).await;
    assert_eq!(discord_seq(&accepted[1]), 0, "the replayed message");
    assert!(dead_letters(&app.work).is_empty());
    let out = cli(&app.work, &["deadletters", "list"]);
    assert!(stdout_of(&out).contains("no dead letters"));
    let out = cli(&app.work, &["deadletters", "replay", &id]);
    assert_eq!(out.status.code(), Some(1), "nothing left to replay");

    // Purge.
    fake.fail_next(1, 400, DISCORD_400, &[]);
    post_all(&app, [2]).await;
    wait_for_log(&app, "dead-lettered", 2).await;
    wait_until("the second dead letter", || {
        dead_letters(&app.work).len() == 1
    })
    .await;
    let out = cli(&app.work, &["deadletters", "purge"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(
        stdout_of(&out).contains("1 dead letter(s) deleted"),
        "{}",
        stdout_of(&out)
    );
    assert!(dead_letters(&app.work).is_empty());
    assert_eq!(fake.accepted().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_disables_the_target_and_its_deliveries_stay_queued() {
    let discord = FakeServer::discord(50, Duration::from_secs(1)).await;
    discord.always(404, DISCORD_404);
    let hook = FakeServer::webhook().await;
    let config = config_with(&format!(
        "targets:\n  team-discord: {{kind: discord, url: \"{}\", {FAST_RETRY}}}\n  crm: {{kind: webhook, url: \"{}\", {FAST_RETRY}}}\n\
         routes:\n  - name: visitor-messages\n    match: {{event: \"message:send\"}}\n    to: [team-discord, crm]\n    template: visitor_message\n",
        discord.discord_url(),
        hook.url("/in/crisp"),
    ));
    let mut app = TestApp::spawn_with(&config).await;
    post_all(&app, [0]).await;
    wait_for_log(&app, "target paused", 1).await;
    post_all(&app, 1..4).await;
    // The other target is not affected.
    hook.wait_for_accepted(4, GUARD).await;
    let quiet_until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < quiet_until {
        assert_eq!(
            discord.received().len(),
            1,
            "a disabled target got another request"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(discord.count_status(404), 1);
    assert!(
        dead_letters(&app.work).is_empty(),
        "nothing is dead-lettered"
    );

    assert_eq!(terminate(&mut app).await.code(), Some(0));
    let store = open_store(&app.store_path()).await;
    let rows = store.deliveries().await.unwrap();
    let discord_rows: Vec<(&str, i64)> = rows
        .iter()
        .filter(|d| d.target == "team-discord")
        .map(|d| (d.state.as_str(), d.attempts))
        .collect();
    assert_eq!(
        discord_rows,
        vec![
            ("pending", 1),
            ("pending", 0),
            ("pending", 0),
            ("pending", 0)
        ]
    );
    assert!(
        rows.iter()
            .filter(|d| d.target == "crm")
            .all(|d| d.state == "delivered")
    );
    store.close().await;
}

/// A webhook that refuses the relay's credentials (401/403) refuses every
/// delivery: the target pauses like a Discord one after a 404, instead of
/// dead-lettering the whole backlog one request at a time. `/readyz` and
/// `crisp_relay_target_up` show it; a reload with fixed credentials resumes
/// it, and the backlog goes out in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_refusing_the_credentials_pauses_the_target_until_a_reload() {
    let hook = FakeServer::webhook().await;
    hook.always(401, r#"{"error": "invalid token"}"#);
    let config = |token: &str| {
        config_with(&format!(
            "targets:\n  crm: {{kind: webhook, url: \"{}\", headers: {{Authorization: \"Bearer {token}\"}}, {FAST_RETRY}}}\n\
             routes:\n  - name: all\n    to: [crm]\n",
            hook.url("/in")
        ))
    };
    let app = TestApp::spawn_with(&config("old")).await;
    post_all(&app, 0..4).await;
    wait_for_log(&app, "target paused", 1).await;
    // One request only, nothing dead-lettered, the pause visible.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        hook.received().len(),
        1,
        "a paused target got more requests"
    );
    assert!(dead_letters(&app.work).is_empty());
    let ready = app.admin_get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let ready: Value = serde_json::from_str(&ready.text().await.unwrap()).unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(
        ready["targets_not_running"]["crm"]["state"], "paused",
        "{ready}"
    );
    assert!(
        ready["targets_not_running"]["crm"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("401")),
        "{ready}"
    );
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert_eq!(
        metric(&metrics, r#"crisp_relay_target_up{target="crm"}"#),
        Some(0.0)
    );

    // The token is fixed: a reload resumes the target, in order.
    hook.clear();
    app.work.write("relay.yaml", &config("new"));
    let reloaded = app
        .client
        .post(format!("http://{}/-/reload", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(reloaded.status(), 200);
    let got = hook.wait_for_accepted(4, GUARD).await;
    let seqs: Vec<usize> = got.iter().map(|r| seq_in(&r.body_text())).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3]);
    assert!(
        got.iter()
            .all(|r| r.header("authorization") == Some("Bearer new"))
    );
    let ready: Value =
        serde_json::from_str(&app.admin_get("/readyz").await.text().await.unwrap()).unwrap();
    assert_eq!(ready, json!({"status": "ready"}));
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

// ---------------------------------------------------------------------------
// stdout target, `send`

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stdout_target_prints_the_rendered_message() {
    let app = TestApp::spawn_with(&config_with(&one_target("console", "{kind: stdout}"))).await;
    let resp = app
        .post_event(fixture("message_send_text_basic.json"))
        .await;
    assert_eq!(resp.status(), 200);
    // The link is the message's last line: once it is in, so is the rest.
    wait_until("the message on stdout", || {
        app.stdout()
            .contains("https://app.crisp.chat/website/3f9d2b7e-61c4-4a8e-9b1f-0d5e7a2c8b46/")
    })
    .await;
    let out = app.stdout();
    assert!(
        out.contains("Hi! Is the Pro plan billed monthly or yearly?"),
        "{out}"
    );
    assert!(out.contains("New message from visitor493603"), "{out}");
    assert!(!out.contains("{{"), "unrendered template: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reports_delivered_not_delivered_or_unknown_target() {
    let fake = FakeServer::webhook().await;
    let target = format!(
        "{{kind: webhook, url: \"{}\", headers: {{Authorization: \"Bearer SECRET-XYZ\"}}}}",
        fake.url("/in/PATH-TOKEN-77")
    );
    let work = Workdir::new(&config_with(&one_target("hook", &target)));
    work.write("event.json", &message(7));
    let event = work.path().join("event.json");
    let event = event.to_str().unwrap();

    let out = cli(&work, &["send", "--target", "hook", "--event", event]);
    let text = stdout_of(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr_of(&out));
    assert!(
        text.contains("HTTP 200") && text.contains("delivered"),
        "{text}"
    );
    let received = fake.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/in/PATH-TOKEN-77");
    assert_eq!(
        received[0].header("authorization"),
        Some("Bearer SECRET-XYZ")
    );
    assert_eq!(hook_seq(&received[0]), 7);

    fake.always(500, "internal error");
    let out = cli(&work, &["send", "--target", "hook", "--event", event]);
    let text = stdout_of(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr_of(&out));
    assert!(text.contains("not delivered"), "{text}");
    assert!(text.contains("HTTP 500"), "{text}");
    assert_eq!(fake.received().len(), 2, "send does not retry");

    let out = cli(&work, &["send", "--target", "nope", "--event", event]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("no target `nope`"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(fake.received().len(), 2);

    for secret in ["SECRET-XYZ", "PATH-TOKEN-77"] {
        for out in [&text, &stderr_of(&out)] {
            assert!(!out.contains(secret), "{secret} printed: {out}");
        }
    }
}

// ---------------------------------------------------------------------------
// Secrets

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs_whatever_the_destinations_answer() {
    const HEADER_SECRET: &str = "SECRET-XYZ";
    const PATH_SECRET: &str = "HOOK-PATH-5150";
    const QUERY_SECRET: &str = "QUERY-SECRET-88";
    let discord = FakeServer::discord(50, Duration::from_secs(1)).await;
    let slack = FakeServer::slack(50, Duration::from_secs(1)).await;
    let hook = FakeServer::webhook().await;
    // The first message: 503, then 429, then 400 (dead letter) everywhere.
    discord.fail_next(1, 503, "upstream connect error", &[]);
    discord.fail_next(1, 429, DISCORD_429, &[("Retry-After", "1")]);
    discord.fail_next(1, 400, DISCORD_400, &[]);
    slack.fail_next(1, 500, "rollup_error", &[]);
    slack.fail_next(1, 429, "rate_limited", &[("Retry-After", "1")]);
    slack.fail_next(1, 400, "invalid_payload", &[]);
    hook.fail_next(1, 503, "down", &[]);
    hook.fail_next(1, 429, "slow down", &[("Retry-After", "0")]);
    hook.fail_next(1, 400, r#"{"error": "bad request"}"#, &[]);
    let config = config_with(&format!(
        "targets:\n  team-discord: {{kind: discord, url: \"{}\", {FAST_RETRY}}}\n  support-slack: {{kind: slack, url: \"{}\", rate_limit: {{requests: 50, per: 1s}}, {FAST_RETRY}}}\n  crm:\n    kind: webhook\n    url: \"{}\"\n    headers: {{Authorization: \"Bearer {HEADER_SECRET}\"}}\n    {FAST_RETRY}\n\
         routes:\n  - name: visitor-messages\n    match: {{event: \"message:send\"}}\n    to: [team-discord, support-slack, crm]\n    template: visitor_message\n",
        discord.discord_url(),
        slack.slack_url(),
        hook.url(&format!("/in/{PATH_SECRET}?token={QUERY_SECRET}")),
    ));
    // Debug level: what an operator turns on when troubleshooting.
    let mut app = TestApp::spawn_in(Workdir::new(&config), &[("RUST_LOG", "debug")]).await;

    // Then a message that is delivered everywhere.
    post_all(&app, 0..2).await;
    discord.wait_for_accepted(1, GUARD).await;
    slack.wait_for_accepted(1, GUARD).await;
    hook.wait_for_accepted(1, GUARD).await;
    wait_until("three dead letters", || dead_letters(&app.work).len() == 3).await;
    assert_eq!(
        hook.received()[0].header("authorization"),
        Some("Bearer SECRET-XYZ")
    );
    assert_eq!(
        hook.received()[0].query.as_deref(),
        Some("token=QUERY-SECRET-88")
    );

    // Hostile input through every path: visitor text made to look like
    // mentions, markup and links, and requests the relay rejects.
    let hostile = [
        "message_send_text_everyone_mention.json",
        "message_send_text_slack_special_tokens.json",
        "message_send_text_html.json",
        "message_send_text_markdown.json",
        "message_send_text_long_5000.json",
        "message_send_text_unicode_emoji.json",
    ];
    for name in hostile {
        assert_eq!(app.post_event(fixture(name)).await.status(), 200, "{name}");
    }
    let wrong = app
        .client
        .post(app.hook_url(QUERY_SECRET))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(app.post_event("{not json").await.status(), 400);
    assert_eq!(app.post_event(vec![b' '; 70_000]).await.status(), 413);
    discord.wait_for_accepted(1 + hostile.len(), GUARD).await;
    slack.wait_for_accepted(1 + hostile.len(), GUARD).await;
    hook.wait_for_accepted(1 + hostile.len(), GUARD).await;

    // Then every destination says the webhook is gone.
    discord.always(404, DISCORD_404);
    slack.always(404, "no_service");
    hook.always(410, "gone");
    post_all(&app, [2]).await;
    wait_for_log(&app, "target paused", 3).await;

    assert_eq!(terminate(&mut app).await.code(), Some(0));
    wait_for_log(&app, "shutting down", 1).await;
    let logs = app.logs();
    for what in ["retrying", "dead-lettered", "delivered", "target paused"] {
        assert!(logs.contains(what), "no {what:?} in the logs:\n{logs}");
    }
    for secret in [
        "fake-token",
        "fake-secret",
        HEADER_SECRET,
        PATH_SECRET,
        QUERY_SECRET,
        KEY,
    ] {
        assert!(!logs.contains(secret), "{secret} is in the logs:\n{logs}");
    }
}

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
