//! Rendering through the real binary (`check` and `render`): the shipped
//! config and templates pass `check` on every sample event; every sample
//! renders for every target kind within Discord's and Slack's limits; visitor
//! text can neither ping nor inject markup or links; long text is cut with an
//! ellipsis at a character boundary; and `render`'s human, error and stdin
//! modes behave.
//!
//! Files: `shipped` (the shipped configuration), `samples` (every sample
//! and odd event, every kind: within limits, pinging nobody, no markup from
//! visitor text), `escaping_and_cutting` (hostile text shown escaped, long
//! text cut at a character boundary), `render_command` (`render` itself).
//! This file holds what they share: the configs, running `render` and
//! picking a delivery.

mod escaping_and_cutting;
mod render_command;
mod samples;
mod shipped;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::helpers::*;

const DISCORD_URL: &str = "http://127.0.0.1:9/api/webhooks/1/tok";
const SLACK_URL: &str = "http://127.0.0.1:9/services/T000/B000/xyz";
const HOOK_URL: &str = "http://127.0.0.1:9/hook/secret";
const USERNAME: &str = "Crisp Relay";

/// Environment that enables every target of the shipped `relay.yaml`.
const SHIPPED_ENV: &[(&str, &str)] = &[
    (
        "DISCORD_WEBHOOK_URL",
        "https://discord.com/api/webhooks/123/SECRETDISCORDTOKEN",
    ),
    (
        "SLACK_WEBHOOK_URL",
        "https://hooks.slack.com/services/T000/B000/SECRETSLACKTOKEN",
    ),
    ("CRM_WEBHOOK_URL", "https://crm.example.com/hooks/crisp"),
];

/// One target of each kind; one route per shipped template that matches that
/// template's events; and a catch-all (through `visitor_message`, which must
/// cope with any event) so that every sample reaches every kind.
fn all_kinds_config() -> String {
    config_with(&format!(
        r#"targets:
  discord: {{kind: discord, url: "{DISCORD_URL}", username: "{USERNAME}"}}
  slack: {{kind: slack, url: "{SLACK_URL}"}}
  hook: {{kind: webhook, url: "{HOOK_URL}"}}
  console: {{kind: stdout}}
routes:
  - name: visitor-message
    match: {{event: ["message:send", "message:received", "message:updated"]}}
    to: [discord, slack, hook, console]
    template: visitor_message
  - name: contact-details
    match: {{event: ["session:set_email", "session:set_phone", "session:set_nickname"]}}
    to: [discord, slack, hook, console]
    template: contact_details
  - name: conversation-state
    match: {{event: "session:set_state"}}
    to: [discord, slack, hook, console]
    template: conversation_state
  - name: new-contact
    match: {{event: "people:profile:created"}}
    to: [discord, slack, hook, console]
    template: new_contact
  - name: everything-else
    to: [discord, slack, hook, console]
    template: visitor_message
"#
    ))
}

fn shipped_workdir() -> Workdir {
    Workdir::new(&std::fs::read_to_string(root().join("relay.yaml")).unwrap())
}

fn stdout_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fixture_path(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture_as_is(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// `render --json --event <path>`: one delivery per line, each parsed.
fn render_json(work: &Workdir, event: &Path) -> Vec<Value> {
    let out = work.run(&["render", "--json", "--event", event.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "render {}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        event.display(),
        out.status.code(),
        stdout_of(&out),
        stderr_of(&out)
    );
    stdout_of(&out)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("render {}: line is not JSON ({e}): {line}", event.display())
            })
        })
        .collect()
}

/// The delivery of `kind` among `deliveries` (exactly one is expected).
fn delivery<'a>(deliveries: &'a [Value], kind: &str, what: &str) -> &'a Value {
    let found: Vec<&Value> = deliveries.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "{what}: expected one {kind} delivery: {deliveries:#?}"
    );
    found[0]
}
