//! The command line as a user meets it: help, usage errors, `check`,
//! `check --events` and `render` (human and `--json`), with their exit codes
//! (0 ok, 1 a failed check or render, 2 a usage or configuration error) and
//! with secrets kept out of everything printed.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

const CRM_TOKEN: &str = "crm-token-VALUE-0042";

/// Targets of every kind but Slack, and routes in a known order: `to-crm`
/// and `to-discord` continue, `sessions-only` never matches a message,
/// `to-console` matches every `message:*` event.
const ROUTES: &str = r#"targets:
  crm:
    kind: webhook
    url: "https://crm.example.com/hooks/SECRETTOKEN?token=SECRET2"
    headers: {Authorization: "Bearer ${CRM_TOKEN}"}
  team-discord: {kind: discord, url: "https://discord.com/api/webhooks/123456/DISCORDTOKEN9", username: Crisp}
  console: {kind: stdout}
routes:
  - name: to-crm
    match: {event: "message:send"}
    to: [crm]
    continue: true
  - name: to-discord
    match: {data.from: user}
    to: [team-discord]
    template: greeting
    continue: true
  - name: sessions-only
    match: {event: "session:*"}
    to: [console]
    template: greeting
  - name: to-console
    match: {event: "message:*"}
    to: [console]
    template: greeting
"#;

const MESSAGE: &str = r#"{"event":"message:send","website_id":"w1","data":{"from":"user","content":"Hello there","user":{"nickname":"Ann"}},"timestamp":1700000000000}"#;

/// A work dir with [`ROUTES`] and one template of its own (not the shipped
/// ones), plus `message.json` holding [`MESSAGE`].
fn workdir() -> Workdir {
    let work = Workdir::new(&config_with(ROUTES));
    let templates = work.path().join("templates");
    std::fs::remove_dir_all(&templates).unwrap();
    work.write(
        "templates/greeting.hbs",
        "New message from {{data.user.nickname}}: {{data.content}}",
    );
    work.write("message.json", MESSAGE);
    work
}

fn path_str(work: &Workdir, rel: &str) -> String {
    work.path().join(rel).to_str().unwrap().to_owned()
}

/// `crisp-relay <args>` with no config file given (for help and usage).
fn run_bare(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("CRISP_RELAY_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// `render` with the CRM token set, as an operator would run it.
fn render(work: &Workdir, args: &[&str]) -> Output {
    let mut all = vec!["render"];
    all.extend_from_slice(args);
    work.run_with_env(&all, &[("CRM_TOKEN", CRM_TOKEN)])
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn help_lists_the_subcommands_and_exits_0() {
    for args in [&["--help"][..], &["-h"], &["help"]] {
        let out = run_bare(args);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        for word in ["serve", "check", "render", "--config", "--log-level"] {
            assert!(stdout.contains(word), "{args:?}: no `{word}` in:\n{stdout}");
        }
    }
}

#[test]
fn each_subcommand_has_help_naming_its_flags() {
    let cases: [(&str, &[&str]); 3] = [
        ("serve", &["Receive Crisp hooks", "--config"]),
        ("check", &["--events", "DIR", "--config"]),
        ("render", &["--event", "FILE|-", "--json", "--config"]),
    ];
    for (sub, words) in cases {
        for args in [vec![sub, "--help"], vec!["help", sub]] {
            let out = run_bare(&args);
            let stdout = text(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{args:?}: {}",
                text(&out.stderr)
            );
            assert!(
                stdout.contains(&format!("crisp-relay {sub}")),
                "{args:?}: {stdout}"
            );
            for word in words {
                assert!(stdout.contains(word), "{args:?}: no `{word}` in:\n{stdout}");
            }
        }
    }
}

#[test]
fn version_exits_0() {
    let out = run_bare(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("crisp-relay {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_2_and_say_what_is_wrong() {
    let cases: [(&[&str], &str); 5] = [
        (&["--frobnicate"], "'--frobnicate'"),
        (&["check", "--frobnicate"], "'--frobnicate'"),
        (&["chek"], "a similar subcommand exists: 'check'"),
        (&["render"], "--event"),
        (&["render", "--event"], "--event"),
    ];
    for (args, want) in cases {
        let out = run_bare(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: no `{want}` in:\n{stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn a_missing_config_file_exits_2_naming_it_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let out = run_bare(&["check", "-c", missing.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot read config file {}", missing.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: pass the file with -c/--config"),
        "{stderr}"
    );

    // With no -c, the default relay.yaml in the current directory is meant.
    let out = Command::new(bin())
        .arg("check")
        .current_dir(dir.path())
        .env_remove("CRISP_RELAY_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot read config file relay.yaml"),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");

    // The same for serve (the default command): it refuses, it does not wait.
    let out = run_bare(&["-c", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn check_on_a_valid_config_prints_ok() {
    let work = workdir();
    let out = work.run_with_env(&["check"], &[("CRM_TOKEN", CRM_TOKEN)]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert!(stdout.contains("relay.yaml: ok"), "{stdout}");
    assert!(
        stdout.contains("4 routes, 3 targets (3 enabled)"),
        "{stdout}"
    );
    for secret in ["SECRETTOKEN", "SECRET2", "DISCORDTOKEN9", CRM_TOKEN, KEY] {
        assert!(!stdout.contains(secret), "{secret} in:\n{stdout}");
    }
}

#[test]
fn check_events_lists_each_broken_file_and_exits_1() {
    let work = workdir();
    work.write("events/good.json", MESSAGE);
    work.write("events/broken.json", "{\"event\": \"message:send\",");
    work.write("events/notes.txt", "not an event, not read");
    let events = path_str(&work, "events");

    let out = work.run_with_env(&["check", "--events", &events], &[("CRM_TOKEN", CRM_TOKEN)]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("2 events, 3 deliveries rendered, 1 failures"),
        "{stdout}"
    );
    let fails: Vec<&str> = stderr.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(fails.len(), 1, "{stderr}");
    assert!(fails[0].starts_with("FAIL broken.json: "), "{stderr}");

    // Without the broken file the same directory passes.
    std::fs::remove_file(work.path().join("events/broken.json")).unwrap();
    let out = work.run_with_env(&["check", "--events", &events], &[("CRM_TOKEN", CRM_TOKEN)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 events, 3 deliveries rendered, 0 failures"),
        "{}",
        text(&out.stdout)
    );

    // A directory that is not there is a usage error.
    let nowhere = path_str(&work, "no-such-dir");
    let out = work.run_with_env(
        &["check", "--events", &nowhere],
        &[("CRM_TOKEN", CRM_TOKEN)],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no-such-dir"));
}

#[test]
fn render_of_a_missing_event_file_exits_2() {
    let work = workdir();
    let missing = path_str(&work, "missing.json");
    for extra in [&[][..], &["--json"]] {
        let mut args = vec!["--event", missing.as_str()];
        args.extend_from_slice(extra);
        let out = render(&work, &args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("missing.json"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn render_of_an_event_that_is_not_json_exits_1() {
    let work = workdir();
    work.write("broken.json", "{\"event\":");
    let out = render(&work, &["--event", &path_str(&work, "broken.json")]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("broken.json"), "{stderr}");
}

fn json_lines(stdout: &[u8]) -> Vec<Value> {
    text(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn render_json_prints_one_object_per_delivery_in_route_order() {
    let work = workdir();
    let out = render(
        &work,
        &["--event", &path_str(&work, "message.json"), "--json"],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));

    for secret in ["SECRETTOKEN", "SECRET2", "DISCORDTOKEN9", CRM_TOKEN] {
        assert!(!stdout.contains(secret), "{secret} in:\n{stdout}");
    }

    let lines = json_lines(&out.stdout);
    let order: Vec<(&str, &str)> = lines
        .iter()
        .map(|j| (j["route"].as_str().unwrap(), j["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        order,
        [
            ("to-crm", "crm"),
            ("to-discord", "team-discord"),
            ("to-console", "console")
        ]
    );
    for j in &lines {
        let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "route", "target", "kind", "method", "url", "headers", "body"
            ],
            "{j}"
        );
    }

    let crm = &lines[0];
    assert_eq!(crm["kind"], "webhook");
    assert_eq!(crm["method"], "POST");
    assert_eq!(crm["url"], "https://crm.example.com/***?token=***");
    assert_eq!(crm["headers"]["Authorization"], "***");
    assert_eq!(crm["headers"]["Content-Type"], "application/json");
    // No template: the webhook gets the event as it came.
    assert_eq!(crm["body"], serde_json::from_str::<Value>(MESSAGE).unwrap());

    let discord = &lines[1];
    assert_eq!(discord["kind"], "discord");
    assert_eq!(discord["method"], "POST");
    let url = discord["url"].as_str().unwrap();
    assert!(
        url.starts_with("https://discord.com/api/v10/webhooks/123456/"),
        "{url}"
    );
    assert!(url.contains("wait=true"), "{url}");
    assert_eq!(
        discord["body"]["content"],
        "New message from Ann: Hello there"
    );
    assert_eq!(discord["body"]["username"], "Crisp");

    let console = &lines[2];
    assert_eq!(console["kind"], "stdout");
    assert_eq!(console["url"], Value::Null);
    assert_eq!(console["headers"], serde_json::json!({}));
    assert_eq!(console["body"], "New message from Ann: Hello there");
}

#[test]
fn render_human_output_redacts_the_same_secrets() {
    let work = workdir();
    let out = render(&work, &["--event", &path_str(&work, "message.json")]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for secret in ["SECRETTOKEN", "SECRET2", "DISCORDTOKEN9", CRM_TOKEN] {
        assert!(!stdout.contains(secret), "{secret} in:\n{stdout}");
    }
    assert!(
        stdout.contains("── route to-crm → target crm (webhook)"),
        "{stdout}"
    );
    assert!(stdout.contains("Authorization: ***"), "{stdout}");
    assert!(
        stdout.contains("POST https://discord.com/api/v10/webhooks/123456/***?wait=true"),
        "{stdout}"
    );
    let crm = stdout.find("route to-crm").unwrap();
    let discord = stdout.find("route to-discord").unwrap();
    let console = stdout.find("route to-console").unwrap();
    assert!(crm < discord && discord < console, "{stdout}");
}

#[test]
fn render_of_an_event_no_route_matches_prints_nothing_with_json() {
    let work = workdir();
    work.write(
        "unrouted.json",
        r#"{"event":"people:profile:removed","website_id":"w1","data":{"people_id":"p1"}}"#,
    );
    let event = path_str(&work, "unrouted.json");

    let out = render(&work, &["--event", &event, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));

    // Without --json it says so.
    let out = render(&work, &["--event", &event]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("no route matches event `people:profile:removed`"),
        "{}",
        text(&out.stdout)
    );
}

/// The visitor's text in `message_send_text_basic.json`.
const VISITOR_TEXT: &str = "Hi! Is the Pro plan billed monthly or yearly?";

/// A work dir holding a copy of a shipped config (`relay.yaml` or
/// `deploy/relay.container.yaml`) and the shipped templates.
fn shipped(config: &str) -> Workdir {
    Workdir::new(&std::fs::read_to_string(root().join(config)).unwrap())
}

/// `crisp-relay <args> -c <config>` with nothing in the environment but
/// `env`, as in a fresh container.
fn run_with_only(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(bin())
        .args(args)
        .arg("-c")
        .arg(config)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// `render --json` of a visitor's message through `work`'s config with only
/// `env` set: each target and whether it is disabled, in route order.
fn render_visitor_message(work: &Workdir, env: &[(&str, &str)]) -> Vec<(String, bool)> {
    let event = fixtures_dir().join("message_send_text_basic.json");
    let out = run_with_only(
        &work.config_path(),
        &["render", "--json", "--event", event.to_str().unwrap()],
        env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    json_lines(&out.stdout)
        .iter()
        .map(|j| {
            (
                j["target"].as_str().unwrap().to_owned(),
                j["disabled"] == true,
            )
        })
        .collect()
}

fn targets(list: &[(&str, bool)]) -> Vec<(String, bool)> {
    list.iter().map(|&(t, d)| (t.to_owned(), d)).collect()
}

#[test]
fn the_container_config_keeps_the_console_off_unless_crisp_console_is_true() {
    let work = shipped("deploy/relay.container.yaml");
    let key = ("CRISP_HOOK_KEY", KEY);
    // (target, disabled): no webhook URL is set, so Discord and Slack are off.
    assert_eq!(
        render_visitor_message(&work, &[key]),
        targets(&[
            ("team-discord", true),
            ("support-slack", true),
            ("support-slack-bot", true),
            ("console", true)
        ])
    );
    assert_eq!(
        render_visitor_message(&work, &[key, ("CRISP_CONSOLE", "true")]),
        targets(&[
            ("team-discord", true),
            ("support-slack", true),
            ("support-slack-bot", true),
            ("console", false)
        ])
    );
    let out = run_with_only(&work.config_path(), &["check"], &[key]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("note: target `console` is disabled (`enabled` is false); routes skip it"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn the_quick_start_config_keeps_the_console_on_unless_crisp_console_is_false() {
    let work = shipped("relay.yaml");
    let key = ("CRISP_HOOK_KEY", KEY);
    assert_eq!(
        render_visitor_message(&work, &[key]),
        targets(&[
            ("team-discord", true),
            ("support-slack", true),
            ("support-slack-bot", true),
            ("console", false)
        ])
    );
    assert_eq!(
        render_visitor_message(&work, &[key, ("CRISP_CONSOLE", "false")]),
        targets(&[
            ("team-discord", true),
            ("support-slack", true),
            ("support-slack-bot", true),
            ("console", true)
        ])
    );
}

/// The relay's answer to one visitor message: how many deliveries it queued.
async fn post_visitor_message(app: &TestApp) -> u64 {
    let answer = app
        .post_event(fixture("message_send_text_basic.json"))
        .await;
    assert_eq!(answer.status(), 200);
    let body: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    body["deliveries"].as_u64().unwrap()
}

#[tokio::test]
async fn the_container_config_serves_without_printing_visitor_messages() {
    let work = shipped("deploy/relay.container.yaml");
    let store = work.path().join("data/relay.db");
    let store = store.to_str().unwrap().to_owned();
    // The container's addresses and volume, moved into the work dir. The
    // webhook URLs are set empty (as unset) in case the shell running the
    // tests has them; CRISP_CONSOLE empty takes its default, as unset does.
    let mut env = vec![
        ("CRISP_LISTEN", "127.0.0.1:0"),
        ("CRISP_ADMIN_LISTEN", "127.0.0.1:0"),
        ("CRISP_STORE_PATH", store.as_str()),
        ("DISCORD_WEBHOOK_URL", ""),
        ("SLACK_WEBHOOK_URL", ""),
        ("CRM_WEBHOOK_URL", ""),
        ("CRISP_CONSOLE", ""),
    ];
    let mut app = TestApp::spawn_in(work, &env).await;
    assert_eq!(post_visitor_message(&app).await, 0, "nothing queued");
    assert_eq!(app.stdout(), "", "nothing printed");
    assert_eq!(app.terminate().code(), Some(0));

    // Asked for, the console prints it.
    env.retain(|(k, _)| *k != "CRISP_CONSOLE");
    env.push(("CRISP_CONSOLE", "true"));
    let app = TestApp::spawn_in(app.into_work(), &env).await;
    assert_eq!(post_visitor_message(&app).await, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !app.stdout().contains(VISITOR_TEXT) {
        assert!(
            Instant::now() < deadline,
            "the console did not print the message:\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
