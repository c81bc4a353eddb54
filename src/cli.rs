//! The command line: `serve` (the default), `check` and `render`.
//!
//! Owns argument parsing, the human and JSON output of `check` and `render`,
//! and exit codes: 0 ok, 1 a failed check or render (or a runtime failure of
//! `serve`), 2 a usage or configuration error. `main` only calls [`main`].

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::app::{LoadError, Relay};
use crate::event::Event;
use crate::targets::{Body, HeaderValue, OutgoingRequest};

/// Relays Crisp Website Hooks to Discord, Slack and HTTP webhooks.
#[derive(Debug, Parser)]
#[command(name = "crisp-relay", version, about, long_about = None)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        short,
        long,
        global = true,
        default_value = "relay.yaml",
        env = "CRISP_RELAY_CONFIG"
    )]
    pub config: PathBuf,

    /// Log filter (RUST_LOG syntax, e.g. `info` or `crisp_relay=debug`);
    /// RUST_LOG wins when set.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive Crisp hooks and queue their deliveries (the default).
    Serve,
    /// Validate the configuration and templates; with --events, render every
    /// event in a directory through every route.
    Check {
        /// A directory of Crisp event JSON files to render.
        #[arg(long, value_name = "DIR")]
        events: Option<PathBuf>,
    },
    /// Show exactly what each target would receive for one event (no network).
    Render {
        /// A Crisp event JSON file, or `-` for standard input.
        #[arg(long, value_name = "FILE|-")]
        event: PathBuf,
        /// One JSON object per delivery per line.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    crate::telemetry::init(&cli.log_level);
    let relay = match Relay::load(&cli.config) {
        Ok(r) => r,
        Err(LoadError::Config(errors)) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            return ExitCode::from(2);
        }
        Err(LoadError::Templates(errors)) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(relay),
        Command::Check { events } => check(&relay, events.as_deref()),
        Command::Render { event, json } => render(&relay, &event, json),
    }
}

fn serve(relay: Relay) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve_async(relay)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "relay stopped");
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve_async(relay: Relay) -> Result<(), String> {
    let shutdown = CancellationToken::new();
    let running = crate::start(relay, shutdown.clone())
        .await
        .map_err(|e| e.to_string())?;
    wait_for_signal().await;
    tracing::info!("signal received; shutting down");
    shutdown.cancel();
    running.finished().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// One delivery as `render --json` prints it.
fn delivery_json(route: &str, target: &crate::config::Target, req: &OutgoingRequest) -> Value {
    let headers: serde_json::Map<String, Value> = req
        .headers
        .iter()
        .map(|(k, v)| {
            let shown = match v {
                HeaderValue::Plain(s) => (*s).to_owned(),
                HeaderValue::Secret(_) => "***".to_owned(),
            };
            (k.clone(), Value::String(shown))
        })
        .collect();
    let body = match &req.body {
        Body::Json(v) => v.clone(),
        Body::Text(t) => Value::String(t.clone()),
    };
    let mut out = json!({
        "route": route,
        "target": target.name,
        "kind": target.kind.as_str(),
        "method": req.method,
        "url": req.url.as_ref().map(|u| u.redacted().to_owned()),
        "headers": headers,
        "body": body,
    });
    if !target.enabled {
        out["disabled"] = Value::Bool(true);
    }
    out
}

fn read_event(path: &Path) -> Result<Vec<u8>, String> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        Ok(buf)
    } else {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    }
}

fn render(relay: &Relay, path: &Path, as_json: bool) -> ExitCode {
    let bytes = match read_event(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let event = match Event::parse(&bytes, crate::now_ms()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(1);
        }
    };
    let decisions = relay.config.router.route_all(event.value());
    let mut stdout = std::io::stdout().lock();
    if decisions.is_empty() && !as_json {
        let _ = writeln!(
            stdout,
            "no route matches event `{}`: Crisp gets 200 and nothing is sent",
            event.name()
        );
    }
    let mut failed = false;
    for d in decisions {
        let route = &relay.config.router.routes()[d.route];
        let target = &relay.config.targets[d.target];
        match relay.prepare(d, event.value()) {
            Ok(req) => {
                let j = delivery_json(&route.name, target, &req);
                if as_json {
                    let _ = writeln!(stdout, "{j}");
                } else {
                    let _ = write_human(&mut stdout, &j);
                }
            }
            Err(e) => {
                failed = true;
                eprintln!(
                    "error: route `{}` → target `{}`: {e}",
                    route.name, target.name
                );
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn write_human(out: &mut impl Write, j: &Value) -> std::io::Result<()> {
    let s = |k: &str| j[k].as_str().unwrap_or("").to_owned();
    let disabled = if j.get("disabled").is_some() {
        "  (disabled: its url is empty)"
    } else {
        ""
    };
    writeln!(
        out,
        "── route {} → target {} ({}){disabled}",
        s("route"),
        s("target"),
        s("kind")
    )?;
    if let Some(url) = j["url"].as_str() {
        writeln!(out, "{} {url}", s("method"))?;
    }
    if let Some(h) = j["headers"].as_object() {
        for (k, v) in h {
            writeln!(out, "{k}: {}", v.as_str().unwrap_or(""))?;
        }
    }
    match &j["body"] {
        Value::String(t) => writeln!(out, "\n{t}\n"),
        v => writeln!(
            out,
            "\n{}\n",
            serde_json::to_string_pretty(v).unwrap_or_default()
        ),
    }
}

fn check(relay: &Relay, events: Option<&Path>) -> ExitCode {
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
            "  note: target `{}` is disabled (its url is empty); routes skip it",
            t.name
        );
    }
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
            match relay.prepare(d, event.value()) {
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
