//! The relay under test: its config (routes, target, template), starting it
//! in a fresh directory until `/readyz` answers, stopping it with SIGTERM,
//! reading its admin endpoint; and the guard that kills a child process
//! (relay or baseline) when dropped.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;

use crate::drive::Conn;
use crate::sink::Sink;
use crate::{KEY, Res};

pub struct Proc {
    pub child: Child,
    pub _dir: Option<tempfile::TempDir>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> Res<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub struct RelaySetup {
    /// Routes before the catch-all.
    pub filler_routes: usize,
    pub target: String,
    /// A template every route names, written as `templates/bench.<file>`:
    /// `(file suffix, content)`. Discord targets need one.
    pub template: Option<(&'static str, &'static str)>,
}

/// A Discord message that carries the bench tag where the sink finds it.
pub const DISCORD_TEMPLATE: (&str, &str) = (
    "discord.json.hbs",
    r#"{"content": "{{event}}: {{data.content}}", "bench": "{{data.bench}}"}"#,
);

/// Routes that a real config with many rules might hold: most pinned to an
/// event name with a field condition that the bench's events do not meet,
/// a tenth on other websites (not indexable by event name).
pub fn filler_routes(n: usize) -> String {
    const EVENTS: &[&str] = &[
        "message:send",
        "message:received",
        "message:updated",
        "message:notify:unread:send",
        "session:set_email",
        "session:set_state",
        "session:set_data",
        "session:removed",
        "people:profile:created",
        "people:profile:updated",
        "campaign:progress",
        "status:health:changed",
        "website:users:available",
        "bucket:url:upload:generated",
        "call:request:initiated",
    ];
    let mut out = String::new();
    for i in 0..n {
        if i % 10 == 9 {
            out.push_str(&format!(
                "  - {{name: r{i}, match: {{website_id: \"site-{i}\", data.origin: {{regex: \"^urn:bench:{i}$\"}}}}, to: [sink]}}\n"
            ));
        } else {
            let ev = EVENTS[i % EVENTS.len()];
            out.push_str(&format!(
                "  - {{name: r{i}, match: {{event: \"{ev}\", data.user.nickname: \"bench-user-{i}\"}}, to: [sink]}}\n"
            ));
        }
    }
    out
}

pub struct RelayProc {
    pub proc: Proc,
    pub ingest: SocketAddr,
    pub admin: SocketAddr,
}

impl RelayProc {
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.proc.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.proc.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The relay binary: `CRISP_RELAY_BENCH_BIN` when set (another build, such
/// as an older release, measured with this harness), else the one cargo
/// built for this bench.
pub fn relay_binary() -> PathBuf {
    match std::env::var_os(BIN_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_crisp-relay")),
    }
}

/// Names a binary to run instead of the one cargo built.
pub const BIN_ENV: &str = "CRISP_RELAY_BENCH_BIN";

/// Starts the relay in a fresh directory and waits until `/readyz` answers
/// 200. Returns it and the time from spawn to ready.
pub async fn start_relay(setup: &RelaySetup) -> Res<(RelayProc, Duration)> {
    let dir = tempfile::tempdir()?;
    let (mut relay, took) = start_relay_in(dir.path(), setup, &Start::default()).await?;
    relay.proc._dir = Some(dir);
    Ok((relay, took))
}

/// How [`start_relay_in`] starts the relay, past its routes and target.
pub struct Start<'a> {
    /// The `store:` section.
    pub store: &'a str,
    /// Where its log (JSON lines on stderr) goes; nowhere when `None`.
    pub log: Option<&'a Path>,
    /// How long it may take to answer `/readyz`.
    pub ready_within: Duration,
    /// `true`: wait until `/readyz` answers 200; `false`: only until the
    /// ingest port accepts connections (events sent then wait in its
    /// backlog, as a webhook arriving while the relay starts would).
    pub ready: bool,
    /// Appended to the config as written: top-level sections past the
    /// routes (`crisp:`, say).
    pub extra: &'a str,
}

impl Default for Start<'_> {
    fn default() -> Self {
        Self {
            store: "{path: data/relay.db}",
            log: None,
            ready_within: Duration::from_secs(30),
            ready: true,
            extra: "",
        }
    }
}

/// Starts the relay in `dir` (which it may already have used: its store
/// stays) and waits until `/readyz` answers 200 (or, as `start` says, its
/// ingest port accepts connections). Returns it and the time from spawn to
/// then. The caller keeps `dir`.
pub async fn start_relay_in(
    dir: &Path,
    setup: &RelaySetup,
    start: &Start<'_>,
) -> Res<(RelayProc, Duration)> {
    std::fs::create_dir_all(dir.join("templates"))?;
    let ingest: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let config = format!(
        "server: {{listen: \"{ingest}\", keys: [\"{KEY}\"], max_connections: 1024}}\n\
         admin: {{listen: \"{admin}\"}}\n\
         store: {store}\n\
         targets:\n  sink: {target}\n\
         routes:\n{filler}  - {{name: all, to: [sink]}}\n{extra}",
        store = start.store,
        extra = start.extra,
        target = setup.target,
        filler = filler_routes(setup.filler_routes),
    );
    let config = match setup.template {
        Some((suffix, content)) => {
            std::fs::write(
                dir.join("templates").join(format!("bench.{suffix}")),
                content,
            )?;
            config.replace("to: [sink]}", "to: [sink], template: bench}")
        }
        None => config,
    };
    std::fs::write(dir.join("relay.yaml"), config)?;
    let check = Command::new(relay_binary())
        .args(["check", "-c"])
        .arg(dir.join("relay.yaml"))
        .output()?;
    if !check.status.success() {
        return Err(format!(
            "the bench config does not check: {}",
            String::from_utf8_lossy(&check.stderr)
        )
        .into());
    }
    let stderr = match start.log {
        Some(path) => Stdio::from(std::fs::File::create(path)?),
        None => Stdio::null(),
    };
    let started = Instant::now();
    let child = Command::new(relay_binary())
        .args(["serve", "--log-format", "json", "-c"])
        .arg(dir.join("relay.yaml"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()?;
    let relay = RelayProc {
        proc: Proc { child, _dir: None },
        ingest,
        admin,
    };
    let deadline = started + start.ready_within;
    loop {
        if start.ready {
            if let Ok((200, _)) = http_get(admin, "/readyz").await {
                break;
            }
        } else if tokio::net::TcpStream::connect(ingest).await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the relay did not {} within {} s",
                if start.ready {
                    "become ready"
                } else {
                    "listen"
                },
                start.ready_within.as_secs()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok((relay, started.elapsed()))
}

/// Pending deliveries according to the relay's own gauge.
pub async fn queue_depth(admin: SocketAddr) -> Option<u64> {
    let (_, text) = http_get(admin, "/metrics").await.ok()?;
    text.lines()
        .filter(|l| l.starts_with("crisp_relay_queue_depth{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .reduce(|a, b| a + b)
}

pub async fn dead_letters(admin: SocketAddr) -> Option<u64> {
    let (_, text) = http_get(admin, "/metrics").await.ok()?;
    text.lines()
        .filter(|l| l.starts_with("crisp_relay_dead_letters{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .reduce(|a, b| a + b)
}

pub async fn http_get(addr: SocketAddr, path: &str) -> Res<(u16, String)> {
    let mut conn = Conn::open(addr).await?;
    let req = Request::get(path)
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::new()))?;
    let resp = conn.sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

pub fn webhook_target(sink: &Sink) -> String {
    format!(
        "{{kind: webhook, url: \"http://{}/hook\", timeout: 5s}}",
        sink.addr
    )
}
