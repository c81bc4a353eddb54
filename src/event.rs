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
