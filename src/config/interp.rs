//! `${VAR}` and `${VAR:-default}` interpolation in string values. Pure: the
//! environment is a lookup function the caller passes.

/// Reads environment variables; tests pass a map instead of the process env.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum InterpError {
    Unset(String),
    Malformed(String),
}

/// Expands `${VAR}` (must be set) and `${VAR:-default}` (default when unset
/// or empty); `$$` is a literal `$`. Values are inserted as they are: they are
/// never parsed as YAML, so a secret with quotes or `#` cannot change the file.
pub(super) fn interpolate(s: &str, env: EnvLookup<'_>) -> Result<String, InterpError> {
    if !s.contains('$') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(r) = rest.strip_prefix("$$") {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("${") {
            let Some(end) = r.find('}') else {
                return Err(InterpError::Malformed(format!("unclosed `${{` in `{s}`")));
            };
            let inner = &r[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(InterpError::Malformed(format!(
                    "`${{{inner}}}` is not a variable reference"
                )));
            }
            match (env(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(InterpError::Unset(name.to_owned())),
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The variables of `${VAR:-}` references in `s` (an empty default) that
/// are unset or empty in `env`: where the value silently became nothing.
pub(super) fn empty_defaults(s: &str, env: EnvLookup<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        rest = &rest[at..];
        // `$$` is a literal `$`, so `$${VAR:-}` is text, not a reference.
        if let Some(r) = rest.strip_prefix("$$") {
            rest = r;
            continue;
        }
        let Some(after) = rest.strip_prefix("${") else {
            rest = &rest[1..];
            continue;
        };
        let Some(end) = after.find('}') else { break };
        if let Some(name) = after[..end].strip_suffix(":-")
            && env(name).is_none_or(|v| v.is_empty())
        {
            out.push(name.to_owned());
        }
        rest = &after[end + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_table() {
        let env = |k: &str| match k {
            "SET" => Some("v\"#: x".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let cases: &[(&str, Result<&str, InterpError>)] = &[
            ("plain", Ok("plain")),
            ("${SET}", Ok("v\"#: x")),
            ("a-${SET}-b", Ok("a-v\"#: x-b")),
            ("${UNSET:-def}", Ok("def")),
            ("${EMPTY:-def}", Ok("def")),
            ("${EMPTY}", Ok("")),
            ("${UNSET:-}", Ok("")),
            ("$$", Ok("$")),
            ("$${SET}", Ok("${SET}")),
            ("cost $5", Ok("cost $5")),
            ("${UNSET}", Err(InterpError::Unset("UNSET".into()))),
            (
                "${SET",
                Err(InterpError::Malformed("unclosed `${` in `${SET`".into())),
            ),
        ];
        for (input, want) in cases {
            let got = interpolate(input, &env);
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(*w), "{input}"),
                Err(w) => assert_eq!(got.as_ref().unwrap_err(), w, "{input}"),
            }
        }
    }

    #[test]
    fn empty_defaults_table() {
        let env = |k: &str| match k {
            "SET" => Some("v".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let cases: &[(&str, &[&str])] = &[
            ("Bearer ${UNSET:-}", &["UNSET"]),
            ("${EMPTY:-}${SET:-}", &["EMPTY"]),
            ("${UNSET:-x}", &[]),
            ("${UNSET}", &[]),
            ("cost $${UNSET:-}", &[]),
            ("$$$${UNSET:-}", &[]),
            ("$$${UNSET:-}", &["UNSET"]),
            ("$5 ${UNSET:-}", &["UNSET"]),
        ];
        for (input, want) in cases {
            assert_eq!(empty_defaults(input, &env), *want, "{input}");
        }
    }
}
