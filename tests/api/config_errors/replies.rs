//! `crisp` and `replies`: replies need a bot target with threads and a
//! `crisp` section, in the form of their chat; an empty signing secret
//! turns replies off with a warning.

use super::*;
use crate::helpers::*;

const BOT: &str = "kind: slack, token: xoxb-1, channel: C0123, threads: per_conversation";

/// A case whose offending token is found in `yaml` (the first occurrence
/// of `token` from line 11 on).
fn case(
    name: &'static str,
    extra: &str,
    token: &'static str,
    message: &'static str,
    hint: Option<&'static str>,
) -> Case {
    let yaml = config_with(extra);
    let (line, column) = yaml
        .lines()
        .enumerate()
        .skip(10)
        .find_map(|(i, l)| l.find(token).map(|c| (i + 1, c + 1)))
        .unwrap_or_else(|| panic!("{name}: no {token:?}"));
    Case {
        name,
        yaml,
        line,
        column,
        token,
        message,
        hint,
    }
}

#[test]
fn replies_are_refused_where_they_cannot_work() {
    run_cases(&[
        case(
            "replies on an incoming webhook",
            "targets:\n  s: {kind: slack, url: \"https://hooks.slack.com/services/T/B/x\", replies: {signing_secret: x}}\ncrisp: {identifier: a, key: b}\n",
            "{signing_secret: x}",
            "target `s`: replies need a bot target (`token` + `channel`) with `threads: per_conversation`",
            Some("only a bot can read"),
        ),
        case(
            "replies without crisp",
            &format!("targets:\n  s: {{{BOT}, replies: {{signing_secret: x}}}}\n"),
            "{signing_secret: x}",
            "replies go to Crisp, but the config has no `crisp` section",
            Some("CRISP_TOKEN_ID"),
        ),
        case(
            "discord replies written as slack's",
            "targets:\n  d: {kind: discord, token: t, channel: \"123\", threads: per_conversation, replies: {signing_secret: x}}\ncrisp: {identifier: a, key: b}\n",
            "{signing_secret: x}",
            "Discord replies come through the bot's Gateway connection: write `replies: true`",
            None,
        ),
        case(
            "slack replies written as true",
            &format!("targets:\n  s: {{{BOT}, replies: true}}\ncrisp: {{identifier: a, key: b}}\n"),
            "true}",
            "Slack replies come through the Events API",
            None,
        ),
        case(
            "bad tier",
            &format!(
                "targets:\n  s: {{{BOT}, replies: {{signing_secret: x}}}}\ncrisp: {{identifier: a, key: b, tier: user}}\n"
            ),
            "user}",
            "crisp.tier must be `website` or `plugin`, not `user`",
            Some("`website` for a token made in the Crisp app"),
        ),
        case(
            "a target named crisp",
            &format!(
                "targets:\n  crisp: {{{BOT}, replies: {{signing_secret: x}}}}\ncrisp: {{identifier: a, key: b}}\n"
            ),
            "{identifier: a",
            "a target is named `crisp`",
            Some("rename the target"),
        ),
        case(
            "crisp rate limit",
            &format!(
                "targets:\n  s: {{{BOT}, replies: {{signing_secret: x}}}}\ncrisp: {{identifier: a, key: b, rate_limit: {{requests: 0, per: 1s}}}}\n"
            ),
            "0, per",
            "crisp: rate_limit.requests must be at least 1",
            None,
        ),
        case(
            "replies path",
            &format!(
                "targets:\n  s: {{{BOT}, replies: {{signing_secret: x, path: slack}}}}\ncrisp: {{identifier: a, key: b}}\n"
            ),
            "{signing_secret: x, path",
            "replies.path `slack` must be a path starting with `/`",
            Some("/slack/events"),
        ),
    ]);
}

#[test]
fn an_empty_signing_secret_turns_replies_off_with_a_warning() {
    let work = workdir(&config_with(&format!(
        "targets:\n  s: {{{BOT}, replies: {{signing_secret: \"${{SLACK_SIGNING_SECRET:-}}\"}}}}\ncrisp: {{identifier: a, key: \"{TOKEN}\"}}\n"
    )));
    let out = check_ok(&work, &[], &["SLACK_SIGNING_SECRET"]);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        all.contains("target `s`: replies are off: replies.signing_secret is empty"),
        "{all}"
    );
    assert!(!all.contains(TOKEN), "{all}");
    // Set, there is nothing to say.
    let out = check_ok(&work, &[("SLACK_SIGNING_SECRET", "s3cr3t")], &[]);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains("replies are off"), "{all}");
    assert!(!all.contains("s3cr3t"), "{all}");
}
