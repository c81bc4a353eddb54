//! Mistakes in the shape of relay.yaml: the base config the positions rely
//! on, YAML syntax errors, unknown keys and names (with the closest
//! suggested), and every mistake of a file reported at once.

use super::*;
use crate::helpers::*;

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
