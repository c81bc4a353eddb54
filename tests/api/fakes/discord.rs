//! How the fake Discord answers a normal request (Execute Webhook): the
//! rate-limit headers and 429 of its fixed window per webhook, 404 for an
//! unknown webhook, 405, 400 with Discord's error bodies, then 204, or 200
//! with the message for `?wait=true`. Its error bodies, rate-limit headers
//! and message checks are shared with `discord_api` (the thread fake).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{Canned, DISCORD_BUCKET, Quota, Received, State, is_json, query_param};

/// `(id, token)` of a Discord webhook path, versioned or not.
fn discord_webhook(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/")?;
    let rest = match rest.strip_prefix("v10/") {
        Some(r) => r,
        None => rest,
    };
    let rest = rest.strip_prefix("webhooks/")?;
    let (id, token) = rest.split_once('/')?;
    let ok = !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && !token.is_empty()
        && !token.contains('/');
    ok.then_some((id, token))
}

pub(super) fn json_answer(status: u16, body: Value, mut headers: Vec<(String, String)>) -> Canned {
    headers.push(("content-type".into(), "application/json".into()));
    Canned {
        status,
        body: body.to_string(),
        headers,
    }
}

/// A refusal: the status and Discord's JSON error body.
pub(super) type Reject = (u16, Value);

/// `{code, message}`, Discord's error body (`reference.mdx` §Error Messages).
pub(super) fn error(status: u16, code: u64, message: &str) -> Reject {
    (status, json!({"code": code, "message": message}))
}

/// 400 `50035 Invalid Form Body` with one field error at `path` (nested
/// objects, as Discord nests `errors`).
pub(super) fn field_error(path: &[&str], code: &str, message: &str) -> Reject {
    let mut errors = json!({"_errors": [{"code": code, "message": message}]});
    for key in path.iter().rev() {
        errors = json!({ *key: errors });
    }
    (
        400,
        json!({"code": 50035, "errors": errors, "message": "Invalid Form Body"}),
    )
}

/// The rate-limit headers of a route answer (`rate-limits.mdx` §Header
/// Format): limit, remaining, reset (epoch, 3 decimals), reset-after, bucket.
pub(super) fn ratelimit_headers(quota: &Quota, bucket: &str) -> Vec<(String, String)> {
    let reset_after = quota.reset_after.as_secs_f64();
    let reset_epoch = (SystemTime::now() + quota.reset_after)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    vec![
        ("x-ratelimit-limit".to_string(), quota.limit.to_string()),
        (
            "x-ratelimit-remaining".to_string(),
            quota.remaining.to_string(),
        ),
        ("x-ratelimit-reset".to_string(), format!("{reset_epoch:.3}")),
        (
            "x-ratelimit-reset-after".to_string(),
            format!("{reset_after:.3}"),
        ),
        ("x-ratelimit-bucket".to_string(), bucket.to_string()),
    ]
}

/// 429 of a route bucket: the route headers plus `Retry-After` (whole
/// seconds, rounded up) and scope `user`; the body's `retry_after` a float.
pub(super) fn route_limited(quota: &Quota, mut headers: Vec<(String, String)>) -> Canned {
    let reset_after = quota.reset_after.as_secs_f64();
    headers.push((
        "retry-after".into(),
        reset_after.ceil().max(1.0).to_string(),
    ));
    headers.push(("x-ratelimit-scope".into(), "user".into()));
    headers.push(("content-type".into(), "application/json".into()));
    Canned {
        status: 429,
        body: format!(
            "{{\"message\": \"You are being rate limited.\", \"retry_after\": {reset_after:.3}, \"global\": false}}"
        ),
        headers,
    }
}

/// The body as JSON: 400 50035 unless the `Content-Type` is JSON, 400 50109
/// if it does not parse.
pub(super) fn json_body(rec: &Received) -> Result<Value, Reject> {
    if !is_json(rec) {
        return Err(error(400, 50035, "Invalid Form Body"));
    }
    serde_json::from_slice::<Value>(&rec.body)
        .map_err(|_| error(400, 50109, "The request body contains invalid JSON."))
}

/// The message checks of Execute Webhook / Create Message (`webhook.mdx`,
/// `message.mdx`): `content` at most 2000 characters (trimmed, counted in
/// code points), at most 10 embeds, not empty (50006). `at` is where the
/// message sits in the body, for the field path of a 50035.
pub(super) fn check_message(msg: &Value, at: &[&str]) -> Result<(), Reject> {
    let content = msg.get("content").and_then(Value::as_str).unwrap_or("");
    let embeds = msg
        .get("embeds")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let path = |field: &'static str| -> Vec<&str> {
        let mut p = at.to_vec();
        p.push(field);
        p
    };
    if content.trim().chars().count() > 2000 {
        return Err(field_error(
            &path("content"),
            "BASE_TYPE_MAX_LENGTH",
            "Must be 2000 or fewer in length.",
        ));
    }
    if embeds.len() > 10 {
        return Err(field_error(
            &path("embeds"),
            "BASE_TYPE_MAX_LENGTH",
            "Must be 10 or fewer in length.",
        ));
    }
    if content.trim().is_empty() && embeds.is_empty() {
        return Err(error(400, 50006, "Cannot send an empty message"));
    }
    Ok(())
}

pub(super) fn discord(st: &mut State, rec: &Received, limit: u32, window: Duration) -> Canned {
    let hook = discord_webhook(&rec.path);
    let key = match hook {
        Some((id, token)) => format!("{id}/{token}"),
        None => rec.path.clone(),
    };
    let quota = st.take(&key, limit, window, rec.at);
    let headers = ratelimit_headers(&quota, DISCORD_BUCKET);
    let Some((hook_id, _)) = hook else {
        return json_answer(
            404,
            json!({"message": "Unknown Webhook", "code": 10015}),
            headers,
        );
    };
    if !quota.allowed {
        return route_limited(&quota, headers);
    }
    if rec.method != "POST" {
        return json_answer(
            405,
            json!({"message": "405: Method Not Allowed", "code": 0}),
            headers,
        );
    }
    let msg = match json_body(rec).and_then(|m| check_message(&m, &[]).map(|()| m)) {
        Ok(m) => m,
        Err((status, body)) => return json_answer(status, body, headers),
    };
    let content = msg.get("content").and_then(Value::as_str).unwrap_or("");
    let embeds = msg
        .get("embeds")
        .filter(|e| e.is_array())
        .cloned()
        .unwrap_or(json!([]));
    let wait = query_param(rec.query.as_deref(), "wait")
        .is_some_and(|v| matches!(v.as_str(), "true" | "True" | "1"));
    if !wait {
        return Canned {
            status: 204,
            body: String::new(),
            headers,
        };
    }
    st.next_message_id += 1;
    let username = msg
        .get("username")
        .and_then(Value::as_str)
        .unwrap_or("Fake Webhook");
    json_answer(
        200,
        json!({
            "id": st.next_message_id.to_string(),
            "type": 0,
            "channel_id": "1",
            "content": content,
            "embeds": embeds,
            "author": {"bot": true, "id": hook_id, "username": username},
            "webhook_id": hook_id,
            "tts": false,
            "mention_everyone": false,
            "mentions": [],
            "attachments": [],
        }),
        headers,
    )
}
