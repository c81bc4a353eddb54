//! Execute Webhook and Get Webhook with Token, for webhooks bound to a text
//! or forum channel of the fake guild (`webhook.mdx`; forum rules
//! `opcodes-and-status-codes.mdx` 220001–220004).

use serde_json::{Value, json};

use super::{GUILD_FORUM, PUBLIC_THREAD, World, checks, message_object, unknown_channel};
use crate::fakes::discord::{
    Reject, check_message, error, json_answer, json_body, ratelimit_headers, route_limited,
};
use crate::fakes::{Canned, DISCORD_BUCKET, Received, State};

/// Answers a request on `/api/[v10/]webhooks/{id}/{token}[/{service}]`.
/// The bucket is the webhook's (`id/token`); an unknown webhook (404 10015)
/// or a wrong token (401 50027) is answered before a 429, as the webhook
/// fake does.
pub(super) fn webhook(
    w: &mut World,
    st: &mut State,
    rec: &Received,
    id: &str,
    token: &str,
    service: Option<&str>,
) -> Canned {
    if let Some(limited) = w.global_limited(st, rec) {
        return limited;
    }
    let quota = st.take(&format!("webhook:{id}/{token}"), w.limit, w.window, rec.at);
    let headers = ratelimit_headers(&quota, DISCORD_BUCKET);
    let answer = |(status, body): Reject| json_answer(status, body, headers.clone());
    let Some(hook) = w.webhooks.iter().find(|h| h.id == id) else {
        return answer(error(404, 10015, "Unknown Webhook"));
    };
    if hook.token != token {
        return answer(error(401, 50027, "Invalid Webhook Token"));
    }
    if !quota.allowed {
        return route_limited(&quota, headers);
    }
    let channel_id = hook.channel_id.clone();
    let forum = w
        .channel(&channel_id)
        .is_some_and(|c| c.kind == GUILD_FORUM);
    match (rec.method.as_str(), service) {
        ("GET", None) => answer((
            200,
            json!({
                "id": id,
                "type": 1,
                "guild_id": super::GUILD_ID,
                "channel_id": channel_id,
                "name": format!("hook-{id}"),
                "avatar": null,
                "application_id": null,
                "token": token,
            }),
        )),
        ("POST", None) => match execute(w, rec, &channel_id, id) {
            Ok(Some(msg)) => answer((200, msg)),
            Ok(None) => Canned {
                status: 204,
                body: String::new(),
                headers,
            },
            Err(r) => answer(r),
        },
        ("POST", Some(_)) if forum => answer(error(
            400,
            220004,
            "Webhook services cannot be used in forum channels",
        )),
        // The Slack- and GitHub-compatible variants are not modelled.
        ("POST", Some(_)) => answer((404, json!({"message": "404: Not Found", "code": 0}))),
        _ => answer((
            405,
            json!({"message": "405: Method Not Allowed", "code": 0}),
        )),
    }
}

/// Execute Webhook: checks the body, then where it goes (the channel, a new
/// forum post, or `thread_id`), then posts. `Ok(None)` without `wait`.
fn execute(
    w: &mut World,
    rec: &Received,
    channel_id: &str,
    hook_id: &str,
) -> Result<Option<Value>, Reject> {
    let body = json_body(rec)?;
    check_message(&body, &[])?;
    checks::allowed_mentions(&body, &[])?;
    let wait = rec
        .query_param("wait")
        .is_some_and(|v| matches!(v.as_str(), "true" | "True" | "1"));
    let thread_id = rec.query_param("thread_id");
    let has_name = body.get("thread_name").is_some_and(|v| !v.is_null());
    let forum = w.channel(channel_id).is_some_and(|c| c.kind == GUILD_FORUM);
    let msg = match (has_name, thread_id) {
        (true, Some(_)) if forum => {
            return Err(error(
                400,
                220002,
                "Webhooks posted to forum channels cannot have both a thread_name and thread_id",
            ));
        }
        (false, None) if forum => {
            return Err(error(
                400,
                220001,
                "Webhooks posted to forum channels must have a thread_name or thread_id",
            ));
        }
        (true, _) if !forum => {
            return Err(error(
                400,
                220003,
                "Webhooks can only create threads in forum channels",
            ));
        }
        (true, _) => {
            // A new post: its starter message has the thread's id.
            let name = checks::thread_name(body.get("thread_name"), "thread_name")?.to_string();
            let id = w.next_id();
            w.add_thread(&id, channel_id, &name, PUBLIC_THREAD, hook_id);
            w.post(&id, body, Some(hook_id), Some(id.clone()))?
        }
        (false, Some(thread)) => {
            checks::snowflake(&thread, "thread_id")?;
            let in_channel = w
                .live(&thread)
                .is_some_and(|t| t.parent_id.as_deref() == Some(channel_id));
            if !in_channel {
                return Err(unknown_channel());
            }
            w.post(&thread, body, Some(hook_id), None)?
        }
        (false, None) => w.post(channel_id, body, Some(hook_id), None)?,
    };
    Ok(wait.then(|| message_object(&msg)))
}
