//! A fake Slack Web API for one thread per conversation ([`FakeSlackApi`]):
//! `POST /api/chat.postMessage` with a bot token, into channels the test
//! adds (the bot a member or not), keeping every message and reply for the
//! test to inspect.
//!
//! What it models, and where from (research: `two-way.md` §4,
//! `targets.md` §2.2, §2.5; https://docs.slack.dev/reference/methods/chat.postMessage
//! and its error list as kept in `slack-ruby/slack-api-ref`):
//! - The token in `Authorization: Bearer <token>` (or, in a form body, the
//!   `token` field): none → `not_authed`, another → `invalid_auth`.
//! - Errors as HTTP 200 `{"ok": false, "error": "..."}`: `channel_not_found`
//!   (unknown or missing `channel`), `not_in_channel` (the bot is not a
//!   member), `no_text` (no `text`, `blocks` nor `attachments`),
//!   `msg_too_long` (`text` over 40,000 characters), `invalid_blocks` (over
//!   50 blocks, or not a list), `thread_not_found` (`thread_ts` not the `ts`
//!   of a top-level message of the channel, or that message was deleted).
//! - Success: `{ok: true, channel, ts, message: {type, subtype, text, ts,
//!   bot_id, user, thread_ts?, blocks?}}`, `ts` = `"<secs>.<6 digits>"`,
//!   strictly increasing (wall clock microseconds, bumped when equal).
//! - Bodies: JSON (`application/json`, must be an object) or form
//!   (`application/x-www-form-urlencoded`, `blocks` as a JSON string);
//!   otherwise `invalid_json`, `json_not_object`, `invalid_post_type`,
//!   `missing_post_type`. Another method under `/api/` → `unknown_method`.
//! - Rate limit: "one message per second per channel" shared by all the
//!   channel's threads (api.slack.com/docs/rate-limits): a fixed window per
//!   channel, `limit` per `window` (default 1 per second); past it HTTP 429
//!   with `Retry-After: <whole seconds>` and `{"ok": false, "error":
//!   "ratelimited"}`. Every authenticated request naming a channel counts,
//!   also refused ones.
//!
//! UNCONFIRMED, chosen here:
//! - `thread_not_found` for an unknown `thread_ts` (not in chat.postMessage's
//!   documented errors; seen from the API, slackapi/bolt-js#2307); also for
//!   the `ts` of a reply (the docs only say "avoid using a reply's `ts`"),
//!   and for a deleted parent (Slack keeps a tombstone for parents with
//!   replies; whether it then accepts replies is not known).
//! - Over 40,000 characters is refused (`msg_too_long`), not truncated.
//! - Short bursts over 1/s, which Slack may allow, are not modelled, nor
//!   the workspace-wide limit.
//! - `invalid_json` / `json_not_object` for bad JSON bodies; HTTP 405 for a
//!   method other than POST.

use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::{Canned, FakeServer, Kind, Received, Responder, State};

/// The `bot_id` of the fake's messages.
pub const SLACK_BOT_ID: &str = "B0FAKEBOT01";
/// The bot user the fake's messages are from.
pub const SLACK_BOT_USER: &str = "U0FAKEBOT01";

/// One message as the fake keeps it.
#[derive(Debug, Clone)]
pub struct SlackMessage {
    pub channel: String,
    pub ts: String,
    /// The parent's `ts` for a reply.
    pub thread_ts: Option<String>,
    pub text: String,
    /// The arguments as sent (JSON body, or the form as strings).
    pub body: Value,
    /// Deleted with [`FakeSlackApi::delete_message`].
    pub deleted: bool,
    /// Reactions added with `reactions.add`, by name, in order.
    pub reactions: Vec<String>,
}

struct Channel {
    id: String,
    member: bool,
    /// Top-level messages and replies, in order.
    messages: Vec<SlackMessage>,
}

struct World {
    token: String,
    limit: u32,
    window: Duration,
    channels: Vec<Channel>,
    /// The last `ts` given, in microseconds.
    last_ts: u128,
}

fn json_answer(status: u16, body: Value, mut headers: Vec<(String, String)>) -> Canned {
    headers.push((
        "content-type".into(),
        "application/json; charset=utf-8".into(),
    ));
    Canned {
        status,
        body: body.to_string(),
        headers,
    }
}

fn failed(error: &str) -> Canned {
    json_answer(200, json!({"ok": false, "error": error}), vec![])
}

/// The method's arguments: a JSON object or a form; `Err(error)` otherwise.
fn arguments(rec: &Received) -> Result<Map<String, Value>, &'static str> {
    let Some(ct) = rec.header("content-type") else {
        return Err("missing_post_type");
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => match serde_json::from_slice::<Value>(&rec.body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err("json_not_object"),
            Err(_) => Err("invalid_json"),
        },
        "application/x-www-form-urlencoded" => Ok(url::form_urlencoded::parse(&rec.body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect()),
        _ => Err("invalid_post_type"),
    }
}

/// How many blocks `blocks` holds (a list, or a JSON string of one in a
/// form); `Err` if it is something else.
fn block_count(blocks: Option<&Value>) -> Result<usize, ()> {
    match blocks {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Array(a)) => Ok(a.len()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Array(a)) => Ok(a.len()),
            _ => Err(()),
        },
        Some(_) => Err(()),
    }
}

/// A string argument; numbers are taken as written (`thread_ts: 1.5`).
fn string_arg(args: &Map<String, Value>, name: &str) -> Option<String> {
    match args.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl World {
    fn channel(&self, id: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.id == id)
    }

    fn channel_mut(&mut self, id: &str) -> &mut Channel {
        self.channels
            .iter_mut()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no channel {id}"))
    }

    fn next_ts(&mut self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros();
        self.last_ts = now.max(self.last_ts + 1);
        format!(
            "{}.{:06}",
            self.last_ts / 1_000_000,
            self.last_ts % 1_000_000
        )
    }

    fn answer(&mut self, st: &mut State, rec: &Received) -> Canned {
        let Some(method) = rec.path.strip_prefix("/api/") else {
            return Canned {
                status: 404,
                body: "Not Found".into(),
                headers: vec![("content-type".into(), "text/plain".into())],
            };
        };
        if method != "chat.postMessage" && method != "reactions.add" {
            return failed("unknown_method");
        }
        if rec.method != "POST" {
            return json_answer(
                405,
                json!({"ok": false, "error": "method_not_allowed"}),
                vec![],
            );
        }
        let args = match arguments(rec) {
            Ok(a) => a,
            Err(e) => return failed(e),
        };
        let token = match rec.header("authorization") {
            Some(h) => h.strip_prefix("Bearer ").map(str::to_string),
            None if !rec.header("content-type").unwrap_or("").contains("json") => {
                string_arg(&args, "token")
            }
            None => None,
        };
        match token {
            None => return failed("not_authed"),
            Some(t) if t != self.token => return failed("invalid_auth"),
            Some(_) => {}
        }
        let channel = string_arg(&args, "channel").unwrap_or_default();
        if method == "reactions.add" {
            return match self.react(&channel, &args) {
                Ok(()) => json_answer(200, json!({"ok": true}), vec![]),
                Err(e) => failed(e),
            };
        }
        let quota = st.take(
            &format!("channel:{channel}"),
            self.limit,
            self.window,
            rec.at,
        );
        if !quota.allowed {
            let secs = quota.reset_after.as_secs_f64().ceil().max(1.0);
            return json_answer(
                429,
                json!({"ok": false, "error": "ratelimited"}),
                vec![("retry-after".into(), secs.to_string())],
            );
        }
        match self.post(&channel, args) {
            Ok(answer) => json_answer(200, answer, vec![]),
            Err(e) => failed(e),
        }
    }

    /// reactions.add past auth (its own rate tier is not modelled):
    /// `timestamp` of any message of the channel, `name` without colons.
    fn react(&mut self, channel: &str, args: &Map<String, Value>) -> Result<(), &'static str> {
        let ts = string_arg(args, "timestamp").ok_or("no_item_specified")?;
        let name = string_arg(args, "name").ok_or("invalid_name")?;
        let ch = self
            .channels
            .iter_mut()
            .find(|c| c.id == channel)
            .ok_or("channel_not_found")?;
        let m = ch
            .messages
            .iter_mut()
            .find(|m| m.ts == ts && !m.deleted)
            .ok_or("message_not_found")?;
        if m.reactions.contains(&name) {
            return Err("already_reacted");
        }
        m.reactions.push(name);
        Ok(())
    }

    /// chat.postMessage past auth and rate limit.
    fn post(&mut self, channel: &str, args: Map<String, Value>) -> Result<Value, &'static str> {
        let ch = self.channel(channel).ok_or("channel_not_found")?;
        if !ch.member {
            return Err("not_in_channel");
        }
        let text = string_arg(&args, "text").unwrap_or_default();
        let blocks = block_count(args.get("blocks")).map_err(|()| "invalid_blocks")?;
        if blocks > 50 {
            return Err("invalid_blocks");
        }
        let attachments = args.get("attachments").is_some_and(|a| !a.is_null());
        if text.trim().is_empty() && blocks == 0 && !attachments {
            return Err("no_text");
        }
        if text.chars().count() > 40_000 {
            return Err("msg_too_long");
        }
        let thread_ts = string_arg(&args, "thread_ts");
        if let Some(parent) = &thread_ts {
            let found = ch
                .messages
                .iter()
                .any(|m| &m.ts == parent && m.thread_ts.is_none() && !m.deleted);
            if !found {
                return Err("thread_not_found");
            }
        }
        let ts = self.next_ts();
        let body = Value::Object(args);
        let mut message = json!({
            "type": "message",
            "subtype": "bot_message",
            "text": text,
            "ts": ts,
            "bot_id": SLACK_BOT_ID,
            "user": SLACK_BOT_USER,
        });
        if let Some(parent) = &thread_ts {
            message["thread_ts"] = json!(parent);
        }
        if let Some(Value::Array(b)) = body.get("blocks") {
            message["blocks"] = json!(b);
        }
        self.channel_mut(channel).messages.push(SlackMessage {
            channel: channel.to_string(),
            ts: ts.clone(),
            thread_ts,
            text,
            body,
            deleted: false,
            reactions: Vec::new(),
        });
        Ok(json!({"ok": true, "channel": channel, "ts": ts, "message": message}))
    }
}

struct SlackApi {
    world: Mutex<World>,
}

impl SlackApi {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Responder for SlackApi {
    fn answer(&self, st: &mut State, rec: &Received) -> Canned {
        self.world().answer(st, rec)
    }
}

/// The fake Slack Web API (see the module docs). Derefs to its
/// [`FakeServer`] for the record and the programmed answers.
pub struct FakeSlackApi {
    server: FakeServer,
    api: Arc<SlackApi>,
}

impl Deref for FakeSlackApi {
    type Target = FakeServer;

    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

impl FakeSlackApi {
    /// A workspace whose bot token is `token`, no channels yet, and Slack's
    /// posting limit: 1 message per second per channel.
    pub async fn start(token: &str) -> Self {
        Self::with_rate(token, 1, Duration::from_secs(1)).await
    }

    /// The same with `limit` messages per `window` per channel.
    pub async fn with_rate(token: &str, limit: u32, window: Duration) -> Self {
        let api = Arc::new(SlackApi {
            world: Mutex::new(World {
                token: token.to_string(),
                limit,
                window,
                channels: Vec::new(),
                last_ts: 0,
            }),
        });
        let server = FakeServer::start(Kind::Custom(api.clone())).await;
        FakeSlackApi { server, api }
    }

    /// `http://{addr}/api`, the Web API's base (Slack: `https://slack.com/api`).
    pub fn api_base(&self) -> String {
        self.url("/api")
    }

    /// `http://{addr}/api/chat.postMessage`.
    pub fn post_message_url(&self) -> String {
        self.url("/api/chat.postMessage")
    }

    /// A channel; `member`: whether the bot was invited to it.
    pub fn add_channel(&self, id: &str, member: bool) {
        let mut w = self.api.world();
        assert!(w.channel(id).is_none(), "channel {id} exists already");
        w.channels.push(Channel {
            id: id.to_string(),
            member,
            messages: Vec::new(),
        });
    }

    /// Invites the bot to (or removes it from) a channel.
    pub fn set_member(&self, id: &str, member: bool) {
        self.api.world().channel_mut(id).member = member;
    }

    /// The top-level messages of a channel, in order (deleted ones flagged).
    pub fn messages(&self, channel: &str) -> Vec<SlackMessage> {
        let w = self.api.world();
        w.channel(channel)
            .map(|c| {
                c.messages
                    .iter()
                    .filter(|m| m.thread_ts.is_none())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The replies in the thread of the top-level message `ts`, in order.
    pub fn replies(&self, channel: &str, ts: &str) -> Vec<SlackMessage> {
        let w = self.api.world();
        w.channel(channel)
            .map(|c| {
                c.messages
                    .iter()
                    .filter(|m| m.thread_ts.as_deref() == Some(ts))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Deletes a message (as a person in Slack would): replies to it answer
    /// `thread_not_found` since.
    pub fn delete_message(&self, channel: &str, ts: &str) {
        let mut w = self.api.world();
        let m = w
            .channel_mut(channel)
            .messages
            .iter_mut()
            .find(|m| m.ts == ts)
            .unwrap_or_else(|| panic!("no message {ts} in {channel}"));
        m.deleted = true;
    }

    /// Records a message posted by a person (not the bot), as the test's
    /// agent writing in a thread; returns its `ts`.
    pub fn post_as_person(&self, channel: &str, thread_ts: &str, text: &str) -> String {
        let mut w = self.api.world();
        let ts = w.next_ts();
        w.channel_mut(channel).messages.push(SlackMessage {
            channel: channel.to_string(),
            ts: ts.clone(),
            thread_ts: Some(thread_ts.to_string()),
            text: text.to_string(),
            body: json!({"text": text, "user": "U0AGENT1"}),
            deleted: false,
            reactions: Vec::new(),
        });
        ts
    }

    /// The reactions on message `ts` of `channel`.
    pub fn reactions(&self, channel: &str, ts: &str) -> Vec<String> {
        let w = self.api.world();
        w.channel(channel)
            .and_then(|c| c.messages.iter().find(|m| m.ts == ts))
            .map(|m| m.reactions.clone())
            .unwrap_or_default()
    }

    /// The next `n` requests get HTTP 200 `{"ok": false, "error": error}`.
    pub fn fail_next_error(&self, n: usize, error: &str) {
        let body = json!({"ok": false, "error": error}).to_string();
        self.fail_next(n, 200, &body, &[]);
    }

    /// The next `n` requests get 429 `ratelimited` with `Retry-After: secs`.
    pub fn fail_next_ratelimited(&self, n: usize, secs: u64) {
        let body = json!({"ok": false, "error": "ratelimited"}).to_string();
        self.fail_next(n, 429, &body, &[("Retry-After", &secs.to_string())]);
    }
}
