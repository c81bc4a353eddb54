//! The bot's routes on the thread fake: auth, forum posts and messages,
//! threads of a text channel, and archived / locked / deleted threads.

use serde_json::json;

use super::*;

#[tokio::test]
async fn bot_auth_routes_and_methods() {
    let fake = guild(50, Duration::from_secs(1)).await;
    let path = format!("/channels/{TEXT}");
    for auth in [
        None,
        Some("Bot wrong"),
        Some("Bearer bot-token"),
        Some(TOKEN),
    ] {
        let r = bot_as(&fake, auth, "GET", &path, None).await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.json(), json!({"message": "401: Unauthorized", "code": 0}));
    }
    assert_eq!(bot(&fake, "GET", &path, None).await.status, 200);
    let headers = [("User-Agent", UA), ("Authorization", "Bot bot-token")];
    let r = http_request(fake.addr, "GET", &format!("/api{path}"), &headers, b"").await;
    assert_eq!(r.status, 404, "bot routes are versioned");
    assert_eq!(bot(&fake, "GET", "/guilds/1", None).await.status, 404);
    let r = bot(&fake, "DELETE", &path, None).await;
    assert_eq!((r.status, r.json()["code"].clone()), (405, json!(0)));
    let r = bot(&fake, "GET", "/channels/77", None).await;
    assert_eq!(code(&r), (404, json!(10003)));
    assert_eq!(fake.received().len(), 9);
    assert_eq!(
        fake.received()[4].header("authorization"),
        Some("Bot bot-token")
    );
}

#[tokio::test]
async fn bot_forum_posts_and_messages() {
    let fake = guild(50, Duration::from_secs(1)).await;
    let r = bot(&fake, "GET", &format!("/channels/{FORUM}"), None).await;
    assert_eq!(r.json()["type"], json!(GUILD_FORUM));
    let r = bot(&fake, "GET", &format!("/channels/{TEXT}"), None).await;
    assert_eq!(r.json()["type"], json!(GUILD_TEXT));

    let body = json!({"name": "Visitor A", "message": {"content": "first", "allowed_mentions": {"parse": []}}});
    let r = bot(
        &fake,
        "POST",
        &format!("/channels/{FORUM}/threads"),
        Some(body),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let thread = r.json();
    let tid = thread["id"].as_str().unwrap().to_string();
    assert_eq!(thread["type"], json!(PUBLIC_THREAD));
    assert_eq!(thread["parent_id"], FORUM);
    assert_eq!(thread["name"], "Visitor A");
    assert_eq!(thread["message"]["id"], json!(tid));
    assert_eq!(thread["message"]["channel_id"], json!(tid));
    assert_eq!(thread["message"]["author"]["bot"], true);

    let r = bot(&fake, "GET", &format!("/channels/{tid}"), None).await;
    let got = r.json();
    assert_eq!(got["parent_id"], FORUM);
    assert_eq!(
        got["thread_metadata"],
        json!({"archived": false, "locked": false, "auto_archive_duration": 4320})
    );
    let r = bot(
        &fake,
        "POST",
        &format!("/channels/{tid}/messages"),
        Some(json!({"content": "reply"})),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["channel_id"], json!(tid));
    assert!(r.json().get("webhook_id").is_none());
    let r = bot(
        &fake,
        "POST",
        &format!("/channels/{FORUM}/messages"),
        Some(json!({"content": "x"})),
    )
    .await;
    assert_eq!(code(&r), (400, json!(40058)));

    let r = bot(
        &fake,
        "POST",
        &format!("/channels/{FORUM}/threads"),
        Some(json!({"name": "no message"})),
    )
    .await;
    assert_eq!(code(&r), (400, json!(50035)));
    assert!(r.json()["errors"]["message"].is_object());
    let body = json!({"name": "x".repeat(101), "message": {"content": "x"}});
    let r = bot(
        &fake,
        "POST",
        &format!("/channels/{FORUM}/threads"),
        Some(body),
    )
    .await;
    assert_eq!(code(&r), (400, json!(50035)));
    let r = bot(
        &fake,
        "POST",
        &format!("/channels/{tid}/threads"),
        Some(json!({"name": "n"})),
    )
    .await;
    assert_eq!(code(&r), (400, json!(50024)));

    let t = fake.thread(&tid).unwrap();
    assert_eq!(
        t.messages.iter().map(|m| m.content()).collect::<Vec<_>>(),
        ["first", "reply"]
    );
    assert_eq!(
        t.messages[0].body,
        json!({"content": "first", "allowed_mentions": {"parse": []}})
    );
    assert_eq!(fake.threads().len(), 1);
}

#[tokio::test]
async fn bot_text_channel_threads() {
    let fake = guild(50, Duration::from_secs(1)).await;
    let r = bot(
        &fake,
        "POST",
        &format!("/channels/{TEXT}/messages"),
        Some(json!({"content": "visitor A"})),
    )
    .await;
    let mid = r.json()["id"].as_str().unwrap().to_string();
    let path = format!("/channels/{TEXT}/messages/{mid}/threads");
    let r = bot(&fake, "POST", &path, Some(json!({"name": "Visitor A"}))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["id"], json!(mid));
    assert_eq!(r.json()["parent_id"], TEXT);
    assert_eq!(r.json()["type"], json!(PUBLIC_THREAD));
    let r = bot(&fake, "POST", &path, Some(json!({"name": "again"}))).await;
    assert_eq!(code(&r), (400, json!(160004)));
    let r = bot(
        &fake,
        "POST",
        &format!("/channels/{TEXT}/messages/5/threads"),
        Some(json!({"name": "n"})),
    )
    .await;
    assert_eq!(code(&r), (404, json!(10008)));
    let r = bot(
        &fake,
        "POST",
        &format!("/channels/{FORUM}/messages/{mid}/threads"),
        Some(json!({"name": "n"})),
    )
    .await;
    assert_eq!(code(&r), (400, json!(50024)));
    let r = bot(
        &fake,
        "POST",
        &format!("/channels/{mid}/messages"),
        Some(json!({"content": "in thread"})),
    )
    .await;
    assert_eq!(r.json()["channel_id"], json!(mid));

    let r = bot(
        &fake,
        "POST",
        &format!("/channels/{TEXT}/threads"),
        Some(json!({"name": "private"})),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["type"].clone()),
        (201, json!(PRIVATE_THREAD))
    );
    let r = bot(
        &fake,
        "POST",
        &format!("/channels/{TEXT}/threads"),
        Some(json!({"name": "p", "type": 11})),
    )
    .await;
    assert_eq!(r.json()["type"], json!(PUBLIC_THREAD));
    let names: Vec<String> = fake.threads().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["Visitor A", "private", "p"]);
    assert_eq!(fake.messages_in(TEXT)[0].content(), "visitor A");
    assert_eq!(fake.messages_in(&mid)[0].content(), "in thread");
}

#[tokio::test]
async fn archive_lock_and_delete() {
    let fake = guild(50, Duration::from_secs(1)).await;
    let body = json!({"name": "A", "message": {"content": "a"}});
    let tid = bot(
        &fake,
        "POST",
        &format!("/channels/{FORUM}/threads"),
        Some(body),
    )
    .await
    .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let thread = format!("/channels/{tid}");
    let messages = format!("{thread}/messages");
    let msg = || Some(json!({"content": "m"}));

    let r = bot(&fake, "PATCH", &thread, Some(json!({"archived": true}))).await;
    assert_eq!(r.json()["thread_metadata"]["archived"], true);
    let r = bot(&fake, "PATCH", &thread, Some(json!({"locked": true}))).await;
    assert_eq!(
        code(&r),
        (400, json!(50083)),
        "an archived thread must be unarchived first"
    );
    let r = bot(
        &fake,
        "PATCH",
        &thread,
        Some(json!({"archived": false, "locked": true, "name": "A2"})),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["thread_metadata"],
        json!({"archived": false, "locked": true, "auto_archive_duration": 4320})
    );
    assert_eq!(r.json()["name"], "A2");
    let r = bot(&fake, "POST", &messages, msg()).await;
    assert_eq!(code(&r), (403, json!(160005)));
    assert_eq!(r.json()["message"], "Thread is locked");
    let r = hook(
        &fake,
        &format!("{FORUM_HOOK}?thread_id={tid}"),
        &json!({"content": "w"}),
    )
    .await;
    assert_eq!(code(&r), (403, json!(160005)));
    bot(&fake, "PATCH", &thread, Some(json!({"locked": false}))).await;
    assert_eq!(bot(&fake, "POST", &messages, msg()).await.status, 200);

    // Archived by the fake (inactivity): a post unarchives, webhook or bot.
    fake.archive_thread(&tid);
    assert!(fake.thread(&tid).unwrap().archived);
    let r = hook(
        &fake,
        &format!("{FORUM_HOOK}?thread_id={tid}"),
        &json!({"content": "w"}),
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(!fake.thread(&tid).unwrap().archived);
    fake.archive_thread(&tid);
    assert_eq!(bot(&fake, "POST", &messages, msg()).await.status, 200);
    assert!(!fake.thread(&tid).unwrap().archived);

    // Locked by the fake: both refused, nothing kept.
    fake.lock_thread(&tid);
    assert_eq!(bot(&fake, "POST", &messages, msg()).await.status, 403);
    let r = bot(&fake, "GET", &thread, None).await;
    assert_eq!(r.json()["thread_metadata"]["locked"], true);
    let kept = fake.messages_in(&tid).len();
    assert_eq!(kept, 4);

    // Deleted: everything 10003, the record keeps it flagged.
    fake.delete_thread(&tid);
    for (method, path, body) in [
        ("GET", &thread, None),
        ("PATCH", &thread, Some(json!({"archived": false}))),
        ("POST", &messages, msg()),
    ] {
        let r = bot(&fake, method, path, body).await;
        assert_eq!(code(&r), (404, json!(10003)), "{method} {path}");
    }
    let r = hook(
        &fake,
        &format!("{FORUM_HOOK}?wait=true&thread_id={tid}"),
        &json!({"content": "w"}),
    )
    .await;
    assert_eq!(code(&r), (404, json!(10003)));
    let t = fake.thread(&tid).unwrap();
    assert!(t.deleted && t.locked);
    assert_eq!(t.messages.len(), kept);
}
