//! Text as destinations see it: escaping that makes visitor text inert per
//! platform ([`escape`]) and measuring and cutting to their limits
//! ([`truncate`](mod@truncate)). The checks of what those guarantee live beside the
//! destinations' limits, in [`crate::targets::invariants`].
//!
//! A leaf: pure functions over strings and JSON values, importing nothing
//! from the crate, so rendering, request building and delivery can all use
//! it.

pub mod escape;
pub mod truncate;

pub use escape::{defuse_mentions, escape_discord, escape_json_str, escape_slack};
pub use truncate::{fit_slack_string, fit_string, text_len, truncate, truncate_slack};

/// `body` on one line, cut to 300 characters: for errors and logs that
/// quote a destination's answer.
pub fn excerpt(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate(&one_line, 300).into_owned()
}
