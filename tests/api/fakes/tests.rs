//! The fakes' own tests: each kind answers like its destination (rate
//! windows, 429s, validation, `?wait=true`), programmed answers and delays
//! apply in order, and a dropped fake stops listening.

use serde_json::json;
use tokio::net::TcpStream;

use super::*;
use crate::raw_http::{http_post, http_request};

const HOOK: &str = "/api/webhooks/123456/fake-token";
const JSON: &str = "application/json";

fn msg(content: &str) -> String {
    json!({"content": content}).to_string()
}

#[tokio::test]
async fn discord_burst_over_quota_gets_429_with_retry_after() {
    let fake = FakeServer::discord(5, Duration::from_secs(2)).await;
    for i in 0..5 {
        let r = http_post(fake.addr, HOOK, JSON, &msg("hi")).await;
        let (status, body) = (r.status, r.text());
        assert_eq!(status, 204, "request {i}: {body}");
        assert!(body.is_empty());
        assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some((4 - i).to_string().as_str())
        );
        assert_eq!(r.header("x-ratelimit-bucket"), Some(DISCORD_BUCKET));
        let reset_after: f64 = r
            .header("x-ratelimit-reset-after")
            .unwrap()
            .parse()
            .unwrap();
        assert!((0.0..=2.0).contains(&reset_after), "{reset_after}");
        let reset = r.header("x-ratelimit-reset").unwrap();
        assert_eq!(reset.split('.').nth(1).map(str::len), Some(3), "{reset}");
    }
    let r = http_post(fake.addr, HOOK, JSON, &msg("hi")).await;
    let (status, body) = (r.status, r.text());
    assert_eq!(status, 429, "{body}");
    assert_eq!(r.header("content-type"), Some(JSON));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("x-ratelimit-scope"), Some("user"));
    assert!(r.header("x-ratelimit-reset").is_some());
    let retry_after_header: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after_header));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["message"], "You are being rate limited.");
    assert_eq!(v["global"], false);
    let retry_after = v["retry_after"].as_f64().unwrap();
    assert!(retry_after > 0.0 && retry_after <= 2.0, "{retry_after}");
    assert_eq!(fake.received().len(), 6);
    assert_eq!(fake.accepted().len(), 5);
    assert_eq!(fake.count_status(429), 1);
    // The versioned path shares the webhook's bucket.
    let status = http_post(
        fake.addr,
        "/api/v10/webhooks/123456/fake-token",
        JSON,
        &msg("hi"),
    )
    .await
    .status;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn discord_window_reopens_after_it_ends() {
    let fake = FakeServer::discord(1, Duration::from_millis(200)).await;
    assert_eq!(
        http_post(fake.addr, HOOK, JSON, &msg("a")).await.status,
        204
    );
    assert_eq!(
        http_post(fake.addr, HOOK, JSON, &msg("b")).await.status,
        429
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        http_post(fake.addr, HOOK, JSON, &msg("c")).await.status,
        204
    );
    let contents: Vec<Value> = fake
        .accepted()
        .iter()
        .map(|r| r.json()["content"].clone())
        .collect();
    assert_eq!(contents, vec![json!("a"), json!("c")]);
}

#[tokio::test]
async fn discord_wait_true_returns_the_message() {
    let fake = FakeServer::discord(50, Duration::from_secs(1)).await;
    let path = format!("{HOOK}?wait=true");
    let r = http_post(fake.addr, &path, JSON, &msg("first")).await;
    let (status, body) = (r.status, r.text());
    assert_eq!(status, 200);
    assert_eq!(r.header("content-type"), Some(JSON));
    let first: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(first["content"], "first");
    assert_eq!(first["channel_id"], "1");
    let body = http_post(fake.addr, &path, JSON, &msg("second"))
        .await
        .text();
    let second: Value = serde_json::from_str(&body).unwrap();
    let id = |v: &Value| v["id"].as_str().unwrap().parse::<u64>().unwrap();
    assert!(id(&second) > id(&first));
    // Embeds only: content "".
    let embed = json!({"embeds": [{"title": "t"}]}).to_string();
    let r = http_post(fake.addr, &path, JSON, &embed).await;
    let (status, body) = (r.status, r.text());
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["content"], "");

    let r = http_post(fake.addr, HOOK, JSON, &msg("x")).await;
    let (status, body) = (r.status, r.text());
    assert_eq!((status, body.as_str()), (204, ""));
    let r = fake.received();
    assert_eq!(r[0].query.as_deref(), Some("wait=true"));
    assert_eq!(r[0].query_param("wait").as_deref(), Some("true"));
    assert_eq!(r[3].query, None);
}

#[tokio::test]
async fn discord_validates_like_discord() {
    let fake = FakeServer::discord(50, Duration::from_secs(1)).await;
    let code = |body: &str| serde_json::from_str::<Value>(body).unwrap()["code"].clone();

    let r = http_post(fake.addr, HOOK, JSON, "{}").await;
    let (status, body) = (r.status, r.text());
    assert_eq!((status, code(&body)), (400, json!(50006)));
    let r = http_post(fake.addr, HOOK, JSON, &msg("  ")).await;
    let (status, body) = (r.status, r.text());
    assert_eq!((status, code(&body)), (400, json!(50006)));
    let r = http_post(fake.addr, HOOK, JSON, r#"{"content": "x", "embeds": []"#).await;
    let (status, body) = (r.status, r.text());
    assert_eq!((status, code(&body)), (400, json!(50109)));
    let r = http_post(fake.addr, HOOK, "text/plain", &msg("x")).await;
    let (status, body) = (r.status, r.text());
    assert_eq!((status, code(&body)), (400, json!(50035)));
    let r = http_post(fake.addr, HOOK, JSON, &msg(&"é".repeat(2001))).await;
    let (status, body) = (r.status, r.text());
    assert_eq!((status, code(&body)), (400, json!(50035)));
    let status = http_post(fake.addr, HOOK, JSON, &msg(&"é".repeat(2000)))
        .await
        .status;
    assert_eq!(status, 204);
    let r = http_post(fake.addr, "/api/webhooks/123456", JSON, &msg("x")).await;
    let (status, body) = (r.status, r.text());
    assert_eq!((status, code(&body)), (404, json!(10015)));
    let r = http_post(fake.addr, "/hooks/x", JSON, &msg("x")).await;
    let (status, body) = (r.status, r.text());
    assert_eq!((status, code(&body)), (404, json!(10015)));
    assert!(r.header("x-ratelimit-limit").is_some());
    let status = http_request(fake.addr, "GET", HOOK, &[], b"").await.status;
    assert_eq!(status, 405);
    let status = http_post(fake.addr, "/api/v10/webhooks/1/t?wait=1", JSON, &msg("ok"))
        .await
        .status;
    assert_eq!(status, 200);

    let statuses: Vec<u16> = fake.received().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [400, 400, 400, 400, 400, 204, 404, 404, 405, 200]);
    assert_eq!(fake.accepted().len(), 2);
}

#[tokio::test]
async fn programmed_failures_then_success() {
    let fake = FakeServer::discord(1, Duration::from_secs(60)).await;
    fake.fail_next(2, 503, "upstream down", &[("Retry-After", "3")]);
    let r = http_post(fake.addr, HOOK, JSON, &msg("a")).await;
    let (status, body) = (r.status, r.text());
    assert_eq!((status, body.as_str()), (503, "upstream down"));
    assert_eq!(r.header("retry-after"), Some("3"));
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    assert!(r.header("x-ratelimit-limit").is_none());
    assert_eq!(
        http_post(fake.addr, HOOK, JSON, &msg("a")).await.status,
        503
    );
    // Programmed answers did not use the quota of 1.
    assert_eq!(
        http_post(fake.addr, HOOK, JSON, &msg("a")).await.status,
        204
    );
    assert_eq!(fake.count_status(503), 2);
    assert_eq!(fake.accepted().len(), 1);
    assert_eq!(fake.received().len(), 3);
}

#[tokio::test]
async fn always_until_cleared() {
    let fake = FakeServer::discord(50, Duration::from_secs(1)).await;
    fake.always(404, r#"{"message": "Unknown Webhook", "code": 10015}"#);
    for _ in 0..3 {
        let r = http_post(fake.addr, HOOK, JSON, &msg("a")).await;
        let (status, body) = (r.status, r.text());
        assert_eq!(status, 404);
        assert_eq!(r.header("content-type"), Some(JSON));
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["code"], 10015);
    }
    // fail_next takes precedence over always.
    fake.fail_next(1, 500, "", &[]);
    assert_eq!(
        http_post(fake.addr, HOOK, JSON, &msg("a")).await.status,
        500
    );
    assert_eq!(
        http_post(fake.addr, HOOK, JSON, &msg("a")).await.status,
        404
    );
    fake.clear();
    assert_eq!(
        http_post(fake.addr, HOOK, JSON, &msg("a")).await.status,
        204
    );
    assert_eq!(fake.count_status(404), 4);
}

#[tokio::test]
async fn delay_slows_answers_and_wait_for_accepted_sees_them() {
    let fake = FakeServer::webhook().await;
    fake.set_delay(Duration::from_millis(300));
    let addr = fake.addr;
    let started = std::time::Instant::now();
    let client = tokio::spawn(async move { http_post(addr, "/x", JSON, "{}").await });
    let got = fake.wait_for_accepted(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].path, "/x");
    let status = client.await.unwrap().status;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
#[should_panic(expected = "expected 1 accepted requests")]
async fn wait_for_accepted_panics_after_timeout() {
    let fake = FakeServer::webhook().await;
    fake.wait_for_accepted(1, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn slack_like_answers() {
    let fake = FakeServer::slack(2, Duration::from_secs(2)).await;
    let path = "/services/T000/B000/fake-secret";
    assert_eq!(fake.slack_url(), fake.url(path));
    let text = json!({"text": "hello"}).to_string();
    let r = http_post(fake.addr, path, JSON, &text).await;
    let (status, body) = (r.status, r.text());
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let r = http_post(fake.addr, path, JSON, r#"{"text": ""}"#).await;
    let (status, body) = (r.status, r.text());
    assert_eq!((status, body.as_str()), (400, "no_text"));
    let r = http_post(fake.addr, path, JSON, &text).await;
    let (status, body) = (r.status, r.text());
    assert_eq!((status, body.as_str()), (429, "rate_limited"));
    let r = http_post(fake.addr, path, JSON, &text).await;
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");

    // Another webhook has its own window.
    let other = "/services/T000/B001/other";
    let blocks = json!({"blocks": [{"type": "section"}]}).to_string();
    assert_eq!(http_post(fake.addr, other, JSON, &blocks).await.status, 200);
    let r = http_post(fake.addr, other, JSON, "not json").await;
    let (status, body) = (r.status, r.text());
    assert_eq!((status, body.as_str()), (400, "invalid_payload"));
    let r = http_post(fake.addr, "/hooks/x", JSON, &text).await;
    let (status, body) = (r.status, r.text());
    assert_eq!((status, body.as_str()), (404, "no_service"));
    assert_eq!(fake.accepted().len(), 2);
    assert_eq!(fake.count_status(429), 2);
    assert_eq!(fake.received().len(), 7);
}

#[tokio::test]
async fn webhook_records_headers_and_body() {
    let fake = FakeServer::webhook().await;
    let body = br#"{"type": "message.send", "data": {"n": 1}}"#;
    let r = http_request(
        fake.addr,
        "PUT",
        "/in/hook?x=1&y=2",
        &[
            ("Content-Type", JSON),
            ("Webhook-Id", "msg_1"),
            ("Webhook-Signature", "v1,abc="),
        ],
        body,
    )
    .await;
    let (status, answer) = (r.status, r.text());
    assert_eq!((status, answer.as_str()), (200, "{}"));
    assert_eq!(r.header("content-type"), Some(JSON));
    let r = fake.wait_for_accepted(1, Duration::from_secs(1)).await;
    let r = &r[0];
    assert_eq!(r.method, "PUT");
    assert_eq!(r.path, "/in/hook");
    assert_eq!(r.query.as_deref(), Some("x=1&y=2"));
    assert_eq!(r.query_param("y").as_deref(), Some("2"));
    assert_eq!(r.header("webhook-id"), Some("msg_1"));
    assert_eq!(r.header("WEBHOOK-SIGNATURE"), Some("v1,abc="));
    assert_eq!(r.body, body);
    assert_eq!(r.json()["data"]["n"], 1);
    assert_eq!(r.status, 200);
    assert!(r.at <= Instant::now());

    fake.fail_next(1, 410, "", &[]);
    assert_eq!(
        http_post(fake.addr, "/in/hook", JSON, "{}").await.status,
        410
    );
    assert_eq!(fake.received().len(), 2);
    assert_eq!(fake.accepted().len(), 1);
}

#[tokio::test]
async fn dropping_the_server_stops_it() {
    let fake = FakeServer::webhook().await;
    let addr = fake.addr;
    assert_eq!(http_post(addr, "/", JSON, "{}").await.status, 200);
    drop(fake);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "still listening");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
