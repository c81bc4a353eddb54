//! Shared code of the crisp-relay fuzz targets: loading the fixed relays, and
//! checking every rendered request against the invariants it must satisfy
//! (what src/render/ and src/targets/ promise, written once in
//! `crisp_relay::targets::invariants`). Each check panics with a description of
//! the broken promise, so a crash found by a target is a real bug.

use std::path::{Path, PathBuf};

use crisp_relay::Relay;
use crisp_relay::config::{Config, Target};
use crisp_relay::model::TargetKind;
use crisp_relay::render::{Renderer, TemplateSource, safe_url};
use crisp_relay::targets::{Body, OutgoingRequest};
use crisp_relay::targets::invariants;
use serde_json::Value;

/// Stands in for a missing `timestamp` (2025-06-03T12:01:23.417Z).
pub const RECEIVED_AT: i64 = 1_748_952_083_417;

/// The Discord target's `username` in the render relay.
pub const DISCORD_USERNAME: &str = "Crisp";

/// The repository root (the fuzz crate lives in `fuzz/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/ has a parent")
        .to_path_buf()
}

/// The shipped `templates/*.hbs`, as the relay reads them.
pub fn shipped_templates() -> Vec<TemplateSource> {
    let dir = repo_root().join("templates");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hbs"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| TemplateSource {
            file: p.file_name().unwrap().to_string_lossy().into_owned(),
            text: std::fs::read_to_string(&p).unwrap(),
        })
        .collect()
}

/// The names of the shipped templates (`visitor_message`, ...).
pub fn shipped_template_names() -> Vec<String> {
    Renderer::new(&shipped_templates())
        .expect("shipped templates compile")
        .names()
}

// ---------------------------------------------------------------------------
// The render relay: one target of each kind, the shipped templates, and a few
// fuzz-only templates that reach what the shipped ones do not.

const RENDER_CONFIG: &str = r#"
server: {keys: ["fuzz-key"]}
store: {path: /nonexistent/crisp-relay-fuzz.db}
targets:
  discord: {kind: discord, url: "https://discord.com/api/webhooks/123/fuzz-token", username: Crisp}
  slack: {kind: slack, url: "https://hooks.slack.com/services/T000/B000/fuzz"}
  hook: {kind: webhook, url: "https://crm.example.com/hooks/crisp", headers: {Authorization: "Bearer x"}}
  console: {kind: stdout}
"#;

/// Discord embeds with fields, authors and footers from visitor text, so that
/// field truncation, the 25-field and 10-embed caps and the 6000 total are
/// reached (the shipped templates use no fields).
const PROBE_DISCORD: &str = r#"{
  "content": "{{data.content.text}}",
  "embeds": [
    {"title": "{{data.user.nickname}}", "description": "{{data.content.text}}",
     "author": {"name": "{{plain data.user.nickname}}"},
     "footer": {"text": "{{plain data.content.text}}"},
     "fields": [{{#each data.content.choices}}{{#unless @first}},{{/unless}}{"name": "{{label}}", "value": "{{value}}", "inline": true}{{/each}}]}
    {{#each data.content.targets}},
    {"title": "{{title}}", "description": "{{description}}",
     "author": {"name": "{{plain title}}"}, "footer": {"text": "{{plain description}}"},
     "fields": [{{#each @root.data.content.choices}}{{#unless @first}},{{/unless}}{"name": "{{label}}", "value": "{{../description}}"}{{/each}}]}
    {{/each}}
  ]
}"#;

/// Slack blocks with section fields, context elements and buttons from
/// visitor text (the shipped templates use no fields and fixed button texts).
const PROBE_SLACK: &str = r#"{
  "text": "{{data.content.text}}",
  "link_names": 1,
  "parse": "full",
  "blocks": [
    {"type": "header", "text": {"type": "plain_text", "text": "{{data.user.nickname}}"}},
    {"type": "section", "text": {"type": "mrkdwn", "verbatim": true, "text": "{{data.content.text}}"},
     "fields": [{{#each data.content.choices}}{{#unless @first}},{{/unless}}{"type": "mrkdwn", "verbatim": true, "text": "{{label}} {{value}}"}{{/each}}],
     "accessory": {"type": "button", "text": {"type": "plain_text", "text": "{{data.user.nickname}}"}, "url": "{{url data.content.url}}"}}
    {{#each data.content.targets}},
    {"type": "context", "elements": [{"type": "mrkdwn", "verbatim": true, "text": "{{title}}"}, {"type": "plain_text", "text": "{{description}}"}]},
    {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "{{title}}"}, "url": "{{url @root.data.content.url}}"}]}
    {{/each}}
  ]
}"#;

/// A generic JSON body: JSON escaping must be exact (checked value by value).
const PROBE_WEBHOOK: &str = r#"{
  "raw": {{{json data}}},
  "event": "{{event}}",
  "content": "{{data.content}}",
  "nick": "{{data.user.nickname}}",
  "plain": "{{plain data.user.nickname}}",
  "url": "{{url data.content.url}}",
  "truncated": "{{truncate data.content 40}}",
  "date": "{{date timestamp "iso"}}",
  "origin": "{{origin data.origin}}",
  "website": "{{crisp_url website_id data.session_id}}"
}"#;

/// Plain text: written as it is.
const PROBE_STDOUT: &str = "{{data.content}}\n";

/// The templates a [`RenderRelay`] renders every event with, for each kind.
/// `text_NAME` is the shipped `NAME.hbs` alone, which Discord and Slack then
/// send as `content` / `text` (the fallback when a kind has no JSON template).
pub struct RenderRelay {
    pub relay: Relay,
    pub templates: Vec<String>,
}

impl RenderRelay {
    pub fn new() -> Self {
        let mut sources = shipped_templates();
        let names = Renderer::new(&sources).expect("shipped templates").names();
        let mut templates = names.clone();
        for name in &names {
            let text = sources
                .iter()
                .find(|s| s.file == format!("{name}.hbs"))
                .map(|s| s.text.clone());
            if let Some(text) = text {
                sources.push(TemplateSource {
                    file: format!("text_{name}.hbs"),
                    text,
                });
                templates.push(format!("text_{name}"));
            }
        }
        for (file, text) in [
            ("fuzz_probe.discord.json.hbs", PROBE_DISCORD),
            ("fuzz_probe.slack.json.hbs", PROBE_SLACK),
            ("fuzz_probe.webhook.json.hbs", PROBE_WEBHOOK),
            ("fuzz_probe.stdout.hbs", PROBE_STDOUT),
        ] {
            sources.push(TemplateSource {
                file: file.into(),
                text: text.into(),
            });
        }
        templates.push("fuzz_probe".into());
        let renderer = Renderer::new(&sources).expect("fuzz templates compile");
        let config = Config::parse(RENDER_CONFIG, "render.yaml", Path::new("/"), &|_| None)
            .unwrap_or_else(|e| panic!("render config: {e}"));
        Self {
            relay: Relay {
                config,
                renderer,
                path: PathBuf::from("render.yaml"),
            },
            templates,
        }
    }

    fn target(&self, kind: TargetKind) -> &Target {
        self.relay
            .config
            .targets
            .iter()
            .find(|t| t.kind == kind)
            .expect("one target per kind")
    }

    /// Renders `event` (a checked envelope) with every template for every
    /// kind through `Relay::prepare_for`, the path delivery uses, and checks
    /// every request.
    pub fn render_and_check(&self, event: &Value) {
        let exempt = url_helper_outputs(event);
        for template in &self.templates {
            for kind in TargetKind::ALL {
                // `text_NAME` is `NAME` for these kinds: rendered already.
                if template.starts_with("text_")
                    && matches!(kind, TargetKind::Webhook | TargetKind::Stdout)
                {
                    continue;
                }
                let target = self.target(kind);
                let what = format!("template {template}, kind {kind}");
                let req = match self.relay.prepare_for(target, Some(template), event) {
                    Ok(req) => req,
                    Err(e) => panic!("{what}: cannot build the request: {e}\nevent: {event}"),
                };
                let body = json_body(&req, &what);
                match kind {
                    TargetKind::Discord => check_discord(&what, body, &exempt),
                    TargetKind::Slack => check_slack(&what, body, &exempt),
                    TargetKind::Webhook if template == "fuzz_probe" => {
                        check_probe_webhook(&what, body, event)
                    }
                    // No webhook template ships: the original event is sent.
                    TargetKind::Webhook => {
                        assert_eq!(body, Some(event), "{what}: the event as it is")
                    }
                    TargetKind::Stdout => check_stdout(&what, &req, template, event),
                }
            }
        }
    }
}

impl Default for RenderRelay {
    fn default() -> Self {
        Self::new()
    }
}

fn json_body<'a>(req: &'a OutgoingRequest, what: &str) -> Option<&'a Value> {
    match &req.body {
        Body::Json(v) => {
            // The body is sent as its serialisation: it must read back the same.
            let text = serde_json::to_string(v).expect("serialises");
            let back: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{what}: body does not read back: {e}"));
            assert!(
                same_json(&back, v),
                "{what}: body changes through JSON at {}",
                first_difference(v, &back, "")
            );
            Some(v)
        }
        Body::Text(_) => None,
    }
}

/// Where `a` and `b` first differ, for messages.
fn first_difference(a: &Value, b: &Value, at: &str) -> String {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find(|(_, (a, b))| !same_json(a, b))
            .map(|(i, (a, b))| first_difference(a, b, &format!("{at}/{i}")))
            .unwrap_or_default(),
        (Value::Object(x), Value::Object(y)) if x.keys().eq(y.keys()) => x
            .iter()
            .zip(y)
            .find(|((_, a), (_, b))| !same_json(a, b))
            .map(|((k, a), (_, b))| first_difference(a, b, &format!("{at}/{k}")))
            .unwrap_or_default(),
        _ => format!("{at}: {a} vs {b}"),
    }
}

/// JSON equality where floats may differ in their last bits: without its
/// `float_roundtrip` feature (the relay does not enable it) serde_json parses
/// floats best-effort, e.g. the text `2.0547633648355666e-81` two units in the
/// last place off, so a float can drift each time JSON is read back.
pub fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()) + f64::MIN_POSITIVE
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && same_json(va, vb))
        }
        _ => a == b,
    }
}

fn check_stdout(what: &str, req: &OutgoingRequest, template: &str, event: &Value) {
    assert_eq!(req.method, "PRINT", "{what}");
    if template == "fuzz_probe"
        && let Some(content) = event.pointer("/data/content").and_then(Value::as_str)
    {
        // Plain mode writes values as they are.
        assert_eq!(
            req.body,
            Body::Text(content.trim().to_owned()),
            "{what}: plain text is not escaped"
        );
    }
}

// ---------------------------------------------------------------------------
// What the `url` helper may write, which is exempt from the mention checks:
// it is written without escaping by design (render.rs: "Written without
// markdown escaping (which would break the link) but with every character
// that could end a JSON string, a Slack <...> or a Discord (...)
// percent-encoded"), so `https://x.example/@everyone` stays a link. Pings are
// still impossible there: Discord bodies carry `allowed_mentions: {"parse":
// []}` and Slack bodies lose `link_names`/`parse`, both checked below.

/// The outputs of `{{url ...}}` for the event's URL-bearing fields.
pub fn url_helper_outputs(event: &Value) -> Vec<String> {
    let mut out: Vec<String> = ["/data/content/url", "/data/user/avatar"]
        .iter()
        .filter_map(|p| event.pointer(p).and_then(Value::as_str))
        .filter_map(safe_url)
        .filter(|u| !u.is_empty())
        .collect();
    out.sort_by_key(|u| std::cmp::Reverse(u.len()));
    out
}

/// Panics with `what` and the broken promise.
fn holds(what: &str, check: Result<(), String>) {
    if let Err(e) = check {
        panic!("{what}: {e}");
    }
}

/// Discord (targets/discord.rs and render/): a JSON object within Discord's
/// limits as the code counts them (UTF-16 units); nothing can ping
/// (`allowed_mentions: {"parse": []}` unless the template set its own, and
/// no shipped or fuzz template does; and no `@everyone`/`@here` in any
/// string, which gets U+200B after the `@`); no `<@id>`-style mention,
/// `<#id>`, `<t:…>` (every `<` backslash-escaped, or followed by U+200B in
/// `{{plain}}` fields, or — only at a cut — by the final `…`); no masked
/// link; the target's username; content or embeds. See
/// `invariants::discord_body_within_limits` and `discord_body_defused`.
pub fn check_discord(what: &str, body: Option<&Value>, exempt: &[String]) {
    let body = body.unwrap_or_else(|| panic!("{what}: Discord body is not JSON"));
    holds(what, invariants::discord_body_within_limits(body));
    assert_eq!(
        body.get("username").and_then(Value::as_str),
        Some(DISCORD_USERNAME),
        "{what}: username from the target"
    );
    holds(what, invariants::discord_body_not_empty(body));
    holds(what, invariants::discord_body_defused(body, exempt));
}

/// Slack (targets/slack.rs and render/): a JSON object within Block Kit's
/// limits as the code counts them, without `link_names`/`parse` (they
/// would turn `@channel` into a mention); no raw `<` or `>` anywhere
/// (values have them as entities, `{{url}}` and `{{crisp_url}}`
/// percent-encode them), so no `<!channel>`, `<@U…>`, `<url|text>`; no
/// `@channel`/`@here`/`@everyone` (U+200B after the `@`) and every `&`
/// starting `&amp;`, `&lt;` or `&gt;` in every string. See
/// `invariants::slack_body_within_limits` and `slack_body_defused`.
pub fn check_slack(what: &str, body: Option<&Value>, exempt: &[String]) {
    let body = body.unwrap_or_else(|| panic!("{what}: Slack body is not JSON"));
    holds(what, invariants::slack_body_within_limits(body));
    holds(what, invariants::slack_body_defused(body, exempt));
}

/// The generic JSON probe: JSON-mode escaping is exact and lossless.
fn check_probe_webhook(what: &str, body: Option<&Value>, event: &Value) {
    let body = body.unwrap_or_else(|| panic!("{what}: webhook body is not JSON"));
    let data = &event["data"];
    assert!(
        same_json(&body["raw"], data),
        "{what}: {{{{{{json data}}}}}}"
    );
    assert_eq!(body["event"], event["event"], "{what}: event");
    if let Some(content) = data.get("content").and_then(Value::as_str) {
        assert_eq!(body["content"].as_str(), Some(content), "{what}: content");
        let cut = crisp_relay::text::truncate(content, 40);
        assert_eq!(body["truncated"].as_str(), Some(&*cut), "{what}: truncate");
    }
    if let Some(nick) = data.pointer("/user/nickname").and_then(Value::as_str) {
        assert_eq!(body["nick"].as_str(), Some(nick), "{what}: nickname");
        assert_eq!(body["plain"].as_str(), Some(nick), "{what}: plain");
    }
    let url = data
        .pointer("/content/url")
        .and_then(Value::as_str)
        .and_then(safe_url)
        .unwrap_or_default();
    assert_eq!(body["url"].as_str(), Some(url.as_str()), "{what}: url");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_passes_the_render_checks() {
        let relay = RenderRelay::new();
        let dir = repo_root().join("tests/fixtures/crisp-events");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "json") {
                let bytes = std::fs::read(&path).unwrap();
                let event = crisp_relay::event::Event::parse(&bytes, RECEIVED_AT).unwrap();
                relay.render_and_check(event.value());
                n += 1;
            }
        }
        assert!(n > 100, "{n} fixtures");
    }

    #[test]
    fn url_exemption_covers_a_cut_url() {
        let ex = vec!["https://e.example/@everyone/x".to_owned()];
        assert_eq!(
            invariants::without_links("a https://e.example/@everyone/x b", &ex),
            "a  b"
        );
        assert_eq!(
            invariants::without_links("a https://e.example/@every…", &ex),
            "a …"
        );
        assert_eq!(invariants::without_links("a @everyone", &ex), "a @everyone");
    }
}
