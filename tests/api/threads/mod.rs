//! A thread per Crisp conversation, end to end against the fakes of Discord
//! (forum webhooks, bots) and Slack (a bot through the Web API): each
//! conversation's messages in its own thread, in order; threads found again
//! after a restart; a deleted thread replaced with nothing lost.
//!
//! Files: `forum` (a Discord forum webhook), `bots` (Discord bots in a text
//! and a forum channel, Slack bots), `crash` (killed while creating a
//! thread), `fallback` (a webhook that is not a forum's), `shipped` (the shipped
//! config and templates); shared helpers here.

mod bots;
mod crash;
mod fallback;
mod forum;
mod shipped;

use serde_json::{Value, json};

use crate::helpers::*;

/// A visitor's text message `msg <seq>` in conversation `conv` (its
/// `session_id`), from visitor `conv` (their nickname).
pub fn conv_message(conv: &str, seq: usize) -> String {
    json!({
        "website_id": "w1",
        "event": "message:send",
        "data": {
            "website_id": "w1",
            "session_id": format!("session_{conv}"),
            "type": "text",
            "content": format!("msg {seq}"),
            "from": "user",
            "origin": "chat",
            "user": {"nickname": conv},
        },
        "timestamp": 1_748_952_083_417_i64 + seq as i64,
    })
    .to_string()
}

/// Every `msg <n>` in a message body (content lines, embed descriptions,
/// Slack text), in order.
pub fn seqs_in(body: &Value) -> Vec<usize> {
    let text = body.to_string();
    text.match_indices("msg ")
        .filter_map(|(at, _)| {
            let digits: String = text[at + 4..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// A config with `target` (YAML flow map) named `chat` receiving every
/// message with the template `note` (text: the message's content).
pub fn chat_config(target: &str) -> Workdir {
    let work = Workdir::new(&config_with(&format!(
        "targets:\n  chat: {target}\nroutes:\n  - name: all\n    to: [chat]\n    template: note\n"
    )));
    work.write("templates/note.discord.hbs", "{{data.content}}");
    work.write("templates/note.slack.hbs", "{{data.content}}");
    work
}

/// Polls `cond` every 20 ms; panics with `what` after 30 s.
pub async fn eventually(what: &str, cond: impl Fn() -> bool) {
    eventually_within(what, 30, cond).await;
}

/// Polls `cond` every 20 ms; panics with `what` after `secs` seconds.
pub async fn eventually_within(what: &str, secs: u64, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
