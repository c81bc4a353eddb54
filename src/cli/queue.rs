//! `queue`: the pending deliveries by target and template, and the tools
//! for those a configuration cannot send (orphans: their target or template
//! was removed or renamed). Orphans stay queued, skipped by the workers,
//! until a configuration names them again — or they are moved to another
//! target or template, or purged, here. Needs the store's path from the
//! configuration; judging which groups are orphans needs the whole of it.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use super::{load_startup, open_store};
use crate::app::{Orphan, Relay};
use crate::store::{Op, PendingGroup, Store};

#[derive(Debug, Subcommand)]
pub enum Queue {
    /// Pending deliveries counted by target and template; those this
    /// configuration cannot send are marked.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Give the pending deliveries of a target (and template) another target
    /// and/or template. They keep their place in line.
    Move {
        /// The target they name now.
        #[arg(long, value_name = "NAME")]
        target: String,
        /// Only those naming this template.
        #[arg(long, value_name = "NAME")]
        template: Option<String>,
        /// The target to give them.
        #[arg(long, value_name = "NAME", required_unless_present = "to_template")]
        to: Option<String>,
        /// The template to give them.
        #[arg(long, value_name = "NAME")]
        to_template: Option<String>,
    },
    /// Delete the pending deliveries of a target (and template). Refused
    /// for deliveries the configuration can send, unless --force.
    Purge {
        #[arg(long, value_name = "NAME")]
        target: String,
        /// Only those naming this template.
        #[arg(long, value_name = "NAME")]
        template: Option<String>,
        /// Delete even deliveries the configuration can send (or when the
        /// whole configuration cannot be loaded to tell).
        #[arg(long)]
        force: bool,
    },
}

pub(super) async fn run(config: &Path, cmd: Queue) -> ExitCode {
    let startup = match load_startup(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    // Which groups are orphans needs the targets and templates.
    let relay = Relay::load(config);
    let store = match open_store(&startup).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let code = match cmd {
        Queue::List { json } => list(store.as_ref(), relay.as_ref().ok(), json).await,
        Queue::Move {
            target,
            template,
            to,
            to_template,
        } => {
            if let (Ok(relay), Some(to)) = (&relay, &to)
                && relay.config.target_index(to).is_none()
            {
                eprintln!(
                    "warning: the configuration has no target `{to}`: the deliveries stay orphaned until it does"
                );
            }
            let op = Op::MovePending {
                from: target,
                template,
                to,
                to_template,
            };
            match store.apply(op).await {
                Ok(n) => {
                    println!(
                        "{n} pending deliveries moved; a running relay picks them up within seconds"
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Queue::Purge {
            target,
            template,
            force,
        } => purge(store.as_ref(), relay, target, template, force).await,
    };
    store.close().await;
    code
}

async fn list(store: &dyn Store, relay: Option<&Relay>, json: bool) -> ExitCode {
    let groups = match store.pending_groups().await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let orphans: Vec<Orphan> = relay.map(|r| r.orphans(&groups)).unwrap_or_default();
    let why = |g: &PendingGroup| {
        orphans
            .iter()
            .find(|o| o.target == g.target && o.template == g.template)
            .map(|o| o.why.clone())
    };
    let mut out = std::io::stdout().lock();
    if !json && groups.is_empty() {
        let _ = writeln!(out, "no pending deliveries");
    }
    for g in &groups {
        if json {
            let mut j = json!({"target": g.target, "template": g.template, "pending": g.count});
            if relay.is_some() {
                j["orphaned"] = json!(why(g).is_some());
                if let Some(w) = why(g) {
                    j["why"] = json!(w);
                }
            }
            let _ = writeln!(out, "{j}");
        } else {
            let mark = why(g).map_or(String::new(), |w| format!("  ORPHANED: {w}"));
            let _ = writeln!(
                out,
                "{:>8}  target `{}`  template `{}`{mark}",
                g.count,
                g.target,
                g.template.as_deref().unwrap_or("(none)")
            );
        }
    }
    if relay.is_none() && !json {
        let _ = writeln!(
            out,
            "note: the whole configuration does not load here (see `crisp-relay check`), so orphans are not marked"
        );
    }
    ExitCode::SUCCESS
}

async fn purge(
    store: &dyn Store,
    relay: Result<Relay, crate::app::LoadError>,
    target: String,
    template: Option<String>,
    force: bool,
) -> ExitCode {
    if !force {
        let relay = match relay {
            Ok(r) => r,
            Err(e) => {
                eprintln!(
                    "error: cannot tell whether these deliveries can still be sent: the configuration does not load:\n{e}\n  hint: fix it (`crisp-relay check`), or pass --force"
                );
                return ExitCode::from(2);
            }
        };
        let groups = match store.pending_groups().await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        let orphans = relay.orphans(&groups);
        let sendable: i64 = groups
            .iter()
            .filter(|g| {
                g.target == target
                    && template
                        .as_ref()
                        .is_none_or(|t| g.template.as_ref() == Some(t))
            })
            .filter(|g| {
                !orphans
                    .iter()
                    .any(|o| o.target == g.target && o.template == g.template)
            })
            .map(|g| g.count)
            .sum();
        if sendable > 0 {
            eprintln!(
                "error: {sendable} of these deliveries can be sent with this configuration; refusing to delete them\n  hint: pass --force to delete them anyway"
            );
            return ExitCode::from(2);
        }
    }
    match store.apply(Op::PurgePending { target, template }).await {
        Ok(n) => {
            println!("{n} pending deliveries deleted");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
