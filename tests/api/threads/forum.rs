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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_conversation_goes_on_in_the_same_thread() {
    let (fake, url) = forum().await;
    let mut app = TestApp::spawn_in(chat_config(&target(&url, "")), &[]).await;
    for (conv, seq) in [("ann", 1), ("bob", 2)] {
        assert_eq!(app.post_event(conv_message(conv, seq)).await.status(), 200);
    }
    eventually("two threads", || by_thread(&fake).len() == 2).await;
    assert!(app.terminate().success());
    let app = TestApp::spawn_in(app.into_work(), &[]).await;
    for (conv, seq) in [("ann", 3), ("bob", 4), ("ann", 5)] {
        assert_eq!(app.post_event(conv_message(conv, seq)).await.status(), 200);
    }
    eventually("five messages", || {
        by_thread(&fake).iter().map(|(_, s)| s.len()).sum::<usize>() == 5
    })
    .await;
    let mut threads = by_thread(&fake);
    threads.sort();
    assert_eq!(
        threads,
        vec![
            ("ann · Chat".to_string(), vec![1, 3, 5]),
            ("bob · Chat".to_string(), vec![2, 4]),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_or_locked_thread_is_followed_by_a_new_one_that_says_so() {
    for (what, end) in [
        (
            "deleted",
            FakeDiscord::delete_thread as fn(&FakeDiscord, &str),
        ),
        ("locked", FakeDiscord::lock_thread),
    ] {
        let (fake, url) = forum().await;
        let app = TestApp::spawn_in(chat_config(&target(&url, "")), &[]).await;
        assert_eq!(app.post_event(conv_message("ann", 1)).await.status(), 200);
        eventually("the first thread", || fake.threads().len() == 1).await;
        let first = fake.threads()[0].id.clone();
        end(&fake, &first);
        for seq in 2..=4 {
            assert_eq!(app.post_event(conv_message("ann", seq)).await.status(), 200);
        }
        eventually("a second thread with the rest", || {
            fake.threads()
                .get(1)
                .is_some_and(|t| t.messages.iter().flat_map(|m| seqs_in(&m.body)).count() == 3)
        })
        .await;
        let threads = fake.threads();
        assert_eq!(threads.len(), 2, "{what}: {threads:?}");
        let seqs = |t: &crate::fakes::DiscordThread| -> Vec<usize> {
            t.messages.iter().flat_map(|m| seqs_in(&m.body)).collect()
        };
        assert_eq!(seqs(&threads[0]), vec![1], "{what}");
        assert_eq!(seqs(&threads[1]), vec![2, 3, 4], "{what}");
        assert_eq!(threads[1].name, "ann · Chat", "{what}");
        let opening = threads[1].messages[0].content();
        assert!(
            opening.starts_with("↪ This conversation continues from an earlier thread"),
            "{what}: {opening:?}"
        );
        // Only the first message of the new thread says so.
        assert!(
            threads[1].messages[1..]
                .iter()
                .all(|m| !m.content().contains("continues")),
            "{what}"
        );
        assert!(app.logs().contains("thread is gone"), "{what}");
        assert!(!app.logs().contains("target paused"), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_whose_thread_fails_holds_back_only_itself() {
    let (fake, url) = forum().await;
    let app = TestApp::spawn_in(
        chat_config(&target(
            &url,
            ", retry: {initial_backoff: 200ms, max_backoff: 400ms, max_attempts: 1000}",
        )),
        &[],
    )
    .await;
    assert_eq!(app.post_event(conv_message("ann", 1)).await.status(), 200);
    eventually("ann's thread", || fake.threads().len() == 1).await;
    let ann = fake.threads()[0].id.clone();
    fake.fail_posts_in(&ann, true);
    // Ann's thread fails from now on; Bob's and Cy's conversations go on.
    let mut seq = 1;
    for _ in 0..3 {
        for conv in ["ann", "bob", "cy"] {
            seq += 1;
            assert_eq!(app.post_event(conv_message(conv, seq)).await.status(), 200);
        }
    }
    eventually("bob's and cy's messages", || {
        by_thread(&fake)
            .iter()
            .filter(|(name, _)| !name.starts_with("ann"))
            .map(|(_, s)| s.len())
            .sum::<usize>()
            == 6
    })
    .await;
    assert_eq!(seqs_of(&fake, &ann), vec![1], "ann's messages wait");
    let failed = fake.count_status(500);
    assert!(failed >= 1, "ann's thread was tried");
    // Ann's thread works again: her messages follow, in order.
    fake.fail_posts_in(&ann, false);
    eventually("ann's messages", || seqs_of(&fake, &ann).len() == 4).await;
    assert_eq!(seqs_of(&fake, &ann), vec![1, 2, 5, 8]);
    assert_eq!(fake.threads().len(), 3);
}

fn seqs_of(fake: &FakeDiscord, thread: &str) -> Vec<usize> {
    fake.messages_in(thread)
        .iter()
        .flat_map(|m| seqs_in(&m.body))
        .collect()
}

/// Messages of one conversation that queue while the destination is slow:
/// `coalesce: true` (the default) sends them as one post, `false` one by
/// one; either way every message arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_of_a_conversation_go_as_one_post_unless_coalesce_is_off() {
    for (coalesce, extra) in [(true, ""), (false, ", coalesce: false")] {
        let (fake, url) = forum().await;
        let app = TestApp::spawn_in(chat_config(&target(&url, extra)), &[]).await;
        // The first post is slow: the others queue behind it.
        fake.set_delay(Duration::from_millis(1500));
        assert_eq!(app.post_event(conv_message("ann", 1)).await.status(), 200);
        eventually("the first post", || !fake.received().is_empty()).await;
        fake.clear();
        for seq in 2..=6 {
            assert_eq!(app.post_event(conv_message("ann", seq)).await.status(), 200);
        }
        eventually("six messages", || {
            by_thread(&fake).iter().map(|(_, s)| s.len()).sum::<usize>() == 6
        })
        .await;
        let threads = by_thread(&fake);
        assert_eq!(threads.len(), 1, "coalesce {coalesce}");
        assert_eq!(threads[0].1, vec![1, 2, 3, 4, 5, 6], "coalesce {coalesce}");
        let posts = fake.threads()[0].messages.len();
        if coalesce {
            assert_eq!(posts, 2, "the five queued messages as one post");
        } else {
            assert_eq!(posts, 6, "one post per message");
        }
        assert_eq!(fake.count_status(429), 0);
    }
}

/// An event without a conversation (no `session_id`) in a forum, where every
/// message is a post: a post of its own, named after the event; the
/// conversations keep their threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_without_a_conversation_gets_a_post_of_its_own() {
    let (fake, url) = forum().await;
    let app = TestApp::spawn_in(chat_config(&target(&url, "")), &[]).await;
    let lone = serde_json::json!({
        "website_id": "w1",
        "event": "message:send",
        "data": {"website_id": "w1", "type": "text", "content": "msg 2", "from": "user"},
        "timestamp": 1_748_952_083_417_i64,
    })
    .to_string();
    assert_eq!(app.post_event(conv_message("ann", 1)).await.status(), 200);
    assert_eq!(app.post_event(lone).await.status(), 200);
    assert_eq!(app.post_event(conv_message("ann", 3)).await.status(), 200);
    eventually("three messages", || {
        by_thread(&fake).iter().map(|(_, s)| s.len()).sum::<usize>() == 3
    })
    .await;
    let mut threads = by_thread(&fake);
    threads.sort();
    assert_eq!(
        threads,
        vec![
            ("ann · Chat".to_string(), vec![1, 3]),
            ("message:send".to_string(), vec![2]),
        ]
    );
    assert!(!app.logs().contains("target paused"), "{}", app.logs());
}
