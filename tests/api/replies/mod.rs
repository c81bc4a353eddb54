//! Agents' replies in chat threads, back to the visitor in Crisp, end to
//! end: a Slack bot's threads read through the Events API (signed requests
//! the test sends as Slack would), the fake Crisp REST API receiving the
//! operator messages, and the echo that Crisp's hook sends back.
//!
//! Files: `slack` (the Events API path and the replies in Crisp), `discord`
//! (the Gateway and the catch-up after downtime), `crisp`
//! (Crisp's outages and refusals, a crash after the acknowledgement);
//! shared helpers here.

mod crisp;
mod discord;
mod slack;

use serde_json::{Value, json};

use crate::fakes::{FakeCrisp, FakeSlackApi};
use crate::helpers::*;
use crate::threads::{chat_config, conv_message, eventually, eventually_within};

pub const SIGNING_SECRET: &str = "slack-signing-secret";
pub const CHANNEL: &str = "C0REPLIES01";
pub const BOT_TOKEN: &str = "xoxb-replies";
pub const CRISP_ID: &str = "crisp-id";
pub const CRISP_KEY: &str = "crisp-key";

/// A Slack bot target `chat` with threads and replies, and `crisp`.
pub fn replies_config(slack: &FakeSlackApi, crisp: &FakeCrisp) -> Workdir {
    let work = chat_config(&format!(
        "{{kind: slack, token: \"{BOT_TOKEN}\", channel: {CHANNEL}, api_url: \"{}\", threads: per_conversation, replies: {{signing_secret: \"${{SLACK_SIGNING_SECRET:-}}\"}}}}",
        slack.api_base()
    ));
    let yaml = std::fs::read_to_string(work.config_path()).unwrap();
    work.write(
        "relay.yaml",
        &format!(
            "{yaml}crisp:\n  identifier: \"{CRISP_ID}\"\n  key: \"${{CRISP_TOKEN_KEY:-}}\"\n  api_url: \"{}\"\n",
            crisp.api_base()
        ),
    );
    work
}

/// The environment the replies config reads its secrets from.
pub const ENV: &[(&str, &str)] = &[
    ("SLACK_SIGNING_SECRET", SIGNING_SECRET),
    ("CRISP_TOKEN_KEY", CRISP_KEY),
];

/// Starts the fakes and the relay.
pub async fn start() -> (FakeSlackApi, FakeCrisp, TestApp) {
    let slack = FakeSlackApi::start(BOT_TOKEN).await;
    slack.add_channel(CHANNEL, true);
    let crisp = FakeCrisp::start(CRISP_ID, CRISP_KEY).await;
    let app = TestApp::spawn_in(replies_config(&slack, &crisp), ENV).await;
    (slack, crisp, app)
}

/// Posts a visitor's message of `conv` and waits for its Slack thread;
/// returns the thread's `ts`.
pub async fn open_thread(app: &TestApp, slack: &FakeSlackApi, conv: &str, seq: usize) -> String {
    let before = slack.messages(CHANNEL).len();
    assert_eq!(app.post_event(conv_message(conv, seq)).await.status(), 200);
    eventually("the conversation's thread", || {
        slack.messages(CHANNEL).len() > before
    })
    .await;
    slack.messages(CHANNEL).last().unwrap().ts.clone()
}

/// A Slack `message` event in thread `thread_ts`, by a person.
pub fn reply_event(event_id: &str, thread_ts: &str, ts: &str, text: &str, name: &str) -> Value {
    json!({
        "token": "verification-token",
        "team_id": "T0TEAM",
        "api_app_id": "A0APP",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1_764_547_200,
        "event": {
            "type": "message",
            "channel": CHANNEL,
            "channel_type": "channel",
            "user": "U0AGENT1",
            "text": text,
            "ts": ts,
            "thread_ts": thread_ts,
            "user_profile": {"display_name": name, "real_name": format!("{name} Lima"), "image_72": "https://avatars.example/72.png"},
        },
    })
}

/// Slack's signature of `body` at `timestamp`, computed here apart from the
/// relay's code.
pub fn slack_signature(secret: &str, timestamp: &str, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("v0:{timestamp}:{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// POSTs `body` to `/slack/events` as Slack does: signed now with the
/// right secret, unless told otherwise. Returns the status and the body.
pub async fn send_slack(
    app: &TestApp,
    body: &Value,
    secret: &str,
    timestamp: i64,
    extra: &[(&str, &str)],
) -> (u16, String) {
    let text = body.to_string();
    let ts = timestamp.to_string();
    let mut req = app
        .client
        .post(format!("http://{}/slack/events", app.ingest))
        .header("content-type", "application/json")
        .header("X-Slack-Request-Timestamp", &ts)
        .header("X-Slack-Signature", slack_signature(secret, &ts, &text))
        .body(text);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// Crisp's hook for an operator's message in `conv` (how a reply sent to
/// Crisp, or one typed in Crisp, comes back).
pub fn operator_message(conv: &str, content: &str, fingerprint: u64) -> String {
    json!({
        "website_id": "w1",
        "event": "message:send",
        "data": {
            "website_id": "w1",
            "session_id": format!("session_{conv}"),
            "type": "text",
            "content": content,
            "from": "operator",
            "origin": "chat",
            "fingerprint": fingerprint,
            "user": {"nickname": "Ana", "user_id": "op-1"},
        },
        "timestamp": 1_748_952_083_417_i64,
    })
    .to_string()
}
