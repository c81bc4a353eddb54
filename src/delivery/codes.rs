//! What Discord's JSON error codes and Slack's Web API errors mean, where
//! the HTTP status alone does not say (research: targets.md §1.4, §2.3;
//! two-way.md §3(a), §4). Pure tables, consulted by [`super::classify`]
//! before the status.

use std::time::Duration;

use super::classify::{Answer, Outcome};

/// Slack Web API errors (`{"ok": false, "error": …}`, HTTP 200) that mean the
/// bot cannot post to the channel at all: pause the target.
const SLACK_API_DISABLE: &[&str] = &[
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "no_permission",
    "missing_scope",
    "restricted_action",
    "restricted_action_read_only_channel",
    "restricted_action_thread_only_channel",
    "restricted_action_non_threadable_channel",
    "team_access_not_granted",
    "ekm_access_denied",
    "org_login_required",
];

/// Slack Web API errors worth trying again.
const SLACK_API_RETRY: &[&str] = &[
    "ratelimited",
    "rate_limited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

/// Slack Web API errors that say the conversation's thread is gone.
const SLACK_API_THREAD_GONE: &[&str] = &["thread_not_found", "message_not_found"];

/// A Slack Web API answer (a JSON body with `ok`), if it is one: the
/// outcome its `ok`/`error` says. `None` for an incoming webhook's plain
/// `ok` or an answer that is not JSON.
pub fn slack_api(answer: &Answer, retry_after: Option<Duration>) -> Option<Outcome> {
    if !answer.body.trim_start().starts_with('{') {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&answer.body).ok()?;
    let ok = v.get("ok")?.as_bool()?;
    if ok {
        return Some(Outcome::Delivered);
    }
    let error = v
        .get("error")
        .and_then(|e| e.as_str())
        .unwrap_or("unknown_error");
    let reason = format!("Slack answered `{error}`");
    Some(if SLACK_API_RETRY.contains(&error) {
        Outcome::Retry {
            after: retry_after,
            reason,
        }
    } else if SLACK_API_THREAD_GONE.contains(&error) {
        Outcome::ThreadGone { reason }
    } else {
        Outcome::Failed {
            disable: SLACK_API_DISABLE.contains(&error),
            reason: match error {
                "not_in_channel" => {
                    format!("{reason}: invite the app to the channel (/invite @your-app)")
                }
                "missing_scope" => format!("{reason}: the bot token needs the chat:write scope"),
                "invalid_auth" | "not_authed" | "token_revoked" | "token_expired" => {
                    format!("{reason}: the bot token is wrong or revoked")
                }
                _ => reason,
            },
        }
    })
}

/// The `code` of a Discord error body, if any.
pub fn discord_code(answer: &Answer) -> Option<u64> {
    if !answer.body.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str::<serde_json::Value>(&answer.body)
        .ok()?
        .get("code")?
        .as_u64()
}

/// What a Discord error code means beyond its status, where it decides.
pub fn discord(answer: &Answer) -> Option<Outcome> {
    let code = discord_code(answer)?;
    let reason = |what: &str| format!("{what} (HTTP {}, Discord code {code})", answer.status);
    match code {
        // Unknown Channel on a thread post: the thread was deleted. Locked
        // (160005): it cannot be posted to. Either way the conversation
        // needs a new thread (on a post to the channel itself, the worker
        // makes this a pause).
        10003 => Some(Outcome::ThreadGone {
            reason: reason("the channel or thread is gone"),
        }),
        160005 => Some(Outcome::ThreadGone {
            reason: reason("the thread is locked"),
        }),
        220001 | 220002 => Some(Outcome::Failed {
            disable: true,
            reason: reason(
                "this webhook is in a forum channel: set `threads: per_conversation` on the target (every post needs a thread)",
            ),
        }),
        220003 => Some(Outcome::Failed {
            disable: true,
            reason: reason(
                "threads can only be created by a webhook of a forum channel: use a forum channel's webhook, or `threads: none`, or a bot (`token` + `channel`)",
            ),
        }),
        220004 => Some(Outcome::Failed {
            disable: true,
            reason: reason("this webhook cannot post in a forum channel"),
        }),
        // Missing access / permissions: the bot cannot post there.
        50001 | 50013 => Some(Outcome::Failed {
            disable: true,
            reason: reason(
                "the bot lacks access or permissions in the channel (Send Messages, Create Public Threads, Send Messages in Threads)",
            ),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(o: Option<Outcome>) -> &'static str {
        match o {
            None => "-",
            Some(Outcome::Delivered) => "delivered",
            Some(Outcome::Retry { .. }) => "retry",
            Some(Outcome::ThreadGone { .. }) => "thread gone",
            Some(Outcome::Failed { disable: true, .. }) => "pause",
            Some(Outcome::Failed { disable: false, .. }) => "dead",
        }
    }

    #[test]
    fn slack_web_api_errors() {
        let cases = [
            ("ok", "-"),
            ("", "-"),
            (r#"{"ok":true,"ts":"1.2"}"#, "delivered"),
            (r#"{"ok":false,"error":"ratelimited"}"#, "retry"),
            (r#"{"ok":false,"error":"internal_error"}"#, "retry"),
            (r#"{"ok":false,"error":"thread_not_found"}"#, "thread gone"),
            (r#"{"ok":false,"error":"message_not_found"}"#, "thread gone"),
            (r#"{"ok":false,"error":"channel_not_found"}"#, "pause"),
            (r#"{"ok":false,"error":"not_in_channel"}"#, "pause"),
            (r#"{"ok":false,"error":"invalid_auth"}"#, "pause"),
            (r#"{"ok":false,"error":"msg_too_long"}"#, "dead"),
            (r#"{"ok":false,"error":"invalid_blocks"}"#, "dead"),
            (r#"{"ok":false}"#, "dead"),
            (r#"{"no":"ok"}"#, "-"),
        ];
        for (body, want) in cases {
            assert_eq!(
                name(slack_api(&Answer::new(200, &[], body), None)),
                want,
                "{body}"
            );
        }
    }

    #[test]
    fn discord_codes() {
        let cases = [
            (
                404,
                r#"{"code":10003,"message":"Unknown Channel"}"#,
                "thread gone",
            ),
            (
                403,
                r#"{"code":160005,"message":"Thread is locked"}"#,
                "thread gone",
            ),
            (400, r#"{"code":220001}"#, "pause"),
            (400, r#"{"code":220002}"#, "pause"),
            (400, r#"{"code":220003}"#, "pause"),
            (400, r#"{"code":220004}"#, "pause"),
            (403, r#"{"code":50013}"#, "pause"),
            (404, r#"{"code":10015,"message":"Unknown Webhook"}"#, "-"),
            (400, r#"{"code":50035}"#, "-"),
            (404, "", "-"),
        ];
        for (status, body, want) in cases {
            assert_eq!(
                name(discord(&Answer::new(status, &[], body))),
                want,
                "{status} {body}"
            );
        }
    }
}
