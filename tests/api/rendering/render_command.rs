//! The `render` command itself: its human output, a file that is not a
//! Crisp envelope, and the event read from stdin.

use serde_json::Value;

use super::*;
use crate::helpers::*;

#[test]
fn render_without_json_is_readable() {
    let work = shipped_workdir();
    let path = fixture_path("message_send_text_basic.json");
    let out = work.run_with_env(&["render", "--event", path.to_str().unwrap()], SHIPPED_ENV);
    let text = stdout_of(&out);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        stderr_of(&out)
    );
    let first = text.lines().next().unwrap_or("");
    assert!(
        serde_json::from_str::<Value>(first).is_err(),
        "human output should not be JSON lines:\n{text}"
    );
    for target in ["team-discord", "support-slack", "console"] {
        assert!(text.contains(target), "{target} not in:\n{text}");
    }
    assert!(
        text.contains("Hi! Is the Pro plan billed monthly or yearly?"),
        "{text}"
    );
    // The console's plain text is printed as is, not as a JSON string.
    assert!(text.contains("New message from visitor493603"), "{text}");
    assert!(!text.contains("SECRETDISCORDTOKEN") && !text.contains("SECRETSLACKTOKEN"));

    // An event no route takes says so, and is not an error.
    let path = fixture_path("session_sync_pages.json");
    let out = work.run(&["render", "--event", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stdout_of(&out).contains("no route matches event `session:sync:pages`"),
        "{}",
        stdout_of(&out)
    );
}

#[test]
fn render_of_a_file_that_is_not_json_fails() {
    let work = Workdir::new(&all_kinds_config());
    work.write("not-json.json", "this is not { json");
    let out = work.run(&[
        "render",
        "--json",
        "--event",
        work.path().join("not-json.json").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("error"), "{err}");
    assert!(err.contains("not-json.json"), "names the file: {err}");
    assert!(stdout_of(&out).trim().is_empty(), "{}", stdout_of(&out));

    // Valid JSON that is not a Crisp envelope fails the same way.
    work.write("array.json", "[1, 2, 3]");
    let out = work.run(&[
        "render",
        "--event",
        work.path().join("array.json").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("error"), "{}", stderr_of(&out));
}

#[test]
fn render_reads_the_event_from_stdin() {
    let work = Workdir::new(&all_kinds_config());
    let name = "message_send_picker_choice.json";
    let out = work.run_with_stdin(
        &["render", "--json", "--event", "-"],
        &[],
        Some(&fixture_as_is(name)),
    );
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        stderr_of(&out)
    );
    let from_stdin: Vec<Value> = stdout_of(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(from_stdin.len(), 4, "{}", stdout_of(&out));
    assert_eq!(from_stdin, render_json(&work, &fixture_path(name)));
    let discord = &delivery(&from_stdin, "discord", name)["body"];
    assert!(
        discord["embeds"][0]["description"]
            .as_str()
            .is_some_and(|d| d.contains("Sales")),
        "the selected choice is shown: {discord}"
    );
}
