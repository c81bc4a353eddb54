//! The compiled matchers of a route's `match`: field paths into the
//! envelope ([`FieldPath`]), tests on a value ([`Test`], with globs and
//! regexes compiled once) and their combination ([`Condition`]). Pure.

use regex::Regex;
use serde_json::Value;

/// A dotted path into the envelope, e.g. `data.user.nickname`. A numeric
/// segment also indexes arrays (`data.content.choices.0.label`).
#[derive(Debug, Clone)]
pub struct FieldPath {
    text: String,
    segments: Vec<String>,
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a field path cannot be empty".into());
        }
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(format!(
                "field path `{text}` has an empty segment; write segments separated by single dots, e.g. `data.user.nickname`"
            ));
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this path, if every segment exists.
    pub fn lookup<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        let mut cur = root;
        for seg in &self.segments {
            cur = match cur {
                Value::Object(map) => map.get(seg)?,
                Value::Array(items) => items.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

/// A test on one field's value (or its absence).
#[derive(Debug, Clone)]
pub enum Test {
    /// Equal to a scalar (`user`, `true`, `42`, `null`).
    Eq(Value),
    /// A `*` pattern over the whole string, e.g. `message:*`.
    Glob(Glob),
    /// Any of these tests holds (a YAML list).
    AnyOf(Vec<Test>),
    /// `{regex: ...}`: the regex finds a match in the string.
    Regex(Box<Regex>),
    /// `{exists: true|false}`.
    Exists(bool),
    /// `{contains: x}`: substring of a string, or element of an array.
    Contains(Value),
    /// `{not: test}`.
    Not(Box<Test>),
    /// Several operators in one object: all of them hold.
    All(Vec<Test>),
}

/// The operators an operator object may use.
pub const OPERATORS: &[&str] = &["regex", "exists", "contains", "not"];

impl Test {
    /// Compiles a matcher value from the configuration. The error says what
    /// is wrong and how to write it instead.
    pub fn compile(value: &Value) -> Result<Self, String> {
        match value {
            Value::String(s) if s.contains('*') => Ok(Test::Glob(Glob::new(s))),
            Value::Array(items) => {
                if items.is_empty() {
                    return Err("an empty list matches nothing; list at least one value".into());
                }
                items
                    .iter()
                    .map(Test::compile)
                    .collect::<Result<_, _>>()
                    .map(Test::AnyOf)
            }
            Value::Object(ops) => {
                if ops.is_empty() {
                    return Err(format!(
                        "an empty operator object tests nothing; use one of {}",
                        list(OPERATORS)
                    ));
                }
                let mut tests = Vec::with_capacity(ops.len());
                for (op, arg) in ops {
                    tests.push(compile_operator(op, arg)?);
                }
                Ok(if tests.len() == 1 {
                    tests.remove(0)
                } else {
                    Test::All(tests)
                })
            }
            scalar => Ok(Test::Eq(scalar.clone())),
        }
    }

    /// Whether the test holds for `value` (`None`: the field is absent).
    pub fn holds(&self, value: Option<&Value>) -> bool {
        match self {
            Test::Exists(want) => value.is_some() == *want,
            Test::Not(inner) => !inner.holds(value),
            Test::AnyOf(tests) => tests.iter().any(|t| t.holds(value)),
            Test::All(tests) => tests.iter().all(|t| t.holds(value)),
            Test::Eq(want) => value.is_some_and(|v| scalar_eq(want, v)),
            Test::Glob(glob) => value.is_some_and(|v| with_text(v, |s| glob.matches(s))),
            Test::Regex(re) => value.is_some_and(|v| with_text(v, |s| re.is_match(s))),
            Test::Contains(needle) => value.is_some_and(|v| contains(v, needle)),
        }
    }
}

fn compile_operator(op: &str, arg: &Value) -> Result<Test, String> {
    match op {
        "regex" => {
            let Value::String(pattern) = arg else {
                return Err("`regex` takes a string, e.g. `{regex: \"^urn:crisp.im:\"}`".into());
            };
            Regex::new(pattern)
                .map(|re| Test::Regex(Box::new(re)))
                .map_err(|e| format!("invalid regex `{pattern}`: {}", regex_reason(&e)))
        }
        "exists" => match arg {
            Value::Bool(b) => Ok(Test::Exists(*b)),
            _ => Err("`exists` takes true or false".into()),
        },
        "contains" => match arg {
            Value::Array(_) | Value::Object(_) | Value::Null => {
                Err("`contains` takes a string, number or boolean".into())
            }
            v => Ok(Test::Contains(v.clone())),
        },
        "not" => Test::compile(arg).map(|t| Test::Not(Box::new(t))),
        other => {
            let hint = crate::suggest::did_you_mean(other, OPERATORS.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            Err(format!(
                "unknown operator `{other}`{hint}; operators are {}. To match an object value, match its fields with dotted paths instead",
                list(OPERATORS)
            ))
        }
    }
}

fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The reason in a regex error, without the crate's multi-line drawing of
/// the pattern (`regex parse error:\n    (\n    ^\nerror: unclosed group`).
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    match text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
    {
        Some(reason) => reason.to_owned(),
        None => one_line(&text),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Scalar equality where a YAML string also matches a JSON number or boolean
/// with the same text, and numbers compare by value (`1` equals `1.0`).
fn scalar_eq(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::String(a), Value::Number(b)) => a == &b.to_string(),
        (Value::String(a), Value::Bool(b)) => a == if *b { "true" } else { "false" },
        (a, b) => a == b,
    }
}

/// Runs `f` on the text of a string, number or boolean; other values fail.
fn with_text(v: &Value, f: impl Fn(&str) -> bool) -> bool {
    match v {
        Value::String(s) => f(s),
        Value::Number(n) => f(&n.to_string()),
        Value::Bool(b) => f(if *b { "true" } else { "false" }),
        _ => false,
    }
}

fn contains(haystack: &Value, needle: &Value) -> bool {
    match (haystack, needle) {
        (Value::String(h), Value::String(n)) => h.contains(n.as_str()),
        (Value::Array(items), n) => items.iter().any(|item| scalar_eq(n, item)),
        _ => false,
    }
}

/// A whole-string pattern where `*` matches any run of characters.
#[derive(Debug, Clone)]
pub struct Glob {
    parts: Vec<String>,
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Self {
            parts: pattern.split('*').map(str::to_owned).collect(),
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        let (first, rest) = match self.parts.split_first() {
            Some(p) => p,
            None => return text.is_empty(),
        };
        let Some(mut remaining) = text.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return remaining.is_empty();
        };
        for part in middle {
            match remaining.find(part.as_str()) {
                Some(at) => remaining = &remaining[at + part.len()..],
                None => return false,
            }
        }
        remaining.len() >= last.len() && remaining.ends_with(last.as_str())
    }
}

/// One condition of a `match`: a field test, or `any:` alternatives.
#[derive(Debug, Clone)]
pub enum Condition {
    Field {
        path: FieldPath,
        test: Test,
    },
    /// `any: [ {...}, {...} ]`: at least one group holds in full.
    Any(Vec<Vec<Condition>>),
}

impl Condition {
    pub(super) fn holds(&self, event: &Value) -> bool {
        match self {
            Condition::Field { path, test } => test.holds(path.lookup(event)),
            Condition::Any(groups) => groups.iter().any(|g| all_hold(g, event)),
        }
    }
}

pub(super) fn all_hold(conditions: &[Condition], event: &Value) -> bool {
    conditions.iter().all(|c| c.holds(event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn test(v: Value) -> Test {
        Test::compile(&v).unwrap()
    }

    #[test]
    fn glob_table() {
        let cases = [
            ("message:*", "message:send", true),
            ("message:*", "message:", true),
            ("message:*", "session:set_email", false),
            ("*:set_*", "session:set_email", true),
            ("*", "", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("exact", "exact", true),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(
                Glob::new(pattern).matches(text),
                want,
                "{pattern} vs {text}"
            );
        }
    }

    #[test]
    fn test_table() {
        let cases: Vec<(Value, Option<Value>, bool)> = vec![
            (json!("user"), Some(json!("user")), true),
            (json!("user"), Some(json!("operator")), false),
            (json!("user"), None, false),
            (json!(true), Some(json!(true)), true),
            (json!("42"), Some(json!(42)), true),
            (json!(1), Some(json!(1.0)), true),
            (json!(null), Some(json!(null)), true),
            (json!(["a", "b"]), Some(json!("b")), true),
            (json!(["a", "b"]), Some(json!("c")), false),
            (json!("msg:*"), Some(json!("msg:x")), true),
            (
                json!({"regex": "^urn:crisp"}),
                Some(json!("urn:crisp.im:slack:0")),
                true,
            ),
            (json!({"regex": "^urn:crisp"}), Some(json!("chat")), false),
            (json!({"exists": true}), Some(json!(null)), true),
            (json!({"exists": true}), None, false),
            (json!({"exists": false}), None, true),
            (
                json!({"contains": "refund"}),
                Some(json!("I want a refund!")),
                true,
            ),
            (
                json!({"contains": "vip"}),
                Some(json!(["new", "vip"])),
                true,
            ),
            (json!({"contains": "vip"}), Some(json!(["new"])), false),
            (json!({"not": "chat"}), Some(json!("email")), true),
            (json!({"not": "chat"}), Some(json!("chat")), false),
            (json!({"not": "chat"}), None, true),
            (
                json!({"not": {"regex": "^urn:"}}),
                Some(json!("chat")),
                true,
            ),
            (json!({"exists": true, "not": ""}), Some(json!("x")), true),
            (json!({"exists": true, "not": ""}), Some(json!("")), false),
        ];
        for (matcher, value, want) in cases {
            assert_eq!(
                test(matcher.clone()).holds(value.as_ref()),
                want,
                "{matcher} vs {value:?}"
            );
        }
    }

    #[test]
    fn compile_errors_say_how_to_fix() {
        let cases = [
            (json!({"regx": "a"}), "did you mean `regex`"),
            (json!({"regex": "("}), "invalid regex `(`: unclosed group"),
            (json!({"exists": "yes"}), "takes true or false"),
            (json!([]), "empty list"),
            (json!({}), "empty operator object"),
            (json!({"contains": ["a"]}), "takes a string"),
        ];
        for (matcher, want) in cases {
            let err = Test::compile(&matcher).unwrap_err();
            assert!(err.contains(want), "{matcher}: {err}");
        }
    }
}
