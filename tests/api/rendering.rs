//! Rendering through the real binary (`check` and `render`): the shipped
//! config and templates pass `check` on every sample event; every sample
//! renders for every target kind within Discord's and Slack's limits; visitor
//! text can neither ping nor inject markup or links; long text is cut with an
//! ellipsis at a character boundary; and `render`'s human, error and stdin
//! modes behave.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use crisp_relay::targets::invariants::{self, unescape_discord, unescape_slack};
use serde_json::{Value, json};

use crate::helpers::*;

const DISCORD_URL: &str = "http://127.0.0.1:9/api/webhooks/1/tok";
const SLACK_URL: &str = "http://127.0.0.1:9/services/T000/B000/xyz";
const HOOK_URL: &str = "http://127.0.0.1:9/hook/secret";
const USERNAME: &str = "Crisp Relay";

/// Environment that enables every target of the shipped `relay.yaml`.
const SHIPPED_ENV: &[(&str, &str)] = &[
    (
        "DISCORD_WEBHOOK_URL",
        "https://discord.com/api/webhooks/123/SECRETDISCORDTOKEN",
    ),
    (
        "SLACK_WEBHOOK_URL",
        "https://hooks.slack.com/services/T000/B000/SECRETSLACKTOKEN",
    ),
    ("CRM_WEBHOOK_URL", "https://crm.example.com/hooks/crisp"),
];

/// One target of each kind; one route per shipped template that matches that
/// template's events; and a catch-all (through `visitor_message`, which must
/// cope with any event) so that every sample reaches every kind.
fn all_kinds_config() -> String {
    config_with(&format!(
        r#"targets:
  discord: {{kind: discord, url: "{DISCORD_URL}", username: "{USERNAME}"}}
  slack: {{kind: slack, url: "{SLACK_URL}"}}
  hook: {{kind: webhook, url: "{HOOK_URL}"}}
  console: {{kind: stdout}}
routes:
  - name: visitor-message
    match: {{event: ["message:send", "message:received", "message:updated"]}}
    to: [discord, slack, hook, console]
    template: visitor_message
  - name: contact-details
    match: {{event: ["session:set_email", "session:set_phone", "session:set_nickname"]}}
    to: [discord, slack, hook, console]
    template: contact_details
  - name: conversation-state
    match: {{event: "session:set_state"}}
    to: [discord, slack, hook, console]
    template: conversation_state
  - name: new-contact
    match: {{event: "people:profile:created"}}
    to: [discord, slack, hook, console]
    template: new_contact
  - name: everything-else
    to: [discord, slack, hook, console]
    template: visitor_message
"#
    ))
}

/// The route `all_kinds_config` sends `event` through.
fn expected_route(event: &str) -> &'static str {
    match event {
        "message:send" | "message:received" | "message:updated" => "visitor-message",
        "session:set_email" | "session:set_phone" | "session:set_nickname" => "contact-details",
        "session:set_state" => "conversation-state",
        "people:profile:created" => "new-contact",
        _ => "everything-else",
    }
}

fn shipped_workdir() -> Workdir {
    Workdir::new(&std::fs::read_to_string(root().join("relay.yaml")).unwrap())
}

fn stdout_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fixture_path(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// `render --json --event <path>`: one delivery per line, each parsed.
fn render_json(work: &Workdir, event: &Path) -> Vec<Value> {
    let out = work.run(&["render", "--json", "--event", event.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "render {}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        event.display(),
        out.status.code(),
        stdout_of(&out),
        stderr_of(&out)
    );
    stdout_of(&out)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("render {}: line is not JSON ({e}): {line}", event.display())
            })
        })
        .collect()
}

/// The delivery of `kind` among `deliveries` (exactly one is expected).
fn delivery<'a>(deliveries: &'a [Value], kind: &str, what: &str) -> &'a Value {
    let found: Vec<&Value> = deliveries.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "{what}: expected one {kind} delivery: {deliveries:#?}"
    );
    found[0]
}

/// Length as Discord and Slack may count it (UTF-16 units, never fewer than
/// code points).
fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// The problems `checks` found, each prefixed with `what` and the kind.
fn push<const N: usize>(
    problems: &mut Vec<String>,
    what: &str,
    kind: &str,
    checks: [Result<(), String>; N],
) {
    for e in checks.into_iter().filter_map(Result::err) {
        problems.extend(e.lines().map(|l| format!("{what}: {kind}: {l}")));
    }
}

/// Discord's documented limits and non-empty rules (research/targets.md
/// §1.3), nothing can ping, and the username is the target's.
fn discord_problems(what: &str, body: &Value, problems: &mut Vec<String>) {
    if body["username"].as_str() != Some(USERNAME) {
        problems.push(format!(
            "{what}: discord: username {} is not the target's ({USERNAME}): templates must not set it",
            body["username"]
        ));
    }
    let checks = [
        invariants::discord_pings_nobody(body),
        invariants::discord_body_within_limits(body),
        invariants::discord_body_well_formed(body),
    ];
    push(problems, what, "discord", checks);
}

/// Slack's Block Kit limits and non-empty rules (research/targets.md §2.5),
/// and nothing can ping.
fn slack_problems(what: &str, body: &Value, problems: &mut Vec<String>) {
    let checks = [
        invariants::slack_pings_nobody(body),
        invariants::slack_body_within_limits(body),
        invariants::slack_body_well_formed(body),
    ];
    push(problems, what, "slack", checks);
}

/// Discord: nothing can ping (`@everyone`/`@here` never appear; the relay
/// puts U+200B after the `@`), and no `<` (user, role, channel, slash
/// command and timestamp mentions) or `[` (masked links) is active, in any
/// string of the body.
fn discord_hostile_problems(what: &str, body: &Value, problems: &mut Vec<String>) {
    let check = invariants::discord_body_defused(body, &[]);
    push(problems, what, "discord", [check]);
}

/// Slack: no raw `<` or `>` anywhere (so no `<!channel>`, `<@U…>`, `<#C…>`,
/// `<url|text>`), no `@channel`/`@here`/`@everyone`, and every `&` starts
/// one of the three entities, in any string of the body.
fn slack_hostile_problems(what: &str, body: &Value, problems: &mut Vec<String>) {
    let check = invariants::slack_body_defused(body, &[]);
    push(problems, what, "slack", [check]);
}

fn assert_no_problems(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------
// 1. The shipped configuration.

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
    let targets: Vec<&str> = lines
        .iter()
        .map(|d| d["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["team-discord", "support-slack", "console"]);
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

// ---------------------------------------------------------------------------
// 2. Every sample, every kind, within limits.

#[test]
fn every_sample_renders_for_every_kind_within_limits() {
    let work = Workdir::new(&all_kinds_config());
    let mut problems = Vec::new();
    for name in fixture_names() {
        let path = fixture_path(&name);
        let event = fixture_json(&name);
        let deliveries = render_json(&work, &path);
        let kinds: BTreeSet<&str> = deliveries
            .iter()
            .filter_map(|d| d["kind"].as_str())
            .collect();
        assert_eq!(
            (deliveries.len(), kinds),
            (4, BTreeSet::from(["discord", "slack", "stdout", "webhook"])),
            "{name}: {deliveries:#?}"
        );
        let route = expected_route(event["event"].as_str().unwrap());
        for d in &deliveries {
            let obj = d.as_object().unwrap();
            for key in [
                "route", "target", "kind", "method", "url", "headers", "body",
            ] {
                assert!(obj.contains_key(key), "{name}: no `{key}` in {d}");
            }
            assert_eq!(d["route"], route, "{name}");
            assert!(d["headers"].is_object(), "{name}: {d}");
            assert!(d.get("disabled").is_none(), "{name}: {d}");
        }

        let discord = delivery(&deliveries, "discord", &name);
        assert_eq!(discord["method"], "POST", "{name}");
        assert_eq!(
            discord["url"], "http://127.0.0.1:9/api/v10/webhooks/1/***?wait=true",
            "{name}: the token is redacted"
        );
        assert!(
            discord["headers"]["User-Agent"]
                .as_str()
                .is_some_and(|ua| ua.starts_with("DiscordBot (")),
            "{name}: {discord}"
        );
        discord_problems(&name, &discord["body"], &mut problems);

        let slack = delivery(&deliveries, "slack", &name);
        assert_eq!(slack["method"], "POST", "{name}");
        assert_eq!(slack["headers"]["Content-Type"], "application/json");
        slack_problems(&name, &slack["body"], &mut problems);

        // No webhook template ships: the CRM gets the original event.
        let hook = delivery(&deliveries, "webhook", &name);
        assert_eq!(hook["body"], event, "{name}: webhook body is the event");
        assert_eq!(
            hook["url"], "http://127.0.0.1:9/***",
            "{name}: path redacted"
        );

        let console = delivery(&deliveries, "stdout", &name);
        assert_eq!(console["method"], "PRINT", "{name}");
        assert!(console["url"].is_null(), "{name}");
        match console["body"].as_str() {
            Some(text) if !text.trim().is_empty() => {}
            _ => problems.push(format!("{name}: stdout body is not text: {console}")),
        }
    }
    assert_no_problems(&problems);
}

/// Odd but possible shapes: empty and whitespace text, unknown types, objects
/// where strings are expected, missing fields, unsafe URLs, huge values.
fn odd_events() -> Vec<(&'static str, Value)> {
    let ev = |event: &str, data: Value| json!({"website_id": "w-1", "event": event, "data": data, "timestamp": 1_748_952_083_417_i64});
    let big_targets: Vec<Value> = (0..40)
        .map(|i| json!({"title": format!("{i}").repeat(400), "description": "d".repeat(3000)}))
        .collect();
    vec![
        (
            "empty text",
            ev(
                "message:send",
                json!({"type": "text", "content": "", "from": "user"}),
            ),
        ),
        (
            "blank text and nickname",
            ev(
                "message:send",
                json!({"type": "text", "content": " \n ", "from": "user", "user": {"nickname": "  "}}),
            ),
        ),
        (
            "null content",
            ev("message:send", json!({"type": "text", "content": null})),
        ),
        (
            "no website id",
            json!({"website_id": "", "event": "message:send", "data": {"type": "text", "content": "hi"}}),
        ),
        (
            "no timestamp",
            json!({"website_id": "w", "event": "message:send", "data": {"type": "text", "content": "hi"}}),
        ),
        (
            "unknown type with object",
            ev(
                "message:send",
                json!({"type": "weird", "content": {"a": "<@1> @everyone [x](https://e.example)"}}),
            ),
        ),
        (
            "unknown type with string",
            ev(
                "message:send",
                json!({"type": "weird", "content": "<!channel> @here"}),
            ),
        ),
        (
            "empty object content",
            ev("message:send", json!({"type": "weird", "content": {}})),
        ),
        (
            "file with javascript url",
            ev(
                "message:send",
                json!({"type": "file", "content": {"name": "", "url": "javascript:alert(1)", "type": "image/png"}}),
            ),
        ),
        (
            "file without url",
            ev(
                "message:send",
                json!({"type": "file", "content": {"name": "[x](https://evil.example) @everyone"}}),
            ),
        ),
        (
            "file url with specials",
            ev(
                "message:send",
                json!({"type": "file", "content": {"name": "a", "url": "https://e.example/a\"b<c>|d)e(f`g*h_i[j]", "type": "image/png"}}),
            ),
        ),
        (
            "animation without url",
            ev(
                "message:send",
                json!({"type": "animation", "content": {"type": "image/gif"}}),
            ),
        ),
        (
            "audio without anything",
            ev("message:send", json!({"type": "audio", "content": {}})),
        ),
        (
            "audio with float duration",
            ev(
                "message:send",
                json!({"type": "audio", "content": {"url": "https://e.example/a.webm", "duration": 17.5}}),
            ),
        ),
        (
            "picker without choices",
            ev(
                "message:send",
                json!({"type": "picker", "content": {"text": "", "choices": []}}),
            ),
        ),
        (
            "picker hostile labels",
            ev(
                "message:send",
                json!({"type": "picker", "content": {"choices": [{"value": "<@1>", "selected": true}, {"label": "@everyone", "selected": true}]}}),
            ),
        ),
        (
            "field without value",
            ev(
                "message:send",
                json!({"type": "field", "content": {"text": "Q", "value": ""}}),
            ),
        ),
        (
            "empty carousel",
            ev("message:send", json!({"type": "carousel", "content": {}})),
        ),
        (
            "hostile carousel",
            ev(
                "message:send",
                json!({"type": "carousel", "content": {"text": "@here", "targets": [{"description": "<#C1|x>"}, {"title": "", "description": ""}]}}),
            ),
        ),
        (
            "empty event",
            ev("message:send", json!({"type": "event", "content": {}})),
        ),
        (
            "hostile user",
            ev(
                "message:send",
                json!({"type": "text", "content": "x", "user": {"nickname": "@everyone <@1> **b** [l](https://e.example)", "avatar": "javascript:x", "email": "a@here.example"}}),
            ),
        ),
        (
            "user is a string",
            ev(
                "message:send",
                json!({"type": "note", "content": "n", "user": "str", "origin": {"x": 1}}),
            ),
        ),
        (
            "huge carousel",
            ev(
                "message:send",
                json!({"type": "carousel", "content": {"text": "t".repeat(5000), "targets": big_targets}, "user": {"nickname": "n".repeat(500)}}),
            ),
        ),
        (
            "odd state",
            ev("session:set_state", json!({"state": "<!here>"})),
        ),
        ("no state", ev("session:set_state", json!({}))),
        (
            "email removed",
            ev("session:set_email", json!({"email": ""})),
        ),
        (
            "hostile contact",
            ev(
                "session:set_nickname",
                json!({"nickname": "@here <@1>", "email": "x@here.example", "phone": "<!channel>"}),
            ),
        ),
        ("empty profile", ev("people:profile:created", json!({}))),
    ]
}

#[test]
fn odd_events_render_within_limits_and_safely() {
    let work = Workdir::new(&all_kinds_config());
    let mut problems = Vec::new();
    for (i, (what, event)) in odd_events().into_iter().enumerate() {
        let rel = format!("odd-{i}.json");
        work.write(&rel, &event.to_string());
        let deliveries = render_json(&work, &work.path().join(&rel));
        assert_eq!(deliveries.len(), 4, "{what}: {deliveries:#?}");
        let discord = &delivery(&deliveries, "discord", what)["body"];
        discord_problems(what, discord, &mut problems);
        discord_hostile_problems(what, discord, &mut problems);
        let slack = &delivery(&deliveries, "slack", what)["body"];
        slack_problems(what, slack, &mut problems);
        slack_hostile_problems(what, slack, &mut problems);
    }
    assert_no_problems(&problems);
}

// ---------------------------------------------------------------------------
// 3. Hostile samples.

#[test]
fn visitor_text_cannot_ping_or_inject_markup() {
    let work = Workdir::new(&all_kinds_config());
    let mut problems = Vec::new();
    for name in fixture_names() {
        let deliveries = render_json(&work, &fixture_path(&name));
        discord_hostile_problems(
            &name,
            &delivery(&deliveries, "discord", &name)["body"],
            &mut problems,
        );
        slack_hostile_problems(
            &name,
            &delivery(&deliveries, "slack", &name)["body"],
            &mut problems,
        );
    }
    assert_no_problems(&problems);
}

/// The hostile text is still shown, escaped rather than dropped.
#[test]
fn hostile_samples_are_shown_escaped() {
    let work = Workdir::new(&all_kinds_config());
    let bodies = |name: &str| {
        let d = render_json(&work, &fixture_path(name));
        let text = |kind: &str| {
            invariants::strings(&delivery(&d, kind, name)["body"])
                .into_iter()
                .map(|(_, s)| s.to_owned())
                .collect::<Vec<_>>()
                .join("\n")
        };
        (text("discord"), text("slack"))
    };
    let has = |hay: &str, needle: &str, what: &str| {
        assert!(hay.contains(needle), "{what}: {needle:?} not in:\n{hay}");
    };

    let (discord, slack) = bodies("message_send_text_everyone_mention.json");
    has(
        &discord,
        "@\u{200B}everyone @\u{200B}here please look",
        "discord",
    );
    has(
        &slack,
        "@\u{200B}everyone @\u{200B}here please look",
        "slack",
    );

    let (discord, slack) = bodies("message_send_text_slack_special_tokens.json");
    has(
        &slack,
        "&lt;!channel&gt; &lt;!here&gt; &lt;@U024BE7LH&gt;",
        "slack",
    );
    has(
        &slack,
        "&lt;https://evil.example.com|click to claim refund&gt;",
        "slack",
    );
    has(&discord, "\\<!channel> \\<!here> \\<@U024BE7LH>", "discord");

    let (discord, slack) = bodies("message_send_text_markdown.json");
    has(&discord, "\\*\\*Bug report\\*\\*", "discord");
    has(&discord, "\\[docs\\](https://example.com/docs)", "discord");
    has(&discord, "\\|\\|spoiler\\|\\|", "discord");
    has(&discord, "\\`\\`\\`js", "discord");
    has(&slack, "Open `Settings &gt; Billing`", "slack");

    let (discord, slack) = bodies("message_send_text_html.json");
    has(&discord, "\\<script>alert('xss')\\</script>", "discord");
    has(&slack, "&lt;script&gt;alert('xss')&lt;/script&gt;", "slack");
    has(&slack, "&amp; &amp;amp; &amp;lt;tag&amp;gt;", "slack");

    // Links stay whole: the `url` helper writes them unescaped.
    for name in [
        "message_send_file_image.json",
        "message_send_file_pdf_email.json",
        "message_send_audio_voice.json",
        "message_send_animation_gif.json",
    ] {
        let url = fixture_json(name)["data"]["content"]["url"]
            .as_str()
            .unwrap()
            .to_owned();
        let (discord, slack) = bodies(name);
        has(&discord, &url, &format!("{name} discord"));
        has(&slack, &url, &format!("{name} slack"));
    }
    let d = render_json(&work, &fixture_path("message_send_audio_voice.json"));
    let slack = serde_json::to_string(&delivery(&d, "slack", "audio")["body"]).unwrap();
    has(&slack, "0:17", "audio duration");

    let original = fixture_json("message_send_text_unicode_emoji.json");
    let content = original["data"]["content"].as_str().unwrap();
    let nickname = original["data"]["user"]["nickname"].as_str().unwrap();
    let (discord, slack) = bodies("message_send_text_unicode_emoji.json");
    has(&discord, content, "discord");
    has(&discord, nickname, "discord");
    has(&slack, content, "slack");
}

// ---------------------------------------------------------------------------
// 4. Truncation.

/// Among `body`'s strings, those cut by the relay or a template (ending with
/// `…`) at least `min` units long.
fn cut_strings(body: &Value, min: usize) -> Vec<(String, String)> {
    invariants::strings(body)
        .into_iter()
        .filter(|(_, s)| s.ends_with('…') && units(s) >= min)
        .map(|(p, s)| (p, s.to_owned()))
        .collect()
}

fn assert_cut_prefix(original: &str, kept: &str, what: &str) {
    let kept = kept.strip_suffix('…').unwrap();
    assert!(!kept.is_empty(), "{what}: nothing kept");
    assert!(
        original.starts_with(kept),
        "{what}: the kept text is not a prefix of the original:\nkept: {:?}\norig: {:?}",
        &kept[kept.len().saturating_sub(80)..],
        &original[..original.len().min(kept.len() + 20)]
    );
}

#[test]
fn long_text_is_cut_with_an_ellipsis() {
    let work = Workdir::new(&all_kinds_config());
    let name = "message_send_text_long_5000.json";
    let original = fixture_json(name)["data"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(original.chars().count(), 5000);
    let deliveries = render_json(&work, &fixture_path(name));

    let discord = &delivery(&deliveries, "discord", name)["body"];
    let cut: Vec<_> = ["/content", "/embeds/0/description"]
        .iter()
        .filter_map(|p| discord.pointer(p).and_then(Value::as_str))
        .filter(|s| s.ends_with('…'))
        .collect();
    assert_eq!(cut.len(), 1, "one cut Discord text expected: {discord:#}");
    let text = cut[0];
    assert!(units(text) <= 4096 && units(text) > 1000, "{}", units(text));
    assert_cut_prefix(&original, &unescape_discord(text), "discord");

    let slack = &delivery(&deliveries, "slack", name)["body"];
    let cut = cut_strings(slack, 1000);
    assert!(!cut.is_empty(), "no cut Slack section: {slack:#}");
    for (path, text) in &cut {
        assert!(units(text) <= 3000, "{path}: {}", units(text));
        assert_cut_prefix(&original, &unescape_slack(text), &format!("slack {path}"));
    }

    // The stdout text is not cut: nothing is lost on the console.
    let console = delivery(&deliveries, "stdout", name)["body"]
        .as_str()
        .unwrap();
    assert!(console.contains(&original));
}

#[test]
fn cutting_never_splits_a_character() {
    let work = Workdir::new(&all_kinds_config());
    // The shipped unicode sample is short: it arrives whole.
    let name = "message_send_text_unicode_emoji.json";
    let mut event = fixture_json(name);
    let short = event["data"]["content"].as_str().unwrap().to_owned();
    let deliveries = render_json(&work, &fixture_path(name));
    let description = delivery(&deliveries, "discord", name)["body"]["embeds"][0]["description"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(unescape_discord(&description), short);

    // Made long, with characters of 1, 2 and (as ZWJ sequences) 5 UTF-16
    // units, at every alignment: every cut lands on a character boundary.
    for pad in ["", "a", "ab", "abc", "😀"] {
        let long = format!("{pad}{}", "👩\u{200D}💻é🇫🇷ж".repeat(700));
        assert!(units(&long) > 6000);
        event["data"]["content"] = Value::String(long.clone());
        work.write("long-unicode.json", &event.to_string());
        let deliveries = render_json(&work, &work.path().join("long-unicode.json"));

        let discord = &delivery(&deliveries, "discord", "long unicode")["body"];
        let description = discord["embeds"][0]["description"].as_str().unwrap();
        assert!(description.ends_with('…'), "pad {pad:?}: not cut");
        assert!(units(description) <= 4096, "pad {pad:?}");
        assert_cut_prefix(&long, &unescape_discord(description), "discord");

        let slack = &delivery(&deliveries, "slack", "long unicode")["body"];
        let cut = cut_strings(slack, 1000);
        assert!(!cut.is_empty(), "pad {pad:?}: no cut Slack text: {slack:#}");
        for (path, text) in &cut {
            assert!(units(text) <= 3000, "pad {pad:?} {path}");
            assert_cut_prefix(&long, &unescape_slack(text), &format!("slack {path}"));
        }
    }
}

// ---------------------------------------------------------------------------
// 5. The `render` command itself.

#[test]
fn render_without_json_is_readable() {
    let work = shipped_workdir();
    let path = fixture_path("message_send_text_basic.json");
    let out = work.run_with_env(&["render", "--event", path.to_str().unwrap()], SHIPPED_ENV);
    let text = stdout_of(&out);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        stderr_of(&out)
    );
    let first = text.lines().next().unwrap_or("");
    assert!(
        serde_json::from_str::<Value>(first).is_err(),
        "human output should not be JSON lines:\n{text}"
    );
    for target in ["team-discord", "support-slack", "console"] {
        assert!(text.contains(target), "{target} not in:\n{text}");
    }
    assert!(
        text.contains("Hi! Is the Pro plan billed monthly or yearly?"),
        "{text}"
    );
    // The console's plain text is printed as is, not as a JSON string.
    assert!(text.contains("New message from visitor493603"), "{text}");
    assert!(!text.contains("SECRETDISCORDTOKEN") && !text.contains("SECRETSLACKTOKEN"));

    // An event no route takes says so, and is not an error.
    let path = fixture_path("session_sync_pages.json");
    let out = work.run(&["render", "--event", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stdout_of(&out).contains("no route matches event `session:sync:pages`"),
        "{}",
        stdout_of(&out)
    );
}

#[test]
fn render_of_a_file_that_is_not_json_fails() {
    let work = Workdir::new(&all_kinds_config());
    work.write("not-json.json", "this is not { json");
    let out = work.run(&[
        "render",
        "--json",
        "--event",
        work.path().join("not-json.json").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("error"), "{err}");
    assert!(err.contains("not-json.json"), "names the file: {err}");
    assert!(stdout_of(&out).trim().is_empty(), "{}", stdout_of(&out));

    // Valid JSON that is not a Crisp envelope fails the same way.
    work.write("array.json", "[1, 2, 3]");
    let out = work.run(&[
        "render",
        "--event",
        work.path().join("array.json").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("error"), "{}", stderr_of(&out));
}

#[test]
fn render_reads_the_event_from_stdin() {
    let work = Workdir::new(&all_kinds_config());
    let name = "message_send_picker_choice.json";
    let out = work.run_with_stdin(
        &["render", "--json", "--event", "-"],
        &[],
        Some(&fixture(name)),
    );
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        stderr_of(&out)
    );
    let from_stdin: Vec<Value> = stdout_of(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(from_stdin.len(), 4, "{}", stdout_of(&out));
    assert_eq!(from_stdin, render_json(&work, &fixture_path(name)));
    let discord = &delivery(&from_stdin, "discord", name)["body"];
    assert!(
        discord["embeds"][0]["description"]
            .as_str()
            .is_some_and(|d| d.contains("Sales")),
        "the selected choice is shown: {discord}"
    );
}
