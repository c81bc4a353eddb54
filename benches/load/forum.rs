//! The forum sink: a local stand-in for the webhook of a Discord *forum*
//! channel (Execute Webhook), for the threads phase. It owns the forum's
//! threads and what was posted in each, the webhook's rate-limit bucket,
//! and the count of every answer it gave.
//!
//! What it models (Discord's docs: Execute Webhook, Rate Limits, the JSON
//! error codes; the same choices as the test suite's fake Discord):
//! - `POST /api/[v10/]webhooks/{id}/{token}`: with body `thread_name` (1–100
//!   characters) a new post, answered 200 with the message, whose
//!   `channel_id` is the new thread; with query `thread_id` a message in
//!   that thread, answered 200 and the message with `wait=true`, else 204;
//!   an unknown thread 404 `{"code": 10003, "message": "Unknown Channel"}`;
//!   neither 400 220001, both 400 220002.
//! - Messages: a JSON object with `content` (≤ 2,000 characters) or
//!   `embeds` (≤ 10), else 400 50006 / 50035.
//! - The webhook's bucket: a fixed window of `limit` requests per `window`
//!   from its first request; every answer of a counted request carries
//!   `X-RateLimit-Limit/Remaining/Reset/Reset-After/Bucket`; past the limit,
//!   429 with `Retry-After` (whole seconds), `X-RateLimit-Scope: user` and
//!   `{"message": "You are being rate limited.", "retry_after": <float>,
//!   "global": false}`. Refused requests count; 429s do not.
//!
//! Each accepted post is kept with the time it arrived and the bench's
//! message tags (`c07 m03`) found in its body, in body order.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::Res;
use crate::sink::reply;

/// The webhook the relay's target names.
pub const WEBHOOK_ID: &str = "1300000000000000001";
pub const WEBHOOK_TOKEN: &str = "bench-forum-token";
/// Thread and message ids count up from here (snowflake-sized numbers).
const FIRST_ID: u64 = 1_400_000_000_000_000_000;
const BUCKET: &str = "bench-forum";

/// One accepted post: when it arrived and the `(conversation, message)`
/// tags in its body.
#[derive(Clone, Debug)]
pub struct Post {
    pub at: Instant,
    pub tags: Vec<(u32, u32)>,
}

/// A forum thread: its name and its posts in the order they arrived (the
/// first created it).
#[derive(Clone, Debug)]
pub struct Thread {
    pub id: String,
    pub name: String,
    pub posts: Vec<Post>,
}

/// How many requests got which answer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub requests: u64,
    /// `thread_name` posts answered 200 (threads created).
    pub created: u64,
    /// `thread_id` posts answered 200 or 204.
    pub replies: u64,
    pub limited_429: u64,
    /// 404 10003: a `thread_id` the forum does not know.
    pub unknown_thread: u64,
    /// Every other refusal (400, 404 of a path or webhook).
    pub refused: u64,
}

#[derive(Default)]
struct State {
    window_start: Option<Instant>,
    used: u32,
    next_id: u64,
    threads: Vec<Thread>,
    by_id: HashMap<String, usize>,
    counts: Counts,
    /// The first few refusals, for the report.
    refusals: Vec<String>,
}

pub struct Forum {
    pub addr: SocketAddr,
    limit: u32,
    window: Duration,
    state: Mutex<State>,
}

impl Forum {
    /// Listens on 127.0.0.1 with a bucket of `limit` requests per `window`.
    pub async fn start(limit: u32, window: Duration) -> Res<Arc<Self>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let forum = Arc::new(Self {
            addr: listener.local_addr()?,
            limit,
            window,
            state: Mutex::new(State::default()),
        });
        let f = forum.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let f = f.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let f = f.clone();
                            async move { Ok::<_, Infallible>(f.answer(req).await) }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(forum)
    }

    /// The webhook URL for the relay's target (the relay pins `v10` and
    /// adds `wait=true`).
    pub fn url(&self) -> String {
        format!(
            "http://{}/api/webhooks/{WEBHOOK_ID}/{WEBHOOK_TOKEN}",
            self.addr
        )
    }

    /// Forgets every thread, count and the bucket: a new forum for a new run.
    pub fn reset(&self) {
        *self.lock() = State::default();
    }

    pub fn counts(&self) -> Counts {
        self.lock().counts
    }

    pub fn threads(&self) -> Vec<Thread> {
        self.lock().threads.clone()
    }

    pub fn refusals(&self) -> Vec<String> {
        self.lock().refusals.clone()
    }

    /// Distinct message tags received so far, over all threads.
    pub fn tags_seen(&self) -> usize {
        let st = self.lock();
        st.threads
            .iter()
            .flat_map(|t| &t.posts)
            .flat_map(|p| &p.tags)
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return reply(StatusCode::BAD_REQUEST, "{}"),
        };
        let now = Instant::now();
        let mut st = self.lock();
        st.counts.requests += 1;
        let hook = path
            .strip_prefix("/api/v10/webhooks/")
            .or_else(|| path.strip_prefix("/api/webhooks/"));
        if method != hyper::Method::POST || hook.is_none() {
            return refuse(
                &mut st,
                404,
                json!({"message": "404: Not Found", "code": 0}),
            );
        }
        // The bucket: a fixed window from its first request.
        let start = *st.window_start.get_or_insert(now);
        if now.duration_since(start) >= self.window {
            st.window_start = Some(now);
            st.used = 0;
        }
        let reset_after = self
            .window
            .saturating_sub(now.duration_since(st.window_start.unwrap_or(now)));
        let allowed = st.used < self.limit;
        if allowed {
            st.used += 1;
        }
        let headers = self.rate_headers(self.limit - st.used, reset_after);
        if !allowed {
            st.counts.limited_429 += 1;
            let secs = reset_after.as_secs_f64();
            let mut r = json_response(
                429,
                &format!(
                    r#"{{"message": "You are being rate limited.", "retry_after": {secs:.3}, "global": false}}"#
                ),
                &headers,
            );
            add_header(
                &mut r,
                "retry-after",
                &(secs.ceil().max(1.0) as u64).to_string(),
            );
            add_header(&mut r, "x-ratelimit-scope", "user");
            return r;
        }
        if hook != Some(format!("{WEBHOOK_ID}/{WEBHOOK_TOKEN}").as_str()) {
            return with(
                &headers,
                refuse(
                    &mut st,
                    404,
                    json!({"code": 10015, "message": "Unknown Webhook"}),
                ),
            );
        }
        let answer = self.execute(&mut st, &query, &body, now);
        with(&headers, answer)
    }

    /// Execute Webhook in the forum, once the bucket let it through.
    fn execute(
        &self,
        st: &mut State,
        query: &str,
        body: &[u8],
        now: Instant,
    ) -> Response<Full<Bytes>> {
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned())
        };
        let wait = param("wait").is_some_and(|v| matches!(v.as_str(), "true" | "True" | "1"));
        let thread_id = param("thread_id");
        let Ok(Value::Object(msg)) = serde_json::from_slice::<Value>(body) else {
            return refuse(
                st,
                400,
                json!({"code": 50109, "message": "The request body contains invalid JSON."}),
            );
        };
        let content = msg.get("content").and_then(Value::as_str).unwrap_or("");
        let embeds = msg.get("embeds").and_then(Value::as_array);
        if content.chars().count() > 2000 || embeds.is_some_and(|e| e.len() > 10) {
            return refuse(
                st,
                400,
                json!({"code": 50035, "message": "Invalid Form Body"}),
            );
        }
        if content.is_empty() && embeds.is_none_or(|e| e.is_empty()) {
            return refuse(
                st,
                400,
                json!({"code": 50006, "message": "Cannot send an empty message"}),
            );
        }
        let name = msg
            .get("thread_name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let post = Post {
            at: now,
            tags: tags(body),
        };
        let (thread, status) = match (name, thread_id) {
            (Some(_), Some(_)) => {
                return refuse(
                    st,
                    400,
                    json!({"code": 220002, "message": "Webhooks posted to forum channels cannot have both a thread_name and thread_id"}),
                );
            }
            (None, None) => {
                return refuse(
                    st,
                    400,
                    json!({"code": 220001, "message": "Webhooks posted to forum channels must have a thread_name or thread_id"}),
                );
            }
            (Some(name), None) => {
                if name.is_empty() || name.chars().count() > 100 {
                    return refuse(
                        st,
                        400,
                        json!({"code": 50035, "message": "Invalid Form Body"}),
                    );
                }
                let id = (FIRST_ID + st.next_id).to_string();
                st.next_id += 1;
                let at = st.threads.len();
                st.by_id.insert(id.clone(), at);
                st.threads.push(Thread {
                    id: id.clone(),
                    name,
                    posts: vec![post],
                });
                st.counts.created += 1;
                // A forum post's starter message has the thread's id.
                return json_response(200, &message(&id, &id, &msg).to_string(), &[]);
            }
            (None, Some(thread)) => match st.by_id.get(&thread).copied() {
                Some(at) => {
                    st.threads[at].posts.push(post);
                    st.counts.replies += 1;
                    (thread, if wait { 200 } else { 204 })
                }
                None => {
                    st.counts.unknown_thread += 1;
                    return refuse(
                        st,
                        404,
                        json!({"code": 10003, "message": "Unknown Channel"}),
                    );
                }
            },
        };
        if status == 204 {
            return json_response(204, "", &[]);
        }
        let id = (FIRST_ID + st.next_id).to_string();
        st.next_id += 1;
        json_response(200, &message(&id, &thread, &msg).to_string(), &[])
    }

    fn rate_headers(&self, remaining: u32, reset_after: Duration) -> Vec<(&'static str, String)> {
        let reset = (SystemTime::now() + reset_after)
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        vec![
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", remaining.to_string()),
            ("x-ratelimit-reset", format!("{reset:.3}")),
            (
                "x-ratelimit-reset-after",
                format!("{:.3}", reset_after.as_secs_f64()),
            ),
            ("x-ratelimit-bucket", BUCKET.to_owned()),
        ]
    }
}

/// The message object of an answer (the fields a client reads).
fn message(id: &str, channel: &str, body: &serde_json::Map<String, Value>) -> Value {
    json!({
        "id": id,
        "type": 0,
        "channel_id": channel,
        "content": body.get("content").cloned().unwrap_or(json!("")),
        "embeds": body.get("embeds").cloned().unwrap_or(json!([])),
        "author": {"bot": true, "id": WEBHOOK_ID, "username": "Bench Forum"},
        "webhook_id": WEBHOOK_ID,
        "attachments": [],
        "mentions": [],
        "pinned": false,
        "tts": false,
        "flags": 0,
    })
}

/// Counts a refusal, keeps the first few, and answers it.
fn refuse(st: &mut State, status: u16, body: Value) -> Response<Full<Bytes>> {
    if status != 404 || body.get("code") != Some(&json!(10003)) {
        st.counts.refused += 1;
    }
    if st.refusals.len() < 10 {
        st.refusals.push(format!("{status} {body}"));
    }
    json_response(status, &body.to_string(), &[])
}

fn json_response(status: u16, body: &str, headers: &[(&str, String)]) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if !body.is_empty() {
        add_header(&mut r, "content-type", "application/json");
    }
    for (name, value) in headers {
        add_header(&mut r, name, value);
    }
    r
}

fn with(headers: &[(&str, String)], mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    for (name, value) in headers {
        add_header(&mut r, name, value);
    }
    r
}

fn add_header(r: &mut Response<Full<Bytes>>, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        hyper::header::HeaderName::from_bytes(name.as_bytes()),
        hyper::header::HeaderValue::from_str(value),
    ) {
        r.headers_mut().insert(n, v);
    }
}

/// The tag of message `m` of conversation `c`, as the bench writes it in
/// `data.content`.
pub fn tag(c: u32, m: u32) -> String {
    format!("c{c:02} m{m:02}")
}

/// Every `c<digits> m<digits>` in `body`, in order.
pub fn tags(body: &[u8]) -> Vec<(u32, u32)> {
    let digits = |from: usize| {
        let len = body[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let n = std::str::from_utf8(&body[from..from + len])
            .ok()
            .and_then(|s| s.parse::<u32>().ok());
        (n, from + len)
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let after_word = i == 0 || !body[i - 1].is_ascii_alphanumeric();
        if body[i] == b'c' && after_word {
            if let (Some(c), end) = digits(i + 1) {
                if end > i + 1 && body[end..].starts_with(b" m") {
                    if let (Some(m), end2) = digits(end + 2) {
                        if end2 > end + 2 {
                            out.push((c, m));
                            i = end2;
                            continue;
                        }
                    }
                }
            }
        }
        i += 1;
    }
    out
}
