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
