//! Property tests of the library's text handling (`crisp_relay::render` and
//! `crisp_relay::targets`), on generated input rather than samples:
//!
//! - truncation (`truncate`, `fit_string`, and the Discord and Slack `fit`
//!   that apply the destinations' limits) never cuts inside a character,
//!   keeps a prefix of the input followed by `…`, and always fits the limit
//!   in the unit the relay counts (`text_len`, UTF-16 code units);
//! - escaping (`escape_discord`, `escape_slack`, and `{{plain}}` in Discord
//!   JSON templates) keeps every promise of its doc comment for any input:
//!   no active mention, masked link or Slack control sequence, and nothing of
//!   the visitor's text lost;
//! - the same holds through the public rendering path: hostile text rendered
//!   by test templates in every mode, and by the shipped templates, then
//!   built into the request each target kind sends (fitted to its limits).
//!
//! Inputs are biased toward the dangerous patterns (built from fragments such
//! as `@`, `everyone`, `<`, `!`, `&`, `](`, `\`, zero-width spaces), mixed
//! with arbitrary strings. Case counts are kept small enough for the whole
//! module to run in a few seconds in a debug build; the regression cases
//! found by these properties are plain `#[test]`s at the end.

use std::sync::LazyLock;
use std::time::Duration;

use crisp_relay::config::Target;
use crisp_relay::model::{RateLimit, RetryPolicy, TargetKind};
use crisp_relay::render::{Rendered, Renderer, TemplateSource};
use crisp_relay::targets::invariants;
use crisp_relay::targets::{self, Body, discord, slack};
use crisp_relay::text::{
    escape_discord, escape_slack, fit_string, text_len, truncate, truncate_slack,
};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError};
use serde_json::{Value, json};

use crate::helpers::root;

/// A broken promise of `crisp_relay::targets::invariants` fails the case.
fn holds(check: Result<(), String>) -> Result<(), TestCaseError> {
    check.map_err(TestCaseError::fail)
}

/// Few cases, no regression files: failures are kept as `#[test]`s below.
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------
// Generators

/// Pieces of every pattern that could ping, link or inject, for Discord and
/// Slack, plus characters that stress truncation (multi-unit characters,
/// whitespace, backslashes).
#[rustfmt::skip]
const FRAGMENTS: &[&str] = &[
    "@", "everyone", "here", "channel", "<", ">", "!", "&", "amp;", "lt;", "gt;", "#", "[", "]",
    "](", "(", ")", "http://x", "\u{200B}", "\\", "\\\\", "*", "_", "~", "`", "|", "-", " ",
    "\n", "\t", "\r", "\"", ":", "/", "é", "😀", "👩\u{200D}💻", "…", "@everyone", "@here",
    "@channel", "<@123>", "<@&456>", "<#789>", "<!channel>", "<!here>", "<!everyone>",
    "<t:1:R>", "[x](http://y)", "&amp;", "&lt;", "&gt;", "> ", "# ", "- ", "```", "\u{3000}",
    "\u{A0}", "\u{FEFF}", "\u{2028}",
];

/// Text biased toward hostile patterns: fragment soup, fragments mixed with
/// arbitrary characters, or an arbitrary string.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(select(FRAGMENTS), 0..80).prop_map(|v| v.concat()),
        3 => prop::collection::vec(
            prop_oneof![select(FRAGMENTS).prop_map(str::to_owned), "(?s).{0,3}"],
            0..40
        )
        .prop_map(|v| v.concat()),
        1 => "(?s).{0,60}",
    ]
}

/// Characters of every UTF-8 length and UTF-16 width, whitespace and
/// backslashes (which truncation treats specially).
#[rustfmt::skip]
const UNITS: &[&str] = &[
    "a", "b", " ", "\n", "\\", "é", "€", "\u{200B}", "😀", "👩\u{200D}💻", "🇫🇷", "…", "e\u{301}",
];

/// `UNITS` and, now and then, any character.
fn truncation_text() -> impl Strategy<Value = String> {
    let unit = prop_oneof![
        4 => select(UNITS).prop_map(str::to_owned),
        1 => "(?s).",
    ];
    prop::collection::vec(unit, 0..60).prop_map(|v| v.concat())
}

/// What long strings are made of.
#[rustfmt::skip]
const LONG_UNITS: &[&str] = &["x", "é", "😀", "a ", "\\", "&amp;", "👩\u{200D}💻", "\u{200B}"];

/// A long string, cheap to make: one unit repeated (to go past the
/// destinations' limits of hundreds or thousands of units).
fn long_text() -> impl Strategy<Value = String> {
    (select(LONG_UNITS), 0usize..2500).prop_map(|(unit, n)| unit.repeat(n))
}

/// Short or long text (mostly short, and cheap to make: bodies hold
/// hundreds of strings).
fn any_len_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(select(UNITS), 0..40).prop_map(|v| v.concat()),
        1 => long_text(),
    ]
}

// ---------------------------------------------------------------------------
// (a) Truncation

// The promises checked here are `crisp_relay::targets::invariants`'s
// (`truncated`, `slack_truncated`, `discord_body_fitted`, ...).

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn truncate_keeps_a_whole_character_prefix_within_the_limit(
        s in truncation_text(),
        slack in 0usize..8,
        wide in any::<bool>(),
    ) {
        // Limits around the text's own length, where the cut happens.
        let len = text_len(&s);
        let max = if wide { len.saturating_sub(4) + slack } else { slack };
        let out = truncate(&s, max);
        holds(invariants::truncated(&s, max, &out))?;
        // fit_string is truncate in place, and leaves other values alone.
        let mut v = Value::String(s.clone());
        fit_string(&mut v, max);
        prop_assert_eq!(v.as_str(), Some(&*out));
        let mut n = json!(12345);
        fit_string(&mut n, 1);
        prop_assert_eq!(n, json!(12345));
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Slack text is fitted after escaping: the cut must not leave a bare
    /// `&` or a broken entity, and otherwise behaves like `truncate`.
    #[test]
    fn slack_truncation_never_cuts_an_entity(s in hostile(), max in 0usize..120) {
        let escaped = escape_slack(&s);
        let out = truncate_slack(&escaped, max);
        holds(invariants::slack_truncated(&escaped, max, &out))?;
    }
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn discord_bodies_are_fitted_to_every_limit(
        content in any_len_text(),
        username in any_len_text(),
        embeds in prop::collection::vec(
            (any_len_text(), any_len_text(), any_len_text(), any_len_text(),
             prop::collection::vec((any_len_text(), any_len_text()), 0..28)),
            0..12,
        ),
    ) {
        let embeds: Vec<Value> = embeds
            .into_iter()
            .map(|(title, description, author, footer, fields)| json!({
                "title": title,
                "description": description,
                "author": {"name": author},
                "footer": {"text": footer},
                "fields": fields.into_iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
            }))
            .collect();
        let original = json!({"content": content, "username": username, "embeds": embeds});
        let mut fitted = original.clone();
        let Value::Object(map) = &mut fitted else { unreachable!() };
        discord::fit(map);

        // Embeds, fields, every text and the embeds' total within the
        // limits; every text its original or a cut of it.
        holds(invariants::discord_body_fitted(&original, &fitted))?;
    }

    #[test]
    fn slack_bodies_are_fitted_to_every_limit(
        text in any_len_text(),
        blocks in prop::collection::vec(
            (select(&["section", "header", "context", "actions"][..]), any_len_text(),
             prop::collection::vec(any_len_text(), 0..13)),
            0..55,
        ),
    ) {
        let blocks: Vec<Value> = blocks
            .into_iter()
            .map(|(kind, t, items)| match kind {
                "section" => json!({
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": t},
                    "fields": items.iter().map(|f| json!({"type": "mrkdwn", "text": f})).collect::<Vec<_>>(),
                    "accessory": {"type": "button", "text": {"type": "plain_text", "text": t}},
                }),
                "header" => json!({"type": "header", "text": {"type": "plain_text", "text": t}}),
                "context" => json!({
                    "type": "context",
                    "elements": items.iter().map(|f| json!({"type": "mrkdwn", "text": f})).collect::<Vec<_>>(),
                }),
                _ => json!({
                    "type": "actions",
                    "elements": items.iter().map(|f| json!({"type": "button", "text": {"type": "plain_text", "text": f}})).collect::<Vec<_>>(),
                }),
            })
            .collect();
        let original = json!({"text": text, "blocks": blocks});
        let mut fitted = original.clone();
        let Value::Object(map) = &mut fitted else { unreachable!() };
        slack::fit(map);

        // Blocks, fields, context elements and every text within the
        // limits; every text its original or a cut of it.
        holds(invariants::slack_body_fitted(&original, &fitted))?;
    }
}

// ---------------------------------------------------------------------------
// (b) Escaping: every promise of `escape_discord`'s and `escape_slack`'s doc
// comments (`invariants::discord_escaped`, `invariants::slack_escaped`, on a
// model of how Discord reads backslashes and Slack decodes entities).

proptest! {
    #![proptest_config(config(768))]

    #[test]
    fn discord_escaping_defuses_any_text(s in hostile()) {
        holds(invariants::discord_escaped(&s, &escape_discord(&s)))?;
    }

    #[test]
    fn slack_escaping_defuses_any_text(s in hostile()) {
        holds(invariants::slack_escaped(&s, &escape_slack(&s)))?;
    }
}

// ---------------------------------------------------------------------------
// Through the rendering path: templates in every mode, then the request each
// kind of target sends (fitted to its limits).

fn sources(files: &[(&str, &str)]) -> Vec<TemplateSource> {
    files
        .iter()
        .map(|(f, t)| TemplateSource {
            file: (*f).into(),
            text: (*t).into(),
        })
        .collect()
}

/// Test templates putting `data.t` everywhere a value can land: message
/// text (Discord, Slack, plain), Discord embed fields (escaped, truncated
/// by the helper, `{{plain}}`), Slack blocks (including a header and a
/// button whose limits are short, so fitting cuts escaped text).
static TEST_TEMPLATES: LazyLock<Renderer> = LazyLock::new(|| {
    Renderer::new(&sources(&[
        ("t.hbs", "{{data.t}}"),
        (
            "j.discord.json.hbs",
            r#"{"content": "{{data.t}}", "embeds": [{
                "title": "{{data.t}}",
                "description": "{{truncate data.t 20}}",
                "author": {"name": "{{plain data.t}}"},
                "footer": {"text": "{{plain data.t}}"},
                "fields": [{"name": "{{data.t}}", "value": "{{data.t}}"}]}]}"#,
        ),
        (
            "j.slack.json.hbs",
            r#"{"text": "{{data.t}}", "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "{{data.t}}"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": "{{data.t}}"},
                 "accessory": {"type": "button", "text": {"type": "plain_text", "text": "{{data.t}}"}}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": "{{truncate data.t 20}}"}]},
                {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "{{data.t}}"}}]}]}"#,
        ),
        ("j.webhook.json.hbs", r#"{"text": "{{data.t}}"}"#),
    ]))
    .unwrap()
});

fn target(kind: TargetKind) -> Target {
    Target {
        name: kind.as_str().into(),
        kind,
        url: None,
        enabled: true,
        disabled_reason: "",
        username: None,
        avatar_url: None,
        headers: Vec::new(),
        method: "POST",
        rate_limit: None::<RateLimit>,
        retry: RetryPolicy::default(),
        timeout: Duration::from_secs(10),
        batch: 1,
        bot: None,
        threads: crisp_relay::model::Threads::None,
        thread_name: None,
        coalesce: true,
        replies: None,
    }
}

/// The rendered request's JSON body for `kind` (every target kind sends JSON
/// but `stdout`, which prints text).
fn build(kind: TargetKind, rendered: Rendered, event: &Value) -> Result<Value, TestCaseError> {
    match targets::build(&target(kind), rendered, event) {
        Ok(req) => match req.body {
            Body::Json(v) => Ok(v),
            Body::Text(t) => Ok(Value::String(t)),
        },
        Err(e) => Err(TestCaseError::fail(format!("{kind}: {e}"))),
    }
}

fn str_at<'a>(v: &'a Value, path: &str) -> Result<&'a str, TestCaseError> {
    v.pointer(path)
        .and_then(Value::as_str)
        .ok_or_else(|| TestCaseError::fail(format!("no string at {path} in {v}")))
}

proptest! {
    #![proptest_config(config(192))]

    #[test]
    fn hostile_text_rendered_in_every_mode_stays_defused(
        t in prop_oneof![3 => hostile(), 1 => hostile().prop_map(|s| s.repeat(12))],
    ) {
        let r = &*TEST_TEMPLATES;
        let event = json!({"event": "message:send", "website_id": "w", "data": {"t": t}});
        let render = |name, kind| {
            r.render(Some(name), kind, &event)
                .map_err(|e| TestCaseError::fail(format!("{name} for {kind}: {e}")))
        };

        // Text templates: escaped text, trimmed (destinations trim anyway).
        let Rendered::Text(d) = render("t", TargetKind::Discord)? else { unreachable!() };
        holds(invariants::discord_escaped(t.trim(), &d))?;
        let Rendered::Text(s) = render("t", TargetKind::Slack)? else { unreachable!() };
        holds(invariants::slack_escaped(t.trim(), &s))?;
        let Rendered::Text(p) = render("t", TargetKind::Stdout)? else { unreachable!() };
        prop_assert_eq!(p.as_str(), t.trim(), "plain text is as is");

        // Discord JSON: whatever the text, the body is valid JSON; after
        // fitting, nothing pings and every string is defused, those not cut
        // are exactly the escaping's promise, and the others are cuts of it.
        let rendered = render("j", TargetKind::Discord)?;
        let body = build(TargetKind::Discord, rendered, &event)?;
        holds(invariants::discord_body_defused(&body, &[]))?;
        let escaped = escape_discord(&t);
        for path in ["/content", "/embeds/0/title", "/embeds/0/fields/0/name", "/embeds/0/fields/0/value"] {
            let got = str_at(&body, path)?;
            if got == escaped {
                holds(invariants::discord_escaped(&t, got))?;
            } else {
                holds(invariants::cut_from(&escaped, got).map_err(|e| format!("{path}: {e}")))?;
            }
        }
        let description = str_at(&body, "/embeds/0/description")?;
        holds(invariants::discord_escaped(&truncate(&t, 20), description))?;
        for path in ["/embeds/0/author/name", "/embeds/0/footer/text"] {
            let got = str_at(&body, path)?;
            holds(invariants::discord_plain_defused(got).map_err(|e| format!("{path}: {e}")))?;
            if !got.ends_with('…') {
                holds(invariants::discord_plain(&t, got))?;
            }
        }

        // Slack JSON: every text is valid Slack text, including the ones
        // fitting cut (header 150, button 75 units), and is the escaped
        // text or a cut of it.
        let rendered = render("j", TargetKind::Slack)?;
        let body = build(TargetKind::Slack, rendered, &event)?;
        holds(invariants::slack_body_defused(&body, &[]))?;
        let escaped = escape_slack(&t);
        for (path, got) in invariants::strings(&body) {
            if path.ends_with("/type") {
                continue;
            }
            if path == "/blocks/2/elements/0/text" {
                holds(invariants::slack_escaped(&truncate(&t, 20), got))?;
            } else if got == escaped {
                holds(invariants::slack_escaped(&t, got))?;
            } else {
                holds(invariants::cut_from(&escaped, got).map_err(|e| format!("{path}: {e}")))?;
            }
        }

        // A generic webhook gets the text exactly (JSON escaping only).
        let rendered = render("j", TargetKind::Webhook)?;
        let body = build(TargetKind::Webhook, rendered, &event)?;
        prop_assert_eq!(&body, &json!({"text": t}));
    }
}

// ---------------------------------------------------------------------------
// The shipped templates, with hostile text in every field an event can carry.

static SHIPPED_TEMPLATES: LazyLock<Renderer> = LazyLock::new(|| {
    let dir = root().join("templates");
    let mut files: Vec<TemplateSource> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| TemplateSource {
            file: e.file_name().to_string_lossy().into_owned(),
            text: std::fs::read_to_string(e.path()).unwrap(),
        })
        .collect();
    files.sort_by(|a, b| a.file.cmp(&b.file));
    Renderer::new(&files).unwrap()
});

/// Which shipped template renders which events (as in the shipped
/// `relay.yaml`); `visitor_message` also takes any other event.
const SHIPPED: &[(&str, &[&str])] = &[
    (
        "visitor_message",
        &[
            "message:send",
            "message:received",
            "message:updated",
            "session:removed",
        ],
    ),
    (
        "contact_details",
        &[
            "session:set_email",
            "session:set_phone",
            "session:set_nickname",
        ],
    ),
    ("conversation_state", &["session:set_state"]),
    ("new_contact", &["people:profile:created"]),
];

fn hostile_event(t: &str, event: &str, ty: &str, from: &str, object_content: bool) -> Value {
    let content = if object_content {
        json!({
            "text": t, "name": t, "type": t, "value": t, "namespace": t,
            "url": "https://files.example/a.png",
            "choices": [{"label": t, "value": t, "selected": true}],
            "targets": [{"title": t, "description": t}],
        })
    } else {
        json!(t)
    };
    json!({
        "event": event,
        "website_id": t,
        "timestamp": 1_748_952_083_417_i64,
        "data": {
            "website_id": t, "session_id": t, "type": ty, "from": from, "origin": t,
            "content": content,
            "user": {"nickname": t, "email": t, "user_id": t},
            "nickname": t, "email": t, "phone": t, "state": t, "people_id": t,
            "person": {"nickname": t},
        },
    })
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn hostile_events_through_the_shipped_templates_stay_defused(
        t in hostile(),
        ty in select(&["text", "note", "file", "animation", "audio", "picker", "field", "carousel", "event", "other"][..]),
        from in select(&["user", "operator"][..]),
        object_content in any::<bool>(),
        which in 0usize..100,
    ) {
        let r = &*SHIPPED_TEMPLATES;
        for (template, events) in SHIPPED {
            let name = events[which % events.len()];
            let event = hostile_event(&t, name, ty, from, object_content);
            for kind in [TargetKind::Discord, TargetKind::Slack] {
                let rendered = r
                    .render(Some(template), kind, &event)
                    .map_err(|e| TestCaseError::fail(format!("{template} for {kind}: {e}")))?;
                let body = build(kind, rendered, &event)?;
                // Every string, links included (the helpers percent-encode
                // them, and the event's URL holds nothing to defuse).
                let checked = match kind {
                    TargetKind::Discord => invariants::discord_body_defused(&body, &[]),
                    _ => invariants::slack_body_defused(&body, &[]),
                };
                checked.map_err(|e| TestCaseError::fail(format!("{template} {kind}: {e}")))?;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Regression cases found by the properties above.

/// Slack bodies are fitted after escaping; fitting used the generic
/// `truncate`, which could cut `&lt;` to `&l…` (a bare `&`). Found by
/// `hostile_text_rendered_in_every_mode_stays_defused` on a header (150
/// units) and a button (75 units).
#[test]
fn slack_fitting_does_not_cut_an_entity() {
    let header = escape_slack(&"<".repeat(200)).into_owned();
    let button = escape_slack(&"a&".repeat(60)).into_owned();
    let body = slack::body(Rendered::Json(json!({"blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": header}},
        {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": button}}]},
    ]})))
    .unwrap();
    // 37 whole `&lt;` are 148 units; the 38th would not fit before the `…`.
    assert_eq!(
        body["blocks"][0]["text"]["text"],
        format!("{}…", "&lt;".repeat(37))
    );
    // `a&amp;` is 6 units: 12 fit in 74, then `a` and the start of an entity.
    assert_eq!(
        body["blocks"][1]["elements"][0]["text"]["text"],
        format!("{}a…", "a&amp;".repeat(12))
    );
    // Text that is not cut is left alone, whatever it holds.
    assert_eq!(truncate_slack("&am", 3), "&am");
    assert_eq!(truncate_slack("x &lt;", 4), "x…");
}

/// Whitespace other than spaces and tabs before block markup did not keep the
/// line start, so `"\r> quote"` or `"\u{3000}# title"` escaped nothing, and
/// once the relay (or Discord) trimmed the message the markup was live at its
/// start. Found by `hostile_text_rendered_in_every_mode_stays_defused` with
/// `"\r> "`.
#[test]
fn discord_block_markup_behind_any_whitespace_or_line_break_is_escaped() {
    for (input, want) in [
        ("\r> quote", "\r\\> quote"),
        ("\u{3000}# title", "\u{3000}\\# title"),
        ("\u{A0}\u{FEFF}- item", "\u{A0}\u{FEFF}\\- item"),
        ("a\r# b", "a\r\\# b"),
        ("a\u{2028}- b", "a\u{2028}\\- b"),
        // Mid-line markup stays as typed.
        ("a - b > c # d", "a - b > c # d"),
    ] {
        assert_eq!(escape_discord(input), want, "{input:?}");
    }
    let r = &*TEST_TEMPLATES;
    let event = json!({"data": {"t": "\r> quoted\n\u{3000}# big"}});
    assert_eq!(
        r.render(Some("t"), TargetKind::Discord, &event).unwrap(),
        Rendered::Text("\\> quoted\n\u{3000}\\# big".into())
    );
}
