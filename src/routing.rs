//! Routing: which (route, target) pairs an event goes to.
//!
//! Owns the compiled matchers and route evaluation. Everything is compiled once
//! when the configuration loads ([`Test::compile`]); [`Router::route`] is then a
//! pure function of the event, with no I/O, no locks and no allocation beyond
//! its result. This module knows nothing of YAML positions (the config module
//! attaches them to the messages returned here) nor of templates or delivery.

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
    fn holds(&self, event: &Value) -> bool {
        match self {
            Condition::Field { path, test } => test.holds(path.lookup(event)),
            Condition::Any(groups) => groups.iter().any(|g| all_hold(g, event)),
        }
    }
}

fn all_hold(conditions: &[Condition], event: &Value) -> bool {
    conditions.iter().all(|c| c.holds(event))
}

/// The exact event names a route's conditions allow, when one of them pins
/// the top-level `event` field to strings (`event: x` or `event: [x, y]`);
/// `None`: any name may match.
fn event_names(conditions: &[Condition]) -> Option<Vec<&str>> {
    fn exact(test: &Test) -> Option<Vec<&str>> {
        match test {
            Test::Eq(Value::String(s)) => Some(vec![s.as_str()]),
            Test::AnyOf(tests) => tests.iter().try_fold(Vec::new(), |mut acc, t| {
                acc.extend(exact(t)?);
                Some(acc)
            }),
            Test::All(tests) => tests.iter().find_map(exact),
            _ => None,
        }
    }
    conditions.iter().find_map(|c| match c {
        Condition::Field { path, test } if path.as_str() == "event" => exact(test),
        _ => None,
    })
}

/// A compiled route: its conditions and the indexes of its targets.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub conditions: Vec<Condition>,
    /// Indexes into the configuration's target list (disabled ones included;
    /// [`Router::route`] skips them).
    pub targets: Vec<usize>,
    pub template: Option<String>,
    pub continue_matching: bool,
}

impl Route {
    /// The exact event names this route can match, if its conditions pin
    /// `event` to strings; `None`: any name may match.
    pub fn event_names(&self) -> Option<Vec<&str>> {
        event_names(&self.conditions)
    }
}

/// One delivery decided by routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub route: usize,
    pub target: usize,
}

/// Ordered routes; the first match wins unless it says `continue: true`.
///
/// Indexed by event name: a route whose conditions pin `event` to one or
/// more exact names is only evaluated for those names, so the cost of an
/// event grows with the routes that could match it, not with the whole
/// list. Order is kept: each name's candidates are the route indexes of
/// its own routes merged with the unindexed ones, ascending.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
    /// `enabled[target]`: whether deliveries to that target are made.
    enabled: Vec<bool>,
    /// Event name → candidate route indexes, ascending.
    by_event: std::collections::HashMap<String, Vec<usize>>,
    /// Routes that may match any event name (no exact `event` condition),
    /// ascending: the candidates for names not in `by_event`.
    unindexed: Vec<usize>,
}

impl Router {
    pub fn new(routes: Vec<Route>, enabled: Vec<bool>) -> Self {
        let mut by_event: std::collections::HashMap<String, Vec<usize>> =
            std::collections::HashMap::new();
        let mut unindexed = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            match event_names(&route.conditions) {
                Some(names) => {
                    for name in names {
                        let list = by_event.entry(name.to_owned()).or_default();
                        if list.last() != Some(&index) {
                            list.push(index);
                        }
                    }
                }
                None => unindexed.push(index),
            }
        }
        for list in by_event.values_mut() {
            list.extend_from_slice(&unindexed);
            list.sort_unstable();
            list.dedup();
        }
        Self {
            routes,
            enabled,
            by_event,
            unindexed,
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The deliveries for `event` (the whole envelope), in route order,
    /// to enabled targets.
    pub fn route(&self, event: &Value) -> Vec<Decision> {
        self.evaluate(event, false)
    }

    /// Like [`Router::route`], but disabled targets are included (for
    /// `check` and `render`, which show what each target would receive).
    pub fn route_all(&self, event: &Value) -> Vec<Decision> {
        self.evaluate(event, true)
    }

    fn evaluate(&self, event: &Value, include_disabled: bool) -> Vec<Decision> {
        match event.get("event") {
            Some(Value::String(name)) => {
                let candidates = self.by_event.get(name.as_str()).unwrap_or(&self.unindexed);
                self.evaluate_in(candidates.iter().copied(), event, include_disabled)
            }
            // Not a string (only `check` and tests get here): every route.
            _ => self.evaluate_in(0..self.routes.len(), event, include_disabled),
        }
    }

    fn evaluate_in(
        &self,
        candidates: impl Iterator<Item = usize>,
        event: &Value,
        include_disabled: bool,
    ) -> Vec<Decision> {
        let mut out = Vec::new();
        for index in candidates {
            let route = &self.routes[index];
            if all_hold(&route.conditions, event) {
                let enabled =
                    |t: &usize| include_disabled || self.enabled.get(*t).copied().unwrap_or(false);
                out.extend(
                    route
                        .targets
                        .iter()
                        .filter(|t| enabled(t))
                        .map(|&target| Decision {
                            route: index,
                            target,
                        }),
                );
                if !route.continue_matching {
                    break;
                }
            }
        }
        out
    }
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

    #[test]
    fn paths_and_routes() {
        let event = json!({"event": "message:send", "data": {"from": "user", "user": {"nickname": "Ann"},
            "content": {"choices": [{"label": "A"}]}}});
        let p = |s: &str| FieldPath::parse(s).unwrap();
        assert_eq!(p("data.user.nickname").lookup(&event), Some(&json!("Ann")));
        assert_eq!(
            p("data.content.choices.0.label").lookup(&event),
            Some(&json!("A"))
        );
        assert_eq!(p("data.nope.x").lookup(&event), None);
        assert!(FieldPath::parse("data..x").is_err());

        let field = |path: &str, v: Value| Condition::Field {
            path: p(path),
            test: test(v),
        };
        let route = |name: &str, conds, targets, cont| Route {
            name: name.into(),
            conditions: conds,
            targets,
            template: None,
            continue_matching: cont,
        };
        let router = Router::new(
            vec![
                route("a", vec![field("event", json!("message:*"))], vec![0], true),
                route(
                    "b",
                    vec![field("data.from", json!("user"))],
                    vec![1, 2],
                    false,
                ),
                route("c", vec![], vec![3], false),
            ],
            vec![true, true, true, true],
        );
        let got = router.route(&event);
        assert_eq!(
            got,
            vec![
                Decision {
                    route: 0,
                    target: 0
                },
                Decision {
                    route: 1,
                    target: 1
                },
                Decision {
                    route: 1,
                    target: 2
                }
            ]
        );
        let any = Condition::Any(vec![
            vec![field("data.from", json!("operator"))],
            vec![field("data.user.nickname", json!("Ann"))],
        ]);
        assert!(any.holds(&event));
        assert_eq!(
            router.route(&json!({"event": "session:x"})),
            vec![Decision {
                route: 2,
                target: 3
            }]
        );
    }

    /// The event-name index gives exactly what evaluating every route in
    /// order gives, for indexed, unindexed and mixed routes.
    #[test]
    fn index_agrees_with_linear_evaluation() {
        let p = |s: &str| FieldPath::parse(s).unwrap();
        let field = |path: &str, v: Value| Condition::Field {
            path: p(path),
            test: test(v),
        };
        let matchers = [
            Some(json!("message:send")),
            Some(json!(["message:send", "session:set_email"])),
            Some(json!("message:*")),
            Some(json!({"not": "message:send"})),
            Some(json!({"regex": "^session:", "exists": true})),
            Some(json!("5")),
            None,
        ];
        let mut routes = Vec::new();
        for i in 0..60usize {
            let mut conditions = Vec::new();
            if let Some(m) = &matchers[i % matchers.len()] {
                conditions.push(field("event", m.clone()));
            }
            if i % 4 == 1 {
                conditions.push(field("data.from", json!("user")));
            }
            routes.push(Route {
                name: format!("r{i}"),
                conditions,
                targets: vec![i % 3],
                template: None,
                continue_matching: i % 5 != 0,
            });
        }
        let router = Router::new(routes.clone(), vec![true, false, true]);
        let events = [
            json!({"event": "message:send", "data": {"from": "user"}}),
            json!({"event": "message:send", "data": {"from": "operator"}}),
            json!({"event": "message:received", "data": {"from": "user"}}),
            json!({"event": "session:set_email", "data": {}}),
            json!({"event": "unknown:thing", "data": {"from": "user"}}),
            json!({"event": 5, "data": {}}),
            json!({"data": {"from": "user"}}),
        ];
        for event in &events {
            for include_disabled in [false, true] {
                let mut want = Vec::new();
                for (index, route) in routes.iter().enumerate() {
                    if all_hold(&route.conditions, event) {
                        want.extend(
                            route
                                .targets
                                .iter()
                                .filter(|&&t| include_disabled || t != 1)
                                .map(|&target| Decision {
                                    route: index,
                                    target,
                                }),
                        );
                        if !route.continue_matching {
                            break;
                        }
                    }
                }
                let got = if include_disabled {
                    router.route_all(event)
                } else {
                    router.route(event)
                };
                assert_eq!(got, want, "{event} include_disabled={include_disabled}");
            }
        }
        assert!(!router.route(&events[0]).is_empty());
        assert!(!router.route(&events[5]).is_empty());
    }
}
