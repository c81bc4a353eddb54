//! What `check` passes with a warning (exit 0) at the position it is about:
//! a template file for an unknown kind, a header whose variable is unset
//! (from `check` and in `serve`'s log, never with the secrets), and a target
//! one event can reach twice.

use super::*;
use crate::helpers::*;

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
