//! Discord and Slack bots with `threads: per_conversation`: a Discord text
//! channel (the thread started from the conversation's first message,
//! archived once resolved, reopened by the next message), a Discord forum,
//! a Slack channel (the first message is the thread's parent), a Slack
//! thread that was deleted, and a Slack channel the bot is not in.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::fakes::{FakeDiscord, FakeSlackApi};

const TEXT: &str = "1200000000000000002";
const FORUM: &str = "1200000000000000003";
const SLACK_CHANNEL: &str = "C0TESTCHAN1";
const SLACK_TOKEN: &str = "xoxb-test-token";

fn discord_bot(fake: &FakeDiscord, channel: &str) -> String {
    format!(
        "{{kind: discord, token: \"{}\", channel: \"{channel}\", api_url: \"{}\", threads: per_conversation}}",
        fake.bot_token(),
        fake.api_base()
    )
}

fn slack_bot(fake: &FakeSlackApi) -> String {
    format!(
        "{{kind: slack, token: \"{SLACK_TOKEN}\", channel: {SLACK_CHANNEL}, api_url: \"{}\", threads: per_conversation}}",
        fake.api_base()
    )
}

/// A config whose template also says what a state change is.
fn bot_config(target: &str) -> Workdir {
    let work = chat_config(target);
    let note = "{{#if data.content}}{{data.content}}{{else}}state {{data.state}}{{/if}}";
    work.write("templates/note.discord.hbs", note);
    work.write("templates/note.slack.hbs", note);
    work
}

fn set_state(conv: &str, state: &str) -> String {
    json!({
        "website_id": "w1",
        "event": "session:set_state",
        "data": {"website_id": "w1", "session_id": format!("session_{conv}"), "state": state},
        "timestamp": 1_748_952_083_417_i64,
    })
    .to_string()
}

/// Every message's text in a Discord channel or thread, one string.
fn discord_text(fake: &FakeDiscord, id: &str) -> String {
    fake.messages_in(id)
        .iter()
        .map(|m| m.content().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discord_bot_threads_a_text_channel_archives_when_resolved_and_reopens() {
    let fake = FakeDiscord::start("bot-token", 5, Duration::from_secs(2)).await;
    fake.add_text_channel(TEXT);
    let mut app = TestApp::spawn_in(bot_config(&discord_bot(&fake, TEXT)), &[]).await;

    assert_eq!(app.post_event(conv_message("ann", 1)).await.status(), 200);
    assert_eq!(app.post_event(conv_message("bob", 2)).await.status(), 200);
    eventually("two threads", || fake.threads().len() == 2).await;
    // Each first message is in the channel, and its thread started from it.
    let channel = fake.messages_in(TEXT);
    let firsts: Vec<Vec<usize>> = channel.iter().map(|m| seqs_in(&m.body)).collect();
    assert_eq!(firsts, vec![vec![1], vec![2]]);
    let threads = fake.threads();
    assert_eq!(
        threads[0].id, channel[0].id,
        "ann's thread is her first message's"
    );
    assert_eq!(threads[1].id, channel[1].id);
    assert_eq!(threads[0].name, "ann · Chat");
    assert_eq!(threads[1].name, "bob · Chat");
    let ann = threads[0].id.clone();

    assert_eq!(app.post_event(conv_message("ann", 3)).await.status(), 200);
    assert_eq!(
        app.post_event(set_state("ann", "resolved")).await.status(),
        200
    );
    eventually("ann's thread archived", || {
        fake.thread(&ann).is_some_and(|t| t.archived)
    })
    .await;
    assert_eq!(discord_text(&fake, &ann), "msg 3\nstate resolved");
    assert!(!fake.thread(&threads[1].id).unwrap().archived);

    // Ann writes again: her thread is reopened, nothing new is started.
    assert_eq!(app.post_event(conv_message("ann", 4)).await.status(), 200);
    eventually("msg 4 in ann's thread", || {
        discord_text(&fake, &ann).ends_with("msg 4")
    })
    .await;
    assert!(!fake.thread(&ann).unwrap().archived);
    assert_eq!(fake.threads().len(), 2);
    assert_eq!(
        fake.messages_in(TEXT).len(),
        2,
        "nothing else in the channel"
    );
    assert_eq!(fake.count_status(429), 0);

    // The map says the thread is open again.
    assert!(app.terminate().success());
    let store = open_store(&app.store_path()).await;
    use crisp_relay::store::Store;
    let t = store
        .thread("chat", "w1/session_ann")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.thread, ann);
    assert_eq!(t.state, crisp_relay::store::ThreadState::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discord_bot_in_a_forum_makes_a_post_per_conversation() {
    let fake = FakeDiscord::start("bot-token", 5, Duration::from_secs(2)).await;
    fake.add_forum_channel(FORUM);
    let app = TestApp::spawn_in(bot_config(&discord_bot(&fake, FORUM)), &[]).await;
    for (conv, seq) in [("ann", 1), ("bob", 2), ("ann", 3), ("bob", 4)] {
        assert_eq!(app.post_event(conv_message(conv, seq)).await.status(), 200);
    }
    let seqs = |t: &crate::fakes::DiscordThread| -> Vec<usize> {
        t.messages.iter().flat_map(|m| seqs_in(&m.body)).collect()
    };
    eventually("four messages", || {
        fake.threads().iter().map(|t| seqs(t).len()).sum::<usize>() == 4
    })
    .await;
    let threads = fake.threads();
    let got: Vec<(String, Vec<usize>)> =
        threads.iter().map(|t| (t.name.clone(), seqs(t))).collect();
    assert_eq!(
        got,
        vec![
            ("ann · Chat".to_string(), vec![1, 3]),
            ("bob · Chat".to_string(), vec![2, 4]),
        ]
    );
    assert!(threads.iter().all(|t| t.parent_id == FORUM));
    assert!(fake.messages_in(FORUM).is_empty());
    assert_eq!(fake.count_status(429), 0);
}

/// The seqs of a Slack thread: its parent's, then its replies'.
fn slack_thread(fake: &FakeSlackApi, parent: &crate::fakes::SlackMessage) -> Vec<usize> {
    let mut seqs = seqs_in(&json!(parent.text));
    for r in fake.replies(SLACK_CHANNEL, &parent.ts) {
        seqs.extend(seqs_in(&json!(r.text)));
    }
    seqs
}

fn slack_total(fake: &FakeSlackApi) -> usize {
    fake.messages(SLACK_CHANNEL)
        .iter()
        .map(|p| slack_thread(fake, p).len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_bot_keeps_each_conversation_in_the_thread_of_its_first_message() {
    let fake = FakeSlackApi::start(SLACK_TOKEN).await;
    fake.add_channel(SLACK_CHANNEL, true);
    let app = TestApp::spawn_in(bot_config(&slack_bot(&fake)), &[]).await;
    for (conv, seq) in [("ann", 1), ("bob", 2), ("ann", 3), ("bob", 4), ("ann", 5)] {
        assert_eq!(app.post_event(conv_message(conv, seq)).await.status(), 200);
    }
    eventually("five messages", || slack_total(&fake) == 5).await;
    let parents = fake.messages(SLACK_CHANNEL);
    let got: Vec<Vec<usize>> = parents.iter().map(|p| slack_thread(&fake, p)).collect();
    assert_eq!(got, vec![vec![1, 3, 5], vec![2, 4]]);
    assert_eq!(fake.count_status(429), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_slack_thread_is_followed_by_a_new_one_that_says_so() {
    let fake = FakeSlackApi::start(SLACK_TOKEN).await;
    fake.add_channel(SLACK_CHANNEL, true);
    let app = TestApp::spawn_in(bot_config(&slack_bot(&fake)), &[]).await;
    assert_eq!(app.post_event(conv_message("ann", 1)).await.status(), 200);
    eventually("the first thread", || {
        fake.messages(SLACK_CHANNEL).len() == 1
    })
    .await;
    let first = fake.messages(SLACK_CHANNEL)[0].ts.clone();
    fake.delete_message(SLACK_CHANNEL, &first);
    for seq in 2..=3 {
        assert_eq!(app.post_event(conv_message("ann", seq)).await.status(), 200);
    }
    eventually("a second thread with the rest", || {
        fake.messages(SLACK_CHANNEL)
            .get(1)
            .is_some_and(|p| slack_thread(&fake, p).len() == 2)
    })
    .await;
    let parents = fake.messages(SLACK_CHANNEL);
    assert_eq!(parents.len(), 2);
    assert_eq!(slack_thread(&fake, &parents[1]), vec![2, 3]);
    assert!(
        parents[1]
            .text
            .starts_with("↪ This conversation continues from an earlier thread"),
        "{:?}",
        parents[1].text
    );
    assert!(fake.replies(SLACK_CHANNEL, &first).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_channel_the_bot_is_not_in_pauses_the_target_until_a_reload() {
    let fake = FakeSlackApi::start(SLACK_TOKEN).await;
    fake.add_channel(SLACK_CHANNEL, false);
    let app = TestApp::spawn_in(bot_config(&slack_bot(&fake)), &[]).await;
    for (conv, seq) in [("ann", 1), ("ann", 2), ("bob", 3)] {
        assert_eq!(app.post_event(conv_message(conv, seq)).await.status(), 200);
    }
    eventually("the target paused", || app.logs().contains("target paused")).await;
    // The worker logs the pause before it records the state `/readyz` reads.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let ready = loop {
        let ready = app.admin_get("/readyz").await.text().await.unwrap();
        if ready.contains("not_in_channel") || std::time::Instant::now() > deadline {
            break ready;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(ready.contains("not_in_channel"), "{ready}");
    assert!(ready.contains("/invite"), "{ready}");
    let refused = fake.received().len();
    assert_eq!(refused, 1, "one refusal pauses the target");
    // Invited, and reloaded: everything queued arrives, in order.
    fake.set_member(SLACK_CHANNEL, true);
    let reload = app
        .client
        .post(format!("http://{}/-/reload", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200);
    eventually("three messages", || slack_total(&fake) == 3).await;
    let parents = fake.messages(SLACK_CHANNEL);
    let got: Vec<Vec<usize>> = parents.iter().map(|p| slack_thread(&fake, p)).collect();
    assert_eq!(got, vec![vec![1, 2], vec![3]]);
    assert!(!app.logs().contains("secret"), "no token in the logs");
    assert!(!app.logs().contains(SLACK_TOKEN));
}
