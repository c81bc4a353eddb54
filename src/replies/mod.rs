//! Agents' replies read from chat threads, before they are stored: what a
//! chat platform's message says (author, text, files, which thread) and
//! whether it is a reply at all. Pure, but for `discord::run` (the Discord
//! Gateway client task): the server reads requests and the store; delivery
//! sends the stored replies to Crisp.
//!
//! Files: `slack` (Events API payloads), `discord` (the Gateway client,
//! message objects, REST catch-up).

pub mod discord;
pub mod slack;

use crate::config::CRISP_TARGET;
use crate::store::{NewDelivery, NewEvent};
use crate::targets::crisp::{REPLY_EVENT, Reply};

/// The route name of stored replies (in `deadletters` and the logs).
pub const REPLIES_ROUTE: &str = "replies";

/// What the store keeps for `reply`, received at `now_ms`: the reply as an
/// event of its conversation (a resend with the same `dedupe` key within a
/// day stores nothing), and its delivery to the relay's `crisp` target.
pub fn stored(reply: &Reply, dedupe: String, now_ms: i64) -> (NewEvent, Vec<NewDelivery>) {
    let event = NewEvent {
        received_at_ms: now_ms,
        website_id: reply.website_id.clone(),
        name: REPLY_EVENT.to_owned(),
        timestamp_ms: now_ms,
        body: reply.envelope(now_ms).to_string(),
        conversation: Some(reply.conversation()),
        dedupe: Some(dedupe),
    };
    let deliveries = vec![NewDelivery {
        route: REPLIES_ROUTE.to_owned(),
        target: CRISP_TARGET.to_owned(),
        template: None,
    }];
    (event, deliveries)
}
