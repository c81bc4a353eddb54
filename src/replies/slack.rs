//! Slack's Events API payloads: the `url_verification` handshake, and a
//! `message` event that is a person's reply in a thread.
//!
//! Research: two-way.md §4 (envelope `{type: "event_callback", event_id,
//! event}`; a reply has a `thread_ts` other than its `ts`; skip `bot_id`,
//! subtypes other than a plain message or `thread_broadcast`, and the
//! relay's own bot user). Slack's text is mrkdwn: `&amp;`/`&lt;`/`&gt;`
//! escaped, links as `<url|label>`, mentions as `<@U…>`.

use serde_json::Value;

/// What a signed Events API request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Answer with the challenge (the Request URL is being set up).
    Verify { challenge: String },
    /// An event: `event_id` (Slack's retries repeat it) and, when it is a
    /// person's message in a thread, that message.
    Event {
        event_id: String,
        message: Option<ThreadMessage>,
    },
    /// Anything else (acknowledged and ignored).
    Other,
}

/// A person's message in a thread of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadMessage {
    pub channel: String,
    /// The thread's parent message.
    pub thread_ts: String,
    pub ts: String,
    pub user: String,
    /// As plain text: entities decoded, links and mentions spelled out,
    /// files shared with it noted by name.
    pub text: String,
    /// `user_profile.display_name` or `real_name`, when the event carries
    /// them (UNCONFIRMED that it always does): else `None`.
    pub name: Option<String>,
    pub avatar: Option<String>,
}

/// Reads a request body. `None`: not JSON, or not an object.
pub fn parse(body: &[u8]) -> Option<Payload> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(match v.get("type").and_then(Value::as_str) {
        Some("url_verification") => Payload::Verify {
            challenge: str_of(&v, "challenge").unwrap_or_default(),
        },
        Some("event_callback") => match str_of(&v, "event_id") {
            Some(event_id) => Payload::Event {
                event_id,
                message: v.get("event").and_then(thread_message),
            },
            None => Payload::Other,
        },
        _ => Payload::Other,
    })
}

/// The event, if it is a person's message in a thread.
fn thread_message(e: &Value) -> Option<ThreadMessage> {
    let s = |k: &str| e.get(k).and_then(Value::as_str);
    if s("type") != Some("message") || e.get("bot_id").is_some_and(|b| !b.is_null()) {
        return None;
    }
    match s("subtype") {
        None | Some("thread_broadcast") | Some("file_share") => {}
        Some(_) => return None,
    }
    let ts = s("ts")?;
    let thread_ts = s("thread_ts").filter(|t| *t != ts)?;
    let mut text = to_text(s("text").unwrap_or(""));
    for f in e
        .get("files")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = f
            .get("name")
            .or_else(|| f.get("title"))
            .and_then(Value::as_str)
            .unwrap_or("a file");
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!("📎 {name} (shared in Slack)"));
    }
    if text.trim().is_empty() {
        return None;
    }
    let profile = e.get("user_profile");
    let pick = |k: &str| {
        profile
            .and_then(|p| p.get(k))
            .and_then(Value::as_str)
            .filter(|v| !v.trim().is_empty())
            .map(str::to_owned)
    };
    Some(ThreadMessage {
        channel: s("channel")?.to_owned(),
        thread_ts: thread_ts.to_owned(),
        ts: ts.to_owned(),
        user: s("user")?.to_owned(),
        text,
        name: pick("display_name").or_else(|| pick("real_name")),
        avatar: pick("image_72"),
    })
}

/// Slack mrkdwn as plain text: `<url|label>` → `label (url)`, `<url>` →
/// `url`, `<@U1>` → `@U1`, `<!here>` → `@here`, `<#C1|name>` → `#name`,
/// then `&lt;`, `&gt;`, `&amp;` decoded.
pub fn to_text(mrkdwn: &str) -> String {
    let mut out = String::with_capacity(mrkdwn.len());
    let mut rest = mrkdwn;
    while let Some(open) = rest.find('<') {
        out.push_str(&decode(&rest[..open]));
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else {
            out.push_str(&decode(&rest[open..]));
            rest = "";
            break;
        };
        let inner = &after[..close];
        let (target, label) = match inner.split_once('|') {
            Some((t, l)) => (t, Some(l)),
            None => (inner, None),
        };
        let spelled = match (target.chars().next(), label) {
            (Some('@'), _) => format!("@{}", label.unwrap_or(&target[1..])),
            (Some('#'), Some(l)) => format!("#{l}"),
            (Some('#'), None) => target.to_owned(),
            (Some('!'), _) => format!("@{}", label.unwrap_or(&target[1..])),
            (_, Some(l)) if l != target => format!("{l} ({target})"),
            _ => target.to_owned(),
        };
        out.push_str(&decode(&spelled));
        rest = &after[close + 1..];
    }
    out.push_str(&decode(rest));
    out
}

fn decode(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(e: Value) -> Option<ThreadMessage> {
        match parse(
            json!({"type": "event_callback", "event_id": "Ev1", "event": e})
                .to_string()
                .as_bytes(),
        ) {
            Some(Payload::Event { message, .. }) => message,
            other => panic!("{other:?}"),
        }
    }

    fn msg() -> Value {
        json!({
            "type": "message", "channel": "C1", "user": "U1",
            "text": "Yes, monthly.", "ts": "2.000", "thread_ts": "1.000",
            "user_profile": {"display_name": "Ana", "real_name": "Ana Lima", "image_72": "https://a/72.png"},
        })
    }

    #[test]
    fn which_messages_are_replies() {
        let with = |k: &str, v: Value| {
            let mut m = msg();
            m[k] = v;
            m
        };
        let cases: Vec<(&str, Value, bool)> = vec![
            ("a person in a thread", msg(), true),
            ("a bot", with("bot_id", json!("B1")), false),
            (
                "the thread's parent",
                with("thread_ts", json!("2.000")),
                false,
            ),
            (
                "not in a thread",
                {
                    let mut m = msg();
                    m.as_object_mut().unwrap().remove("thread_ts");
                    m
                },
                false,
            ),
            ("edited", with("subtype", json!("message_changed")), false),
            ("deleted", with("subtype", json!("message_deleted")), false),
            (
                "a bot message subtype",
                with("subtype", json!("bot_message")),
                false,
            ),
            (
                "also sent to the channel",
                with("subtype", json!("thread_broadcast")),
                true,
            ),
            ("a reaction", with("type", json!("reaction_added")), false),
            ("empty", with("text", json!("  ")), false),
        ];
        for (what, e, want) in cases {
            assert_eq!(event(e).is_some(), want, "{what}");
        }
        let m = event(msg()).unwrap();
        assert_eq!(
            (
                m.channel.as_str(),
                m.thread_ts.as_str(),
                m.ts.as_str(),
                m.user.as_str()
            ),
            ("C1", "1.000", "2.000", "U1")
        );
        assert_eq!(m.name.as_deref(), Some("Ana"));
        assert_eq!(m.avatar.as_deref(), Some("https://a/72.png"));
        let no_profile = {
            let mut m = msg();
            m.as_object_mut().unwrap().remove("user_profile");
            event(m).unwrap()
        };
        assert_eq!(no_profile.name, None);
    }

    #[test]
    fn files_become_notes() {
        let mut m = msg();
        m["subtype"] = json!("file_share");
        m["files"] = json!([{"name": "invoice.pdf", "url_private": "https://files.slack.com/x"}]);
        let got = event(m).unwrap();
        assert_eq!(got.text, "Yes, monthly.\n📎 invoice.pdf (shared in Slack)");
        assert!(
            !got.text.contains("files.slack.com"),
            "private URLs need auth"
        );
    }

    #[test]
    fn handshake_and_others() {
        assert_eq!(
            parse(br#"{"type":"url_verification","token":"t","challenge":"abc"}"#),
            Some(Payload::Verify {
                challenge: "abc".into()
            })
        );
        assert_eq!(
            parse(br#"{"type":"app_rate_limited"}"#),
            Some(Payload::Other)
        );
        assert_eq!(parse(b"[]"), Some(Payload::Other));
        assert_eq!(parse(b"not json"), None);
    }

    #[test]
    fn mrkdwn_to_text() {
        let cases = [
            ("a &amp; b &lt;3 &gt;", "a & b <3 >"),
            (
                "see <https://x.io/a?b=1&amp;c=2|the docs>",
                "see the docs (https://x.io/a?b=1&c=2)",
            ),
            ("<https://x.io>", "https://x.io"),
            ("<https://x.io|https://x.io>", "https://x.io"),
            ("hi <@U123> and <@U9|ana>", "hi @U123 and @ana"),
            ("<!here> <!channel>", "@here @channel"),
            ("in <#C1|general>", "in #general"),
            ("broken <tag", "broken <tag"),
            ("émoji 🎉 ok", "émoji 🎉 ok"),
        ];
        for (input, want) in cases {
            assert_eq!(to_text(input), want, "{input}");
        }
    }
}
