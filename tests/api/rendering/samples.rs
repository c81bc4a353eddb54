//! Every sample event, and odd but possible ones, rendered for every target
//! kind: the request is whole, within Discord's and Slack's limits and well
//! formed, and visitor text can neither ping nor inject markup or links
//! (the checks of `crisp_relay::targets::invariants`).

use std::collections::BTreeSet;

use crisp_relay::targets::invariants;
use serde_json::{Value, json};

use super::*;
use crate::helpers::*;

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
// Every sample, every kind, within limits.

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
// Hostile samples.

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
