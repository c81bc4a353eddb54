//! The admin listener: `/healthz` (the process runs), `/readyz` (the store
//! takes durable writes; and which targets are not running), `/metrics`
//! (Prometheus) and `POST /-/reload`, and the web console and its API under
//! `/ui/` and `/api/v1/` (see [`crate::console`], which has its own access
//! rule). Meant for 127.0.0.1 or a private network: it shows target names
//! and states, never secrets.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Body, Shared, error, respond};
use crate::console::{self, Console};
use crate::delivery::TargetState;

pub(super) async fn run(listener: TcpListener, state: Arc<Shared>, shutdown: CancellationToken) {
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let console = Arc::new(Console::new(
        console::Deps {
            live: state.live.clone(),
            store: state.store.clone(),
            metrics: state.metrics.clone(),
            reload: state.reload.clone(),
            states: state.states.clone(),
            clock: state.clock,
            window: console::window::Window::default(),
        },
        loopback,
    ));
    let sampler = console.spawn_sampler(shutdown.clone());
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
        let console = console.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let state = state.clone();
            let console = console.clone();
            async move {
                Ok::<_, Infallible>(if console::owns(req.uri().path()) {
                    console.handle(req).await
                } else {
                    handle(&state, &req).await
                })
            }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
    sampler.abort();
}

async fn handle(state: &Shared, req: &Request<Incoming>) -> Response<Body> {
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
        (&Method::GET | &Method::HEAD, "/readyz") => ready(state).await,
        (_, "/healthz" | "/readyz" | "/metrics") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "use GET")
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// `/readyz`: 200 while the store takes durable writes (then Crisp's events
/// are safe, whatever the destinations do), 503 otherwise. Either way the
/// body names the targets whose worker is not running — paused by the
/// destination, down and restarting, or disabled — with the reason.
async fn ready(state: &Shared) -> Response<Body> {
    let mut targets = Map::new();
    let (mut here, mut standby) = (Vec::new(), Vec::new());
    for (name, s) in state.states.all() {
        let mut entry = json!({"state": s.as_str()});
        match s {
            TargetState::Running => {
                here.push(name);
                continue;
            }
            TargetState::Standby => {
                standby.push(name);
                continue;
            }
            TargetState::Paused { reason } => entry["reason"] = Value::String(reason),
            TargetState::Down { reason, restarts } => {
                entry["reason"] = Value::String(reason);
                entry["restarts"] = json!(restarts);
            }
            TargetState::Disabled => {}
        }
        targets.insert(name, entry);
    }
    let degraded = targets.values().any(|t| t["state"] != "disabled");
    let info = state.store.info();
    let mut store = json!({"engine": info.engine});
    if let Some(replica) = info.replica {
        // With several replicas: which targets' leases this one holds,
        // and which run on another.
        store["replica"] = Value::String(replica);
        store["targets_here"] = json!(here);
        store["targets_on_other_replicas"] = json!(standby);
    }
    match state.store.probe().await {
        Ok(()) => {
            let status = if degraded { "degraded" } else { "ready" };
            store["database"] = Value::String("ok".into());
            let mut body = json!({"status": status, "store": store});
            if !targets.is_empty() {
                body["targets_not_running"] = Value::Object(targets);
            }
            respond(StatusCode::OK, body)
        }
        Err(e) => {
            warn!(error = %e, "readiness probe failed");
            store["database"] = Value::String("unavailable".into());
            respond(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "unavailable", "error": e.to_string(), "store": store, "targets_not_running": targets}),
            )
        }
    }
}

/// `/metrics`: queue gauges read from the store now (queued rows only),
/// then every family.
async fn metrics(state: &Shared) -> Response<Body> {
    let engine = state.store.info().engine;
    match state.store.queue_stats().await {
        Ok(stats) => {
            state.metrics.set_queue(&stats, state.clock.now_ms());
            state.metrics.store_up(engine, true);
        }
        Err(e) => {
            warn!(error = %e, "cannot read queue gauges for /metrics");
            state.metrics.store_up(engine, false);
        }
    }
    let mut resp = Response::new(Full::new(Bytes::from(state.metrics.render())));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
