//! How configuration mistakes are reported: [`ConfigError`] (file, line,
//! column, message, hint), and the rewording of the YAML parser's errors
//! into a user's words with "did you mean" hints. Pure.

use std::fmt;

use thiserror::Error;

use crate::suggest::did_you_mean;

/// One mistake in the configuration, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every mistake found in one pass, so a user fixes them all at once.
#[derive(Debug, Clone, Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Turns a serde-saphyr error into our format, adding "did you mean" hints to
/// unknown fields and rewording the parser's terse type messages.
pub(super) fn yaml_error(file: &str, err: &serde_saphyr::Error) -> ConfigError {
    let plain = err.without_snippet();
    let (line, column) = plain
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    let mut message = plain.to_string();
    // The crate may append its own location; ours is in front already.
    if let Some(cut) = message.find(" at line ") {
        message.truncate(cut);
    }
    let hint = unknown_name_hint(&message);
    ConfigError {
        file: file.to_owned(),
        line,
        column,
        message: reword_yaml_message(message),
        hint,
    }
}

/// Says in a user's words what serde-saphyr says in a parser's.
pub(super) fn reword_yaml_message(message: String) -> String {
    if let Some(rest) = message.strip_prefix("duplicate mapping key") {
        let key = rest
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or_default()
            .trim_start_matches(':')
            .trim();
        return if key.is_empty() {
            "a key appears twice in this mapping".into()
        } else {
            format!("key `{key}` appears twice in this mapping")
        };
    }
    match message.as_str() {
        "expected sequence start" => "expected a list here, e.g. `[a, b]`".into(),
        "expected mapping start" => {
            "expected a mapping here (`key: value` lines or `{key: value}`)".into()
        }
        "invalid boolean" => "expected true or false".into(),
        "invalid u8" | "invalid u16" | "invalid u32" | "invalid u64" | "invalid usize" => {
            "expected a whole number (0 or more)".into()
        }
        _ => message,
    }
}

/// From serde's "unknown field `x`, expected one of a, b" (serde-saphyr's
/// form; serde's own is "expected one of `a`, `b`" or "expected `a`"), a hint
/// naming the closest expected field.
pub(super) fn unknown_name_hint(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let (got, expected) = rest.split_once('`')?;
    let expected = expected.trim_start_matches(',').trim_start();
    let list = expected
        .strip_prefix("expected one of ")
        .or_else(|| expected.strip_prefix("expected "))
        .unwrap_or_default();
    let names: Vec<&str> = list
        .split(',')
        .map(|n| n.trim().trim_matches('`'))
        .filter(|n| !n.is_empty())
        .collect();
    match did_you_mean(got, names.iter().copied()) {
        Some(s) => Some(format!("did you mean `{s}`?")),
        None if !names.is_empty() => Some(format!("allowed here: {}", names.join(", "))),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_hints() {
        let cases = [
            (
                "unknown field `lisen`, expected one of listen, path, keys",
                Some("did you mean `listen`?"),
            ),
            (
                "unknown field `lisen`, expected one of `listen`, `path`",
                Some("did you mean `listen`?"),
            ),
            (
                "unknown field `zzzzzz`, expected `kind`",
                Some("allowed here: kind"),
            ),
            ("unknown field `x`, there are no fields", None),
            ("invalid boolean", None),
        ];
        for (message, want) in cases {
            assert_eq!(unknown_name_hint(message).as_deref(), want, "{message}");
        }
        assert_eq!(
            reword_yaml_message(
                "duplicate mapping key: path, set DuplicateKeyPolicy in Options if acceptable"
                    .into()
            ),
            "key `path` appears twice in this mapping"
        );
    }
}
