//! Test doubles for the delivery targets: real HTTP servers on 127.0.0.1:0,
//! running in-process on the test's tokio runtime, that answer like Discord,
//! Slack or a generic webhook receiver (research: `targets.md` §1.4, §1.5,
//! §2.1–2.3, §3).
//!
//! Every request is recorded (also the rejected and the programmed ones) with
//! the status the fake answered. The answer is decided when the request
//! arrives (rate windows, programmed answers), then the optional delay is
//! slept, then the answer is sent. So a request the client gave up on while
//! the fake was "slow" is still recorded, with the status it would have got:
//! like a real server that processed it but answered too late.
//!
//! Precedence for each request: `fail_next` queue, then `always`, then the
//! kind's normal behaviour. Programmed answers carry only the headers given
//! (plus a guessed `Content-Type`) and do not count against the rate limit.
//!
//! Rate windows are fixed windows per webhook (Discord: per `<id>/<token>`,
//! whether the path is versioned or not; Slack: per path): a window starts at
//! the first request after the previous window ended and admits `limit`
//! requests. Like Discord, every normal request counts, also those rejected
//! with 400/404/405. Windows use `tokio::time::Instant`.
//!
//! Files: this one (the server, the record, programmed answers, the
//! webhook kind), `discord` and `slack` (how each of those kinds answers a
//! normal request), `tests` (the fakes' own tests). The thread fakes are
//! stateful worlds behind the same server ([`Responder`]): `discord_api`
//! ([`FakeDiscord`]: forum webhooks and bot REST) and `slack_api`
//! ([`FakeSlackApi`]: `chat.postMessage`), each with its own tests
//! (`discord_api_tests`, `slack_api_tests`). `discord_gateway`
//! ([`FakeGateway`]) is a WebSocket server speaking Discord's Gateway, with
//! Get Gateway Bot on a server of this kind beside it.

#![allow(dead_code)]

mod crisp_api;
mod discord;
mod discord_api;
#[cfg(test)]
mod discord_api_tests;
mod discord_gateway;
mod slack;
mod slack_api;
#[cfg(test)]
mod slack_api_tests;
#[cfg(test)]
mod tests;

// For the thread tests; unused until they land.
#[allow(unused_imports)]
pub use crisp_api::FakeCrisp;
#[allow(unused_imports)]
pub use discord_api::{DiscordMessage, DiscordThread, FakeDiscord};
#[allow(unused_imports)]
pub use discord_gateway::{FakeGateway, GATEWAY_BOT_USER_ID, PERSON_USER_ID};
#[allow(unused_imports)]
pub use slack_api::{FakeSlackApi, SlackMessage};

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use discord::discord;
use slack::slack;

/// The `X-RateLimit-Bucket` every Discord answer carries.
pub const DISCORD_BUCKET: &str = "a06de1f3b2c7d8e9f0a1b2c3d4e5f607";

/// One request as the fake saw it, and what it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the request (head and body) had arrived.
    pub at: Instant,
    /// The status the fake answered (or was about to, if delayed).
    pub status: u16,
}

impl Received {
    /// The body as JSON; panics (with the body) if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "request body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::raw_http::header(&self.headers, name)
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of query parameter `name`, if present.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_param(self.query.as_deref(), name)
    }
}

#[derive(Clone)]
enum Kind {
    Discord {
        limit: u32,
        window: Duration,
    },
    Slack {
        limit: u32,
        window: Duration,
    },
    Webhook,
    /// A stateful fake (`discord_api`, `slack_api`).
    Custom(Arc<dyn Responder>),
}

/// How a stateful fake answers a normal request (one not answered by
/// `fail_next` or `always`). Called with the server's state locked, so the
/// answer and the record stay in arrival order; it may use the state's rate
/// windows ([`State::take`]).
trait Responder: Send + Sync + 'static {
    fn answer(&self, st: &mut State, rec: &Received) -> Canned;
}

#[derive(Debug, Clone)]
struct Canned {
    status: u16,
    body: String,
    headers: Vec<(String, String)>,
}

struct Window {
    start: Instant,
    used: u32,
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    fail_next: VecDeque<Canned>,
    always: Option<Canned>,
    delay: Duration,
    windows: HashMap<String, Window>,
    next_message_id: u64,
}

struct Shared {
    kind: Kind,
    state: Mutex<State>,
}

/// The outcome of taking a slot in a fixed window.
struct Quota {
    limit: u32,
    remaining: u32,
    /// Time until the current window ends.
    reset_after: Duration,
    allowed: bool,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn take(&mut self, key: &str, limit: u32, window: Duration, now: Instant) -> Quota {
        let w = self.windows.entry(key.to_string()).or_insert(Window {
            start: now,
            used: 0,
        });
        if now >= w.start + window {
            w.start = now;
            w.used = 0;
        }
        let allowed = w.used < limit;
        if allowed {
            w.used += 1;
        }
        Quota {
            limit,
            remaining: limit - w.used,
            reset_after: (w.start + window).saturating_duration_since(now),
            allowed,
        }
    }
}

/// A fake target server; stops (listener and open connections) when dropped.
pub struct FakeServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    /// Discord-like Execute Webhook: `limit` requests per `window` per webhook.
    pub async fn discord(limit: u32, window: Duration) -> Self {
        Self::start(Kind::Discord { limit, window }).await
    }

    /// Slack-like incoming webhook: `limit` requests per `window` per path.
    pub async fn slack(limit: u32, window: Duration) -> Self {
        Self::start(Kind::Slack { limit, window }).await
    }

    /// Generic receiver: any method, 200 `application/json` `{}`.
    pub async fn webhook() -> Self {
        Self::start(Kind::Webhook).await
    }

    async fn start(kind: Kind) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            kind,
            state: Mutex::new(State {
                next_message_id: 1_300_000_000_000_000_000,
                ..State::default()
            }),
        });
        let server = shared.clone();
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every
            // connection task too.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let shared = server.clone();
                        conns.spawn(async move {
                            let svc = service_fn(move |req| {
                                let shared = shared.clone();
                                async move { Ok::<_, Infallible>(handle(shared, req).await) }
                            });
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Self { addr, shared, task }
    }

    /// `http://{addr}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn discord_url(&self) -> String {
        self.url("/api/webhooks/123456/fake-token")
    }

    pub fn slack_url(&self) -> String {
        self.url("/services/T000/B000/fake-secret")
    }

    /// Every request, in arrival order, including rejected ones.
    pub fn received(&self) -> Vec<Received> {
        self.shared.state().received.clone()
    }

    /// Only the requests answered 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.shared
            .state()
            .received
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .cloned()
            .collect()
    }

    pub fn count_status(&self, status: u16) -> usize {
        self.shared
            .state()
            .received
            .iter()
            .filter(|r| r.status == status)
            .count()
    }

    /// The next `n` requests get this answer (after any already queued).
    /// Without a `Content-Type` in `headers`, one is guessed from `body`.
    pub fn fail_next(&self, n: usize, status: u16, body: &str, headers: &[(&str, &str)]) {
        let canned = canned(status, body, headers);
        let mut st = self.shared.state();
        st.fail_next.extend(std::iter::repeat_n(canned, n));
    }

    /// Every request from now on gets this answer (after the `fail_next`
    /// queue); `clear()` undoes it.
    pub fn always(&self, status: u16, body: &str) {
        self.shared.state().always = Some(canned(status, body, &[]));
    }

    /// Drops the `fail_next` queue, `always` and the delay (not the record
    /// nor the rate windows).
    pub fn clear(&self) {
        let mut st = self.shared.state();
        st.fail_next.clear();
        st.always = None;
        st.delay = Duration::ZERO;
    }

    /// Sleeps `d` before answering each request (decided on arrival).
    pub fn set_delay(&self, d: Duration) {
        self.shared.state().delay = d;
    }

    /// Polls until at least `n` requests were accepted, or panics after
    /// `timeout` (wall clock) with what was received.
    pub async fn wait_for_accepted(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let accepted = self.accepted();
            if accepted.len() >= n {
                return accepted;
            }
            if std::time::Instant::now() >= deadline {
                let summary: Vec<String> = self
                    .received()
                    .iter()
                    .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
                    .collect();
                panic!(
                    "expected {n} accepted requests within {timeout:?}, got {}; received:\n{}",
                    accepted.len(),
                    summary.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn canned(status: u16, body: &str, headers: &[(&str, &str)]) -> Canned {
    let mut headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        let t = body.trim_start();
        let ct = if t.starts_with('{') || t.starts_with('[') {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        headers.push(("content-type".into(), ct.into()));
    }
    Canned {
        status,
        body: body.to_string(),
        headers,
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let rec = Received {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        at: Instant::now(),
        status: 0,
    };
    let (answer, delay) = {
        let mut st = shared.state();
        let answer = if let Some(c) = st.fail_next.pop_front() {
            c
        } else if let Some(c) = st.always.clone() {
            c
        } else {
            match &shared.kind {
                Kind::Discord { limit, window } => discord(&mut st, &rec, *limit, *window),
                Kind::Slack { limit, window } => slack(&mut st, &rec, *limit, *window),
                Kind::Webhook => canned(200, "{}", &[]),
                Kind::Custom(r) => r.answer(&mut st, &rec),
            }
        };
        let mut rec = rec;
        rec.status = answer.status;
        st.received.push(rec);
        (answer, st.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut resp = Response::new(Full::new(Bytes::from(answer.body)));
    *resp.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::IM_A_TEAPOT);
    for (k, v) in &answer.headers {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| v.to_string())
    })
}

fn is_json(rec: &Received) -> bool {
    rec.header("content-type").is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/json")
    })
}
