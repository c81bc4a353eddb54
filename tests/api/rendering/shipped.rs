//! The shipped `relay.yaml` and templates: `check` passes on every sample
//! event, with the targets disabled and enabled, and a visitor message goes
//! to Discord, Slack and the console without the secrets.

use serde_json::Value;

use super::*;
use crate::helpers::*;

// ---------------------------------------------------------------------------
// The shipped configuration.

/// Parses `N events, M deliveries rendered, F failures` from `check`.
fn check_counts(out: &str) -> (usize, usize, usize) {
    let line = out
        .lines()
        .find(|l| l.contains("deliveries rendered"))
        .unwrap_or_else(|| panic!("no summary line in:\n{out}"));
    let nums: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(nums.len(), 3, "summary line: {line}");
    (nums[0], nums[1], nums[2])
}

#[test]
fn shipped_config_checks_every_sample_event() {
    let work = shipped_workdir();
    let events = fixtures_dir();
    let events = events.to_str().unwrap();

    let disabled = work.run(&["check", "--events", events]);
    let out = stdout_of(&disabled);
    assert!(
        disabled.status.success(),
        "check (targets disabled) failed: {:?}\nstdout:\n{out}\nstderr:\n{}",
        disabled.status.code(),
        stderr_of(&disabled)
    );
    let (n, rendered_disabled, failures) = check_counts(&out);
    assert_eq!(n, fixture_names().len(), "{out}");
    assert_eq!(failures, 0, "{out}");
    assert!(rendered_disabled > 0, "nothing rendered:\n{out}");

    let enabled = work.run_with_env(&["check", "--events", events], SHIPPED_ENV);
    let out = stdout_of(&enabled);
    assert!(
        enabled.status.success(),
        "check (targets enabled) failed: {:?}\nstdout:\n{out}\nstderr:\n{}",
        enabled.status.code(),
        stderr_of(&enabled)
    );
    let (n, rendered, failures) = check_counts(&out);
    assert_eq!((n, failures), (fixture_names().len(), 0), "{out}");
    assert_eq!(rendered, rendered_disabled, "{out}");
    assert!(out.contains("(4 enabled)"), "all targets enabled:\n{out}");
}

#[test]
fn shipped_config_sends_visitor_messages_to_discord_slack_and_console() {
    let work = shipped_workdir();
    let path = fixture_path("message_send_text_basic.json");
    let out = work.run_with_env(
        &["render", "--json", "--event", path.to_str().unwrap()],
        SHIPPED_ENV,
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let lines: Vec<Value> = stdout_of(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let targets: Vec<(&str, &str)> = lines
        .iter()
        .map(|d| {
            (
                d["target"].as_str().unwrap(),
                d["thread"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    // The Discord target keeps a thread per conversation: its first message
    // creates the thread (named after the visitor), a later one goes in it.
    // The Slack bot has no token set: disabled, its body alone.
    assert_eq!(
        targets,
        [
            ("team-discord", "create"),
            ("team-discord", "reply"),
            ("support-slack", "-"),
            ("support-slack-bot", "-"),
            ("console", "-")
        ]
    );
    assert_eq!(lines[0]["body"]["thread_name"], "visitor493603 · Chat");
    assert!(
        lines[1]["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("thread_id=THREAD_ID")),
        "{}",
        lines[1]
    );
    let lines: Vec<Value> = lines
        .into_iter()
        .filter(|d| d["thread"] != "reply" && d["target"] != "support-slack-bot")
        .collect();
    let discord = &lines[0]["body"];
    assert_eq!(discord["username"], "Crisp", "the target's username");
    let embed = &discord["embeds"][0];
    assert_eq!(embed["author"]["name"], "visitor493603");
    assert_eq!(
        embed["description"],
        "Hi! Is the Pro plan billed monthly or yearly?"
    );
    assert_eq!(
        embed["url"],
        "https://app.crisp.chat/website/3f9d2b7e-61c4-4a8e-9b1f-0d5e7a2c8b46/inbox/session_9e2a4c71-3b5d-4f86-a1c9-7d0e2b8f6a13/"
    );
    assert_eq!(embed["timestamp"], "2025-06-03T12:01:23.417Z");
    assert!(
        embed["footer"]["text"].as_str().unwrap().contains("Chat"),
        "origin in the footer: {embed}"
    );
    let slack = serde_json::to_string(&lines[1]["body"]).unwrap();
    assert!(slack.contains("Hi! Is the Pro plan billed monthly or yearly?"));
    assert!(slack.contains("app.crisp.chat/website/3f9d2b7e"));
    let console = lines[2]["body"].as_str().unwrap();
    assert!(console.contains("visitor493603"), "{console}");
    assert!(console.contains("Hi! Is the Pro plan billed monthly or yearly?"));
    // Secrets never reach the output.
    let all = stdout_of(&out);
    assert!(!all.contains("SECRETDISCORDTOKEN") && !all.contains("SECRETSLACKTOKEN"));
}
