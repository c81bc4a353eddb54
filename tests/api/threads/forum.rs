//! A Discord forum webhook with `threads: per_conversation`.

use std::time::Duration;

use super::*;
use crate::fakes::FakeDiscord;

const FORUM: &str = "1200000000000000001";

async fn forum() -> (FakeDiscord, String) {
    let fake = FakeDiscord::start("bot-token", 5, Duration::from_secs(2)).await;
    fake.add_forum_channel(FORUM);
    let url = fake.add_webhook("1300000000000000001", "hook-token", FORUM);
    (fake, url)
}

fn target(url: &str, extra: &str) -> String {
    format!("{{kind: discord, url: \"{url}\", threads: per_conversation{extra}}}")
}

/// The seqs each thread holds, by thread name.
fn by_thread(fake: &FakeDiscord) -> Vec<(String, Vec<usize>)> {
    fake.threads()
        .into_iter()
        .filter(|t| !t.deleted)
        .map(|t| {
            let seqs = t.messages.iter().flat_map(|m| seqs_in(&m.body)).collect();
            (t.name, seqs)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_conversations_each_get_their_own_thread_in_order() {
    let (fake, url) = forum().await;
    let app = TestApp::spawn_in(chat_config(&target(&url, "")), &[]).await;
    // Three visitors write at once, interleaved.
    let mut seq = 0;
    for _ in 0..4 {
        for conv in ["ann", "bob", "cy"] {
            seq += 1;
            let body = conv_message(conv, seq);
            assert_eq!(app.post_event(body).await.status(), 200);
        }
    }
    eventually("12 messages in threads", || {
        by_thread(&fake).iter().map(|(_, s)| s.len()).sum::<usize>() == 12
    })
    .await;
    let threads = by_thread(&fake);
    assert_eq!(threads.len(), 3, "{threads:?}");
    for (name, seqs) in &threads {
        let conv = name.split(' ').next().unwrap();
        let offset = ["ann", "bob", "cy"]
            .iter()
            .position(|c| *c == conv)
            .unwrap()
            + 1;
        let want: Vec<usize> = (0..4).map(|i| offset + 3 * i).collect();
        assert_eq!(seqs, &want, "thread {name}");
        assert_eq!(name, &format!("{conv} · Chat"));
    }
    assert_eq!(fake.count_status(429), 0);
    // Nothing went to the forum outside a thread.
    assert!(fake.messages_in(FORUM).is_empty());
}
