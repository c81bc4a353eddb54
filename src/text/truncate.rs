//! Measuring and cutting text the way destinations count it, so bodies fit
//! their limits without ever splitting a character (or, for Slack, an
//! entity). Pure.

use std::borrow::Cow;

use serde_json::Value;

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

/// [`truncate`] for text already escaped for Slack ([`escape_slack`](crate::text::escape_slack)), as
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
}
