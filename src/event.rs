//! The Crisp envelope: `{"website_id", "event", "data", "timestamp"}`.
//!
//! Owns parsing and checking a request body into an [`Event`]. `data` stays a
//! `serde_json::Value` so that unknown and future events still route and
//! render. This module does no I/O and knows nothing of routes or targets.

use serde_json::{Map, Value};
use thiserror::Error;

/// A checked Crisp event. `value` is the whole envelope (with `timestamp`
/// filled in when Crisp left it out), which is what routing and templates see.
#[derive(Debug, Clone)]
pub struct Event {
    value: Value,
}

/// Why a body is not a Crisp event. Each message names the field and says
/// what was expected, for the 400 answer.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EventError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("body must be a JSON object (the Crisp envelope), found {0}")]
    NotObject(&'static str),
    #[error("missing field `{0}` in the Crisp envelope")]
    Missing(&'static str),
    #[error("field `{field}` must be {expected}, found {found}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
}

impl Event {
    /// Parses and checks a body. `received_at_ms` stands in for a missing
    /// `timestamp`.
    pub fn parse(body: &[u8], received_at_ms: i64) -> Result<Self, EventError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| EventError::Json(e.to_string()))?;
        Self::from_value(value, received_at_ms)
    }

    /// Checks an already parsed envelope.
    pub fn from_value(mut value: Value, received_at_ms: i64) -> Result<Self, EventError> {
        let obj = match &mut value {
            Value::Object(obj) => obj,
            other => return Err(EventError::NotObject(type_name(other))),
        };
        require(obj, "event", "a string", Value::is_string)?;
        require(obj, "website_id", "a string", Value::is_string)?;
        require(obj, "data", "an object", Value::is_object)?;
        match obj.get("timestamp") {
            None | Some(Value::Null) => {
                obj.insert("timestamp".into(), Value::from(received_at_ms));
            }
            Some(v) if v.is_i64() || v.is_u64() => {}
            Some(other) => {
                return Err(EventError::WrongType {
                    field: "timestamp",
                    expected: "an integer (milliseconds since the epoch)",
                    found: type_name(other),
                });
            }
        }
        Ok(Self { value })
    }

    /// The event name, e.g. `message:send`.
    pub fn name(&self) -> &str {
        self.value["event"].as_str().unwrap_or_default()
    }

    pub fn website_id(&self) -> &str {
        self.value["website_id"].as_str().unwrap_or_default()
    }

    /// Milliseconds since the epoch, from Crisp or the receive time.
    pub fn timestamp(&self) -> i64 {
        self.value["timestamp"].as_i64().unwrap_or_default()
    }

    /// The whole envelope as JSON.
    /// What identifies this event among Crisp's resends: `website_id`,
    /// `event` and `data.fingerprint` (Crisp's id of the message the event is
    /// about); for `message:updated`, also a digest of `data.content`, since
    /// two edits of one message are two events. `None` without a
    /// fingerprint: such events are never deduplicated.
    pub fn dedupe_key(&self) -> Option<String> {
        let data = self.value.get("data")?;
        let fingerprint = match data.get("fingerprint")? {
            Value::Number(n) => n.to_string(),
            Value::String(s) if !s.is_empty() => s.clone(),
            _ => return None,
        };
        let mut key = format!(
            "{}\u{1f}{}\u{1f}{fingerprint}",
            self.website_id(),
            self.name()
        );
        if self.name() == "message:updated" {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            data.get("content").map(Value::to_string).hash(&mut h);
            key.push_str(&format!("\u{1f}{:016x}", h.finish()));
        }
        Some(key)
    }

    /// The conversation the event belongs to: `(website_id,
    /// data.session_id)`, written `website_id/session_id`; `None` when the
    /// event has no session.
    pub fn conversation(&self) -> Option<String> {
        match self.value.get("data")?.get("session_id")? {
            Value::String(s) if !s.is_empty() => Some(format!("{}/{s}", self.website_id())),
            _ => None,
        }
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The envelope as compact JSON text.
    pub fn to_json(&self) -> String {
        self.value.to_string()
    }
}

fn require(
    obj: &Map<String, Value>,
    field: &'static str,
    expected: &'static str,
    ok: fn(&Value) -> bool,
) -> Result<(), EventError> {
    match obj.get(field) {
        None => Err(EventError::Missing(field)),
        Some(v) if ok(v) => Ok(()),
        Some(v) => Err(EventError::WrongType {
            field,
            expected,
            found: type_name(v),
        }),
    }
}

/// The JSON type of `v`, for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_and_conversation_keys() {
        let ev = |data: &str, name: &str| {
            Event::parse(
                format!(r#"{{"website_id":"w","event":"{name}","data":{data}}}"#).as_bytes(),
                1,
            )
            .unwrap()
        };
        let sent = ev(
            r#"{"session_id":"s1","fingerprint":42,"content":"hi"}"#,
            "message:send",
        );
        assert_eq!(
            sent.dedupe_key().as_deref(),
            Some("w\u{1f}message:send\u{1f}42")
        );
        assert_eq!(sent.conversation().as_deref(), Some("w/s1"));
        let as_text = ev(r#"{"fingerprint":"42"}"#, "message:send");
        assert_eq!(as_text.dedupe_key(), sent.dedupe_key());
        assert_eq!(as_text.conversation(), None);
        for no_key in [r#"{}"#, r#"{"fingerprint":null}"#, r#"{"fingerprint":""}"#] {
            assert_eq!(ev(no_key, "message:send").dedupe_key(), None, "{no_key}");
        }
        // Two edits of one message are two events; the same edit twice is one.
        let edit = |text: &str| {
            ev(
                &format!(r#"{{"fingerprint":42,"content":"{text}"}}"#),
                "message:updated",
            )
            .dedupe_key()
        };
        assert_ne!(edit("a"), edit("b"));
        assert_eq!(edit("a"), edit("a"));
        assert_ne!(
            ev(r#"{"fingerprint":42}"#, "message:received").dedupe_key(),
            sent.dedupe_key()
        );
    }

    #[test]
    fn envelope_checks() {
        let ok = r#"{"website_id":"w","event":"message:send","data":{},"timestamp":5}"#;
        let e = Event::parse(ok.as_bytes(), 9).unwrap();
        assert_eq!(
            (e.name(), e.website_id(), e.timestamp()),
            ("message:send", "w", 5)
        );

        let no_ts = r#"{"website_id":"w","event":"x","data":{}}"#;
        assert_eq!(Event::parse(no_ts.as_bytes(), 9).unwrap().timestamp(), 9);

        let cases: &[(&str, EventError)] = &[
            ("[]", EventError::NotObject("an array")),
            ("3", EventError::NotObject("a number")),
            (
                r#"{"website_id":"w","data":{}}"#,
                EventError::Missing("event"),
            ),
            (
                r#"{"event":"e","data":{}}"#,
                EventError::Missing("website_id"),
            ),
            (
                r#"{"event":"e","website_id":"w"}"#,
                EventError::Missing("data"),
            ),
            (
                r#"{"event":1,"website_id":"w","data":{}}"#,
                EventError::WrongType {
                    field: "event",
                    expected: "a string",
                    found: "a number",
                },
            ),
            (
                r#"{"event":"e","website_id":"w","data":[]}"#,
                EventError::WrongType {
                    field: "data",
                    expected: "an object",
                    found: "an array",
                },
            ),
            (
                r#"{"event":"e","website_id":"w","data":{},"timestamp":"x"}"#,
                EventError::WrongType {
                    field: "timestamp",
                    expected: "an integer (milliseconds since the epoch)",
                    found: "a string",
                },
            ),
        ];
        for (body, want) in cases {
            assert_eq!(
                &Event::parse(body.as_bytes(), 0).unwrap_err(),
                want,
                "{body}"
            );
        }
        assert!(matches!(Event::parse(b"{", 0), Err(EventError::Json(_))));
    }
}
