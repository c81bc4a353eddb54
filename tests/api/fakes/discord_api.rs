//! A fake Discord for one thread per conversation ([`FakeDiscord`]): a small
//! guild the test builds (text and forum channels, threads, webhooks bound to
//! a channel), reached through Execute Webhook (forum posts) and the bot's
//! REST routes, with Discord's rate-limit buckets. It keeps every message
//! posted, per channel and thread, for the test to inspect.
//!
//! What it models, and where from (research: `targets.md` §1,
//! `two-way.md` §3(a), §3(b); Discord's docs `discord/discord-api-docs`
//! @ `c98d64bc`):
//! - Execute Webhook `POST /api/[v10/]webhooks/{id}/{token}` (`webhook.mdx`):
//!   204, or 200 and the message with `wait=true`; in a forum channel exactly
//!   one of body `thread_name` (a new post) or query `thread_id`, else 400
//!   220001 (neither) / 220002 (both); `thread_name` elsewhere 400 220003;
//!   `/slack` and `/github` in a forum 400 220004 (`opcodes-and-status-codes.mdx`
//!   357–360). A post into an archived thread unarchives it (`webhook.mdx`
//!   `thread_id`; `threads.mdx` "Sending a message will automatically
//!   unarchive the thread, unless the thread has been locked"). Unknown
//!   webhook 404 10015, wrong token 401 50027. `GET` on the webhook URL
//!   answers the webhook object (Get Webhook with Token).
//! - Bot routes under `/api/v10` with `Authorization: Bot <token>`
//!   (otherwise 401 `{code: 0, message: "401: Unauthorized"}`):
//!   `GET`/`PATCH /channels/{id}` (`channel.mdx` Get/Modify Channel; PATCH
//!   on an archived thread must unarchive it, else 400 50083),
//!   `POST /channels/{id}/messages` (200 message; a forum 400 40058),
//!   `POST /channels/{id}/threads` (a forum: Start Thread in Forum, 201 thread
//!   with the nested starter message whose id is the thread's, `threads.mdx`
//!   §Forums; a text channel: Start Thread without Message, type 12 unless
//!   `type` says 11), `POST /channels/{id}/messages/{msg}/threads` (Start
//!   Thread from Message: the thread's id is the message's; 404 10008 for an
//!   unknown message, 400 160004 if it has a thread already). Thread names
//!   1–100 characters (`channel.mdx`), else 400 50035.
//! - Deleted or unknown channels and threads 404 10003 "Unknown Channel";
//!   posting in a locked thread 403 160005 "Thread is locked".
//! - Message checks shared with the webhook fake (`discord.rs`): JSON body
//!   (50035/50109), `content` ≤ 2000, ≤ 10 embeds, not empty (50006); also
//!   `allowed_mentions` (`message.mdx` §Allowed Mentions: `parse` values,
//!   `users`/`roles` ≤ 100 ids, `parse: ["users"]` with a non-empty `users`
//!   list is a validation error); and every request needs a `User-Agent`
//!   starting `DiscordBot (` (`reference.mdx` §User Agent).
//! - Rate limits (`rate-limits.mdx`): a fixed window per route bucket and
//!   major parameter (per webhook `id/token`; per channel or thread id for
//!   the bot routes), `limit` per `window` for every bucket of this fake,
//!   with `X-RateLimit-Limit/Remaining/Reset/Reset-After/Bucket` on every
//!   answer of a counted request and 429 `{message, retry_after: float,
//!   global: false}` with `Retry-After` (whole seconds) and scope `user`;
//!   optionally a global window ([`FakeDiscord::set_global_limit`]) answering
//!   429 `global: true` with `X-RateLimit-Global: true` and scope `global`.
//!   Every normal request past the auth check counts, also refused ones.
//!
//! UNCONFIRMED in the research, chosen here:
//! - The starter message of a webhook-made forum post has the thread's id
//!   (documented only for `POST /channels/{id}/threads`); its `channel_id` is
//!   the thread either way.
//! - The 1–100 bound applies to webhook `thread_name`.
//! - A deleted thread answers 404 10003, for webhooks and bot alike.
//! - A webhook's `thread_id` naming a thread of another channel: 404 10003.
//! - The lock binds webhooks and this bot alike: the fake's bot lacks
//!   `MANAGE_THREADS` for posting (Discord lets holders post in locked
//!   threads), yet may PATCH `archived`/`locked` (it is modelled as the
//!   thread's moderator there). 40058 and 50024 are answered with 400.
//! - The global limit applies to webhook requests too, keyed by IP (one key
//!   here), as the docs say for requests without `Authorization`; bot
//!   requests are keyed by token.
//! - A missing `DiscordBot (` User-Agent gets 403 `{code: 40333}` (the docs
//!   say such requests "may be blocked" with a Cloudflare error).
//! - The `_errors` codes inside a 50035 for `allowed_mentions` and thread
//!   names are guesses; thread creation answers 201 Created (the docs say
//!   only "Returns a channel").
//! - Bot routes answer only under `/api/v10`: unversioned ones are 404 here
//!   (Discord would serve them as the deprecated v6, which has no threads).
//!
//! Not modelled: guild/channel permissions, tags (`REQUIRE_TAG`), media
//! channels, files, components, timestamps, the hidden per-channel webhook
//! limit, the invalid-request (Cloudflare) ban, deleting through HTTP.

mod bot;
mod checks;
mod webhook;

use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};

use super::discord::{Reject, error, json_answer};
use super::{Canned, FakeServer, Kind, Received, Responder, State};

/// The guild every channel of the fake is in.
pub const GUILD_ID: &str = "1100000000000000001";
/// The user id of the fake's bot (the `author` of its messages).
pub const BOT_USER_ID: &str = "1100000000000000002";

/// Channel types (`channel.mdx` §Channel Types).
pub const GUILD_TEXT: u8 = 0;
pub const PUBLIC_THREAD: u8 = 11;
pub const PRIVATE_THREAD: u8 = 12;
pub const GUILD_FORUM: u8 = 15;

/// One message as the fake keeps it.
#[derive(Debug, Clone)]
pub struct DiscordMessage {
    pub id: String,
    /// The channel or thread it is in.
    pub channel_id: String,
    /// The message as sent: Execute Webhook's or Create Message's whole JSON
    /// body (with `username`, `thread_name`...), or the `message` of Start
    /// Thread in Forum.
    pub body: Value,
    /// The webhook that posted it; `None` for the bot.
    pub webhook_id: Option<String>,
}

impl DiscordMessage {
    /// `content` of the body, `""` without one.
    pub fn content(&self) -> &str {
        self.body
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// A thread (a forum post, or a thread of a text channel), as of now.
#[derive(Debug, Clone)]
pub struct DiscordThread {
    pub id: String,
    pub parent_id: String,
    pub name: String,
    /// [`PUBLIC_THREAD`] or [`PRIVATE_THREAD`].
    pub kind: u8,
    pub archived: bool,
    pub locked: bool,
    /// Deleted threads are kept (with their messages) but answer 10003.
    pub deleted: bool,
    /// In order; a forum post's first message has the thread's id.
    pub messages: Vec<DiscordMessage>,
}

struct Channel {
    id: String,
    kind: u8,
    name: String,
    /// Set for threads only.
    parent_id: Option<String>,
    owner_id: Option<String>,
    archived: bool,
    locked: bool,
    deleted: bool,
    messages: Vec<DiscordMessage>,
}

impl Channel {
    fn new(id: &str, kind: u8, name: &str) -> Self {
        Channel {
            id: id.to_string(),
            kind,
            name: name.to_string(),
            parent_id: None,
            owner_id: None,
            archived: false,
            locked: false,
            deleted: false,
            messages: Vec::new(),
        }
    }

    fn is_thread(&self) -> bool {
        self.parent_id.is_some()
    }

    /// The channel object (`channel.mdx` §Channel Object), the fields a
    /// client of threads reads.
    fn object(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "type": self.kind,
            "guild_id": GUILD_ID,
            "name": self.name,
            "flags": 0,
            "last_message_id": self.messages.last().map(|m| m.id.clone()),
        });
        if let Some(parent) = &self.parent_id {
            v["parent_id"] = json!(parent);
            v["owner_id"] = json!(self.owner_id);
            v["message_count"] = json!(self.messages.iter().filter(|m| m.id != self.id).count());
            v["thread_metadata"] = json!({
                "archived": self.archived,
                "locked": self.locked,
                "auto_archive_duration": 4320,
            });
        }
        v
    }

    fn snapshot(&self) -> DiscordThread {
        DiscordThread {
            id: self.id.clone(),
            parent_id: self.parent_id.clone().unwrap_or_default(),
            name: self.name.clone(),
            kind: self.kind,
            archived: self.archived,
            locked: self.locked,
            deleted: self.deleted,
            messages: self.messages.clone(),
        }
    }
}

struct Webhook {
    id: String,
    token: String,
    channel_id: String,
}

struct World {
    bot_token: String,
    limit: u32,
    window: Duration,
    global: Option<(u32, Duration)>,
    /// Channels and threads in creation order.
    channels: Vec<Channel>,
    webhooks: Vec<Webhook>,
    next_id: u64,
    /// Channels and threads whose posts answer 500 (a failing shard).
    failing: Vec<String>,
    /// What Get Gateway Bot answers as the Gateway's URL, once set.
    gateway: Option<String>,
    /// Reactions the bot added: (channel, message, emoji as in the path).
    reactions: Vec<(String, String, String)>,
}

/// The message object of an answer (`message.mdx` §Message Object).
fn message_object(m: &DiscordMessage) -> Value {
    let author = match &m.webhook_id {
        Some(hook) => json!({
            "bot": true,
            "id": hook,
            "username": m.body.get("username").and_then(Value::as_str).unwrap_or("Fake Webhook"),
        }),
        None => json!({"bot": true, "id": BOT_USER_ID, "username": "Fake Bot"}),
    };
    let mut v = json!({
        "id": m.id,
        "type": 0,
        "channel_id": m.channel_id,
        "content": m.content(),
        "embeds": m.body.get("embeds").filter(|e| e.is_array()).cloned().unwrap_or(json!([])),
        "author": author,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "pinned": false,
        "flags": 0,
    });
    if let Some(hook) = &m.webhook_id {
        v["webhook_id"] = json!(hook);
    }
    v
}

fn unknown_channel() -> Reject {
    error(404, 10003, "Unknown Channel")
}

impl World {
    fn channel(&self, id: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.id == id)
    }

    fn channel_mut(&mut self, id: &str) -> Option<&mut Channel> {
        self.channels.iter_mut().find(|c| c.id == id)
    }

    /// A channel or thread that was not deleted.
    fn live(&self, id: &str) -> Option<&Channel> {
        self.channel(id).filter(|c| !c.deleted)
    }

    fn next_id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    fn add(&mut self, ch: Channel) {
        assert!(
            self.channel(&ch.id).is_none(),
            "channel {} exists already",
            ch.id
        );
        self.channels.push(ch);
    }

    fn add_thread(&mut self, id: &str, parent: &str, name: &str, kind: u8, owner: &str) {
        let mut t = Channel::new(id, kind, name);
        t.parent_id = Some(parent.to_string());
        t.owner_id = Some(owner.to_string());
        self.add(t);
    }

    /// Posts `body` into a live channel or thread: 404 10003 if there is
    /// none, 400 40058 into a forum, 403 160005 into a locked thread; an
    /// archived thread is unarchived. `id` is the message id to use (a forum
    /// post's starter message), else a new one.
    fn post(
        &mut self,
        channel_id: &str,
        body: Value,
        webhook_id: Option<&str>,
        id: Option<String>,
    ) -> Result<DiscordMessage, Reject> {
        if self.failing.iter().any(|f| f == channel_id) {
            return Err(error(500, 0, "500: Internal Server Error"));
        }
        let ch = self.live(channel_id).ok_or_else(unknown_channel)?;
        if ch.kind == GUILD_FORUM {
            return Err(error(
                400,
                40058,
                "Cannot send a message in a forum channel",
            ));
        }
        if ch.locked {
            return Err(error(403, 160005, "Thread is locked"));
        }
        let id = id.unwrap_or_else(|| self.next_id());
        let msg = DiscordMessage {
            id,
            channel_id: channel_id.to_string(),
            body,
            webhook_id: webhook_id.map(str::to_string),
        };
        let ch = self.channel_mut(channel_id).expect("checked above");
        ch.archived = false;
        ch.messages.push(msg.clone());
        Ok(msg)
    }

    /// The global window, when set: `Some(429)` if it is used up. Keyed by
    /// the `Authorization` header, or one key for all requests without.
    fn global_limited(&self, st: &mut State, rec: &Received) -> Option<Canned> {
        let (limit, window) = self.global?;
        let who = rec.header("authorization").unwrap_or("ip");
        let quota = st.take(&format!("global:{who}"), limit, window, rec.at);
        if quota.allowed {
            return None;
        }
        let retry_after = quota.reset_after.as_secs_f64();
        Some(Canned {
            status: 429,
            body: format!(
                "{{\"message\": \"You are being rate limited.\", \"retry_after\": {retry_after:.3}, \"global\": true}}"
            ),
            headers: vec![
                (
                    "retry-after".into(),
                    retry_after.ceil().max(1.0).to_string(),
                ),
                ("x-ratelimit-global".into(), "true".into()),
                ("x-ratelimit-scope".into(), "global".into()),
                ("content-type".into(), "application/json".into()),
            ],
        })
    }

    fn answer(&mut self, st: &mut State, rec: &Received) -> Canned {
        let ua_ok = rec
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("DiscordBot ("));
        if !ua_ok {
            let (status, body) = error(
                403,
                40333,
                "Cloudflare is blocking your request: set a DiscordBot User-Agent",
            );
            return json_answer(status, body, vec![]);
        }
        let not_found =
            || json_answer(404, json!({"message": "404: Not Found", "code": 0}), vec![]);
        let Some(rest) = rec.path.strip_prefix("/api/") else {
            return not_found();
        };
        let (versioned, rest) = match rest.strip_prefix("v10/") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let segs: Vec<&str> = rest.split('/').collect();
        match segs.as_slice() {
            ["webhooks", id, token] => webhook::webhook(self, st, rec, id, token, None),
            ["webhooks", id, token, service @ ("slack" | "github")] => {
                webhook::webhook(self, st, rec, id, token, Some(service))
            }
            ["gateway", "bot"] if versioned && self.gateway.is_some() => {
                if rec.header("authorization") != Some(format!("Bot {}", self.bot_token).as_str()) {
                    return json_answer(
                        401,
                        json!({"message": "401: Unauthorized", "code": 0}),
                        vec![],
                    );
                }
                let url = self.gateway.clone().unwrap_or_default();
                json_answer(
                    200,
                    json!({"url": url, "shards": 1, "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1}}),
                    vec![],
                )
            }
            ["channels", ..] if versioned => match bot::route(&rec.method, &segs) {
                Some(Ok(route)) => bot::bot(self, st, rec, route),
                Some(Err(())) => json_answer(
                    405,
                    json!({"message": "405: Method Not Allowed", "code": 0}),
                    vec![],
                ),
                None => not_found(),
            },
            _ => not_found(),
        }
    }
}

struct DiscordApi {
    world: Mutex<World>,
}

impl DiscordApi {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Responder for DiscordApi {
    fn answer(&self, st: &mut State, rec: &Received) -> Canned {
        self.world().answer(st, rec)
    }
}

/// The fake Discord (see the module docs). Derefs to its [`FakeServer`] for
/// the record (`received`, `accepted`, `wait_for_accepted`...) and the
/// programmed answers (`fail_next`, `always`, `clear`, `set_delay`).
pub struct FakeDiscord {
    server: FakeServer,
    api: Arc<DiscordApi>,
}

impl Deref for FakeDiscord {
    type Target = FakeServer;

    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

impl FakeDiscord {
    /// An empty guild whose bot token is `bot_token`; every rate-limit
    /// bucket admits `limit` requests per `window` (Discord's webhooks: 5 per
    /// 2 s). No global limit until [`set_global_limit`](Self::set_global_limit).
    pub async fn start(bot_token: &str, limit: u32, window: Duration) -> Self {
        let api = Arc::new(DiscordApi {
            world: Mutex::new(World {
                bot_token: bot_token.to_string(),
                limit,
                window,
                global: None,
                channels: Vec::new(),
                webhooks: Vec::new(),
                next_id: 1_300_000_000_000_000_000,
                failing: Vec::new(),
                gateway: None,
                reactions: Vec::new(),
            }),
        });
        let server = FakeServer::start(Kind::Custom(api.clone())).await;
        FakeDiscord { server, api }
    }

    /// From now on also a global window of `limit` per `window` (Discord: 50
    /// per second), per bot token, and one for all unauthenticated requests.
    pub fn set_global_limit(&self, limit: u32, window: Duration) {
        self.api.world().global = Some((limit, window));
    }

    /// `http://{addr}/api/v10`, the base of the bot routes.
    pub fn api_base(&self) -> String {
        self.url("/api/v10")
    }

    /// The token the bot routes expect after `Authorization: Bot `.
    pub fn bot_token(&self) -> String {
        self.api.world().bot_token.clone()
    }

    /// A `GUILD_TEXT` channel (type 0) named `channel-{id}`.
    pub fn add_text_channel(&self, id: &str) {
        self.api
            .world()
            .add(Channel::new(id, GUILD_TEXT, &format!("channel-{id}")));
    }

    /// A `GUILD_FORUM` channel (type 15) named `forum-{id}`.
    pub fn add_forum_channel(&self, id: &str) {
        self.api
            .world()
            .add(Channel::new(id, GUILD_FORUM, &format!("forum-{id}")));
    }

    /// A public thread (a forum post without messages, or a thread of a text
    /// channel) that existed before the test, started by someone else.
    pub fn add_thread(&self, id: &str, parent: &str, name: &str) {
        let mut w = self.api.world();
        assert!(w.channel(parent).is_some(), "no channel {parent}");
        w.add_thread(id, parent, name, PUBLIC_THREAD, "1100000000000000003");
    }

    /// A webhook of `channel`; returns its URL as Discord shows it
    /// (unversioned, `http://{addr}/api/webhooks/{id}/{token}`).
    pub fn add_webhook(&self, id: &str, token: &str, channel: &str) -> String {
        let mut w = self.api.world();
        assert!(w.channel(channel).is_some(), "no channel {channel}");
        assert!(
            w.webhooks.iter().all(|h| h.id != id),
            "webhook {id} exists already"
        );
        w.webhooks.push(Webhook {
            id: id.to_string(),
            token: token.to_string(),
            channel_id: channel.to_string(),
        });
        drop(w);
        self.webhook_url(id)
    }

    /// The URL of a webhook added with [`add_webhook`](Self::add_webhook).
    pub fn webhook_url(&self, id: &str) -> String {
        let w = self.api.world();
        let hook = w
            .webhooks
            .iter()
            .find(|h| h.id == id)
            .unwrap_or_else(|| panic!("no webhook {id}"));
        self.url(&format!("/api/webhooks/{}/{}", hook.id, hook.token))
    }

    /// Every thread in creation order, deleted ones included (flagged).
    pub fn threads(&self) -> Vec<DiscordThread> {
        self.api
            .world()
            .channels
            .iter()
            .filter(|c| c.is_thread())
            .map(Channel::snapshot)
            .collect()
    }

    pub fn thread(&self, id: &str) -> Option<DiscordThread> {
        let w = self.api.world();
        w.channel(id)
            .filter(|c| c.is_thread())
            .map(Channel::snapshot)
    }

    /// The messages of a channel or thread, in order (empty if unknown).
    pub fn messages_in(&self, id: &str) -> Vec<DiscordMessage> {
        let w = self.api.world();
        w.channel(id)
            .map(|c| c.messages.clone())
            .unwrap_or_default()
    }

    fn with_thread(&self, id: &str, f: impl FnOnce(&mut Channel)) {
        let mut w = self.api.world();
        let t = w
            .channel_mut(id)
            .filter(|c| c.is_thread())
            .unwrap_or_else(|| panic!("no thread {id}"));
        f(t);
    }

    /// Deletes a thread, as a moderator would: it answers 404 10003 since.
    pub fn delete_thread(&self, id: &str) {
        self.with_thread(id, |t| t.deleted = true);
    }

    /// Locks a thread (as a moderator would; archiving is separate): posts
    /// answer 403 160005 since.
    pub fn lock_thread(&self, id: &str) {
        self.with_thread(id, |t| t.locked = true);
    }

    /// Archives a thread (as inactivity would); a post unarchives it.
    pub fn archive_thread(&self, id: &str) {
        self.with_thread(id, |t| t.archived = true);
    }

    /// The reactions the bot added (Create Reaction): (channel, message,
    /// emoji percent-encoded as in the path).
    pub fn reactions(&self) -> Vec<(String, String, String)> {
        self.api.world().reactions.clone()
    }

    /// Get Gateway Bot (`GET /api/v10/gateway/bot`) answers `url` from now
    /// on (a [`super::discord_gateway::FakeGateway`]'s `ws://` address).
    pub fn set_gateway_url(&self, url: &str) {
        self.api.world().gateway = Some(url.to_owned());
    }

    /// Adds a person's message to a channel or thread, as if typed in
    /// Discord (for catching up through REST); returns nothing.
    pub fn post_as_person(&self, channel: &str, id: &str, content: &str) {
        let mut w = self.api.world();
        let ch = w
            .channel_mut(channel)
            .unwrap_or_else(|| panic!("no channel {channel}"));
        ch.messages.push(DiscordMessage {
            id: id.to_owned(),
            channel_id: channel.to_owned(),
            body: json!({"content": content, "author": {"id": "1100000000000000042", "username": "ana", "global_name": "Ana", "bot": false}}),
            webhook_id: None,
        });
    }

    /// Posts into channel or thread `id` answer 500 from now on (`true`), as
    /// a failing Discord shard would, or succeed again (`false`).
    pub fn fail_posts_in(&self, id: &str, failing: bool) {
        let mut w = self.api.world();
        w.failing.retain(|f| f != id);
        if failing {
            w.failing.push(id.to_string());
        }
    }

    /// The next `n` requests get `status` with Discord's `{code, message}`.
    pub fn fail_next_code(&self, n: usize, status: u16, code: u64, message: &str) {
        let body = json!({"code": code, "message": message}).to_string();
        self.fail_next(n, status, &body, &[]);
    }
}
