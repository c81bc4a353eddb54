//! The web console and its JSON API on the admin listener, against the
//! real binary: what the pages and `/api/v1/` show while a destination
//! fails, dead letters listed and replayed, who may act (bearer token,
//! session cookie from the same origin, nothing on a foreign origin or
//! without `admin.token`), the security headers, escaping of hostile event
//! content, and the token staying out of every answer and log.

use std::time::Duration;

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use crate::fakes::FakeServer;
use crate::helpers::*;

const TOKEN: &str = "console-test-token-5f1e8a9b7c3d";
const GUARD: Duration = Duration::from_secs(20);

/// [`config_with`] with `admin.token` read from `CRISP_RELAY_ADMIN_TOKEN`
/// and the admin listener on `admin_listen`.
fn config_with_token(admin_listen: &str, extra: &str) -> String {
    config_with(extra).replace(
        "admin:\n  listen: 127.0.0.1:0\n",
        &format!("admin:\n  listen: {admin_listen}\n  token: \"${{CRISP_RELAY_ADMIN_TOKEN:-}}\"\n"),
    )
}

/// One webhook target `hook` (its URL holds a secret) that every event
/// goes to; `retry` is its retry policy.
fn hook_target(hook: &FakeServer, retry: &str) -> String {
    format!(
        "targets:\n  hook: {{kind: webhook, url: \"{}?token=URLSECRET\", retry: {{{retry}}}}}\n\
         routes:\n  - name: all\n    to: [hook]\n",
        hook.url("/in")
    )
}

/// Retried for long after the first failure: the rows stay queued.
const SLOW_RETRY: &str = "max_attempts: 50, initial_backoff: 60s, max_backoff: 120s";
/// A 4xx is dead-lettered at once anyway.
const FAST_RETRY: &str = "max_attempts: 3, initial_backoff: 50ms, max_backoff: 100ms";

async fn spawn(config: &str, token: Option<&str>) -> TestApp {
    let env: Vec<(&str, &str)> = token
        .map(|t| vec![("CRISP_RELAY_ADMIN_TOKEN", t)])
        .unwrap_or_default();
    TestApp::spawn_in(Workdir::new(config), &env).await
}

/// reqwest is built without its `json` and `form` features here.
trait Bodies: Sized {
    fn form_pairs<V: AsRef<str>>(self, pairs: &[(&str, V)]) -> Self;
    fn json_body(self, v: &Value) -> Self;
}

impl Bodies for reqwest::RequestBuilder {
    fn form_pairs<V: AsRef<str>>(self, pairs: &[(&str, V)]) -> Self {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k, v.as_ref());
        }
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(s.finish())
    }

    fn json_body(self, v: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(v.to_string())
    }
}

async fn json_of(r: reqwest::Response) -> Value {
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn url(app: &TestApp, path: &str) -> String {
    format!("http://{}{path}", app.admin)
}

#[track_caller]
fn assert_security_headers(h: &HeaderMap) {
    let csp = h
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(csp.contains("default-src 'none'"), "{h:?}");
    assert!(csp.contains("script-src 'self'"), "{h:?}");
    assert!(csp.contains("frame-ancestors 'none'"), "{h:?}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "same-origin");
    assert_eq!(h["cache-control"], "no-store");
}

async fn get_json(app: &TestApp, path: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut req = client().get(url(app, path));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await.unwrap();
    assert_security_headers(resp.headers());
    let status = resp.status().as_u16();
    (
        status,
        serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null),
    )
}

async fn wait_for_dead_letters(app: &TestApp, n: usize, bearer: Option<&str>) -> Vec<Value> {
    let deadline = std::time::Instant::now() + GUARD;
    loop {
        let (status, body) = get_json(app, "/api/v1/deadletters", bearer).await;
        assert_eq!(status, 200, "{body}");
        let rows = body["dead_letters"].as_array().cloned().unwrap_or_default();
        if rows.len() >= n {
            return rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {n} dead letters, got {body}; logs:\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_shows_the_queue_of_a_failing_target_in_html_and_json() {
    let hook = FakeServer::webhook().await;
    hook.always(503, "down for maintenance");
    let app = spawn(
        &config_with_token("127.0.0.1:0", &hook_target(&hook, SLOW_RETRY)),
        None,
    )
    .await;
    for i in 0..3 {
        assert_eq!(app.post_event(message(i)).await.status(), 200);
    }
    // Each event is tried (503, retried later): it stays queued.
    let deadline = std::time::Instant::now() + GUARD;
    let overview = loop {
        let (status, body) = get_json(&app, "/api/v1/overview", None).await;
        assert_eq!(status, 200, "{body}");
        let hook_row = body["targets"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["name"] == "hook").cloned())
            .unwrap_or_else(|| panic!("no target hook in {body}"));
        if hook_row["queue_depth"] == 3 && !hook.received().is_empty() {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let row = &overview["targets"][0];
    assert_eq!(row["kind"], "webhook", "{overview}");
    assert_eq!(row["state"], "running", "{overview}");
    assert!(row["oldest_age_ms"].as_i64().is_some(), "{overview}");
    let accepted = overview["ingest"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == "accepted")
        .unwrap();
    assert_eq!(accepted["count"], 3, "{overview}");
    assert_eq!(overview["store"]["engine"], "sqlite", "{overview}");

    let resp = client().get(url(&app, "/ui/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_security_headers(resp.headers());
    let html = resp.text().await.unwrap();
    for want in [
        r#"<table id="targets">"#,
        r#"<tr data-target="hook">"#,
        r#"<th scope="row">hook</th>"#,
        r#"<td class="queue-depth num">3</td>"#,
        r#"<dd data-ingest="accepted">3</dd>"#,
        r#"<dd data-ingest="rejected-unauthorized">0</dd>"#,
        r#"<dd data-store="engine">sqlite</dd>"#,
        r#"<meta name="viewport""#,
        r#"<script src="/ui/assets/console.js" defer></script>"#,
    ] {
        assert!(html.contains(want), "no {want} in:\n{html}");
    }
    // No inline script or style: the CSP would block them.
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(
        !html.contains("<style") && !html.contains("style="),
        "{html}"
    );
    assert!(
        !html.contains("URLSECRET") && !html.contains("127.0.0.1:"),
        "{html}"
    );

    for (path, ct) in [
        ("/ui/assets/console.js", "text/javascript"),
        ("/ui/assets/console.css", "text/css"),
    ] {
        let r = client().get(url(&app, path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_security_headers(r.headers());
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(ct)
        );
    }
    let js = client()
        .get(url(&app, "/ui/assets/console.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!js.contains("innerHTML"), "the script writes text only");

    // Unknown paths and wrong methods.
    let (status, body) = get_json(&app, "/api/v1/nope", None).await;
    assert_eq!((status, body["error"].is_string()), (404, true), "{body}");
    let r = client()
        .delete(url(&app, "/api/v1/overview"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    // The admin listener's own endpoints are unchanged.
    assert_eq!(app.admin_get("/healthz").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_listed_escaped_and_replayed_only_with_a_credential() {
    let hook = FakeServer::webhook().await;
    hook.always(400, "bad request");
    let app = spawn(
        &config_with_token("127.0.0.1:0", &hook_target(&hook, FAST_RETRY)),
        Some(TOKEN),
    )
    .await;
    let mut seen = String::new();
    assert_eq!(
        app.post_event(fixture("message_send_text_html.json"))
            .await
            .status(),
        200
    );
    let rows = wait_for_dead_letters(&app, 1, None).await;
    let id = rows[0]["id"].as_i64().unwrap();
    assert_eq!(rows[0]["target"], "hook");
    assert_eq!(rows[0]["event"], "message:send");
    assert_eq!(rows[0]["last_status"], 400);
    assert!(rows[0].get("body").is_none(), "the body only when asked");

    let (status, one) = get_json(&app, &format!("/api/v1/deadletters/{id}?body=1"), None).await;
    assert_eq!(status, 200, "{one}");
    assert!(
        one["body"]
            .as_str()
            .unwrap()
            .contains("<script>alert('xss')"),
        "{one}"
    );
    let (status, _) = get_json(&app, "/api/v1/deadletters/999999", None).await;
    assert_eq!(status, 404);

    // The list page: the row, its checkbox, the per-target form.
    let html = client()
        .get(url(&app, "/ui/deadletters"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    seen.push_str(&html);
    for want in [
        format!(r#"<tr data-id="{id}" data-target="hook">"#),
        format!(r#"<input type="checkbox" name="id" value="{id}""#),
        format!(r#"<a class="open" href="/ui/deadletters/{id}">"#),
        r#"<form id="replay-selected" method="post" action="/ui/deadletters/replay">"#.into(),
        r#"<form class="replay-target" method="post" action="/ui/deadletters/replay">"#.into(),
        r#"<input type="hidden" name="target" value="hook">"#.into(),
        r#"<td class="event">message:send</td>"#.into(),
        r#"href="/ui/deadletters/purge""#.into(),
    ] {
        assert!(html.contains(&want), "no {want} in:\n{html}");
    }

    // The detail page shows the hostile body as text.
    let resp = client()
        .get(url(&app, &format!("/ui/deadletters/{id}")))
        .send()
        .await
        .unwrap();
    assert_security_headers(resp.headers());
    let html = resp.text().await.unwrap();
    seen.push_str(&html);
    assert!(html.contains(r#"<pre id="event-body">"#), "{html}");
    assert!(html.contains("&lt;script&gt;alert("), "{html}");
    assert!(
        html.contains("&lt;img src&#x3D;x onerror&#x3D;alert(1)&gt;")
            || html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(!html.contains("<img src"), "{html}");
    assert!(html.contains(&format!(
        r#"<form id="replay" method="post" action="/ui/deadletters/{id}/replay">"#
    )));
    assert!(html.contains(r#"<dl id="deadletter">"#));

    // Without a credential, and with a wrong one, nothing is replayed.
    hook.clear();
    let replay = |body: Value| {
        client()
            .post(url(&app, "/api/v1/deadletters/replay"))
            .json_body(&body)
    };
    let r = replay(json!({"ids": [id]})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = replay(json!({"ids": [id]}))
        .bearer_auth("not-the-token-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .post(url(&app, "/ui/deadletters/replay"))
        .form_pairs(&[("id", id.to_string())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"<p class="error">"#), "{page}");
    // A bad body is refused precisely.
    let r = client()
        .post(url(&app, "/api/v1/deadletters/replay"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"ids": [1], "al": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e = r.text().await.unwrap();
    assert!(e.contains("unknown field `al`"), "{e}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hook.received().iter().all(|r| r.status == 400));
    assert_eq!(wait_for_dead_letters(&app, 1, None).await.len(), 1);

    // With the bearer token: replayed and delivered.
    let r = replay(json!({"ids": [id]}))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = json_of(r).await;
    assert_eq!(body, json!({"replayed": 1}));
    hook.wait_for_accepted(1, GUARD).await;
    let (_, list) = get_json(&app, "/api/v1/deadletters", None).await;
    assert_eq!(list["dead_letters"], json!([]));

    // Purge through the API (nothing left), and the token is nowhere.
    let r = client()
        .post(url(&app, "/api/v1/deadletters/purge"))
        .bearer_auth(TOKEN)
        .json_body(&json!({"older_than": "7d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r).await, json!({"purged": 0}));
    let (_, config) = get_json(&app, "/api/v1/config", Some(TOKEN)).await;
    seen.push_str(&config.to_string());
    assert_eq!(config["token_configured"], true, "{config}");
    assert!(!seen.contains(TOKEN) && !seen.contains("URLSECRET"));
    assert!(!app.logs().contains(TOKEN), "{}", app.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_a_session_that_acts_only_from_the_same_origin() {
    let app = spawn(&config_with_token("127.0.0.1:0", ""), Some(TOKEN)).await;
    let login = client().get(url(&app, "/ui/login")).send().await.unwrap();
    assert_eq!(login.status(), 200);
    assert_security_headers(login.headers());
    let html = login.text().await.unwrap();
    assert!(html.contains(r#"name="token""#), "{html}");

    let wrong = client()
        .post(url(&app, "/ui/login"))
        .form_pairs(&[("token", "console-test-token-wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get(SET_COOKIE).is_none());

    let right = client()
        .post(url(&app, "/ui/login"))
        .header("origin", format!("http://{}", app.admin))
        .form_pairs(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 303);
    assert_eq!(right.headers()[LOCATION], "/ui/");
    let set = right.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for part in [
        "crisp_relay_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains(TOKEN), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();

    let same_origin = format!("http://{}", app.admin);
    let post = |path: &str, origin: Option<&str>| {
        let mut r = client()
            .post(url(&app, path))
            .header("cookie", &cookie)
            .form_pairs(&[("older_than", "all")]);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r
    };
    // Foreign origin, or none: refused as CSRF.
    for origin in [Some("https://evil.example"), Some("null"), None] {
        let r = post("/ui/deadletters/purge", origin).send().await.unwrap();
        assert_eq!(r.status(), 403, "{origin:?}");
        assert_security_headers(r.headers());
    }
    let r = post("/api/v1/reload", Some("https://evil.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("error"));
    // Same origin: done, with a flash message after the redirect.
    let r = post("/ui/deadletters/purge", Some(&same_origin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let to = r.headers()[LOCATION].to_str().unwrap().to_owned();
    assert_eq!(to, "/ui/deadletters?done=purged&n=0");
    let page = client()
        .get(url(&app, &to))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"<p class="flash" role="status">Purged 0 dead letters.</p>"#),
        "{page}"
    );
    let r = client()
        .post(url(&app, "/ui/deadletters/purge"))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "same-origin")
        .form_pairs(&[("older_than", "7d")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    // Reload from the config page; a forged cookie does nothing.
    let r = post("/ui/reload", Some(&same_origin)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/ui/config?done=reloaded");
    let forged = client()
        .post(url(&app, "/ui/reload"))
        .header("cookie", "crisp_relay_session=1.deadbeef")
        .header("origin", &same_origin)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    // Logging out clears the cookie.
    let out = post("/ui/logout", Some(&same_origin)).send().await.unwrap();
    assert_eq!(out.status(), 303);
    assert!(
        out.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert!(!app.logs().contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_console_reads_but_refuses_actions() {
    let app = spawn(&config_with_token("127.0.0.1:0", ""), None).await;
    let r = client().get(url(&app, "/ui/config")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains(r#"<form id="reload" method="post" action="/ui/reload">"#),
        "{html}"
    );
    for path in ["/api/v1/reload", "/api/v1/deadletters/purge"] {
        let r = client()
            .post(url(&app, path))
            .bearer_auth("anything-at-all-123456")
            .header("origin", format!("http://{}", app.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let e: Value = json_of(r).await;
        assert!(e["error"].as_str().unwrap().contains("admin.token"), "{e}");
    }
    let r = client()
        .post(url(&app, "/ui/reload"))
        .header("origin", format!("http://{}", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("openssl rand -hex 32"));
    // POST /-/reload keeps today's behaviour.
    let r = client().post(url(&app, "/-/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_every_read_needs_a_credential() {
    let app = spawn(&config_with_token("0.0.0.0:0", ""), Some(TOKEN)).await;
    let app_port = app.admin.port();
    let at = |path: &str| format!("http://127.0.0.1:{app_port}{path}");
    let r = client().get(at("/ui/")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/ui/login");
    assert_security_headers(r.headers());
    let r = client().get(at("/api/v1/overview")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client().get(at("/ui/login")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(at("/api/v1/overview"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Health, readiness and metrics are unchanged.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = client().get(at(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[test]
fn a_short_admin_token_is_refused_without_being_repeated() {
    let work = Workdir::new(&config_with_token(
        "127.0.0.1:0",
        "targets:\n  console: {kind: stdout}\nroutes:\n  - name: all\n    to: [console]\n",
    ));
    let out = work.run_with_env(&["check"], &[("CRISP_RELAY_ADMIN_TOKEN", "short-s3cret")]);
    assert_eq!(out.status.code(), Some(2));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("relay.yaml:8:"), "{text}");
    assert!(text.contains("admin.token is 12 characters long"), "{text}");
    assert!(text.contains("openssl rand -hex 32"), "{text}");
    assert!(!text.contains("short-s3cret"), "{text}");
    let ok = work.run_with_env(&["check"], &[("CRISP_RELAY_ADMIN_TOKEN", TOKEN)]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// `rate-wait`: the wait the worker is in for the target's quota (the
/// retry delay after a 429 is the row's own schedule, not shown here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_and_metrics_show_the_rate_limit_wait_the_worker_is_in() {
    let hook = FakeServer::webhook().await;
    // One request a minute: the second event waits in the rate limiter.
    let config = config_with_token("127.0.0.1:0", &hook_target(&hook, SLOW_RETRY))
        .replace("retry: {", "rate_limit: {requests: 1, per: 60s}, retry: {");
    let app = spawn(&config, None).await;
    for i in 1..=2 {
        assert_eq!(app.post_event(message(i)).await.status(), 200);
    }
    let deadline = std::time::Instant::now() + GUARD;
    let wait = loop {
        let (status, body) = get_json(&app, "/api/v1/overview", None).await;
        assert_eq!(status, 200, "{body}");
        let wait = body["targets"][0]["rate_wait"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if wait != "—" && !wait.is_empty() {
            break wait;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no rate-limit wait shown: {body}\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The wait as it began: about the minute the quota spaces sends by.
    assert!(wait.ends_with(" s") && !wait.contains(" h"), "{wait}");
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    let secs = metric(
        &metrics,
        "crisp_relay_rate_limit_wait_seconds{target=\"hook\"}",
    )
    .unwrap_or_else(|| panic!("no rate_limit_wait_seconds for hook:\n{metrics}"));
    assert!((30.0..=62.0).contains(&secs), "{secs}");
    assert_eq!(hook.received().len(), 1, "the second waits for the quota");
}
