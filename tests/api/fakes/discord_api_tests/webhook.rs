//! Execute Webhook on the thread fake: forum posts (`thread_name`,
//! `thread_id`), the 22000x rules, unknown threads and webhooks, and the
//! message checks (User-Agent, limits, `allowed_mentions`).

use serde_json::json;

use super::*;

#[tokio::test]
async fn webhook_thread_name_makes_a_post_and_thread_id_posts_into_it() {
    let fake = guild(50, Duration::from_secs(1)).await;
    let first =
        json!({"thread_name": "Visitor A", "content": "hello", "allowed_mentions": {"parse": []}});
    let r = hook(&fake, &format!("{FORUM_HOOK}?wait=true"), &first).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let starter = r.json();
    let thread = starter["channel_id"].as_str().unwrap().to_string();
    assert_ne!(thread, FORUM);
    assert_eq!(
        starter["id"],
        json!(thread),
        "the starter message has the thread's id"
    );
    assert_eq!(starter["content"], "hello");
    assert_eq!(starter["webhook_id"], "800000000000000001");
    assert!(r.header("x-ratelimit-bucket").is_some());

    // Into the post, with and without wait, versioned or not.
    let path =
        format!("/api/v10/webhooks/800000000000000001/forum-token?wait=true&thread_id={thread}");
    let r = hook(
        &fake,
        &path,
        &json!({"content": "second", "username": "Ann"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let second = r.json();
    assert_eq!(second["channel_id"], json!(thread));
    assert!(id(&second) > id(&starter));
    assert_eq!(second["author"]["username"], "Ann");
    let r = hook(
        &fake,
        &format!("{FORUM_HOOK}?thread_id={thread}"),
        &json!({"embeds": [{"title": "t"}]}),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (204, ""));

    // Another post: a new thread with a greater id.
    let r = hook(
        &fake,
        &format!("{FORUM_HOOK}?wait=1"),
        &json!({"thread_name": "Visitor B", "content": "b"}),
    )
    .await;
    let other = r.json()["channel_id"].as_str().unwrap().to_string();
    assert!(other.parse::<u64>().unwrap() > thread.parse::<u64>().unwrap());

    let threads = fake.threads();
    assert_eq!(threads.len(), 2);
    let t = &threads[0];
    assert_eq!(
        (t.id.as_str(), t.parent_id.as_str(), t.name.as_str()),
        (thread.as_str(), FORUM, "Visitor A")
    );
    assert_eq!(t.kind, PUBLIC_THREAD);
    assert!(!t.archived && !t.locked && !t.deleted);
    let contents: Vec<&str> = t.messages.iter().map(|m| m.content()).collect();
    assert_eq!(contents, ["hello", "second", ""]);
    assert_eq!(t.messages[2].body["embeds"][0]["title"], "t");
    assert_eq!(t.messages[0].body["thread_name"], "Visitor A");
    assert_eq!(
        t.messages[0].webhook_id.as_deref(),
        Some("800000000000000001")
    );
    assert_eq!(fake.messages_in(&other).len(), 1);
    assert!(
        fake.messages_in(FORUM).is_empty(),
        "nothing lands in the forum itself"
    );

    // A text channel's webhook posts into the channel.
    let r = hook(
        &fake,
        &format!("{TEXT_HOOK}?wait=true"),
        &json!({"content": "plain"}),
    )
    .await;
    assert_eq!(r.json()["channel_id"], TEXT);
    assert_eq!(fake.messages_in(TEXT)[0].content(), "plain");
    assert_eq!(fake.accepted().len(), 5);
}

#[tokio::test]
async fn webhook_forum_rules_and_unknown_threads() {
    let fake = guild(50, Duration::from_secs(1)).await;
    let wait = format!("{FORUM_HOOK}?wait=true");
    let r = hook(&fake, &wait, &json!({"content": "x"})).await;
    assert_eq!(code(&r), (400, json!(220001)));
    let r = hook(
        &fake,
        &format!("{wait}&thread_id=1"),
        &json!({"content": "x", "thread_name": "n"}),
    )
    .await;
    assert_eq!(code(&r), (400, json!(220002)));
    let r = hook(
        &fake,
        TEXT_HOOK,
        &json!({"content": "x", "thread_name": "n"}),
    )
    .await;
    assert_eq!(code(&r), (400, json!(220003)));
    let r = hook(&fake, &format!("{FORUM_HOOK}/slack"), &json!({"text": "x"})).await;
    assert_eq!(code(&r), (400, json!(220004)));
    let r = hook(
        &fake,
        &format!("{wait}&thread_id=42"),
        &json!({"content": "x"}),
    )
    .await;
    assert_eq!(code(&r), (404, json!(10003)));
    assert_eq!(r.json()["message"], "Unknown Channel");
    let r = hook(
        &fake,
        &format!("{wait}&thread_id=abc"),
        &json!({"content": "x"}),
    )
    .await;
    assert_eq!(code(&r), (400, json!(50035)));
    assert!(r.json()["errors"]["thread_id"].is_object());
    for name in ["", "  ", &"é".repeat(101)] {
        let r = hook(&fake, &wait, &json!({"content": "x", "thread_name": name})).await;
        assert_eq!(code(&r), (400, json!(50035)), "{name:?}");
        assert!(r.json()["errors"]["thread_name"].is_object());
    }
    let r = hook(
        &fake,
        &wait,
        &json!({"content": "x", "thread_name": "é".repeat(100)}),
    )
    .await;
    assert_eq!(r.status, 200);
    // A thread of the text channel is not the forum webhook's.
    let t = bot(
        &fake,
        "POST",
        &format!("/channels/{TEXT}/threads"),
        Some(json!({"name": "t", "type": 11})),
    )
    .await;
    let t = t.json()["id"].as_str().unwrap().to_string();
    let r = hook(
        &fake,
        &format!("{wait}&thread_id={t}"),
        &json!({"content": "x"}),
    )
    .await;
    assert_eq!(code(&r), (404, json!(10003)));
    let r = hook(
        &fake,
        &format!("{TEXT_HOOK}?wait=true&thread_id={t}"),
        &json!({"content": "y"}),
    )
    .await;
    assert_eq!(r.json()["channel_id"], json!(t));

    let r = hook(
        &fake,
        "/api/webhooks/1/forum-token",
        &json!({"content": "x"}),
    )
    .await;
    assert_eq!(code(&r), (404, json!(10015)));
    let r = hook(
        &fake,
        "/api/webhooks/800000000000000001/wrong",
        &json!({"content": "x"}),
    )
    .await;
    assert_eq!(code(&r), (401, json!(50027)));
    let get = [("User-Agent", UA)];
    let r = http_request(fake.addr, "GET", FORUM_HOOK, &get, b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["channel_id"], FORUM);
    let r = http_request(fake.addr, "DELETE", FORUM_HOOK, &get, b"").await;
    assert_eq!(r.status, 405);
    // Only the valid post and the text thread were made.
    assert_eq!(fake.threads().len(), 2);
}

#[tokio::test]
async fn message_checks_user_agent_and_allowed_mentions() {
    let fake = guild(50, Duration::from_secs(1)).await;
    let target = format!("{TEXT_HOOK}?wait=true");
    let r = http_request(
        fake.addr,
        "POST",
        &target,
        &[("Content-Type", "application/json")],
        br#"{"content": "x"}"#,
    )
    .await;
    assert_eq!(code(&r), (403, json!(40333)));
    assert!(r.header("x-ratelimit-limit").is_none());
    let bad = [
        (json!({}), 50006),
        (json!({"content": "é".repeat(2001)}), 50035),
        (json!({"embeds": vec![json!({"title": "t"}); 11]}), 50035),
        (
            json!({"content": "x", "allowed_mentions": {"parse": ["users"], "users": ["1"]}}),
            50035,
        ),
        (
            json!({"content": "x", "allowed_mentions": {"users": vec!["1"; 101]}}),
            50035,
        ),
        (
            json!({"content": "x", "allowed_mentions": {"parse": ["here"]}}),
            50035,
        ),
    ];
    for (body, want) in &bad {
        let r = hook(&fake, &target, body).await;
        assert_eq!(code(&r), (400, json!(want)), "{body}");
    }
    let r = hook(
        &fake,
        &target,
        &json!({"content": "x", "allowed_mentions": {"parse": ["users"], "users": []}}),
    )
    .await;
    assert_eq!(r.status, 200, "an empty list is no conflict: {}", r.text());
    let headers = [("Content-Type", "application/json"), ("User-Agent", UA)];
    let r = http_request(fake.addr, "POST", &target, &headers, b"{\"content\": ").await;
    assert_eq!(code(&r), (400, json!(50109)));
    let headers = [("Content-Type", "text/plain"), ("User-Agent", UA)];
    let r = http_request(
        fake.addr,
        "POST",
        &target,
        &headers,
        b"{\"content\": \"x\"}",
    )
    .await;
    assert_eq!(code(&r), (400, json!(50035)));
    // The same checks on the bot's messages, at their place in the body.
    let r = bot(
        &fake,
        "POST",
        &format!("/channels/{TEXT}/messages"),
        Some(json!({"content": ""})),
    )
    .await;
    assert_eq!(code(&r), (400, json!(50006)));
    let body = json!({"name": "n", "message": {"content": "é".repeat(2001)}});
    let r = bot(
        &fake,
        "POST",
        &format!("/channels/{FORUM}/threads"),
        Some(body),
    )
    .await;
    assert_eq!(code(&r), (400, json!(50035)));
    assert!(r.json()["errors"]["message"]["content"]["_errors"].is_array());
    assert_eq!(fake.messages_in(TEXT).len(), 1);
    assert!(fake.threads().is_empty());
}
