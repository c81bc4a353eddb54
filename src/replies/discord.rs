//! Discord: agents' replies typed in a conversation's thread, read by the
//! relay's bot. Live through the Gateway ([`run`], in `gateway`), and after
//! downtime through REST ([`messages_after_request`], [`parse_messages`]).
//! What a message says ([`Message::from_json`], used by both) and whether it
//! is a person's reply ([`is_person`]) is pure and lives here.
//!
//! Research: two-way.md §3(b); Discord's docs (`discord/discord-api-docs`
//! @ `c98d64bc`): `resources/message.mdx` (message object, types, Get Channel
//! Messages: newest first, `after`, `limit` 1–100; footnote [1]: a webhook's
//! message has `webhook_id` and the webhook as `author`), `reference.mdx`
//! (CDN `avatars/{user_id}/{hash}.png`), `events/gateway.mdx` and
//! `events/gateway-events.mdx` (the Gateway, see `gateway`).
//!
//! Crate choice: the Gateway is spoken by hand over `tokio-websockets` 0.12
//! (Rust 1.79; 0.13 needs 1.89). It adds one crate to the tree: its SHA-1
//! (ring), masks (fastrand), HTTP parsing and TLS (tokio-rustls with our
//! own rustls config: ring provider, webpki roots) are all in the tree
//! already. `twilight-gateway` 0.16 (ring + webpki roots, no HTTP client)
//! would add 15 crates (twilight-model, serde_repr, serde-value, time, a
//! second webpki-roots...), reads frames without a size limit
//! (`Limits::unlimited()`), backs off on its own terms and hard-codes
//! `wss://gateway.discord.gg` unless a `proxy_url` is set; `tokio-tungstenite`
//! would add 5 (tungstenite, sha1, utf-8, data-encoding). The protocol part
//! the relay needs is small: HELLO, heartbeats and their ACKs, IDENTIFY,
//! RESUME, RECONNECT, INVALID_SESSION, close codes, and two dispatches.
//!
//! Files: this one, `gateway` (the client task: sockets, timers, reconnects),
//! `protocol` (the Gateway's payloads and close codes, without I/O), `tests`
//! (table tests).

mod gateway;
mod protocol;

pub use gateway::{GatewayConfig, run};
pub use protocol::{GUILD_MESSAGES, GUILDS, GatewayEvent, MESSAGE_CONTENT};

use serde_json::Value;

use crate::secret::{Secret, WebhookUrl};
use crate::targets::{Body, DISCORD_USER_AGENT, HeaderValue, OutgoingRequest};

/// Message type `DEFAULT`.
pub const TYPE_DEFAULT: u8 = 0;
/// Message type `REPLY` (a message answering another one).
pub const TYPE_REPLY: u8 = 19;

/// A Discord message, as far as a reply needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    /// The channel or thread it was posted in.
    pub channel_id: String,
    /// Only on the Gateway (REST messages do not carry it).
    pub guild_id: Option<String>,
    pub author: Author,
    /// Set when a webhook posted it (the relay's own forum posts).
    pub webhook_id: Option<String>,
    /// Empty without the MESSAGE_CONTENT intent.
    pub content: String,
    pub attachments: Vec<Attachment>,
    /// The message type (`type`); 255 stands for any type above 254.
    pub kind: u8,
}

/// Who posted a message (for a webhook's message: the webhook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub id: String,
    pub username: String,
    /// The display name, when the user set one.
    pub global_name: Option<String>,
    /// The avatar's hash (see [`avatar_url`]).
    pub avatar: Option<String>,
    pub bot: bool,
}

/// A file attached to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    pub url: String,
    pub content_type: Option<String>,
}

impl Message {
    /// Reads a message object (the `d` of a `MESSAGE_CREATE`, or one item of
    /// Get Channel Messages). `None` without an `id`, `channel_id`,
    /// `author.id` or a numeric `type`. Ids may be strings or numbers;
    /// attachments without a `filename` or `url` are skipped.
    pub fn from_json(v: &Value) -> Option<Message> {
        let author = v.get("author")?;
        let kind = v.get("type")?.as_u64()?;
        Some(Message {
            id: snowflake(v.get("id"))?,
            channel_id: snowflake(v.get("channel_id"))?,
            guild_id: snowflake(v.get("guild_id")),
            author: Author {
                id: snowflake(author.get("id"))?,
                username: text(author.get("username")).unwrap_or_default(),
                global_name: text(author.get("global_name")).filter(|n| !n.trim().is_empty()),
                avatar: text(author.get("avatar")).filter(|h| !h.is_empty()),
                bot: author.get("bot").and_then(Value::as_bool).unwrap_or(false),
            },
            webhook_id: snowflake(v.get("webhook_id")),
            content: text(v.get("content")).unwrap_or_default(),
            attachments: v
                .get("attachments")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| {
                    Some(Attachment {
                        filename: text(a.get("filename"))?,
                        url: text(a.get("url"))?,
                        content_type: text(a.get("content_type")),
                    })
                })
                .collect(),
            kind: u8::try_from(kind).unwrap_or(u8::MAX),
        })
    }
}

/// A snowflake given as a string (as Discord does) or a number.
fn snowflake(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v?.as_str().map(str::to_owned)
}

/// The author's avatar on Discord's CDN (PNG, which every avatar has, even
/// animated ones). `None` without an avatar, or when the id or hash holds
/// anything but what Discord uses (digits; letters, digits and `_`).
pub fn avatar_url(author: &Author) -> Option<String> {
    let hash = author.avatar.as_deref()?;
    let id_ok = !author.id.is_empty() && author.id.bytes().all(|b| b.is_ascii_digit());
    let hash_ok = !hash.is_empty() && hash.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    (id_ok && hash_ok).then(|| {
        format!(
            "https://cdn.discordapp.com/avatars/{}/{hash}.png",
            author.id
        )
    })
}

/// The name people see: the display name, else the username.
pub fn display_name(author: &Author) -> String {
    author
        .global_name
        .clone()
        .unwrap_or_else(|| author.username.clone())
}

/// Whether a person typed this message: not a bot (so not the relay's bot),
/// not a webhook (so not the relay's forum posts), not `own_bot_user_id`,
/// and an ordinary message or a reply (not a pin notice, a thread-created
/// notice, a thread's starter message...).
pub fn is_person(msg: &Message, own_bot_user_id: Option<&str>) -> bool {
    !msg.author.bot
        && msg.webhook_id.is_none()
        && own_bot_user_id != Some(msg.author.id.as_str())
        && matches!(msg.kind, TYPE_DEFAULT | TYPE_REPLY)
}

/// Get Channel Messages for catching up after downtime: at most 100 messages
/// of `channel_id` (a thread) posted after message `after_message_id`.
///
/// The answer can be larger than the 64 KiB the relay's transport reads of
/// an answer (100 messages of a few hundred bytes to a few KiB each): a cut
/// answer parses as no messages, so a caller should page with a smaller
/// `limit` or read the whole body.
pub fn messages_after_request(
    api: &url::Url,
    token: &Secret,
    channel_id: &str,
    after_message_id: &str,
    limit: &str,
) -> OutgoingRequest {
    let mut url = api_url(api, &["channels", channel_id, "messages"]);
    url.query_pairs_mut()
        .append_pair("after", after_message_id)
        .append_pair("limit", limit);
    get(url, token)
}

/// A bot's `GET` (no body) of `url`.
pub(crate) fn get(url: url::Url, token: &Secret) -> OutgoingRequest {
    // The token travels in a header; the whole path can be shown.
    let shown = url.path_segments().map_or(0, Iterator::count);
    OutgoingRequest {
        method: "GET",
        url: Some(WebhookUrl::new(url, shown)),
        headers: vec![
            (
                "User-Agent".to_owned(),
                HeaderValue::Plain(DISCORD_USER_AGENT),
            ),
            (
                "Authorization".to_owned(),
                HeaderValue::Secret(Secret::new(format!("Bot {}", token.expose()))),
            ),
        ],
        body: Body::Text(String::new()),
    }
}

/// `base` with `path` appended, segment by segment (percent-encoded).
pub(crate) fn api_url(base: &url::Url, path: &[&str]) -> url::Url {
    let mut url = base.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().extend(path);
    }
    url
}

/// The messages of a Get Channel Messages answer, oldest first (Discord
/// answers newest first; they are sorted by id, which grows with time).
/// Items that are not messages are skipped; an answer that is not a JSON
/// array gives none.
pub fn parse_messages(body: &str) -> Vec<Message> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(body) else {
        return Vec::new();
    };
    let mut out: Vec<Message> = items.iter().filter_map(Message::from_json).collect();
    // Snowflakes are decimal without leading zeros: shorter is smaller.
    out.sort_by(|a, b| (a.id.len(), &a.id).cmp(&(b.id.len(), &b.id)));
    out
}

#[cfg(test)]
mod tests;

/// Discord's epoch (2015-01-01T00:00:00Z) in Unix milliseconds.
const DISCORD_EPOCH_MS: i64 = 1_420_070_400_000;

/// The smallest snowflake of a message posted at `unix_ms` (for `after=`:
/// every message posted since then has a larger id).
pub fn snowflake_at(unix_ms: i64) -> String {
    let since = unix_ms.saturating_sub(DISCORD_EPOCH_MS).max(0) as u64;
    (since << 22).to_string()
}

/// The replies a person's message in the thread of `conversation`
/// (`website_id/session_id`) on `target` makes, each with its dedupe key:
/// its text, then each attachment as a file message.
pub fn replies_from(
    msg: &Message,
    conversation: &str,
    target: &str,
) -> Vec<(crate::targets::crisp::Reply, String)> {
    use crate::targets::crisp::{File, Reply, Source};
    let Some((website_id, session_id)) = conversation.split_once('/') else {
        return Vec::new();
    };
    let base = Reply {
        website_id: website_id.to_owned(),
        session_id: session_id.to_owned(),
        content: msg.content.clone(),
        nickname: display_name(&msg.author),
        avatar: avatar_url(&msg.author),
        file: None,
        source: Source {
            target: target.to_owned(),
            channel: msg.channel_id.clone(),
            thread: msg.channel_id.clone(),
            message: msg.id.clone(),
        },
    };
    let mut out = Vec::new();
    if !msg.content.trim().is_empty() {
        out.push((base.clone(), format!("discord\u{1f}{}", msg.id)));
    }
    for (i, a) in msg.attachments.iter().enumerate() {
        let mut r = base.clone();
        r.content = a.filename.clone();
        r.file = Some(File {
            name: a.filename.clone(),
            url: a.url.clone(),
            mime: a
                .content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
        });
        out.push((r, format!("discord\u{1f}{}\u{1f}{i}", msg.id)));
    }
    out
}
