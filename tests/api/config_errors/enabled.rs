//! Switching targets off: an empty url disables a target with a note;
//! `enabled` must be true or false, written directly or from a variable,
//! and switches any kind of target off.

use super::*;
use crate::helpers::*;

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
