//! The replies phase's two destinations, both local and without a rate
//! limit:
//!
//! - [`SlackApi`], a stand-in for Slack's Web API (the relay's Slack bot
//!   target): `POST /api/chat.postMessage` with the bot token answers
//!   `{ok: true, channel, ts, message}` with a new, increasing `ts` each
//!   time (`"<secs>.<6 digits>"`, as Slack's); a message without
//!   `thread_ts` is a thread's parent, kept with the text it carried.
//!   `POST /api/reactions.add` answers `{ok: true}` and keeps the reaction.
//!   Another method: `{ok: false, error: "unknown_method"}`; another token:
//!   `{ok: false, error: "invalid_auth"}` (both HTTP 200, as Slack answers).
//!   The same `ts` counter gives the bench's own replies their `ts`, as if
//!   they had been posted in the channel.
//! - [`CrispApi`], a stand-in for Crisp's REST API (the relay's `crisp`
//!   target): `POST /v1/website/{website}/conversation/{session}/message`
//!   with the right Basic auth and `X-Crisp-Tier` answers 201 `{"error":
//!   false, "reason": "dispatched", "data": {"fingerprint": N}}` (N new each
//!   time), and keeps when each message arrived, where to and its content.
//!   Anything else is refused (401 `invalid_session`, 400 `invalid_data`,
//!   404 `not_found`, as the test suite's fake Crisp answers) and counted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::Res;
use crate::sink::reply;

/// The bot token of the relay's Slack target.
pub const BOT_TOKEN: &str = "xoxb-bench-replies";
/// The Slack channel of the relay's target.
pub const CHANNEL: &str = "C0BENCHREPLY";
/// The Crisp API token (`identifier:key`).
pub const CRISP_ID: &str = "bench-crisp-id";
pub const CRISP_KEY: &str = "bench-crisp-key";
const BOT_ID: &str = "B0BENCHBOT1";
const BOT_USER: &str = "U0BENCHBOT1";

/// Serves `answer` on 127.0.0.1 (HTTP/1.1, keep-alive) in the background.
async fn serve<S, F>(state: Arc<S>, answer: F) -> Res<SocketAddr>
where
    S: Send + Sync + 'static,
    F: Fn(&S, &str, &str, Option<&str>, Option<&str>, &[u8]) -> Response<Full<Bytes>>
        + Send
        + Sync
        + Copy
        + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move {
                        let method = req.method().as_str().to_owned();
                        let path = req.uri().path().to_owned();
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned)
                        };
                        let (auth, tier) = (header("authorization"), header("x-crisp-tier"));
                        let resp = match req.into_body().collect().await {
                            Ok(b) => answer(
                                &state,
                                &method,
                                &path,
                                auth.as_deref(),
                                tier.as_deref(),
                                &b.to_bytes(),
                            ),
                            Err(_) => reply(StatusCode::BAD_REQUEST, "{}"),
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

// ------------------------------------------------------------------ Slack

/// A message the relay posted to the channel without `thread_ts`: a
/// conversation's thread.
#[derive(Clone, Debug)]
pub struct Parent {
    pub ts: String,
    /// The `text` it carried (the shipped template puts the visitor's
    /// message there).
    pub text: String,
}

#[derive(Default)]
struct SlackState {
    last_ts_us: u128,
    parents: Vec<Parent>,
    /// Messages posted into a thread (`thread_ts`): none expected here, a
    /// failed reply's note would be one.
    in_threads: Vec<String>,
    /// `(timestamp, name)` of every `reactions.add`.
    reactions: Vec<(String, String)>,
    /// Requests answered `ok: false`.
    refused: Vec<String>,
}

pub struct SlackApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<SlackState>>,
}

impl SlackApi {
    pub async fn start() -> Res<Self> {
        let state = Arc::new(Mutex::new(SlackState::default()));
        let addr = serve(state.clone(), |st, method, path, auth, _, body| {
            slack_answer(&mut lock(st), method, path, auth, body)
        })
        .await?;
        Ok(Self { addr, state })
    }

    /// The target's `api_url`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Forgets everything but the `ts` counter (a new run).
    pub fn reset(&self) {
        let mut st = lock(&self.state);
        let last = st.last_ts_us;
        *st = SlackState {
            last_ts_us: last,
            ..SlackState::default()
        };
    }

    /// A new `ts`, later than every one given before.
    pub fn next_ts(&self) -> String {
        next_ts(&mut lock(&self.state))
    }

    pub fn parents(&self) -> Vec<Parent> {
        lock(&self.state).parents.clone()
    }

    pub fn in_threads(&self) -> Vec<String> {
        lock(&self.state).in_threads.clone()
    }

    pub fn reactions(&self) -> Vec<(String, String)> {
        lock(&self.state).reactions.clone()
    }

    pub fn reaction_count(&self) -> usize {
        lock(&self.state).reactions.len()
    }

    pub fn refused(&self) -> Vec<String> {
        lock(&self.state).refused.clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn next_ts(st: &mut SlackState) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    st.last_ts_us = now.max(st.last_ts_us + 1);
    format!(
        "{}.{:06}",
        st.last_ts_us / 1_000_000,
        st.last_ts_us % 1_000_000
    )
}

fn slack_answer(
    st: &mut SlackState,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let mut refuse = |error: &str| {
        if st.refused.len() < 10 {
            st.refused.push(format!("{path}: {error}"));
        }
        json_response(200, &json!({"ok": false, "error": error}))
    };
    if method != "POST" {
        return refuse("method_not_allowed");
    }
    if auth != Some(format!("Bearer {BOT_TOKEN}").as_str()) {
        return refuse("invalid_auth");
    }
    let Ok(Value::Object(args)) = serde_json::from_slice::<Value>(body) else {
        return refuse("invalid_json");
    };
    let arg = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_owned);
    if arg("channel").as_deref() != Some(CHANNEL) {
        return refuse("channel_not_found");
    }
    match path {
        "/api/chat.postMessage" => {
            let text = arg("text").unwrap_or_default();
            let thread_ts = arg("thread_ts");
            let ts = next_ts(st);
            match &thread_ts {
                Some(_) => st.in_threads.push(text.clone()),
                None => st.parents.push(Parent {
                    ts: ts.clone(),
                    text: text.clone(),
                }),
            }
            let mut message = json!({
                "type": "message", "subtype": "bot_message", "text": text, "ts": ts,
                "bot_id": BOT_ID, "user": BOT_USER,
            });
            if let Some(parent) = thread_ts {
                message["thread_ts"] = json!(parent);
            }
            json_response(
                200,
                &json!({"ok": true, "channel": CHANNEL, "ts": ts, "message": message}),
            )
        }
        "/api/reactions.add" => match (arg("timestamp"), arg("name")) {
            (Some(ts), Some(name)) => {
                st.reactions.push((ts, name));
                json_response(200, &json!({"ok": true}))
            }
            _ => refuse("no_item_specified"),
        },
        _ => refuse("unknown_method"),
    }
}

// ------------------------------------------------------------------ Crisp

/// A message Crisp accepted.
#[derive(Clone, Debug)]
pub struct CrispMessage {
    pub at: Instant,
    pub website: String,
    pub session: String,
    pub content: String,
    pub nickname: String,
}

#[derive(Default)]
struct CrispState {
    messages: Vec<CrispMessage>,
    next_fingerprint: u64,
    /// Refusals (status and reason), the first few, and how many.
    refusals: Vec<String>,
    refused: u64,
}

pub struct CrispApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<CrispState>>,
}

impl CrispApi {
    pub async fn start() -> Res<Self> {
        let state = Arc::new(Mutex::new(CrispState::default()));
        let addr = serve(state.clone(), |st, method, path, auth, tier, body| {
            crisp_answer(&mut lock(st), method, path, auth, tier, body)
        })
        .await?;
        Ok(Self { addr, state })
    }

    /// `crisp.api_url`.
    pub fn api_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn reset(&self) {
        *lock(&self.state) = CrispState::default();
    }

    pub fn messages(&self) -> Vec<CrispMessage> {
        lock(&self.state).messages.clone()
    }

    pub fn count(&self) -> usize {
        lock(&self.state).messages.len()
    }

    /// How many requests were refused, and the first few.
    pub fn refusals(&self) -> (u64, Vec<String>) {
        let st = lock(&self.state);
        (st.refused, st.refusals.clone())
    }
}

/// `Authorization` for the bench's Crisp token.
pub fn crisp_authorization() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CRISP_ID}:{CRISP_KEY}"))
    )
}

fn crisp_answer(
    st: &mut CrispState,
    method: &str,
    path: &str,
    auth: Option<&str>,
    tier: Option<&str>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let at = Instant::now();
    let mut refuse = |status: u16, reason: &str| {
        st.refused += 1;
        if st.refusals.len() < 10 {
            st.refusals
                .push(format!("{status} {reason} ({method} {path})"));
        }
        json_response(
            status,
            &json!({"error": true, "reason": reason, "data": {}}),
        )
    };
    if auth != Some(crisp_authorization().as_str()) {
        return refuse(401, "invalid_session");
    }
    if tier.is_none() {
        return refuse(400, "invalid_data");
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["v1", "website", website, "conversation", session, "message"] = segs.as_slice() else {
        return refuse(404, "not_found");
    };
    if method != "POST" {
        return refuse(405, "not_allowed");
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return refuse(400, "invalid_data");
    };
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    let (Some("text"), Some("operator"), Some(_), Some(content)) =
        (s("type"), s("from"), s("origin"), s("content"))
    else {
        return refuse(400, "invalid_data");
    };
    let message = CrispMessage {
        at,
        website: (*website).to_owned(),
        session: (*session).to_owned(),
        content: content.to_owned(),
        nickname: v["user"]["nickname"].as_str().unwrap_or("").to_owned(),
    };
    st.messages.push(message);
    st.next_fingerprint += 1;
    let fingerprint = 163_239_600 + st.next_fingerprint;
    json_response(
        201,
        &json!({"error": false, "reason": "dispatched", "data": {"fingerprint": fingerprint}}),
    )
}
