//! Benchmarks of the relay's per-event hot paths, through the public API only.
//!
//! `cargo bench --bench hot_paths` (add `-- --warm-up-time 1 --measurement-time 3`
//! for a quick run). Each group holds a baseline next to the relay's code —
//! a plain `serde_json::Value` parse, a `String` copy — so that results read
//! as ratios, which stay meaningful on a noisy, shared machine.
//!
//! Groups:
//! - `envelope`: `Event::parse` vs `serde_json::from_slice::<Value>` of the same bytes.
//! - `routing`: `Router::route` with 10 and 1,000 routes loaded from generated
//!   `relay.yaml` text via `Relay::load_with_env`, for an event that matches the
//!   first route and two that only reach the catch-all.
//! - `render`: `Relay::prepare_for` (render + request build) and `Renderer::render`
//!   alone, per target kind, with the shipped `templates/`.
//! - `request_build`: `targets::build` from an already rendered template.
//! - `escape_truncate`: `escape_discord`, `escape_slack`, `truncate` and the
//!   Discord/Slack body fitting on 6,000-character texts vs a `String` copy.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use crisp_relay::Relay;
use crisp_relay::config::Target;
use crisp_relay::event::Event;
use crisp_relay::targets::{self, discord, slack};
use crisp_relay::text::{escape_discord, escape_slack, truncate};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Map, Value, json};
use tempfile::TempDir;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(MANIFEST_DIR)
        .join("tests/fixtures/crisp-events")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn event(name: &str) -> Event {
    Event::parse(&fixture(name), 0).unwrap_or_else(|e| panic!("{name}: {e}"))
}

// ---------------------------------------------------------------------------
// Loading a relay the way `serve` does: a relay.yaml file next to a templates
// directory, read by `Relay::load_with_env`.

/// A JSON webhook template for the benches: the repository ships none, so a
/// webhook target would otherwise only ever send the event as it is.
const WEBHOOK_TEMPLATE: &str = r#"{
  "event": "{{event}}",
  "website_id": "{{website_id}}",
  "session_id": "{{data.session_id}}",
  "from": "{{data.from}}",
  "nickname": "{{default data.user.nickname "A visitor"}}",
  "text": "{{truncate data.content 1000}}",
  "url": "{{crisp_url website_id data.session_id}}",
  "at": "{{date timestamp "iso"}}"
}
"#;

const TARGETS_YAML: &str = r#"server:
  keys: ["${BENCH_KEY}"]
targets:
  team-discord: {kind: discord, url: "https://discord.com/api/webhooks/123456789/bench-token", username: Crisp}
  support-slack: {kind: slack, url: "https://hooks.slack.com/services/T0000/B0000/bench-token"}
  crm: {kind: webhook, url: "https://crm.example.com/hooks/crisp", headers: {Authorization: "Bearer bench"}}
  console: {kind: stdout}
"#;

/// Writes `config` as relay.yaml in a new directory, with a copy of the
/// repository's templates (plus [`WEBHOOK_TEMPLATE`]), and loads it.
fn load_relay(config: &str) -> (TempDir, Relay) {
    let dir = tempfile::tempdir().expect("tempdir");
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).expect("templates dir");
    for entry in std::fs::read_dir(Path::new(MANIFEST_DIR).join("templates")).expect("templates/") {
        let path: PathBuf = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "hbs") {
            std::fs::copy(&path, templates.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    std::fs::write(
        templates.join("visitor_message.webhook.json.hbs"),
        WEBHOOK_TEMPLATE,
    )
    .expect("webhook template");
    let path = dir.path().join("relay.yaml");
    std::fs::write(&path, config).expect("relay.yaml");
    let relay = Relay::load_with_env(&path, &|k| (k == "BENCH_KEY").then(|| "bench".to_owned()))
        .unwrap_or_else(|e| panic!("generated config does not load: {e}\n{config}"));
    (dir, relay)
}

fn target<'r>(relay: &'r Relay, name: &str) -> &'r Target {
    &relay.config.targets[relay.config.target_index(name).expect("target")]
}

// ---------------------------------------------------------------------------
// 1. envelope

fn envelope(c: &mut Criterion) {
    let mut g = c.benchmark_group("envelope");
    for (label, file) in [
        ("basic", "message_send_text_basic.json"),
        ("long_5000", "message_send_text_long_5000.json"),
    ] {
        let body = fixture(file);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::new("event_parse", label), &body, |b, body| {
            b.iter(|| Event::parse(black_box(body), black_box(0)).expect("valid"))
        });
        g.bench_with_input(
            BenchmarkId::new("baseline_serde_value", label),
            &body,
            |b, body| b.iter(|| serde_json::from_slice::<Value>(black_box(body)).expect("valid")),
        );
    }
    g.finish();
}

// ---------------------------------------------------------------------------
// 2. routing

/// Real Crisp event names the generated routes spread over.
const EVENT_NAMES: [&str; 15] = [
    "message:send",
    "message:received",
    "message:updated",
    "message:removed",
    "message:notify:unread:send",
    "session:set_email",
    "session:set_phone",
    "session:set_nickname",
    "session:set_state",
    "session:set_segments",
    "session:set_data",
    "session:removed",
    "people:profile:created",
    "people:profile:updated",
    "campaign:dispatched",
];

/// relay.yaml text with `n` routes: `n - 1` specific ones (an exact event
/// name plus conditions on data.origin / data.type / website_id / a regex on
/// the content / `any:`; every 50th a glob on the event name instead), then a
/// catch-all `event: "*"` route.
fn routes_config(n: usize) -> String {
    let mut s = String::from(TARGETS_YAML);
    s.push_str("routes:\n");
    const TO: [&str; 4] = [
        "[team-discord]",
        "[support-slack]",
        "[crm]",
        "[team-discord, console]",
    ];
    const GLOBS: [&str; 3] = ["message:*", "session:*", "people:*"];
    for i in 0..n - 1 {
        let name = EVENT_NAMES[i % EVENT_NAMES.len()];
        let conditions = if i % 50 == 49 {
            format!(
                "event: \"{}\", data.from: user, data.origin: email",
                GLOBS[(i / 50) % GLOBS.len()]
            )
        } else {
            // (i + i/15) % 7 gives every event name every variant.
            let variant = match (i + i / EVENT_NAMES.len()) % 7 {
                0 => "data.origin: chat".to_owned(),
                1 => "data.type: text, data.from: user".to_owned(),
                2 => format!("website_id: \"00000000-0000-4000-8000-{i:012}\""),
                3 => r"data.content: {regex: '(?i)\b(refund|chargeback)\b'}".to_owned(),
                4 => r"data.origin: {regex: '^urn:crisp\.im:(whatsapp|messenger|instagram):'}"
                    .to_owned(),
                5 => r"any: [{data.user.nickname: {contains: VIP}}, {data.user.email: {regex: '@bigcorp\.example$'}}]"
                    .to_owned(),
                _ => r#"data.from: user, data.origin: [email, "urn:crisp.im:contact-form:0"]"#
                    .to_owned(),
            };
            format!("event: \"{name}\", {variant}")
        };
        s.push_str(&format!(
            "  - name: r{i}\n    match: {{{conditions}}}\n    to: {}\n    template: visitor_message\n",
            TO[i % TO.len()]
        ));
    }
    s.push_str("  - name: everything-else\n    match: {event: \"*\"}\n    to: [crm]\n");
    s
}

fn routing(c: &mut Criterion) {
    let events = [
        // Matches the first route (message:send from a chat).
        ("first_route", event("message_send_text_basic.json")),
        // A routed event name whose every route fails: only the catch-all.
        (
            "catch_all_listed_name",
            event("message_received_text_slack_origin.json"),
        ),
        // An event name no specific route names: only the catch-all.
        (
            "catch_all_other_name",
            event("session_sync_geolocation.json"),
        ),
    ];
    let mut g = c.benchmark_group("routing");
    for n in [10, 1000] {
        let (_dir, relay) = load_relay(&routes_config(n));
        let router = &relay.config.router;
        assert_eq!(router.routes().len(), n);
        for (label, ev) in &events {
            // The scenario holds: the route reached is the one the label says.
            let got = router.route(ev.value());
            let want_route = if *label == "first_route" { 0 } else { n - 1 };
            assert!(
                !got.is_empty() && got.iter().all(|d| d.route == want_route),
                "{label} with {n} routes: {got:?}"
            );
            g.bench_with_input(
                BenchmarkId::new(format!("{n}_routes"), label),
                ev.value(),
                |b, v| b.iter(|| router.route(black_box(v))),
            );
        }
    }
    g.finish();
}

// ---------------------------------------------------------------------------
// 3. render and 4. request_build

/// One target per kind; `template` is what the route would pass.
const KINDS: [(&str, &str, Option<&str>); 5] = [
    ("discord", "team-discord", Some("visitor_message")),
    ("slack", "support-slack", Some("visitor_message")),
    ("webhook", "crm", Some("visitor_message")),
    // No template: the webhook gets the event as it is (a clone).
    ("webhook_event", "crm", None),
    ("stdout_text", "console", Some("visitor_message")),
];

fn render_relay() -> (TempDir, Relay) {
    load_relay(&format!(
        "{TARGETS_YAML}routes:\n  - name: all\n    to: [team-discord, support-slack, crm, console]\n    template: visitor_message\n"
    ))
}

fn render(c: &mut Criterion) {
    let (_dir, relay) = render_relay();
    let basic = event("message_send_text_basic.json");
    let long = event("message_send_text_long_5000.json");
    let mut g = c.benchmark_group("render");
    for (kind, name, template) in KINDS {
        let t = target(&relay, name);
        let v = basic.value();
        relay.prepare_for(t, template, v).expect("prepares");
        g.bench_function(BenchmarkId::new("prepare_for", kind), |b| {
            b.iter(|| {
                relay
                    .prepare_for(t, black_box(template), black_box(v))
                    .expect("prepares")
            })
        });
        g.bench_function(BenchmarkId::new("render_only", kind), |b| {
            b.iter(|| {
                relay
                    .renderer
                    .render(black_box(template), t.kind, black_box(v))
                    .expect("renders")
            })
        });
    }
    // The 5,000-character message: escaping and fitting on real length.
    for (kind, name) in [("discord", "team-discord"), ("slack", "support-slack")] {
        let t = target(&relay, name);
        g.bench_function(BenchmarkId::new("prepare_for_long_5000", kind), |b| {
            b.iter(|| {
                relay
                    .prepare_for(t, Some("visitor_message"), black_box(long.value()))
                    .expect("prepares")
            })
        });
    }
    g.finish();
}

fn request_build(c: &mut Criterion) {
    let (_dir, relay) = render_relay();
    let basic = event("message_send_text_basic.json");
    let v = basic.value();
    let mut g = c.benchmark_group("request_build");
    for (kind, name, template) in KINDS {
        let t = target(&relay, name);
        let rendered = relay.renderer.render(template, t.kind, v).expect("renders");
        // `build` consumes the rendered value: clone it outside the timing.
        g.bench_function(kind, |b| {
            b.iter_batched(
                || rendered.clone(),
                |r| targets::build(t, r, black_box(v)).expect("builds"),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------
// 5. escape_truncate

/// `unit` repeated and cut to exactly `chars` characters.
fn text_of(unit: &str, chars: usize) -> String {
    unit.chars().cycle().take(chars).collect()
}

const TEXT_CHARS: usize = 6000;

fn texts() -> [(&'static str, String); 3] {
    [
        (
            "ascii_plain",
            text_of(
                "Hello, I am writing again about order 48213 because the invoice still shows \
                 the old billing address. Could you please regenerate it and send it to us? \
                 We need it before the end of the month for our VAT declaration. Thanks!\n",
                TEXT_CHARS,
            ),
        ),
        (
            "markup_mentions",
            text_of(
                "**Urgent** @everyone <@123456789> see [this](https://evil.example/x) _now_ \
                 ~~old~~ `code` | spoiler ||x|| & <!channel> @here a\\b\n# title\n- item\n> quote\n",
                TEXT_CHARS,
            ),
        ),
        (
            "cjk_emoji",
            text_of(
                "你好，我想问一下专业版是按月还是按年计费？こんにちは、請求書を再発行してください。\
                 감사합니다 😀👍🏽🇫🇷👨‍👩‍👧‍👦 🎉✨\n",
                TEXT_CHARS,
            ),
        ),
    ]
}

/// A Discord body with one embed whose texts total well over 6,000: the
/// per-field caps and then the 6,000 total (water-filling) both cut.
fn discord_embed_body(text: &str) -> Map<String, Value> {
    let head = |n: usize| -> String { text.chars().take(n).collect() };
    let body = json!({
        "content": text,
        "allowed_mentions": {"parse": []},
        "embeds": [{
            "title": head(300),
            "description": text,
            "author": {"name": head(300)},
            "footer": {"text": head(2100)},
            "fields": (0..4).map(|i| json!({"name": format!("Field {i}"), "value": head(1100)})).collect::<Vec<_>>(),
        }],
    });
    match body {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

/// A Slack body: top-level text, a header, a section and a context element,
/// each over its limit.
fn slack_blocks_body(text: &str) -> Map<String, Value> {
    let head = |n: usize| -> String { text.chars().take(n).collect() };
    let body = json!({
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": head(200)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": text},
             "fields": (0..4).map(|_| json!({"type": "mrkdwn", "text": head(2100)})).collect::<Vec<_>>()},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]},
        ],
    });
    match body {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn escape_truncate(c: &mut Criterion) {
    // The inputs do what the benches claim: the embed is over Discord's
    // 6,000 total before fitting and within it after.
    for (label, text) in texts() {
        assert_eq!(text.chars().count(), TEXT_CHARS, "{label}");
        let mut m = discord_embed_body(&text);
        m.remove("content");
        let before = discord::embeds_total(&Value::Object(m.clone()));
        discord::fit(&mut m);
        let after = discord::embeds_total(&Value::Object(m));
        assert!(
            before > discord::EMBEDS_TOTAL_MAX && after <= discord::EMBEDS_TOTAL_MAX,
            "{label}: {before} -> {after}"
        );
    }
    let mut g = c.benchmark_group("escape_truncate");
    for (label, text) in texts() {
        g.throughput(Throughput::Bytes(text.len() as u64));
        let s = text.as_str();
        g.bench_function(BenchmarkId::new("baseline_copy", label), |b| {
            b.iter(|| black_box(s).to_owned())
        });
        // `into_owned` as the renderer's escape function does: an owned
        // String either way, comparable to the copy.
        g.bench_function(BenchmarkId::new("escape_discord", label), |b| {
            b.iter(|| escape_discord(black_box(s)).into_owned())
        });
        g.bench_function(BenchmarkId::new("escape_slack", label), |b| {
            b.iter(|| escape_slack(black_box(s)).into_owned())
        });
        // Discord's content limit.
        g.bench_function(BenchmarkId::new("truncate_2000", label), |b| {
            b.iter(|| truncate(black_box(s), black_box(2000)).into_owned())
        });
        // The body is rebuilt outside the timing; `fit` cuts in place.
        let discord_body = discord_embed_body(s);
        g.bench_function(BenchmarkId::new("discord_fit_embed", label), |b| {
            b.iter_batched_ref(
                || discord_body.clone(),
                |m| discord::fit(black_box(m)),
                BatchSize::SmallInput,
            )
        });
        let slack_body = slack_blocks_body(s);
        g.bench_function(BenchmarkId::new("slack_fit_blocks", label), |b| {
            b.iter_batched_ref(
                || slack_body.clone(),
                |m| slack::fit(black_box(m)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    envelope,
    routing,
    render,
    request_build,
    escape_truncate
);
criterion_main!(benches);
