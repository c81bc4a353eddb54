//! The checks of what escaping and fitting guarantee: what a Discord or Slack
//! text must look like after [`escape_discord`](crate::text::escape_discord),
//! [`escape_slack`](crate::text::escape_slack), `{{plain}}`
//! ([`defuse_mentions`](crate::text::defuse_mentions)) and truncation, and what a
//! whole Discord or Slack body must satisfy once built and fitted (nothing
//! can ping, no markup or link from visitor text, every limit kept). One set,
//! used by the tests (`tests/api/rendering.rs`), the property tests
//! (`tests/api/properties.rs`) and the fuzz targets (`fuzz/src/lib.rs`), each
//! through a thin adapter (a failed test case, a panic).
//!
//! Each check returns `Err` with a description of the broken promise (body
//! checks: every problem found, one a line). The checks are an independent
//! model of the destinations (how Discord reads backslashes, which
//! characters start a line, how Slack decodes entities), written apart from
//! the code they check on purpose. Limits come from
//! [`discord`](super::discord) and [`slack`](super::slack), lengths from
//! [`text_len`](crate::text::text_len). It lives here, beside the limits,
//! so that `text` stays a leaf.
//!
//! Must not be used on the delivery path: it decides nothing the relay does,
//! only whether what it did keeps its promises. No I/O.

use serde_json::{Value, json};

use super::{discord, slack};
use crate::text::text_len;

/// The zero-width space escaping puts after `@` (and `{{plain}}` after `<`
/// and between `]` and `(`).
pub const ZWSP: char = '\u{200B}';

/// Mentions that ping in a Discord text written as they are.
pub const DISCORD_MENTIONS: &[&str] = &["@everyone", "@here"];

/// Mentions that ping in a Slack text written as they are (with
/// `link_names`, which the relay removes; defused anyway).
pub const SLACK_MENTIONS: &[&str] = &["@channel", "@here", "@everyone"];

/// The three entities Slack decodes.
const SLACK_ENTITIES: [&str; 3] = ["&amp;", "&lt;", "&gt;"];

fn ensure(ok: bool, problem: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(problem()) }
}

/// `Ok` when `problems` is empty, else every problem, one a line.
fn report(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

// ---------------------------------------------------------------------------
// Reading texts as the destinations do

/// `(char, active)` for each character Discord shows: a backslash escapes
/// the character after it (shown literally, without effect) and is not
/// shown; a trailing lone backslash shows as itself.
fn discord_shown(out: &str) -> Vec<(char, bool)> {
    let mut shown = Vec::new();
    let mut escaped = false;
    for c in out.chars() {
        if escaped {
            shown.push((c, false));
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            shown.push((c, true));
        }
    }
    if escaped {
        shown.push(('\\', false));
    }
    shown
}

/// What Discord shows for `s`: markdown escaping undone (`\x` → `x`).
pub fn unescape_discord(s: &str) -> String {
    discord_shown(s).into_iter().map(|(c, _)| c).collect()
}

/// What Slack shows for `s`: its three entities decoded, left to right.
pub fn unescape_slack(s: &str) -> String {
    let mut view = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        let (shown, len) = if rest.starts_with("&amp;") {
            ('&', 5)
        } else if rest.starts_with("&lt;") {
            ('<', 4)
        } else if rest.starts_with("&gt;") {
            ('>', 4)
        } else {
            (c, c.len_utf8())
        };
        view.push(shown);
        rest = &rest[len..];
    }
    view
}

/// Unicode line terminators: any of them may end a line for a markdown
/// reader. (Written apart from `escape`'s own list, as a second opinion.)
fn ends_line(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Whitespace that trimming (the relay's, Discord's) removes, so that a line
/// still starts behind it.
fn trimmed(c: char) -> bool {
    c.is_whitespace() || c == '\u{FEFF}'
}

/// `s` without the zero-width spaces escaping adds after `@`.
fn without_at_zwsp(s: &str) -> String {
    s.replace("@\u{200B}", "@")
}

// ---------------------------------------------------------------------------
// Discord texts

fn no_live(s: &str, mentions: &[&str]) -> Result<(), String> {
    for m in mentions {
        ensure(!s.contains(m), || format!("{m} is live in {s:?}"))?;
    }
    Ok(())
}

/// What holds for any Discord text the relay sends, escaped or `{{plain}}`,
/// whole or cut, with a template's own markup around it: no mention and no
/// masked link can come out of it. No `@everyone` / `@here`; every `<` is
/// backslash-escaped or followed by a zero-width space, or (fitting may cut
/// it from its zero-width space) by nothing but a final `…`, so no `<@id>`,
/// `<@&id>`, `<#id>`, `<t:…>`; no active `]` right before `(`, and no
/// unescaped `[` with a `](` anywhere after it. A character is escaped when
/// it follows an odd run of backslashes.
pub fn discord_text_defused(s: &str) -> Result<(), String> {
    no_live(s, DISCORD_MENTIONS)?;
    let last_link_close = s.rfind("](");
    // Whether the previous character is a backslash that escapes this one.
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        let active = !escaped;
        escaped = active && c == '\\';
        if !active {
            continue;
        }
        let rest = &s[i + c.len_utf8()..];
        match c {
            '<' => ensure(rest.starts_with(ZWSP) || rest == "…", || {
                format!("active `<` at byte {i} in {s:?}")
            })?,
            ']' => ensure(!rest.starts_with('('), || {
                format!("active masked link `](` at byte {i} in {s:?}")
            })?,
            '[' => ensure(last_link_close.is_none_or(|at| at < i), || {
                format!("unescaped `[` at byte {i} before a `](` in {s:?}")
            })?,
            _ => {}
        }
    }
    Ok(())
}

/// `escape_discord(input) == out` keeps its doc's promise: defused
/// ([`discord_text_defused`]); inline markup (`\ * _ ~ ` | [ ] <`) escaped
/// everywhere; block markup (`#`, `-`, `>`) escaped at the start of a line
/// (after any line terminator, behind any whitespace); and what Discord
/// shows is the input, less the zero-width spaces added after `@`.
pub fn discord_escaped(input: &str, out: &str) -> Result<(), String> {
    discord_text_defused(out)?;
    let shown = discord_shown(out);
    let mut line_start = true;
    for &(c, active) in &shown {
        if active {
            ensure(!"\\*_~`|[]<".contains(c), || {
                format!("active inline markup {c:?} in {out:?}")
            })?;
            ensure(!(line_start && "#->".contains(c)), || {
                format!("active block markup {c:?} at a line start in {out:?}")
            })?;
        }
        line_start = ends_line(c) || (line_start && trimmed(c));
    }
    let view: String = shown.iter().map(|&(c, _)| c).collect();
    ensure(without_at_zwsp(&view) == without_at_zwsp(input), || {
        format!("Discord would not show the visitor's text: {out:?} for {input:?}")
    })
}

/// What holds for a `{{plain}}` Discord text (embed author names, footers),
/// whole or cut: no `@everyone` / `@here`, no `](` at all, every `<`
/// followed by a zero-width space (or, cut, by a final `…`).
pub fn discord_plain_defused(out: &str) -> Result<(), String> {
    no_live(out, DISCORD_MENTIONS)?;
    ensure(!out.contains("]("), || format!("masked link in {out:?}"))?;
    for (i, _) in out.match_indices('<') {
        let rest = &out[i + 1..];
        ensure(rest.starts_with(ZWSP) || rest == "…", || {
            format!("live `<` at byte {i} in {out:?}")
        })?;
    }
    Ok(())
}

/// `{{plain}}` of `input` is `out`, whole: a zero-width space after the `@`
/// of `@everyone` / `@here`, after every `<`, and between `]` and `(`;
/// nothing else changes.
pub fn discord_plain(input: &str, out: &str) -> Result<(), String> {
    discord_plain_defused(out)?;
    for (i, _) in out.match_indices('<') {
        ensure(out[i + 1..].starts_with(ZWSP), || {
            format!("live `<` at byte {i} in {out:?}")
        })?;
    }
    ensure(out.replace(ZWSP, "") == input.replace(ZWSP, ""), || {
        format!("{{{{plain}}}} changed more than zero-width spaces: {out:?} for {input:?}")
    })
}

// ---------------------------------------------------------------------------
// Slack texts

/// What holds for any Slack text the relay sends (escaped by
/// `escape_slack`, whole or fitted): no `<` or `>` (so no `<!channel>`,
/// `<!here>`, `<@U…>`, `<#C…>`, `<url|text>`), no plain `@channel`,
/// `@here`, `@everyone`, and every `&` starts `&amp;`, `&lt;` or `&gt;` (a
/// cut never leaves a bare `&` or a broken entity).
pub fn slack_text_defused(s: &str) -> Result<(), String> {
    no_live(s, SLACK_MENTIONS)?;
    ensure(!s.contains('<'), || format!("`<` in {s:?}"))?;
    ensure(!s.contains('>'), || format!("`>` in {s:?}"))?;
    for (i, _) in s.match_indices('&') {
        ensure(SLACK_ENTITIES.iter().any(|e| s[i..].starts_with(e)), || {
            format!("bare `&` at byte {i} in {s:?}")
        })?;
    }
    Ok(())
}

/// `escape_slack(input) == out` keeps its doc's promise: defused
/// ([`slack_text_defused`]), and Slack shows the input (entities decoded,
/// less the zero-width spaces added after `@`).
pub fn slack_escaped(input: &str, out: &str) -> Result<(), String> {
    slack_text_defused(out)?;
    ensure(
        without_at_zwsp(&unescape_slack(out)) == without_at_zwsp(input),
        || format!("Slack would not show the visitor's text: {out:?} for {input:?}"),
    )
}

// ---------------------------------------------------------------------------
// Truncation

/// The longest prefix of `s` (at a character boundary) of at most `max`
/// units.
fn longest_prefix(s: &str, max: usize) -> &str {
    let mut used = 0;
    let mut end = 0;
    for (i, c) in s.char_indices() {
        used += c.len_utf16();
        if used > max {
            break;
        }
        end = i + c.len_utf8();
    }
    &s[..end]
}

/// A proper, non-empty prefix of one of Slack's entities (`&`, `&am`, ...).
fn is_partial_entity(s: &str) -> bool {
    SLACK_ENTITIES
        .iter()
        .any(|e| e.len() > s.len() && e.starts_with(s) && !s.is_empty())
}

/// What `truncate` promises for `out = truncate(input, max)`: fits `max`
/// units; unchanged when it already fits; otherwise a prefix of the input
/// (so cut at a character boundary, never inside a UTF-8 sequence or a
/// surrogate pair) plus `…`, not ending in a dangling backslash, and no
/// shorter than the longest fitting prefix less trailing whitespace and one
/// backslash.
pub fn truncated(input: &str, max: usize, out: &str) -> Result<(), String> {
    ensure(text_len(out) <= max, || {
        format!("{out:?} is {} units, over {max}", text_len(out))
    })?;
    if text_len(input) <= max {
        return ensure(out == input, || {
            format!("a text that fits is kept whole: {out:?} for {input:?}")
        });
    }
    if max == 0 {
        return ensure(out.is_empty(), || format!("{out:?} for a limit of 0"));
    }
    let kept = out
        .strip_suffix('…')
        .ok_or_else(|| format!("{out:?} does not end with `…`"))?;
    ensure(input.starts_with(kept), || {
        format!("{kept:?} is not a prefix of {input:?}")
    })?;
    let backslashes = kept.chars().rev().take_while(|&c| c == '\\').count();
    ensure(backslashes % 2 == 0, || {
        format!("{out:?} ends in a dangling backslash")
    })?;
    let full = longest_prefix(input, max - 1);
    ensure(full.starts_with(kept), || {
        format!("{kept:?} longer than {full:?}")
    })?;
    let dropped = &full[kept.len()..];
    let dropped = dropped.strip_prefix('\\').unwrap_or(dropped);
    ensure(dropped.chars().all(char::is_whitespace), || {
        format!("cut more than whitespace and a backslash: {dropped:?} of {input:?}")
    })
}

/// What `truncate_slack` promises for `out = truncate_slack(escaped, max)`,
/// `escaped` being Slack-escaped text: fits `max` units and stays defused
/// (no bare `&`, no broken entity); unchanged when it fits; otherwise a
/// prefix plus `…` that drops, beyond the longest fitting prefix, at most
/// trailing whitespace, a backslash and an entity's start.
pub fn slack_truncated(escaped: &str, max: usize, out: &str) -> Result<(), String> {
    ensure(text_len(out) <= max, || {
        format!("{out:?} is {} units, over {max}", text_len(out))
    })?;
    slack_text_defused(out)?;
    if text_len(escaped) <= max {
        return ensure(out == escaped, || {
            format!("a text that fits is kept whole: {out:?} for {escaped:?}")
        });
    }
    if max == 0 {
        return Ok(());
    }
    let kept = out
        .strip_suffix('…')
        .ok_or_else(|| format!("no `…` in {out:?}"))?;
    ensure(escaped.starts_with(kept), || format!("{kept:?}"))?;
    let full = longest_prefix(escaped, max - 1);
    let mut dropped = full[kept.len()..].trim_end();
    dropped = dropped.strip_suffix('\\').unwrap_or(dropped).trim_end();
    if let Some(amp) = dropped.rfind('&')
        && is_partial_entity(&dropped[amp..])
    {
        dropped = dropped[..amp].trim_end();
    }
    ensure(dropped.is_empty(), || {
        format!("cut too much of {escaped:?}: {dropped:?}")
    })
}

/// A text after fitting is its original, or a prefix of it followed by `…`.
pub fn cut_from(original: &str, now: &str) -> Result<(), String> {
    if now == original {
        return Ok(());
    }
    let kept = now
        .strip_suffix('…')
        .ok_or_else(|| format!("changed without a `…`: {now:?} from {original:?}"))?;
    ensure(original.starts_with(kept), || {
        format!("{now:?} is not a cut of {original:?}")
    })
}

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
fn at_most(errs: &mut Vec<String>, path: &str, n: usize, max: usize) {
    if n > max {
        errs.push(format!("{path} has {n} items (> {max})"));
    }
}

/// Each limited text present is a string within its limit; its length.
fn limited_texts(body: &Value, limited: &[(String, usize)], errs: &mut Vec<String>) -> Vec<usize> {
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
fn cut_from_original(
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

fn is_http_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

/// A non-blank string at `v`, if present.
fn non_blank(errs: &mut Vec<String>, path: &str, v: Option<&Value>) {
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
fn text_object(errs: &mut Vec<String>, path: &str, t: &Value) {
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
