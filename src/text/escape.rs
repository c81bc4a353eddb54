//! Escaping per platform: what makes visitor text inert in a Discord
//! message, a Slack message or a JSON string. Pure; every function takes
//! text and returns text (borrowed when nothing needed escaping).

use std::borrow::Cow;

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

/// Defuses without visible marks: a zero-width space after the `@` of
/// `@everyone` / `@here`, after every `<` (no `<@id>`, `<#id>`, `<t:…>`) and
/// between `]` and `(` (no masked link).
pub fn defuse_mentions(s: &str) -> Cow<'_, str> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
