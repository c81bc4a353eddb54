//! What the agent sees of their reply in the chat: a ✅ reaction on it once
//! Crisp has it; a ⚠️ reaction and one short message in the thread when it
//! failed for good. The requests only (Slack `reactions.add` and
//! `chat.postMessage`; Discord Create Reaction and Create Message), through
//! the bot of the target the reply came from. Pure.
//!
//! Research: two-way.md §7 (reply feedback); Slack `reactions.add` needs the
//! `reactions:write` scope; Discord's Create Reaction is `PUT
//! /channels/{channel}/messages/{message}/reactions/{emoji}/@me`.

use serde_json::json;

use super::chat::{api_url, discord_headers, json_headers};
use super::crisp::Source;
use super::{Body, OutgoingRequest, USER_AGENT};
use crate::config::Target;
use crate::model::TargetKind;
use crate::secret::Secret;
use crate::text::truncate;

/// How a reply ended, for the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Crisp has it.
    Delivered,
    /// It will not reach Crisp.
    Failed,
}

/// The reaction on the reply's message.
pub fn reaction(target: &Target, source: &Source, mark: Mark) -> Option<OutgoingRequest> {
    let bot = target.bot.as_ref()?;
    match target.kind {
        TargetKind::Slack => Some(OutgoingRequest {
            method: "POST",
            url: Some(api_url(&bot.api, &["reactions.add"])),
            headers: slack_headers(&bot.token),
            body: Body::Json(json!({
                "channel": source.channel,
                "timestamp": source.message,
                "name": match mark {
                    Mark::Delivered => "white_check_mark",
                    Mark::Failed => "warning",
                },
            })),
        }),
        TargetKind::Discord => {
            let emoji = match mark {
                Mark::Delivered => "✅",
                Mark::Failed => "⚠️",
            };
            Some(OutgoingRequest {
                method: "PUT",
                url: Some(api_url(
                    &bot.api,
                    &[
                        "channels",
                        &source.channel,
                        "messages",
                        &source.message,
                        "reactions",
                        emoji,
                        "@me",
                    ],
                )),
                headers: discord_headers(bot),
                body: Body::Text(String::new()),
            })
        }
        _ => None,
    }
}

/// The message in the reply's thread that says it failed, and why (at most
/// 300 characters of the reason; it never holds a token: reasons are built
/// from Crisp's answers and the relay's own words).
pub fn failure_note(target: &Target, source: &Source, reason: &str) -> Option<OutgoingRequest> {
    let bot = target.bot.as_ref()?;
    let text = format!(
        "⚠️ This reply did not reach the visitor in Crisp: {}",
        truncate(reason, 300)
    );
    match target.kind {
        TargetKind::Slack => Some(OutgoingRequest {
            method: "POST",
            url: Some(api_url(&bot.api, &["chat.postMessage"])),
            headers: slack_headers(&bot.token),
            body: Body::Json(json!({
                "channel": source.channel,
                "thread_ts": source.thread,
                "text": text,
            })),
        }),
        TargetKind::Discord => Some(OutgoingRequest {
            method: "POST",
            url: Some(api_url(
                &bot.api,
                &["channels", &source.channel, "messages"],
            )),
            headers: discord_headers(bot),
            body: Body::Json(json!({
                "content": text,
                "allowed_mentions": {"parse": []},
            })),
        }),
        _ => None,
    }
}

fn slack_headers(token: &Secret) -> Vec<(String, super::HeaderValue)> {
    json_headers(
        "application/json; charset=utf-8",
        USER_AGENT,
        Some(Secret::new(format!("Bearer {}", token.expose()))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Bot;
    use crate::model::Threads;

    fn target(kind: TargetKind) -> Target {
        let api = match kind {
            TargetKind::Slack => "https://slack.com/api",
            _ => "https://discord.com/api/v10",
        };
        Target {
            name: "t".into(),
            kind,
            url: None,
            enabled: true,
            disabled_reason: "",
            username: None,
            avatar_url: None,
            headers: Vec::new(),
            method: "POST",
            rate_limit: None,
            retry: Default::default(),
            timeout: std::time::Duration::from_secs(10),
            batch: 1,
            bot: Some(Bot {
                token: Secret::new("tok-secret"),
                channel: "C1".into(),
                api: url::Url::parse(api).unwrap(),
            }),
            threads: Threads::PerConversation,
            thread_name: None,
            coalesce: true,
            replies: None,
        }
    }

    fn source() -> Source {
        Source {
            target: "t".into(),
            channel: "C1".into(),
            thread: "1.000100".into(),
            message: "1.000200".into(),
        }
    }

    #[test]
    fn slack_reactions_and_note() {
        let t = target(TargetKind::Slack);
        let ok = reaction(&t, &source(), Mark::Delivered).unwrap();
        assert_eq!(
            ok.url.unwrap().expose().as_str(),
            "https://slack.com/api/reactions.add"
        );
        assert_eq!(
            ok.body,
            Body::Json(
                json!({"channel": "C1", "timestamp": "1.000200", "name": "white_check_mark"})
            )
        );
        let bad = reaction(&t, &source(), Mark::Failed).unwrap();
        assert!(matches!(&bad.body, Body::Json(v) if v["name"] == "warning"));
        let note = failure_note(&t, &source(), &"x".repeat(1000)).unwrap();
        let Body::Json(v) = &note.body else { panic!() };
        assert_eq!(v["thread_ts"], "1.000100");
        assert!(v["text"].as_str().unwrap().chars().count() < 400);
        assert!(!format!("{note:?}").contains("tok-secret"));
    }

    #[test]
    fn discord_reactions_and_note() {
        let t = target(TargetKind::Discord);
        let mut s = source();
        s.channel = "111".into();
        s.message = "222".into();
        let ok = reaction(&t, &s, Mark::Delivered).unwrap();
        assert_eq!(ok.method, "PUT");
        assert_eq!(
            ok.url.unwrap().expose().as_str(),
            "https://discord.com/api/v10/channels/111/messages/222/reactions/%E2%9C%85/@me"
        );
        let note = failure_note(&t, &s, "Crisp refused the token (HTTP 401)").unwrap();
        assert_eq!(
            note.url.unwrap().expose().as_str(),
            "https://discord.com/api/v10/channels/111/messages"
        );
        let Body::Json(v) = &note.body else { panic!() };
        assert_eq!(v["allowed_mentions"], json!({"parse": []}));
    }

    #[test]
    fn webhook_targets_get_nothing() {
        let mut t = target(TargetKind::Slack);
        t.bot = None;
        assert!(reaction(&t, &source(), Mark::Delivered).is_none());
        assert!(failure_note(&t, &source(), "x").is_none());
    }
}
