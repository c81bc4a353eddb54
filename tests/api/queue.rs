//! The commands that work on the store file, as an operator runs them:
//! `deadletters` (list, replay, purge), which needs only `store.path` from
//! the config, so it works without the hook key or webhook URLs set; `queue`
//! (list, move, purge), for the pending deliveries a configuration can no
//! longer send because their target or template is gone ("orphans"); and
//! what `check` says about those.
//!
//! The rows are put into the store directly (no relay runs), as a relay
//! with an older configuration would have left them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::helpers::*;
use crisp_relay::store::{NewDelivery, NewEvent, Op};

/// The variable holding the CRM webhook's URL in [`crm_config`]; no test
/// here sets it.
const CRM_URL_VAR: &str = "CRISP_RELAY_TEST_CRM_URL";

/// One webhook target whose URL is a variable without a default, and a route
/// to it: without that variable (and the hook key) only the start-up part of
/// this config can be read.
fn crm_config() -> String {
    config_with(&format!(
        "targets:\n  crm: {{kind: webhook, url: \"${{{CRM_URL_VAR}}}\"}}\nroutes:\n  - name: all\n    to: [crm]\n"
    ))
}

/// A Discord target and a console, both sent the `visitor_message`
/// template (one of the shipped templates the work dir holds).
const VISITORS: &str = r#"targets:
  team-discord: {kind: discord, url: "https://discord.com/api/webhooks/123456/tok"}
  console: {kind: stdout}
routes:
  - name: visitors
    to: [team-discord, console]
    template: visitor_message
"#;

/// What a relay running an older configuration could have left queued for
/// [`VISITORS`]: (target, template, how many).
const LEFT_BEHIND: &[(&str, Option<&str>, usize)] = &[
    // A target since removed.
    ("gone", Some("visitor_message"), 2),
    // A template since removed, to a kind that needs one.
    ("team-discord", Some("old_tpl"), 3),
    // A target since removed, with no template.
    ("retired", None, 1),
    // Sendable: a configured target, a template that exists.
    ("team-discord", Some("visitor_message"), 1),
    // Sendable: a stdout target prints the event when it has no template.
    ("console", Some("old_tpl"), 1),
];

fn store_path(work: &Workdir) -> PathBuf {
    work.path().join("data/relay.db")
}

/// Stores one event per delivery, each delivery pending; returns their ids
/// in queue order.
async fn queue_deliveries(path: &Path, deliveries: &[(&str, Option<&str>)]) -> Vec<i64> {
    let store = open_store(path).await;
    let before = store.deliveries().await.unwrap().len();
    for (seq, (target, template)) in deliveries.iter().enumerate() {
        let event = NewEvent {
            received_at_ms: 1_700_000_000_000,
            website_id: "3f9d2b7e-61c4-4a8e-9b1f-0d5e7a2c8b46".into(),
            name: "message:send".into(),
            timestamp_ms: 1_700_000_000_000,
            body: message(seq),
            conversation: None,
            dedupe: None,
        };
        let delivery = NewDelivery {
            route: "all".into(),
            target: (*target).into(),
            template: template.map(str::to_owned),
        };
        store.accept(event, vec![delivery]).await.unwrap();
    }
    let ids = store.deliveries().await.unwrap()[before..]
        .iter()
        .map(|d| d.id)
        .collect();
    store.close().await;
    ids
}

/// What a relay leaves when the destination answered 400: dead letters.
async fn dead_letter(path: &Path, ids: &[i64]) {
    let store = open_store(path).await;
    for &id in ids {
        store
            .apply(Op::Dead {
                id,
                attempts: 1,
                status: Some(400),
                error: "400 Bad Request: {\"error\":\"unknown field\"}".into(),
                at_ms: 0,
                latency_ms: None,
            })
            .await
            .unwrap();
    }
    store.close().await;
}

/// Puts [`LEFT_BEHIND`] into the work dir's store.
async fn leave_behind(work: &Workdir) {
    let rows: Vec<(&str, Option<&str>)> = LEFT_BEHIND
        .iter()
        .flat_map(|&(target, template, n)| std::iter::repeat_n((target, template), n))
        .collect();
    queue_deliveries(&store_path(work), &rows).await;
}

/// Each delivery row as (id, target, template, state).
async fn rows(work: &Workdir) -> Vec<(i64, String, Option<String>, String)> {
    let store = open_store(&store_path(work)).await;
    let rows = store
        .deliveries()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.id, d.target, d.template, d.state))
        .collect();
    store.close().await;
    rows
}

/// `crisp-relay <args> -c relay.yaml` with neither the hook key nor the
/// CRM URL set, as on a machine that only holds the store.
fn run_without_secrets(work: &Workdir, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .arg("-c")
        .arg(work.config_path())
        .env_remove("CRISP_HOOK_KEY")
        .env_remove(CRM_URL_VAR)
        .env_remove("CRISP_RELAY_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

fn json_lines(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn deadletters_work_without_the_hook_key_or_webhook_urls() {
    let work = Workdir::new(&crm_config());
    let ids = queue_deliveries(&store_path(&work), &[("crm", None), ("crm", None)]).await;
    dead_letter(&store_path(&work), &ids).await;

    // The whole config does not load without them...
    let out = run_without_secrets(&work, &["check"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains(CRM_URL_VAR), "{}", stderr(&out));

    // ...but the dead letters are listed, replayed and purged.
    let out = run_without_secrets(&work, &["deadletters", "list"]);
    assert_exit(&out, 0);
    let listed = stdout(&out);
    assert_eq!(
        listed
            .matches("all → crm  message:send  attempts 1  status 400")
            .count(),
        2,
        "{listed}"
    );
    assert!(listed.contains("unknown field"), "the last error: {listed}");

    let out = run_without_secrets(&work, &["deadletters", "list", "--json"]);
    assert_exit(&out, 0);
    let dead = json_lines(&out);
    let got: Vec<(i64, &str, i64)> = dead
        .iter()
        .map(|d| {
            (
                d["id"].as_i64().unwrap(),
                d["target"].as_str().unwrap(),
                d["last_status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [(ids[0], "crm", 400), (ids[1], "crm", 400)]);

    let out = run_without_secrets(&work, &["deadletters", "replay", "--all"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("2 dead letter(s) queued again"),
        "{}",
        stdout(&out)
    );
    let states: Vec<String> = rows(&work).await.into_iter().map(|r| r.3).collect();
    assert_eq!(states, ["pending", "pending"]);

    // The first fails for good again; purge deletes it, not the pending one.
    dead_letter(&store_path(&work), &ids[..1]).await;
    let out = run_without_secrets(&work, &["deadletters", "purge"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("1 dead letter(s) deleted"),
        "{}",
        stdout(&out)
    );
    let left: Vec<(i64, String)> = rows(&work).await.into_iter().map(|r| (r.0, r.3)).collect();
    assert_eq!(left, [(ids[1], "pending".to_owned())]);
    let out = run_without_secrets(&work, &["deadletters", "list"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out).trim_end(), "no dead letters");
}

#[test]
fn a_store_path_that_cannot_be_interpolated_is_a_config_error() {
    let cases = [
        (
            "\"${CRISP_RELAY_TEST_DATA_DIR}/relay.db\"",
            "relay.yaml:9:9: store.path: environment variable `CRISP_RELAY_TEST_DATA_DIR` is not set",
        ),
        (
            "\"${CRISP DATA}/relay.db\"",
            "relay.yaml:9:9: store.path: `${CRISP DATA}` is not a variable reference",
        ),
    ];
    for (path, want) in cases {
        let yaml = crm_config().replacen("path: data/relay.db", &format!("path: {path}"), 1);
        assert!(yaml.contains(path), "{yaml}");
        let work = Workdir::new(&yaml);
        for args in [
            &["deadletters", "list"][..],
            &["deadletters", "replay", "--all"],
            &["deadletters", "purge"],
            &["queue", "list"],
        ] {
            let out = run_without_secrets(&work, args);
            assert_exit(&out, 2);
            let err = stderr(&out);
            assert!(err.contains(want), "{args:?}: no `{want}` in:\n{err}");
            assert!(err.contains("  hint: "), "{args:?}: {err}");
            assert!(out.stdout.is_empty(), "{args:?}: {}", stdout(&out));
        }
        let mut entries: Vec<String> = std::fs::read_dir(work.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        assert_eq!(entries, ["relay.yaml", "templates"], "no store was created");
    }
}

#[tokio::test]
async fn queue_list_marks_what_the_configuration_cannot_send() {
    let work = Workdir::new(&config_with(VISITORS));
    leave_behind(&work).await;

    let out = work.run(&["queue", "list"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    let line = |target: &str, template: &str| {
        let want = format!("target `{target}`  template `{template}`");
        text.lines()
            .find(|l| l.contains(&want))
            .unwrap_or_else(|| panic!("no `{want}` in:\n{text}"))
            .trim()
            .to_owned()
    };
    assert_eq!(
        line("gone", "visitor_message"),
        "2  target `gone`  template `visitor_message`  ORPHANED: no target of this name in the configuration"
    );
    assert_eq!(
        line("team-discord", "old_tpl"),
        "3  target `team-discord`  template `old_tpl`  ORPHANED: no template `old_tpl` for discord targets"
    );
    assert_eq!(
        line("retired", "(none)"),
        "1  target `retired`  template `(none)`  ORPHANED: no target of this name in the configuration"
    );
    assert_eq!(
        line("team-discord", "visitor_message"),
        "1  target `team-discord`  template `visitor_message`"
    );
    assert_eq!(
        line("console", "old_tpl"),
        "1  target `console`  template `old_tpl`"
    );
    assert_eq!(text.lines().count(), LEFT_BEHIND.len(), "{text}");

    let out = work.run(&["queue", "list", "--json"]);
    assert_exit(&out, 0);
    let mut got: Vec<Value> = json_lines(&out);
    got.sort_by_key(|j| j.to_string());
    let mut want = vec![
        serde_json::json!({"target": "gone", "template": "visitor_message", "pending": 2,
            "orphaned": true, "why": "no target of this name in the configuration"}),
        serde_json::json!({"target": "team-discord", "template": "old_tpl", "pending": 3,
            "orphaned": true, "why": "no template `old_tpl` for discord targets"}),
        serde_json::json!({"target": "retired", "template": null, "pending": 1,
            "orphaned": true, "why": "no target of this name in the configuration"}),
        serde_json::json!({"target": "team-discord", "template": "visitor_message", "pending": 1,
            "orphaned": false}),
        serde_json::json!({"target": "console", "template": "old_tpl", "pending": 1,
            "orphaned": false}),
    ];
    want.sort_by_key(|j| j.to_string());
    assert_eq!(got, want);

    // Where the whole config does not load, the queue is still listed, and
    // it says why nothing is marked.
    let out = run_without_secrets(&work, &["queue", "list"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(!text.contains("ORPHANED"), "{text}");
    assert!(text.contains("orphans are not marked"), "{text}");
}

#[tokio::test]
async fn queue_move_gives_orphans_a_target_or_template_that_exists() {
    let work = Workdir::new(&config_with(VISITORS));
    leave_behind(&work).await;
    let before = rows(&work).await;

    let out = work.run(&["queue", "move", "--target", "gone", "--to", "team-discord"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("2 pending deliveries moved"),
        "{}",
        stdout(&out)
    );
    let out = work.run(&[
        "queue",
        "move",
        "--target",
        "team-discord",
        "--template",
        "old_tpl",
        "--to-template",
        "visitor_message",
    ]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("3 pending deliveries moved"),
        "{}",
        stdout(&out)
    );

    // Only `retired` is left orphaned; the moved rows kept their ids, so
    // their place in line.
    let out = work.run(&["queue", "list", "--json"]);
    assert_exit(&out, 0);
    let orphaned: Vec<(String, bool, i64)> = json_lines(&out)
        .iter()
        .map(|j| {
            (
                format!("{}/{}", j["target"], j["template"]),
                j["orphaned"].as_bool().unwrap(),
                j["pending"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(
        orphaned.contains(&("\"team-discord\"/\"visitor_message\"".into(), false, 6)),
        "{orphaned:?}"
    );
    let still: Vec<&String> = orphaned.iter().filter(|o| o.1).map(|o| &o.0).collect();
    assert_eq!(still, ["\"retired\"/null"], "{orphaned:?}");
    let ids_of = |rows: &[(i64, String, Option<String>, String)], targets: &[&str]| {
        rows.iter()
            .filter(|r| targets.contains(&r.1.as_str()))
            .map(|r| r.0)
            .collect::<Vec<_>>()
    };
    let after = rows(&work).await;
    assert_eq!(
        ids_of(&after, &["team-discord"]),
        ids_of(&before, &["gone", "team-discord"]),
        "{after:?}"
    );
    assert!(
        after
            .iter()
            .filter(|r| r.1 == "team-discord")
            .all(|r| r.2.as_deref() == Some("visitor_message")),
        "{after:?}"
    );
}

#[tokio::test]
async fn queue_purge_deletes_orphans_and_refuses_sendable_deliveries_without_force() {
    let work = Workdir::new(&config_with(VISITORS));
    leave_behind(&work).await;
    let pending = |rows: &[(i64, String, Option<String>, String)], target: &str| {
        rows.iter().filter(|r| r.1 == target).count()
    };

    // team-discord holds 3 orphans and 1 sendable delivery; console's row
    // is sendable (a stdout target needs no template).
    for target in ["team-discord", "console"] {
        let out = work.run(&["queue", "purge", "--target", target]);
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(
            err.contains(
                "1 of these deliveries can be sent with this configuration; refusing to delete them"
            ),
            "{target}: {err}"
        );
        assert!(err.contains("hint: pass --force"), "{target}: {err}");
    }
    assert_eq!(rows(&work).await.len(), 8, "nothing deleted");

    let out = work.run(&["queue", "purge", "--target", "retired"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("1 pending deliveries deleted"),
        "{}",
        stdout(&out)
    );
    let out = work.run(&[
        "queue",
        "purge",
        "--target",
        "team-discord",
        "--template",
        "old_tpl",
    ]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("3 pending deliveries deleted"),
        "{}",
        stdout(&out)
    );
    let left = rows(&work).await;
    assert_eq!(pending(&left, "retired"), 0);
    assert_eq!(pending(&left, "team-discord"), 1, "{left:?}");
    assert_eq!(pending(&left, "gone"), 2);

    let out = work.run(&["queue", "purge", "--target", "team-discord", "--force"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("1 pending deliveries deleted"),
        "{}",
        stdout(&out)
    );
    assert_eq!(pending(&rows(&work).await, "team-discord"), 0);

    // Without the whole config it cannot tell, so it refuses unless --force.
    let out = run_without_secrets(&work, &["queue", "purge", "--target", "gone"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("the configuration does not load"),
        "{}",
        stderr(&out)
    );
    let out = run_without_secrets(&work, &["queue", "purge", "--target", "gone", "--force"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("2 pending deliveries deleted"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn check_lists_the_queued_deliveries_it_cannot_send() {
    let work = Workdir::new(&config_with(VISITORS));
    leave_behind(&work).await;
    let out = work.run(&["check"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    let at = text
        .find("warning: 6 queued deliveries in ")
        .unwrap_or_else(|| panic!("no orphan warning in:\n{text}"));
    let block: Vec<&str> = text[at..].lines().collect();
    assert!(
        block[0].contains(&format!(
            "{} cannot be sent with this configuration",
            store_path(&work).display()
        )),
        "{text}"
    );
    assert_eq!(
        &block[1..],
        [
            "  2 × target `gone`, template `visitor_message`: no target of this name in the configuration",
            "  1 × target `retired`, template `(none)`: no target of this name in the configuration",
            "  3 × target `team-discord`, template `old_tpl`: no template `old_tpl` for discord targets",
            "  hint: `crisp-relay queue move` gives them another target or template; `crisp-relay queue purge` deletes them",
        ],
        "{text}"
    );
}

#[test]
fn check_without_a_store_file_neither_warns_nor_creates_one() {
    let work = Workdir::new(&config_with(VISITORS));
    let out = work.run(&["check"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(!text.contains("queued deliveries"), "{text}");
    assert!(!text.contains("cannot read the queue"), "{text}");
    assert!(
        !work.path().join("data").exists(),
        "check created the store"
    );
}

/// Pointed at a store that does not exist (the wrong `-c`, the wrong
/// directory), `deadletters` and `queue` say so and create nothing.
#[test]
fn a_missing_store_is_an_error_and_is_not_created() {
    let work = Workdir::new(&config_with(
        "targets:\n  console: {kind: stdout}\nroutes:\n  - name: all\n    to: [console]\n",
    ));
    for args in [
        &["deadletters", "list"][..],
        &["deadletters", "replay", "--all"],
        &["queue", "list"],
        &["queue", "move", "--target", "a", "--to", "b"],
    ] {
        let out = work.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("there is no store at"), "{args:?}: {err}");
        assert!(
            !work.path().join("data").exists(),
            "{args:?} created the store"
        );
    }
}
