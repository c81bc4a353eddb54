//! What the store keeps about past sends and conversations, for the
//! console's Deliveries and Conversations pages: the types of
//! [`Store::recent_deliveries`], [`Store::attempts_of`] and
//! [`Store::conversations`], and what an [`Op`] records as an attempt.
//!
//! Every [`Op::Delivered`], [`Op::Retry`] and [`Op::Dead`] that changes its
//! row also writes one attempt row, in the same transaction, so a
//! delivery's state and its history never disagree. Only the last
//! [`ATTEMPTS_KEPT`] attempts of a delivery are kept; they go with it when
//! it is deleted (retention, purges). Errors are stored as the ops carry
//! them: already redacted (never a URL or a token).
//!
//! This module must not run queries (the engines do).

#[allow(unused_imports)] // for the doc links
use super::Store;
use super::{Op, ThreadState};

/// Attempts kept per delivery: older ones are deleted as new ones come.
pub const ATTEMPTS_KEPT: i64 = 20;

/// The name of the events that hold agents' replies (the same as
/// `targets::crisp::REPLY_EVENT`; the store does not import targets).
pub const REPLY_EVENT: &str = "reply";

/// [`DeliveryFilter::limit`] when none is given.
pub const DEFAULT_LIMIT: usize = 100;

/// The most rows one read of [`Store::recent_deliveries`] or
/// [`Store::conversations`] answers.
pub const MAX_LIMIT: usize = 500;

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    /// `None` for anything but `pending`, `delivered` and `dead`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "dead" => Some(Self::Dead),
            _ => None,
        }
    }
}

/// Which deliveries [`Store::recent_deliveries`] answers: every condition
/// given must hold. Newest first, at most `limit`, with ids below
/// `before_id` (keyset pagination: pass the last id of a page to get the
/// next one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub target: Option<String>,
    pub state: Option<DeliveryState>,
    /// The event's name, e.g. `message:send` (`reply` for agents' replies).
    pub event: Option<String>,
    /// Created at or after (ms).
    pub since_ms: Option<i64>,
    /// Created before (ms; exclusive).
    pub until_ms: Option<i64>,
    /// The event's conversation, `website_id/session_id`, as the thread map
    /// and [`ConversationRow::conversation`] name it.
    pub conversation: Option<String>,
    pub before_id: Option<i64>,
    /// Rows wanted: [`DEFAULT_LIMIT`] when `None`, at most [`MAX_LIMIT`].
    pub limit: Option<usize>,
}

impl DeliveryFilter {
    /// The number of rows to read: the limit given, within 1..=[`MAX_LIMIT`].
    pub fn rows(&self) -> i64 {
        clamp_limit(self.limit.unwrap_or(DEFAULT_LIMIT))
    }
}

/// `limit` within 1..=[`MAX_LIMIT`], as a bind value.
pub fn clamp_limit(limit: usize) -> i64 {
    limit.clamp(1, MAX_LIMIT) as i64
}

/// One delivery as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySummary {
    pub id: i64,
    pub event_id: i64,
    /// The event's name, e.g. `message:send`.
    pub event: String,
    /// `website_id/session_id`, when the event has a session.
    pub conversation: Option<String>,
    /// Crisp's `session_id` (the part of `conversation` after the `/`).
    pub session_id: Option<String>,
    pub route: String,
    pub target: String,
    pub template: Option<String>,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    /// Attempts since it was created or last replayed.
    pub attempts: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

/// One send of a delivery (or, for a row that could not be rendered, the
/// attempt that dead-lettered it without a send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub delivery_id: i64,
    /// The delivery's attempt count after this one (it starts again from 1
    /// after a replay).
    pub attempt: i64,
    /// When the send started.
    pub at_ms: i64,
    /// How long the send took; `None` when nothing was sent.
    pub latency_ms: Option<i64>,
    /// The HTTP status answered, if any.
    pub status: Option<i64>,
    /// Why it failed (redacted), if it did.
    pub error: Option<String>,
    /// `delivered`, `retry` or `dead`.
    pub outcome: String,
}

/// A conversation's thread on a target, with its activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRow {
    pub target: String,
    /// `website_id/session_id`.
    pub conversation: String,
    /// Crisp's `session_id` (the part after the `/`).
    pub session_id: String,
    pub thread: String,
    pub state: ThreadState,
    /// When the thread was recorded first.
    pub created_at_ms: i64,
    /// The latest of the thread's last change and the conversation's last
    /// stored event (retention forgets older events).
    pub last_activity_ms: i64,
    /// Agents' replies delivered to Crisp for this conversation (from any
    /// target's thread), among the rows retention still keeps.
    pub replies: i64,
}

/// The part of `website_id/session_id` after the first `/`.
pub fn session_of(conversation: &str) -> &str {
    conversation
        .split_once('/')
        .map_or(conversation, |(_, session)| session)
}

/// The attempt an op records, if it is a result of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptOf<'a> {
    pub id: i64,
    pub attempt: i64,
    pub at_ms: i64,
    pub latency_ms: Option<i64>,
    pub status: Option<i64>,
    pub error: Option<&'a str>,
    pub outcome: &'static str,
}

impl Op {
    /// The attempt this op records: `Some` for [`Op::Delivered`],
    /// [`Op::Retry`] and [`Op::Dead`].
    pub fn attempt(&self) -> Option<AttemptOf<'_>> {
        let (id, attempt, at_ms, latency_ms, status, error, outcome) = match self {
            Op::Delivered {
                id,
                attempts,
                status,
                at_ms,
                latency_ms,
            } => (id, attempts, at_ms, latency_ms, status, None, "delivered"),
            Op::Retry {
                id,
                attempts,
                status,
                error,
                at_ms,
                latency_ms,
                ..
            } => (
                id,
                attempts,
                at_ms,
                latency_ms,
                status,
                Some(error),
                "retry",
            ),
            Op::Dead {
                id,
                attempts,
                status,
                error,
                at_ms,
                latency_ms,
            } => (id, attempts, at_ms, latency_ms, status, Some(error), "dead"),
            _ => return None,
        };
        Some(AttemptOf {
            id: *id,
            attempt: *attempt,
            at_ms: *at_ms,
            latency_ms: *latency_ms,
            status: status.map(i64::from),
            error: error.map(String::as_str),
            outcome,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_sessions() {
        let f = |limit| DeliveryFilter {
            limit,
            ..DeliveryFilter::default()
        };
        assert_eq!(f(None).rows(), 100);
        assert_eq!(f(Some(0)).rows(), 1);
        assert_eq!(f(Some(7)).rows(), 7);
        assert_eq!(f(Some(10_000)).rows(), 500);
        assert_eq!(session_of("w/session_1"), "session_1");
        assert_eq!(session_of("lone"), "lone");
        for s in ["pending", "delivered", "dead"] {
            assert_eq!(DeliveryState::parse(s).map(DeliveryState::as_str), Some(s));
        }
        assert_eq!(DeliveryState::parse("Dead"), None);
        assert_eq!(REPLY_EVENT, crate::targets::crisp::REPLY_EVENT);
    }
}
