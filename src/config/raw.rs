//! The file's shape as serde reads it, with positions ([`Spanned`]) for
//! every value a check may point at. Strict: unknown keys are errors. Never
//! used past validation.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

pub(super) type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) server: S<RawServer>,
    #[serde(default)]
    pub(super) admin: Option<RawAdmin>,
    #[serde(default)]
    pub(super) store: Option<RawStore>,
    #[serde(default)]
    pub(super) templates: Option<S<String>>,
    #[serde(default)]
    pub(super) targets: BTreeMap<String, S<RawTarget>>,
    #[serde(default)]
    pub(super) routes: Vec<S<RawRoute>>,
    #[serde(default)]
    pub(super) crisp: Option<S<RawCrisp>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCrisp {
    #[serde(default)]
    pub(super) identifier: Option<S<String>>,
    #[serde(default)]
    pub(super) key: Option<S<String>>,
    #[serde(default)]
    pub(super) tier: Option<S<String>>,
    #[serde(default)]
    pub(super) api_url: Option<S<String>>,
    #[serde(default)]
    pub(super) rate_limit: Option<S<RawRateLimit>>,
}

/// `replies: true` (Discord) or `replies: {signing_secret, path}` (Slack).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawReplies {
    On(bool),
    Slack(RawSlackReplies),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlackReplies {
    pub(super) signing_secret: S<String>,
    #[serde(default)]
    pub(super) path: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    #[serde(default)]
    pub(super) listen: Option<S<String>>,
    #[serde(default)]
    pub(super) path: Option<S<String>>,
    #[serde(default)]
    pub(super) keys: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub(super) plugin_secret: Option<S<String>>,
    #[serde(default)]
    pub(super) max_body: Option<S<StringOrNumber>>,
    #[serde(default)]
    pub(super) header_read_timeout: Option<S<String>>,
    #[serde(default)]
    pub(super) body_read_timeout: Option<S<String>>,
    #[serde(default)]
    pub(super) max_connections: Option<S<u64>>,
    #[serde(default)]
    pub(super) shutdown_timeout: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    #[serde(default)]
    pub(super) listen: Option<S<String>>,
    #[serde(default)]
    pub(super) token: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    #[serde(default)]
    pub(super) path: Option<S<String>>,
    #[serde(default)]
    pub(super) url: Option<S<String>>,
    #[serde(default)]
    pub(super) lease: Option<S<String>>,
    #[serde(default)]
    pub(super) retention: Option<S<String>>,
    #[serde(default)]
    pub(super) queue_capacity: Option<S<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) kind: S<String>,
    #[serde(default)]
    pub(super) enabled: Option<S<BoolOrString>>,
    #[serde(default)]
    pub(super) url: Option<S<String>>,
    #[serde(default)]
    pub(super) username: Option<S<String>>,
    #[serde(default)]
    pub(super) avatar_url: Option<S<String>>,
    #[serde(default)]
    pub(super) headers: Option<S<BTreeMap<String, S<String>>>>,
    #[serde(default)]
    pub(super) method: Option<S<String>>,
    #[serde(default)]
    pub(super) rate_limit: Option<S<RawRateLimit>>,
    #[serde(default)]
    pub(super) retry: Option<S<RawRetry>>,
    #[serde(default)]
    pub(super) timeout: Option<S<String>>,
    #[serde(default)]
    pub(super) batch: Option<S<u64>>,
    #[serde(default)]
    pub(super) token: Option<S<String>>,
    #[serde(default)]
    pub(super) channel: Option<S<String>>,
    #[serde(default)]
    pub(super) api_url: Option<S<String>>,
    #[serde(default)]
    pub(super) threads: Option<S<String>>,
    #[serde(default)]
    pub(super) thread_name: Option<S<String>>,
    #[serde(default)]
    pub(super) coalesce: Option<S<bool>>,
    #[serde(default)]
    pub(super) replies: Option<S<RawReplies>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) requests: S<u64>,
    pub(super) per: S<String>,
    #[serde(default)]
    pub(super) burst: Option<S<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    #[serde(default)]
    pub(super) max_attempts: Option<S<u64>>,
    #[serde(default)]
    pub(super) initial_backoff: Option<S<String>>,
    #[serde(default)]
    pub(super) max_backoff: Option<S<String>>,
    #[serde(default)]
    pub(super) max_age: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: S<String>,
    #[serde(default, rename = "match")]
    pub(super) matcher: Option<S<RawMatch>>,
    pub(super) to: S<Vec<S<String>>>,
    #[serde(default)]
    pub(super) template: Option<S<String>>,
    #[serde(default, rename = "continue")]
    pub(super) continue_matching: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum BoolOrString {
    Bool(bool),
    String(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum StringOrNumber {
    Number(u64),
    String(String),
}

/// A `match` mapping: field paths to matchers, plus `any:` alternatives.
pub(super) struct RawMatch(pub(super) Vec<(S<String>, RawMatchValue)>);

pub(super) enum RawMatchValue {
    Any(S<Vec<S<RawMatch>>>),
    Test(S<Value>),
}

impl<'de> Deserialize<'de> for RawMatch {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMatch;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of field paths to values, e.g. {event: \"message:send\", data.from: user}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawMatch, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<S<String>>()? {
                    let value = if key.value == "any" {
                        RawMatchValue::Any(map.next_value()?)
                    } else {
                        RawMatchValue::Test(map.next_value()?)
                    };
                    out.push((key, value));
                }
                Ok(RawMatch(out))
            }
        }
        d.deserialize_map(V)
    }
}
