//! The console's Deliveries and Conversations pages and their API, against
//! the real binary: a webhook failing twice then accepting shows its three
//! attempts 500/500/200 in JSON and HTML, filters narrow the list, a bad
//! filter is a 400 naming the parameter, a hostile event's body is shown
//! escaped, and the webhook URL (a token in its path) is in no answer.

use std::time::Duration;

use serde_json::Value;

use crate::fakes::FakeServer;
use crate::helpers::*;

const TOKEN: &str = "console-history-token-8d2f4c6a1b9e";
/// The secret part of the webhook's URL.
const URL_SECRET: &str = "PATHSECRET7q3x9w";
const GUARD: Duration = Duration::from_secs(20);
const RETRY: &str = "max_attempts: 5, initial_backoff: 50ms, max_backoff: 100ms";

fn config(hook: &FakeServer, other: &FakeServer) -> String {
    config_with(&format!(
        "targets:\n  hook: {{kind: webhook, url: \"{}\", retry: {{{RETRY}}}}}\n  \
         other: {{kind: webhook, url: \"{}\", retry: {{{RETRY}}}}}\n\
         routes:\n  - name: all\n    to: [hook, other]\n",
        hook.url(&format!("/in/{URL_SECRET}")),
        other.url("/other")
    ))
    .replace(
        "admin:\n  listen: 127.0.0.1:0\n",
        "admin:\n  listen: 127.0.0.1:0\n  token: \"${CRISP_RELAY_ADMIN_TOKEN:-}\"\n",
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// GETs `path` with the bearer token: (status, body).
async fn get(app: &TestApp, path: &str, seen: &mut String) -> (u16, String) {
    let resp = client()
        .get(format!("http://{}{path}", app.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    seen.push_str(&text);
    (status, text)
}

async fn get_json(app: &TestApp, path: &str, seen: &mut String) -> (u16, Value) {
    let (status, text) = get(app, path, seen).await;
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, v)
}

/// The deliveries `query` lists, once there are `n` of them.
async fn wait_for(app: &TestApp, query: &str, n: usize, seen: &mut String) -> Vec<Value> {
    let deadline = std::time::Instant::now() + GUARD;
    loop {
        let (status, body) = get_json(app, &format!("/api/v1/deliveries{query}"), seen).await;
        assert_eq!(status, 200, "{body}");
        let rows = body["deliveries"].as_array().cloned().unwrap_or_default();
        if rows.len() >= n {
            return rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {n} deliveries for {query}, got {body}; logs:\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_show_attempts_filter_escape_and_keep_the_url_secret() {
    let hook = FakeServer::webhook().await;
    hook.fail_next(2, 500, "boom", &[]);
    let other = FakeServer::webhook().await;
    other.always(400, "bad request");
    let app = TestApp::spawn_in(
        Workdir::new(&config(&hook, &other)),
        &[("CRISP_RELAY_ADMIN_TOKEN", TOKEN)],
    )
    .await;
    let mut seen = String::new();
    assert_eq!(
        app.post_event(fixture("message_send_text_html.json"))
            .await
            .status(),
        200
    );
    let delivered = wait_for(&app, "?state=delivered", 1, &mut seen).await;
    let dead = wait_for(&app, "?state=dead", 1, &mut seen).await;

    // Filters narrow the list.
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["target"], "hook");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["target"], "other");
    let all = wait_for(&app, "", 2, &mut seen).await;
    assert_eq!(all.len(), 2, "{all:?}");
    let by_target = wait_for(&app, "?target=other", 1, &mut seen).await;
    assert_eq!(by_target.len(), 1);
    assert_eq!(by_target[0]["state"], "dead");
    let (_, none) = get_json(&app, "/api/v1/deliveries?target=hook&state=dead", &mut seen).await;
    assert_eq!(none["deliveries"], Value::Array(vec![]), "{none}");
    assert_eq!(none["next_before_id"], Value::Null);

    // Three attempts, 500/500/200, in JSON…
    let id = delivered[0]["id"].as_i64().unwrap();
    let (status, one) = get_json(&app, &format!("/api/v1/deliveries/{id}"), &mut seen).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["delivery"]["id"], id);
    assert_eq!(one["delivery"]["attempts"], 3);
    let statuses: Vec<(i64, i64, &str)> = one["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["attempt"].as_i64().unwrap(),
                a["status"].as_i64().unwrap(),
                a["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [(1, 500, "retry"), (2, 500, "retry"), (3, 200, "delivered")]
    );
    assert!(one.get("body").is_none(), "the body only when asked: {one}");
    assert!(one["attempts"][0]["at"].as_str().unwrap().ends_with('Z'));

    // … and in HTML.
    let (status, html) = get(&app, &format!("/ui/deliveries/{id}"), &mut seen).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(r#"<dl id="delivery">"#), "{html}");
    assert!(html.contains(r#"<table id="attempts">"#), "{html}");
    for (n, s, outcome) in [(1, 500, "retry"), (2, 500, "retry"), (3, 200, "delivered")] {
        let row = format!(
            r#"<tr data-attempt="{n}">
<th scope="row" class="attempt">{n}</th>"#
        );
        assert!(html.contains(&row), "no attempt {n} in {html}");
        let at = html.find(&row).unwrap();
        let rest = &html[at..];
        assert!(
            rest.contains(&format!(r#"<td class="status">{s}</td>"#)),
            "{rest}"
        );
        assert!(
            rest.contains(&format!(r#"<td class="outcome">{outcome}</td>"#)),
            "{rest}"
        );
    }
    assert!(!html.contains(r#"<pre id="event-body">"#), "{html}");
    assert!(
        html.contains(&format!(r#"href="/ui/deliveries/{id}?body=1""#)),
        "{html}"
    );

    // The list page.
    let (status, list) = get(&app, "/ui/deliveries?target=hook", &mut seen).await;
    assert_eq!(status, 200, "{list}");
    for want in [
        r#"<table id="deliveries">"#.to_owned(),
        format!(r#"<tr data-id="{id}" data-target="hook" data-state="delivered">"#),
        format!(r#"<a class="open" href="/ui/deliveries/{id}">"#),
        r#"<td class="attempts num">3</td>"#.into(),
        r#"<td class="last-status">200</td>"#.into(),
        r#"<li><a href="/ui/deliveries" aria-current="page">Deliveries</a></li>"#.into(),
        r#"<a href="/ui/conversations">Conversations</a>"#.into(),
    ] {
        assert!(list.contains(&want), "no {want} in:\n{list}");
    }
    assert!(!list.contains(r#"data-target="other""#), "{list}");

    // The hostile body, escaped, only with ?body=1.
    let (_, json_body) =
        get_json(&app, &format!("/api/v1/deliveries/{id}?body=1"), &mut seen).await;
    assert!(
        json_body["body"]
            .as_str()
            .unwrap()
            .contains("<script>alert('xss')"),
        "{json_body}"
    );
    let (status, html) = get(&app, &format!("/ui/deliveries/{id}?body=1"), &mut seen).await;
    assert_eq!(status, 200);
    assert!(html.contains(r#"<pre id="event-body">"#), "{html}");
    assert!(html.contains("&lt;script&gt;alert("), "{html}");
    assert!(!html.contains("<script>alert"), "{html}");
    // And what the target makes of it now (a webhook without a template
    // posts the event itself), escaped too; never the URL.
    let rendered = json_body["rendered"]
        .as_str()
        .unwrap_or_else(|| panic!("{json_body}"));
    assert!(rendered.contains("<script>alert('xss')"), "{rendered}");
    assert!(html.contains(r#"<pre id="rendered-body">"#), "{html}");

    // Bad parameters: 400 naming them.
    let (status, bad) = get_json(&app, "/api/v1/deliveries?state=done", &mut seen).await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["parameter"], "state", "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("`state`"), "{bad}");
    let (status, bad) = get_json(&app, "/api/v1/deliveries?since=yesterday", &mut seen).await;
    assert_eq!(
        (status, bad["parameter"].as_str()),
        (400, Some("since")),
        "{bad}"
    );
    let (status, html) = get(&app, "/ui/deliveries?state=done", &mut seen).await;
    assert_eq!(status, 400, "{html}");
    assert!(
        html.contains(r#"<p class="error" role="alert">Bad value for state: expected one of pending, delivered or dead.</p>"#),
        "{html}"
    );
    let (status, _) = get_json(&app, "/api/v1/deliveries/999999", &mut seen).await;
    assert_eq!(status, 404);

    // Conversations: no target uses threads.
    let (status, conv) = get_json(&app, "/api/v1/conversations", &mut seen).await;
    assert_eq!(
        (status, &conv["conversations"]),
        (200, &Value::Array(vec![])),
        "{conv}"
    );
    let (status, html) = get(&app, "/ui/conversations", &mut seen).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(r#"id="no-threads""#), "{html}");
    assert!(!html.contains(r#"<table id="conversations">"#), "{html}");

    // The webhook URL and its token are in no answer.
    assert!(!seen.is_empty());
    assert!(!seen.contains(URL_SECRET), "the URL's secret leaked");
    assert!(!seen.contains(&hook.url("/in")), "the URL leaked");
    assert!(!seen.contains(TOKEN), "the admin token leaked");
}

/// With `threads: per_conversation`, each Crisp conversation is listed with
/// the thread the destination gave it, in JSON and on the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_list_each_conversations_thread() {
    use crate::fakes::FakeDiscord;
    use crate::threads::{chat_config, conv_message, eventually};

    const FORUM: &str = "1200000000000000001";
    let fake = FakeDiscord::start("bot-token", 5, Duration::from_secs(2)).await;
    fake.add_forum_channel(FORUM);
    let url = fake.add_webhook("1300000000000000001", "hook-token", FORUM);
    let target = format!("{{kind: discord, url: \"{url}\", threads: per_conversation}}");
    let app = TestApp::spawn_in(chat_config(&target), &[]).await;
    for (seq, conv) in ["ann", "bob", "ann"].iter().enumerate() {
        assert_eq!(
            app.post_event(conv_message(conv, seq + 1)).await.status(),
            200
        );
    }
    eventually("two threads holding three messages", || {
        let threads = fake.threads();
        threads.len() == 2 && threads.iter().map(|t| t.messages.len()).sum::<usize>() == 3
    })
    .await;

    let body: Value = serde_json::from_str(
        &app.admin_get("/api/v1/conversations")
            .await
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let rows = body["conversations"]
        .as_array()
        .unwrap_or_else(|| panic!("no conversations list: {body}"));
    let mut got: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            assert_eq!(r["target"], "chat", "{r}");
            (
                r["session_id"].as_str().unwrap_or("").to_owned(),
                r["thread"].as_str().unwrap_or("").to_owned(),
                r["conversation"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    got.sort();
    let ids = |name: &str| -> String {
        fake.threads()
            .into_iter()
            .find(|t| t.name.starts_with(name))
            .map(|t| t.id)
            .unwrap_or_else(|| panic!("no thread for {name}"))
    };
    assert_eq!(
        got,
        vec![
            ("session_ann".into(), ids("ann"), "w1/session_ann".into()),
            ("session_bob".into(), ids("bob"), "w1/session_bob".into()),
        ],
        "{body}"
    );

    let html = app
        .admin_get("/ui/conversations")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains(r#"<table id="conversations">"#), "{html}");
    for conv in ["w1/session_ann", "w1/session_bob"] {
        assert!(
            html.contains(&format!(r#"data-conversation="{conv}""#)),
            "{conv} missing:\n{html}"
        );
    }
    assert!(html.contains(&ids("bob")), "{html}");
    assert!(
        !html.contains("hook-token"),
        "the webhook's token is shown:\n{html}"
    );
}
