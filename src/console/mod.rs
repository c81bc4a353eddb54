//! The web console and its JSON API, served by the admin listener under
//! `/ui/` and `/api/v1/`.
//!
//! Owns: the access rule (`auth`, pure), the session cookie (`session`,
//! pure), the hourly figures (`window`), reading the relay's state into
//! view structs (`data`), the HTML pages (`pages`, server-rendered with
//! escaping on) and the JSON API (`api`), and here the request plumbing —
//! routing, credentials, body reading, the security headers every answer
//! carries — and the three actions (replay, purge, reload).
//!
//! Must not: show a secret (tokens, webhook URLs past their host, header
//! values) in any page, answer, log or error; change anything on a GET;
//! accept a change without a credential; run scripts or styles inline (the
//! CSP forbids them). Dependencies point one way: `server` calls this
//! module; this module reads the store, metrics, reload handle and
//! configuration, and knows nothing of `server`.

mod api;
pub mod auth;
mod data;
mod filter;
mod history;
mod history_pages;
mod pages;
pub mod session;
pub mod window;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, HOST, HeaderName, HeaderValue,
    LOCATION, ORIGIN, SET_COOKIE,
};
use hyper::{Method, Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::clock::Clock;
use crate::delivery::TargetStates;
use crate::metrics::Metrics;
use crate::reload::{Live, ReloadHandle};
use crate::store::{Op, Store, StoreError};
use auth::{Credential, Decision, Facts, Refusal};
use window::Window;

type Body = Full<Bytes>;

/// The largest request body the console reads (forms and JSON are tiny).
const MAX_BODY: usize = 64 * 1024;
/// How long reading a body may take.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The headers every console and API answer carries.
const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("cache-control", "no-store"),
];

/// What the console reads and acts on.
pub struct Deps {
    pub live: Arc<Live>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub reload: ReloadHandle,
    pub states: TargetStates,
    pub clock: Clock,
    pub window: Window,
}

/// The console of one admin listener.
pub struct Console {
    deps: Deps,
    /// The admin listener is on a loopback address.
    loopback: bool,
}

/// Whether the console answers `path` (else the admin listener does).
pub fn owns(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/") || path == "/api/v1" || path.starts_with("/api/v1/")
}

/// What an action did, or why it could not.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("{0}")]
    BadRequest(String),
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("the configuration was rejected; still running the previous one:\n{0}")]
    Reload(String),
}

/// Which dead letters to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayWhat {
    Ids(Vec<i64>),
    Target(String),
    All,
}

/// A request's facts the handlers need.
pub(crate) struct Ctx<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// How the request was authenticated (for the audit log).
    pub via: &'static str,
}

impl Ctx<'_> {
    /// The first value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

impl Console {
    pub fn new(deps: Deps, loopback: bool) -> Self {
        Self { deps, loopback }
    }

    /// Samples the per-target counters once a minute until `stop`.
    pub fn spawn_sampler(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let live = self.deps.live.clone();
        tokio::spawn(window::run_sampler(
            self.deps.window.clone(),
            self.deps.metrics.clone(),
            move || {
                live.get()
                    .config
                    .targets
                    .iter()
                    .map(|t| t.name.clone())
                    .collect()
            },
            self.deps.clock,
            stop,
        ))
    }

    /// Answers one request under `/ui/` or `/api/v1/`.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let mut resp = self.answer(req).await;
        let headers = resp.headers_mut();
        for (name, value) in SECURITY_HEADERS {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().map(str::to_owned);
        let method = req.method().clone();
        let is_api = path == "/api/v1" || path.starts_with("/api/v1/");
        if path == "/ui" {
            return redirect("/ui/", None);
        }
        let allowed = if is_api {
            api::allowed(&path)
        } else {
            pages::allowed(&path)
        };
        let Some(allowed) = allowed else {
            return if is_api {
                api::error(
                    StatusCode::NOT_FOUND,
                    "no such API endpoint; see /api/v1/ in the README",
                )
            } else {
                pages::not_found(&path)
            };
        };
        let safe = matches!(method, Method::GET | Method::HEAD);
        let ok = match allowed {
            Allowed::Get => safe,
            Allowed::Post => method == Method::POST,
            Allowed::GetPost => safe || method == Method::POST,
        };
        if !ok {
            let mut r = if is_api {
                api::error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("use {}", allowed.header()),
                )
            } else {
                pages::message(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Method not allowed",
                    &format!("Use {}.", allowed.header()),
                )
            };
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allowed.header()));
            return r;
        }

        let relay = self.deps.live.get();
        let token = relay.config.admin.token.as_ref();
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        let bearer = header(AUTHORIZATION).and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .map(str::trim)
        });
        let cookie = session::from_headers(
            req.headers()
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let now_ms = self.deps.clock.now_ms();
        let credential = match (token, bearer, cookie) {
            (None, _, _) => Credential::None,
            (Some(t), Some(b), _) => Credential::Bearer(t.matches(b.as_bytes())),
            (Some(t), None, Some(c)) => Credential::Cookie(session::verify(t, c, now_ms)),
            (Some(_), None, None) => Credential::None,
        };
        let facts = Facts {
            loopback: self.loopback,
            token_configured: token.is_some(),
            credential,
            safe,
            origin: auth::origin_of(header(ORIGIN), header(HOST)),
            fetch_same_origin: header(HeaderName::from_static("sec-fetch-site"))
                .is_some_and(|v| v.eq_ignore_ascii_case("same-origin")),
            public: !is_api && pages::is_public(&path),
        };
        if let Decision::Refuse(why) = auth::decide(&facts) {
            if !safe {
                info!(path = %path, refused = ?why, "console: action refused");
            }
            return if is_api {
                api::error(
                    StatusCode::from_u16(why.status()).unwrap_or(StatusCode::FORBIDDEN),
                    why.message(),
                )
            } else if why == Refusal::NeedCredential && safe {
                redirect("/ui/login", None)
            } else {
                pages::refused(why)
            };
        }
        let via = match credential {
            Credential::Bearer(true) => "bearer",
            Credential::Cookie(true) => "session",
            _ => "none",
        };
        let body = if safe {
            Bytes::new()
        } else {
            match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(e) => {
                    return if is_api {
                        api::error(StatusCode::BAD_REQUEST, e)
                    } else {
                        pages::message(StatusCode::BAD_REQUEST, "Bad request", &e)
                    };
                }
            }
        };
        let ctx = Ctx {
            method: &method,
            path: &path,
            query: query.as_deref(),
            via,
        };
        if is_api {
            api::handle(self, &ctx, &body).await
        } else {
            pages::handle(self, &ctx, &body).await
        }
    }

    /// Puts dead letters back in the queue; answers how many.
    pub(crate) async fn replay(&self, what: &ReplayWhat, via: &str) -> Result<u64, ActionError> {
        let store = &self.deps.store;
        let n = match what {
            ReplayWhat::Ids(ids) if ids.is_empty() => {
                return Err(ActionError::BadRequest(
                    "select at least one dead letter".into(),
                ));
            }
            ReplayWhat::Ids(ids) => {
                let mut n = 0;
                for &id in ids {
                    n += store
                        .apply(Op::Replay {
                            id: Some(id),
                            target: None,
                        })
                        .await?;
                }
                n
            }
            ReplayWhat::Target(t) => {
                store
                    .apply(Op::Replay {
                        id: None,
                        target: Some(t.clone()),
                    })
                    .await?
            }
            ReplayWhat::All => {
                store
                    .apply(Op::Replay {
                        id: None,
                        target: None,
                    })
                    .await?
            }
        };
        info!(replayed = n, what = ?what, via, "console: dead letters replayed");
        Ok(n)
    }

    /// Deletes dead letters (older than `older_than`, if given).
    pub(crate) async fn purge(
        &self,
        older_than: Option<&str>,
        via: &str,
    ) -> Result<u64, ActionError> {
        let now = self.deps.clock.now_ms();
        let before_ms = match older_than
            .map(str::trim)
            .filter(|s| !s.is_empty() && *s != "all")
        {
            None => now + 1,
            Some(text) => {
                let d = crate::config::parse_duration(text).map_err(|e| {
                    ActionError::BadRequest(format!("older_than `{text}`: {e} (e.g. `7d`, `24h`)"))
                })?;
                now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }
        };
        let n = self.deps.store.apply(Op::PurgeDead { before_ms }).await?;
        info!(
            purged = n,
            older_than = older_than.unwrap_or("all"),
            via,
            "console: dead letters purged"
        );
        Ok(n)
    }

    /// Re-reads the configuration (what `POST /-/reload` does).
    pub(crate) async fn reload(&self, via: &str) -> Result<(), ActionError> {
        let r = self.deps.reload.reload().await.map_err(ActionError::Reload);
        info!(ok = r.is_ok(), via, "console: reload requested");
        r
    }
}

/// The methods a path answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allowed {
    Get,
    Post,
    GetPost,
}

impl Allowed {
    fn header(self) -> &'static str {
        match self {
            Self::Get => "GET, HEAD",
            Self::Post => "POST",
            Self::GetPost => "GET, HEAD, POST",
        }
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, String> {
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(format!("the body is larger than {MAX_BODY} bytes"))
        }
        Ok(Err(_)) => Err("the body could not be read".into()),
        Err(_) => Err("the body took too long to arrive".into()),
    }
}

/// 303 See Other to `to`, optionally setting a cookie.
pub(crate) fn redirect(to: &str, set_cookie: Option<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(SET_COOKIE, c);
    }
    r
}

/// A response with `body` and `content_type`.
pub(crate) fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
