//! Threads asked of a Discord webhook that is not in a forum channel: safe
//! either way — the messages go to its channel, the target keeps going.

use std::time::Duration;

use super::*;
use crate::fakes::FakeDiscord;

const TEXT: &str = "1200000000000000009";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_channel_webhook_with_threads_posts_to_its_channel() {
    let fake = FakeDiscord::start("bot-token", 5, Duration::from_secs(2)).await;
    fake.add_text_channel(TEXT);
    let url = fake.add_webhook("1300000000000000009", "hook-token", TEXT);
    let app = TestApp::spawn_in(
        chat_config(&format!(
            "{{kind: discord, url: \"{url}\", threads: per_conversation}}"
        )),
        &[],
    )
    .await;
    for seq in 1..=3 {
        assert_eq!(app.post_event(conv_message("ann", seq)).await.status(), 200);
    }
    eventually("three messages in the channel", || {
        fake.messages_in(TEXT)
            .iter()
            .flat_map(|m| seqs_in(&m.body))
            .count()
            == 3
    })
    .await;
    let seqs: Vec<usize> = fake
        .messages_in(TEXT)
        .iter()
        .flat_map(|m| seqs_in(&m.body))
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert!(fake.threads().is_empty());
    assert!(
        app.logs().contains("is not in a forum channel"),
        "{}",
        app.logs()
    );
    assert!(!app.logs().contains("target paused"));
}
