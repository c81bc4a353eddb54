//! `check`: validate the configuration and templates, print the warnings,
//! list the queued deliveries this configuration cannot send (when the store
//! file exists; it is only read), and with `--events DIR` render every event
//! in DIR through every route.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::app::Relay;
use crate::event::Event;

pub(super) fn run(relay: &Relay, events: Option<&Path>) -> ExitCode {
    let cfg = &relay.config;
    let enabled = cfg.enabled_targets().count();
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    println!(
        "{}: ok — {}, {} ({enabled} enabled), templates in {}",
        cfg.file,
        plural(cfg.router.routes().len(), "route"),
        plural(cfg.targets.len(), "target"),
        cfg.templates_dir.display()
    );
    for t in cfg.targets.iter().filter(|t| !t.enabled) {
        println!(
            "  note: target `{}` is disabled ({}); routes skip it",
            t.name, t.disabled_reason
        );
    }
    for w in &cfg.warnings {
        println!("warning: {w}");
    }
    orphans(relay);
    let Some(dir) = events else {
        return ExitCode::SUCCESS;
    };
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) => {
            eprintln!("error: cannot read events directory {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    files.sort();
    let mut failures = Vec::new();
    let mut rendered = 0usize;
    for file in &files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let event = match std::fs::read(file)
            .map_err(|e| e.to_string())
            .and_then(|b| Event::parse(&b, 0).map_err(|e| e.to_string()))
        {
            Ok(e) => e,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        for d in cfg.router.route_all(event.value()) {
            let route = &cfg.router.routes()[d.route];
            let target = &cfg.targets[d.target];
            // With threads, both the first message of a conversation and a
            // later one must build.
            match relay.previews(target, route.template.as_deref(), event.value()) {
                Ok(_) => rendered += 1,
                Err(e) => failures.push(format!(
                    "{name}: route `{}` → target `{}`: {e}",
                    route.name, target.name
                )),
            }
        }
    }
    println!(
        "{} events, {rendered} deliveries rendered, {} failures",
        files.len(),
        failures.len()
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        ExitCode::from(1)
    }
}

/// Prints the queued deliveries the configuration cannot send, read from
/// the store if there is one (never created or changed here).
fn orphans(relay: &Relay) {
    let location = relay.config.startup.store_location();
    let shown = match &location {
        crate::store::Location::Sqlite(path) => path.display().to_string(),
        crate::store::Location::Postgres { url, .. } => url.redacted().to_owned(),
    };
    let read = async {
        match &location {
            crate::store::Location::Sqlite(path) => {
                crate::store::sqlite::pending_groups_at(path).await
            }
            crate::store::Location::Postgres { url, .. } => {
                crate::store::postgres::pending_groups_at(url).await
            }
        }
        .map_err(|e| e.to_string())
    };
    let groups = match super::with_runtime_value(read) {
        Ok(Some(g)) => g,
        Ok(None) => return,
        Err(e) => {
            println!("  note: cannot read the queue in {shown}: {e}");
            return;
        }
    };
    let orphans = relay.orphans(&groups);
    if orphans.is_empty() {
        return;
    }
    let total: i64 = orphans.iter().map(|o| o.count).sum();
    println!(
        "warning: {total} queued deliveries in {shown} cannot be sent with this configuration; they stay queued until it names their target and template again:"
    );
    for o in &orphans {
        println!(
            "  {} × target `{}`, template `{}`: {}",
            o.count,
            o.target,
            o.template.as_deref().unwrap_or("(none)"),
            o.why
        );
    }
    println!(
        "  hint: `crisp-relay queue move` gives them another target or template; `crisp-relay queue purge` deletes them"
    );
}
