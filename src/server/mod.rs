//! The HTTP side: the ingest listener Crisp posts to (`ingest`), and the
//! admin listener for health, readiness, metrics and reloads (`admin`).
//!
//! Owns the listeners' loops and the resource bounds that keep a slow or
//! flooding client from holding the server or its memory: the connection
//! limit, header and body read timeouts, the size of a request head
//! ([`MAX_HEAD_BYTES`]) and the memory all bodies being read may hold at
//! once ([`ingest::BODY_BUDGET_BYTES`]). Timeouts come from the
//! configuration in force when a connection (header timeout) or request
//! (body timeout) starts, so a reload changes them; the connection limit
//! and addresses are start-up settings. Service functions never return
//! `Err` (that would drop the connection); every failure is a status. This
//! module must not render templates nor contact destinations.

mod admin;
mod ingest;
mod slack_events;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use ingest::{BODY_BUDGET_BYTES, DRAIN_MAX_BYTES};

use crate::clock::Clock;
use crate::config::Startup;
use crate::delivery::TargetStates;
use crate::metrics::Metrics;
use crate::reload::{Live, ReloadHandle};
use crate::store::Store;

type Body = Full<Bytes>;

/// The most a connection buffers while reading a request head (hyper's
/// `max_buf_size`; its default is about 400 KiB). Heads are read before the
/// key is checked, so without this bound anyone could make the relay hold
/// `max_connections` × 400 KiB (400 MiB by default) with heads that never
/// end. Crisp's heads are under 1 KiB; a head that does not fit (a long URL,
/// large or many headers) is answered 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What both listeners' handlers share.
pub struct Shared {
    pub live: Arc<Live>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub reload: ReloadHandle,
    pub states: TargetStates,
    pub clock: Clock,
}

/// Serves ingest (and admin, if given) until `shutdown` is cancelled, then
/// stops accepting, lets in-flight requests finish for up to
/// `server.shutdown_timeout`, and returns.
pub async fn run(
    shared: Shared,
    startup: Startup,
    ingest: TcpListener,
    admin: Option<TcpListener>,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(shared);
    let state = Arc::new(ingest::Ingest::new(shared.clone()));
    let graceful = GracefulShutdown::new();
    let admin_task = admin.map(|l| tokio::spawn(admin::run(l, shared.clone(), shutdown.clone())));

    let limit = Arc::new(Semaphore::new(startup.max_connections));
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
        let header_timeout = shared.live.get().config.server.header_read_timeout;
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(MAX_HEAD_BYTES)
            .keep_alive(true);
        let state = state.clone();
        let svc = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(state.handle(req, peer).await) }
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
    let timeout = shared.live.get().config.server.shutdown_timeout;
    info!("shutting down: no new connections; waiting for in-flight requests");
    if tokio::time::timeout(timeout, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            ?timeout,
            "in-flight requests did not finish before the shutdown timeout"
        );
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
