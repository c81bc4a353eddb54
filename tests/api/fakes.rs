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

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

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

#[derive(Debug, Clone, Copy)]
enum Kind {
    Discord { limit: u32, window: Duration },
    Slack { limit: u32, window: Duration },
    Webhook,
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
            match shared.kind {
                Kind::Discord { limit, window } => discord(&mut st, &rec, limit, window),
                Kind::Slack { limit, window } => slack(&mut st, &rec, limit, window),
                Kind::Webhook => canned(200, "{}", &[]),
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

/// `(id, token)` of a Discord webhook path, versioned or not.
fn discord_webhook(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/")?;
    let rest = match rest.strip_prefix("v10/") {
        Some(r) => r,
        None => rest,
    };
    let rest = rest.strip_prefix("webhooks/")?;
    let (id, token) = rest.split_once('/')?;
    let ok = !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && !token.is_empty()
        && !token.contains('/');
    ok.then_some((id, token))
}

fn json_answer(status: u16, body: Value, mut headers: Vec<(String, String)>) -> Canned {
    headers.push(("content-type".into(), "application/json".into()));
    Canned {
        status,
        body: body.to_string(),
        headers,
    }
}

fn discord(st: &mut State, rec: &Received, limit: u32, window: Duration) -> Canned {
    let hook = discord_webhook(&rec.path);
    let key = match hook {
        Some((id, token)) => format!("{id}/{token}"),
        None => rec.path.clone(),
    };
    let quota = st.take(&key, limit, window, rec.at);
    let reset_after = quota.reset_after.as_secs_f64();
    let reset_epoch = (SystemTime::now() + quota.reset_after)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut headers = vec![
        ("x-ratelimit-limit".to_string(), quota.limit.to_string()),
        (
            "x-ratelimit-remaining".to_string(),
            quota.remaining.to_string(),
        ),
        ("x-ratelimit-reset".to_string(), format!("{reset_epoch:.3}")),
        (
            "x-ratelimit-reset-after".to_string(),
            format!("{reset_after:.3}"),
        ),
        ("x-ratelimit-bucket".to_string(), DISCORD_BUCKET.to_string()),
    ];
    let Some((hook_id, _)) = hook else {
        return json_answer(
            404,
            json!({"message": "Unknown Webhook", "code": 10015}),
            headers,
        );
    };
    if !quota.allowed {
        headers.push((
            "retry-after".into(),
            reset_after.ceil().max(1.0).to_string(),
        ));
        headers.push(("x-ratelimit-scope".into(), "user".into()));
        headers.push(("content-type".into(), "application/json".into()));
        return Canned {
            status: 429,
            body: format!(
                "{{\"message\": \"You are being rate limited.\", \"retry_after\": {reset_after:.3}, \"global\": false}}"
            ),
            headers,
        };
    }
    if rec.method != "POST" {
        return json_answer(
            405,
            json!({"message": "405: Method Not Allowed", "code": 0}),
            headers,
        );
    }
    if !is_json(rec) {
        return json_answer(
            400,
            json!({"code": 50035, "message": "Invalid Form Body"}),
            headers,
        );
    }
    let Ok(msg) = serde_json::from_slice::<Value>(&rec.body) else {
        return json_answer(
            400,
            json!({"code": 50109, "message": "The request body contains invalid JSON."}),
            headers,
        );
    };
    let content = msg.get("content").and_then(Value::as_str).unwrap_or("");
    let embeds = msg
        .get("embeds")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let field_error = |field: &str, code: &str, message: &str| {
        json!({
            "code": 50035,
            "errors": {field: {"_errors": [{"code": code, "message": message}]}},
            "message": "Invalid Form Body",
        })
    };
    if content.trim().chars().count() > 2000 {
        return json_answer(
            400,
            field_error(
                "content",
                "BASE_TYPE_MAX_LENGTH",
                "Must be 2000 or fewer in length.",
            ),
            headers,
        );
    }
    if embeds.len() > 10 {
        return json_answer(
            400,
            field_error(
                "embeds",
                "BASE_TYPE_MAX_LENGTH",
                "Must be 10 or fewer in length.",
            ),
            headers,
        );
    }
    if content.trim().is_empty() && embeds.is_empty() {
        return json_answer(
            400,
            json!({"code": 50006, "message": "Cannot send an empty message"}),
            headers,
        );
    }
    let wait = query_param(rec.query.as_deref(), "wait")
        .is_some_and(|v| matches!(v.as_str(), "true" | "True" | "1"));
    if !wait {
        return Canned {
            status: 204,
            body: String::new(),
            headers,
        };
    }
    st.next_message_id += 1;
    let username = msg
        .get("username")
        .and_then(Value::as_str)
        .unwrap_or("Fake Webhook");
    json_answer(
        200,
        json!({
            "id": st.next_message_id.to_string(),
            "type": 0,
            "channel_id": "1",
            "content": content,
            "embeds": embeds,
            "author": {"bot": true, "id": hook_id, "username": username},
            "webhook_id": hook_id,
            "tts": false,
            "mention_everyone": false,
            "mentions": [],
            "attachments": [],
        }),
        headers,
    )
}

fn text_answer(status: u16, body: &str, mut headers: Vec<(String, String)>) -> Canned {
    headers.push(("content-type".into(), "text/plain; charset=utf-8".into()));
    Canned {
        status,
        body: body.to_string(),
        headers,
    }
}

fn slack(st: &mut State, rec: &Received, limit: u32, window: Duration) -> Canned {
    if !rec.path.starts_with("/services/") {
        return text_answer(404, "no_service", vec![]);
    }
    let quota = st.take(&rec.path, limit, window, rec.at);
    if !quota.allowed {
        let secs = quota.reset_after.as_secs_f64().ceil().max(1.0);
        return text_answer(
            429,
            "rate_limited",
            vec![("retry-after".into(), secs.to_string())],
        );
    }
    if rec.method != "POST" {
        return text_answer(405, "invalid_method", vec![]);
    }
    let msg = match serde_json::from_slice::<Value>(&rec.body) {
        Ok(v @ Value::Object(_)) if is_json(rec) => v,
        _ => return text_answer(400, "invalid_payload", vec![]),
    };
    let has_text = msg
        .get("text")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.trim().is_empty());
    let has_blocks = msg
        .get("blocks")
        .and_then(Value::as_array)
        .is_some_and(|b| !b.is_empty());
    if !has_text && !has_blocks {
        return text_answer(400, "no_text", vec![]);
    }
    text_answer(200, "ok", vec![])
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpStream;

    use super::*;
    use crate::raw_http::{http_post, http_request};

    const HOOK: &str = "/api/webhooks/123456/fake-token";
    const JSON: &str = "application/json";

    fn msg(content: &str) -> String {
        json!({"content": content}).to_string()
    }

    #[tokio::test]
    async fn discord_burst_over_quota_gets_429_with_retry_after() {
        let fake = FakeServer::discord(5, Duration::from_secs(2)).await;
        for i in 0..5 {
            let r = http_post(fake.addr, HOOK, JSON, &msg("hi")).await;
            let (status, body) = (r.status, r.text());
            assert_eq!(status, 204, "request {i}: {body}");
            assert!(body.is_empty());
            assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
            assert_eq!(
                r.header("x-ratelimit-remaining"),
                Some((4 - i).to_string().as_str())
            );
            assert_eq!(r.header("x-ratelimit-bucket"), Some(DISCORD_BUCKET));
            let reset_after: f64 = r
                .header("x-ratelimit-reset-after")
                .unwrap()
                .parse()
                .unwrap();
            assert!((0.0..=2.0).contains(&reset_after), "{reset_after}");
            let reset = r.header("x-ratelimit-reset").unwrap();
            assert_eq!(reset.split('.').nth(1).map(str::len), Some(3), "{reset}");
        }
        let r = http_post(fake.addr, HOOK, JSON, &msg("hi")).await;
        let (status, body) = (r.status, r.text());
        assert_eq!(status, 429, "{body}");
        assert_eq!(r.header("content-type"), Some(JSON));
        assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
        assert_eq!(r.header("x-ratelimit-scope"), Some("user"));
        assert!(r.header("x-ratelimit-reset").is_some());
        let retry_after_header: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry_after_header));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["message"], "You are being rate limited.");
        assert_eq!(v["global"], false);
        let retry_after = v["retry_after"].as_f64().unwrap();
        assert!(retry_after > 0.0 && retry_after <= 2.0, "{retry_after}");
        assert_eq!(fake.received().len(), 6);
        assert_eq!(fake.accepted().len(), 5);
        assert_eq!(fake.count_status(429), 1);
        // The versioned path shares the webhook's bucket.
        let status = http_post(
            fake.addr,
            "/api/v10/webhooks/123456/fake-token",
            JSON,
            &msg("hi"),
        )
        .await
        .status;
        assert_eq!(status, 429);
    }

    #[tokio::test]
    async fn discord_window_reopens_after_it_ends() {
        let fake = FakeServer::discord(1, Duration::from_millis(200)).await;
        assert_eq!(
            http_post(fake.addr, HOOK, JSON, &msg("a")).await.status,
            204
        );
        assert_eq!(
            http_post(fake.addr, HOOK, JSON, &msg("b")).await.status,
            429
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            http_post(fake.addr, HOOK, JSON, &msg("c")).await.status,
            204
        );
        let contents: Vec<Value> = fake
            .accepted()
            .iter()
            .map(|r| r.json()["content"].clone())
            .collect();
        assert_eq!(contents, vec![json!("a"), json!("c")]);
    }

    #[tokio::test]
    async fn discord_wait_true_returns_the_message() {
        let fake = FakeServer::discord(50, Duration::from_secs(1)).await;
        let path = format!("{HOOK}?wait=true");
        let r = http_post(fake.addr, &path, JSON, &msg("first")).await;
        let (status, body) = (r.status, r.text());
        assert_eq!(status, 200);
        assert_eq!(r.header("content-type"), Some(JSON));
        let first: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(first["content"], "first");
        assert_eq!(first["channel_id"], "1");
        let body = http_post(fake.addr, &path, JSON, &msg("second"))
            .await
            .text();
        let second: Value = serde_json::from_str(&body).unwrap();
        let id = |v: &Value| v["id"].as_str().unwrap().parse::<u64>().unwrap();
        assert!(id(&second) > id(&first));
        // Embeds only: content "".
        let embed = json!({"embeds": [{"title": "t"}]}).to_string();
        let r = http_post(fake.addr, &path, JSON, &embed).await;
        let (status, body) = (r.status, r.text());
        assert_eq!(status, 200);
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["content"], "");

        let r = http_post(fake.addr, HOOK, JSON, &msg("x")).await;
        let (status, body) = (r.status, r.text());
        assert_eq!((status, body.as_str()), (204, ""));
        let r = fake.received();
        assert_eq!(r[0].query.as_deref(), Some("wait=true"));
        assert_eq!(r[0].query_param("wait").as_deref(), Some("true"));
        assert_eq!(r[3].query, None);
    }

    #[tokio::test]
    async fn discord_validates_like_discord() {
        let fake = FakeServer::discord(50, Duration::from_secs(1)).await;
        let code = |body: &str| serde_json::from_str::<Value>(body).unwrap()["code"].clone();

        let r = http_post(fake.addr, HOOK, JSON, "{}").await;
        let (status, body) = (r.status, r.text());
        assert_eq!((status, code(&body)), (400, json!(50006)));
        let r = http_post(fake.addr, HOOK, JSON, &msg("  ")).await;
        let (status, body) = (r.status, r.text());
        assert_eq!((status, code(&body)), (400, json!(50006)));
        let r = http_post(fake.addr, HOOK, JSON, r#"{"content": "x", "embeds": []"#).await;
        let (status, body) = (r.status, r.text());
        assert_eq!((status, code(&body)), (400, json!(50109)));
        let r = http_post(fake.addr, HOOK, "text/plain", &msg("x")).await;
        let (status, body) = (r.status, r.text());
        assert_eq!((status, code(&body)), (400, json!(50035)));
        let r = http_post(fake.addr, HOOK, JSON, &msg(&"é".repeat(2001))).await;
        let (status, body) = (r.status, r.text());
        assert_eq!((status, code(&body)), (400, json!(50035)));
        let status = http_post(fake.addr, HOOK, JSON, &msg(&"é".repeat(2000)))
            .await
            .status;
        assert_eq!(status, 204);
        let r = http_post(fake.addr, "/api/webhooks/123456", JSON, &msg("x")).await;
        let (status, body) = (r.status, r.text());
        assert_eq!((status, code(&body)), (404, json!(10015)));
        let r = http_post(fake.addr, "/hooks/x", JSON, &msg("x")).await;
        let (status, body) = (r.status, r.text());
        assert_eq!((status, code(&body)), (404, json!(10015)));
        assert!(r.header("x-ratelimit-limit").is_some());
        let status = http_request(fake.addr, "GET", HOOK, &[], b"").await.status;
        assert_eq!(status, 405);
        let status = http_post(fake.addr, "/api/v10/webhooks/1/t?wait=1", JSON, &msg("ok"))
            .await
            .status;
        assert_eq!(status, 200);

        let statuses: Vec<u16> = fake.received().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [400, 400, 400, 400, 400, 204, 404, 404, 405, 200]);
        assert_eq!(fake.accepted().len(), 2);
    }

    #[tokio::test]
    async fn programmed_failures_then_success() {
        let fake = FakeServer::discord(1, Duration::from_secs(60)).await;
        fake.fail_next(2, 503, "upstream down", &[("Retry-After", "3")]);
        let r = http_post(fake.addr, HOOK, JSON, &msg("a")).await;
        let (status, body) = (r.status, r.text());
        assert_eq!((status, body.as_str()), (503, "upstream down"));
        assert_eq!(r.header("retry-after"), Some("3"));
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
        assert!(r.header("x-ratelimit-limit").is_none());
        assert_eq!(
            http_post(fake.addr, HOOK, JSON, &msg("a")).await.status,
            503
        );
        // Programmed answers did not use the quota of 1.
        assert_eq!(
            http_post(fake.addr, HOOK, JSON, &msg("a")).await.status,
            204
        );
        assert_eq!(fake.count_status(503), 2);
        assert_eq!(fake.accepted().len(), 1);
        assert_eq!(fake.received().len(), 3);
    }

    #[tokio::test]
    async fn always_until_cleared() {
        let fake = FakeServer::discord(50, Duration::from_secs(1)).await;
        fake.always(404, r#"{"message": "Unknown Webhook", "code": 10015}"#);
        for _ in 0..3 {
            let r = http_post(fake.addr, HOOK, JSON, &msg("a")).await;
            let (status, body) = (r.status, r.text());
            assert_eq!(status, 404);
            assert_eq!(r.header("content-type"), Some(JSON));
            assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["code"], 10015);
        }
        // fail_next takes precedence over always.
        fake.fail_next(1, 500, "", &[]);
        assert_eq!(
            http_post(fake.addr, HOOK, JSON, &msg("a")).await.status,
            500
        );
        assert_eq!(
            http_post(fake.addr, HOOK, JSON, &msg("a")).await.status,
            404
        );
        fake.clear();
        assert_eq!(
            http_post(fake.addr, HOOK, JSON, &msg("a")).await.status,
            204
        );
        assert_eq!(fake.count_status(404), 4);
    }

    #[tokio::test]
    async fn delay_slows_answers_and_wait_for_accepted_sees_them() {
        let fake = FakeServer::webhook().await;
        fake.set_delay(Duration::from_millis(300));
        let addr = fake.addr;
        let started = std::time::Instant::now();
        let client = tokio::spawn(async move { http_post(addr, "/x", JSON, "{}").await });
        let got = fake.wait_for_accepted(1, Duration::from_secs(5)).await;
        assert_eq!(got[0].path, "/x");
        let status = client.await.unwrap().status;
        assert_eq!(status, 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    #[should_panic(expected = "expected 1 accepted requests")]
    async fn wait_for_accepted_panics_after_timeout() {
        let fake = FakeServer::webhook().await;
        fake.wait_for_accepted(1, Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn slack_like_answers() {
        let fake = FakeServer::slack(2, Duration::from_secs(2)).await;
        let path = "/services/T000/B000/fake-secret";
        assert_eq!(fake.slack_url(), fake.url(path));
        let text = json!({"text": "hello"}).to_string();
        let r = http_post(fake.addr, path, JSON, &text).await;
        let (status, body) = (r.status, r.text());
        assert_eq!((status, body.as_str()), (200, "ok"));
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
        let r = http_post(fake.addr, path, JSON, r#"{"text": ""}"#).await;
        let (status, body) = (r.status, r.text());
        assert_eq!((status, body.as_str()), (400, "no_text"));
        let r = http_post(fake.addr, path, JSON, &text).await;
        let (status, body) = (r.status, r.text());
        assert_eq!((status, body.as_str()), (429, "rate_limited"));
        let r = http_post(fake.addr, path, JSON, &text).await;
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "{retry}");

        // Another webhook has its own window.
        let other = "/services/T000/B001/other";
        let blocks = json!({"blocks": [{"type": "section"}]}).to_string();
        assert_eq!(http_post(fake.addr, other, JSON, &blocks).await.status, 200);
        let r = http_post(fake.addr, other, JSON, "not json").await;
        let (status, body) = (r.status, r.text());
        assert_eq!((status, body.as_str()), (400, "invalid_payload"));
        let r = http_post(fake.addr, "/hooks/x", JSON, &text).await;
        let (status, body) = (r.status, r.text());
        assert_eq!((status, body.as_str()), (404, "no_service"));
        assert_eq!(fake.accepted().len(), 2);
        assert_eq!(fake.count_status(429), 2);
        assert_eq!(fake.received().len(), 7);
    }

    #[tokio::test]
    async fn webhook_records_headers_and_body() {
        let fake = FakeServer::webhook().await;
        let body = br#"{"type": "message.send", "data": {"n": 1}}"#;
        let r = http_request(
            fake.addr,
            "PUT",
            "/in/hook?x=1&y=2",
            &[
                ("Content-Type", JSON),
                ("Webhook-Id", "msg_1"),
                ("Webhook-Signature", "v1,abc="),
            ],
            body,
        )
        .await;
        let (status, answer) = (r.status, r.text());
        assert_eq!((status, answer.as_str()), (200, "{}"));
        assert_eq!(r.header("content-type"), Some(JSON));
        let r = fake.wait_for_accepted(1, Duration::from_secs(1)).await;
        let r = &r[0];
        assert_eq!(r.method, "PUT");
        assert_eq!(r.path, "/in/hook");
        assert_eq!(r.query.as_deref(), Some("x=1&y=2"));
        assert_eq!(r.query_param("y").as_deref(), Some("2"));
        assert_eq!(r.header("webhook-id"), Some("msg_1"));
        assert_eq!(r.header("WEBHOOK-SIGNATURE"), Some("v1,abc="));
        assert_eq!(r.body, body);
        assert_eq!(r.json()["data"]["n"], 1);
        assert_eq!(r.status, 200);
        assert!(r.at <= Instant::now());

        fake.fail_next(1, 410, "", &[]);
        assert_eq!(
            http_post(fake.addr, "/in/hook", JSON, "{}").await.status,
            410
        );
        assert_eq!(fake.received().len(), 2);
        assert_eq!(fake.accepted().len(), 1);
    }

    #[tokio::test]
    async fn dropping_the_server_stops_it() {
        let fake = FakeServer::webhook().await;
        let addr = fake.addr;
        assert_eq!(http_post(addr, "/", JSON, "{}").await.status, 200);
        drop(fake);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).await.is_ok() {
            assert!(std::time::Instant::now() < deadline, "still listening");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
