//! Routing: which (route, target) pairs an event goes to.
//!
//! Owns the compiled matchers and route evaluation. Everything is compiled once
//! when the configuration loads ([`Test::compile`]); [`Router::route`] is then a
//! pure function of the event, with no I/O, no locks and no allocation beyond
//! its result. This module knows nothing of YAML positions (the config module
//! attaches them to the messages returned here) nor of templates or delivery.
//!
//! Files: `matchers` (paths, tests, conditions); the routes and the indexed
//! router are here.

mod matchers;

use serde_json::Value;

use matchers::all_hold;
pub use matchers::{Condition, FieldPath, Glob, OPERATORS, Test};

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
