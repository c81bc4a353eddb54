//! The thread fake Discord's own tests: forum posts through a webhook
//! (`thread_name`, `thread_id`, the 22000x rules), the bot's thread routes,
//! deleted / locked / archived threads, message checks, auth, and the
//! rate-limit buckets (per route and channel, per webhook, global). This file
//! holds the shared guild and request helpers; one theme a file.

mod bot;
mod limits;
mod webhook;

use serde_json::Value;

use super::discord_api::{FakeDiscord, GUILD_FORUM, GUILD_TEXT, PRIVATE_THREAD, PUBLIC_THREAD};
use super::*;
use crate::raw_http::{Response, http_request};

const TOKEN: &str = "bot-token";
const UA: &str = "DiscordBot (https://example.test, 1.0)";
const FORUM: &str = "900000000000000001";
const TEXT: &str = "900000000000000002";
const FORUM_HOOK: &str = "/api/webhooks/800000000000000001/forum-token";
const TEXT_HOOK: &str = "/api/webhooks/800000000000000002/text-token";

/// A guild with a forum and a text channel, a webhook on each.
async fn guild(limit: u32, window: Duration) -> FakeDiscord {
    let fake = FakeDiscord::start(TOKEN, limit, window).await;
    fake.add_forum_channel(FORUM);
    fake.add_text_channel(TEXT);
    let url = fake.add_webhook("800000000000000001", "forum-token", FORUM);
    assert_eq!(url, fake.url(FORUM_HOOK));
    fake.add_webhook("800000000000000002", "text-token", TEXT);
    fake
}

/// POSTs `body` as JSON to a webhook path (with query), with the User-Agent.
async fn hook(fake: &FakeDiscord, target: &str, body: &Value) -> Response {
    let headers = [("Content-Type", "application/json"), ("User-Agent", UA)];
    http_request(
        fake.addr,
        "POST",
        target,
        &headers,
        body.to_string().as_bytes(),
    )
    .await
}

/// A bot request to `/api/v10{path}` with `Authorization: Bot TOKEN`.
async fn bot(fake: &FakeDiscord, method: &str, path: &str, body: Option<Value>) -> Response {
    bot_as(fake, Some(&format!("Bot {TOKEN}")), method, path, body).await
}

async fn bot_as(
    fake: &FakeDiscord,
    auth: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut headers = vec![("User-Agent", UA), ("Content-Type", "application/json")];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let target = format!("/api/v10{path}");
    http_request(fake.addr, method, &target, &headers, body.as_bytes()).await
}

/// `(status, JSON code)` of an error answer.
fn code(r: &Response) -> (u16, Value) {
    (r.status, r.json()["code"].clone())
}

fn id(v: &Value) -> u64 {
    v["id"].as_str().unwrap().parse().unwrap()
}
