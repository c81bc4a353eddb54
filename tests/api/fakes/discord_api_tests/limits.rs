//! The thread fake's rate limits (per route and channel, per webhook,
//! global) and programmed answers with the record.

use serde_json::json;

use super::*;

#[tokio::test]
async fn rate_limit_buckets_per_route_channel_and_webhook() {
    let fake = guild(2, Duration::from_secs(2)).await;
    let post = format!("/channels/{TEXT}/messages");
    let msg = || Some(json!({"content": "m"}));
    let mut buckets = Vec::new();
    for remaining in ["1", "0"] {
        let r = bot(&fake, "POST", &post, msg()).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some(remaining));
        let after: f64 = r
            .header("x-ratelimit-reset-after")
            .unwrap()
            .parse()
            .unwrap();
        assert!((0.0..=2.0).contains(&after), "{after}");
        assert!(r.header("x-ratelimit-reset").is_some());
        buckets.push(r.header("x-ratelimit-bucket").unwrap().to_string());
    }
    assert_eq!(buckets[0].len(), 32);
    let r = bot(&fake, "POST", &post, msg()).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-ratelimit-scope"), Some("user"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert!(r.header("x-ratelimit-global").is_none());
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry));
    let v = r.json();
    assert_eq!(
        (v["message"].clone(), v["global"].clone()),
        (json!("You are being rate limited."), json!(false))
    );
    assert!(v["retry_after"].as_f64().unwrap() > 0.0);

    // Another channel (a thread), the same route: its own window, same bucket id.
    let tid = bot(
        &fake,
        "POST",
        &format!("/channels/{TEXT}/threads"),
        Some(json!({"name": "t"})),
    )
    .await
    .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = bot(&fake, "POST", &format!("/channels/{tid}/messages"), msg()).await;
    assert_eq!(
        (r.status, r.header("x-ratelimit-remaining")),
        (200, Some("1"))
    );
    assert_eq!(r.header("x-ratelimit-bucket"), Some(buckets[0].as_str()));
    // Another route on the same channel: another bucket.
    let r = bot(&fake, "GET", &format!("/channels/{TEXT}"), None).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.header("x-ratelimit-bucket"), Some(buckets[0].as_str()));
    // Refused requests count too.
    for expected in [404, 404, 429] {
        assert_eq!(
            bot(&fake, "GET", "/channels/5", None).await.status,
            expected
        );
    }

    // Webhooks: one window per webhook, versioned or not.
    let wait = format!("{TEXT_HOOK}?wait=true");
    assert_eq!(
        hook(&fake, &wait, &json!({"content": "1"})).await.status,
        200
    );
    assert_eq!(
        hook(&fake, &wait, &json!({"content": "2"})).await.status,
        200
    );
    let r = hook(
        &fake,
        "/api/v10/webhooks/800000000000000002/text-token",
        &json!({"content": "3"}),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-ratelimit-bucket"), Some(DISCORD_BUCKET));
    let r = hook(
        &fake,
        &format!("{FORUM_HOOK}?wait=true"),
        &json!({"content": "4", "thread_name": "n"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(fake.count_status(429), 3);

    // The window reopens.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(bot(&fake, "POST", &post, msg()).await.status, 200);
}

#[tokio::test]
async fn global_limit_per_token_and_for_webhooks() {
    let fake = guild(50, Duration::from_secs(1)).await;
    fake.set_global_limit(3, Duration::from_secs(2));
    for _ in 0..3 {
        assert_eq!(
            bot(&fake, "GET", &format!("/channels/{TEXT}"), None)
                .await
                .status,
            200
        );
    }
    let r = bot(&fake, "GET", &format!("/channels/{FORUM}"), None).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-ratelimit-global"), Some("true"));
    assert_eq!(r.header("x-ratelimit-scope"), Some("global"));
    assert!(r.header("x-ratelimit-bucket").is_none());
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry));
    assert_eq!(r.json()["global"], true);
    // A wrong token is refused before any limit.
    assert_eq!(
        bot_as(&fake, Some("Bot x"), "GET", "/channels/1", None)
            .await
            .status,
        401
    );
    // Webhooks share one key of their own (no Authorization).
    for expected in [204, 204, 204, 429] {
        assert_eq!(
            hook(&fake, TEXT_HOOK, &json!({"content": "x"}))
                .await
                .status,
            expected
        );
    }
}

#[tokio::test]
async fn programmed_failures_and_the_record() {
    let fake = guild(1, Duration::from_secs(60)).await;
    fake.fail_next_code(1, 500, 0, "boom");
    let path = format!("/channels/{TEXT}/messages");
    let r = bot(&fake, "POST", &path, Some(json!({"content": "a"}))).await;
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (500, json!("boom"))
    );
    assert!(r.header("x-ratelimit-limit").is_none());
    // The programmed answer did not use the window of 1.
    assert_eq!(
        bot(&fake, "POST", &path, Some(json!({"content": "b"})))
            .await
            .status,
        200
    );
    fake.always(503, "");
    assert_eq!(
        hook(&fake, TEXT_HOOK, &json!({"content": "c"}))
            .await
            .status,
        503
    );
    fake.clear();
    assert_eq!(
        hook(&fake, TEXT_HOOK, &json!({"content": "d"}))
            .await
            .status,
        204
    );

    let rec = fake.received();
    let statuses: Vec<u16> = rec.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 200, 503, 204]);
    assert_eq!(
        (rec[1].method.as_str(), rec[1].path.clone()),
        ("POST", format!("/api/v10{path}"))
    );
    assert_eq!(rec[1].json()["content"], "b");
    assert_eq!(rec[3].header("user-agent"), Some(UA));
    assert_eq!(
        fake.messages_in(TEXT).len(),
        2,
        "programmed answers keep nothing"
    );
}
