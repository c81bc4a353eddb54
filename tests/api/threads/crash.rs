//! A relay killed (SIGKILL) while a conversation's thread is being created:
//! Discord may have made the thread without the relay learning its id. At
//! most one extra thread; nothing lost; the conversation goes on, in order,
//! in the thread the relay recorded.

use std::time::Duration;

use super::*;
use crate::fakes::FakeDiscord;

const FORUM: &str = "1200000000000000004";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_creating_a_thread_at_most_one_extra_thread_and_nothing_lost() {
    let fake = FakeDiscord::start("bot-token", 5, Duration::from_secs(2)).await;
    fake.add_forum_channel(FORUM);
    let url = fake.add_webhook("1300000000000000004", "hook-token", FORUM);
    let target = format!("{{kind: discord, url: \"{url}\", threads: per_conversation}}");
    let mut app = TestApp::spawn_in(chat_config(&target), &[]).await;
    // Discord makes the thread, but its answer never comes back.
    fake.set_delay(Duration::from_secs(600));
    assert_eq!(app.post_event(conv_message("ann", 1)).await.status(), 200);
    eventually("the thread's creation", || fake.threads().len() == 1).await;
    app.kill();
    fake.clear();

    let app = TestApp::spawn_in(app.into_work(), &[]).await;
    for seq in 2..=3 {
        assert_eq!(app.post_event(conv_message("ann", seq)).await.status(), 200);
    }
    let seqs = |t: &crate::fakes::DiscordThread| -> Vec<usize> {
        t.messages.iter().flat_map(|m| seqs_in(&m.body)).collect()
    };
    eventually("msg 3", || {
        fake.threads()
            .last()
            .is_some_and(|t| seqs(t).ends_with(&[3]))
    })
    .await;
    let threads = fake.threads();
    assert_eq!(threads.len(), 2, "{threads:?}");
    // The lost answer's thread holds the first message; the relay sent it
    // again into the thread it recorded, followed by the rest.
    assert_eq!(seqs(&threads[0]), vec![1]);
    assert_eq!(seqs(&threads[1]), vec![1, 2, 3]);

    // And later messages keep to the recorded thread.
    assert_eq!(app.post_event(conv_message("ann", 4)).await.status(), 200);
    eventually("msg 4", || {
        fake.threads()
            .last()
            .is_some_and(|t| seqs(t).ends_with(&[4]))
    })
    .await;
    assert_eq!(fake.threads().len(), 2);
}
