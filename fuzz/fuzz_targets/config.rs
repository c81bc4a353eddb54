//! Bytes (as UTF-8 text) → `Config::parse`, the parser and validator that
//! `crisp-relay check`, `serve` and reload run on relay.yaml (through
//! `Relay::load_with_env`), then, for a valid config, the template check
//! against the shipped templates (the rest of what `check` does without the
//! file system) and routing of a few sample events through its router.
//!
//! Checks: no panic, whatever the text; a rejected config has at least one
//! error, each with a position (so `check` never fails silently); a valid
//! config's routes name existing targets.

#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use crisp_relay::config::Config;
use crisp_relay::event::Event;
use crisp_relay::render::{Renderer, candidates};
use crisp_relay_fuzz::{RECEIVED_AT, repo_root, shipped_templates};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The environment `${VAR}` sees: a few set variables; the rest are unset.
fn env(name: &str) -> Option<String> {
    match name {
        "CRISP_HOOK_KEY" => Some("fuzz-key".into()),
        "DISCORD_WEBHOOK_URL" => Some("https://discord.com/api/webhooks/123/fuzz-token".into()),
        "SLACK_WEBHOOK_URL" => Some("https://hooks.slack.com/services/T0/B0/fuzz".into()),
        "CRM_TOKEN" => Some("tok\"en #x".into()),
        "EMPTY" => Some(String::new()),
        "CRISP_LISTEN" => Some("127.0.0.1:0".into()),
        _ => None,
    }
}

struct Fixed {
    renderer: Renderer,
    names: Vec<String>,
    events: Vec<Value>,
}

static FIXED: LazyLock<Fixed> = LazyLock::new(|| {
    let renderer = Renderer::new(&shipped_templates()).expect("shipped templates");
    let names = renderer.names();
    let dir = repo_root().join("tests/fixtures/crisp-events");
    let events = [
        "message_send_text_basic.json",
        "message_received_text_operator.json",
        "session_set_email.json",
    ]
    .iter()
    .filter_map(|f| std::fs::read(dir.join(f)).ok())
    .map(|b| Event::parse(&b, RECEIVED_AT).unwrap().value().clone())
    .collect();
    Fixed {
        renderer,
        names,
        events,
    }
});

fuzz_target!(|data: &[u8]| {
    let fixed = &*FIXED;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::parse(text, "relay.yaml", Path::new("/etc/crisp-relay"), &env) {
        Ok(config) => config,
        Err(errors) => {
            assert!(!errors.0.is_empty(), "rejected without an error");
            for e in &errors.0 {
                assert!(!e.message.is_empty(), "an error without a message");
                let _ = e.to_string();
            }
            return;
        }
    };
    for route in config.router.routes() {
        for &t in &route.targets {
            assert!(t < config.targets.len(), "route {} → {t}", route.name);
        }
    }
    let _ = config.enabled_targets().count();
    // What `check` does next (Relay::load_with_env), minus the file system.
    let checked = config.check_templates(
        |name, kind| fixed.renderer.resolve(name, kind).map(|r| r.file),
        |name, kind| {
            candidates(name, kind)
                .into_iter()
                .map(|(key, _)| format!("templates/{key}.hbs"))
                .collect()
        },
        &fixed.names,
    );
    if let Err(errors) = checked {
        assert!(
            !errors.0.is_empty(),
            "template check failed without an error"
        );
    }
    for event in &fixed.events {
        for d in config.router.route_all(event) {
            assert!(d.route < config.router.routes().len() && d.target < config.targets.len());
        }
    }
});
