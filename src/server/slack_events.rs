//! Slack's Events API on the ingest listener (`replies.path` of Slack bot
//! targets): the signature over the raw body (401 without detail), the
//! `url_verification` handshake, and a person's reply in a mapped thread
//! stored durably as a reply to Crisp before the 200 — Slack's retries of
//! one event (same `event_id`) store nothing more. Also the keys by which an
//! operator message coming back from Crisp is known as a reply's echo.
//!
//! Must not: read what an event means (`replies::slack` does), or send
//! anything (the `crisp` target's worker does).

use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tracing::{debug, info, warn};

use super::{Body, Shared, busy, error, respond};
use crate::config::{Config, Replies};
use crate::event::Event;
use crate::replies;
use crate::replies::slack::{self, Payload};
use crate::secret::Secret;
use crate::signing;
use crate::store::Accepted;
use crate::targets::crisp::{self, REPLY_EVENT, Reply, Source};

/// A Slack target whose replies come to this path.
pub(super) struct SlackTarget {
    name: String,
    secret: Secret,
    channel: String,
}

/// The Slack targets with replies on `path` (none: not a Slack path).
pub(super) fn secrets_for(config: &Config, path: &str) -> Vec<SlackTarget> {
    config
        .targets
        .iter()
        .filter_map(|t| match (&t.replies, &t.bot) {
            (
                Some(Replies::Slack {
                    signing_secret,
                    path: p,
                }),
                Some(bot),
            ) if p == path && t.enabled => Some(SlackTarget {
                name: t.name.clone(),
                secret: signing_secret.clone(),
                channel: bot.channel.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// Slack's signature headers, read before the body.
pub(super) struct Headers {
    timestamp: Option<String>,
    signature: Option<String>,
}

impl Headers {
    pub(super) fn of<B>(req: &Request<B>) -> Self {
        let get = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        Self {
            timestamp: get("x-slack-request-timestamp"),
            signature: get("x-slack-signature"),
        }
    }
}

type Answer = (Response<Body>, Option<String>, Option<String>);

/// Answers one Events API request whose body has been read.
pub(super) async fn accept(
    shared: &Shared,
    targets: &[SlackTarget],
    headers: &Headers,
    body: &[u8],
) -> Answer {
    let now = shared.clock.now_ms();
    let mut refused = None;
    let mut verified: Vec<&SlackTarget> = Vec::new();
    for t in targets {
        match signing::slack(
            t.secret.expose().as_bytes(),
            headers.timestamp.as_deref(),
            headers.signature.as_deref(),
            body,
            now,
        ) {
            Ok(()) => verified.push(t),
            Err(e) => refused = Some(e),
        }
    }
    if verified.is_empty() {
        shared.metrics.reply("slack", "unauthorized");
        let why = refused.map_or_else(String::new, |e| e.to_string());
        return (
            error(StatusCode::UNAUTHORIZED, "unauthorized"),
            None,
            Some(format!("Slack event: {why}")),
        );
    }
    let payload = match slack::parse(body) {
        Some(p) => p,
        None => {
            return (
                error(StatusCode::BAD_REQUEST, "body is not a JSON object"),
                None,
                Some("Slack event: not JSON".into()),
            );
        }
    };
    let ok = |reason: &str| {
        (
            respond(StatusCode::OK, json!({"ok": true})),
            Some("slack".to_owned()),
            Some(reason.to_owned()),
        )
    };
    let (event_id, message) = match payload {
        Payload::Verify { challenge } => {
            info!("Slack Events API request URL verified");
            return (
                respond(StatusCode::OK, json!({"challenge": challenge})),
                Some("slack".into()),
                None,
            );
        }
        Payload::Other | Payload::Event { message: None, .. } => return ok("not a reply"),
        Payload::Event {
            event_id,
            message: Some(m),
        } => (event_id, m),
    };
    let Some(target) = verified.iter().find(|t| t.channel == message.channel) else {
        return ok("another channel");
    };
    let conversation = match shared
        .store
        .conversation_of(&target.name, &message.thread_ts)
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => {
            debug!(target_name = %target.name, thread = %message.thread_ts, "a message in a thread that is no conversation's; ignored");
            return ok("not a conversation's thread");
        }
        Err(e) => {
            warn!(error = %e, "cannot look up the thread of a Slack reply; answering 503");
            return (
                busy("the relay is busy; retry shortly"),
                None,
                Some(e.to_string()),
            );
        }
    };
    let Some((website_id, session_id)) = conversation.split_once('/') else {
        return ok("not a conversation's thread");
    };
    let reply = Reply {
        website_id: website_id.to_owned(),
        session_id: session_id.to_owned(),
        content: message.text,
        nickname: message
            .name
            .unwrap_or_else(|| format!("Slack user {}", message.user)),
        avatar: message.avatar,
        file: None,
        source: Source {
            target: target.name.clone(),
            channel: message.channel,
            thread: message.thread_ts,
            message: message.ts,
        },
    };
    let (event, deliveries) = replies::stored(&reply, format!("slack\u{1f}{event_id}"), now);
    match shared.store.accept(event, deliveries).await {
        Ok(Accepted::New(_)) => {
            shared.metrics.reply("slack", "accepted");
            info!(target_name = %target.name, %conversation, "an agent's reply in Slack, queued for Crisp");
            (
                respond(StatusCode::OK, json!({"ok": true})),
                Some(REPLY_EVENT.into()),
                None,
            )
        }
        Ok(Accepted::Duplicate) => {
            shared.metrics.reply("slack", "duplicate");
            (
                respond(StatusCode::OK, json!({"ok": true, "duplicate": true})),
                Some(REPLY_EVENT.into()),
                Some("duplicate".into()),
            )
        }
        Err(e) => {
            warn!(error = %e, "Slack reply not stored; answering 503 (Slack retries)");
            (
                busy("the relay is busy; retry shortly"),
                None,
                Some(e.to_string()),
            )
        }
    }
}

/// For an operator's message (`message:send` or `message:received` from
/// `operator`) with a session: the keys that say it is the echo of a reply
/// the relay sent (its text, its fingerprint).
pub(super) fn echo_keys(event: &Event) -> Option<Vec<String>> {
    if !matches!(event.name(), "message:send" | "message:received") {
        return None;
    }
    let data = event.value().get("data")?;
    if data.get("from").and_then(|v| v.as_str()) != Some("operator") {
        return None;
    }
    let session = data.get("session_id")?.as_str()?;
    let website = event.website_id();
    let mut keys = Vec::with_capacity(2);
    if let Some(content) = data.get("content").and_then(|v| v.as_str()) {
        keys.push(crisp::echo_content_key(website, session, content));
    }
    if let Some(fp) = data.get("fingerprint").and_then(|v| v.as_u64()) {
        keys.push(crisp::echo_fingerprint_key(website, session, fp));
    }
    (!keys.is_empty()).then_some(keys)
}
