//! The fake Slack Web API's own tests: top-level messages and thread
//! replies, the `{ok: false, error}` answers, auth, the per-channel rate
//! limit shared by threads, deleted parents, programmed failures.

use serde_json::{Value, json};

use super::slack_api::{FakeSlackApi, SLACK_BOT_ID};
use super::*;
use crate::raw_http::{Response, http_request};

const TOKEN: &str = "xoxb-fake";

async fn post(fake: &FakeSlackApi, token: Option<&str>, body: &Value) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json; charset=utf-8")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    let body = body.to_string();
    http_request(
        fake.addr,
        "POST",
        "/api/chat.postMessage",
        &headers,
        body.as_bytes(),
    )
    .await
}

/// The `error` of an HTTP 200 `ok: false` answer.
async fn error_of(fake: &FakeSlackApi, body: &Value) -> String {
    let r = post(fake, Some(TOKEN), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["ok"], false, "{v}");
    v["error"].as_str().unwrap().to_string()
}

/// `(secs, micros)` of a `ts`, checking its form `<secs>.<6 digits>`.
fn ts_parts(ts: &str) -> (u64, u64) {
    let (s, m) = ts.split_once('.').unwrap();
    assert_eq!(m.len(), 6, "{ts}");
    (s.parse().unwrap(), m.parse().unwrap())
}

#[tokio::test]
async fn messages_threads_and_replies() {
    let fake = FakeSlackApi::with_rate(TOKEN, 50, Duration::from_secs(1)).await;
    fake.add_channel("C1", true);
    assert_eq!(fake.post_message_url(), fake.url("/api/chat.postMessage"));
    let r = post(
        &fake,
        Some(TOKEN),
        &json!({"channel": "C1", "text": "Visitor A"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let parent = r.json();
    assert_eq!(
        (parent["ok"].clone(), parent["channel"].clone()),
        (json!(true), json!("C1"))
    );
    let ts = parent["ts"].as_str().unwrap().to_string();
    ts_parts(&ts);
    assert_eq!(parent["message"]["ts"], json!(ts));
    assert_eq!(parent["message"]["bot_id"], SLACK_BOT_ID);
    assert_eq!(parent["message"]["text"], "Visitor A");
    assert!(parent["message"].get("thread_ts").is_none());

    let mut last = ts_parts(&ts);
    for text in ["one", "two"] {
        let body = json!({"channel": "C1", "text": text, "thread_ts": ts});
        let r = post(&fake, Some(TOKEN), &body).await.json();
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["message"]["thread_ts"], json!(ts));
        let now = ts_parts(r["ts"].as_str().unwrap());
        assert!(now > last, "ts increases");
        last = now;
    }
    let blocks = json!([{"type": "section", "text": {"type": "mrkdwn", "text": "b"}}]);
    let r = post(
        &fake,
        Some(TOKEN),
        &json!({"channel": "C1", "blocks": blocks}),
    )
    .await
    .json();
    assert_eq!(r["message"]["blocks"], blocks);

    let top = fake.messages("C1");
    assert_eq!(top.len(), 2);
    assert_eq!(
        (top[0].ts.as_str(), top[0].text.as_str()),
        (ts.as_str(), "Visitor A")
    );
    assert_eq!(top[1].body["blocks"], blocks);
    let replies: Vec<String> = fake
        .replies("C1", &ts)
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(replies, ["one", "two"]);
    assert!(fake.replies("C1", &top[1].ts).is_empty());
    assert_eq!(fake.received()[1].json()["thread_ts"], json!(ts));
}

#[tokio::test]
async fn errors_are_ok_false_with_http_200() {
    let fake = FakeSlackApi::with_rate(TOKEN, 100, Duration::from_secs(1)).await;
    fake.add_channel("C1", true);
    fake.add_channel("C2", false);
    let msg = json!({"channel": "C1", "text": "x"});
    let r = post(&fake, None, &msg).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (200, json!("not_authed"))
    );
    let r = post(&fake, Some("xoxb-other"), &msg).await;
    assert_eq!(r.json()["error"], "invalid_auth");

    assert_eq!(
        error_of(&fake, &json!({"channel": "C9", "text": "x"})).await,
        "channel_not_found"
    );
    assert_eq!(
        error_of(&fake, &json!({"text": "x"})).await,
        "channel_not_found"
    );
    assert_eq!(
        error_of(&fake, &json!({"channel": "C2", "text": "x"})).await,
        "not_in_channel"
    );
    fake.set_member("C2", true);
    assert_eq!(
        post(&fake, Some(TOKEN), &json!({"channel": "C2", "text": "x"}))
            .await
            .json()["ok"],
        true
    );
    assert_eq!(
        error_of(&fake, &json!({"channel": "C1", "text": " "})).await,
        "no_text"
    );
    let long = json!({"channel": "C1", "text": "é".repeat(40_001)});
    assert_eq!(error_of(&fake, &long).await, "msg_too_long");
    let max = json!({"channel": "C1", "text": "é".repeat(40_000)});
    assert_eq!(post(&fake, Some(TOKEN), &max).await.json()["ok"], true);
    let block = json!({"type": "divider"});
    let many = json!({"channel": "C1", "text": "x", "blocks": vec![block.clone(); 51]});
    assert_eq!(error_of(&fake, &many).await, "invalid_blocks");
    let fifty = json!({"channel": "C1", "text": "x", "blocks": vec![block; 50]});
    assert_eq!(post(&fake, Some(TOKEN), &fifty).await.json()["ok"], true);
    let not_list = json!({"channel": "C1", "blocks": "nope"});
    assert_eq!(error_of(&fake, &not_list).await, "invalid_blocks");

    // thread_ts: unknown, a reply's, in another channel.
    let parent = post(&fake, Some(TOKEN), &msg).await.json()["ts"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = json!({"channel": "C1", "text": "r", "thread_ts": parent});
    let reply_ts = post(&fake, Some(TOKEN), &reply).await.json()["ts"]
        .as_str()
        .unwrap()
        .to_string();
    for (channel, ts) in [
        ("C1", "1.000001"),
        ("C1", reply_ts.as_str()),
        ("C2", parent.as_str()),
    ] {
        let body = json!({"channel": channel, "text": "r", "thread_ts": ts});
        assert_eq!(
            error_of(&fake, &body).await,
            "thread_not_found",
            "{channel} {ts}"
        );
    }
    // A deleted parent takes its thread with it.
    fake.delete_message("C1", &parent);
    assert_eq!(error_of(&fake, &reply).await, "thread_not_found");
    assert!(
        fake.messages("C1")
            .iter()
            .any(|m| m.ts == parent && m.deleted)
    );
    assert_eq!(fake.replies("C1", &parent).len(), 1);

    // Bodies and methods.
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", "Bearer xoxb-fake"),
    ];
    let r = http_request(fake.addr, "POST", "/api/chat.postMessage", &headers, b"{").await;
    assert_eq!(r.json()["error"], "invalid_json");
    let r = http_request(fake.addr, "POST", "/api/chat.update", &headers, b"{}").await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (200, json!("unknown_method"))
    );
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = http_request(
        fake.addr,
        "POST",
        "/api/chat.postMessage",
        &form,
        b"token=xoxb-fake&channel=C1&text=a%20b",
    )
    .await;
    assert_eq!(r.json()["message"]["text"], "a b");
    let r = http_request(fake.addr, "POST", "/services/T/B/x", &form, b"").await;
    assert_eq!(r.status, 404);
    assert!(
        fake.received()
            .iter()
            .all(|r| r.status == 200 || r.path.starts_with("/services"))
    );
}

#[tokio::test]
async fn rate_limit_per_channel_is_shared_by_its_threads() {
    let fake = FakeSlackApi::start(TOKEN).await;
    fake.add_channel("C1", true);
    fake.add_channel("C2", true);
    let r = post(
        &fake,
        Some(TOKEN),
        &json!({"channel": "C1", "text": "parent"}),
    )
    .await;
    let ts = r.json()["ts"].as_str().unwrap().to_string();
    let reply = json!({"channel": "C1", "text": "reply", "thread_ts": ts});
    let r = post(&fake, Some(TOKEN), &reply).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json(), json!({"ok": false, "error": "ratelimited"}));
    // A refused post counts as well; another channel has its own window.
    assert_eq!(
        post(&fake, Some(TOKEN), &json!({"channel": "C1", "text": "top"}))
            .await
            .status,
        429
    );
    assert_eq!(
        post(
            &fake,
            Some(TOKEN),
            &json!({"channel": "C2", "text": "other"})
        )
        .await
        .status,
        200
    );
    assert!(fake.replies("C1", &ts).is_empty());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(post(&fake, Some(TOKEN), &reply).await.json()["ok"], true);
    assert_eq!(fake.replies("C1", &ts).len(), 1);
    assert_eq!(fake.count_status(429), 2);
}

#[tokio::test]
async fn programmed_failures() {
    let fake = FakeSlackApi::start(TOKEN).await;
    fake.add_channel("C1", true);
    let msg = json!({"channel": "C1", "text": "x"});
    fake.fail_next_error(1, "channel_not_found");
    fake.fail_next_ratelimited(1, 30);
    let r = post(&fake, Some(TOKEN), &msg).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (200, json!("channel_not_found"))
    );
    let r = post(&fake, Some(TOKEN), &msg).await;
    assert_eq!((r.status, r.header("retry-after")), (429, Some("30")));
    assert_eq!(r.json()["error"], "ratelimited");
    // Programmed answers use no quota and keep nothing.
    assert!(fake.messages("C1").is_empty());
    assert_eq!(post(&fake, Some(TOKEN), &msg).await.json()["ok"], true);
    let statuses: Vec<u16> = fake.received().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 429, 200]);
    assert_eq!(
        fake.received()[2].header("authorization"),
        Some("Bearer xoxb-fake")
    );
}
