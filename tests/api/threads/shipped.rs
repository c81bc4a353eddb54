//! The shipped `relay.yaml` and templates with threads: a Discord forum
//! webhook and a Slack bot. A conversation's message, the visitor's email
//! and name, its resolution and the next message all land in its thread, in
//! Crisp's order; an event without a conversation gets a forum post of its
//! own and does not stop the target.

use std::time::Duration;

use super::*;
use crate::fakes::{FakeDiscord, FakeSlackApi};

const FORUM: &str = "1200000000000000005";
const SLACK_CHANNEL: &str = "C0SHIPPED01";

/// The shipped config on loopback ports, its Slack bot pointed at `slack`.
fn shipped_config(slack: &FakeSlackApi) -> Workdir {
    let yaml = std::fs::read_to_string(root().join("relay.yaml")).unwrap();
    let edits = [
        ("0.0.0.0:8080", "127.0.0.1:0".to_string()),
        ("127.0.0.1:9090", "127.0.0.1:0".to_string()),
        (
            "    channel: \"${SLACK_CHANNEL:-}\"\n",
            format!(
                "    channel: \"${{SLACK_CHANNEL:-}}\"\n    api_url: \"{}\"\n",
                slack.api_base()
            ),
        ),
    ];
    let mut edited = yaml.clone();
    for (from, to) in edits {
        assert!(edited.contains(from), "relay.yaml has no {from:?}");
        edited = edited.replace(from, &to);
    }
    Workdir::new(&edited)
}

/// Where each of `needles` first appears in `hay`, which must hold them in
/// this order.
fn assert_in_order(hay: &str, needles: &[&str]) {
    let mut from = 0;
    for n in needles {
        let at = hay[from..]
            .find(n)
            .unwrap_or_else(|| panic!("{n:?} not found (in order) in {hay}"));
        from += at + n.len();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_config_threads_a_conversation_on_discord_and_slack() {
    let discord = FakeDiscord::start("bot-token", 5, Duration::from_secs(2)).await;
    discord.add_forum_channel(FORUM);
    let forum_hook = discord.add_webhook("1300000000000000005", "hook-token", FORUM);
    let slack = FakeSlackApi::start("xoxb-shipped").await;
    slack.add_channel(SLACK_CHANNEL, true);
    let app = TestApp::spawn_in(
        shipped_config(&slack),
        &[
            ("DISCORD_WEBHOOK_URL", forum_hook.as_str()),
            ("SLACK_BOT_TOKEN", "xoxb-shipped"),
            ("SLACK_CHANNEL", SLACK_CHANNEL),
            ("CRISP_CONSOLE", "false"),
        ],
    )
    .await;
    for name in [
        "message_send_text_basic",
        "session_set_email",
        "session_set_nickname",
        "session_set_state_resolved",
        "people_profile_created",
        "message_send_text_basic",
    ] {
        let status = app
            .post_event(fixture(&format!("{name}.json")))
            .await
            .status();
        assert_eq!(status, 200, "{name}");
    }
    let visitor = "Is the Pro plan billed monthly or yearly?";
    let expected = [
        visitor,
        "lea.fontaine@example.com",
        "Léa Fontaine",
        "resolved",
        visitor,
    ];
    // Discord: one post for the conversation, one for the new contact.
    let thread_text = |t: &crate::fakes::DiscordThread| -> String {
        t.messages
            .iter()
            .map(|m| m.body.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    eventually("the conversation's thread on Discord", || {
        discord
            .threads()
            .iter()
            .any(|t| thread_text(t).matches(visitor).count() == 2)
    })
    .await;
    eventually("the new contact's post", || discord.threads().len() == 2).await;
    let threads = discord.threads();
    let conv = threads
        .iter()
        .find(|t| thread_text(t).contains(visitor))
        .unwrap();
    assert_in_order(&thread_text(conv), &expected);
    let other = threads.iter().find(|t| t.id != conv.id).unwrap();
    assert_eq!(other.name, "people:profile:created");
    assert!(!thread_text(other).contains(visitor));

    // Slack: the first message is the thread's parent, the rest replies.
    let slack_text = || -> String {
        let parents = slack.messages(SLACK_CHANNEL);
        let mut all: Vec<String> = parents.iter().map(|p| p.text.clone()).collect();
        for p in &parents {
            for r in slack.replies(SLACK_CHANNEL, &p.ts) {
                all.push(r.text);
            }
        }
        all.join("\n")
    };
    eventually("the conversation's thread on Slack", || {
        slack_text().matches(visitor).count() == 2
    })
    .await;
    assert_eq!(slack.messages(SLACK_CHANNEL).len(), 1, "one thread");
    assert_in_order(&slack_text(), &expected);

    assert_eq!(discord.count_status(429) + slack.count_status(429), 0);
    assert!(!app.logs().contains("target paused"), "{}", app.logs());
}
