//! Templates: the Handlebars registries, helpers and per-target escaping.
//!
//! Owns turning an event into text or a JSON body for one target kind. Every
//! `{{value}}` is escaped for the place it lands: Discord markdown and
//! mentions, Slack control characters, JSON strings; `{{{value}}}` opts out and
//! is unsafe with visitor text. Also owns the character-exact truncation used
//! to fit destinations' limits. This module does no I/O: the caller reads the
//! template files and hands over their text ([`TemplateSource`]).

use std::borrow::Cow;
use std::collections::BTreeMap;

use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason,
    handlebars_helper,
};
use serde_json::Value;
use thiserror::Error;

use crate::config::TargetKind;

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

    fn escape(self, s: &str) -> String {
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
            for mode in modes_for(stem) {
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
            Ok(Self { registries, files })
        } else {
            Err(errors)
        }
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
    static ORIGINAL: std::cell::RefCell<Option<Value>> = const { std::cell::RefCell::new(None) };
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
        TargetKind::Webhook | TargetKind::Stdout => (Mode::Json, Mode::Plain),
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

fn registry(mode: Mode) -> Handlebars<'static> {
    let mut h = Handlebars::new();
    h.register_escape_fn(move |s| mode.escape(s));
    h.register_helper("truncate", Box::new(truncate_helper));
    h.register_helper("default", Box::new(default_helper));
    h.register_helper("json", Box::new(JsonHelper));
    h.register_helper("date", Box::new(date_helper));
    h.register_helper("origin", Box::new(origin_helper));
    h.register_helper("duration", Box::new(duration_helper));
    h.register_helper("crisp_url", Box::new(crisp_url_helper));
    h.register_helper("url", Box::new(url_helper));
    h.register_helper("plain", Box::new(PlainHelper { mode }));
    h
}

// ---------------------------------------------------------------------------
// Helpers. Value helpers are escaped like any `{{value}}`; `url` and
// `crisp_url` write their own output, made safe by percent-encoding.

handlebars_helper!(truncate_helper: |s: Value, n: u64| {
    let text = value_text(&s);
    truncate(&text, n as usize).into_owned()
});

handlebars_helper!(default_helper: |v: Value, fallback: Value| {
    match &v {
        Value::Null => fallback,
        Value::String(s) if s.trim().is_empty() => fallback,
        _ => v,
    }
});

/// `{{json value}}`: the value as compact JSON text (escaped like a value).
struct JsonHelper;

impl handlebars::HelperDef for JsonHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<handlebars::ScopedJson<'rc>, handlebars::RenderError> {
        let param = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("json", 0))?;
        // In the second pass, a value from the event is written from the
        // event itself, lists as lists.
        let original = param.context_path().and_then(|path| {
            ORIGINAL.with(|o| {
                let o = o.borrow();
                let mut cur = o.as_ref()?;
                for seg in path {
                    cur = match cur {
                        Value::Object(m) => m.get(seg)?,
                        Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                        _ => return None,
                    };
                }
                Some(cur.to_string())
            })
        });
        let text = original.unwrap_or_else(|| param.value().to_string());
        Ok(handlebars::ScopedJson::Derived(Value::String(text)))
    }
}

/// `{{date ms}}` → `2025-06-03 12:01 UTC`; `{{date ms "iso"}}` → ISO 8601.
fn date_helper(
    h: &Helper,
    r: &Handlebars,
    _: &Context,
    rc: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let ms = h.param(0).map(|p| p.value());
    let iso = h.param(1).and_then(|p| p.value().as_str()) == Some("iso");
    let text = match ms.and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))) {
        Some(ms) if iso => format_iso8601(ms),
        Some(ms) => format_readable(ms),
        None => String::new(),
    };
    // Digits, dashes and colons only, but escape like any value for safety.
    let escaped = if rc.is_disable_escape() {
        text
    } else {
        r.get_escape_fn()(&text)
    };
    out.write(&escaped)?;
    Ok(())
}

handlebars_helper!(origin_helper: |o: Value| origin_label(o.as_str().unwrap_or("")));

handlebars_helper!(duration_helper: |secs: Value| {
    match secs.as_u64() {
        Some(s) => format!("{}:{:02}", s / 60, s % 60),
        None => String::new(),
    }
});

/// `{{plain value}}`: for Discord embed fields that Discord shows as plain
/// text (author name, footer text), where markdown escaping would show its
/// backslashes. There, values are JSON-escaped and defused with invisible
/// zero-width spaces instead ([`defuse_mentions`]); embeds never ping anyway.
/// In every other mode it escapes like `{{value}}`.
struct PlainHelper {
    mode: Mode,
}

impl handlebars::HelperDef for PlainHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let text = h
            .param(0)
            .map(|p| value_text(p.value()).into_owned())
            .unwrap_or_default();
        let escaped = match self.mode {
            Mode::DiscordJson => escape_json_str(&defuse_mentions(&text)),
            _ if rc.is_disable_escape() => text,
            mode => mode.escape(&text),
        };
        out.write(&escaped)?;
        Ok(())
    }
}

/// Defuses without visible marks: a zero-width space after the `@` of
/// `@everyone` / `@here`, after every `<` (no `<@id>`, `<#id>`, `<t:…>`) and
/// between `]` and `(` (no masked link).
fn defuse_mentions(s: &str) -> Cow<'_, str> {
    if !(s.contains("@everyone") || s.contains("@here") || s.contains('<') || s.contains("](")) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.replace("@everyone", "@\u{200B}everyone")
            .replace("@here", "@\u{200B}here")
            .replace('<', "<\u{200B}")
            .replace("](", "]\u{200B}("),
    )
}

/// `{{crisp_url website_id session_id}}`: the conversation in the Crisp inbox.
fn crisp_url_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let part = |i: usize| h.param(i).and_then(|p| p.value().as_str()).unwrap_or("");
    let (website, session) = (part(0), part(1));
    if website.is_empty() {
        return Ok(());
    }
    let mut url = format!(
        "https://app.crisp.chat/website/{}/inbox/",
        percent_encode(website)
    );
    if !session.is_empty() {
        url.push_str(&percent_encode(session));
        url.push('/');
    }
    out.write(&url)?;
    Ok(())
}

/// `{{url value}}`: the value if it is an http(s) URL, else nothing. Written
/// without markdown escaping (which would break the link) but with every
/// character that could end a JSON string, a Slack `<...>` or a Discord
/// `(...)` percent-encoded, so it is safe in every mode.
fn url_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let raw = h.param(0).and_then(|p| p.value().as_str()).unwrap_or("");
    if let Some(safe) = safe_url(raw) {
        out.write(&safe)?;
    }
    Ok(())
}

/// An http(s) URL with unsafe characters percent-encoded, or `None`.
pub fn safe_url(raw: &str) -> Option<String> {
    let parsed = url::Url::parse(raw.trim()).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    let mut out = String::with_capacity(raw.len());
    for c in parsed.as_str().chars() {
        match c {
            '"' | '\\' | '<' | '>' | '|' | '(' | ')' | ' ' | '`' | '*' | '[' | ']' | '{' | '}' => {
                out.push_str(&format!("%{:02X}", c as u32));
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    Some(out)
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn value_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

/// A readable name for a Crisp message `origin` (`chat`, `email`,
/// `urn:crisp.im:whatsapp:0`, ...).
pub fn origin_label(origin: &str) -> String {
    match origin {
        "" => String::new(),
        "chat" => "Chat".into(),
        "email" => "Email".into(),
        other => {
            let plugin = other
                .strip_prefix("urn:")
                .and_then(|r| r.split(':').nth(1))
                .unwrap_or(other);
            match plugin {
                "whatsapp" => "WhatsApp".into(),
                "messenger" => "Messenger".into(),
                "instagram" => "Instagram".into(),
                "telegram" => "Telegram".into(),
                "twitter" => "Twitter".into(),
                "line" => "LINE".into(),
                "viber" => "Viber".into(),
                "sms" => "SMS".into(),
                "slack" => "Slack".into(),
                "contact-form" => "Contact form".into(),
                "bot" => "Bot".into(),
                p => {
                    let mut c = p.chars();
                    match c.next() {
                        Some(f) => f
                            .to_uppercase()
                            .chain(c)
                            .collect::<String>()
                            .replace(['-', '_'], " "),
                        None => other.to_owned(),
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Dates (Crisp timestamps are milliseconds since the epoch, UTC).

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn split_ms(ms: i64) -> (i64, u32, u32, i64, i64, i64, i64) {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    (
        y,
        mo,
        d,
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        ms.rem_euclid(1000),
    )
}

/// `2025-06-03T12:01:23.417Z`
pub fn format_iso8601(ms: i64) -> String {
    let (y, mo, d, h, mi, s, milli) = split_ms(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// `2025-06-03 12:01 UTC`
pub fn format_readable(ms: i64) -> String {
    let (y, mo, d, h, mi, _, _) = split_ms(ms);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC")
}

// ---------------------------------------------------------------------------
// Escaping.

/// Discord: markdown renders literally and nothing can ping. Inline markup
/// characters (`\\ * _ ~ \` | [ ] <`) are backslash-escaped everywhere, which
/// also defuses masked links `[text](url)` and `<@id>`, `<@&id>`, `<#id>`,
/// `<t:...>`; block markup (`#`, `-`, `>`) only where it has effect, at the
/// start of a line: after any line break (`\r` too), and behind any
/// whitespace, which the relay and Discord trim from a message (`"\u{3000}#"`
/// would otherwise arrive as a heading). `@everyone` / `@here` get a
/// zero-width space after the `@`.
pub fn escape_discord(s: &str) -> Cow<'_, str> {
    // Every character this changes is ASCII, and UTF-8 never uses ASCII
    // bytes inside a multi-byte character: one pass over bytes decides.
    let special = |b: &u8| {
        matches!(
            b,
            b'\\'
                | b'*'
                | b'_'
                | b'~'
                | b'`'
                | b'|'
                | b'['
                | b']'
                | b'<'
                | b'#'
                | b'-'
                | b'>'
                | b'@'
        )
    };
    if !s.as_bytes().iter().any(special) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    let mut at_line_start = true;
    for (i, c) in s.char_indices() {
        match c {
            '@' => {
                out.push('@');
                let after = &s[i + 1..];
                if after.starts_with("everyone") || after.starts_with("here") {
                    out.push('\u{200B}');
                }
            }
            '\\' | '*' | '_' | '~' | '`' | '|' | '[' | ']' | '<' => {
                out.push('\\');
                out.push(c);
            }
            '#' | '-' | '>' if at_line_start => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
        at_line_start = is_line_break(c) || (at_line_start && is_blank(c));
    }
    Cow::Owned(out)
}

/// Unicode line terminators: any of them may end a line for a markdown reader.
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Whitespace that trimming removes (Rust's and JavaScript's `trim`: the
/// byte-order mark too).
fn is_blank(c: char) -> bool {
    c.is_whitespace() || c == '\u{FEFF}'
}

/// Slack: `&`, `<`, `>` as entities (Slack's three control characters), so
/// `<!channel>`, `<@U…>` and `<url|text>` cannot be written; `@channel`,
/// `@here` and `@everyone` also get a zero-width space as defence in depth.
pub fn escape_slack(s: &str) -> Cow<'_, str> {
    if !s
        .as_bytes()
        .iter()
        .any(|b| matches!(b, b'&' | b'<' | b'>' | b'@'))
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '@' => {
                out.push('@');
                let after = &rest[1..];
                if after.starts_with("channel")
                    || after.starts_with("here")
                    || after.starts_with("everyone")
                {
                    out.push('\u{200B}');
                }
            }
            c => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    Cow::Owned(out)
}

/// The inside of a JSON string literal for `s` (no surrounding quotes).
pub fn escape_json_str(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted[1..quoted.len().saturating_sub(1).max(1)].to_owned()
}

// ---------------------------------------------------------------------------
// Truncation.

/// Length as destinations count it. Discord's unit is unconfirmed (code points
/// or UTF-16 units); UTF-16 units are never fewer than code points, so
/// counting them is the safe choice.
pub fn text_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.encode_utf16().count()
    }
}

/// `s` cut to at most `max` units (see [`text_len`]) including a trailing `…`,
/// always at a character boundary: never inside a UTF-8 sequence nor a
/// surrogate pair.
pub fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if text_len(s) <= max {
        return Cow::Borrowed(s);
    }
    if max == 0 {
        return Cow::Borrowed("");
    }
    let budget = max - 1; // the ellipsis is one unit
    let mut used = 0;
    let mut end = 0;
    for (i, c) in s.char_indices() {
        let w = c.len_utf16();
        if used + w > budget {
            break;
        }
        used += w;
        end = i + c.len_utf8();
    }
    let mut out = String::with_capacity(end + 3);
    out.push_str(s[..end].trim_end());
    // An odd run of trailing backslashes ends in a dangling escape, which
    // would swallow the ellipsis in Discord markdown.
    if out.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1 {
        out.pop();
    }
    out.push('…');
    Cow::Owned(out)
}

/// Truncates the string at `v` in place if it is longer than `max`.
pub fn fit_string(v: &mut Value, max: usize) {
    if let Value::String(s) = v
        && text_len(s) > max
    {
        *s = truncate(s, max).into_owned();
    }
}

/// [`truncate`] for text already escaped for Slack ([`escape_slack`]), as
/// Slack bodies are when they are fitted: the cut never falls inside one of
/// the entities `&amp;`, `&lt;`, `&gt;`, which would leave a bare `&` and the
/// entity's broken start (`&am…`) in the message.
pub fn truncate_slack(s: &str, max: usize) -> Cow<'_, str> {
    let cut = truncate(s, max);
    let Cow::Owned(mut out) = cut else {
        return cut;
    };
    let kept_len = out.len() - '…'.len_utf8();
    if let Some(amp) = out[..kept_len].rfind('&') {
        let tail = &out[amp..kept_len];
        if ["&amp;", "&lt;", "&gt;"]
            .iter()
            .any(|e| e.len() > tail.len() && e.starts_with(tail))
        {
            let keep = out[..amp].trim_end().len();
            out.replace_range(keep..kept_len, "");
        }
    }
    Cow::Owned(out)
}

/// [`fit_string`] for Slack text (see [`truncate_slack`]).
pub fn fit_slack_string(v: &mut Value, max: usize) {
    if let Value::String(s) = v
        && text_len(s) > max
    {
        *s = truncate_slack(s, max).into_owned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn discord_escape_neutralises() {
        let cases = [
            ("hello", "hello"),
            ("@everyone hi", "@\u{200B}everyone hi"),
            ("@here", "@\u{200B}here"),
            ("<@123> <@&456>", "\\<@123> \\<@&456>"),
            ("[click](https://evil)", "\\[click\\](https://evil)"),
            (
                "# title\n- item\n> quote a-b",
                "\\# title\n\\- item\n\\> quote a-b",
            ),
            ("**bold** _it_", "\\*\\*bold\\*\\* \\_it\\_"),
            ("a\\b", "a\\\\b"),
            ("mail@example.com", "mail@example.com"),
        ];
        for (input, want) in cases {
            assert_eq!(escape_discord(input), want, "{input}");
        }
    }

    #[test]
    fn slack_escape_neutralises() {
        assert_eq!(
            escape_slack("<!channel> & <@U1|x>"),
            "&lt;!channel&gt; &amp; &lt;@U1|x&gt;"
        );
        assert_eq!(
            escape_slack("@channel @here"),
            "@\u{200B}channel @\u{200B}here"
        );
        assert_eq!(escape_slack("plain"), "plain");
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("hello", 5), "hello");
        assert_eq!(truncate("hello world", 6), "hello…");
        // 👩‍💻 is 5 UTF-16 units; é is 1; the cut must not split either.
        let s = "ab👩\u{200D}💻é";
        for max in 0..12 {
            let t = truncate(s, max);
            assert!(text_len(&t) <= max, "{max}: {t}");
            assert!(s.starts_with(t.trim_end_matches('…')), "{max}: {t}");
        }
        assert_eq!(truncate("a😀b", 3), "a…");
        assert_eq!(truncate("ab\\cd", 4), "ab…");
        assert_eq!(truncate("ab\\\\cd", 5), "ab\\\\…");
        assert_eq!(truncate("a\\\\\\cd", 5), "a\\\\…");
    }

    #[test]
    fn dates() {
        assert_eq!(
            format_iso8601(1_748_952_083_417),
            "2025-06-03T12:01:23.417Z"
        );
        assert_eq!(format_readable(1_748_952_083_417), "2025-06-03 12:01 UTC");
        assert_eq!(format_iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_iso8601(-1), "1969-12-31T23:59:59.999Z");
    }

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
