//! The HTTP side: the ingest listener Crisp posts to, and the admin listener
//! for health checks.
//!
//! Owns request checking (path, method, key, content type, size, JSON
//! envelope), answering with the right status and a small JSON body, and the
//! resource bounds that keep a slow or flooding client from holding the
//! server or its memory: the connection limit, header and body read
//! timeouts, the size of a request head ([`MAX_HEAD_BYTES`]) and the memory
//! all bodies being read may hold at once ([`BODY_BUDGET_BYTES`]). It answers
//! 200 only after [`SqliteStore::accept`] has committed. Service functions
//! never return `Err` (that would drop the connection); every failure is a
//! status. This module must not render templates nor contact destinations.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::event::Event;
use crate::metrics::Metrics;
use crate::reload::{Live, ReloadHandle};
use crate::store::{NewEvent, SqliteStore, StoreError};

type Body = Full<Bytes>;

/// The most a connection buffers while reading a request head (hyper's
/// `max_buf_size`; its default is about 400 KiB). Heads are read before the
/// key is checked, so without this bound anyone could make the relay hold
/// `max_connections` × 400 KiB (400 MiB by default) with heads that never
/// end. Crisp's heads are under 1 KiB; a head that does not fit (a long URL,
/// large or many headers) is answered 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The memory that the bodies being read at once may hold between them (or
/// one `max_body`, if that is larger). Each request reserves its declared
/// `Content-Length` (`max_body` for a chunked body) before reading it, and
/// keeps the reservation until it is answered; one that cannot reserve within
/// `body_read_timeout` is answered 503 with `Retry-After`. Without it,
/// `max_connections` slow bodies (which need a valid key) could hold
/// `max_connections` × `max_body` (1 GiB by default). Crisp's events are a
/// few KiB: thousands fit at once.
pub const BODY_BUDGET_BYTES: u64 = 16 * 1024 * 1024;

/// The body budget is counted in KiB (semaphore permits are `u32`).
const BUDGET_UNIT: u64 = 1024;

/// What the ingest handler needs.
struct Ingest {
    live: Arc<Live>,
    store: SqliteStore,
    metrics: Arc<Metrics>,
    /// [`BODY_BUDGET_BYTES`], in [`BUDGET_UNIT`]s.
    body_budget: Arc<Semaphore>,
    budget_units: u32,
}

/// What the admin handler needs.
struct Admin {
    store: SqliteStore,
    metrics: Arc<Metrics>,
    reload: ReloadHandle,
}

/// Serves ingest (and admin, if given) until `shutdown` is cancelled, then
/// stops accepting, lets in-flight requests finish for up to
/// `server.shutdown_timeout`, and returns.
pub async fn run(
    live: Arc<Live>,
    store: SqliteStore,
    ingest: TcpListener,
    admin: Option<TcpListener>,
    metrics: Arc<Metrics>,
    reload: ReloadHandle,
    shutdown: CancellationToken,
) {
    // Listener settings stay as started; the rest is read per request.
    let server = live.get().config.server.clone();
    let budget_units = u32::try_from(BODY_BUDGET_BYTES.max(server.max_body).div_ceil(BUDGET_UNIT))
        .unwrap_or(u32::MAX);
    let state = Arc::new(Ingest {
        live,
        store: store.clone(),
        metrics: metrics.clone(),
        body_budget: Arc::new(Semaphore::new(budget_units as usize)),
        budget_units,
    });
    let graceful = GracefulShutdown::new();
    let admin_state = Arc::new(Admin {
        store,
        metrics,
        reload,
    });
    let admin_task = admin.map(|l| tokio::spawn(run_admin(l, admin_state, shutdown.clone())));

    let limit = Arc::new(Semaphore::new(server.max_connections));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);

    loop {
        // Take a connection slot first: at the limit, connections wait in the
        // kernel's backlog instead of being accepted and starved.
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = ingest.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let body_timeout = server.body_read_timeout;
        let svc = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle_ingest(&state, req, peer, body_timeout).await) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }

    drop(ingest);
    info!("shutting down: no new connections; waiting for in-flight requests");
    if tokio::time::timeout(server.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(timeout = ?server.shutdown_timeout, "in-flight requests did not finish before the shutdown timeout");
    }
    if let Some(t) = admin_task {
        let _ = t.await;
    }
}

fn respond(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    respond(status, json!({ "error": message.into() }))
}

/// 503 with `Retry-After: 1`: a temporary condition Crisp should retry.
fn busy(why: &str) -> Response<Body> {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, why);
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Answers one ingest request. Logs the outcome without the query string
/// (which holds the key).
async fn handle_ingest(
    state: &Ingest,
    req: Request<Incoming>,
    peer: SocketAddr,
    body_timeout: Duration,
) -> Response<Body> {
    let started = Instant::now();
    let span = info_span!("ingest", %peer, method = %req.method(), path = req.uri().path());
    async move {
        let (resp, event, reason) = ingest(state, req, body_timeout).await;
        let status = resp.status().as_u16();
        let outcome = match status {
            200..=299 => "accepted",
            401 => "unauthorized",
            413 => "too_large",
            503 => "unavailable",
            _ => "invalid",
        };
        state.metrics.event(event.as_deref(), outcome);
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        if resp.status().is_success() {
            debug!(
                status,
                event = event.as_deref().unwrap_or(""),
                latency_ms,
                "accepted"
            );
        } else {
            info!(
                status,
                event = event.as_deref().unwrap_or(""),
                reason = reason.as_deref().unwrap_or(""),
                latency_ms,
                "rejected"
            );
        }
        resp
    }
    .instrument(span)
    .await
}

/// The checks, in order. Returns the answer, the event name if known, and a
/// reason for a rejection (for the log).
async fn ingest(
    state: &Ingest,
    req: Request<Incoming>,
    body_timeout: Duration,
) -> (Response<Body>, Option<String>, Option<String>) {
    let relay = state.live.get();
    let cfg = &relay.config.server;
    let reject = |status: StatusCode, msg: String| (error(status, msg.clone()), None, Some(msg));

    if req.uri().path() != cfg.path {
        return reject(StatusCode::NOT_FOUND, "not found".into());
    }
    if req.method() != Method::POST {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed; Crisp sends POST", req.method()),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return (r, None, Some("method not allowed".into()));
    }
    if !key_ok(req.uri().query(), &cfg.keys) {
        return reject(StatusCode::UNAUTHORIZED, "missing or wrong key".into());
    }
    if let Some(ct) = req.headers().get(CONTENT_TYPE)
        && !is_json_content_type(ct)
    {
        return reject(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content type must be application/json".into(),
        );
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cfg.max_body) {
        return reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is larger than the {} byte limit", cfg.max_body),
        );
    }

    // Reserve the body's memory first (see BODY_BUDGET_BYTES). Waiting for it
    // counts against the body timeout; the body is not read meanwhile (the
    // client is held back by TCP flow control).
    let deadline = tokio::time::Instant::now() + body_timeout;
    let need = declared.unwrap_or(cfg.max_body).min(cfg.max_body);
    let units = u32::try_from(need.div_ceil(BUDGET_UNIT))
        .unwrap_or(u32::MAX)
        .min(state.budget_units);
    let reserved = tokio::time::timeout_at(
        deadline,
        state.body_budget.clone().acquire_many_owned(units),
    )
    .await;
    // Held until the answer: the body and its copies live until then.
    let _reserved = match reserved {
        Ok(Ok(permit)) => permit,
        Ok(Err(_)) | Err(_) => {
            let why = "the relay is busy; retry shortly";
            return (busy(why), None, Some("body memory budget exhausted".into()));
        }
    };

    let limited = Limited::new(
        req.into_body(),
        usize::try_from(cfg.max_body).unwrap_or(usize::MAX),
    );
    let body = match tokio::time::timeout_at(deadline, limited.collect()).await {
        Err(_) => {
            return reject(
                StatusCode::REQUEST_TIMEOUT,
                format!("body not received within {body_timeout:?}"),
            );
        }
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return reject(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body is larger than the {} byte limit", cfg.max_body),
            );
        }
        Ok(Err(e)) => {
            return reject(
                StatusCode::BAD_REQUEST,
                format!("could not read body: {}", with_sources(e.as_ref())),
            );
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };

    let received_at = crate::now_ms();
    let event = match Event::parse(&body, received_at) {
        Ok(e) => e,
        Err(e) => return reject(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let name = event.name().to_owned();
    let deliveries = relay.plan(&event);
    let count = deliveries.len();
    // The body is valid JSON, hence valid UTF-8.
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let new_event = NewEvent {
        received_at_ms: received_at,
        website_id: event.website_id().to_owned(),
        name: name.clone(),
        timestamp_ms: event.timestamp(),
        body: body_text,
    };
    match state.store.accept(new_event, deliveries).await {
        Ok(_) => (
            respond(
                StatusCode::OK,
                json!({"accepted": true, "deliveries": count}),
            ),
            Some(name),
            None,
        ),
        Err(e) => {
            let why = match &e {
                StoreError::Full(_) => "the relay is busy; retry shortly",
                StoreError::Closed => "the relay is shutting down; retry shortly",
                _ => "the store cannot accept events right now; retry shortly",
            };
            warn!(error = %e, "event not stored; answering 503");
            (busy(why), Some(name), Some(e.to_string()))
        }
    }
}

/// `e` and its sources, `: `-separated: hyper's body errors say what was
/// wrong (a bad chunk size, say) only in their source.
fn with_sources(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Whether the query has `key=K` for a configured K. Every configured key is
/// compared (constant time each), so timing does not say which one matched.
fn key_ok(query: Option<&str>, keys: &[crate::secret::HookKey]) -> bool {
    let Some(query) = query else { return false };
    let mut ok = false;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if name == "key" {
            for k in keys {
                ok |= k.matches(value.as_bytes());
            }
        }
    }
    ok
}

/// `application/json`, `application/*+json` (any parameters) count as JSON.
fn is_json_content_type(v: &HeaderValue) -> bool {
    let Ok(s) = v.to_str() else { return false };
    let mime = s
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

async fn run_admin(listener: TcpListener, state: Arc<Admin>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let limit = Arc::new(Semaphore::new(64));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5));
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = shutdown.cancelled() => break,
        };
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(s) => s, Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue } },
            () = shutdown.cancelled() => break,
        };
        let state = state.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(admin(&state, &req).await) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
}

async fn admin(state: &Admin, req: &Request<Incoming>) -> Response<Body> {
    let store = &state.store;
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => metrics(state).await,
        (&Method::POST, "/-/reload") => match state.reload.reload().await {
            Ok(()) => respond(StatusCode::OK, json!({"reloaded": true})),
            Err(errors) => error(StatusCode::BAD_REQUEST, errors),
        },
        (_, "/-/reload") => {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            r
        }
        (&Method::GET | &Method::HEAD, "/healthz") => {
            respond(StatusCode::OK, json!({"status": "ok"}))
        }
        (&Method::GET | &Method::HEAD, "/readyz") => match store.probe().await {
            Ok(()) => respond(StatusCode::OK, json!({"status": "ready"})),
            Err(e) => {
                warn!(error = %e, "readiness probe failed");
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"status": "unavailable", "error": e.to_string()}),
                )
            }
        },
        (_, "/healthz" | "/readyz" | "/metrics") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "use GET")
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// `/metrics`: queue gauges read from the store now, then every family.
async fn metrics(state: &Admin) -> Response<Body> {
    match state.store.queue_stats().await {
        Ok(rows) => state.metrics.set_queue(&rows, crate::now_ms()),
        Err(e) => warn!(error = %e, "cannot read queue gauges for /metrics"),
    }
    let mut resp = Response::new(Full::new(Bytes::from(state.metrics.render())));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::HookKey;

    #[test]
    fn keys_and_content_types() {
        let keys = vec![HookKey::new("k1".into()), HookKey::new("s3cr3t/+=".into())];
        assert!(key_ok(Some("key=k1"), &keys));
        assert!(key_ok(Some("a=b&key=s3cr3t%2F%2B%3D"), &keys));
        assert!(!key_ok(Some("key=K1"), &keys));
        assert!(!key_ok(Some("key="), &keys));
        assert!(!key_ok(Some("kee=k1"), &keys));
        assert!(!key_ok(None, &keys));
        for (ct, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/vnd.crisp+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("multipart/form-data; boundary=x", false),
        ] {
            assert_eq!(
                is_json_content_type(&HeaderValue::from_static(ct)),
                ok,
                "{ct}"
            );
        }
    }
}
