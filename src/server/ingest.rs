//! The ingest handler: the checks of one Crisp request, in order (path,
//! method, key — or a Plugin Hook's signature, checked once the body is
//! read —, content type, declared size, body within `max_body` and
//! `body_read_timeout`, JSON envelope), routing, and the answer — 200 only
//! after [`Store::accept`] committed. Logs each outcome without the query
//! string (which holds the key).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, EXPECT, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{Body, Shared, busy, error, respond, slack_events};
use crate::event::Event;
use crate::secret::HookKey;
use crate::signing;
use crate::store::{Accepted, NewEvent, StoreError};

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

/// After a 413, how much of the rest of the body is read and discarded
/// (within `body_read_timeout`, while the answer is sent) before the
/// connection is closed. Many HTTP
/// clients write the whole body before they read the answer; closing with
/// unread data makes the kernel reset the connection, and such a client
/// sees a broken pipe instead of the 413. Discarding holds no memory.
pub const DRAIN_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// While draining after a 413, how long the rest of the body may pause
/// before the connection is closed.
const DRAIN_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// What the ingest handler needs.
pub(super) struct Ingest {
    shared: Arc<Shared>,
    /// [`BODY_BUDGET_BYTES`] (or `max_body` at start, if larger), in
    /// [`BUDGET_UNIT`]s.
    body_budget: Arc<Semaphore>,
    budget_units: u32,
}

/// Why a body could not be read whole.
pub(super) enum BodyError {
    /// Over `max_body`; the rest was drained (or the drain gave up).
    TooLarge,
    Timeout,
    Broken(String),
}

impl Ingest {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        let max_body = shared.live.get().config.server.max_body;
        let budget_units = u32::try_from(BODY_BUDGET_BYTES.max(max_body).div_ceil(BUDGET_UNIT))
            .unwrap_or(u32::MAX);
        Self {
            shared,
            body_budget: Arc::new(Semaphore::new(budget_units as usize)),
            budget_units,
        }
    }

    /// Answers one ingest request, and logs and counts the outcome.
    pub(super) async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let span = info_span!("ingest", %peer, method = %req.method(), path = req.uri().path());
        async move {
            let (resp, event, reason) = self.ingest(req).await;
            let status = resp.status().as_u16();
            let duplicate = reason.as_deref() == Some("duplicate");
            let outcome = match status {
                200..=299 if duplicate => "duplicate",
                200..=299 => "accepted",
                401 => "unauthorized",
                413 => "too_large",
                503 => "unavailable",
                _ => "invalid",
            };
            self.shared.metrics.event(event.as_deref(), outcome);
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            if duplicate {
                info!(
                    status,
                    event = event.as_deref().unwrap_or(""),
                    latency_ms,
                    "duplicate of an event accepted in the last 24 h; nothing stored"
                );
            } else if resp.status().is_success() {
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

    /// The checks, in order. Returns the answer, the event name if known,
    /// and a reason for a rejection (for the log).
    async fn ingest(
        &self,
        req: Request<Incoming>,
    ) -> (Response<Body>, Option<String>, Option<String>) {
        let relay = self.shared.live.get();
        let cfg = &relay.config.server;
        let reject =
            |status: StatusCode, msg: String| (error(status, msg.clone()), None, Some(msg));
        let too_large = || {
            let msg = format!("body is larger than the {} byte limit", cfg.max_body);
            let mut r = error(StatusCode::PAYLOAD_TOO_LARGE, msg.clone());
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            (r, None, Some(msg))
        };

        // Crisp's hooks on `server.path`; Slack's Events API on the path of
        // targets whose replies come from Slack.
        let slack = slack_events::secrets_for(&relay.config, req.uri().path());
        if req.uri().path() != cfg.path && slack.is_empty() {
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
        // A Crisp Plugin Hook proves itself with a signature over its body
        // (checked once the body is read); a Website Hook with `?key=`.
        let slack_headers = (!slack.is_empty()).then(|| slack_events::Headers::of(&req));
        let signed = match &cfg.plugin_secret {
            _ if slack_headers.is_some() => None,
            Some(_) if !key_ok(req.uri().query(), &cfg.keys) => {
                let header = |name: &str| {
                    req.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                match header("x-crisp-signature") {
                    Some(sig) => Some((header("x-crisp-request-timestamp"), sig)),
                    None => return reject(StatusCode::UNAUTHORIZED, "missing or wrong key".into()),
                }
            }
            Some(_) => None,
            None if key_ok(req.uri().query(), &cfg.keys) => None,
            None => return reject(StatusCode::UNAUTHORIZED, "missing or wrong key".into()),
        };
        if let Some(ct) = req.headers().get(CONTENT_TYPE)
            && !is_json_content_type(ct)
        {
            return reject(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content type must be application/json".into(),
            );
        }
        let deadline = tokio::time::Instant::now() + cfg.body_read_timeout;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > cfg.max_body) {
            // A client waiting for `100 Continue` has sent nothing: do not
            // ask for the body only to throw it away.
            if req.headers().get(EXPECT).is_none() {
                tokio::spawn(drain(req.into_body(), 0, deadline));
            }
            return too_large();
        }

        // Reserve the body's memory first (see BODY_BUDGET_BYTES). Waiting
        // for it counts against the body timeout; the body is not read
        // meanwhile (the client is held back by TCP flow control).
        let need = declared.unwrap_or(cfg.max_body).min(cfg.max_body);
        let units = u32::try_from(need.div_ceil(BUDGET_UNIT))
            .unwrap_or(u32::MAX)
            .min(self.budget_units);
        let reserved =
            tokio::time::timeout_at(deadline, self.body_budget.clone().acquire_many_owned(units))
                .await;
        // Held until the answer: the body and its copies live until then.
        let _reserved = match reserved {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => {
                let why = "the relay is busy; retry shortly";
                return (busy(why), None, Some("body memory budget exhausted".into()));
            }
        };

        let capacity = declared.unwrap_or(0).min(cfg.max_body);
        let body = match read_body(req.into_body(), cfg.max_body, capacity, deadline).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => return too_large(),
            Err(BodyError::Timeout) => {
                return reject(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("body not received within {:?}", cfg.body_read_timeout),
                );
            }
            Err(BodyError::Broken(why)) => {
                return reject(
                    StatusCode::BAD_REQUEST,
                    format!("could not read body: {why}"),
                );
            }
        };

        let received_at = self.shared.clock.now_ms();
        if let Some(headers) = &slack_headers {
            return slack_events::accept(&self.shared, &slack, headers, &body).await;
        }
        if let (Some((timestamp, signature)), Some(secret)) = (&signed, &cfg.plugin_secret)
            && let Err(e) = signing::crisp(
                secret.expose().as_bytes(),
                timestamp.as_deref(),
                Some(signature),
                &body,
                received_at,
            )
        {
            let answer = error(StatusCode::UNAUTHORIZED, "missing or wrong key");
            return (answer, None, Some(format!("plugin hook: {e}")));
        }
        let event = match Event::parse(&body, received_at) {
            Ok(e) => e,
            Err(e) => return reject(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let name = event.name().to_owned();
        let mut deliveries = relay.plan(&event);
        // A reply the relay sent to Crisp, coming back: not into the
        // threads again (other targets still get it).
        if let Some(keys) = slack_events::echo_keys(&event)
            && !deliveries.is_empty()
        {
            match self.shared.store.remembered(&keys).await {
                Ok(true) => {
                    let before = deliveries.len();
                    deliveries.retain(|d| {
                        relay
                            .config
                            .targets
                            .iter()
                            .find(|t| t.name == d.target)
                            .is_none_or(|t| t.threads != crate::model::Threads::PerConversation)
                    });
                    info!(event = %name, skipped = before - deliveries.len(), "an agent's reply relayed to Crisp came back; not posted into its threads again");
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(error = %e, "cannot tell whether the event is a reply coming back; answering 503");
                    return (
                        busy("the relay is busy; retry shortly"),
                        Some(name),
                        Some(e.to_string()),
                    );
                }
            }
        }
        let count = deliveries.len();
        let new_event = NewEvent {
            received_at_ms: received_at,
            website_id: event.website_id().to_owned(),
            name: name.clone(),
            timestamp_ms: event.timestamp(),
            // The body is valid JSON, hence valid UTF-8.
            body: String::from_utf8_lossy(&body).into_owned(),
            conversation: event.conversation(),
            dedupe: event.dedupe_key(),
        };
        match self.shared.store.accept(new_event, deliveries).await {
            Ok(Accepted::New(_)) => (
                respond(
                    StatusCode::OK,
                    json!({"accepted": true, "deliveries": count}),
                ),
                Some(name),
                None,
            ),
            // Crisp sent it again (a retry after a lost answer): it is
            // already queued; 200 so Crisp stops, and nothing twice.
            Ok(Accepted::Duplicate) => (
                respond(
                    StatusCode::OK,
                    json!({"accepted": true, "duplicate": true, "deliveries": 0}),
                ),
                Some(name),
                Some("duplicate".into()),
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
}

/// Reads `body` whole, at most `max` bytes, by `deadline`. Past `max`, the
/// rest is drained (see [`DRAIN_MAX_BYTES`]) and the answer is too large.
pub(super) async fn read_body(
    mut body: Incoming,
    max: u64,
    capacity: u64,
    deadline: tokio::time::Instant,
) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => return Ok(out),
            Ok(Some(Err(e))) => return Err(BodyError::Broken(with_sources(&e))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if out.len() as u64 + data.len() as u64 > max {
            tokio::spawn(drain(body, out.len() as u64 + data.len() as u64, deadline));
            return Err(BodyError::TooLarge);
        }
        out.extend_from_slice(&data);
    }
}

/// Reads and discards the rest of `body` (`seen` bytes of it already
/// read) until it ends, [`DRAIN_MAX_BYTES`] are read, or `deadline`, while
/// the 413 goes out: run beside the answer, it keeps the connection reading
/// so a client still writing its body is not reset before it reads it.
async fn drain(mut body: Incoming, mut seen: u64, deadline: tokio::time::Instant) {
    let drained = tokio::time::timeout_at(deadline, async {
        while seen <= DRAIN_MAX_BYTES {
            // A client that sends nothing more (it waits for the answer
            // first) is let go soon instead of at the body timeout.
            match tokio::time::timeout(DRAIN_IDLE, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                Ok(Some(Err(_)) | None) | Err(_) => return,
            }
        }
    })
    .await;
    if drained.is_err() {
        debug!(
            bytes = seen,
            "stopped reading an oversized body at the body timeout"
        );
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

/// Whether the query has `key=K` for a configured K. The value is compared
/// exactly as written in the URL, and also with its `%XX` escapes decoded
/// (`+` stays a `+`, never a space): a key `a+b` matches `?key=a+b` and
/// `?key=a%2Bb`. Every configured key is compared (constant time each), so
/// timing does not say which one matched.
fn key_ok(query: Option<&str>, keys: &[HookKey]) -> bool {
    let Some(query) = query else { return false };
    let mut ok = false;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "key" {
            continue;
        }
        let raw = value.as_bytes();
        let decoded: Cow<'_, [u8]> = percent_encoding::percent_decode(raw).into();
        for k in keys {
            ok |= k.matches(raw);
            if *decoded != *raw {
                ok |= k.matches(&decoded);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_as_configured_raw_or_percent_decoded() {
        let keys = vec![
            HookKey::new("k1".into()),
            HookKey::new("s3cr3t/+=".into()),
            HookKey::new("a+b".into()),
            HookKey::new("50%off".into()),
        ];
        let cases = [
            ("key=k1", true),
            ("a=b&key=s3cr3t%2F%2B%3D", true),
            ("key=s3cr3t/+=", true),
            ("key=a+b", true),
            ("key=a%2Bb", true),
            // `+` is never a space.
            ("key=a%20b", false),
            ("key=50%off", true),
            ("key=50%25off", true),
            ("key=K1", false),
            ("key=", false),
            ("key", false),
            ("kee=k1", false),
            ("key=k1x", false),
            ("x=1&key=nope&key=k1", true),
        ];
        for (query, want) in cases {
            assert_eq!(key_ok(Some(query), &keys), want, "{query}");
        }
        assert!(!key_ok(None, &keys));
    }

    #[test]
    fn json_content_types() {
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
