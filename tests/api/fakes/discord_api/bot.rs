//! The bot's REST routes on channels and threads (`channel.mdx`,
//! `message.mdx` Create Message, `threads.mdx`), under `/api/v10` with
//! `Authorization: Bot <token>`. Each route has its own bucket, per channel
//! (the route's major parameter, `rate-limits.mdx`).

use serde_json::{Value, json};

use super::{
    BOT_USER_ID, DiscordMessage, GUILD_FORUM, GUILD_TEXT, PRIVATE_THREAD, PUBLIC_THREAD, World,
    checks, message_object, unknown_channel,
};
use crate::fakes::discord::{
    Reject, check_message, error, field_error, json_answer, json_body, ratelimit_headers,
    route_limited,
};
use crate::fakes::{Canned, Received, State};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    GetChannel,
    ModifyChannel,
    CreateMessage,
    StartThread,
    StartThreadFromMessage,
    GetMessages,
    CreateReaction,
}

impl Op {
    /// The route, as Discord names buckets (without the major parameter).
    fn name(self) -> &'static str {
        match self {
            Op::GetChannel => "GET /channels/{channel.id}",
            Op::ModifyChannel => "PATCH /channels/{channel.id}",
            Op::CreateMessage => "POST /channels/{channel.id}/messages",
            Op::StartThread => "POST /channels/{channel.id}/threads",
            Op::StartThreadFromMessage => {
                "POST /channels/{channel.id}/messages/{message.id}/threads"
            }
            Op::GetMessages => "GET /channels/{channel.id}/messages",
            Op::CreateReaction => {
                "PUT /channels/{channel.id}/messages/{message.id}/reactions/{emoji}/@me"
            }
        }
    }
}

/// A bot route and its parameters.
pub(super) struct BotRoute<'a> {
    op: Op,
    channel: &'a str,
    message: &'a str,
}

/// The route of `segs` (`["channels", ...]`): `None` if there is none,
/// `Some(Err(()))` if the path has one but not for this method.
pub(super) fn route<'a>(method: &str, segs: &[&'a str]) -> Option<Result<BotRoute<'a>, ()>> {
    let (ops, channel, message): (&[(&str, Op)], &str, &str) = match segs {
        ["channels", c] => (
            &[("GET", Op::GetChannel), ("PATCH", Op::ModifyChannel)],
            c,
            "",
        ),
        ["channels", c, "messages"] => (
            &[("POST", Op::CreateMessage), ("GET", Op::GetMessages)],
            c,
            "",
        ),
        ["channels", c, "threads"] => (&[("POST", Op::StartThread)], c, ""),
        ["channels", c, "messages", m, "reactions", _, "@me"] => {
            (&[("PUT", Op::CreateReaction)], c, m)
        }
        ["channels", c, "messages", m, "threads"] => {
            (&[("POST", Op::StartThreadFromMessage)], c, m)
        }
        _ => return None,
    };
    Some(
        ops.iter()
            .find(|(m, _)| *m == method)
            .map(|&(_, op)| BotRoute {
                op,
                channel,
                message,
            })
            .ok_or(()),
    )
}

/// A stable 32-hex-digit bucket id for a route (FNV-1a, twice).
fn bucket_id(route: &str) -> String {
    let fnv = |salt: u8| {
        route
            .bytes()
            .chain([salt])
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
    };
    format!("{:016x}{:016x}", fnv(0), fnv(1))
}

/// Auth, the global window, the route's bucket, then the route.
pub(super) fn bot(w: &mut World, st: &mut State, rec: &Received, route: BotRoute<'_>) -> Canned {
    let expected = format!("Bot {}", w.bot_token);
    if rec.header("authorization") != Some(expected.as_str()) {
        return json_answer(
            401,
            json!({"message": "401: Unauthorized", "code": 0}),
            vec![],
        );
    }
    if let Some(limited) = w.global_limited(st, rec) {
        return limited;
    }
    let key = format!("{}:{}", route.op.name(), route.channel);
    let quota = st.take(&key, w.limit, w.window, rec.at);
    let headers = ratelimit_headers(&quota, &bucket_id(route.op.name()));
    if !quota.allowed {
        return route_limited(&quota, headers);
    }
    let id = route.channel;
    let result = match route.op {
        Op::GetChannel => w
            .live(id)
            .map(|c| (200, c.object()))
            .ok_or_else(unknown_channel),
        Op::ModifyChannel => modify_channel(w, rec, id),
        Op::CreateMessage => create_message(w, rec, id),
        Op::StartThread => start_thread(w, rec, id),
        Op::StartThreadFromMessage => start_thread_from_message(w, rec, id, route.message),
        Op::GetMessages => get_messages(w, rec, id),
        Op::CreateReaction => {
            // The emoji is the path's sixth segment, percent-encoded.
            let emoji = rec.path.split('/').nth(8).unwrap_or("").to_owned();
            w.reactions
                .push((id.to_owned(), route.message.to_owned(), emoji));
            return Canned {
                status: 204,
                body: String::new(),
                headers,
            };
        }
    };
    let (status, body) = result.unwrap_or_else(|r| r);
    json_answer(status, body, headers)
}

fn wrong_channel_type() -> Reject {
    error(400, 50024, "Cannot execute action on this channel type")
}

/// Modify Channel: `name` on any channel; `archived` and `locked` on a
/// thread, which must be unarchived by the same request if archived.
fn modify_channel(w: &mut World, rec: &Received, id: &str) -> Result<(u16, Value), Reject> {
    let ch = w.live(id).ok_or_else(unknown_channel)?;
    let (is_thread, archived) = (ch.is_thread(), ch.archived);
    let body = json_body(rec)?;
    let name = match body.get("name").filter(|v| !v.is_null()) {
        Some(v) => Some(checks::thread_name(Some(v), "name")?.to_string()),
        None => None,
    };
    let want_archived = body.get("archived").and_then(Value::as_bool);
    let want_locked = body.get("locked").and_then(Value::as_bool);
    if is_thread && archived && want_archived != Some(false) {
        return Err(error(
            400,
            50083,
            "Tried to perform an operation on an archived thread",
        ));
    }
    let ch = w.channel_mut(id).expect("live above");
    if let Some(name) = name {
        ch.name = name;
    }
    if is_thread {
        if let Some(a) = want_archived {
            ch.archived = a;
        }
        if let Some(l) = want_locked {
            ch.locked = l;
        }
    }
    Ok((200, ch.object()))
}

/// Create Message in a text channel or thread: 200 and the message.
fn create_message(w: &mut World, rec: &Received, id: &str) -> Result<(u16, Value), Reject> {
    w.live(id).ok_or_else(unknown_channel)?;
    let body = json_body(rec)?;
    check_message(&body, &[])?;
    checks::allowed_mentions(&body, &[])?;
    let msg = w.post(id, body, None, None)?;
    Ok((200, message_object(&msg)))
}

/// Start Thread in Forum (a post with its first message, whose id is the
/// thread's; the answer nests it as `message`) or, in a text channel, Start
/// Thread without Message (type 12 unless the body says 11).
fn start_thread(w: &mut World, rec: &Received, id: &str) -> Result<(u16, Value), Reject> {
    let ch = w.live(id).ok_or_else(unknown_channel)?;
    if ch.is_thread() {
        return Err(wrong_channel_type());
    }
    let forum = ch.kind == GUILD_FORUM;
    let body = json_body(rec)?;
    let name = checks::thread_name(body.get("name"), "name")?.to_string();
    if !forum {
        let kind = match body.get("type").and_then(Value::as_u64) {
            None => PRIVATE_THREAD,
            Some(11) => PUBLIC_THREAD,
            Some(12) => PRIVATE_THREAD,
            Some(_) => {
                return Err(field_error(
                    &["type"],
                    "BASE_TYPE_CHOICES",
                    "Value must be one of {11, 12}.",
                ));
            }
        };
        let tid = w.next_id();
        w.add_thread(&tid, id, &name, kind, BOT_USER_ID);
        return Ok((201, w.channel(&tid).expect("added").object()));
    }
    let Some(message) = body.get("message").filter(|m| m.is_object()) else {
        return Err(field_error(
            &["message"],
            "BASE_TYPE_REQUIRED",
            "This field is required",
        ));
    };
    check_message(message, &["message"])?;
    checks::allowed_mentions(message, &["message"])?;
    let tid = w.next_id();
    w.add_thread(&tid, id, &name, PUBLIC_THREAD, BOT_USER_ID);
    let msg = w.post(&tid, message.clone(), None, Some(tid.clone()))?;
    let mut thread = w.channel(&tid).expect("added").object();
    thread["message"] = message_object(&msg);
    Ok((201, thread))
}

/// Start Thread from Message of a text channel: the thread takes the
/// message's id, so a message has at most one thread.
fn start_thread_from_message(
    w: &mut World,
    rec: &Received,
    id: &str,
    message: &str,
) -> Result<(u16, Value), Reject> {
    let ch = w.live(id).ok_or_else(unknown_channel)?;
    if ch.kind != GUILD_TEXT {
        return Err(wrong_channel_type());
    }
    if !ch.messages.iter().any(|m| m.id == message) {
        return Err(error(404, 10008, "Unknown Message"));
    }
    if w.channel(message).is_some() {
        return Err(error(
            400,
            160004,
            "A thread has already been created for this message",
        ));
    }
    let body = json_body(rec)?;
    let name = checks::thread_name(body.get("name"), "name")?.to_string();
    w.add_thread(message, id, &name, PUBLIC_THREAD, BOT_USER_ID);
    Ok((201, w.channel(message).expect("added").object()))
}

/// Get Channel Messages (`message.mdx`): the messages after `after` (a
/// snowflake), newest first, at most `limit` (1–100, default 50) — the
/// oldest `limit` of them, as Discord pages forward from `after`.
fn get_messages(w: &World, rec: &Received, id: &str) -> Result<(u16, Value), Reject> {
    let ch = w.live(id).ok_or_else(unknown_channel)?;
    let num = |s: &str| s.parse::<u128>().unwrap_or(0);
    let after = rec.query_param("after").map_or(0, |a| num(&a));
    let limit = rec
        .query_param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, 100);
    let mut items: Vec<&DiscordMessage> =
        ch.messages.iter().filter(|m| num(&m.id) > after).collect();
    items.sort_by_key(|m| num(&m.id));
    items.truncate(limit);
    items.reverse();
    let list: Vec<Value> = items
        .iter()
        .map(|m| {
            let mut v = message_object(m);
            if let Some(author) = m.body.get("author") {
                v["author"] = author.clone();
            }
            v
        })
        .collect();
    Ok((200, Value::Array(list)))
}
