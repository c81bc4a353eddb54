//! How the fake Slack answers a normal request (incoming webhook): 404 off
//! `/services/`, 429 past its fixed window per path, 405, 400 with Slack's
//! plain-text errors, then `ok`.

use std::time::Duration;

use serde_json::Value;

use super::{Canned, Received, State, is_json};

fn text_answer(status: u16, body: &str, mut headers: Vec<(String, String)>) -> Canned {
    headers.push(("content-type".into(), "text/plain; charset=utf-8".into()));
    Canned {
        status,
        body: body.to_string(),
        headers,
    }
}

pub(super) fn slack(st: &mut State, rec: &Received, limit: u32, window: Duration) -> Canned {
    if !rec.path.starts_with("/services/") {
        return text_answer(404, "no_service", vec![]);
    }
    let quota = st.take(&rec.path, limit, window, rec.at);
    if !quota.allowed {
        let secs = quota.reset_after.as_secs_f64().ceil().max(1.0);
        return text_answer(
            429,
            "rate_limited",
            vec![("retry-after".into(), secs.to_string())],
        );
    }
    if rec.method != "POST" {
        return text_answer(405, "invalid_method", vec![]);
    }
    let msg = match serde_json::from_slice::<Value>(&rec.body) {
        Ok(v @ Value::Object(_)) if is_json(rec) => v,
        _ => return text_answer(400, "invalid_payload", vec![]),
    };
    let has_text = msg
        .get("text")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.trim().is_empty());
    let has_blocks = msg
        .get("blocks")
        .and_then(Value::as_array)
        .is_some_and(|b| !b.is_empty());
    if !has_text && !has_blocks {
        return text_answer(400, "no_text", vec![]);
    }
    text_answer(200, "ok", vec![])
}
