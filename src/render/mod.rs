//! Templates: the Handlebars registries, helpers and per-target escaping.
//!
//! Owns turning an event into text or a JSON body for one target kind. Every
//! `{{value}}` is escaped for the place it lands: Discord markdown and
//! mentions, Slack control characters, JSON strings (the functions are in
//! [`crate::text`]); `{{{value}}}` opts out and is unsafe with visitor text.
//! Helpers are in `helpers`, date formatting in `dates`. This module does no
//! I/O: the caller reads the template files and hands over their text
//! ([`TemplateSource`]); it must not know targets' wire formats (that is
//! [`crate::targets`]).

mod dates;
mod helpers;

use std::collections::BTreeMap;

use handlebars::{Handlebars, RenderErrorReason};
use serde_json::Value;
use thiserror::Error;

pub use dates::{format_iso8601, format_readable};
pub use helpers::{origin_label, safe_url};

use crate::model::TargetKind;
use crate::text::{escape_discord, escape_json_str, escape_slack};

/// How values are escaped in one registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// Discord message text: markdown and mentions neutralised.
    DiscordText,
    /// A whole Discord JSON body: Discord escaping, then JSON string escaping.
    DiscordJson,
    /// Slack mrkdwn text: `&`, `<`, `>` as entities.
    SlackText,
    /// A whole Slack JSON body: Slack escaping, then JSON string escaping.
    SlackJson,
    /// A generic JSON body: JSON string escaping only.
    Json,
    /// Plain text (stdout, or wrapped by the relay as a JSON string): as is.
    Plain,
}

impl Mode {
    const ALL: [Mode; 6] = [
        Mode::DiscordText,
        Mode::DiscordJson,
        Mode::SlackText,
        Mode::SlackJson,
        Mode::Json,
        Mode::Plain,
    ];

    pub fn is_json(self) -> bool {
        matches!(self, Mode::DiscordJson | Mode::SlackJson | Mode::Json)
    }

    pub(crate) fn escape(self, s: &str) -> String {
        match self {
            Mode::DiscordText => escape_discord(s).into_owned(),
            Mode::DiscordJson => escape_json_str(&escape_discord(s)),
            Mode::SlackText => escape_slack(s).into_owned(),
            Mode::SlackJson => escape_json_str(&escape_slack(s)),
            Mode::Json => escape_json_str(s),
            Mode::Plain => s.to_owned(),
        }
    }
}

/// One template file's name (relative to the templates directory) and text.
pub struct TemplateSource {
    pub file: String,
    pub text: String,
}

/// A template file that does not compile, with its position.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{file}:{line}:{column}: template does not compile: {reason}")]
pub struct TemplateError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

/// Why rendering failed for one event and target.
#[derive(Debug, Error)]
pub enum RenderError {
    #[error("template `{template}` failed: {reason}")]
    Template { template: String, reason: String },
    #[error("template `{template}` did not produce valid JSON: {reason}")]
    InvalidJson { template: String, reason: String },
}

/// What a template produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Rendered {
    /// Message text, which the target wraps (Discord `content`, Slack `text`).
    Text(String),
    /// A whole JSON body.
    Json(Value),
    /// No template applies: the original event is sent as it is.
    Event,
}

/// A resolved template: which registry, and the name inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub mode: Mode,
    pub key: String,
    pub file: String,
}

/// All templates, compiled once into one registry per escaping mode.
pub struct Renderer {
    registries: BTreeMap<Mode, Handlebars<'static>>,
    /// Template key (file name without `.hbs`) → file name.
    files: BTreeMap<String, String>,
    /// `.hbs` files whose name fits no pattern: (file, why).
    ignored: Vec<(String, String)>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("templates", &self.files.keys())
            .finish()
    }
}

impl Renderer {
    /// Compiles every template. `NAME.<kind>.json.hbs` renders a whole JSON
    /// body for that kind, `NAME.<kind>.hbs` message text for it, `NAME.hbs`
    /// message text for any kind, and `_NAME.hbs` is a partial (`{{> NAME}}`)
    /// available to all of them.
    pub fn new(sources: &[TemplateSource]) -> Result<Self, Vec<TemplateError>> {
        let mut registries: BTreeMap<Mode, Handlebars<'static>> =
            Mode::ALL.iter().map(|&m| (m, registry(m))).collect();
        let mut files = BTreeMap::new();
        let mut errors = Vec::new();
        let mut ignored = Vec::new();
        for src in sources {
            let Some(stem) = src.file.strip_suffix(".hbs") else {
                continue;
            };
            let compile_err = |e: handlebars::TemplateError| {
                let (line, column) = e.pos().unwrap_or((1, 1));
                TemplateError {
                    file: src.file.clone(),
                    line,
                    column,
                    reason: e.reason().to_string(),
                }
            };
            if let Some(partial) = stem.strip_prefix('_') {
                for reg in registries.values_mut() {
                    if let Err(e) = reg.register_partial(partial, src.text.as_str()) {
                        errors.push(compile_err(e));
                        break;
                    }
                }
                continue;
            }
            let modes = modes_for(stem);
            if modes.is_empty() {
                ignored.push((src.file.clone(), unknown_suffix(stem)));
                continue;
            }
            for mode in modes {
                if let Some(reg) = registries.get_mut(&mode)
                    && let Err(e) = reg.register_template_string(stem, src.text.as_str())
                {
                    errors.push(compile_err(e));
                    break;
                }
            }
            files.insert(stem.to_owned(), src.file.clone());
        }
        if errors.is_empty() {
            Ok(Self {
                registries,
                files,
                ignored,
            })
        } else {
            Err(errors)
        }
    }

    /// Compiles each target's `thread_name` (Handlebars, plain text), as
    /// `(target, source)`.
    pub fn add_thread_names(
        &mut self,
        names: &[(String, String)],
    ) -> Result<(), Vec<TemplateError>> {
        let mut errors = Vec::new();
        if let Some(reg) = self.registries.get_mut(&Mode::Plain) {
            for (target, source) in names {
                if let Err(e) = reg.register_template_string(&thread_name_key(target), source) {
                    let (line, column) = e.pos().unwrap_or((1, 1));
                    errors.push(TemplateError {
                        file: format!("thread_name of target `{target}`"),
                        line,
                        column,
                        reason: e.reason().to_string(),
                    });
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The thread name of `target` for `event`, if the target has one.
    pub fn render_thread_name(&self, target: &str, event: &Value) -> Option<String> {
        self.registries
            .get(&Mode::Plain)?
            .render(&thread_name_key(target), event)
            .ok()
    }

    /// The `.hbs` files ignored because their name fits no pattern, with
    /// why (for `check`'s warnings).
    pub fn ignored(&self) -> &[(String, String)] {
        &self.ignored
    }

    /// Template names (file names without `.hbs`), for hints.
    pub fn names(&self) -> Vec<String> {
        let names: std::collections::BTreeSet<&str> = self
            .files
            .keys()
            .map(|k| k.split('.').next().unwrap_or(k))
            .collect();
        names.into_iter().map(str::to_owned).collect()
    }

    /// Which template `name` means for a target of `kind`, if any.
    pub fn resolve(&self, name: &str, kind: TargetKind) -> Option<Resolved> {
        candidates(name, kind).into_iter().find_map(|(key, mode)| {
            self.files.get(&key).map(|file| Resolved {
                mode,
                key,
                file: file.clone(),
            })
        })
    }

    /// Renders `event` (the whole envelope) with `template` for `kind`.
    /// `None` or a name with no file for a webhook or stdout target gives
    /// [`Rendered::Event`].
    pub fn render(
        &self,
        template: Option<&str>,
        kind: TargetKind,
        event: &Value,
    ) -> Result<Rendered, RenderError> {
        let Some(name) = template else {
            return Ok(Rendered::Event);
        };
        let Some(resolved) = self.resolve(name, kind) else {
            return match kind {
                TargetKind::Webhook | TargetKind::Stdout => Ok(Rendered::Event),
                _ => Err(RenderError::Template {
                    template: name.to_owned(),
                    reason: format!("no template for kind {kind}"),
                }),
            };
        };
        let reg = &self.registries[&resolved.mode];
        let text = match reg.render(&resolved.key, event) {
            // A path went through a list by name (`data.content.url` with
            // `content` a list): handlebars-rust fails the whole render
            // where Handlebars.js yields "missing". Render again with lists
            // seen as objects keyed by index, where such a name is missing.
            Err(e) if matches!(e.reason(), RenderErrorReason::InvalidJsonIndex(_)) => {
                let _original = OriginalEvent::set(event);
                reg.render(&resolved.key, &lists_as_objects(event))
            }
            other => other,
        }
        .map_err(|e| RenderError::Template {
            template: resolved.file.clone(),
            reason: render_reason(&e),
        })?;
        if resolved.mode.is_json() {
            serde_json::from_str(&text)
                .map(Rendered::Json)
                .map_err(|e| RenderError::InvalidJson {
                    template: resolved.file.clone(),
                    reason: e.to_string(),
                })
        } else {
            // Template files end with a newline; destinations trim anyway.
            let trimmed = text.trim();
            Ok(Rendered::Text(if trimmed.len() == text.len() {
                text
            } else {
                trimmed.to_owned()
            }))
        }
    }
}

/// `v` with every list turned into an object keyed `"0"`, `"1"`, ... in
/// order, for [`Renderer::render`]'s second pass. Templates see the same
/// values: `list.0` and `{{#each}}` (with `@index`, `@first`) work as on a
/// list, and `list.name` is missing instead of an error. `{{json value}}`
/// still shows the event's lists as lists ([`OriginalEvent`]); only a bare
/// `{{list}}` shows `[object]` instead of `[a, b]`.
fn lists_as_objects(v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::Object(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| (i.to_string(), lists_as_objects(item)))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, item)| (k.clone(), lists_as_objects(item)))
                .collect(),
        ),
        other => other.clone(),
    }
}

thread_local! {
    pub(crate) static ORIGINAL: std::cell::RefCell<Option<Value>> = const { std::cell::RefCell::new(None) };
}

/// The event as it is, while [`Renderer::render`]'s second pass renders its
/// [`lists_as_objects`] view on this thread, so that `{{json}}` of a value
/// taken from the event writes it exactly (a webhook's `{{{json data}}}`).
struct OriginalEvent;

impl OriginalEvent {
    fn set(event: &Value) -> Self {
        ORIGINAL.with(|o| *o.borrow_mut() = Some(event.clone()));
        OriginalEvent
    }
}

impl Drop for OriginalEvent {
    fn drop(&mut self) {
        ORIGINAL.with(|o| *o.borrow_mut() = None);
    }
}

fn render_reason(e: &handlebars::RenderError) -> String {
    let mut s = match e.reason() {
        RenderErrorReason::Other(m) => m.clone(),
        other => other.to_string(),
    };
    if let (Some(line), Some(col)) = (e.line_no, e.column_no) {
        s.push_str(&format!(" (line {line}, column {col})"));
    }
    s
}

/// The file names (without `.hbs`) tried for `name` and `kind`, in order.
pub fn candidates(name: &str, kind: TargetKind) -> Vec<(String, Mode)> {
    let k = kind.as_str();
    let (json_mode, text_mode) = match kind {
        TargetKind::Discord => (Mode::DiscordJson, Mode::DiscordText),
        TargetKind::Slack => (Mode::SlackJson, Mode::SlackText),
        TargetKind::Webhook | TargetKind::Stdout | TargetKind::Crisp => (Mode::Json, Mode::Plain),
    };
    let mut out = vec![
        (format!("{name}.{k}.json"), json_mode),
        (format!("{name}.{k}"), text_mode),
    ];
    // A webhook's generic fallback is the original event, not chat text.
    if kind != TargetKind::Webhook {
        out.push((name.to_owned(), text_mode));
    }
    out
}

/// The registries a template stem is compiled into.
fn modes_for(stem: &str) -> Vec<Mode> {
    let parts: Vec<&str> = stem.split('.').collect();
    match parts.as_slice() {
        [_, "discord", "json"] => vec![Mode::DiscordJson],
        [_, "slack", "json"] => vec![Mode::SlackJson],
        [_, "webhook" | "stdout", "json"] => vec![Mode::Json],
        [_, "discord"] => vec![Mode::DiscordText],
        [_, "slack"] => vec![Mode::SlackText],
        [_, "webhook" | "stdout"] => vec![Mode::Plain],
        [_] => vec![Mode::DiscordText, Mode::SlackText, Mode::Plain],
        _ => vec![],
    }
}

/// Where a target's thread name is registered (no file name has a `/`).
fn thread_name_key(target: &str) -> String {
    format!("thread_name/{target}")
}

/// Why a template stem fits no pattern (`NAME`, `NAME.<kind>`,
/// `NAME.<kind>.json`).
fn unknown_suffix(stem: &str) -> String {
    let parts: Vec<&str> = stem.split('.').collect();
    let kinds = TargetKind::ALL.map(TargetKind::as_str);
    match parts.get(1) {
        Some(kind) if !kinds.contains(kind) => {
            let hint = crate::suggest::did_you_mean(kind, kinds)
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            format!("`{kind}` is not a target kind{hint}")
        }
        _ => format!("`{stem}.hbs` has more parts than NAME.<kind>.json"),
    }
}

fn registry(mode: Mode) -> Handlebars<'static> {
    let mut h = Handlebars::new();
    h.register_escape_fn(move |s| mode.escape(s));
    helpers::register(&mut h, mode);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn renderer(files: &[(&str, &str)]) -> Renderer {
        let sources: Vec<TemplateSource> = files
            .iter()
            .map(|(f, t)| TemplateSource {
                file: (*f).into(),
                text: (*t).into(),
            })
            .collect();
        Renderer::new(&sources).unwrap()
    }

    #[test]
    fn modes_escape_per_target() {
        let r = renderer(&[
            ("m.hbs", "{{data.content}}"),
            ("m.discord.json.hbs", r#"{"content": "{{data.content}}"}"#),
            (
                "m.slack.json.hbs",
                r#"{"text": "{{data.content}}", "u": "{{url data.link}}"}"#,
            ),
            (
                "m.webhook.json.hbs",
                r#"{"raw": {{{json data}}}, "s": "{{data.content}}"}"#,
            ),
            (
                "p.discord.json.hbs",
                r#"{"content": "{{plain data.name}}"}"#,
            ),
        ]);
        let ev = json!({"data": {"content": "@everyone <!here> \"q\" [x](y)", "link": "https://a.example/x?q=\"<>"}});
        let text = |k| match r.render(Some("m"), k, &ev).unwrap() {
            Rendered::Text(t) => t,
            other => panic!("{other:?}"),
        };
        let json = |k| match r.render(Some("m"), k, &ev).unwrap() {
            Rendered::Json(v) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(text(TargetKind::Stdout), "@everyone <!here> \"q\" [x](y)");
        assert_eq!(
            json(TargetKind::Discord)["content"],
            "@\u{200B}everyone \\<!here> \"q\" \\[x\\](y)"
        );
        let slack = json(TargetKind::Slack);
        assert_eq!(
            slack["text"],
            "@\u{200B}everyone &lt;!here&gt; \"q\" [x](y)"
        );
        assert_eq!(slack["u"], "https://a.example/x?q=%22%3C%3E");
        let hook = json(TargetKind::Webhook);
        assert_eq!(hook["raw"], ev["data"]);
        assert_eq!(hook["s"], ev["data"]["content"]);
        let name = json!({"data": {"name": "jo_kim \"@here\" <@1> [a](b)"}});
        let plain = r.render(Some("p"), TargetKind::Discord, &name).unwrap();
        let want = "jo_kim \"@\u{200B}here\" <\u{200B}@1> [a]\u{200B}(b)";
        assert_eq!(plain, Rendered::Json(json!({ "content": want })));
        // No template for a kind: a webhook falls back to the original event.
        assert_eq!(
            r.render(None, TargetKind::Webhook, &ev).unwrap(),
            Rendered::Event
        );
    }

    #[test]
    fn helpers() {
        let r = renderer(&[(
            "h.hbs",
            "{{truncate data.t 4}}|{{default data.none \"anon\"}}|{{date timestamp}}|{{date timestamp \"iso\"}}|{{crisp_url website_id data.session_id}}|{{origin data.origin}}|{{duration data.secs}}|{{json data.arr}}",
        )]);
        let ev = json!({"website_id": "w 1", "timestamp": 1_748_952_083_417_i64,
            "data": {"t": "abcdef", "session_id": "session_x", "origin": "urn:crisp.im:whatsapp:0", "secs": 75, "arr": [1, "a"]}});
        let Rendered::Text(t) = r.render(Some("h"), TargetKind::Stdout, &ev).unwrap() else {
            panic!()
        };
        assert_eq!(
            t,
            "abc…|anon|2025-06-03 12:01 UTC|2025-06-03T12:01:23.417Z|https://app.crisp.chat/website/w%201/inbox/session_x/|WhatsApp|1:15|[1,\"a\"]"
        );
    }

    /// Found by fuzz/ (render target): `data.content` a list made every
    /// shipped `visitor_message` template fail ("Cannot access array/vector
    /// with string index"), so the delivery was dead-lettered.
    #[test]
    fn a_list_where_an_object_is_expected_renders_as_missing() {
        let r = renderer(&[
            (
                "m.hbs",
                "{{#if data.content.url}}url{{else}}none{{/if}}|{{data.content.0}}|{{#each data.content}}{{@index}}{{this}}{{/each}}|{{default data.user.nickname \"anon\"}}",
            ),
            (
                "m.discord.json.hbs",
                r#"{"content": "{{default data.content.text "(none)"}}"}"#,
            ),
        ]);
        // The minimized fuzz input.
        let ev = json!({"website_id": "3f9d2b7e-61c4-4a8e-9b1f-0d5e7a2c8b46", "event": "message:send",
            "data": {"content": []}, "timestamp": 1_748_952_083_417_i64});
        assert_eq!(
            r.render(Some("m"), TargetKind::Discord, &ev).unwrap(),
            Rendered::Json(json!({"content": "(none)"}))
        );
        let ev = json!({"data": {"content": ["a", "b"], "user": [1]}});
        assert_eq!(
            r.render(Some("m"), TargetKind::Stdout, &ev).unwrap(),
            Rendered::Text("none|a|0a1b|anon".into())
        );
        // `{{json}}` in the second pass writes the event's lists as lists.
        let j = renderer(&[(
            "j.webhook.json.hbs",
            r#"{"raw": {{{json data}}}, "n": "{{data.user.nickname}}", "c": "{{json data.content}}"}"#,
        )]);
        assert_eq!(
            j.render(Some("j"), TargetKind::Webhook, &ev).unwrap(),
            Rendered::Json(json!({"raw": ev["data"], "n": "", "c": "[\"a\",\"b\"]"}))
        );
        // Other render errors are still errors.
        let bad = renderer(&[("t.hbs", "{{truncate data.x \"n\"}}")]);
        assert!(bad.render(Some("t"), TargetKind::Stdout, &ev).is_err());
    }

    #[test]
    fn template_errors_have_positions() {
        let sources = [TemplateSource {
            file: "bad.hbs".into(),
            text: "line one\n{{#if x}}oops".into(),
        }];
        let errs = Renderer::new(&sources).unwrap_err();
        assert_eq!(errs[0].file, "bad.hbs");
        assert!(errs[0].line >= 1, "{errs:?}");
    }
}
