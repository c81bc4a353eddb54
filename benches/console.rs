//! The console's page-load bench: `cargo bench --bench console`.
//!
//! Fills a SQLite store in a temporary directory with 10,000 deliveries
//! (through the library's `SqliteStore`: 9,800 delivered, 200 dead, each
//! with its attempt), starts the release `crisp-relay` binary cargo built
//! for this bench on that store with an admin token, and times `GET` of
//! `/ui/`, `/ui/deliveries`, `/ui/deadletters` and `/api/v1/deliveries`,
//! 200 requests each on one keep-alive connection, with `/healthz` on the
//! same listener as the same-run baseline. Prints a table and writes JSON
//! to `target/console-bench.json`. The goal: every page p99 < 100 ms.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

use crisp_relay::clock::Clock;
use crisp_relay::store::{Accepted, NewDelivery, NewEvent, Op, SqliteStore, Store};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const DELIVERIES: i64 = 10_000;
const DEAD: i64 = 200;
const REQUESTS: usize = 200;
const TOKEN: &str = "console-bench-token-3c9e1f7a";
const PATHS: [&str; 5] = [
    "/healthz",
    "/ui/",
    "/ui/deliveries",
    "/ui/deadletters",
    "/api/v1/deliveries",
];

/// Kills the relay when dropped.
struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn fill(db: &std::path::Path) -> Res<()> {
    let store = std::sync::Arc::new(SqliteStore::open(db, 1024, Clock::system()).await?);
    let t0 = Clock::system().now_ms() - 3_600_000;
    let targets = ["hook", "chat"];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..DELIVERIES {
        let store = store.clone();
        tasks.spawn(async move {
            let event = NewEvent {
                received_at_ms: t0 + i,
                website_id: "bench-site".into(),
                name: if i % 3 == 0 { "message:updated" } else { "message:send" }.into(),
                timestamp_ms: t0 + i,
                body: format!(
                    r#"{{"website_id":"bench-site","event":"message:send","data":{{"session_id":"s{}","content":"hello {i}"}}}}"#,
                    i % 500
                ),
                conversation: Some(format!("bench-site/s{}", i % 500)),
                dedupe: None,
            };
            let d = NewDelivery {
                route: "all".into(),
                target: targets[(i % 2) as usize].into(),
                template: None,
            };
            store.accept(event, vec![d]).await.map(|a| matches!(a, Accepted::New(_)))
        });
        if tasks.len() >= 512 {
            tasks.join_next().await.expect("a task")??;
        }
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let rows = store.deliveries().await?;
    let mut pending = Vec::new();
    for (n, r) in rows.iter().enumerate() {
        let at_ms = t0 + n as i64 + 50;
        let op = if (n as i64) < DEAD {
            Op::Dead {
                id: r.id,
                attempts: 1,
                status: Some(400),
                error: "HTTP 400: bad request".into(),
                at_ms,
                latency_ms: Some(12),
            }
        } else {
            Op::Delivered {
                id: r.id,
                attempts: 1,
                status: Some(200),
                at_ms,
                latency_ms: Some(8),
            }
        };
        pending.push(store.apply_later(op).await?);
        if pending.len() >= 512 {
            for c in pending.drain(..) {
                c.wait().await?;
            }
        }
    }
    for c in pending {
        c.wait().await?;
    }
    store.close().await;
    if rows.len() as i64 != DELIVERIES {
        return Err(format!("the store holds {} deliveries", rows.len()).into());
    }
    Ok(())
}

async fn start(dir: &std::path::Path) -> Res<(Relay, SocketAddr)> {
    let ingest = free_port()?;
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    // Nothing is pending: the unroutable target URL is never called.
    let config = format!(
        "server: {{listen: \"127.0.0.1:{ingest}\", keys: [\"bench-key\"]}}\n\
         admin: {{listen: \"{admin}\", token: \"${{CRISP_RELAY_ADMIN_TOKEN}}\"}}\n\
         store: {{path: data/relay.db}}\n\
         targets:\n  hook: {{kind: webhook, url: \"http://127.0.0.1:9/hook\"}}\n  \
         chat: {{kind: webhook, url: \"http://127.0.0.1:9/chat\"}}\n\
         routes:\n  - {{name: all, to: [hook, chat]}}\n"
    );
    std::fs::write(dir.join("relay.yaml"), config)?;
    let child = Command::new(env!("CARGO_BIN_EXE_crisp-relay"))
        .args(["serve", "-c"])
        .arg(dir.join("relay.yaml"))
        .current_dir(dir)
        .env("CRISP_RELAY_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let relay = Relay(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(admin).await.is_err() {
        if Instant::now() > deadline {
            return Err("the relay did not listen within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((relay, admin))
}

/// Times `REQUESTS` GETs of `path` on one keep-alive connection (after 5
/// unmeasured ones): sorted milliseconds.
async fn time_path(admin: SocketAddr, path: &str) -> Res<(Vec<f64>, usize)> {
    let stream = tokio::net::TcpStream::connect(admin).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut ms = Vec::with_capacity(REQUESTS);
    let mut bytes = 0;
    for i in 0..REQUESTS + 5 {
        sender.ready().await?;
        let req = Request::get(path)
            .header("host", admin.to_string())
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::new()))?;
        let started = Instant::now();
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        let took = started.elapsed().as_secs_f64() * 1000.0;
        if status != 200 {
            return Err(format!("{path}: HTTP {status}").into());
        }
        bytes = body.len();
        if i >= 5 {
            ms.push(took);
        }
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms, bytes))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    // `cargo bench` passes `--bench`; nothing else is read.
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("data"))?;
    std::fs::create_dir_all(dir.path().join("templates"))?;
    let filling = Instant::now();
    fill(&dir.path().join("data/relay.db")).await?;
    println!(
        "console bench: {DELIVERIES} deliveries ({DEAD} dead) written in {:.1} s",
        filling.elapsed().as_secs_f64()
    );
    let (_relay, admin) = start(dir.path()).await?;
    let mut rows = Vec::new();
    for path in PATHS {
        let (ms, bytes) = time_path(admin, path).await?;
        rows.push((path, pct(&ms, 0.5), pct(&ms, 0.99), bytes));
    }
    let (base50, base99) = (rows[0].1, rows[0].2);
    println!("\n| GET | p50 ms | p99 ms | p50 / healthz | bytes |");
    println!("|---|---:|---:|---:|---:|");
    for (path, p50, p99, bytes) in &rows {
        println!(
            "| {path} | {p50:.2} | {p99:.2} | {:.1}× | {bytes} |",
            p50 / base50.max(1e-6)
        );
    }
    let json = serde_json::json!({
        "deliveries": DELIVERIES,
        "dead": DEAD,
        "requests_per_path": REQUESTS,
        "healthz": {"p50_ms": base50, "p99_ms": base99},
        "paths": rows.iter().map(|(path, p50, p99, bytes)| serde_json::json!({
            "path": path, "p50_ms": p50, "p99_ms": p99,
            "ratio_p50_to_healthz": p50 / base50.max(1e-6), "bytes": bytes,
        })).collect::<Vec<_>>(),
        "goal_p99_ms": 100,
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-bench.json");
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    println!("\nJSON written to {}", out.display());
    let slow: Vec<_> = rows[1..].iter().filter(|r| r.2 >= 100.0).collect();
    if !slow.is_empty() {
        println!("over the 100 ms goal at p99: {slow:?}");
    }
    Ok(())
}
