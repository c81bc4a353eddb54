//! Whole Discord and Slack bodies: within every limit, fitted from the
//! original, pinging nobody, defused, not empty, well formed.

use serde_json::{Value, json};

use super::text::*;
use super::*;
use crate::targets::{discord, slack};
use crate::text::text_len;

// ---------------------------------------------------------------------------
// Bodies

/// Every string in `v` (object keys aside), with its JSON pointer.
pub fn strings(v: &Value) -> Vec<(String, &str)> {
    fn walk<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a str)>) {
        match v {
            Value::String(s) => out.push((path, s)),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, format!("{path}/{i}"), out);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    walk(item, format!("{path}/{k}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out
}

/// `s` without the given links, including one cut short by truncation just
/// before a final `…`. Links (the `url` helper's output) are written
/// unescaped by design, so `https://x.example/@everyone` keeps its
/// `@everyone`; it cannot ping there (`allowed_mentions`, no `link_names`).
pub fn without_links(s: &str, links: &[String]) -> String {
    let mut s = s.to_owned();
    for u in links {
        s = s.replace(u.as_str(), "");
    }
    if let Some(body) = s.strip_suffix('…') {
        for u in links {
            let cut = (1..u.len())
                .rev()
                .filter(|&k| u.is_char_boundary(k))
                .find(|&k| body.ends_with(&u[..k]));
            if let Some(k) = cut {
                return format!("{}…", &body[..body.len() - k]);
            }
        }
    }
    s
}

/// Every text the relay fits to a Discord limit, by JSON pointer, with its
/// limit (present or not). The embeds' total is counted apart.
pub fn discord_limited(body: &Value) -> Vec<(String, usize)> {
    let mut out = vec![
        ("/content".to_owned(), discord::CONTENT_MAX),
        ("/username".to_owned(), discord::USERNAME_MAX),
    ];
    let embeds = body["embeds"].as_array().map_or(&[][..], Vec::as_slice);
    for (i, e) in embeds.iter().enumerate() {
        out.push((format!("/embeds/{i}/title"), discord::TITLE_MAX));
        out.push((format!("/embeds/{i}/description"), discord::DESCRIPTION_MAX));
        out.push((format!("/embeds/{i}/author/name"), discord::AUTHOR_MAX));
        out.push((format!("/embeds/{i}/footer/text"), discord::FOOTER_MAX));
        for j in 0..e["fields"].as_array().map_or(0, Vec::len) {
            out.push((
                format!("/embeds/{i}/fields/{j}/name"),
                discord::FIELD_NAME_MAX,
            ));
            out.push((
                format!("/embeds/{i}/fields/{j}/value"),
                discord::FIELD_VALUE_MAX,
            ));
        }
    }
    out
}

/// Every text the relay fits to a Slack limit, by JSON pointer, with its
/// limit (present or not).
pub fn slack_limited(body: &Value) -> Vec<(String, usize)> {
    let mut out = vec![("/text".to_owned(), slack::TEXT_MAX)];
    let blocks = body["blocks"].as_array().map_or(&[][..], Vec::as_slice);
    for (i, b) in blocks.iter().enumerate() {
        let text_max = if b["type"] == "header" {
            slack::HEADER_TEXT_MAX
        } else {
            slack::BLOCK_TEXT_MAX
        };
        out.push((format!("/blocks/{i}/text/text"), text_max));
        if b["accessory"]["type"] == "button" {
            out.push((
                format!("/blocks/{i}/accessory/text/text"),
                slack::BUTTON_TEXT_MAX,
            ));
        }
        for j in 0..b["fields"].as_array().map_or(0, Vec::len) {
            out.push((
                format!("/blocks/{i}/fields/{j}/text"),
                slack::FIELD_TEXT_MAX,
            ));
        }
        let elements = b["elements"].as_array().map_or(&[][..], Vec::as_slice);
        for (j, el) in elements.iter().enumerate() {
            if el["type"] == "button" {
                out.push((
                    format!("/blocks/{i}/elements/{j}/text/text"),
                    slack::BUTTON_TEXT_MAX,
                ));
            } else {
                out.push((
                    format!("/blocks/{i}/elements/{j}/text"),
                    slack::BLOCK_TEXT_MAX,
                ));
            }
        }
    }
    out
}

/// A list at `path` has at most `max` items.
pub(super) fn at_most(errs: &mut Vec<String>, path: &str, n: usize, max: usize) {
    if n > max {
        errs.push(format!("{path} has {n} items (> {max})"));
    }
}

/// Each limited text present is a string within its limit; its length.
pub(super) fn limited_texts(
    body: &Value,
    limited: &[(String, usize)],
    errs: &mut Vec<String>,
) -> Vec<usize> {
    let mut lens = Vec::new();
    for (path, max) in limited {
        let Some(v) = body.pointer(path) else {
            lens.push(0);
            continue;
        };
        match v.as_str() {
            Some(s) if text_len(s) > *max => {
                errs.push(format!("{path} is {} units (> {max})", text_len(s)));
                lens.push(text_len(s));
            }
            Some(s) => lens.push(text_len(s)),
            None => {
                errs.push(format!("{path} is not a string: {v}"));
                lens.push(0);
            }
        }
    }
    lens
}

/// A Discord body within Discord's limits as the relay counts them (UTF-16
/// units): an object; content ≤ 2000, username ≤ 80; ≤ 10 embeds, each with
/// title ≤ 256, description ≤ 4096, author name ≤ 256, footer ≤ 2048, ≤ 25
/// fields of name ≤ 256 and value ≤ 1024; and the embeds' texts ≤ 6000 in
/// all (counted here and by `discord::embeds_total`). Limited texts that
/// are present are strings.
pub fn discord_body_within_limits(body: &Value) -> Result<(), String> {
    if !body.is_object() {
        return Err(format!("Discord body is not an object: {body}"));
    }
    let mut errs = Vec::new();
    let limited = discord_limited(body);
    let lens = limited_texts(body, &limited, &mut errs);
    let embeds = body["embeds"].as_array().map_or(&[][..], Vec::as_slice);
    at_most(&mut errs, "/embeds", embeds.len(), discord::EMBEDS_MAX);
    for (i, e) in embeds.iter().enumerate() {
        let fields = e["fields"].as_array().map_or(0, Vec::len);
        at_most(
            &mut errs,
            &format!("/embeds/{i}/fields"),
            fields,
            discord::FIELDS_MAX,
        );
    }
    // Every limited text but `content` and `username` (the first two).
    let total = lens[2..].iter().sum::<usize>();
    let counted = discord::embeds_total(body);
    if total.max(counted) > discord::EMBEDS_TOTAL_MAX {
        errs.push(format!(
            "embed texts total {total} units, {counted} as the relay counts (> {})",
            discord::EMBEDS_TOTAL_MAX
        ));
    }
    report(errs)
}

/// A Slack body within Block Kit's limits as the relay counts them: an
/// object; text ≤ 40000; ≤ 50 blocks; block text ≤ 3000 (header ≤ 150);
/// ≤ 10 section fields of ≤ 2000; ≤ 10 context elements, element text
/// ≤ 3000; button text ≤ 75. Limited texts that are present are strings.
pub fn slack_body_within_limits(body: &Value) -> Result<(), String> {
    if !body.is_object() {
        return Err(format!("Slack body is not an object: {body}"));
    }
    let mut errs = Vec::new();
    limited_texts(body, &slack_limited(body), &mut errs);
    let blocks = body["blocks"].as_array().map_or(&[][..], Vec::as_slice);
    at_most(&mut errs, "/blocks", blocks.len(), slack::BLOCKS_MAX);
    for (i, b) in blocks.iter().enumerate() {
        let fields = b["fields"].as_array().map_or(0, Vec::len);
        at_most(
            &mut errs,
            &format!("/blocks/{i}/fields"),
            fields,
            slack::SECTION_FIELDS_MAX,
        );
        if b["type"] == "context" {
            let elements = b["elements"].as_array().map_or(0, Vec::len);
            let path = format!("/blocks/{i}/elements");
            at_most(&mut errs, &path, elements, slack::CONTEXT_ELEMENTS_MAX);
        }
    }
    report(errs)
}

/// Each limited text of `fitted` (see [`discord_limited`],
/// [`slack_limited`]) is the string at the same path in `original`, or a
/// cut of it ([`cut_from`]).
pub(super) fn cut_from_original(
    original: &Value,
    fitted: &Value,
    limited: &[(String, usize)],
) -> Result<(), String> {
    let mut errs = Vec::new();
    for (path, _) in limited {
        let Some(now) = fitted.pointer(path).and_then(Value::as_str) else {
            continue;
        };
        match original.pointer(path).and_then(Value::as_str) {
            Some(was) => {
                if let Err(e) = cut_from(was, now) {
                    errs.push(format!("{path}: {e}"));
                }
            }
            None => errs.push(format!("{path} was not a string before")),
        }
    }
    report(errs)
}

/// What `discord::fit` promises: `fitted` is within every limit, and each
/// limited text is its original or a cut of it.
pub fn discord_body_fitted(original: &Value, fitted: &Value) -> Result<(), String> {
    discord_body_within_limits(fitted)?;
    cut_from_original(original, fitted, &discord_limited(fitted))
}

/// What `slack::fit` promises: `fitted` is within every limit, and each
/// limited text is its original or a cut of it.
pub fn slack_body_fitted(original: &Value, fitted: &Value) -> Result<(), String> {
    slack_body_within_limits(fitted)?;
    cut_from_original(original, fitted, &slack_limited(fitted))
}

/// Nothing in a Discord body can ping: `allowed_mentions` is
/// `{"parse": []}`.
pub fn discord_pings_nobody(body: &Value) -> Result<(), String> {
    ensure(body["allowed_mentions"] == json!({"parse": []}), || {
        format!(
            "allowed_mentions is {}, not {{\"parse\": []}}",
            body["allowed_mentions"]
        )
    })
}

/// Nothing in a Slack body can ping: neither `link_names` nor `parse` (they
/// turn a plain `@channel` into a mention).
pub fn slack_pings_nobody(body: &Value) -> Result<(), String> {
    let mut errs = Vec::new();
    for key in ["link_names", "parse"] {
        if body.get(key).is_some() {
            errs.push(format!("`{key}` is set (it turns @channel into a mention)"));
        }
    }
    report(errs)
}

/// A whole Discord body is defused: [`discord_pings_nobody`], and every
/// string in it (links included) is [`discord_text_defused`] once `links`
/// (the `url` helper's outputs, see [`without_links`]) are taken out.
pub fn discord_body_defused(body: &Value, links: &[String]) -> Result<(), String> {
    let mut errs: Vec<String> = discord_pings_nobody(body).err().into_iter().collect();
    for (path, s) in strings(body) {
        if let Err(e) = discord_text_defused(&without_links(s, links)) {
            errs.push(format!("{path}: {e}"));
        }
    }
    report(errs)
}

/// A whole Slack body is defused: [`slack_pings_nobody`]; no string holds a
/// raw `<` or `>` (links included); and every string is
/// [`slack_text_defused`] once `links` (see [`without_links`]) are taken
/// out.
pub fn slack_body_defused(body: &Value, links: &[String]) -> Result<(), String> {
    let mut errs: Vec<String> = slack_pings_nobody(body).err().into_iter().collect();
    for (path, s) in strings(body) {
        if s.contains(['<', '>']) {
            errs.push(format!("{path} contains a raw < or >: {s:?}"));
        } else if let Err(e) = slack_text_defused(&without_links(s, links)) {
            errs.push(format!("{path}: {e}"));
        }
    }
    report(errs)
}

// ---------------------------------------------------------------------------
// What the destinations accept besides limits (templates' part)

pub(super) fn is_http_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

/// A non-blank string at `v`, if present.
pub(super) fn non_blank(errs: &mut Vec<String>, path: &str, v: Option<&Value>) {
    match v {
        None => {}
        Some(Value::String(s)) if s.trim().is_empty() => errs.push(format!("{path} is empty")),
        Some(Value::String(_)) => {}
        Some(v) => errs.push(format!("{path} is not a string: {v}")),
    }
}

/// A Discord body is a message: non-blank content or at least one embed
/// (else Discord answers 50006 "Cannot send an empty message").
pub fn discord_body_not_empty(body: &Value) -> Result<(), String> {
    let content = body["content"].as_str();
    let embeds = body["embeds"].as_array().map_or(0, Vec::len);
    ensure(
        content.is_some_and(|c| !c.trim().is_empty()) || embeds > 0,
        || "neither content nor embeds".into(),
    )
}

/// Discord's non-empty and shape rules (research/targets.md §1.3), which
/// the templates must keep: [`discord_body_not_empty`]; every embed text
/// present is non-blank, an author has a name, every field a name and a
/// value; link fields are http(s) URLs; timestamps ISO 8601 in UTC; colours
/// RGB integers.
pub fn discord_body_well_formed(body: &Value) -> Result<(), String> {
    let mut errs: Vec<String> = discord_body_not_empty(body).err().into_iter().collect();
    let embeds = body["embeds"].as_array().map_or(&[][..], Vec::as_slice);
    for (i, e) in embeds.iter().enumerate() {
        for ptr in ["/title", "/description", "/author/name", "/footer/text"] {
            non_blank(&mut errs, &format!("/embeds/{i}{ptr}"), e.pointer(ptr));
        }
        if e.get("author").is_some() && e.pointer("/author/name").is_none() {
            errs.push(format!("/embeds/{i}/author/name is missing"));
        }
        let fields = e["fields"].as_array().map_or(&[][..], Vec::as_slice);
        for (j, f) in fields.iter().enumerate() {
            for key in ["name", "value"] {
                let path = format!("/embeds/{i}/fields/{j}/{key}");
                non_blank(&mut errs, &path, Some(&f[key]));
            }
        }
        for ptr in [
            "/url",
            "/author/url",
            "/author/icon_url",
            "/image/url",
            "/thumbnail/url",
            "/footer/icon_url",
        ] {
            if let Some(u) = e.pointer(ptr)
                && !u.as_str().is_some_and(is_http_url)
            {
                errs.push(format!("/embeds/{i}{ptr} is not an http(s) URL: {u}"));
            }
        }
        if let Some(ts) = e.get("timestamp")
            && !ts
                .as_str()
                .is_some_and(|t| t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T')
        {
            errs.push(format!("/embeds/{i}/timestamp is not ISO 8601: {ts}"));
        }
        if let Some(c) = e.get("color")
            && c.as_u64().is_none_or(|c| c > 0xFF_FFFF)
        {
            errs.push(format!("/embeds/{i}/color is not an RGB integer: {c}"));
        }
    }
    report(errs)
}

/// A Slack text object at `path`: `plain_text` or `mrkdwn` (then
/// `verbatim`, since templates put visitor text in them), non-blank.
pub(super) fn text_object(errs: &mut Vec<String>, path: &str, t: &Value) {
    let ty = t["type"].as_str().unwrap_or("");
    if ty != "mrkdwn" && ty != "plain_text" {
        errs.push(format!("{path} is not a text object: {t}"));
        return;
    }
    non_blank(errs, &format!("{path}/text"), Some(&t["text"]));
    if ty == "mrkdwn" && t["verbatim"] != true {
        errs.push(format!("{path} is mrkdwn without \"verbatim\": true"));
    }
}

/// Slack's non-empty and shape rules (research/targets.md §2.5), which the
/// templates must keep: a non-blank top-level `text` fallback; headers are
/// `plain_text`; text objects are typed, non-blank, and `verbatim` when
/// mrkdwn; a section has text or fields; context and actions blocks have
/// elements; buttons link to http(s) URLs.
pub fn slack_body_well_formed(body: &Value) -> Result<(), String> {
    let mut errs = Vec::new();
    if body["text"].as_str().is_none() {
        errs.push("no top-level text fallback".into());
    }
    non_blank(&mut errs, "/text", body.get("text"));
    let blocks = body["blocks"].as_array().map_or(&[][..], Vec::as_slice);
    for (i, b) in blocks.iter().enumerate() {
        let kind = b["type"].as_str().unwrap_or("");
        let elements = b["elements"].as_array().map_or(&[][..], Vec::as_slice);
        match kind {
            "header" => {
                text_object(&mut errs, &format!("/blocks/{i}/text"), &b["text"]);
                if b["text"]["type"] != "plain_text" {
                    errs.push(format!("/blocks/{i}/text is not plain_text"));
                }
            }
            "section" => {
                if let Some(t) = b.get("text") {
                    text_object(&mut errs, &format!("/blocks/{i}/text"), t);
                }
                let fields = b["fields"].as_array().map_or(&[][..], Vec::as_slice);
                for (j, f) in fields.iter().enumerate() {
                    text_object(&mut errs, &format!("/blocks/{i}/fields/{j}"), f);
                }
                if b.get("text").is_none() && fields.is_empty() {
                    errs.push(format!("/blocks/{i} has neither text nor fields"));
                }
            }
            "context" | "actions" => {
                if elements.is_empty() {
                    errs.push(format!("/blocks/{i} has no elements"));
                }
                for (j, el) in elements.iter().enumerate() {
                    let path = format!("/blocks/{i}/elements/{j}");
                    if el["type"] == "button" {
                        text_object(&mut errs, &format!("{path}/text"), &el["text"]);
                    } else if el["type"] != "image" {
                        text_object(&mut errs, &path, el);
                    }
                }
            }
            _ => {}
        }
        if b["accessory"]["type"] == "button" {
            let path = format!("/blocks/{i}/accessory/text");
            text_object(&mut errs, &path, &b["accessory"]["text"]);
        }
        for button in std::iter::once(&b["accessory"]).chain(elements) {
            if button["type"] == "button"
                && let Some(u) = button.get("url")
                && !u.as_str().is_some_and(is_http_url)
            {
                errs.push(format!(
                    "/blocks/{i} has a button url that is not http(s): {u}"
                ));
            }
        }
    }
    report(errs)
}
