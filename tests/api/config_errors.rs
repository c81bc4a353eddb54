//! A user's mistakes in relay.yaml: each is refused (exit 2) with
//! `relay.yaml:LINE:COL:` pointing at the offending token, a message saying
//! what is wrong and, where one helps, a hint.
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

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

#[test]
fn the_base_config_is_ten_lines_and_valid() {
    // The positions below assume this; if config_with changes, fix them.
    assert_eq!(config_with("").lines().count(), 10);
    let work = workdir(&config_with(
        "targets:\n  console: {kind: stdout}\nroutes:\n  - name: all\n    to: [console]\n",
    ));
    let out = work.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn yaml_syntax_errors_point_at_the_broken_token() {
    run_cases(&[
        Case {
            name: "extra closing brace",
            yaml: config_with("targets:\n  console: {kind: stdout}}\n"),
            line: 12,
            column: 26,
            token: "}",
            message: "misplaced bracket",
            hint: None,
        },
        Case {
            name: "unclosed quote",
            yaml: config_with("targets:\n  console: {kind: \"stdout}\n"),
            line: 12,
            column: 19,
            token: "\"stdout",
            message: "unclosed quote",
            hint: None,
        },
        Case {
            name: "key indented too little",
            yaml: config_with(
                "targets:\n  crm:\n    kind: webhook\n   url: \"https://crm.example.com/hook\"\n",
            ),
            line: 14,
            column: 4,
            token: "url:",
            message: "did not find expected key",
            hint: None,
        },
        Case {
            name: "duplicate key",
            yaml: config_with("templates: other\n"),
            line: 11,
            column: 1,
            token: "templates: other",
            message: "key `templates` appears twice",
            hint: None,
        },
        Case {
            name: "string where a list belongs",
            yaml: edit(
                "keys: [\"${CRISP_HOOK_KEY}\"]",
                "keys: \"${CRISP_HOOK_KEY}\"",
            ),
            line: 4,
            column: 9,
            token: "\"${CRISP_HOOK_KEY}\"",
            message: "expected a list here",
            hint: None,
        },
    ]);
}

#[test]
fn unknown_keys_and_names_suggest_the_closest() {
    run_cases(&[
        Case {
            name: "unknown top-level key",
            yaml: config_with("serverr:\n  listen: 127.0.0.1:8081\n"),
            line: 11,
            column: 1,
            token: "serverr:",
            message: "unknown field `serverr`",
            hint: Some("did you mean `server`?"),
        },
        Case {
            name: "unknown key in server",
            yaml: edit(
                "  listen: 127.0.0.1:0\n  path",
                "  lisen: 127.0.0.1:0\n  path",
            ),
            line: 2,
            column: 3,
            token: "lisen:",
            message: "unknown field `lisen`",
            hint: Some("did you mean `listen`?"),
        },
        Case {
            name: "unknown key in a target",
            yaml: config_with(
                "targets:\n  team-discord:\n    kind: discord\n    url: \"https://discord.com/api/webhooks/123/tok\"\n    usrname: Crisp\n",
            ),
            line: 15,
            column: 5,
            token: "usrname:",
            message: "unknown field `usrname`",
            hint: Some("did you mean `username`?"),
        },
        Case {
            name: "unknown key in a flow-style rate_limit",
            yaml: config_with(
                "targets:\n  crm: {kind: webhook, url: \"https://crm.example.com/hook\", rate_limit: {requests: 5, per: 1s, brust: 10}}\n",
            ),
            line: 12,
            column: 96,
            token: "brust:",
            message: "unknown field `brust`",
            hint: Some("did you mean `burst`?"),
        },
        Case {
            name: "unknown target kind",
            yaml: config_with(
                "targets:\n  team-discord: {kind: discrod, url: \"https://discord.com/api/webhooks/123/tok\"}\n",
            ),
            line: 12,
            column: 24,
            token: "discrod",
            message: "target `team-discord`: unknown kind `discrod`",
            hint: Some("did you mean `discord`?"),
        },
        Case {
            name: "route names an unknown target",
            yaml: config_with(
                "targets:\n  team-discord: {kind: stdout}\nroutes:\n  - name: all\n    to: [team-discrod]\n",
            ),
            line: 15,
            column: 10,
            token: "team-discrod",
            message: "route `all` names unknown target `team-discrod`",
            hint: Some("did you mean `team-discord`?"),
        },
        Case {
            name: "route names a misspelt template",
            yaml: config_with(
                "targets:\n  team-discord: {kind: discord, url: \"https://discord.com/api/webhooks/123/tok\"}\nroutes:\n  - name: visitors\n    to: [team-discord]\n    template: greetng\n",
            ),
            line: 16,
            column: 15,
            token: "greetng",
            message: "route `visitors`: no template `greetng` for target `team-discord` (kind discord); looked for ",
            hint: Some("did you mean `greeting`?"),
        },
        Case {
            name: "route names a template that does not exist",
            yaml: config_with(
                "targets:\n  team-discord: {kind: discord, url: \"https://discord.com/api/webhooks/123/tok\"}\nroutes:\n  - name: visitors\n    to: [team-discord]\n    template: nothing_like_it\n",
            ),
            line: 16,
            column: 15,
            token: "nothing_like_it",
            message: "templates/nothing_like_it.discord.json.hbs, ",
            hint: Some("create one of those files, or use an existing template: greeting"),
        },
        Case {
            name: "unknown matcher operator",
            yaml: config_with(
                "targets:\n  console: {kind: stdout}\nroutes:\n  - name: hello\n    match: {data.content: {regx: \"^hi\"}}\n    to: [console]\n",
            ),
            line: 15,
            column: 27,
            token: "{regx:",
            message: "route `hello`, field `data.content`: unknown operator `regx` (did you mean `regex`?)",
            hint: None,
        },
        Case {
            name: "field path with an unknown root",
            yaml: config_with(
                "targets:\n  console: {kind: stdout}\nroutes:\n  - name: hello\n    match: {dta.from: user}\n    to: [console]\n",
            ),
            line: 15,
            column: 13,
            token: "dta.from",
            message: "route `hello`: field `dta.from` is not in a Crisp event",
            hint: Some("did you mean `data`?"),
        },
    ]);
}

#[test]
fn bad_values_are_refused_where_they_are_written() {
    run_cases(&[
        Case {
            name: "bad regex",
            yaml: config_with(
                "targets:\n  console: {kind: stdout}\nroutes:\n  - name: hello\n    match: {data.content: {regex: \"(\"}}\n    to: [console]\n",
            ),
            line: 15,
            column: 27,
            token: "{regex: \"(\"}",
            message: "route `hello`, field `data.content`: invalid regex `(`: unclosed group",
            hint: None,
        },
        Case {
            name: "bad regex, block style",
            yaml: config_with(
                "targets:\n  console: {kind: stdout}\nroutes:\n  - name: hello\n    match:\n      data.content:\n        regex: \"[a-\"\n    to: [console]\n",
            ),
            line: 17,
            column: 9,
            token: "regex:",
            message: "invalid regex `[a-`: unclosed character class",
            hint: None,
        },
        Case {
            name: "batch out of range",
            yaml: config_with(
                "targets:\n  crm:\n    kind: webhook\n    url: \"https://crm.example.com/hook\"\n    batch: 0\n",
            ),
            line: 15,
            column: 12,
            token: "0",
            message: "target `crm`: batch must be from 1 to 1000, not 0",
            hint: Some("1 sends one request per delivery; N sends up to N as one JSON array"),
        },
        Case {
            name: "batch on a discord target",
            yaml: config_with(
                "targets:\n  team-discord: {kind: discord, url: \"https://discord.com/api/webhooks/123/tok\", batch: 10}\n",
            ),
            line: 12,
            column: 17,
            token: "{kind: discord",
            message: "target `team-discord` (kind discord): `batch` is only for webhook targets",
            hint: Some("remove `batch`"),
        },
        Case {
            name: "bad duration",
            yaml: config_with(
                "targets:\n  crm:\n    kind: webhook\n    url: \"https://crm.example.com/hook\"\n    timeout: 5 parsecs\n",
            ),
            line: 15,
            column: 14,
            token: "5 parsecs",
            message: "target `crm` timeout: unknown duration unit `parsecs` in `5 parsecs`",
            hint: Some("durations look like `500ms`"),
        },
        Case {
            name: "bad size",
            yaml: edit("max_body: 64KiB", "max_body: 1XB"),
            line: 5,
            column: 13,
            token: "1XB",
            message: "server.max_body: unknown size unit `XB` in `1XB`",
            hint: Some("sizes look like `1MiB`"),
        },
        Case {
            name: "bad listen address",
            yaml: edit("listen: 127.0.0.1:0", "listen: localhost:8080"),
            line: 2,
            column: 11,
            token: "localhost:8080",
            message: "server.listen: `localhost:8080` is not an address",
            hint: Some("write IP:PORT"),
        },
        Case {
            name: "port out of range",
            yaml: edit("listen: 127.0.0.1:0", "listen: 127.0.0.1:80800"),
            line: 2,
            column: 11,
            token: "127.0.0.1:80800",
            message: "server.listen: `127.0.0.1:80800` is not an address",
            hint: Some("write IP:PORT"),
        },
        Case {
            name: "discord url that is not a webhook url",
            yaml: config_with(&format!(
                "targets:\n  team-discord:\n    kind: discord\n    url: \"https://discord.com/channels/123/{TOKEN}\"\n"
            )),
            line: 14,
            column: 10,
            token: "\"https://discord.com/channels/",
            message: "target `team-discord`: invalid discord url: the path has no `/webhooks/ID/TOKEN` part",
            hint: Some("https://discord.com/api/webhooks/ID/TOKEN"),
        },
        Case {
            name: "discord url with a non-numeric id",
            yaml: config_with(&format!(
                "targets:\n  team-discord: {{kind: discord, url: \"https://discord.com/api/webhooks/abc/{TOKEN}\"}}\n"
            )),
            line: 12,
            column: 38,
            token: "\"https://discord.com/api/webhooks/abc/",
            message: "invalid discord url: expected `/webhooks/ID/TOKEN` with a numeric ID",
            hint: Some("https://discord.com/api/webhooks/ID/TOKEN"),
        },
        Case {
            name: "webhook url that is not a url",
            yaml: config_with(&format!(
                "targets:\n  crm:\n    kind: webhook\n    url: \"crm.example.com/{TOKEN}\"\n"
            )),
            line: 14,
            column: 10,
            token: "\"crm.example.com/",
            message: "target `crm`: invalid webhook url: not a URL",
            hint: Some("http:// or https://"),
        },
        Case {
            name: "rate limit of zero requests",
            yaml: config_with(
                "targets:\n  crm:\n    kind: webhook\n    url: \"https://crm.example.com/hook\"\n    rate_limit: {requests: 0, per: 1s}\n",
            ),
            line: 15,
            column: 28,
            token: "0, per",
            message: "target `crm`: rate_limit.requests must be at least 1",
            hint: Some("remove rate_limit for no limit"),
        },
        Case {
            name: "discord route without a template",
            yaml: config_with(
                "targets:\n  team-discord: {kind: discord, url: \"https://discord.com/api/webhooks/123/tok\"}\nroutes:\n  - name: visitors\n    to: [team-discord]\n",
            ),
            line: 14,
            column: 5,
            token: "name: visitors",
            message: "route `visitors` sends to discord target `team-discord` but names no template",
            hint: Some("add `template: NAME`"),
        },
        Case {
            name: "duplicate route names",
            yaml: config_with(
                "targets:\n  console: {kind: stdout}\nroutes:\n  - name: all\n    to: [console]\n  - name: all\n    to: [console]\n",
            ),
            line: 16,
            column: 11,
            token: "all",
            message: "route name `all` is used twice (first on line 14)",
            hint: Some("give each route its own name"),
        },
    ]);
}

#[test]
fn hook_keys_are_required() {
    run_cases(&[
        Case {
            name: "zero keys",
            yaml: edit("keys: [\"${CRISP_HOOK_KEY}\"]", "keys: []"),
            line: 4,
            column: 9,
            token: "[]",
            message: "server.keys is empty: the relay refuses to run without a hook key",
            hint: Some("add at least one key"),
        },
        Case {
            name: "missing keys",
            // Reported at the `server` mapping, whose first key is `listen`.
            yaml: edit("  keys: [\"${CRISP_HOOK_KEY}\"]\n", ""),
            line: 2,
            column: 3,
            token: "listen:",
            message: "server.keys is missing: the relay refuses to run without a hook key",
            hint: Some("add `keys: [\"${CRISP_HOOK_KEY}\"]`"),
        },
        Case {
            name: "unset variable",
            yaml: edit("${CRISP_HOOK_KEY}", "${CRISP_RELAY_TEST_UNSET_VAR}"),
            line: 4,
            column: 10,
            token: "\"${CRISP_RELAY_TEST_UNSET_VAR}\"",
            message: "server.keys: environment variable `CRISP_RELAY_TEST_UNSET_VAR` is not set",
            hint: Some("export CRISP_RELAY_TEST_UNSET_VAR=..., or give a default"),
        },
    ]);
}

#[test]
fn serve_refuses_to_start_with_an_unset_variable() {
    let work = workdir(&edit("${CRISP_HOOK_KEY}", "${CRISP_RELAY_TEST_UNSET_VAR}"));
    let mut child = Command::new(bin())
        .arg("serve")
        .arg("-c")
        .arg(work.config_path())
        .env_remove("RUST_LOG")
        .env_remove("CRISP_RELAY_TEST_UNSET_VAR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not exit within 10 s with an unset variable");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("relay.yaml:4:10: server.keys: environment variable `CRISP_RELAY_TEST_UNSET_VAR` is not set"),
        "{stderr}"
    );
    assert!(
        !work.path().join("data/relay.db").exists(),
        "serve created the store before refusing the config"
    );
}

#[test]
fn every_mistake_in_a_file_is_reported_at_once() {
    let yaml = "server:\n  listen: nowhere\n  keys: []\n  max_body: 1XB\n\
                targets:\n  team-discord: {kind: discrod, url: \"https://discord.com/api/webhooks/1/t\"}\n  console: {kind: stdout}\n  crm: {kind: webhook, url: \"https://crm.example.com/hook\", timeout: 5 parsecs}\n\
                routes:\n  - name: all\n    match: {dta.from: user}\n    to: [consol]\n  - name: all\n    to: [console]\n";
    let work = workdir(yaml);
    let out = work.run(&["check"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_clean("several mistakes", &stderr);
    let want = [
        ("2:11", "server.listen: `nowhere` is not an address"),
        ("3:9", "server.keys is empty"),
        ("4:13", "server.max_body: unknown size unit `XB`"),
        (
            "8:70",
            "target `crm` timeout: unknown duration unit `parsecs`",
        ),
        ("6:24", "target `team-discord`: unknown kind `discrod`"),
        ("11:13", "field `dta.from` is not in a Crisp event"),
        ("12:10", "route `all` names unknown target `consol`"),
        ("13:11", "route name `all` is used twice (first on line 10)"),
    ];
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), want.len(), "{stderr}");
    for (at, message) in want {
        let needle = format!("relay.yaml:{at}: ");
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&needle) && e.contains(message)),
            "want `{needle}{message}` in:\n{stderr}"
        );
    }
}

#[test]
fn variable_defaults_apply_when_unset_and_yield_when_set() {
    let yaml = config_with(
        "targets:\n  crm: {kind: webhook, url: \"${CRISP_RELAY_TEST_CRM_URL:-https://default.example.com/hook}\"}\nroutes:\n  - name: all\n    to: [crm]\n",
    )
    .replace(
        "listen: 127.0.0.1:0\n  path",
        "listen: \"${CRISP_RELAY_TEST_LISTEN:-127.0.0.1:0}\"\n  path",
    );
    assert!(yaml.contains("CRISP_RELAY_TEST_LISTEN"));
    let work = workdir(&yaml);
    work.write(
        "event.json",
        r#"{"event":"message:send","website_id":"w","data":{"from":"user"}}"#,
    );
    let event = work.path().join("event.json");
    let event = event.to_str().unwrap();

    let out = work.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let out = work.run(&["render", "--json", "--event", event]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        j["url"]
            .as_str()
            .unwrap()
            .starts_with("https://default.example.com/"),
        "{j}"
    );

    let out = work.run_with_env(
        &["render", "--json", "--event", event],
        &[
            (
                "CRISP_RELAY_TEST_CRM_URL",
                "https://from-env.example.com/hook",
            ),
            ("CRISP_RELAY_TEST_LISTEN", "127.0.0.1:0"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        j["url"]
            .as_str()
            .unwrap()
            .starts_with("https://from-env.example.com/"),
        "{j}"
    );

    // A set variable is used as it is: a bad value is an error at its place.
    let out = work.run_with_env(&["check"], &[("CRISP_RELAY_TEST_LISTEN", "nowhere")]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("relay.yaml:2:11: server.listen: `nowhere` is not an address"),
        "{stderr}"
    );
}

#[test]
fn an_empty_url_disables_a_target_with_a_note() {
    let work = workdir(&config_with(
        "targets:\n  team-discord: {kind: discord, url: \"${CRISP_RELAY_TEST_DISCORD_URL:-}\"}\n  console: {kind: stdout}\nroutes:\n  - name: visitors\n    to: [team-discord, console]\n    template: greeting\n",
    ));
    let out = work.run(&["check"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("ok"), "{stdout}");
    assert!(stdout.contains("2 targets (1 enabled)"), "{stdout}");
    assert!(
        stdout.contains("note: target `team-discord` is disabled (its url is empty)"),
        "{stdout}"
    );
    assert!(!stdout.contains("console` is disabled"), "{stdout}");
}

#[test]
fn quotas_and_retries_out_of_range_are_refused() {
    run_cases(&[
        Case {
            name: "rate limit burst of zero",
            yaml: config_with(
                "targets:\n  crm:\n    kind: webhook\n    url: \"https://crm.example.com/hook\"\n    rate_limit: {requests: 5, per: 1s, burst: 0}\n",
            ),
            line: 15,
            column: 47,
            token: "0}",
            message: "target `crm`: rate_limit.burst must be from 1 to 4294967295, not 0",
            hint: Some("1 sends one at a time; leave it out for a burst of `requests`"),
        },
        Case {
            name: "retry max_attempts over the bound",
            yaml: config_with(
                "targets:\n  crm:\n    kind: webhook\n    url: \"https://crm.example.com/hook\"\n    retry: {max_attempts: 5000}\n",
            ),
            line: 15,
            column: 27,
            token: "5000}",
            message: "target `crm`: retry.max_attempts must be from 1 to 1000, not 5000",
            hint: Some("retry.max_age bounds how long a delivery is retried"),
        },
    ]);
}

#[test]
fn enabled_must_be_true_or_false() {
    run_cases(&[
        Case {
            name: "enabled: maybe",
            yaml: config_with("targets:\n  console: {kind: stdout, enabled: \"maybe\"}\n"),
            line: 12,
            column: 36,
            token: "\"maybe\"",
            message: "target `console`: enabled must be true or false, not `maybe`",
            hint: Some("e.g. `enabled: \"${CRISP_CONSOLE:-false}\"`"),
        },
        Case {
            name: "enabled from a variable's default",
            yaml: config_with(
                "targets:\n  console:\n    kind: stdout\n    enabled: \"${CRISP_RELAY_TEST_UNSET_VAR:-nope}\"\n",
            ),
            line: 14,
            column: 14,
            token: "\"${CRISP_RELAY_TEST_UNSET_VAR:-nope}\"",
            message: "target `console`: enabled must be true or false, not `nope`",
            hint: Some("e.g. `enabled:"),
        },
        Case {
            name: "enabled from an unset variable",
            yaml: config_with(
                "targets:\n  console:\n    kind: stdout\n    enabled: \"${CRISP_RELAY_TEST_UNSET_VAR}\"\n",
            ),
            line: 14,
            column: 14,
            token: "\"${CRISP_RELAY_TEST_UNSET_VAR}\"",
            message: "target `console` enabled: environment variable `CRISP_RELAY_TEST_UNSET_VAR` is not set",
            hint: Some("export CRISP_RELAY_TEST_UNSET_VAR=..., or give a default"),
        },
    ]);
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

/// The `warning: ` lines of `check`'s output.
fn warnings(out: &std::process::Output) -> Vec<String> {
    text(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .map(str::to_owned)
        .collect()
}

/// Asserts that `warning` points at `line:column` of the config, that the
/// config holds `token` there, and that it says `message`.
fn assert_warning_at(
    yaml: &str,
    warning: &str,
    line: usize,
    column: usize,
    token: &str,
    message: &str,
) {
    let at_token: String = yaml
        .lines()
        .nth(line - 1)
        .map(|l| l.chars().skip(column - 1).collect())
        .unwrap_or_default();
    assert!(
        at_token.starts_with(token),
        "the case is wrong: {line}:{column} holds {at_token:?}, not {token:?}"
    );
    let location = format!("relay.yaml:{line}:{column}: ");
    assert!(
        warning.starts_with("warning: ") && warning.contains(&location),
        "want `{location}` in {warning}"
    );
    assert!(warning.contains(message), "want `{message}` in {warning}");
}

#[test]
fn a_template_file_with_an_unknown_kind_is_named_in_a_warning() {
    let work = workdir(&config_with(
        "targets:\n  console: {kind: stdout}\nroutes:\n  - name: all\n    to: [console]\n",
    ));
    work.write("templates/visitor_message.discrod.hbs", "{{data.content}}");
    let out = check_ok(&work, &[], &[]);
    let file = work.path().join("templates/visitor_message.discrod.hbs");
    assert_eq!(
        warnings(&out),
        [format!(
            "warning: {}:1:1: template file ignored: `discrod` is not a target kind (did you mean `discord`?)",
            file.display()
        )],
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout)
            .contains("  hint: name templates NAME.hbs, NAME.<kind>.hbs or NAME.<kind>.json.hbs"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_header_whose_variable_is_unset_warns_without_printing_secrets() {
    let api_key = "api-key-SECRET-7731";
    let yaml = config_with(&format!(
        "targets:\n  crm:\n    kind: webhook\n    url: \"https://crm.example.com/hooks/{TOKEN}\"\n    headers: {{Authorization: \"Bearer ${{CRM_TOKEN:-}}\", X-Api-Key: \"${{CRISP_RELAY_TEST_API_KEY}}\"}}\nroutes:\n  - name: all\n    to: [crm]\n"
    ));
    let work = workdir(&yaml);
    let api_key_set = ("CRISP_RELAY_TEST_API_KEY", api_key);

    for crm_token in [None, Some("")] {
        let out = match crm_token {
            None => check_ok(&work, &[api_key_set], &["CRM_TOKEN"]),
            Some(v) => check_ok(&work, &[api_key_set, ("CRM_TOKEN", v)], &[]),
        };
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        for secret in [api_key, TOKEN, KEY] {
            assert!(!all.contains(secret), "{secret} printed:\n{all}");
        }
        let found = warnings(&out);
        assert_eq!(found.len(), 1, "CRM_TOKEN={crm_token:?}:\n{all}");
        assert_warning_at(
            &yaml,
            &found[0],
            15,
            30,
            "\"Bearer ${CRM_TOKEN:-}\"",
            "target `crm` header `Authorization`: `${CRM_TOKEN:-}` is unset or empty, so the header is sent without it",
        );
        assert!(
            all.contains("hint: set CRM_TOKEN or remove the header"),
            "{all}"
        );
    }

    // Set: no warning, and its value is not printed either.
    let crm_token = "crm-token-SECRET-0042";
    let out = check_ok(&work, &[api_key_set, ("CRM_TOKEN", crm_token)], &[]);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(warnings(&out).is_empty(), "{all}");
    for secret in [api_key, crm_token, TOKEN] {
        assert!(!all.contains(secret), "{secret} printed:\n{all}");
    }

    // A target that is switched off sends no header: nothing to warn about.
    let off = workdir(&yaml.replacen(
        &format!("url: \"https://crm.example.com/hooks/{TOKEN}\""),
        "url: \"${CRISP_RELAY_TEST_UNSET_VAR:-}\"",
        1,
    ));
    let out = check_ok(&off, &[api_key_set], &["CRM_TOKEN"]);
    assert!(warnings(&out).is_empty(), "{}", text(&out.stdout));

    // `$$` is a literal `$`: `$${CRM_TOKEN:-}` is sent as written, so there
    // is nothing to warn about.
    let literal = workdir(&config_with(
        "targets:\n  crm:\n    kind: webhook\n    url: \"https://crm.example.com/hook\"\n    headers: {X-Literal: \"cost $${CRM_TOKEN:-}\"}\n",
    ));
    let out = check_ok(&literal, &[], &["CRM_TOKEN"]);
    assert!(warnings(&out).is_empty(), "{}", text(&out.stdout));
}

#[tokio::test]
async fn serve_logs_the_header_warning_without_the_secrets() {
    let api_key = "api-key-SECRET-7731";
    let work = workdir(&config_with(&format!(
        "targets:\n  crm:\n    kind: webhook\n    url: \"https://crm.example.com/hooks/{TOKEN}\"\n    headers: {{Authorization: \"Bearer ${{CRM_TOKEN:-}}\", X-Api-Key: \"${{CRISP_RELAY_TEST_API_KEY}}\"}}\nroutes:\n  - name: all\n    to: [crm]\n"
    )));
    let app = TestApp::spawn_in(
        work,
        &[("CRISP_RELAY_TEST_API_KEY", api_key), ("CRM_TOKEN", "")],
    )
    .await;
    let logs = app.logs();
    assert!(
        logs.contains("configuration warning")
            && logs.contains("`${CRM_TOKEN:-}` is unset or empty"),
        "{logs}"
    );
    for secret in [api_key, TOKEN, KEY] {
        assert!(!logs.contains(secret), "{secret} logged:\n{logs}");
    }
}

#[test]
fn a_target_reached_twice_for_one_event_is_warned_about() {
    // Line 11 onwards; the `to:` entries warned about are on lines 21 and 24.
    let yaml = config_with(
        r#"targets:
  crm: {kind: webhook, url: "https://crm.example.com/hook"}
  console: {kind: stdout}
routes:
  - name: every-message
    match: {event: "message:send"}
    to: [crm]
    continue: true
  - name: visitor-messages
    match: {event: "message:send", data.from: user}
    to: [console, crm]
  - name: emails
    match: {event: "session:set_email"}
    to: [console, crm, console]
"#,
    );
    let work = workdir(&yaml);
    let out = check_ok(&work, &[], &[]);
    let stdout = text(&out.stdout);
    let found = warnings(&out);
    // `emails` also sends to crm, but never the events `every-message` takes.
    assert_eq!(found.len(), 2, "{stdout}");
    assert_warning_at(
        &yaml,
        &found[0],
        21,
        19,
        "crm]",
        "routes `every-message` (continue: true) and `visitor-messages` can both send `message:send` events to target `crm`: it would receive each such event twice",
    );
    assert_warning_at(
        &yaml,
        &found[1],
        24,
        24,
        "console]",
        "route `emails` lists target `console` twice: it receives each event twice",
    );
    assert!(stdout.contains("ok — 3 routes, 2 targets"), "{stdout}");

    // Without `continue: true` the second route is never reached for an
    // event the first took: no warning about it.
    let work = workdir(&yaml.replacen("    continue: true\n", "", 1));
    let out = check_ok(&work, &[], &[]);
    let found = warnings(&out);
    assert_eq!(found.len(), 1, "{}", text(&out.stdout));
    assert!(found[0].contains("route `emails` lists target `console` twice"));

    // A route matching everything, without `continue`, between the two
    // stops every event before the second: no warning about them either.
    let stop_all = "  - name: stop-all\n    to: [console]\n  - name: visitor-messages";
    let work = workdir(&yaml.replacen("  - name: visitor-messages", stop_all, 1));
    let out = check_ok(&work, &[], &[]);
    let found = warnings(&out);
    assert_eq!(found.len(), 1, "{}", text(&out.stdout));
    assert!(found[0].contains("route `emails` lists target `console` twice"));
}

#[test]
fn enabled_switches_a_target_off_directly_or_from_a_variable() {
    let work = workdir(&config_with(
        r#"targets:
  off: {kind: stdout, enabled: false}
  off-by-default: {kind: stdout, enabled: "${CRISP_RELAY_TEST_B:-false}"}
  on-by-default: {kind: stdout, enabled: "${CRISP_RELAY_TEST_C:-true}"}
  plain: {kind: stdout}
routes:
  - name: all
    to: [off, off-by-default, on-by-default, plain]
"#,
    ));
    let disabled = |out: &std::process::Output| -> Vec<String> {
        text(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("  note: target `"))
            .filter_map(|l| l.strip_suffix("` is disabled (`enabled` is false); routes skip it"))
            .map(str::to_owned)
            .collect()
    };
    let vars = ["CRISP_RELAY_TEST_B", "CRISP_RELAY_TEST_C"];

    let out = check_ok(&work, &[], &vars);
    assert!(
        text(&out.stdout).contains("4 targets (2 enabled)"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(disabled(&out), ["off", "off-by-default"]);

    let out = check_ok(&work, &[("CRISP_RELAY_TEST_C", "false")], &vars);
    assert!(
        text(&out.stdout).contains("4 targets (1 enabled)"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(disabled(&out), ["off", "off-by-default", "on-by-default"]);

    let out = check_ok(
        &work,
        &[
            ("CRISP_RELAY_TEST_B", "true"),
            ("CRISP_RELAY_TEST_C", "true"),
        ],
        &[],
    );
    assert!(
        text(&out.stdout).contains("4 targets (3 enabled)"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(disabled(&out), ["off"]);
}

#[test]
fn every_target_kind_can_be_switched_off_from_the_environment() {
    let on = "enabled: \"${CRISP_RELAY_TEST_ON:-true}\"";
    let work = workdir(&config_with(&format!(
        r#"targets:
  discord: {{kind: discord, url: "https://discord.com/api/webhooks/123/tok", {on}}}
  slack: {{kind: slack, url: "https://hooks.slack.com/services/T0/B0/x", {on}}}
  hook: {{kind: webhook, url: "https://crm.example.com/hook", {on}}}
  console: {{kind: stdout, {on}}}
routes:
  - name: all
    to: [discord, slack, hook, console]
    template: greeting
"#
    )));
    work.write(
        "event.json",
        r#"{"event":"message:send","website_id":"w","data":{"from":"user","user":{"nickname":"Ann"}}}"#,
    );
    let event = work.path().join("event.json");
    let render = |on: &str| {
        let out = work.run_with_env(
            &["render", "--json", "--event", event.to_str().unwrap()],
            &[("CRISP_RELAY_TEST_ON", on)],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|j| {
                (
                    j["target"].as_str().unwrap().to_owned(),
                    j["disabled"] == true,
                )
            })
            .collect::<Vec<_>>()
    };
    let all = |disabled: bool| {
        ["discord", "slack", "hook", "console"]
            .map(|t| (t.to_owned(), disabled))
            .to_vec()
    };
    assert_eq!(render("false"), all(true));
    assert_eq!(render("true"), all(false));

    let out = check_ok(&work, &[("CRISP_RELAY_TEST_ON", "false")], &[]);
    assert!(
        text(&out.stdout).contains("4 targets (0 enabled)"),
        "{}",
        text(&out.stdout)
    );
    let out = check_ok(&work, &[], &["CRISP_RELAY_TEST_ON"]);
    assert!(
        text(&out.stdout).contains("4 targets (4 enabled)"),
        "{}",
        text(&out.stdout)
    );
}
