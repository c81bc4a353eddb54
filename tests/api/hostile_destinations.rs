//! Hostile destinations: after any answer a destination can give, the next
//! event to that target is still delivered.
//!
//! Each case starts its own relay with one target (a generic webhook, or a
//! Discord webhook for the rate-limit cases, since Discord has its own
//! limiter defaults) pointing at a raw TCP fake. The fake answers the first
//! connection with the hostile behaviour under test and every later one with
//! `200 {}`. The case posts `msg 1`, waits for the fake to see it, posts
//! `msg 2`, and passes once the fake has answered `200` to a request carrying
//! `msg 2`, with the relay still running. Hostile answers: absurd rate-limit
//! hints in bodies and headers (huge, negative, NaN, overflowing, far-future
//! and unparseable HTTP dates), huge and never-ending bodies, invalid header
//! bytes, a garbage status line, no answer at all, a closed connection.
//!
//! No case asserts how long anything took: `DEADLINE` only turns "never
//! delivered" into a failure, and a panic in the relay's log fails a case at
//! once. Every failing case is listed (with the relay's last log lines)
//! before the test fails.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::helpers::*;
use crate::raw_http::find;

/// How long a case may take to get `msg 2` delivered. Only a hang guard.
const DEADLINE: Duration = Duration::from_secs(20);

/// Cases (relay processes) running at once.
const AT_ONCE: usize = 8;

/// The retry policy every case uses; destination hints are capped at
/// `max_backoff`, so no wait exceeds a second.
const RETRY: &str = "retry: {initial_backoff: 100ms, max_backoff: 1s, max_attempts: 50}";

/// What the fake does with its first connection.
#[derive(Clone)]
enum Hostile {
    /// Reads the request, writes these bytes, closes.
    Raw(Vec<u8>),
    /// Reads the request, answers `status` with a body of this many bytes
    /// (Content-Length given), written in full unless the relay hangs up.
    Huge(u16, usize),
    /// Reads the request, answers 200 with a chunked body that never ends
    /// (1 KiB every 50 ms until the relay hangs up).
    Endless,
    /// Reads the request and never answers (holds the socket until the
    /// relay closes it).
    Silent,
    /// Accepts and closes at once, reading nothing.
    Close,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Webhook,
    Discord,
}

struct Case {
    name: String,
    kind: Kind,
    hostile: Hostile,
}

/// A raw HTTP/1.1 answer: `status` is everything after `HTTP/1.1 `.
fn answer(status: &str, headers: &[&[u8]], body: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    )
    .into_bytes();
    for h in headers {
        out.extend_from_slice(h);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

const S429: &str = "429 Too Many Requests";

/// The rate-limit cases, run against both kinds of target.
fn hint_cases() -> Vec<(String, Vec<u8>)> {
    let mut cases = Vec::new();
    for v in [
        "1e30",
        "1e19",
        "-5",
        "1.7976931348623157e308",
        "\"NaN\"",
        "18446744073709551616",
    ] {
        let body = format!("{{\"retry_after\": {v}}}");
        cases.push((format!("429 body {body}"), answer(S429, &[], &body)));
    }
    for status in [S429, "503 Service Unavailable"] {
        for v in [
            "1e30",
            "1e19",
            "-1",
            "NaN",
            "inf",
            "99999999999999999999999",
            "abc",
            "",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Thu, 01 Jan 1970 00:00:00 GMT",
            "Sun, 06 Nov 99999999999999 08:49:37 GMT",
            "Sun, 99 Foo 1994 99:99:99 GMT",
        ] {
            let header = format!("Retry-After: {v}");
            cases.push((
                format!("{} {header:?}", &status[..3]),
                answer(status, &[header.as_bytes()], ""),
            ));
        }
    }
    // The limiter blocks the send after these. 1e19 s fits a Duration but
    // not an Instant; 1e12 s fits both (a wait, not a panic).
    for status in ["200 OK", S429] {
        for v in ["1e30", "-3", "NaN", "abc", "1e308", "1e19", "1e12"] {
            let reset = format!("X-RateLimit-Reset-After: {v}");
            cases.push((
                format!("{} remaining 0, {reset:?}", &status[..3]),
                answer(
                    status,
                    &[b"X-RateLimit-Remaining: 0", reset.as_bytes()],
                    "{}",
                ),
            ));
        }
    }
    for v in ["99999999999999999999", "-1"] {
        let remaining = format!("X-RateLimit-Remaining: {v}");
        cases.push((
            format!("200 {remaining:?}"),
            answer(
                "200 OK",
                &[remaining.as_bytes(), b"X-RateLimit-Reset-After: 1"],
                "{}",
            ),
        ));
    }
    cases
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (kind, label) in [(Kind::Webhook, "webhook"), (Kind::Discord, "discord")] {
        for (name, bytes) in hint_cases() {
            cases.push(Case {
                name: format!("{label}: {name}"),
                kind,
                hostile: Hostile::Raw(bytes),
            });
        }
    }
    let others = [
        ("200 with a 20 MiB body", Hostile::Huge(200, 20 << 20)),
        ("500 with a 20 MiB body", Hostile::Huge(500, 20 << 20)),
        ("200 with an endless chunked body", Hostile::Endless),
        (
            "200 with a header value \\xff\\xfe",
            Hostile::Raw(answer("200 OK", &[b"X-Junk: a\xff\xfeb"], "{}")),
        ),
        (
            "200 with a header value holding \\x01",
            Hostile::Raw(answer("200 OK", &[b"X-Junk: a\x01b"], "{}")),
        ),
        (
            "garbage status line",
            Hostile::Raw(answer("abc", &[], "{}")),
        ),
        ("never answers", Hostile::Silent),
        ("closes at once", Hostile::Close),
    ];
    for (name, hostile) in others {
        cases.push(Case {
            name: format!("webhook: {name}"),
            kind: Kind::Webhook,
            hostile,
        });
    }
    cases
}

/// What the fake saw.
#[derive(Default)]
struct Seen {
    /// Connections accepted; each carries one request (every answer
    /// closes), the first being the hostile one.
    connections: usize,
    /// The `msg N` of each request answered 200.
    delivered: Vec<usize>,
    /// How the hostile answer ended (sizes, times), for the summary.
    note: String,
}

/// The raw destination: a listener on 127.0.0.1:0, stopped when dropped.
struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    accept: JoinHandle<()>,
}

impl Fake {
    async fn start(hostile: Hostile) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = seen.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let first = {
                    let mut s = state.lock().unwrap();
                    s.connections += 1;
                    s.connections == 1
                };
                let hostile = first.then(|| hostile.clone());
                tokio::spawn(serve(stream, hostile, state.clone()));
            }
        });
        Self { addr, seen, accept }
    }

    fn delivered(&self, seq: usize) -> bool {
        self.seen.lock().unwrap().delivered.contains(&seq)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One connection: `hostile` for the first, else 200 `{}`.
async fn serve(mut stream: TcpStream, hostile: Option<Hostile>, seen: Arc<Mutex<Seen>>) {
    if matches!(hostile, Some(Hostile::Close)) {
        return;
    }
    let Some(body) = read_request(&mut stream).await else {
        return;
    };
    let note = match hostile {
        None => {
            if stream.write_all(&answer("200 OK", &[], "{}")).await.is_ok()
                && let Some(at) = find(&body, b"msg ")
            {
                let seq = seq_in(&String::from_utf8_lossy(&body[at..]));
                seen.lock().unwrap().delivered.push(seq);
            }
            return;
        }
        Some(Hostile::Raw(bytes)) => {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
            return;
        }
        Some(Hostile::Huge(status, len)) => {
            let head = format!(
                "HTTP/1.1 {status} Big\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let block = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < len {
                let n = block.len().min(len - sent);
                if stream.write_all(&block[..n]).await.is_err() {
                    break;
                }
                sent += n;
            }
            format!("wrote {} KiB of {} KiB", sent >> 10, len >> 10)
        }
        Some(Hostile::Endless) => {
            let start = Instant::now();
            let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            let chunk = format!("400\r\n{}\r\n", "x".repeat(1024));
            let mut sent = 0;
            let mut ok = stream.write_all(head.as_bytes()).await.is_ok();
            while ok {
                ok = stream.write_all(chunk.as_bytes()).await.is_ok();
                sent += usize::from(ok);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            format!(
                "relay hung up after {sent} KiB, {} ms",
                start.elapsed().as_millis()
            )
        }
        Some(Hostile::Silent) => {
            let start = Instant::now();
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            format!("relay hung up after {} ms", start.elapsed().as_millis())
        }
        Some(Hostile::Close) => unreachable!(),
    };
    seen.lock().unwrap().note = note;
}

/// Reads one request (head, then `Content-Length` bytes); its body, or
/// `None` if the connection ends first.
async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut need = None;
    loop {
        if need.is_none()
            && let Some(at) = find(&buf, b"\r\n\r\n")
        {
            let head = String::from_utf8_lossy(&buf[..at]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            need = Some((at + 4, len));
        }
        if let Some((start, len)) = need
            && buf.len() >= start + len
        {
            return Some(buf[start..start + len].to_vec());
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The relay's config: one target of `kind` at the fake, one route to it.
fn relay_config(kind: Kind, addr: SocketAddr) -> String {
    let (target, template) = match kind {
        Kind::Webhook => (format!("kind: webhook, url: \"http://{addr}/hook\""), ""),
        Kind::Discord => (
            format!("kind: discord, url: \"http://{addr}/api/webhooks/1/tok\""),
            "    template: visitor_message\n",
        ),
    };
    config_with(&format!(
        "targets:\n  dest: {{{target}, timeout: 2s, {RETRY}}}\n\
         routes:\n  - name: messages\n    match: {{event: \"message:send\"}}\n    to: [dest]\n{template}"
    ))
}

/// Runs one case: `Ok` with a summary, or `Err` with the reason and the
/// relay's last log lines.
async fn run_case(case: &Case) -> Result<String, String> {
    let fake = Fake::start(case.hostile.clone()).await;
    // No backtraces: a panic stays two lines in the log, and symbolizing
    // one would inflate the relay's peak memory.
    let env = [("RUST_BACKTRACE", "0")];
    let mut app = TestApp::spawn_in(Workdir::new(&relay_config(case.kind, fake.addr)), &env).await;
    let start = Instant::now();
    let outcome = async {
        post(&app, 1).await?;
        wait_for(&mut app, "the hostile first request", || {
            fake.seen.lock().unwrap().connections > 0
        })
        .await?;
        post(&app, 2).await?;
        wait_for(&mut app, "msg 2 answered 200", || fake.delivered(2)).await
    }
    .await;
    let note = std::mem::take(&mut fake.seen.lock().unwrap().note);
    let summary = format!(
        "{} ms, relay peak RSS {} KiB; {note}{}relay: {}",
        start.elapsed().as_millis(),
        peak_rss_kib(&app),
        if note.is_empty() { "" } else { "; " },
        verdict(&app)
    );
    match outcome {
        Ok(()) => Ok(summary),
        Err(reason) => {
            let logs = app.logs.lock().unwrap();
            let tail = logs[logs.len().saturating_sub(6)..].join("\n      ");
            Err(format!(
                "{reason} ({summary})\n    last log lines:\n      {tail}"
            ))
        }
    }
}

/// What the relay logged about the hostile attempt (delivery 1, attempt 1).
fn verdict(app: &TestApp) -> String {
    let logs = app.logs.lock().unwrap();
    let line = logs.iter().find(|l| l.contains("delivery=1 attempt=1}"));
    line.and_then(|l| l.split("crisp_relay::delivery: ").nth(1))
        .map_or_else(|| "-".into(), |v| v.chars().take(240).collect())
}

/// Posts `msg <seq>`; it must be accepted.
async fn post(app: &TestApp, seq: usize) -> Result<(), String> {
    let resp = app
        .client
        .post(app.hook_url(KEY))
        .header("content-type", "application/json")
        .body(message(seq))
        .send()
        .await
        .map_err(|e| format!("posting msg {seq}: {e}"))?;
    match resp.status().as_u16() {
        200 => Ok(()),
        s => Err(format!("posting msg {seq}: HTTP {s}")),
    }
}

/// Polls `cond` every 50 ms until it holds with the relay still running.
/// Fails at once if the relay panicked or exited, else at `DEADLINE`.
async fn wait_for(app: &mut TestApp, what: &str, cond: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let panic = {
            let logs = app.logs.lock().unwrap();
            let at = logs.iter().position(|l| l.contains("panicked at"));
            at.map(|i| logs[i..(i + 2).min(logs.len())].join(" "))
        };
        if let Some(panic) = panic {
            return Err(format!("relay panicked: {panic}"));
        }
        if let Ok(Some(status)) = app.child.try_wait() {
            return Err(format!("relay exited ({status}) waiting for {what}"));
        }
        if cond() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("no {what} within {DEADLINE:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The relay's peak resident memory (`VmHWM`), 0 if unreadable.
fn peak_rss_kib(app: &TestApp) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", app.child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

// Workers beyond the cores: `TestApp::spawn_in` blocks its thread while a
// relay starts, and the fakes must keep answering meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 10)]
async fn after_any_hostile_answer_the_next_event_is_still_delivered() {
    let slots = Arc::new(Semaphore::new(AT_ONCE));
    let mut set = JoinSet::new();
    for case in cases() {
        let slots = slots.clone();
        set.spawn(async move {
            let _slot = slots.acquire_owned().await.unwrap();
            let result = run_case(&case).await;
            (case.name, result)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = set.join_next().await {
        results.push(joined.expect("a case task panicked"));
    }
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let mut failed = Vec::new();
    for (name, result) in &results {
        match result {
            Ok(summary) => eprintln!("ok   {name}: {summary}"),
            Err(reason) => {
                eprintln!("FAIL {name}: {reason}");
                failed.push(format!("{name}: {reason}"));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        results.len(),
        failed.join("\n")
    );
}
