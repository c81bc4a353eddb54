//! A fake Discord Gateway ([`FakeGateway`]): a WebSocket server on
//! 127.0.0.1:0 speaking the Gateway's JSON protocol, and Get Gateway Bot
//! (`GET /api/v10/gateway/bot`) on a [`FakeServer`] beside it, which
//! answers the socket's `ws://` URL.
//!
//! What it models (Discord's docs `discord/discord-api-docs` @ `c98d64bc`,
//! `events/gateway.mdx`, `events/gateway-events.mdx`,
//! `topics/opcodes-and-status-codes.mdx`): HELLO with a heartbeat interval
//! the test sets; heartbeats acked (unless told not to); IDENTIFY checked
//! (wrong token: close 4004; a disallowed intent: close 4014) and answered
//! with READY (`s` 1, a session id, `resume_gateway_url` back to this server
//! at `/resume`); RESUME checked (token: 4004; an unknown session: op 9
//! `d: false`) and answered with the dispatches after its `seq`, then
//! RESUMED. Dispatches the test pushes get the session's next `s`; while no
//! connection holds the session they wait for a RESUME, as Discord's do.
//! Get Gateway Bot wants `Authorization: Bot <token>` (401 otherwise) and a
//! `DiscordBot (` User-Agent (403 otherwise).
//!
//! The test drives it: push dispatches, drop the TCP connection, close with
//! a code, send op 7, op 9, op 1 or raw text, stop answering heartbeats,
//! hold new connections before HELLO; and reads what the client sent, per
//! connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_websockets::{CloseCode, Message as Frame, ServerBuilder};

use super::{Canned, FakeServer, Kind, Received, Responder, State, canned};

/// The fake bot's own user id (in READY).
pub const GATEWAY_BOT_USER_ID: &str = "1100000000000000099";
/// The author of [`FakeGateway::message`]'s messages.
pub const PERSON_USER_ID: &str = "1100000000000000042";

/// One payload the client sent.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Index into [`FakeGateway::connections`].
    pub conn: usize,
    pub op: Option<u64>,
    pub payload: Value,
}

/// One WebSocket connection the client opened (and was let in).
#[derive(Debug, Clone)]
pub struct Connection {
    /// Path and query of the upgrade request.
    pub path: String,
    pub open: bool,
    /// The code of the client's close frame, if it sent one.
    pub client_close: Option<u16>,
}

enum Ctl {
    Send(String),
    Close(u16),
    Drop,
}

struct Session {
    id: String,
    next_seq: u64,
    /// Every dispatch after READY, with its `s`, for replays.
    events: Vec<(u64, Value)>,
    /// The connection that holds the session.
    holder: Option<usize>,
}

struct World {
    rest_token: String,
    gateway_token: String,
    heartbeat_ms: u64,
    ack: bool,
    disallowed: u64,
    sessions: u64,
    session: Option<Session>,
    connections: Vec<Connection>,
    live: Vec<(usize, mpsc::UnboundedSender<Ctl>)>,
    sent: Vec<Sent>,
    ws_addr: SocketAddr,
}

impl World {
    fn to_conn(&self, idx: usize, ctl: Ctl) {
        if let Some((_, tx)) = self.live.iter().find(|(i, _)| *i == idx) {
            let _ = tx.send(ctl);
        }
    }

    /// What the fake answers a client's payload on connection `idx`.
    fn on_client(&mut self, idx: usize, payload: Value) -> Vec<Ctl> {
        let op = payload.get("op").and_then(Value::as_u64);
        self.sent.push(Sent {
            conn: idx,
            op,
            payload: payload.clone(),
        });
        let d = payload.get("d").cloned().unwrap_or(Value::Null);
        let token_ok = d.get("token").and_then(Value::as_str) == Some(self.gateway_token.as_str());
        match op {
            Some(1) if self.ack => vec![Ctl::Send(json!({"op": 11}).to_string())],
            Some(2) if !token_ok => vec![Ctl::Close(4004)],
            Some(2) => {
                let intents = d.get("intents").and_then(Value::as_u64).unwrap_or(0);
                if intents & self.disallowed != 0 {
                    return vec![Ctl::Close(4014)];
                }
                self.sessions += 1;
                let id = format!("fake-session-{}", self.sessions);
                let ready = json!({"op": 0, "s": 1, "t": "READY", "d": {
                    "v": 10,
                    "user": {"id": GATEWAY_BOT_USER_ID, "username": "Fake Relay Bot", "bot": true, "global_name": null, "avatar": null},
                    "guilds": [],
                    "session_id": id,
                    "resume_gateway_url": format!("ws://{}/resume", self.ws_addr),
                    "application": {"id": "1100000000000000098", "flags": 0},
                }});
                self.session = Some(Session {
                    id,
                    next_seq: 2,
                    events: Vec::new(),
                    holder: Some(idx),
                });
                vec![Ctl::Send(ready.to_string())]
            }
            Some(6) if !token_ok => vec![Ctl::Close(4004)],
            Some(6) => {
                let wanted = d.get("session_id").and_then(Value::as_str);
                let after = d.get("seq").and_then(Value::as_u64).unwrap_or(0);
                match &mut self.session {
                    Some(s) if Some(s.id.as_str()) == wanted => {
                        let mut out: Vec<Ctl> = s
                            .events
                            .iter()
                            .filter(|(seq, _)| *seq > after)
                            .map(|(_, v)| Ctl::Send(v.to_string()))
                            .collect();
                        let seq = s.next_seq;
                        s.next_seq += 1;
                        s.holder = Some(idx);
                        out.push(Ctl::Send(
                            json!({"op": 0, "s": seq, "t": "RESUMED", "d": null}).to_string(),
                        ));
                        out
                    }
                    _ => vec![Ctl::Send(json!({"op": 9, "d": false}).to_string())],
                }
            }
            _ => Vec::new(),
        }
    }

    fn ended(&mut self, idx: usize) {
        self.live.retain(|(i, _)| *i != idx);
        if let Some(c) = self.connections.get_mut(idx) {
            c.open = false;
        }
        if let Some(s) = &mut self.session
            && s.holder == Some(idx)
        {
            s.holder = None;
        }
    }
}

/// Get Gateway Bot on the HTTP side.
struct GatewayBot {
    world: Arc<Mutex<World>>,
}

impl Responder for GatewayBot {
    fn answer(&self, _st: &mut State, rec: &Received) -> Canned {
        if rec.method != "GET" || rec.path != "/api/v10/gateway/bot" {
            return canned(404, r#"{"message": "404: Not Found", "code": 0}"#, &[]);
        }
        if !rec
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("DiscordBot ("))
        {
            return canned(
                403,
                r#"{"message": "set a DiscordBot User-Agent", "code": 40333}"#,
                &[],
            );
        }
        let w = lock(&self.world);
        if rec.header("authorization") != Some(format!("Bot {}", w.rest_token).as_str()) {
            return canned(401, r#"{"message": "401: Unauthorized", "code": 0}"#, &[]);
        }
        let body = json!({
            "url": format!("ws://{}", w.ws_addr),
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1},
        });
        canned(200, &body.to_string(), &[])
    }
}

fn lock(world: &Mutex<World>) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fake Gateway (see the module docs); stops when dropped.
pub struct FakeGateway {
    /// Answers Get Gateway Bot; its record holds those requests.
    pub http: FakeServer,
    pub ws_addr: SocketAddr,
    world: Arc<Mutex<World>>,
    open: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGateway {
    /// A Gateway whose bot token is `token`, heartbeating every 250 ms.
    pub async fn start(token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws_addr = listener.local_addr().unwrap();
        let world = Arc::new(Mutex::new(World {
            rest_token: token.to_owned(),
            gateway_token: token.to_owned(),
            heartbeat_ms: 250,
            ack: true,
            disallowed: 0,
            sessions: 0,
            session: None,
            connections: Vec::new(),
            live: Vec::new(),
            sent: Vec::new(),
            ws_addr,
        }));
        let http = FakeServer::start(Kind::Custom(Arc::new(GatewayBot {
            world: world.clone(),
        })))
        .await;
        let (open, open_rx) = watch::channel(true);
        let task = tokio::spawn(accept(listener, world.clone(), open_rx));
        Self {
            http,
            ws_addr,
            world,
            open,
            task,
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// `http://127.0.0.1:PORT/api/v10`, the client's `api`.
    pub fn api(&self) -> url::Url {
        url::Url::parse(&self.http.url("/api/v10")).unwrap()
    }

    /// The HELLO interval of connections from now on.
    pub fn set_heartbeat_interval(&self, every: Duration) {
        self.world().heartbeat_ms = u64::try_from(every.as_millis()).unwrap();
    }

    /// Whether heartbeats are acknowledged (op 11).
    pub fn set_ack_heartbeats(&self, ack: bool) {
        self.world().ack = ack;
    }

    /// IDENTIFYs asking for any of these intents are closed with 4014.
    pub fn disallow_intents(&self, intents: u64) {
        self.world().disallowed = intents;
    }

    /// The Gateway refuses the token (4004) while Get Gateway Bot still
    /// takes it, as after a token reset between the two.
    pub fn revoke_gateway_token(&self) {
        self.world().gateway_token = "revoked".into();
    }

    /// New connections wait before HELLO (`true`) until released (`false`).
    pub fn hold_new_connections(&self, hold: bool) {
        let _ = self.open.send(!hold);
    }

    /// A person's message in `channel` (a MESSAGE_CREATE's `d`).
    pub fn message(id: &str, channel: &str, content: &str) -> Value {
        json!({
            "id": id, "channel_id": channel, "guild_id": "1100000000000000001",
            "type": 0, "content": content, "tts": false, "mentions": [], "mention_roles": [],
            "attachments": [], "embeds": [], "pinned": false, "mention_everyone": false,
            "timestamp": "2026-08-06T10:00:00.000000+00:00", "edited_timestamp": null,
            "author": {"id": PERSON_USER_ID, "username": "ana", "global_name": "Ana B.", "avatar": "abc123"},
        })
    }

    /// Dispatches `t` with `d` in the session (sent now if a connection
    /// holds it, else on RESUME); returns its `s`. Panics without a session.
    pub fn dispatch(&self, t: &str, d: Value) -> u64 {
        let mut w = self.world();
        let s = w
            .session
            .as_mut()
            .expect("no session: wait for READY first");
        let seq = s.next_seq;
        s.next_seq += 1;
        let payload = json!({"op": 0, "s": seq, "t": t, "d": d});
        s.events.push((seq, payload.clone()));
        if let Some(holder) = s.holder {
            w.to_conn(holder, Ctl::Send(payload.to_string()));
        }
        seq
    }

    /// A MESSAGE_CREATE of [`FakeGateway::message`]; returns its `s`.
    pub fn push_message(&self, id: &str, channel: &str, content: &str) -> u64 {
        self.dispatch("MESSAGE_CREATE", Self::message(id, channel, content))
    }

    fn newest(&self, ctl: Ctl) {
        let w = self.world();
        if let Some((_, tx)) = w.live.last() {
            let _ = tx.send(ctl);
        }
    }

    /// Drops every open connection's TCP stream, without a close frame.
    pub fn drop_connections(&self) {
        for (_, tx) in &self.world().live {
            let _ = tx.send(Ctl::Drop);
        }
    }

    /// Closes the newest connection with `code`.
    pub fn close(&self, code: u16) {
        self.newest(Ctl::Close(code));
    }

    /// Sends `text` as is on the newest connection.
    pub fn send_raw(&self, text: &str) {
        self.newest(Ctl::Send(text.to_owned()));
    }

    /// Op 7 RECONNECT on the newest connection.
    pub fn reconnect(&self) {
        self.send_raw(r#"{"op": 7, "d": null}"#);
    }

    /// Op 1 HEARTBEAT (a request for one) on the newest connection.
    pub fn request_heartbeat(&self) {
        self.send_raw(r#"{"op": 1, "d": null}"#);
    }

    /// Op 9 INVALID_SESSION; not `resumable`: the session is forgotten.
    pub fn invalid_session(&self, resumable: bool) {
        if !resumable {
            self.world().session = None;
        }
        self.send_raw(&json!({"op": 9, "d": resumable}).to_string());
    }

    /// The current session's id.
    pub fn session_id(&self) -> Option<String> {
        self.world().session.as_ref().map(|s| s.id.clone())
    }

    /// Everything the client sent, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.world().sent.clone()
    }

    /// What the client sent with opcode `op`.
    pub fn sent_op(&self, op: u64) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.op == Some(op))
            .collect()
    }

    /// Every connection let in, in order.
    pub fn connections(&self) -> Vec<Connection> {
        self.world().connections.clone()
    }

    pub fn open_connections(&self) -> usize {
        self.world().live.len()
    }
}

async fn accept(listener: TcpListener, world: Arc<Mutex<World>>, open: watch::Receiver<bool>) {
    // Dropping the set (when this task is aborted) ends every connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                conns.spawn(serve(world.clone(), stream, open.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve(world: Arc<Mutex<World>>, stream: TcpStream, mut open: watch::Receiver<bool>) {
    let Ok((request, mut ws)) = ServerBuilder::new().accept(stream).await else {
        return;
    };
    let path = request
        .uri()
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    if open.wait_for(|o| *o).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (idx, hello) = {
        let mut w = lock(&world);
        let idx = w.connections.len();
        w.connections.push(Connection {
            path,
            open: true,
            client_close: None,
        });
        w.live.push((idx, tx));
        (
            idx,
            json!({"op": 10, "d": {"heartbeat_interval": w.heartbeat_ms}}),
        )
    };
    let mut queue = vec![Ctl::Send(hello.to_string())];
    'conn: loop {
        for ctl in queue.drain(..) {
            let done = match ctl {
                Ctl::Send(text) => ws.send(Frame::text(text)).await.is_err(),
                Ctl::Close(code) => {
                    let frame = Frame::close(CloseCode::try_from(code).ok(), "closed by the test");
                    let _ = ws.send(frame).await;
                    true
                }
                Ctl::Drop => true,
            };
            if done {
                break 'conn;
            }
        }
        tokio::select! {
            frame = ws.next() => {
                let Some(Ok(frame)) = frame else { break };
                if let Some((code, _)) = frame.as_close() {
                    if let Some(c) = lock(&world).connections.get_mut(idx) {
                        c.client_close = Some(u16::from(code));
                    }
                    break;
                }
                let Some(payload) = frame.as_text().and_then(|t| serde_json::from_str::<Value>(t).ok()) else {
                    continue;
                };
                queue = lock(&world).on_client(idx, payload);
            }
            ctl = rx.recv() => match ctl {
                Some(ctl) => queue.push(ctl),
                None => break,
            },
        }
    }
    lock(&world).ended(idx);
}
