//! How the fake Discord answers a normal request (Execute Webhook): the
//! rate-limit headers and 429 of its fixed window per webhook, 404 for an
//! unknown webhook, 405, 400 with Discord's error bodies, then 204, or 200
//! with the message for `?wait=true`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{Canned, DISCORD_BUCKET, Received, State, is_json, query_param};

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

fn json_answer(status: u16, body: Value, mut headers: Vec<(String, String)>) -> Canned {
    headers.push(("content-type".into(), "application/json".into()));
    Canned {
        status,
        body: body.to_string(),
        headers,
    }
}

pub(super) fn discord(st: &mut State, rec: &Received, limit: u32, window: Duration) -> Canned {
    let hook = discord_webhook(&rec.path);
    let key = match hook {
        Some((id, token)) => format!("{id}/{token}"),
        None => rec.path.clone(),
    };
    let quota = st.take(&key, limit, window, rec.at);
    let reset_after = quota.reset_after.as_secs_f64();
    let reset_epoch = (SystemTime::now() + quota.reset_after)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut headers = vec![
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
        ("x-ratelimit-bucket".to_string(), DISCORD_BUCKET.to_string()),
    ];
    let Some((hook_id, _)) = hook else {
        return json_answer(
            404,
            json!({"message": "Unknown Webhook", "code": 10015}),
            headers,
        );
    };
    if !quota.allowed {
        headers.push((
            "retry-after".into(),
            reset_after.ceil().max(1.0).to_string(),
        ));
        headers.push(("x-ratelimit-scope".into(), "user".into()));
        headers.push(("content-type".into(), "application/json".into()));
        return Canned {
            status: 429,
            body: format!(
                "{{\"message\": \"You are being rate limited.\", \"retry_after\": {reset_after:.3}, \"global\": false}}"
            ),
            headers,
        };
    }
    if rec.method != "POST" {
        return json_answer(
            405,
            json!({"message": "405: Method Not Allowed", "code": 0}),
            headers,
        );
    }
    if !is_json(rec) {
        return json_answer(
            400,
            json!({"code": 50035, "message": "Invalid Form Body"}),
            headers,
        );
    }
    let Ok(msg) = serde_json::from_slice::<Value>(&rec.body) else {
        return json_answer(
            400,
            json!({"code": 50109, "message": "The request body contains invalid JSON."}),
            headers,
        );
    };
    let content = msg.get("content").and_then(Value::as_str).unwrap_or("");
    let embeds = msg
        .get("embeds")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let field_error = |field: &str, code: &str, message: &str| {
        json!({
            "code": 50035,
            "errors": {field: {"_errors": [{"code": code, "message": message}]}},
            "message": "Invalid Form Body",
        })
    };
    if content.trim().chars().count() > 2000 {
        return json_answer(
            400,
            field_error(
                "content",
                "BASE_TYPE_MAX_LENGTH",
                "Must be 2000 or fewer in length.",
            ),
            headers,
        );
    }
    if embeds.len() > 10 {
        return json_answer(
            400,
            field_error(
                "embeds",
                "BASE_TYPE_MAX_LENGTH",
                "Must be 10 or fewer in length.",
            ),
            headers,
        );
    }
    if content.trim().is_empty() && embeds.is_empty() {
        return json_answer(
            400,
            json!({"code": 50006, "message": "Cannot send an empty message"}),
            headers,
        );
    }
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
