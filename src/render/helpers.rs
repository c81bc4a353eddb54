//! The template helpers (`truncate`, `default`, `json`, `date`, `origin`,
//! `duration`, `plain`, `url`, `crisp_url`). Value helpers are escaped like
//! any `{{value}}`; `url` and `crisp_url` write their own output, made safe
//! by percent-encoding. Pure.

use std::borrow::Cow;

use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason,
    handlebars_helper,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::dates::{format_iso8601, format_readable};
use super::{Mode, ORIGINAL};
use crate::text::{defuse_mentions, escape_json_str, truncate};

/// Registers every helper in `h`, a registry escaping for `mode`.
pub(super) fn register(h: &mut Handlebars<'static>, mode: Mode) {
    h.register_helper("truncate", Box::new(truncate_helper));
    h.register_helper("default", Box::new(default_helper));
    h.register_helper("json", Box::new(JsonHelper));
    h.register_helper("date", Box::new(date_helper));
    h.register_helper("origin", Box::new(origin_helper));
    h.register_helper("duration", Box::new(duration_helper));
    h.register_helper("crisp_url", Box::new(crisp_url_helper));
    h.register_helper("url", Box::new(url_helper));
    h.register_helper("plain", Box::new(PlainHelper { mode }));
}

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

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - _ . ~`).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
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
