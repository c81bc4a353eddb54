//! Bytes → `Event::parse` (the ingest check of a Crisp request body) and,
//! when the body is an envelope, routing through the relay loaded from
//! `fuzz/relay.fuzz.yaml` (the shipped routes plus one route per matcher kind).
//!
//! Checks: no panic; a parsed event has the envelope's shape and reads back
//! from its stored JSON (what delivery re-parses); routing is deterministic;
//! `route` is `route_all` without the disabled targets; decisions come in
//! route order, each route's targets in its `to:` order; only the last
//! matching route may lack `continue: true` (first match wins); the catch-all
//! means every event is routed; `Relay::plan` agrees; the first eleven routes
//! (all `continue: true`) match exactly when the oracles below say so; and
//! `Glob` agrees with an equivalent regex.

#![no_main]

use std::sync::LazyLock;

use crisp_relay::Relay;
use crisp_relay::event::Event;
use crisp_relay::routing::{Decision, Glob};
use crisp_relay_fuzz::{RECEIVED_AT, same_json};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

static RELAY: LazyLock<Relay> = LazyLock::new(|| {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("relay.fuzz.yaml");
    let relay = Relay::load_with_env(&path, &|_| None)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        relay.config.router.routes()[ORACLES.len() - 1].name,
        "stringly"
    );
    relay
});

/// The glob patterns of relay.fuzz.yaml, checked against a regex oracle.
const GLOBS: &[&str] = &["message:*", "*-*-*", "17*", "people:*:created"];

/// Independent statements of routes 0..=10 of relay.fuzz.yaml, in order.
type Oracle = fn(&Value) -> bool;
const ORACLES: [Oracle; 11] = [
    // notes: {event: "message:*", data.type: note}
    |e| is_message(e) && at(e, "data.type") == Some(&Value::from("note")),
    // vip: event "message:*", any [nickname ~ ^vip-[0-9]+$, origin == email]
    |e| {
        let vip = text(at(e, "data.user.nickname")).is_some_and(|n| {
            n.strip_prefix("vip-")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        });
        is_message(e) && (vip || at(e, "data.origin") == Some(&Value::from("email")))
    },
    // refund: {data.content: {contains: refund}}
    |e| match at(e, "data.content") {
        Some(Value::String(s)) => s.contains("refund"),
        Some(Value::Array(items)) => items.iter().any(|i| i == "refund"),
        _ => false,
    },
    // first-choice-selected: {data.content.choices.0.selected: true}
    |e| at(e, "data.content.choices.0.selected") == Some(&Value::Bool(true)),
    // duration: ["17", 30]: "17" is also the number whose text is 17;
    // 30 is any number equal to 30 (30.0 too), but not the string "30".
    |e| match at(e, "data.content.duration") {
        Some(Value::String(s)) => s == "17",
        Some(Value::Number(n)) => n.to_string() == "17" || n.as_f64() == Some(30.0),
        _ => false,
    },
    // no-session-no-at: session_id absent, email does not contain "@".
    |e| {
        at(e, "data.session_id").is_none()
            && !text(at(e, "data.user.email")).is_some_and(|t| t.contains('@'))
    },
    // dashed-website: {website_id: "*-*-*"}
    |e| e["website_id"].as_str().unwrap().matches('-').count() >= 2,
    // segment-seven: {data.segments: {contains: 7}}
    |e| match at(e, "data.segments") {
        Some(Value::Array(items)) => items.iter().any(|i| i.as_f64() == Some(7.0)),
        _ => false,
    },
    // user-present: {data.user: {exists: true, not: null}}
    |e| at(e, "data.user").is_some_and(|u| !u.is_null()),
    // chat-or-operator: any [{from: user, origin: chat}, {from: operator}]
    |e| {
        let is = |p: &str, v: &str| at(e, p) == Some(&Value::from(v));
        (is("data.from", "user") && is("data.origin", "chat")) || is("data.from", "operator")
    },
    // stringly: {data.verified: "true", timestamp: "17*"}
    |e| {
        let verified = matches!(at(e, "data.verified"), Some(Value::Bool(true)))
            || at(e, "data.verified") == Some(&Value::from("true"));
        verified && e["timestamp"].to_string().starts_with("17")
    },
];

fn is_message(e: &Value) -> bool {
    e["event"].as_str().unwrap().starts_with("message:")
}

/// The value at a dotted path: object keys, or array indexes.
fn at<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(root, |cur, seg| match cur {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => a.get(seg.parse::<usize>().ok()?),
        _ => None,
    })
}

/// The text a regex or glob sees: strings, numbers and booleans.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn glob_oracle(pattern: &str, text: &str) -> bool {
    let parts: Vec<String> = pattern.split('*').map(regex::escape).collect();
    let re = regex::RegexBuilder::new(&format!("^(?s:{})$", parts.join(".*")))
        .size_limit(1 << 26)
        .build();
    match re {
        Ok(re) => re.is_match(text),
        Err(_) => Glob::new(pattern).matches(text), // too big to compare
    }
}

fuzz_target!(|data: &[u8]| {
    let relay = &*RELAY;
    let Ok(event) = Event::parse(data, RECEIVED_AT) else {
        return;
    };
    let v = event.value();

    // The envelope's shape, and what delivery reads back from the store.
    assert!(v["event"].is_string() && v["website_id"].is_string());
    assert!(v["data"].is_object());
    assert!(v["timestamp"].is_i64() || v["timestamp"].is_u64());
    assert_eq!(event.name(), v["event"].as_str().unwrap());
    let stored = event.to_json();
    let back = Event::parse(stored.as_bytes(), 0).expect("the stored event reads back");
    assert!(same_json(back.value(), v), "stored: {stored}");
    assert_eq!(
        (back.name(), back.website_id(), back.timestamp()),
        (event.name(), event.website_id(), event.timestamp())
    );

    let router = &relay.config.router;
    let routes = router.routes();
    let all = router.route_all(v);
    assert_eq!(all, router.route_all(v), "deterministic");
    let enabled: Vec<Decision> = all
        .iter()
        .copied()
        .filter(|d| relay.config.targets[d.target].enabled)
        .collect();
    assert_eq!(router.route(v), enabled, "route = route_all − disabled");
    assert!(!enabled.is_empty(), "the catch-all routes every event");

    // Decisions in route order; each matched route's targets in `to:` order.
    let mut matched: Vec<usize> = all.iter().map(|d| d.route).collect();
    matched.dedup();
    assert!(matched.windows(2).all(|w| w[0] < w[1]), "{all:?}");
    for &r in &matched {
        let targets: Vec<usize> = all
            .iter()
            .filter(|d| d.route == r)
            .map(|d| d.target)
            .collect();
        assert_eq!(targets, routes[r].targets, "route {}", routes[r].name);
    }
    // First match wins: only the last matched route may stop the matching.
    for &r in &matched[..matched.len() - 1] {
        assert!(
            routes[r].continue_matching,
            "matched after {}",
            routes[r].name
        );
    }
    let plan = relay.plan(&event);
    assert_eq!(plan.len(), enabled.len());
    for (p, d) in plan.iter().zip(&enabled) {
        assert_eq!(p.route, routes[d.route].name);
        assert_eq!(p.target, relay.config.targets[d.target].name);
    }

    for (r, oracle) in ORACLES.iter().enumerate() {
        assert_eq!(
            matched.contains(&r),
            oracle(v),
            "route `{}` on {stored}",
            routes[r].name
        );
    }

    let name = event.name();
    let website = event.website_id();
    let mut pairs: Vec<(&str, &str)> = GLOBS
        .iter()
        .flat_map(|p| [(*p, name), (*p, website)])
        .collect();
    pairs.push((website, name));
    for (pattern, text) in pairs {
        assert_eq!(
            Glob::new(pattern).matches(text),
            glob_oracle(pattern, text),
            "glob {pattern:?} on {text:?}"
        );
    }
});
