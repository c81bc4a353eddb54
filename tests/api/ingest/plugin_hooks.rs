//! Crisp Plugin Hooks: with `server.plugin_secret`, a request signed with
//! `X-Crisp-Signature` (hex HMAC-SHA256 over `[{timestamp};{body}]`, the
//! timestamp in seconds or milliseconds) is accepted without `?key=`; a
//! wrong, stale or missing signature gets 401 and stores nothing; Website
//! Hooks with `?key=` keep working.

use super::*;

const SECRET: &str = "plugin-signing-secret";

/// Signed as Crisp documents it, computed here apart from the relay's code.
fn signature(secret: &str, timestamp: &str, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("[{timestamp};{body}]").as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn post_signed(
    app: &TestApp,
    body: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
) -> u16 {
    let mut req = app
        .client
        .post(format!("http://{}/crisp/hooks", app.ingest))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = timestamp {
        req = req.header("X-Crisp-Request-Timestamp", t);
    }
    if let Some(s) = signature {
        req = req.header("X-Crisp-Signature", s);
    }
    req.send().await.unwrap().status().as_u16()
}

fn plugin_config() -> Workdir {
    let config = config_with(
        "targets:\n  console: {kind: stdout}\nroutes:\n  - name: all\n    to: [console]\n",
    )
    .replace(
        "  max_body: 64KiB\n",
        "  max_body: 64KiB\n  plugin_secret: \"${CRISP_PLUGIN_SECRET:-}\"\n",
    );
    Workdir::new(&config)
}

/// The seqs the console printed, in order.
fn printed(app: &TestApp) -> Vec<usize> {
    app.stdout()
        .lines()
        .filter(|l| l.contains("msg "))
        .map(seq_in)
        .collect()
}

#[tokio::test]
async fn signed_plugin_hooks_are_accepted_and_bad_signatures_refused() {
    let app = TestApp::spawn_in(plugin_config(), &[("CRISP_PLUGIN_SECRET", SECRET)]).await;
    let secs = (now_ms() / 1000).to_string();
    let ms = now_ms().to_string();
    let stale = (now_ms() / 1000 - 301).to_string();
    // What, seq, timestamp header, signing secret (if not SECRET), status.
    type Case<'a> = (&'a str, usize, Option<String>, Option<&'a str>, u16);
    let cases: Vec<Case> = vec![
        ("seconds", 1, Some(secs.clone()), None, 200),
        ("milliseconds", 2, Some(ms.clone()), None, 200),
        ("wrong secret", 3, Some(secs.clone()), Some("other"), 401),
        ("stale", 4, Some(stale.clone()), None, 401),
        ("no timestamp", 5, None, None, 401),
    ];
    for (what, seq, ts, secret, want) in cases {
        let body = message(seq);
        let signed_ts = ts.clone().unwrap_or_else(|| secs.clone());
        let sig = signature(secret.unwrap_or(SECRET), &signed_ts, &body);
        let got = post_signed(&app, &body, ts.as_deref(), Some(&sig)).await;
        assert_eq!(got, want, "{what}");
    }
    // A signature over another body.
    let sig = signature(SECRET, &secs, &message(6));
    assert_eq!(
        post_signed(&app, &message(7), Some(&secs), Some(&sig)).await,
        401
    );
    // Neither key nor signature.
    assert_eq!(post_signed(&app, &message(8), None, None).await, 401);
    // A Website Hook with its key still works.
    assert_eq!(app.post_event(message(9)).await.status(), 200);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while printed(&app).len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        printed(&app),
        vec![1, 2, 9],
        "only the signed and keyed events"
    );
    let logs = app.logs();
    assert!(logs.contains("the signature does not match"), "{logs}");
    assert!(logs.contains("more than 5 minutes"), "{logs}");
    assert!(!logs.contains(SECRET));
}

#[tokio::test]
async fn without_a_plugin_secret_a_signature_is_no_way_in() {
    let app = TestApp::spawn_in(plugin_config(), &[]).await;
    let secs = (now_ms() / 1000).to_string();
    let body = message(1);
    let sig = signature("", &secs, &body);
    assert_eq!(post_signed(&app, &body, Some(&secs), Some(&sig)).await, 401);
    let sig = signature(SECRET, &secs, &body);
    assert_eq!(post_signed(&app, &body, Some(&secs), Some(&sig)).await, 401);
}
