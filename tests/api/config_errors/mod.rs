//! A user's mistakes in relay.yaml: each is refused (exit 2) with
//! `relay.yaml:LINE:COL:` pointing at the offending token, a message saying
//! what is wrong and, where one helps, a hint. Also what `check` and `serve`
//! warn about (allowed, but likely wrong) and switching targets off.
//!
//! Most cases append to [`config_with`], whose fixed part is ten lines:
//!
//! ```text
//!  1 server:
//!  2   listen: 127.0.0.1:0
//!  3   path: /crisp/hooks
//!  4   keys: ["${CRISP_HOOK_KEY}"]
//!  5   max_body: 64KiB
//!  6 admin:
//!  7   listen: 127.0.0.1:0
//!  8 store:
//!  9   path: data/relay.db
//! 10 templates: templates
//! ```
//!
//! so `extra` starts on line 11. Every case also checks that the text at the
//! asserted position really is the token it names, so a wrong hard-coded
//! position cannot pass by accident.
//!
//! Files: `syntax` (YAML syntax, unknown keys and names, every mistake of a
//! file at once), `values` (bad values, hook keys, variables and their
//! defaults, quotas and retries), `warnings` (what passes `check` with a
//! warning, secrets kept out of it), `enabled` (targets switched off by
//! `enabled` or an empty url). This file holds what they share: the work
//! dirs, the error cases and how one is checked.

mod enabled;
mod replies;
mod store;
mod syntax;
mod values;
mod warnings;

use std::process::Command;

use crate::helpers::*;

/// A webhook token that must never appear in any output.
const TOKEN: &str = "TOPSECRET-TOKEN-42";

/// The only template in these work dirs, so the cases do not depend on the
/// shipped templates.
const TEMPLATE: (&str, &str) = ("greeting.hbs", "Hello from {{data.user.nickname}}");

struct Case {
    name: &'static str,
    yaml: String,
    /// 1-based line and column of the offending token.
    line: usize,
    column: usize,
    /// What the file holds at that position.
    token: &'static str,
    /// A fragment of the error line.
    message: &'static str,
    /// A fragment of the `hint:` line that follows it.
    hint: Option<&'static str>,
}

/// The base config with `from` replaced by `to` (once).
fn edit(from: &str, to: &str) -> String {
    let base = config_with("");
    assert!(base.contains(from), "base config has no `{from}`");
    base.replacen(from, to, 1)
}

/// A work dir for `yaml` whose templates directory holds only [`TEMPLATE`].
fn workdir(yaml: &str) -> Workdir {
    let work = Workdir::new(yaml);
    let templates = work.path().join("templates");
    std::fs::remove_dir_all(&templates).unwrap();
    std::fs::create_dir_all(&templates).unwrap();
    work.write(&format!("templates/{}", TEMPLATE.0), TEMPLATE.1);
    work
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Every stderr line is an `error:` line with one location, or its hint: no
/// duplicated location, no source snippet, no parser internals.
fn assert_clean(name: &str, stderr: &str) {
    for line in stderr.lines() {
        if let Some(rest) = line.strip_prefix("error: ") {
            assert_eq!(
                rest.matches("relay.yaml:").count(),
                1,
                "{name}: one location per error line: {line}"
            );
            assert!(
                !rest.contains(" at line "),
                "{name}: location twice: {line}"
            );
            assert!(
                !rest.contains("DuplicateKeyPolicy"),
                "{name}: parser internals: {line}"
            );
        } else {
            assert!(
                line.starts_with("  hint: "),
                "{name}: stray stderr line {line:?} in\n{stderr}"
            );
        }
    }
    assert!(!stderr.contains(TOKEN), "{name}: secret echoed:\n{stderr}");
}

/// Checks one case; returns what is wrong, if anything.
fn check_case(c: &Case) -> Result<(), String> {
    let at_token = c
        .yaml
        .lines()
        .nth(c.line - 1)
        .map(|l| l.chars().skip(c.column - 1).collect::<String>())
        .unwrap_or_default();
    if !at_token.starts_with(c.token) {
        return Err(format!(
            "{}: the case is wrong: {}:{} holds {at_token:?}, not {:?}",
            c.name, c.line, c.column, c.token
        ));
    }
    let work = workdir(&c.yaml);
    let out = work.run(&["check"]);
    let stderr = text(&out.stderr);
    let fail = |why: String| Err(format!("{}: {why}\nstderr:\n{stderr}", c.name));
    if out.status.code() != Some(2) {
        return fail(format!("exit code {:?}, want 2", out.status.code()));
    }
    if !out.stdout.is_empty() {
        return fail(format!("stdout not empty: {}", text(&out.stdout)));
    }
    assert_clean(c.name, &stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    if errors.len() != 1 {
        return fail(format!("{} errors for one mistake", errors.len()));
    }
    let location = format!("relay.yaml:{}:{}: ", c.line, c.column);
    if !errors[0].contains(&location) {
        return fail(format!("want `{location}`"));
    }
    if !errors[0].contains(c.message) {
        return fail(format!("want message `{}`", c.message));
    }
    let hint_line = stderr.lines().nth(1).unwrap_or("");
    match c.hint {
        Some(h) if !(hint_line.starts_with("  hint: ") && hint_line.contains(h)) => {
            fail(format!("want hint `{h}`"))
        }
        _ => Ok(()),
    }
}

fn run_cases(cases: &[Case]) {
    let failures: Vec<String> = cases.iter().filter_map(|c| check_case(c).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// `check` with the `unset` variables removed, then the `set` ones set;
/// returns the output after asserting that it succeeded.
fn check_ok(work: &Workdir, set: &[(&str, &str)], unset: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.arg("check")
        .arg("-c")
        .arg(work.config_path())
        .env("CRISP_HOOK_KEY", KEY)
        .env_remove("RUST_LOG");
    for k in unset {
        cmd.env_remove(k);
    }
    for (k, v) in set {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "check should pass with warnings only:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}
