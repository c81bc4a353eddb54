//! Replies to Crisp: an agent's reply, as the relay stores it (an envelope
//! like Crisp's own events, `event: "reply"`), and the REST request that
//! posts it into its conversation as an operator message.
//!
//! Research: two-way.md §1.1 (`POST /website/{website_id}/conversation/
//! {session_id}/message`, body `{type, from: "operator", origin: "chat",
//! content, user: {nickname, avatar}}`; the answer's `data.fingerprint`),
//! §1.2 (Basic auth `identifier:key`, `X-Crisp-Tier`). Pure.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Body, HeaderValue, OutgoingRequest, USER_AGENT};
use crate::config::CrispApi;
use crate::secret::{Secret, WebhookUrl};

/// The event name of a stored reply.
pub const REPLY_EVENT: &str = "reply";

/// An agent's reply, read from a chat thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub website_id: String,
    pub session_id: String,
    /// The text (files already turned into notes where they cannot go).
    pub content: String,
    /// The agent's display name in the chat.
    pub nickname: String,
    /// Their avatar's URL, if the chat gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// A file to send as a Crisp `file` message instead of text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<File>,
    /// Where it was written: the target, and the chat's ids of the thread
    /// and the message (for the ✅ / ⚠️ that tell the agent what happened).
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    pub name: String,
    pub url: String,
    /// A MIME type (`image/png`); `application/octet-stream` when unknown.
    #[serde(rename = "type")]
    pub mime: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub target: String,
    /// The channel the thread is in (Slack: the channel id; Discord: the
    /// thread's id).
    pub channel: String,
    pub thread: String,
    pub message: String,
}

impl Reply {
    /// `website_id/session_id`, the conversation key of the stored row.
    pub fn conversation(&self) -> String {
        format!("{}/{}", self.website_id, self.session_id)
    }

    /// The envelope the relay stores for the reply (parsed like Crisp's
    /// events: `website_id`, `event`, `data`, `timestamp`).
    pub fn envelope(&self, timestamp_ms: i64) -> Value {
        json!({
            "website_id": self.website_id,
            "event": REPLY_EVENT,
            "data": self,
            "timestamp": timestamp_ms,
        })
    }

    /// A stored envelope's reply.
    pub fn from_envelope(event: &Value) -> Result<Self, String> {
        let data = event.get("data").cloned().unwrap_or(Value::Null);
        serde_json::from_value(data).map_err(|e| format!("stored reply is invalid: {e}"))
    }

    /// What identifies this reply's text when Crisp sends it back through
    /// the Website Hook (an echo), before its fingerprint is known.
    pub fn echo_key(&self) -> String {
        echo_content_key(&self.website_id, &self.session_id, &self.content)
    }
}

/// The key of an operator message's text in a conversation, for echoes.
pub fn echo_content_key(website_id: &str, session_id: &str, content: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    content.trim().hash(&mut h);
    format!(
        "echo\u{1f}{website_id}/{session_id}\u{1f}{:016x}",
        h.finish()
    )
}

/// The key of a Crisp message fingerprint in a conversation, for echoes.
pub fn echo_fingerprint_key(website_id: &str, session_id: &str, fingerprint: u64) -> String {
    format!("echo\u{1f}{website_id}/{session_id}\u{1f}fp{fingerprint}")
}

/// The request that sends `reply` to Crisp.
pub fn request(api: &CrispApi, reply: &Reply) -> Result<OutgoingRequest, String> {
    let mut url = api.api.clone();
    url.path_segments_mut()
        .map_err(|()| "crisp.api_url cannot take a path".to_owned())?
        .pop_if_empty()
        .extend([
            "website",
            &reply.website_id,
            "conversation",
            &reply.session_id,
            "message",
        ]);
    let mut user = json!({"nickname": reply.nickname});
    if let Some(a) = &reply.avatar {
        user["avatar"] = json!(a);
    }
    let body = match &reply.file {
        Some(f) => json!({
            "type": "file",
            "from": "operator",
            "origin": "chat",
            "content": {"name": f.name, "url": f.url, "type": f.mime},
            "user": user,
        }),
        None => json!({
            "type": "text",
            "from": "operator",
            "origin": "chat",
            "content": reply.content,
            "user": user,
        }),
    };
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        api.identifier.expose(),
        api.key.expose()
    ));
    let segments = api.api.path_segments().map_or(0, Iterator::count);
    Ok(OutgoingRequest {
        method: "POST",
        // The path holds no secret: all of it may be shown.
        url: Some(WebhookUrl::new(url, segments + 5)),
        headers: vec![
            (
                "Content-Type".to_owned(),
                HeaderValue::Plain("application/json"),
            ),
            ("User-Agent".to_owned(), HeaderValue::Plain(USER_AGENT)),
            (
                "Authorization".to_owned(),
                HeaderValue::Secret(Secret::new(format!("Basic {credentials}"))),
            ),
            (
                "X-Crisp-Tier".to_owned(),
                HeaderValue::Plain(api.tier.as_str()),
            ),
        ],
        body: Body::Json(body),
    })
}

/// The fingerprint of the message Crisp made, from its answer
/// (`{"error": false, "data": {"fingerprint": N}}`).
pub fn fingerprint(answer: &str) -> Option<u64> {
    serde_json::from_str::<Value>(answer)
        .ok()?
        .pointer("/data/fingerprint")?
        .as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CrispTier;

    fn api() -> CrispApi {
        CrispApi {
            identifier: Secret::new("id-123"),
            key: Secret::new("key-456"),
            tier: CrispTier::Website,
            api: url::Url::parse("https://api.crisp.chat/v1").unwrap(),
        }
    }

    fn reply() -> Reply {
        Reply {
            website_id: "w1".into(),
            session_id: "session_9e2a".into(),
            content: "Yes, monthly.".into(),
            nickname: "Ana (support)".into(),
            avatar: Some("https://cdn.example/ana.png".into()),
            file: None,
            source: Source {
                target: "support-slack-bot".into(),
                channel: "C1".into(),
                thread: "1.000100".into(),
                message: "1.000200".into(),
            },
        }
    }

    fn header<'a>(req: &'a OutgoingRequest, name: &str) -> Option<&'a HeaderValue> {
        req.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    #[test]
    fn a_text_reply_is_an_operator_message_with_basic_auth_and_the_tier() {
        let req = request(&api(), &reply()).unwrap();
        let url = req.url.as_ref().unwrap();
        assert_eq!(
            url.expose().as_str(),
            "https://api.crisp.chat/v1/website/w1/conversation/session_9e2a/message"
        );
        assert_eq!(
            req.body,
            Body::Json(json!({
                "type": "text", "from": "operator", "origin": "chat",
                "content": "Yes, monthly.",
                "user": {"nickname": "Ana (support)", "avatar": "https://cdn.example/ana.png"},
            }))
        );
        // base64("id-123:key-456")
        match header(&req, "Authorization") {
            Some(HeaderValue::Secret(s)) => assert_eq!(s.expose(), "Basic aWQtMTIzOmtleS00NTY="),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            header(&req, "X-Crisp-Tier"),
            Some(HeaderValue::Plain("website"))
        ));
        assert!(!format!("{req:?}").contains("key-456"));
    }

    #[test]
    fn a_file_reply_is_a_file_message() {
        let mut r = reply();
        r.file = Some(File {
            name: "screenshot.png".into(),
            url: "https://cdn.discordapp.com/attachments/1/2/screenshot.png".into(),
            mime: "image/png".into(),
        });
        let req = request(&api(), &r).unwrap();
        let Body::Json(body) = &req.body else {
            panic!()
        };
        assert_eq!(body["type"], "file");
        assert_eq!(body["content"]["url"], r.file.as_ref().unwrap().url);
        assert_eq!(body["content"]["type"], "image/png");
    }

    #[test]
    fn ids_are_path_segments_escaped_and_the_envelope_round_trips() {
        let mut r = reply();
        r.session_id = "session_x/../y?z".into();
        let req = request(&api(), &r).unwrap();
        assert!(
            req.url
                .unwrap()
                .expose()
                .as_str()
                .ends_with("/conversation/session_x%2F..%2Fy%3Fz/message")
        );
        let env = r.envelope(1);
        assert_eq!(env["event"], REPLY_EVENT);
        assert_eq!(Reply::from_envelope(&env).unwrap(), r);
        assert!(Reply::from_envelope(&json!({"data": {}})).is_err());
    }

    #[test]
    fn fingerprints_and_echo_keys() {
        assert_eq!(
            fingerprint(
                r#"{"error":false,"reason":"dispatched","data":{"fingerprint":163239623}}"#
            ),
            Some(163_239_623)
        );
        assert_eq!(fingerprint(r#"{"error":false}"#), None);
        assert_eq!(fingerprint("not json"), None);
        let r = reply();
        assert_eq!(
            r.echo_key(),
            echo_content_key("w1", "session_9e2a", " Yes, monthly.\n")
        );
        assert_ne!(
            r.echo_key(),
            echo_content_key("w1", "session_other", "Yes, monthly.")
        );
        assert_ne!(
            echo_fingerprint_key("w1", "s", 1),
            echo_fingerprint_key("w1", "s", 2)
        );
    }
}
