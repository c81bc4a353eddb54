//! When a destination fails: a 503 is retried until it recovers, a 429 is
//! waited out, a 400 is dead-lettered (then replayed or purged from the
//! CLI) while the queue moves on, a 404 or refused credentials pause the
//! target; and whatever the destinations answer, no secret reaches the
//! logs.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::fakes::*;
use crate::helpers::*;

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
    assert_eq!(
        ready,
        json!({"status": "ready", "store": {"engine": "sqlite", "database": "ok"}})
    );
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
