//! Texts as Discord and Slack read them, and the promises of escaping,
//! `{{plain}}` and truncation about one text.

use super::*;
use crate::text::text_len;

// ---------------------------------------------------------------------------
// Reading texts as the destinations do

/// `(char, active)` for each character Discord shows: a backslash escapes
/// the character after it (shown literally, without effect) and is not
/// shown; a trailing lone backslash shows as itself.
pub(super) fn discord_shown(out: &str) -> Vec<(char, bool)> {
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
pub(super) fn ends_line(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Whitespace that trimming (the relay's, Discord's) removes, so that a line
/// still starts behind it.
pub(super) fn trimmed(c: char) -> bool {
    c.is_whitespace() || c == '\u{FEFF}'
}

/// `s` without the zero-width spaces escaping adds after `@`.
pub(super) fn without_at_zwsp(s: &str) -> String {
    s.replace("@\u{200B}", "@")
}

// ---------------------------------------------------------------------------
// Discord texts

pub(super) fn no_live(s: &str, mentions: &[&str]) -> Result<(), String> {
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
pub(super) fn longest_prefix(s: &str, max: usize) -> &str {
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
pub(super) fn is_partial_entity(s: &str) -> bool {
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
