//! Targets: how each kind's request is built from a rendered template.
//!
//! One file per kind. Each knows its URL shape (and which parts are secret),
//! wraps text into its body, fits the body to the destination's limits and
//! adds what the destination requires. Everything here is pure: sending, and
//! reading answers, belong to delivery.

pub mod chat;
pub mod crisp;
pub mod discord;
pub mod feedback;
pub mod invariants;
pub mod slack;
pub mod webhook;

use serde_json::Value;
use thiserror::Error;

use crate::config::Target;
use crate::model::TargetKind;
use crate::render::Rendered;
use crate::secret::{Secret, WebhookUrl};

/// The `User-Agent` for Discord, which requires the form
/// `DiscordBot ($url, $versionNumber)` (requests without it may be blocked).
pub const DISCORD_USER_AGENT: &str = concat!(
    "DiscordBot (https://github.com/crisp-relay/crisp-relay, ",
    env!("CARGO_PKG_VERSION"),
    ") crisp-relay"
);

/// The `User-Agent` for every other destination.
pub const USER_AGENT: &str = concat!("crisp-relay/", env!("CARGO_PKG_VERSION"));

/// A header value: either the relay's own (shown) or the user's (secret).
#[derive(Debug, Clone)]
pub enum HeaderValue {
    Plain(&'static str),
    Secret(Secret),
}

/// The body to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Json(Value),
    /// `stdout` text.
    Text(String),
}

/// A request ready to be sent (or printed by `render`).
#[derive(Debug, Clone)]
pub struct OutgoingRequest {
    pub method: &'static str,
    /// `None` for `stdout`, and for a disabled target.
    pub url: Option<WebhookUrl>,
    pub headers: Vec<(String, HeaderValue)>,
    pub body: Body,
}

/// Why a rendered template cannot become a request.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("{kind} body must be a JSON object, the template produced {found}")]
    NotObject {
        kind: TargetKind,
        found: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Builds the request for `target` from `rendered`; `event` is the envelope
/// (sent as is when no template applies).
pub fn build(
    target: &Target,
    rendered: Rendered,
    event: &Value,
) -> Result<OutgoingRequest, BuildError> {
    let ua = if target.kind == TargetKind::Discord {
        DISCORD_USER_AGENT
    } else {
        USER_AGENT
    };
    let json_headers = || {
        vec![
            (
                "Content-Type".to_owned(),
                HeaderValue::Plain("application/json"),
            ),
            ("User-Agent".to_owned(), HeaderValue::Plain(ua)),
        ]
    };
    match target.kind {
        TargetKind::Stdout => {
            let body = match rendered {
                Rendered::Text(t) => Body::Text(t),
                Rendered::Json(v) => Body::Json(v),
                Rendered::Event => Body::Json(event.clone()),
            };
            Ok(OutgoingRequest {
                method: "PRINT",
                url: None,
                headers: Vec::new(),
                body,
            })
        }
        kind => {
            // A disabled target (empty url) still gets its body built, so
            // `check` and `render` show what it would receive.
            let url = target.url.clone();
            let (method, body, mut headers) = match kind {
                TargetKind::Discord => ("POST", discord::body(target, rendered)?, json_headers()),
                TargetKind::Slack => ("POST", slack::body(rendered)?, json_headers()),
                _ => (
                    target.method,
                    webhook::body(rendered, event)?,
                    json_headers(),
                ),
            };
            for (name, value) in &target.headers {
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                headers.push((name.clone(), HeaderValue::Secret(value.clone())));
            }
            Ok(OutgoingRequest {
                method,
                url,
                headers,
                body: Body::Json(body),
            })
        }
    }
}

fn object(kind: TargetKind, v: Value) -> Result<serde_json::Map<String, Value>, BuildError> {
    match v {
        Value::Object(map) => Ok(map),
        other => Err(BuildError::NotObject {
            kind,
            found: crate::event::type_name(&other),
        }),
    }
}
