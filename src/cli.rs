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

    /// Log line format: `auto` (text on a terminal, JSON lines otherwise),
    /// `text` or `json`.
    #[arg(long, global = true, value_enum, default_value_t = crate::telemetry::LogFormat::Auto)]
    pub log_format: crate::telemetry::LogFormat,

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
    /// List, replay or purge deliveries that failed for good.
    #[command(subcommand)]
    Deadletters(Deadletters),
    /// Ask a running relay's admin listener whether it is healthy: exit 0
    /// when `/healthz` answers 200, else 1. Reads no config (for container
    /// HEALTHCHECKs: there is no curl in the image).
    Healthcheck {
        /// The health endpoint to GET (plain http; 3 s timeout).
        #[arg(
            long,
            value_name = "URL",
            default_value = DEFAULT_HEALTHCHECK_URL,
            env = "CRISP_HEALTHCHECK_URL"
        )]
        url: String,
    },
}

/// Where `healthcheck` looks by default: `admin.listen`'s default address.
pub const DEFAULT_HEALTHCHECK_URL: &str = "http://127.0.0.1:9090/healthz";

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
    /// Queue dead letters again (they keep their place: oldest first).
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
    // whatever the config or the environment holds.
    if let Some(Command::Healthcheck { url }) = &cli.command {
        return healthcheck(url);
    }
    crate::telemetry::init(&cli.log_level, cli.log_format);
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
        Command::Send {
            target,
            event,
            template,
        } => with_runtime(send(&relay, &target, &event, template.as_deref())),
        Command::Deadletters(cmd) => with_runtime(deadletters(&relay, cmd)),
        Command::Healthcheck { url } => healthcheck(&url),
    }
}

/// `healthcheck`: one blocking HTTP/1.1 GET of `url` within 3 s; prints one
/// line and gives 0 when the answer is `200`, else 1 (never 2: Docker
/// reserves it for HEALTHCHECK commands).
fn healthcheck(url: &str) -> ExitCode {
    match http_get_status(url, std::time::Duration::from_secs(3)) {
        Ok(200) => {
            println!("healthy: {url} answered 200");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            println!("unhealthy: {url} answered {status}");
            ExitCode::from(1)
        }
        Err(e) => {
            println!("unhealthy: {url}: {e}");
            ExitCode::from(1)
        }
    }
}

/// GETs a plain `http://` URL with `Connection: close` and returns the
/// status code of the answer; the whole exchange must fit in `timeout`.
fn http_get_status(url: &str, timeout: std::time::Duration) -> Result<u16, String> {
    use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
    use std::time::Instant;

    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer within {}s", timeout.as_secs()))
    };
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if parsed.scheme() != "http" {
        return Err(format!("scheme `{}` is not http", parsed.scheme()));
    }
    let port = parsed.port().unwrap_or(80);
    let addrs: Vec<SocketAddr> = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::from((ip, port))],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::from((ip, port))],
        Some(url::Host::Domain(name)) => (name, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {name}: {e}"))?
            .collect(),
        None => return Err("the URL has no host".into()),
    };
    let mut last_err = String::from("no address to connect to");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, left()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = format!("cannot connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last_err)?;
    let host = parsed.host_str().unwrap_or_default();
    let target = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: crisp-relay-healthcheck\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .set_write_timeout(Some(left()?))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| format!("cannot send the request: {e}"))?;
    // Only the status line matters: `HTTP/1.1 200 OK\r\n`.
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no answer within {}s", timeout.as_secs()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read the answer: {e}")),
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().splitn(3, ' ');
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(status))) if v.starts_with("HTTP/") => Ok(status),
        _ if head.is_empty() => Err("the connection closed without an answer".into()),
        _ => Err(format!("not an HTTP answer: {:?}", line.trim_end())),
    }
}

fn with_runtime(fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

async fn send(relay: &Relay, target_name: &str, path: &Path, template: Option<&str>) -> ExitCode {
    let cfg = &relay.config;
    let Some(index) = cfg.target_index(target_name) else {
        return unknown_target(relay, target_name);
    };
    let target = &cfg.targets[index];
    let event = match load_event(path) {
        Ok(e) => e,
        Err(code) => return code,
    };
    if target.kind != crate::model::TargetKind::Stdout && target.url.is_none() {
        eprintln!(
            "error: target `{target_name}` is disabled (its url is empty)\n  hint: set the url's environment variable"
        );
        return ExitCode::from(2);
    }
    let template = template.map(str::to_owned).or_else(|| {
        cfg.router
            .route_all(event.value())
            .into_iter()
            .find(|d| d.target == index)
            .and_then(|d| cfg.router.routes()[d.route].template.clone())
    });
    let req = match relay.prepare_for(target, template.as_deref(), event.value()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "error: {e}\n  hint: no route sends this event to `{target_name}`? pass --template NAME"
            );
            return ExitCode::from(1);
        }
    };
    let transport = match crate::delivery::transport::HttpTransport::new() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let (outcome, answer) = crate::delivery::send_once(&transport, target, &req).await;
    let url = req.url.as_ref().map_or("(stdout)", |u| u.redacted());
    if let Some(a) = &answer {
        println!("{} {url} → HTTP {}", req.method, a.status);
        let excerpt = crate::delivery::classify::excerpt(&a.body);
        if !excerpt.is_empty() {
            println!("{excerpt}");
        }
    }
    match outcome {
        crate::delivery::classify::Outcome::Delivered => {
            println!("delivered");
            ExitCode::SUCCESS
        }
        crate::delivery::classify::Outcome::Retry { reason, .. } => {
            println!("not delivered (the relay would retry): {reason}");
            ExitCode::from(1)
        }
        crate::delivery::classify::Outcome::Failed { reason, disable } => {
            let what = if disable {
                "the relay would disable this target"
            } else {
                "the relay would dead-letter it"
            };
            println!("not delivered ({what}): {reason}");
            ExitCode::from(1)
        }
    }
}

async fn deadletters(relay: &Relay, cmd: Deadletters) -> ExitCode {
    let cfg = &relay.config;
    let check_target = |t: &Option<String>| -> Result<(), ExitCode> {
        match t {
            Some(name) if cfg.target_index(name).is_none() => Err(unknown_target(relay, name)),
            _ => Ok(()),
        }
    };
    let store = match crate::store::SqliteStore::open(&cfg.store.path, 16).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let code = match cmd {
        Deadletters::List { target, json } => {
            if let Err(c) = check_target(&target) {
                return c;
            }
            match store.dead_letters(target.as_deref()).await {
                Ok(list) => {
                    let mut out = std::io::stdout().lock();
                    if !json && list.is_empty() {
                        let _ = writeln!(out, "no dead letters");
                    }
                    for d in &list {
                        if json {
                            let j = json!({
                                "id": d.id, "event_id": d.event_id, "route": d.route, "target": d.target,
                                "event": d.event, "attempts": d.attempts, "last_status": d.last_status,
                                "last_error": d.last_error,
                                "created_at": crate::render::format_iso8601(d.created_at_ms),
                                "failed_at": crate::render::format_iso8601(d.failed_at_ms),
                            });
                            let _ = writeln!(out, "{j}");
                        } else {
                            let status = d.last_status.map_or("-".to_owned(), |s| s.to_string());
                            let _ = writeln!(
                                out,
                                "{:>6}  {}  {} → {}  {}  attempts {}  status {status}\n        {}",
                                d.id,
                                crate::render::format_readable(d.failed_at_ms),
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
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Deadletters::Replay { id, all: _, target } => {
            if let Err(c) = check_target(&target) {
                return c;
            }
            match store.apply(crate::store::Op::Replay { id, target }).await {
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
        Deadletters::Purge { older_than } => {
            let age = match older_than.as_deref().map(crate::config::parse_duration) {
                None => std::time::Duration::ZERO,
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    eprintln!(
                        "error: --older-than: {e}\n  hint: durations look like `30m`, `24h` or `7d`"
                    );
                    return ExitCode::from(2);
                }
            };
            let before_ms =
                crate::now_ms() - age.as_millis() as i64 + i64::from(older_than.is_none());
            match store.apply(crate::store::Op::PurgeDead { before_ms }).await {
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
    wait_for_signal(&running.reload_handle()).await;
    tracing::info!("signal received; shutting down");
    shutdown.cancel();
    running.finished().await;
    Ok(())
}

/// Returns on SIGTERM or SIGINT; reloads the configuration on SIGHUP.
async fn wait_for_signal(reload: &crate::reload::ReloadHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = int.recv() => return,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    // The outcome is logged by the reload itself.
                    let _ = reload.reload().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reload;
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

/// Reads and checks an event file (or stdin); on failure prints why and
/// gives the exit code: 2 when it cannot be read, 1 when it is not an event.
fn load_event(path: &Path) -> Result<Event, ExitCode> {
    let bytes = read_event(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    Event::parse(&bytes, crate::now_ms()).map_err(|e| {
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

fn render(relay: &Relay, path: &Path, as_json: bool) -> ExitCode {
    let event = match load_event(path) {
        Ok(e) => e,
        Err(code) => return code,
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
