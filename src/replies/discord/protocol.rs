//! The Gateway protocol, without I/O: what each payload from Discord asks
//! for ([`Proto::on_text`]), what a close code means ([`close_action`]),
//! what the client sends (IDENTIFY, RESUME, heartbeats), and Get Gateway
//! Bot. Research and the choices made: see `gateway`.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Message, api_url, get};
use crate::secret::Secret;
use crate::targets::OutgoingRequest;

/// Intent `GUILDS`: threads' create/update/list sync.
pub const GUILDS: u64 = 1 << 0;
/// Intent `GUILD_MESSAGES`: `MESSAGE_CREATE` in guild channels and threads.
pub const GUILD_MESSAGES: u64 = 1 << 9;
/// Intent `MESSAGE_CONTENT` (privileged): the messages' text and files.
pub const MESSAGE_CONTENT: u64 = 1 << 15;
const GUILD_MEMBERS: u64 = 1 << 1;
const GUILD_PRESENCES: u64 = 1 << 8;

const HEARTBEAT_MIN: Duration = Duration::from_millis(50);
const HEARTBEAT_MAX: Duration = Duration::from_secs(600);

/// What the client reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayEvent {
    /// A new session began (IDENTIFY was accepted); events missed before it
    /// are lost (catch up through REST). `bot_user_id`: the bot's own user,
    /// for [`super::is_person`].
    Ready { bot_user_id: Option<String> },
    /// The session was resumed: nothing was missed.
    Resumed,
    /// A message was posted somewhere the bot can see (boxed: it is large).
    Message(Box<Message>),
    /// The client stopped for good; the reason says what a person must do.
    Fatal(String),
}

/// What comes after a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Next {
    /// Connect again; resume the session if there is one.
    Resume,
    /// The session is over: connect again and identify.
    Identify,
    /// Stop and tell the sink why.
    Fatal(String),
    /// Stop quietly (asked to, or nobody listens).
    Stop,
}

/// What Discord's close code `code` (`None`: the socket just ended) means.
pub(super) fn close_action(code: Option<u16>, intents: u64) -> Next {
    let fatal = |what: &str, hint: &str| {
        Next::Fatal(format!(
            "Discord closed the Gateway connection with {} ({what}): {hint}",
            code.unwrap_or_default()
        ))
    };
    match code {
        Some(4004) => fatal(
            "authentication failed",
            "the Discord bot token was refused; check it in the config (Developer Portal > your application > Bot > Reset Token makes a new one)",
        ),
        Some(4010) => fatal("invalid shard", "crisp-relay needs a fix"),
        Some(4011) => fatal(
            "sharding required",
            "the bot is in too many servers for one Gateway connection, which is all crisp-relay opens; use a bot that is only in the servers it relays for",
        ),
        Some(4012) => fatal("invalid API version", "crisp-relay needs an update"),
        Some(4013) => fatal(
            "invalid intents",
            &format!("intents {intents} were refused; crisp-relay needs a fix"),
        ),
        Some(4014) => {
            let mut names = Vec::new();
            for (bit, name) in [
                (MESSAGE_CONTENT, "Message Content Intent"),
                (GUILD_MEMBERS, "Server Members Intent"),
                (GUILD_PRESENCES, "Presence Intent"),
            ] {
                if intents & bit != 0 {
                    names.push(name);
                }
            }
            let names = if names.is_empty() {
                "Message Content Intent".to_owned()
            } else {
                names.join(", ")
            };
            fatal(
                "disallowed intents",
                &format!(
                    "enable {names} under \"Privileged Gateway Intents\" on the Bot page of your application in the Discord Developer Portal (https://discord.com/developers/applications), then restart crisp-relay"
                ),
            )
        }
        Some(4003 | 4007 | 4009) => Next::Identify,
        _ => Next::Resume,
    }
}

/// Get Gateway Bot (`GET {api}/gateway/bot`).
pub(super) fn gateway_bot_request(api: &url::Url, token: &Secret) -> OutgoingRequest {
    get(api_url(api, &["gateway", "bot"]), token)
}

/// The WebSocket URL of a Get Gateway Bot answer (a `ws://` or `wss://`
/// `url`), with `?v=10&encoding=json`.
pub(super) fn gateway_url(body: &str) -> Option<url::Url> {
    let v: Value = serde_json::from_str(body).ok()?;
    socket_url(v.get("url")?.as_str()?)
}

fn socket_url(raw: &str) -> Option<url::Url> {
    let mut url = url::Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "ws" | "wss") || url.host_str().is_none() {
        return None;
    }
    url.set_query(Some("v=10&encoding=json"));
    url.set_fragment(None);
    Some(url)
}

/// A session to resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Session {
    pub id: String,
    /// READY's `resume_gateway_url` (with the query), when usable.
    pub resume_url: Option<url::Url>,
}

/// What a payload from Discord asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    Nothing,
    /// HELLO: heartbeat at this interval, then identify or resume.
    Hello(Duration),
    Ack,
    /// Heartbeat now (op 1).
    Beat,
    /// Hand this on.
    Emit(GatewayEvent),
    /// READY or RESUMED (hand it on): the connection works.
    Up(GatewayEvent),
    /// End the connection; wait at least this long before the next.
    End(Next, Duration),
}

/// What outlives a connection: the session and the last sequence number.
#[derive(Debug, Default)]
pub(super) struct Proto {
    pub session: Option<Session>,
    pub seq: Option<u64>,
}

impl Proto {
    /// Reads one text frame from Discord.
    pub fn on_text(&mut self, text: &str) -> Action {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            tracing::debug!(
                len = text.len(),
                "ignored a Gateway payload that is not JSON"
            );
            return Action::Nothing;
        };
        let d = v.get("d").unwrap_or(&Value::Null);
        match v.get("op").and_then(Value::as_u64) {
            Some(0) => {
                if let Some(s) = v.get("s").and_then(Value::as_u64) {
                    self.seq = Some(s);
                }
                self.dispatch(v.get("t").and_then(Value::as_str).unwrap_or(""), d)
            }
            Some(1) => Action::Beat,
            Some(7) => Action::End(Next::Resume, Duration::ZERO),
            Some(9) if d.as_bool() == Some(true) && self.session.is_some() => {
                Action::End(Next::Resume, Duration::ZERO)
            }
            Some(9) => Action::End(
                Next::Identify,
                Duration::from_millis(fastrand::u64(1000..=5000)),
            ),
            Some(10) => match d.get("heartbeat_interval").and_then(Value::as_u64) {
                Some(ms) => {
                    Action::Hello(Duration::from_millis(ms).clamp(HEARTBEAT_MIN, HEARTBEAT_MAX))
                }
                None => Action::End(Next::Resume, Duration::ZERO),
            },
            Some(11) => Action::Ack,
            _ => Action::Nothing,
        }
    }

    fn dispatch(&mut self, t: &str, d: &Value) -> Action {
        match t {
            "READY" => {
                self.session = d
                    .get("session_id")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(|id| Session {
                        id: id.to_owned(),
                        resume_url: d
                            .get("resume_gateway_url")
                            .and_then(Value::as_str)
                            .and_then(socket_url),
                    });
                let bot_user_id = d
                    .get("user")
                    .and_then(|u| u.get("id"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                Action::Up(GatewayEvent::Ready { bot_user_id })
            }
            "RESUMED" => Action::Up(GatewayEvent::Resumed),
            "MESSAGE_CREATE" => match Message::from_json(d) {
                Some(m) => Action::Emit(GatewayEvent::Message(Box::new(m))),
                None => Action::Nothing,
            },
            _ => Action::Nothing,
        }
    }

    /// IDENTIFY, or RESUME when there is a session.
    pub fn login(&self, token: &Secret, intents: u64) -> Value {
        match &self.session {
            Some(s) => json!({"op": 6, "d": {
                "token": token.expose(),
                "session_id": s.id,
                "seq": self.seq.unwrap_or(0),
            }}),
            None => json!({"op": 2, "d": {
                "token": token.expose(),
                "intents": intents,
                "properties": {
                    "os": std::env::consts::OS,
                    "browser": "crisp-relay",
                    "device": "crisp-relay",
                },
            }}),
        }
    }

    pub fn heartbeat(&self) -> Value {
        json!({"op": 1, "d": self.seq})
    }
}
