//! Sending a built request over HTTP. The [`Transport`] trait lets the
//! worker be tested against an in-memory destination on tokio's paused
//! clock; [`HttpTransport`] is the real one (reqwest, rustls with bundled
//! root certificates so a `FROM scratch` image works, no redirects).
//!
//! Errors never contain the URL: it holds the webhook's token.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::classify::{Answer, TransportError};
use crate::targets::{Body, HeaderValue, OutgoingRequest};

/// Largest part of an answer's body the relay reads (errors and hints are
/// small; a destination must not be able to make the relay buffer more).
pub const MAX_ANSWER_BODY: usize = 64 * 1024;

/// Longest the relay reads an answer's body once its head has arrived (and
/// within the target's `timeout`): a destination that drips its body cannot
/// hold the target's worker for the whole timeout on every message. What
/// arrived by then is kept; the status decides.
pub const ANSWER_BODY_TIME: Duration = Duration::from_secs(2);

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<Answer, TransportError>> + Send + 'a>>;

/// Something that can deliver a request and bring back the answer.
pub trait Transport: Send + Sync {
    fn send<'a>(&'a self, req: &'a OutgoingRequest, timeout: Duration) -> SendFuture<'a>;
}

/// The real transport.
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpTransport")
    }
}

impl HttpTransport {
    pub fn new() -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("HTTP client setup failed: {}", chain(&e.without_url())))?;
        Ok(Self { client })
    }
}

impl Transport for HttpTransport {
    fn send<'a>(&'a self, req: &'a OutgoingRequest, timeout: Duration) -> SendFuture<'a> {
        Box::pin(async move {
            let Some(url) = &req.url else {
                return Err(TransportError::Build("the target has no url".into()));
            };
            let method = reqwest::Method::from_bytes(req.method.as_bytes())
                .map_err(|e| TransportError::Build(e.to_string()))?;
            let mut builder = self
                .client
                .request(method, url.expose().clone())
                .timeout(timeout);
            for (name, value) in &req.headers {
                let v = match value {
                    HeaderValue::Plain(s) => *s,
                    HeaderValue::Secret(s) => s.expose(),
                };
                builder = builder.header(name.as_str(), v);
            }
            let body = match &req.body {
                Body::Json(v) => {
                    serde_json::to_vec(v).map_err(|e| TransportError::Build(e.to_string()))?
                }
                Body::Text(t) => t.clone().into_bytes(),
            };
            let mut resp = builder.body(body).send().await.map_err(map_error)?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut bytes = Vec::new();
            let _ = tokio::time::timeout(ANSWER_BODY_TIME, async {
                while bytes.len() < MAX_ANSWER_BODY {
                    match resp.chunk().await {
                        Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                        Ok(None) => break,
                        // The status is what counts; a broken body is kept as read.
                        Err(_) => break,
                    }
                }
            })
            .await;
            bytes.truncate(MAX_ANSWER_BODY);
            Ok(Answer {
                status,
                headers,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            })
        })
    }
}

fn map_error(e: reqwest::Error) -> TransportError {
    let e = e.without_url();
    if e.is_timeout() {
        TransportError::Timeout
    } else if e.is_connect() {
        TransportError::Connect(chain(&e))
    } else if e.is_builder() {
        TransportError::Build(chain(&e))
    } else {
        TransportError::Io(chain(&e))
    }
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}
