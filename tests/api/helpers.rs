//! Helpers that read like a user's actions: write a config, start the relay,
//! post an event, kill it, look in the store.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(unused_imports)] // not every test binary that includes this module uses it
pub use crisp_relay::store::Store;

pub const KEY: &str = "test-key-0123456789";

/// The crate root (for shipped templates, relay.yaml and fixtures).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The sample Crisp events shipped with the tests.
pub fn fixtures_dir() -> PathBuf {
    root().join("tests/fixtures/crisp-events")
}

/// A sample event as a new message: when it has a `data.fingerprint`
/// (Crisp's message id), each call gets a fingerprint of its own, as two
/// messages would — the relay answers a resend of the same fingerprint as a
/// duplicate. [`fixture_as_is`] gives the file's bytes unchanged.
pub fn fixture(name: &str) -> Vec<u8> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let bytes = fixture_as_is(name);
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    match v.pointer_mut("/data/fingerprint") {
        Some(f) => {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *f = serde_json::Value::from(900_000_000_000_000 + n);
            serde_json::to_vec(&v).unwrap()
        }
        None => bytes,
    }
}

/// A sample event file's bytes, unchanged (a resend of it is a duplicate).
pub fn fixture_as_is(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// Every sample event file name, sorted.
pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_crisp-relay")
}

/// A scratch directory with a config file (and the shipped templates copied
/// in), removed when dropped.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    /// `config` is the YAML text; the shipped `templates/` is copied beside it.
    pub fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("relay.yaml"), config).unwrap();
        let templates = dir.path().join("templates");
        std::fs::create_dir_all(&templates).unwrap();
        for entry in std::fs::read_dir(root().join("templates")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), templates.join(entry.file_name())).unwrap();
        }
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("relay.yaml")
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(p, text).unwrap();
    }

    /// Runs `crisp-relay <args> -c relay.yaml` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_env(args, &[])
    }

    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.run_with_stdin(args, env, None)
    }

    /// Runs the command with `stdin` piped in (closed after writing).
    pub fn run_with_stdin(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&[u8]>,
    ) -> Output {
        use std::io::Write;
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .arg("-c")
            .arg(self.config_path())
            .env_remove("RUST_LOG")
            .env("CRISP_HOOK_KEY", KEY)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(bytes).unwrap();
        }
        child.wait_with_output().unwrap()
    }
}

/// A minimal config with every listener on 127.0.0.1:0 and the store in
/// the work dir; `extra` is appended (targets and routes).
pub fn config_with(extra: &str) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:0\n  path: /crisp/hooks\n  keys: [\"${{CRISP_HOOK_KEY}}\"]\n  max_body: 64KiB\n\
         admin:\n  listen: 127.0.0.1:0\nstore:\n  path: data/relay.db\ntemplates: templates\n{extra}"
    )
}

/// The default test config: a console target that receives every event.
pub fn default_config() -> String {
    config_with("targets:\n  console: {kind: stdout}\nroutes:\n  - name: all\n    to: [console]\n")
}

/// A running relay process.
pub struct TestApp {
    pub work: Workdir,
    pub child: Child,
    pub ingest: SocketAddr,
    pub admin: SocketAddr,
    pub client: reqwest::Client,
    pub logs: Arc<Mutex<Vec<String>>>,
    /// The relay's standard output, line by line (what a `stdout` target
    /// prints).
    pub stdout: Arc<Mutex<Vec<String>>>,
}

impl TestApp {
    /// Starts the relay with the default test config.
    pub async fn spawn() -> Self {
        Self::spawn_with(&default_config()).await
    }

    pub async fn spawn_with(config: &str) -> Self {
        Self::spawn_in(Workdir::new(config), &[]).await
    }

    /// Starts `crisp-relay serve` in `work` and waits until both listeners
    /// are up (it logs their addresses).
    pub async fn spawn_in(work: Workdir, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .args(["--log-format", "text"])
            .arg("-c")
            .arg(work.config_path())
            .env("CRISP_HOOK_KEY", KEY)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let out_pipe = child.stdout.take().unwrap();
        let out_sink = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
                out_sink.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let mut ingest = None;
        let mut admin = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while ingest.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "relay did not start; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                )
            });
            let addr: SocketAddr = line
                .split("addr=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
            if line.contains("\"ingest\"") {
                ingest = Some(addr);
            } else if line.contains("\"admin\"") {
                admin = Some(addr);
            }
        }
        // reqwest is built without a default TLS crypto provider (the relay
        // configures its own); tests install ring's for their client.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            work,
            child,
            ingest: ingest.unwrap(),
            admin: admin.unwrap(),
            client,
            logs,
            stdout,
        }
    }

    pub fn hook_url(&self, key: &str) -> String {
        format!("http://{}/crisp/hooks?key={key}", self.ingest)
    }

    /// POSTs `body` as Crisp does (JSON, the right key).
    pub async fn post_event(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.hook_url(KEY))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await
            .unwrap()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Everything the relay printed to standard output so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// Kills the relay if it still runs (SIGKILL; a no-op after `kill` or
    /// `terminate`) and hands back its work dir, to start it again on the
    /// same store with `TestApp::spawn_in`.
    pub fn into_work(mut self) -> Workdir {
        self.kill();
        let placeholder = Workdir {
            dir: tempfile::tempdir().unwrap(),
        };
        std::mem::replace(&mut self.work, placeholder)
    }

    pub fn store_path(&self) -> PathBuf {
        self.work.path().join("data/relay.db")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens a store file (after the relay stopped) to look inside.
pub async fn open_store(path: &Path) -> crisp_relay::store::SqliteStore {
    crisp_relay::store::SqliteStore::open(path, 16, crisp_relay::clock::Clock::system())
        .await
        .unwrap()
}

/// A visitor's text message (`message:send` from `user`) whose text is
/// `msg <seq>`, shaped like Crisp's (see `message_send_text_basic.json`).
pub fn message(seq: usize) -> String {
    serde_json::json!({
        "website_id": "3f9d2b7e-61c4-4a8e-9b1f-0d5e7a2c8b46",
        "event": "message:send",
        "data": {
            "website_id": "3f9d2b7e-61c4-4a8e-9b1f-0d5e7a2c8b46",
            "session_id": "session_9e2a4c71-3b5d-4f86-a1c9-7d0e2b8f6a13",
            "type": "text",
            "content": format!("msg {seq}"),
            "from": "user",
            "origin": "chat",
            "user": {"nickname": "visitor493603"},
        },
        "timestamp": 1_748_952_083_417_i64,
    })
    .to_string()
}

/// The `<seq>` of the `msg <seq>` in `text`.
pub fn seq_in(text: &str) -> usize {
    let at = text
        .find("msg ")
        .unwrap_or_else(|| panic!("no `msg N` in {text:?}"));
    let digits: String = text[at + 4..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after `msg ` in {text:?}"))
}

/// The relay run in this process through the library, on listeners the
/// test binds (127.0.0.1:0), with the parts a test injects: its transport,
/// its clock. For tests that need what a process cannot offer (a
/// destination that panics, a clock off the system's); the rest drive the
/// real binary ([`TestApp`]).
pub struct LibApp {
    pub work: Workdir,
    pub running: Option<crisp_relay::Running>,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub ingest: SocketAddr,
    pub admin: SocketAddr,
    pub client: reqwest::Client,
}

impl LibApp {
    /// Loads `work`'s config (with the test key) and starts the relay.
    pub async fn start(
        work: Workdir,
        transport: Arc<dyn crisp_relay::delivery::transport::Transport>,
        clock: crisp_relay::clock::Clock,
    ) -> Self {
        Self::start_on(work, transport, clock, None).await
    }

    /// [`LibApp::start`] on a store of the test's (`None`: the config's).
    pub async fn start_on(
        work: Workdir,
        transport: Arc<dyn crisp_relay::delivery::transport::Transport>,
        clock: crisp_relay::clock::Clock,
        store: Option<Arc<dyn Store>>,
    ) -> Self {
        let relay = crisp_relay::Relay::load_with_env(&work.config_path(), &|k| {
            (k == "CRISP_HOOK_KEY").then(|| KEY.to_owned())
        })
        .unwrap_or_else(|e| panic!("config: {e}"));
        let listeners = crisp_relay::Listeners {
            ingest: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            admin: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        };
        let parts = crisp_relay::Parts {
            transport,
            clock,
            store,
            seed: Some(7),
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let running = crisp_relay::start_with(relay, listeners, parts, shutdown.clone())
            .await
            .unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            ingest: running.ingest_addr,
            admin: running.admin_addr.unwrap(),
            running: Some(running),
            shutdown,
            work,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    pub async fn post_event(&self, body: String) -> u16 {
        self.client
            .post(format!("http://{}/crisp/hooks?key={KEY}", self.ingest))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub async fn admin_text(&self, path: &str) -> String {
        self.client
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn running(&self) -> &crisp_relay::Running {
        self.running.as_ref().unwrap()
    }

    /// Shuts the relay down and waits until it has.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(r) = self.running.take() {
            r.finished().await;
        }
    }
}

/// The value of one series in a Prometheus text exposition, or `None` when
/// the series is absent (a test must not read a missing series as 0).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l[series.len()..].trim().parse().ok())
}
