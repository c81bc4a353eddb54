//! `deadletters`: list, replay or purge the deliveries that failed for
//! good. Needs only the store's path from the configuration, so it works
//! without the hook key or webhook URLs set (and while the relay runs).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use super::{load_startup, open_store};
use crate::clock::Clock;
use crate::render::{format_iso8601, format_readable};
use crate::store::{Op, Store};

#[derive(Debug, Subcommand)]
pub enum Deadletters {
    /// List dead letters, oldest first.
    List {
        /// Only this target's.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Queue dead letters again, due at once and with a fresh `max_age`
    /// (they keep their place: oldest first).
    Replay {
        /// The dead letter's id (from `list`).
        #[arg(value_name = "ID", conflicts_with = "all", required_unless_present_any = ["all", "target"])]
        id: Option<i64>,
        /// Every dead letter (of --target, if given).
        #[arg(long)]
        all: bool,
        /// Only this target's.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
    },
    /// Delete dead letters.
    Purge {
        /// Only those that failed longer ago than this (e.g. `7d`); default: all.
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
    },
}

pub(super) async fn run(config: &Path, cmd: Deadletters) -> ExitCode {
    let startup = match load_startup(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    // Checked before the store is opened (opening creates it).
    let age = match &cmd {
        Deadletters::Purge {
            older_than: Some(text),
        } => match crate::config::parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!(
                    "error: --older-than: {e}\n  hint: durations look like `30m`, `24h` or `7d`"
                );
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let store = match open_store(&startup).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let code = match cmd {
        Deadletters::List { target, json } => list(store.as_ref(), target.as_deref(), json).await,
        Deadletters::Replay { id, all: _, target } => {
            match store.apply(Op::Replay { id, target }).await {
                Ok(0) => {
                    println!("nothing to replay");
                    ExitCode::from(1)
                }
                Ok(n) => {
                    println!(
                        "{n} dead letter(s) queued again; a running relay picks them up within seconds"
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Deadletters::Purge { .. } => {
            // Without --older-than: everything (`before` just past now).
            let before_ms = match age {
                Some(age) => Clock::system()
                    .now_ms()
                    .saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)),
                None => Clock::system().now_ms() + 1,
            };
            match store.apply(Op::PurgeDead { before_ms }).await {
                Ok(n) => {
                    println!("{n} dead letter(s) deleted");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
    };
    store.close().await;
    code
}

async fn list(store: &dyn Store, target: Option<&str>, json: bool) -> ExitCode {
    let list = match store.dead_letters(target).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let mut out = std::io::stdout().lock();
    if !json && list.is_empty() {
        let _ = match target {
            Some(t) => writeln!(out, "no dead letters for target `{t}`"),
            None => writeln!(out, "no dead letters"),
        };
    }
    for d in &list {
        if json {
            let j = json!({
                "id": d.id, "event_id": d.event_id, "route": d.route, "target": d.target,
                "event": d.event, "attempts": d.attempts, "last_status": d.last_status,
                "last_error": d.last_error,
                "created_at": format_iso8601(d.created_at_ms),
                "failed_at": format_iso8601(d.failed_at_ms),
            });
            let _ = writeln!(out, "{j}");
        } else {
            let status = d.last_status.map_or("-".to_owned(), |s| s.to_string());
            let _ = writeln!(
                out,
                "{:>6}  {}  {} → {}  {}  attempts {}  status {status}\n        {}",
                d.id,
                format_readable(d.failed_at_ms),
                d.route,
                d.target,
                d.event,
                d.attempts,
                d.last_error.as_deref().unwrap_or("")
            );
        }
    }
    ExitCode::SUCCESS
}
