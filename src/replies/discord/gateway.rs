//! The Gateway client: one WebSocket connection to Discord (no shards),
//! kept up until stopped, that hands on each `MESSAGE_CREATE`. This file
//! holds the socket, the timers and the reconnects; what the payloads and
//! close codes mean is in `protocol`.
//!
//! Follows `events/gateway.mdx` and `topics/opcodes-and-status-codes.mdx`
//! (discord-api-docs @ `c98d64bc`): the URL from Get Gateway Bot with
//! `?v=10&encoding=json`; HELLO → the first heartbeat after
//! `heartbeat_interval × jitter`, then one per interval, each with the last
//! `s`; no ACK between two beats → a zombie: close with a code other than
//! 1000/1001 (the session survives), reconnect, resume; op 1 → beat now;
//! IDENTIFY, or RESUME (token, session_id, seq) on the READY's
//! `resume_gateway_url` when there is a session; op 7 → resume; op 9 with
//! `d: true` → resume, else identify anew after 1–5 s; close codes 4004 and
//! 4010–4014 are fatal (told to the sink, then the task ends), 4003, 4007
//! and 4009 start a new session, any other code (or none) resumes.
//! Reconnects wait 1 s doubling to 60 s, except the first after a
//! connection that worked (READY or RESUMED seen) and did not end on an
//! oversized payload (its resume would replay it), which is immediate.
//! IDENTIFYs are at least 5 s apart (one per `max_concurrency` window of
//! 5 s; Discord allows 1,000 a day). Payloads over 16 MiB, unreadable JSON,
//! binary frames and unknown ops are dropped or end the connection (and
//! the session is resumed), never the task.
//!
//! Events wait in a queue for the sink; while it holds 256 the socket is not
//! read (heartbeats go on), so a slow consumer never stalls the heartbeat.
//!
//! UNCONFIRMED in the docs, chosen here: whether 4003 ("not authenticated,
//! or this session has been invalidated") can be resumed (here: identify);
//! what a server's close with 1000/1001 means for the session (here: try to
//! resume, Discord answers op 9 if it cannot); how long to wait after op 9
//! `d: true` (here: as after any other resumable end).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_websockets::{
    ClientBuilder, CloseCode, Connector, Limits, MaybeTlsStream, Message as Frame, WebSocketStream,
};

use super::protocol::{
    Action, GatewayEvent, Next, Proto, close_action, gateway_bot_request, gateway_url,
};
use crate::delivery::transport::{HttpTransport, Transport};
use crate::secret::Secret;

/// The largest payload read; a larger one ends the connection.
const MAX_PAYLOAD: usize = 16 * 1024 * 1024;
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const IDENTIFY_SPACING: Duration = Duration::from_secs(5);
const OUTBOX_MAX: usize = 256;
/// The close code for leaving while keeping the session (not 1000/1001).
const KEEP_SESSION: u16 = 4000;

/// What the client needs. `Debug` shows no token.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The bot's token (without `Bot `).
    pub token: Secret,
    /// Discord's API base, e.g. `https://discord.com/api/v10`.
    pub api: url::Url,
    /// Usually `GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT`.
    pub intents: u64,
}

/// Runs the Gateway client until `stop` is cancelled, a fatal close (told
/// to `sink` as [`GatewayEvent::Fatal`]), or `sink` is closed.
pub async fn run(cfg: GatewayConfig, sink: mpsc::Sender<GatewayEvent>, stop: CancellationToken) {
    let setup = HttpTransport::new().and_then(|t| Ok((t, connector()?)));
    let (transport, tls) = match setup {
        Ok(parts) => parts,
        Err(reason) => {
            tracing::error!(error = %reason, "Discord Gateway client cannot start");
            let _ = sink.send(GatewayEvent::Fatal(reason)).await;
            return;
        }
    };
    Client {
        cfg,
        sink,
        stop,
        transport,
        tls,
        proto: Proto::default(),
        gateway_url: None,
        last_identify: None,
        backoff: BACKOFF_MIN,
        outbox: VecDeque::new(),
    }
    .run()
    .await;
}

/// TLS for `wss://`: rustls with ring and the bundled web roots.
fn connector() -> Result<Connector, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(tokio_rustls::TlsConnector::from(
        Arc::new(tls),
    )))
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a connection ended.
struct Ended {
    next: Next,
    /// The least wait before the next connection.
    at_least: Duration,
    /// It worked (READY or RESUMED was seen).
    healthy: bool,
}

impl Ended {
    fn failed(next: Next) -> Self {
        Self {
            next,
            at_least: Duration::ZERO,
            healthy: false,
        }
    }
}

struct Client {
    cfg: GatewayConfig,
    sink: mpsc::Sender<GatewayEvent>,
    stop: CancellationToken,
    transport: HttpTransport,
    tls: Connector,
    proto: Proto,
    /// From Get Gateway Bot; asked again after it failed to connect.
    gateway_url: Option<url::Url>,
    last_identify: Option<Instant>,
    backoff: Duration,
    outbox: VecDeque<GatewayEvent>,
}

impl Client {
    async fn run(mut self) {
        let mut wait = Duration::ZERO;
        loop {
            if !wait.is_zero() {
                tokio::select! {
                    () = sleep(wait) => {}
                    () = self.stop.cancelled() => return,
                }
            }
            let ended = self.attempt().await;
            if !self.flush().await {
                return;
            }
            match ended.next {
                Next::Stop => return,
                Next::Fatal(reason) => {
                    tracing::error!(reason = %reason, "Discord Gateway client stopped");
                    tokio::select! {
                        _ = self.sink.send(GatewayEvent::Fatal(reason)) => {}
                        () = self.stop.cancelled() => {}
                    }
                    return;
                }
                Next::Resume => {}
                Next::Identify => {
                    self.proto.session = None;
                    self.proto.seq = None;
                }
            }
            wait = if ended.healthy {
                self.backoff = BACKOFF_MIN;
                Duration::ZERO
            } else {
                let w = self.backoff;
                self.backoff = (w * 2).min(BACKOFF_MAX);
                w
            }
            .max(ended.at_least);
            tracing::info!(
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                resume = self.proto.session.is_some(),
                "reconnecting to the Discord Gateway"
            );
        }
    }

    /// Hands the queued events to the sink; `false`: stopped or no sink.
    async fn flush(&mut self) -> bool {
        while let Some(e) = self.outbox.pop_front() {
            tokio::select! {
                sent = self.sink.send(e) => if sent.is_err() { return false },
                () = self.stop.cancelled() => return false,
            }
        }
        true
    }

    /// One connection, from finding its URL to its end.
    async fn attempt(&mut self) -> Ended {
        let resume_url = self
            .proto
            .session
            .as_ref()
            .and_then(|s| s.resume_url.clone());
        let resuming_there = resume_url.is_some();
        let url = match resume_url {
            Some(u) => u,
            None => match self.gateway_url().await {
                Ok(u) => u,
                Err(next) => return Ended::failed(next),
            },
        };
        let connecting = timeout(CONNECT_TIMEOUT, self.connect(&url));
        let result = tokio::select! {
            r = connecting => r.unwrap_or_else(|_| Err("timed out".to_owned())),
            () = self.stop.cancelled() => return Ended::failed(Next::Stop),
        };
        match result {
            Ok(ws) => self.connection(ws).await,
            Err(e) => {
                tracing::warn!(host = url.host_str().unwrap_or(""), error = %e, "cannot connect to the Discord Gateway");
                // "If ... the reconnect fails": next time the URL from Get
                // Gateway Bot, asked anew.
                match &mut self.proto.session {
                    Some(s) if resuming_there => s.resume_url = None,
                    _ => self.gateway_url = None,
                }
                Ended::failed(Next::Resume)
            }
        }
    }

    async fn gateway_url(&mut self) -> Result<url::Url, Next> {
        if let Some(u) = &self.gateway_url {
            return Ok(u.clone());
        }
        let req = gateway_bot_request(&self.cfg.api, &self.cfg.token);
        let answer = tokio::select! {
            a = self.transport.send(&req, HTTP_TIMEOUT) => a,
            () = self.stop.cancelled() => return Err(Next::Stop),
        };
        match answer {
            Ok(a) if a.status == 200 => match gateway_url(&a.body) {
                Some(u) => {
                    self.gateway_url = Some(u.clone());
                    Ok(u)
                }
                None => {
                    tracing::warn!("Discord's Get Gateway Bot answer has no ws:// or wss:// url");
                    Err(Next::Resume)
                }
            },
            Ok(a) if a.status == 401 => Err(Next::Fatal(
                "Discord refused the bot token (401 from Get Gateway Bot): check the Discord bot token in the config (Developer Portal > your application > Bot > Reset Token makes a new one)".to_owned(),
            )),
            Ok(a) => {
                tracing::warn!(status = a.status, "Discord's Get Gateway Bot failed");
                Err(Next::Resume)
            }
            Err(e) => {
                tracing::warn!(error = %e, "Discord's Get Gateway Bot failed");
                Err(Next::Resume)
            }
        }
    }

    async fn connect(&self, url: &url::Url) -> Result<Socket, String> {
        let (ws, _) = ClientBuilder::new()
            .uri(url.as_str())
            .map_err(|e| e.to_string())?
            .connector(&self.tls)
            .limits(Limits::default().max_payload_len(Some(MAX_PAYLOAD)))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(ws)
    }

    /// When to send IDENTIFY (spaced) or RESUME (now).
    fn login_at(&self, now: Instant) -> Instant {
        match (&self.proto.session, self.last_identify) {
            (None, Some(last)) => (last + IDENTIFY_SPACING).max(now),
            _ => now,
        }
    }

    async fn connection(&mut self, mut ws: Socket) -> Ended {
        let mut hello_by = Some(Instant::now() + HELLO_TIMEOUT);
        let mut interval = Duration::ZERO;
        let mut next_beat: Option<Instant> = None;
        let mut login_at: Option<Instant> = None;
        let mut awaiting_ack = false;
        let mut healthy = false;
        let sink = self.sink.clone();
        let stop = self.stop.clone();
        let end = |next, at_least, healthy| Ended {
            next,
            at_least,
            healthy,
        };
        loop {
            let reading = self.outbox.len() < OUTBOX_MAX;
            tokio::select! {
                () = stop.cancelled() => {
                    close(&mut ws, 1000).await;
                    return Ended::failed(Next::Stop);
                }
                permit = sink.reserve(), if !self.outbox.is_empty() => match permit {
                    Ok(p) => {
                        if let Some(e) = self.outbox.pop_front() {
                            p.send(e);
                        }
                    }
                    Err(_) => {
                        close(&mut ws, 1000).await;
                        return Ended::failed(Next::Stop);
                    }
                },
                () = at(hello_by) => {
                    tracing::warn!("no HELLO from the Discord Gateway");
                    close(&mut ws, KEEP_SESSION).await;
                    return Ended::failed(Next::Resume);
                }
                () = at(next_beat) => {
                    if awaiting_ack {
                        tracing::warn!("no heartbeat ACK from the Discord Gateway: reconnecting");
                        close(&mut ws, KEEP_SESSION).await;
                        return end(Next::Resume, Duration::ZERO, healthy);
                    }
                    if send(&mut ws, &self.proto.heartbeat()).await.is_err() {
                        return end(Next::Resume, Duration::ZERO, healthy);
                    }
                    awaiting_ack = true;
                    next_beat = Some(Instant::now() + interval);
                }
                () = at(login_at) => {
                    login_at = None;
                    if self.proto.session.is_none() {
                        self.last_identify = Some(Instant::now());
                    }
                    let login = self.proto.login(&self.cfg.token, self.cfg.intents);
                    if send(&mut ws, &login).await.is_err() {
                        return end(Next::Resume, Duration::ZERO, healthy);
                    }
                }
                frame = ws.next(), if reading => {
                    let frame = match frame {
                        Some(Ok(f)) => f,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "Discord Gateway connection failed");
                            // A resume would replay an oversized payload:
                            // back off rather than loop at once.
                            let oversized = matches!(e, tokio_websockets::Error::PayloadTooLong { .. });
                            return end(Next::Resume, Duration::ZERO, healthy && !oversized);
                        }
                        None => {
                            tracing::warn!("Discord Gateway connection ended without a close code");
                            return end(Next::Resume, Duration::ZERO, healthy);
                        }
                    };
                    if let Some((code, reason)) = frame.as_close() {
                        let code = u16::from(code);
                        tracing::warn!(code, reason, "Discord closed the Gateway connection");
                        return end(close_action(Some(code), self.cfg.intents), Duration::ZERO, healthy);
                    }
                    let Some(text) = frame.as_text() else { continue };
                    match self.proto.on_text(text) {
                        Action::Nothing => {}
                        Action::Hello(every) => {
                            if hello_by.take().is_some() {
                                let now = Instant::now();
                                interval = every;
                                next_beat = Some(now + every.mul_f64(fastrand::f64()));
                                login_at = Some(self.login_at(now));
                            }
                        }
                        Action::Ack => awaiting_ack = false,
                        Action::Beat => {
                            if send(&mut ws, &self.proto.heartbeat()).await.is_err() {
                                return end(Next::Resume, Duration::ZERO, healthy);
                            }
                        }
                        Action::Emit(e) => self.outbox.push_back(e),
                        Action::Up(e) => {
                            healthy = true;
                            tracing::info!(resumed = (e == GatewayEvent::Resumed), "connected to the Discord Gateway");
                            self.outbox.push_back(e);
                        }
                        Action::End(next, at_least) => {
                            close(&mut ws, KEEP_SESSION).await;
                            return end(next, at_least, healthy);
                        }
                    }
                }
            }
        }
    }
}

/// Sleeps until `when`; never wakes for `None`.
async fn at(when: Option<Instant>) {
    match when {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn send(ws: &mut Socket, payload: &Value) -> Result<(), String> {
    match timeout(SEND_TIMEOUT, ws.send(Frame::text(payload.to_string()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot send to the Discord Gateway");
            Err(e.to_string())
        }
        Err(_) => {
            tracing::warn!("sending to the Discord Gateway timed out");
            Err("timed out".to_owned())
        }
    }
}

/// Sends a close frame (best effort) before the socket is dropped.
async fn close(ws: &mut Socket, code: u16) {
    let frame = Frame::close(CloseCode::try_from(code).ok(), "");
    let _ = timeout(CLOSE_TIMEOUT, ws.send(frame)).await;
}
