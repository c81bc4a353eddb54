//! Where a chat message goes, thread by thread: the request for one step of
//! a conversation on Discord (a forum webhook, or a bot in a forum or text
//! channel) or Slack (a bot), what its answer says about the thread, and
//! coalescing several queued messages of a conversation into one.
//!
//! Research: two-way.md §3(a) (forum webhooks: `thread_name` creates a post,
//! the answer's `channel_id` is the thread; `thread_id` posts into it), §3(b)
//! (bot routes and permissions), §4 (`chat.postMessage`, `ts`/`thread_ts`).
//! Pure: builds requests and reads answers, sends nothing.

use serde_json::{Map, Value, json};

use super::discord::{CONTENT_MAX, EMBEDS_MAX, EMBEDS_TOTAL_MAX, embeds_total};
use super::slack::{BLOCKS_MAX, TEXT_MAX};
use super::{DISCORD_USER_AGENT, HeaderValue, OutgoingRequest, USER_AGENT};
use crate::config::{Bot, Target};
use crate::model::TargetKind;
use crate::secret::{Secret, WebhookUrl};
use crate::text::{text_len, truncate};

/// What a Discord bot's channel is (`GET /channels/{id}`, `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// Threads are posts created with their first message (type 15, 16).
    Forum,
    /// Threads are started from a posted message (type 0, 5).
    Text,
}

impl ChannelKind {
    /// From a channel object's `type`.
    pub fn from_answer(body: &str) -> Option<Self> {
        let v: Value = serde_json::from_str(body).ok()?;
        match v.get("type")?.as_u64()? {
            15 | 16 => Some(Self::Forum),
            0 | 5 => Some(Self::Text),
            _ => None,
        }
    }
}

/// One step of a conversation on a chat target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Post to the target's channel (no threads, or no conversation).
    Channel,
    /// Start the conversation's thread with this message, named `name`.
    Create { name: String },
    /// Post into the conversation's thread.
    Reply { thread: String },
    /// Discord bot in a text channel: turn the posted message into the
    /// conversation's thread.
    StartThread { message: String, name: String },
    /// Discord bot: archive the conversation's thread (it was resolved).
    Archive { thread: String },
}

/// The first line of a conversation's new thread when its earlier one was
/// deleted or locked.
pub const CONTINUED: &str =
    "↪ This conversation continues from an earlier thread, which was deleted or locked.";

/// The request for `step` of a message whose built body (as
/// [`super::build`] made it for `target`'s kind) is `body`. `channel` is what
/// a Discord bot's channel is (`None`: not known or not needed).
pub fn request(
    target: &Target,
    body: Value,
    step: &Step,
    channel: Option<ChannelKind>,
) -> Result<OutgoingRequest, String> {
    match (&target.bot, target.kind) {
        (None, TargetKind::Discord) => discord_webhook(target, body, step),
        (Some(bot), TargetKind::Discord) => discord_bot(bot, body, step, channel),
        (Some(bot), TargetKind::Slack) => slack_bot(bot, body, step),
        _ => match step {
            Step::Channel => Err("no request for this target".into()),
            _ => Err(format!(
                "{} targets without a bot cannot thread",
                target.kind
            )),
        },
    }
}

/// The request that tells what a Discord bot's channel is.
pub fn channel_info(bot: &Bot) -> OutgoingRequest {
    OutgoingRequest {
        method: "GET",
        url: Some(api_url(&bot.api, &["channels", &bot.channel])),
        headers: discord_headers(bot),
        body: super::Body::Json(Value::Null),
    }
}

/// What the answer to `step` says the conversation's thread is: Discord
/// webhook post → its `channel_id`; Discord bot forum post → the thread's
/// `id`; Discord bot text channel → the posted message's `id` (its thread,
/// once started, has the same id); Slack → the message's `ts`.
pub fn thread_of(target: &Target, step: &Step, answer: &str) -> Option<String> {
    let v: Value = serde_json::from_str(answer).ok()?;
    let field = match (step, &target.bot, target.kind) {
        (Step::Create { .. }, None, TargetKind::Discord) => "channel_id",
        (Step::Create { .. } | Step::StartThread { .. }, Some(_), TargetKind::Discord) => "id",
        (Step::Create { .. }, Some(_), TargetKind::Slack) => "ts",
        _ => return None,
    };
    match v.get(field)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A thread name rendered from the target's `thread_name`: one line, at
/// most 100 characters, never empty.
pub fn thread_name(rendered: &str) -> String {
    let line: String = rendered.split_whitespace().collect::<Vec<_>>().join(" ");
    let name = truncate(&line, crate::model::THREAD_NAME_MAX).into_owned();
    if name.is_empty() {
        "Conversation".to_owned()
    } else {
        name
    }
}

/// `body` with [`CONTINUED`] first, fitted again.
pub fn continued(kind: TargetKind, mut body: Value) -> Value {
    let Value::Object(map) = &mut body else {
        return body;
    };
    match kind {
        TargetKind::Discord => {
            let content = map.get("content").and_then(Value::as_str).unwrap_or("");
            let joined = if content.is_empty() {
                CONTINUED.to_owned()
            } else {
                format!("{CONTINUED}\n{content}")
            };
            map.insert("content".into(), Value::String(joined));
            super::discord::fit(map);
        }
        _ => {
            let text = map.get("text").and_then(Value::as_str).unwrap_or("");
            map.insert("text".into(), Value::String(format!("{CONTINUED}\n{text}")));
            if let Some(Value::Array(blocks)) = map.get_mut("blocks")
                && blocks.len() < BLOCKS_MAX
            {
                blocks.insert(
                    0,
                    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": CONTINUED}]}),
                );
            }
            super::slack::fit(map);
        }
    }
    body
}

/// How many of `bodies` (built for one conversation, in order) fit in one
/// message, and that message: Discord joins `content` lines (2,000
/// characters) and embeds (10, 6,000 characters); Slack joins `text` and
/// blocks (50). At least the first body is taken; a body that cannot merge
/// (components, attachments, polls, another username) ends the run.
pub fn coalesce(kind: TargetKind, bodies: &[Value]) -> (Value, usize) {
    let Some(first) = bodies.first() else {
        return (Value::Null, 0);
    };
    let mut merged = first.clone();
    let mut taken = 1;
    for next in &bodies[1..] {
        match merge(kind, &merged, next) {
            Some(m) => {
                merged = m;
                taken += 1;
            }
            None => break,
        }
    }
    (merged, taken)
}

/// `a` and `b` as one message, if they fit together.
fn merge(kind: TargetKind, a: &Value, b: &Value) -> Option<Value> {
    let (Value::Object(a), Value::Object(b)) = (a, b) else {
        return None;
    };
    let mergeable =
        |m: &Map<String, Value>, keys: &[&str]| m.keys().all(|k| keys.contains(&k.as_str()));
    let mut out = a.clone();
    match kind {
        TargetKind::Discord => {
            let keys = [
                "content",
                "embeds",
                "allowed_mentions",
                "username",
                "avatar_url",
            ];
            if !mergeable(a, &keys) || !mergeable(b, &keys) {
                return None;
            }
            for same in ["allowed_mentions", "username", "avatar_url"] {
                if a.get(same) != b.get(same) {
                    return None;
                }
            }
            let content = join_text(a.get("content"), b.get("content"))?;
            if text_len(&content) > CONTENT_MAX {
                return None;
            }
            let embeds = join_list(a.get("embeds"), b.get("embeds"));
            if embeds.len() > EMBEDS_MAX {
                return None;
            }
            if !content.is_empty() {
                out.insert("content".into(), Value::String(content));
            }
            if !embeds.is_empty() {
                out.insert("embeds".into(), Value::Array(embeds));
            }
            if embeds_total(&Value::Object(out.clone())) > EMBEDS_TOTAL_MAX {
                return None;
            }
        }
        _ => {
            let keys = ["text", "blocks", "unfurl_links", "unfurl_media", "mrkdwn"];
            if !mergeable(a, &keys) || !mergeable(b, &keys) {
                return None;
            }
            let text = join_text(a.get("text"), b.get("text"))?;
            if text_len(&text) > TEXT_MAX {
                return None;
            }
            let blocks = join_list(a.get("blocks"), b.get("blocks"));
            // A body with blocks shows them, not its text: both need blocks
            // (or neither) for nothing to be lost.
            if a.contains_key("blocks") != b.contains_key("blocks") || blocks.len() > BLOCKS_MAX {
                return None;
            }
            out.insert("text".into(), Value::String(text));
            if !blocks.is_empty() {
                out.insert("blocks".into(), Value::Array(blocks));
            }
        }
    }
    Some(Value::Object(out))
}

/// Two optional texts, one per line; `None` if either is not a string.
fn join_text(a: Option<&Value>, b: Option<&Value>) -> Option<String> {
    fn text(v: Option<&Value>) -> Option<&str> {
        match v {
            None => Some(""),
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        }
    }
    let (a, b) = (text(a)?, text(b)?);
    Some(match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}\n{b}"),
    })
}

fn join_list(a: Option<&Value>, b: Option<&Value>) -> Vec<Value> {
    let list = |v: Option<&Value>| v.and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out = list(a);
    out.extend(list(b));
    out
}

fn discord_webhook(
    target: &Target,
    mut body: Value,
    step: &Step,
) -> Result<OutgoingRequest, String> {
    let base = target.url.as_ref().ok_or("the target has no url")?;
    let mut url = base.expose().clone();
    match step {
        Step::Channel => {}
        Step::Create { name } => {
            if let Value::Object(m) = &mut body {
                m.insert("thread_name".into(), Value::String(name.clone()));
            }
        }
        Step::Reply { thread } => {
            url.query_pairs_mut().append_pair("thread_id", thread);
        }
        Step::StartThread { .. } | Step::Archive { .. } => {
            return Err("a Discord webhook cannot start or archive threads (a bot can)".into());
        }
    }
    Ok(OutgoingRequest {
        method: "POST",
        url: Some(WebhookUrl::new(url, public_segments(base))),
        headers: json_headers("application/json", DISCORD_USER_AGENT, None),
        body: super::Body::Json(body),
    })
}

/// How many path segments of a Discord webhook URL are shown (through its
/// id): the redacted form keeps the base's.
fn public_segments(base: &WebhookUrl) -> usize {
    base.redacted()
        .split('?')
        .next()
        .unwrap_or("")
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .split('/')
        .skip(1)
        .take_while(|s| *s != "***")
        .count()
}

fn discord_bot(
    bot: &Bot,
    mut body: Value,
    step: &Step,
    channel: Option<ChannelKind>,
) -> Result<OutgoingRequest, String> {
    // Webhook-only fields; a bot posts under its own name.
    if let Value::Object(m) = &mut body {
        m.remove("username");
        m.remove("avatar_url");
    }
    let (method, path, body): (&'static str, Vec<&str>, Value) = match step {
        Step::Channel => ("POST", vec!["channels", &bot.channel, "messages"], body),
        Step::Create { name } => match channel {
            Some(ChannelKind::Forum) => (
                "POST",
                vec!["channels", &bot.channel, "threads"],
                json!({"name": name, "message": body}),
            ),
            Some(ChannelKind::Text) => ("POST", vec!["channels", &bot.channel, "messages"], body),
            None => return Err("the channel's kind is not known yet".into()),
        },
        Step::Reply { thread } => ("POST", vec!["channels", thread, "messages"], body),
        Step::StartThread { message, name } => (
            "POST",
            vec!["channels", &bot.channel, "messages", message, "threads"],
            json!({"name": name}),
        ),
        Step::Archive { thread } => ("PATCH", vec!["channels", thread], json!({"archived": true})),
    };
    Ok(OutgoingRequest {
        method,
        url: Some(api_url(&bot.api, &path)),
        headers: discord_headers(bot),
        body: super::Body::Json(body),
    })
}

pub(super) fn discord_headers(bot: &Bot) -> Vec<(String, HeaderValue)> {
    json_headers(
        "application/json",
        DISCORD_USER_AGENT,
        Some(Secret::new(format!("Bot {}", bot.token.expose()))),
    )
}

fn slack_bot(bot: &Bot, body: Value, step: &Step) -> Result<OutgoingRequest, String> {
    let Value::Object(mut m) = body else {
        return Err("a Slack body must be a JSON object".into());
    };
    m.insert("channel".into(), Value::String(bot.channel.clone()));
    match step {
        Step::Channel | Step::Create { .. } => {}
        Step::Reply { thread } => {
            m.insert("thread_ts".into(), Value::String(thread.clone()));
        }
        Step::StartThread { .. } | Step::Archive { .. } => {
            return Err("Slack threads need no starting or archiving".into());
        }
    }
    Ok(OutgoingRequest {
        method: "POST",
        url: Some(api_url(&bot.api, &["chat.postMessage"])),
        headers: json_headers(
            "application/json; charset=utf-8",
            USER_AGENT,
            Some(Secret::new(format!("Bearer {}", bot.token.expose()))),
        ),
        body: super::Body::Json(Value::Object(m)),
    })
}

pub(super) fn json_headers(
    content_type: &'static str,
    ua: &'static str,
    auth: Option<Secret>,
) -> Vec<(String, HeaderValue)> {
    let mut h = vec![
        ("Content-Type".to_owned(), HeaderValue::Plain(content_type)),
        ("User-Agent".to_owned(), HeaderValue::Plain(ua)),
    ];
    if let Some(a) = auth {
        h.push(("Authorization".to_owned(), HeaderValue::Secret(a)));
    }
    h
}

/// `base` with `path` appended (the whole URL shown: a bot's token is in a
/// header, not in the URL).
pub(super) fn api_url(base: &url::Url, path: &[&str]) -> WebhookUrl {
    let mut url = base.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().extend(path);
    }
    let shown = url.path_segments().map_or(0, Iterator::count);
    WebhookUrl::new(url, shown)
}

#[cfg(test)]
#[path = "chat_tests.rs"]
mod tests;
