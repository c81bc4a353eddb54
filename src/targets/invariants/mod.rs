//! The checks of what escaping and fitting guarantee: what a Discord or Slack
//! text must look like after [`escape_discord`](crate::text::escape_discord),
//! [`escape_slack`](crate::text::escape_slack), `{{plain}}`
//! ([`defuse_mentions`](crate::text::defuse_mentions)) and truncation, and what a
//! whole Discord or Slack body must satisfy once built and fitted (nothing
//! can ping, no markup or link from visitor text, every limit kept). One set,
//! used by the tests (`tests/api/rendering/`), the property tests
//! (`tests/api/properties.rs`) and the fuzz targets (`fuzz/src/lib.rs`), each
//! through a thin adapter (a failed test case, a panic).
//!
//! Each check returns `Err` with a description of the broken promise (body
//! checks: every problem found, one a line). The checks are an independent
//! model of the destinations (how Discord reads backslashes, which
//! characters start a line, how Slack decodes entities), written apart from
//! the code they check on purpose. Limits come from
//! [`discord`](super::discord) and [`slack`](super::slack), lengths from
//! [`text_len`](crate::text::text_len). It lives here, beside the limits,
//! so that `text` stays a leaf.
//!
//! Must not be used on the delivery path: it decides nothing the relay does,
//! only whether what it did keeps its promises. No I/O.
//!
//! Files: `text` (reading texts as the destinations do; escaping, `{{plain}}`
//! and truncation promises), `body` (whole bodies: limits, fitting, pings,
//! markup, well-formedness).

mod body;
mod text;

pub use body::*;
pub use text::*;

/// The zero-width space escaping puts after `@` (and `{{plain}}` after `<`
/// and between `]` and `(`).
pub const ZWSP: char = '\u{200B}';

/// Mentions that ping in a Discord text written as they are.
pub const DISCORD_MENTIONS: &[&str] = &["@everyone", "@here"];

/// Mentions that ping in a Slack text written as they are (with
/// `link_names`, which the relay removes; defused anyway).
pub const SLACK_MENTIONS: &[&str] = &["@channel", "@here", "@everyone"];

/// The three entities Slack decodes.
pub(super) const SLACK_ENTITIES: [&str; 3] = ["&amp;", "&lt;", "&gt;"];

pub(super) fn ensure(ok: bool, problem: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(problem()) }
}

/// `Ok` when `problems` is empty, else every problem, one a line.
pub(super) fn report(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}
