//! Mistakes in the `store` section: a SQLite path and a PostgreSQL URL at
//! once, a URL that is not PostgreSQL's (its password never echoed), a
//! lease without a database, a lease out of range.

use super::*;

const ROUTE: &str =
    "targets:\n  console: {kind: stdout}\nroutes:\n  - name: all\n    to: [console]\n";

fn store(section: &str) -> String {
    let base = edit("store:\n  path: data/relay.db\n", section);
    format!("{base}{ROUTE}")
}

#[test]
fn store_section_mistakes_are_refused_with_their_position() {
    run_cases(&[
        Case {
            name: "path and url",
            yaml: store(&format!(
                "store:\n  path: data/relay.db\n  url: \"postgres://relay:{TOKEN}@db:5432/relay\"\n"
            )),
            line: 9,
            column: 9,
            token: "data/relay.db",
            message: "store.path and store.url are both set",
            hint: Some("remove store.path to use PostgreSQL"),
        },
        Case {
            name: "not postgres",
            yaml: store(&format!(
                "store:\n  url: \"mysql://relay:{TOKEN}@db/relay\"\n"
            )),
            line: 9,
            column: 8,
            token: "\"mysql://",
            message: "store.url must start with postgres://",
            hint: Some("DATABASE_URL=postgres://"),
        },
        Case {
            name: "no host",
            yaml: store("store:\n  url: \"postgres:///relay\"\n"),
            line: 9,
            column: 8,
            token: "\"postgres:///relay\"",
            message: "store.url has no host",
            hint: None,
        },
        Case {
            name: "lease without url",
            yaml: store("store:\n  path: data/relay.db\n  lease: 10s\n"),
            line: 10,
            column: 10,
            token: "10s",
            message: "store.lease applies to a PostgreSQL store (store.url) only",
            hint: Some("remove it"),
        },
        Case {
            name: "lease too short",
            yaml: store("store:\n  url: \"postgres://relay@db/relay\"\n  lease: 500ms\n"),
            line: 10,
            column: 10,
            token: "500ms",
            message: "store.lease must be between 2s and 10m",
            hint: None,
        },
    ]);
}

/// `migrate` on a config whose database cannot be reached: exit 1, the
/// reason, and never the password.
#[test]
fn migrate_without_a_database_says_why_and_hides_the_password() {
    let work = Workdir::new(&store(&format!(
        "store:\n  url: \"postgres://relay:{TOKEN}@127.0.0.1:1/relay\"\n"
    )));
    let out = work.run(&["migrate"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot open the store at postgres://relay:***@127.0.0.1:1/relay"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN), "{stderr}");
}

/// `migrate` on a SQLite config creates the file at the current schema.
#[test]
fn migrate_creates_the_sqlite_store() {
    let work = Workdir::new(&store("store:\n  path: data/relay.db\n"));
    let out = work.run(&["migrate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("is at schema version"));
    assert!(work.path().join("data/relay.db").is_file());
}
