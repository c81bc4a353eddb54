//! Values relay.yaml may not hold, each refused where it is written: bad
//! values, missing or empty hook keys, unset variables (also by `serve`,
//! before it creates the store), variable defaults, and quotas and retries
//! out of range.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::helpers::*;

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
