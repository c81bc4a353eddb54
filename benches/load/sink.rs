//! The sink: a local destination for the relay's webhook target. It counts
//! what arrives, checks each connection's order, finds duplicates, measures
//! end-to-end latency from the bench tag, and can fail, rate-limit or stall
//! on request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::Res;

/// How the sink answers.
#[derive(Clone, Copy, Default)]
pub struct SinkBehaviour {
    /// Percentage of requests answered 503.
    pub fail_percent: u32,
    /// Discord-like bucket: `Some((limit, window))` answers 429 with
    /// Discord's headers and body once `limit` requests arrived in the
    /// current window.
    pub bucket: Option<(u32, Duration)>,
    /// Percentage of requests answered 429 by a shared limit (Discord's
    /// `X-RateLimit-Scope: shared`, `retry_after` 50 ms), whatever the
    /// bucket says: the relay cannot foresee these.
    pub shared_429_percent: u32,
}

#[derive(Default)]
pub struct SinkBook {
    pub run: String,
    /// Last `n` seen per connection, for the order check.
    pub last: HashMap<u32, u64>,
    pub seen: std::collections::HashSet<(u32, u64)>,
    pub e2e_us: Vec<u32>,
    /// When each tagged event of the run arrived (µs from the epoch),
    /// repeats included, in arrival order.
    pub arrived_us: Vec<u64>,
    pub out_of_order: u64,
    pub duplicates: u64,
    pub window_start: Option<Instant>,
    pub window_count: u32,
}

pub struct Sink {
    pub epoch: Instant,
    pub addr: SocketAddr,
    pub requests: AtomicU64,
    pub accepted: AtomicU64,
    pub failed_503: AtomicU64,
    pub limited_429: AtomicU64,
    pub behaviour: Mutex<SinkBehaviour>,
    pub book: Mutex<SinkBook>,
    pub rng: Mutex<fastrand::Rng>,
    /// While `true`, requests wait (before being read) until it turns
    /// `false`: a destination that stalls, so a backlog builds up.
    pub held: tokio::sync::watch::Sender<bool>,
}

impl Sink {
    pub async fn start(epoch: Instant) -> Res<Arc<Self>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let sink = Arc::new(Self {
            epoch,
            addr: listener.local_addr()?,
            requests: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            failed_503: AtomicU64::new(0),
            limited_429: AtomicU64::new(0),
            behaviour: Mutex::new(SinkBehaviour::default()),
            book: Mutex::new(SinkBook::default()),
            rng: Mutex::new(fastrand::Rng::with_seed(7)),
            held: tokio::sync::watch::Sender::new(false),
        });
        let s = sink.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let s = s.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let s = s.clone();
                            async move { Ok::<_, Infallible>(s.answer(req).await) }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(sink)
    }

    /// Starts a new run: forgets what arrived before.
    pub fn reset(&self, run: &str, behaviour: SinkBehaviour) {
        *self.book.lock().unwrap_or_else(|p| p.into_inner()) = SinkBook {
            run: run.to_owned(),
            ..SinkBook::default()
        };
        *self.behaviour.lock().unwrap_or_else(|p| p.into_inner()) = behaviour;
        for c in [
            &self.requests,
            &self.accepted,
            &self.failed_503,
            &self.limited_429,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    pub fn unique(&self) -> u64 {
        self.book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seen
            .len() as u64
    }

    /// `true` for `percent` out of 100 calls, at random (seeded).
    pub fn chance(&self, percent: u32) -> bool {
        percent > 0
            && self
                .rng
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .u32(0..100)
                < percent
    }

    pub async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let _ = self.held.subscribe().wait_for(|held| !held).await;
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return reply(StatusCode::BAD_REQUEST, "{}"),
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let behaviour = *self.behaviour.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut remaining = None;
        if let Some((limit, window)) = behaviour.bucket {
            let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
            let start = *book.window_start.get_or_insert(now);
            if now.duration_since(start) >= window {
                book.window_start = Some(now);
                book.window_count = 0;
            }
            let reset_after =
                window.saturating_sub(now.duration_since(book.window_start.unwrap_or(now)));
            if book.window_count >= limit {
                drop(book);
                self.limited_429.fetch_add(1, Ordering::Relaxed);
                let secs = reset_after.as_secs_f64().max(0.001);
                return Response::builder()
                    .status(StatusCode::TOO_MANY_REQUESTS)
                    .header("content-type", "application/json")
                    .header("retry-after", format!("{}", secs.ceil() as u64))
                    .header("x-ratelimit-limit", limit.to_string())
                    .header("x-ratelimit-remaining", "0")
                    .header("x-ratelimit-reset-after", format!("{secs:.3}"))
                    .header("x-ratelimit-bucket", "bench")
                    .body(Full::new(Bytes::from(format!(
                        r#"{{"message":"You are being rate limited.","retry_after":{secs:.3},"global":false}}"#
                    ))))
                    .unwrap_or_else(|_| reply(StatusCode::TOO_MANY_REQUESTS, "{}"));
            }
            book.window_count += 1;
            remaining = Some((limit - book.window_count, reset_after));
        }
        if self.chance(behaviour.shared_429_percent) {
            self.limited_429.fetch_add(1, Ordering::Relaxed);
            return Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("content-type", "application/json")
                .header("retry-after", "1")
                .header("x-ratelimit-scope", "shared")
                .body(Full::new(Bytes::from_static(
                    br#"{"message":"You are being rate limited.","retry_after":0.05,"global":false}"#,
                )))
                .unwrap_or_else(|_| reply(StatusCode::TOO_MANY_REQUESTS, "{}"));
        }
        if self.chance(behaviour.fail_percent) {
            self.failed_503.fetch_add(1, Ordering::Relaxed);
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"message":"try later"}"#,
            );
        }
        // One event per request, or an array of them from a batching target.
        let mut events = 0;
        let mut rest = &body[..];
        while let Some((tag, after)) = find_tag(rest) {
            self.record(tag, now);
            events += 1;
            rest = after;
        }
        self.accepted.fetch_add(events.max(1), Ordering::Relaxed);
        let mut resp = Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json");
        if let (Some((limit, _)), Some((left, reset))) = (behaviour.bucket, remaining) {
            resp = resp
                .header("x-ratelimit-limit", limit.to_string())
                .header("x-ratelimit-remaining", left.to_string())
                .header(
                    "x-ratelimit-reset-after",
                    format!("{:.3}", reset.as_secs_f64()),
                )
                .header("x-ratelimit-bucket", "bench");
        }
        resp.body(Full::new(Bytes::from_static(b"{}")))
            .unwrap_or_else(|_| reply(StatusCode::OK, "{}"))
    }

    pub fn record(&self, tag: &str, now: Instant) {
        // run:conn:n:sent_us
        let mut it = tag.split(':');
        let (Some(run), Some(c), Some(n), Some(t)) = (it.next(), it.next(), it.next(), it.next())
        else {
            return;
        };
        let (Ok(c), Ok(n), Ok(t)) = (c.parse::<u32>(), n.parse::<u64>(), t.parse::<u64>()) else {
            return;
        };
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        if book.run != run {
            return;
        }
        let now_us = now.duration_since(self.epoch).as_micros() as u64;
        book.arrived_us.push(now_us);
        if !book.seen.insert((c, n)) {
            book.duplicates += 1;
            return;
        }
        let last = book.last.get(&c).copied().unwrap_or(0);
        if n < last {
            book.out_of_order += 1;
        }
        book.last.insert(c, n.max(last));
        book.e2e_us
            .push(now_us.saturating_sub(t).min(u64::from(u32::MAX)) as u32);
    }
}

pub fn reply(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

/// The first bench tag in `body`, and the bytes after it.
pub fn find_tag(body: &[u8]) -> Option<(&str, &[u8])> {
    const NEEDLE: &[u8] = b"\"bench\":\"";
    let at = body.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let len = body[at..].iter().position(|&b| b == b'"')?;
    let tag = std::str::from_utf8(&body[at..at + len]).ok()?;
    Some((tag, &body[at + len..]))
}
