//! What an answer means: delivered, retry later (and when), or failed for
//! good (and whether the target must stop). Pure functions over status,
//! headers and body, tested by tables; no sleeping, no I/O.
//!
//! Facts from research/targets.md: Discord §1.4–1.5, Slack §2.1–2.3,
//! Standard Webhooks §3, retry practice §4.

use std::time::Duration;

use crate::model::TargetKind;

/// The parts of a destination's answer that classification reads.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, possibly cut (the relay never needs more than a few KiB).
    pub body: String,
}

impl Answer {
    /// An answer with `headers` (names are lower-cased).
    pub fn new(status: u16, headers: &[(&str, &str)], body: &str) -> Self {
        Self {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
                .collect(),
            body: body.to_owned(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A failure below HTTP: no answer at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// No complete answer within the target's `timeout`.
    Timeout,
    /// Could not connect (refused, DNS, TLS).
    Connect(String),
    /// The connection broke mid-request, or another retryable I/O failure.
    Io(String),
    /// The request could not be built (a bug or a bad config); not retried.
    Build(String),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out"),
            Self::Connect(e) => write!(f, "connection failed: {e}"),
            Self::Io(e) => write!(f, "request failed: {e}"),
            Self::Build(e) => write!(f, "request could not be built: {e}"),
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered,
    /// Try again; `after` is the destination's own hint, if it gave one.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Do not try this delivery again. `disable`: stop sending to the
    /// target at all (the webhook is gone; hammering it harms the relay).
    Failed {
        reason: String,
        disable: bool,
    },
    /// The conversation's thread was deleted or locked: start a new one and
    /// send there (on a post that was not into a thread, a pause).
    ThreadGone {
        reason: String,
    },
}

/// Rate-limit information in an answer (Discord's headers, `Retry-After`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateHints {
    /// `X-RateLimit-Remaining`.
    pub remaining: Option<u32>,
    /// `X-RateLimit-Reset-After` (seconds, may be fractional).
    pub reset_after: Option<Duration>,
    /// `X-RateLimit-Bucket`.
    pub bucket: Option<String>,
    /// On 429: how long to wait — the body's fractional `retry_after` when
    /// present (more precise), else `Retry-After` (seconds or HTTP date).
    pub retry_after: Option<Duration>,
    /// Discord's `global` flag / `X-RateLimit-Global`.
    pub global: bool,
}

/// Reads the rate-limit hints of `answer`, none longer than `cap` (the
/// target's `retry.max_backoff`). A destination is a third party: every
/// number is parsed without panicking; a negative, NaN or unreadable value
/// is ignored, and a huge one (`1e30`, an HTTP date in year 9999) becomes
/// `cap`, so an answer can delay a target by `cap` at most, never freeze it.
/// `now_unix_ms` resolves an HTTP date in `Retry-After`.
pub fn rate_hints(answer: &Answer, now_unix_ms: i64, cap: Duration) -> RateHints {
    let mut hints = RateHints {
        remaining: answer
            .header("x-ratelimit-remaining")
            .and_then(|v| v.trim().parse().ok()),
        reset_after: answer
            .header("x-ratelimit-reset-after")
            .and_then(|v| seconds_hint(v, cap)),
        bucket: answer.header("x-ratelimit-bucket").map(str::to_owned),
        retry_after: None,
        global: answer
            .header("x-ratelimit-global")
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
    };
    let body_hint = if answer.body.trim_start().starts_with('{') {
        serde_json::from_str::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| {
                if v.get("global").and_then(serde_json::Value::as_bool) == Some(true) {
                    hints.global = true;
                }
                v.get("retry_after").and_then(serde_json::Value::as_f64)
            })
            .and_then(|s| clamp_seconds(s, cap))
    } else {
        None
    };
    let header_hint = answer.header("retry-after").and_then(|v| {
        seconds_hint(v, cap).or_else(|| http_date_delay(v, now_unix_ms).map(|d| d.min(cap)))
    });
    hints.retry_after = body_hint.or(header_hint);
    hints
}

/// A number of seconds written by a destination, as a wait of at most `cap`.
fn seconds_hint(v: &str, cap: Duration) -> Option<Duration> {
    clamp_seconds(v.trim().parse::<f64>().ok()?, cap)
}

/// `secs` as a wait of at most `cap`; `None` when negative or NaN.
fn clamp_seconds(secs: f64, cap: Duration) -> Option<Duration> {
    if secs.is_nan() || secs < 0.0 {
        return None;
    }
    // Too large for a Duration (1e30, infinity): the cap.
    Some(Duration::try_from_secs_f64(secs).map_or(cap, |d| d.min(cap)))
}

/// `Retry-After: <HTTP-date>` as a delay from now (zero if past).
fn http_date_delay(v: &str, now_unix_ms: i64) -> Option<Duration> {
    let at = httpdate::parse_http_date(v.trim()).ok()?;
    let at_ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())?;
    Some(Duration::from_millis(
        u64::try_from(at_ms.saturating_sub(now_unix_ms)).unwrap_or(0),
    ))
}

/// Slack error strings that mean the webhook or channel is gone.
const SLACK_DISABLE: &[&str] = &[
    "channel_is_archived",
    "channel_not_found",
    "no_service",
    "no_active_hooks",
    "no_service_id",
    "invalid_token",
    "no_team",
    "team_disabled",
    "action_prohibited",
    "posting_to_general_channel_denied",
];

/// Classifies an HTTP answer from a target of `kind`.
pub fn classify(kind: TargetKind, answer: &Answer, hints: &RateHints) -> Outcome {
    let status = answer.status;
    let excerpt = excerpt(&answer.body);
    let with_body = |what: &str| {
        if excerpt.is_empty() {
            format!("{what} (HTTP {status})")
        } else {
            format!("{what} (HTTP {status}): {excerpt}")
        }
    };
    // Codes in the body that decide more than the status does.
    let coded = match kind {
        TargetKind::Slack => super::codes::slack_api(answer, hints.retry_after),
        TargetKind::Discord if status >= 400 => super::codes::discord(answer),
        _ => None,
    };
    if let Some(outcome) = coded {
        return outcome;
    }
    match status {
        200..=299 => match kind {
            // Slack answers 200 with the text `ok`; anything else is an error
            // in a success status, which retrying will not fix.
            TargetKind::Slack if answer.body.trim() != "ok" && !answer.body.trim().is_empty() => {
                Outcome::Failed {
                    reason: with_body("Slack did not answer `ok`"),
                    disable: false,
                }
            }
            _ => Outcome::Delivered,
        },
        300..=399 => Outcome::Failed {
            reason: with_body("redirect not followed (the target URL has moved; update it)"),
            disable: false,
        },
        429 => Outcome::Retry {
            after: hints.retry_after,
            reason: with_body("rate limited"),
        },
        // Crisp's other rate-limit answer, "420 Enhance Your Calm"
        // (research: two-way.md §1.4).
        420 if kind == TargetKind::Crisp => Outcome::Retry {
            after: hints.retry_after,
            reason: with_body("rate limited"),
        },
        408 => Outcome::Retry {
            after: hints.retry_after,
            reason: with_body("request timeout"),
        },
        501 => Outcome::Failed {
            reason: with_body("not implemented"),
            disable: false,
        },
        500..=599 => Outcome::Retry {
            after: hints.retry_after,
            reason: with_body("server error"),
        },
        _ => {
            let disable = match kind {
                // 404 / 10015 unknown webhook, 401 / 403 / 50027 bad token:
                // "If a webhook returns a 404 status you should not attempt to
                // use it again" (Discord), and 401/403 count as invalid requests.
                TargetKind::Discord => matches!(status, 401 | 403 | 404),
                TargetKind::Slack => {
                    matches!(status, 404 | 410)
                        || SLACK_DISABLE.iter().any(|e| answer.body.trim() == *e)
                }
                // Credentials refused (401/403) hold for every delivery:
                // pause rather than dead-letter the backlog one by one.
                TargetKind::Webhook => matches!(status, 401 | 403 | 410),
                TargetKind::Stdout => false,
                // The token is wrong or lacks a scope: every reply would
                // fail alike (a 404 is one conversation gone).
                TargetKind::Crisp => matches!(status, 401 | 403),
            };
            let what = if disable {
                "target rejected the webhook itself"
            } else {
                "request rejected"
            };
            Outcome::Failed {
                reason: with_body(what),
                disable,
            }
        }
    }
}

/// Classifies a failure with no HTTP answer.
pub fn classify_error(err: &TransportError) -> Outcome {
    match err {
        TransportError::Build(_) => Outcome::Failed {
            reason: err.to_string(),
            disable: false,
        },
        _ => Outcome::Retry {
            after: None,
            reason: err.to_string(),
        },
    }
}

pub use crate::text::excerpt;

#[cfg(test)]
mod tests {
    use super::*;
    use TargetKind::*;

    const CAP: Duration = Duration::from_secs(300);

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        Answer::new(status, headers, body)
    }

    fn outcome(kind: TargetKind, a: &Answer) -> &'static str {
        match classify(kind, a, &rate_hints(a, 0, CAP)) {
            Outcome::Delivered => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Failed { disable: true, .. } => "disable",
            Outcome::Failed { disable: false, .. } => "dead",
            Outcome::ThreadGone { .. } => "thread gone",
        }
    }

    #[test]
    fn classification_table() {
        let cases: &[(TargetKind, u16, &str, &str)] = &[
            (Discord, 200, "{\"id\":\"1\"}", "delivered"),
            (Discord, 204, "", "delivered"),
            (
                Discord,
                400,
                "{\"code\":50035,\"message\":\"Invalid Form Body\"}",
                "dead",
            ),
            (Discord, 401, "{\"code\":50027}", "disable"),
            (Discord, 403, "", "disable"),
            (
                Discord,
                404,
                "{\"code\":10015,\"message\":\"Unknown Webhook\"}",
                "disable",
            ),
            (Discord, 413, "", "dead"),
            (Discord, 429, "{\"retry_after\":1.5}", "retry"),
            (Discord, 500, "", "retry"),
            (Discord, 502, "", "retry"),
            (Discord, 503, "", "retry"),
            (Discord, 501, "", "dead"),
            (Discord, 408, "", "retry"),
            (Discord, 301, "", "dead"),
            (Slack, 200, "ok", "delivered"),
            (Slack, 200, "", "delivered"),
            (Slack, 200, "invalid_payload", "dead"),
            (Slack, 400, "invalid_payload", "dead"),
            (Slack, 400, "no_text", "dead"),
            (Slack, 403, "action_prohibited", "disable"),
            (Slack, 403, "invalid_token", "disable"),
            (Slack, 404, "channel_not_found", "disable"),
            (Slack, 410, "channel_is_archived", "disable"),
            (Slack, 429, "rate_limited", "retry"),
            (Slack, 500, "rollup_error", "retry"),
            (Webhook, 201, "", "delivered"),
            (Webhook, 302, "", "dead"),
            (Webhook, 404, "", "dead"),
            (Webhook, 410, "", "disable"),
            (Webhook, 401, "", "disable"),
            (Webhook, 403, "{\"error\":\"bad token\"}", "disable"),
            (Webhook, 422, "", "dead"),
            (Webhook, 504, "", "retry"),
            // Crisp's REST API (research: two-way.md §1.4, §1.5).
            (
                Crisp,
                201,
                "{\"error\":false,\"data\":{\"fingerprint\":1}}",
                "delivered",
            ),
            (
                Crisp,
                420,
                "{\"error\":true,\"reason\":\"rate_limited\"}",
                "retry",
            ),
            (Crisp, 429, "", "retry"),
            (Crisp, 503, "", "retry"),
            (
                Crisp,
                401,
                "{\"error\":true,\"reason\":\"invalid_session\"}",
                "disable",
            ),
            (Crisp, 403, "", "disable"),
            (
                Crisp,
                404,
                "{\"error\":true,\"reason\":\"not_found\"}",
                "dead",
            ),
            (
                Crisp,
                400,
                "{\"error\":true,\"reason\":\"invalid_data\"}",
                "dead",
            ),
            // 420 is Crisp's alone: elsewhere it is a plain client error.
            (Webhook, 420, "", "dead"),
        ];
        for (kind, status, body, want) in cases {
            assert_eq!(
                outcome(*kind, &answer(*status, &[], body)),
                *want,
                "{kind} {status} {body}"
            );
        }
        assert_eq!(
            classify_error(&TransportError::Timeout),
            Outcome::Retry {
                after: None,
                reason: "timed out".into()
            }
        );
        assert!(matches!(
            classify_error(&TransportError::Connect("refused".into())),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify_error(&TransportError::Build("x".into())),
            Outcome::Failed { disable: false, .. }
        ));
    }

    #[test]
    fn retry_after_prefers_the_precise_body() {
        let a = answer(
            429,
            &[("Retry-After", "2")],
            r#"{"message":"You are being rate limited.","retry_after":1.337,"global":false}"#,
        );
        let h = rate_hints(&a, 0, CAP);
        assert_eq!(h.retry_after, Some(Duration::from_millis(1337)));
        assert!(!h.global);
        assert_eq!(
            classify(Discord, &a, &h),
            Outcome::Retry {
                after: Some(Duration::from_millis(1337)),
                reason: format!("rate limited (HTTP 429): {}", a.body)
            }
        );

        let a = answer(429, &[("Retry-After", "7")], "rate_limited");
        assert_eq!(
            rate_hints(&a, 0, CAP).retry_after,
            Some(Duration::from_secs(7))
        );
        let a = answer(503, &[("Retry-After", "Sun, 06 Nov 1994 08:49:37 GMT")], "");
        assert_eq!(
            rate_hints(&a, 784_111_770_000, CAP).retry_after,
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            rate_hints(&a, 784_111_790_000, CAP).retry_after,
            Some(Duration::ZERO)
        );
        let a = answer(429, &[("Retry-After", "soon")], "");
        assert_eq!(rate_hints(&a, 0, CAP).retry_after, None);
        let a = answer(
            429,
            &[("X-RateLimit-Global", "true")],
            r#"{"retry_after": 0.25, "global": true}"#,
        );
        assert!(rate_hints(&a, 0, CAP).global);
    }

    #[test]
    fn discord_bucket_headers() {
        let a = answer(
            200,
            &[
                ("X-RateLimit-Limit", "5"),
                ("X-RateLimit-Remaining", "0"),
                ("X-RateLimit-Reset-After", "1.250"),
                ("X-RateLimit-Bucket", "abcd"),
            ],
            "{}",
        );
        let h = rate_hints(&a, 0, CAP);
        assert_eq!(h.remaining, Some(0));
        assert_eq!(h.reset_after, Some(Duration::from_millis(1250)));
        assert_eq!(h.bucket.as_deref(), Some("abcd"));
    }

    #[test]
    fn http_dates() {
        let at = |v: &str, now_s: i64| {
            rate_hints(&answer(503, &[("Retry-After", v)], ""), now_s * 1000, CAP).retry_after
        };
        assert_eq!(
            at("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_770),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            at("Thu, 01 Jan 1970 00:00:00 GMT", 784_111_770),
            Some(Duration::ZERO)
        );
        assert_eq!(
            at("Tue, 29 Feb 2000 12:00:00 GMT", 951_825_590),
            Some(Duration::from_secs(10))
        );
        assert_eq!(at("Fri, 31 Dec 9999 23:59:59 GMT", 0), Some(CAP));
        assert_eq!(at("yesterday", 0), None);
        assert_eq!(at("Sun, 06 Nov 99999999999999 08:49:37 GMT", 0), None);
        assert_eq!(at("Sun, 99 Foo 1994 99:99:99 GMT", 0), None);
    }

    /// Every number a hostile destination can write: ignored when negative
    /// or unreadable, the cap when huge; never a panic.
    #[test]
    fn hostile_hints_are_clamped_or_ignored() {
        let retry = |headers: &[(&str, &str)], body: &str| {
            rate_hints(&answer(429, headers, body), 0, CAP).retry_after
        };
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, Option<Duration>);
        let cases: &[Case] = &[
            (&[], r#"{"retry_after": 1e30}"#, Some(CAP)),
            (&[], r#"{"retry_after": 1.7976931348623157e308}"#, Some(CAP)),
            (&[], r#"{"retry_after": 18446744073709551616}"#, Some(CAP)),
            (&[], r#"{"retry_after": -5}"#, None),
            (&[], r#"{"retry_after": "NaN"}"#, None),
            (&[], r#"{"retry_after": 1e400}"#, None),
            (
                &[],
                r#"{"retry_after": 0.5}"#,
                Some(Duration::from_millis(500)),
            ),
            (&[("Retry-After", "1e30")], "", Some(CAP)),
            (&[("Retry-After", "inf")], "", Some(CAP)),
            (&[("Retry-After", "99999999999999999999999")], "", Some(CAP)),
            (&[("Retry-After", "-1")], "", None),
            (&[("Retry-After", "NaN")], "", None),
            (&[("Retry-After", "abc")], "", None),
            (&[("Retry-After", "")], "", None),
            (&[("Retry-After", "7")], "", Some(Duration::from_secs(7))),
        ];
        for (headers, body, want) in cases {
            assert_eq!(retry(headers, body), *want, "{headers:?} {body}");
        }
        let reset = |v: &str| {
            rate_hints(
                &answer(
                    200,
                    &[
                        ("X-RateLimit-Remaining", "0"),
                        ("X-RateLimit-Reset-After", v),
                    ],
                    "{}",
                ),
                0,
                CAP,
            )
            .reset_after
        };
        assert_eq!(reset("1e30"), Some(CAP));
        assert_eq!(reset("1e308"), Some(CAP));
        assert_eq!(reset("-3"), None);
        assert_eq!(reset("NaN"), None);
        assert_eq!(reset("abc"), None);
        assert_eq!(reset("1.25"), Some(Duration::from_millis(1250)));
        let remaining = |v: &str| {
            rate_hints(&answer(200, &[("X-RateLimit-Remaining", v)], ""), 0, CAP).remaining
        };
        assert_eq!(remaining("99999999999999999999"), None);
        assert_eq!(remaining("-1"), None);
        assert_eq!(remaining("3"), Some(3));
    }
}
