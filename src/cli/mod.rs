//! The command line: `serve` (the default), `check`, `render`, `send`,
//! `deadletters`, `queue`, `migrate` and `healthcheck`, one file each.
//!
//! Owns argument parsing, what each command prints, and exit codes: 0 ok,
//! 1 a failed check, render or send (or a runtime failure of `serve`), 2 a
//! usage or configuration error. Commands that only touch the store
//! (`deadletters`, `queue`) and `healthcheck` read only the start-up part of
//! the configuration, so they work without the hook key and webhook URLs
//! set. `main` only calls [`main`].

mod check;
mod deadletters;
mod healthcheck;
mod migrate;
mod queue;
mod render;
mod send;
mod serve;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{LoadError, Relay};
use crate::clock::Clock;
use crate::config::Startup;
use crate::event::Event;

pub use healthcheck::DEFAULT_HEALTHCHECK_URL;

/// Where the configuration is looked for when neither `-c` nor
/// `CRISP_RELAY_CONFIG` says.
pub const DEFAULT_CONFIG: &str = "relay.yaml";

/// Relays Crisp Website Hooks to Discord, Slack and HTTP webhooks.
#[derive(Debug, Parser)]
#[command(name = "crisp-relay", version, about, long_about = None)]
pub struct Cli {
    /// The configuration file [default: relay.yaml].
    #[arg(short, long, global = true, env = "CRISP_RELAY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log filter (RUST_LOG syntax, e.g. `info` or `crisp_relay=debug`);
    /// RUST_LOG wins when set.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,

    /// Log line format: `auto` (text on a terminal, JSON lines otherwise),
    /// `text` or `json`.
    #[arg(long, global = true, value_enum, default_value_t = crate::telemetry::LogFormat::Auto)]
    pub log_format: crate::telemetry::LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The configuration file to use.
    fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive Crisp hooks and queue their deliveries (the default).
    Serve,
    /// Validate the configuration and templates, print warnings, and list
    /// queued deliveries it cannot send; with --events, render every event
    /// in a directory through every route.
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
    /// Send one event to one target now and print the outcome (to check a
    /// webhook URL). Uses the template of the route that sends the event to
    /// the target, or --template.
    Send {
        /// The target's name in the config.
        #[arg(long, value_name = "NAME")]
        target: String,
        /// A Crisp event JSON file, or `-` for standard input.
        #[arg(long, value_name = "FILE|-")]
        event: PathBuf,
        /// The template to use (default: the matching route's).
        #[arg(long, value_name = "NAME")]
        template: Option<String>,
    },
    /// List, replay or purge deliveries that failed for good (needs only
    /// the `store` section of the config).
    #[command(subcommand)]
    Deadletters(deadletters::Deadletters),
    /// Create or upgrade the store's schema (SQLite file or PostgreSQL
    /// database) and exit; `serve` also does it at start. Needs only the
    /// `store` section of the config.
    Migrate,
    /// List queued deliveries by target and template; move or purge those
    /// whose target or template the configuration no longer has.
    #[command(subcommand)]
    Queue(queue::Queue),
    /// Ask a running relay's admin listener whether it is healthy: exit 0
    /// when `/healthz` answers 200, else 1. The address is --url, else the
    /// config's `admin.listen` (when -c or CRISP_RELAY_CONFIG names a
    /// config, or ./relay.yaml exists), else 127.0.0.1:9090.
    Healthcheck {
        /// The health endpoint to GET (plain http; 3 s timeout).
        #[arg(long, value_name = "URL", env = "CRISP_HEALTHCHECK_URL")]
        url: Option<String>,
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
    // Before logging and the config: a container HEALTHCHECK must work
    // whatever the environment holds, and never exits 2.
    if let Some(Command::Healthcheck { url }) = &cli.command {
        return healthcheck::run(url.as_deref(), cli.config.as_deref());
    }
    crate::telemetry::init(&cli.log_level, cli.log_format);
    let path = cli.config_path();
    match cli.command {
        Some(Command::Deadletters(cmd)) => with_runtime(deadletters::run(&path, cmd)),
        Some(Command::Queue(cmd)) => with_runtime(queue::run(&path, cmd)),
        Some(Command::Migrate) => with_runtime(migrate::run(&path)),
        command => {
            let relay = match load(&path) {
                Ok(r) => r,
                Err(code) => return code,
            };
            match command.unwrap_or(Command::Serve) {
                Command::Check { events } => check::run(&relay, events.as_deref()),
                Command::Render { event, json } => render::run(&relay, &event, json),
                Command::Send {
                    target,
                    event,
                    template,
                } => with_runtime(send::run(&relay, &target, &event, template.as_deref())),
                _ => serve::run(relay),
            }
        }
    }
}

/// Loads the whole configuration; prints every error and gives exit code
/// 2 when it cannot.
fn load(path: &Path) -> Result<Relay, ExitCode> {
    Relay::load(path).map_err(|e| {
        print_load_error(&e);
        ExitCode::from(2)
    })
}

/// Loads only the start-up part of the configuration (see
/// [`crate::config::Config::parse_startup`]).
fn load_startup(path: &Path) -> Result<Startup, ExitCode> {
    crate::app::load_startup(path, &|k| std::env::var(k).ok()).map_err(|e| {
        print_load_error(&e);
        ExitCode::from(2)
    })
}

fn print_load_error(e: &LoadError) {
    match e {
        LoadError::Config(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
        }
        LoadError::Templates(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
        }
        e => eprintln!("error: {e}"),
    }
}

fn with_runtime(fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    with_runtime_value(async { Ok(fut.await) }).unwrap_or_else(|e: String| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })
}

/// Runs `fut` on a single-threaded runtime made for it.
fn with_runtime_value<T, E: From<String>>(
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| E::from(format!("cannot start the async runtime: {e}")))?
        .block_on(fut)
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

/// Reads and checks an event file (or stdin); on failure prints why and
/// gives the exit code: 2 when it cannot be read, 1 when it is not an event.
fn load_event(path: &Path) -> Result<Event, ExitCode> {
    let bytes = read_event(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    Event::parse(&bytes, Clock::system().now_ms()).map_err(|e| {
        eprintln!("error: {}: {e}", path.display());
        ExitCode::from(1)
    })
}

/// Prints that `name` is not a target of the config, and the ones that are.
fn unknown_target(relay: &Relay, name: &str) -> ExitCode {
    let names: Vec<&str> = relay
        .config
        .targets
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    eprintln!(
        "error: no target `{name}` in {}\n  hint: targets are: {}",
        relay.config.file,
        names.join(", ")
    );
    ExitCode::from(2)
}

/// Opens the store named by `startup` (for `deadletters` and `queue`). A
/// store that does not exist is an error rather than created: these
/// commands would otherwise leave an empty store wherever they were run
/// with the wrong config.
async fn open_store(
    startup: &Startup,
) -> Result<std::sync::Arc<dyn crate::store::Store>, ExitCode> {
    if startup.store_url.is_none() && !startup.store_path.is_file() {
        eprintln!(
            "error: there is no store at {}\n  hint: the relay creates it when it starts; pass the relay's config with -c (store.path is relative to it)",
            startup.store_path.display()
        );
        return Err(ExitCode::from(1));
    }
    crate::store::open(&startup.store_location(), 16, Clock::system())
        .await
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(1)
        })
}
