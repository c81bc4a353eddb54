//! Tables for `chat`: the request of each step on each kind of chat target,
//! what an answer says about the thread, and coalescing.

use super::*;
use crate::targets::Body;

fn target(yaml: &str) -> Target {
    let text = format!(
        "server: {{keys: [k]}}\ntargets:\n  t: {yaml}\nroutes:\n  - {{name: all, to: [t], template: x}}\n"
    );
    let cfg = crate::config::Config::parse(&text, "t.yaml", std::path::Path::new("."), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    cfg.targets[0].clone()
}

fn discord_forum_webhook() -> Target {
    target(
        "{kind: discord, url: \"https://discord.com/api/webhooks/1/tok\", threads: per_conversation}",
    )
}

fn discord_bot() -> Target {
    target(
        "{kind: discord, token: sekrit, channel: \"42\", threads: per_conversation, api_url: \"http://127.0.0.1:9/api/v10\"}",
    )
}

fn slack_bot() -> Target {
    target(
        "{kind: slack, token: xoxb-sekrit, channel: C0123, threads: per_conversation, api_url: \"http://127.0.0.1:9/api\"}",
    )
}

/// (method, url as shown, body, Authorization) of a request.
fn parts(r: &OutgoingRequest) -> (&'static str, String, Value, Option<String>) {
    let auth = r
        .headers
        .iter()
        .find(|(k, _)| k == "Authorization")
        .map(|(_, v)| match v {
            HeaderValue::Secret(s) => s.expose().to_owned(),
            HeaderValue::Plain(p) => (*p).to_owned(),
        });
    let body = match &r.body {
        Body::Json(v) => v.clone(),
        Body::Text(t) => Value::String(t.clone()),
    };
    (
        r.method,
        r.url.as_ref().unwrap().expose().to_string(),
        body,
        auth,
    )
}

#[test]
fn steps_on_a_discord_forum_webhook() {
    let t = discord_forum_webhook();
    let msg = json!({"content": "hi", "username": "Crisp"});
    let create = request(
        &t,
        msg.clone(),
        &Step::Create {
            name: "Ann · Chat".into(),
        },
        None,
    )
    .unwrap();
    let (m, url, body, auth) = parts(&create);
    assert_eq!(
        (m, url.as_str()),
        (
            "POST",
            "https://discord.com/api/v10/webhooks/1/tok?wait=true"
        )
    );
    assert_eq!(
        body,
        json!({"content": "hi", "username": "Crisp", "thread_name": "Ann · Chat"})
    );
    assert_eq!(auth, None);
    let reply = request(
        &t,
        msg,
        &Step::Reply {
            thread: "77".into(),
        },
        None,
    )
    .unwrap();
    let (_, url, body, _) = parts(&reply);
    assert_eq!(
        url,
        "https://discord.com/api/v10/webhooks/1/tok?wait=true&thread_id=77"
    );
    assert!(body.get("thread_name").is_none());
    // The token stays out of what is shown.
    assert!(!reply.url.as_ref().unwrap().redacted().contains("tok"));
    assert!(
        request(
            &t,
            json!({}),
            &Step::Archive {
                thread: "77".into()
            },
            None
        )
        .is_err()
    );
    assert_eq!(
        thread_of(
            &t,
            &Step::Create { name: "x".into() },
            r#"{"id":"77","channel_id":"77"}"#
        )
        .as_deref(),
        Some("77")
    );
}

#[test]
fn steps_of_a_discord_bot_in_a_forum_and_in_a_text_channel() {
    let t = discord_bot();
    let msg = json!({"content": "hi", "username": "Crisp", "avatar_url": "https://a/b.png"});
    let create = |kind| {
        request(
            &t,
            msg.clone(),
            &Step::Create { name: "Ann".into() },
            Some(kind),
        )
        .unwrap()
    };
    let (m, url, body, auth) = parts(&create(ChannelKind::Forum));
    assert_eq!(
        (m, url.as_str()),
        ("POST", "http://127.0.0.1:9/api/v10/channels/42/threads")
    );
    assert_eq!(body, json!({"name": "Ann", "message": {"content": "hi"}}));
    assert_eq!(auth.as_deref(), Some("Bot sekrit"));
    let (_, url, body, _) = parts(&create(ChannelKind::Text));
    assert_eq!(url, "http://127.0.0.1:9/api/v10/channels/42/messages");
    assert_eq!(body, json!({"content": "hi"}));
    assert!(request(&t, msg.clone(), &Step::Create { name: "Ann".into() }, None).is_err());
    let start = request(
        &t,
        Value::Null,
        &Step::StartThread {
            message: "900".into(),
            name: "Ann".into(),
        },
        Some(ChannelKind::Text),
    )
    .unwrap();
    let (m, url, body, _) = parts(&start);
    assert_eq!(
        (m, url.as_str()),
        (
            "POST",
            "http://127.0.0.1:9/api/v10/channels/42/messages/900/threads"
        )
    );
    assert_eq!(body, json!({"name": "Ann"}));
    let (_, url, _, _) = parts(
        &request(
            &t,
            msg.clone(),
            &Step::Reply {
                thread: "901".into(),
            },
            None,
        )
        .unwrap(),
    );
    assert_eq!(url, "http://127.0.0.1:9/api/v10/channels/901/messages");
    let (m, url, body, _) = parts(
        &request(
            &t,
            msg.clone(),
            &Step::Archive {
                thread: "901".into(),
            },
            None,
        )
        .unwrap(),
    );
    assert_eq!(
        (m, url.as_str(), body),
        (
            "PATCH",
            "http://127.0.0.1:9/api/v10/channels/901",
            json!({"archived": true})
        )
    );
    let (m, url, _, _) = parts(&channel_info(t.bot.as_ref().unwrap()));
    assert_eq!(
        (m, url.as_str()),
        ("GET", "http://127.0.0.1:9/api/v10/channels/42")
    );
    // The token never shows.
    assert!(!format!("{create:?}", create = create(ChannelKind::Forum)).contains("sekrit"));
    assert_eq!(
        ChannelKind::from_answer(r#"{"id":"42","type":15}"#),
        Some(ChannelKind::Forum)
    );
    assert_eq!(
        ChannelKind::from_answer(r#"{"id":"42","type":0}"#),
        Some(ChannelKind::Text)
    );
    assert_eq!(ChannelKind::from_answer(r#"{"id":"42","type":2}"#), None);
    let forum_post = r#"{"id":"901","type":11,"parent_id":"42"}"#;
    assert_eq!(
        thread_of(&t, &Step::Create { name: "x".into() }, forum_post).as_deref(),
        Some("901")
    );
}

#[test]
fn steps_of_a_slack_bot() {
    let t = slack_bot();
    let msg = json!({"text": "hi", "blocks": []});
    let (m, url, body, auth) =
        parts(&request(&t, msg.clone(), &Step::Create { name: "n".into() }, None).unwrap());
    assert_eq!(
        (m, url.as_str()),
        ("POST", "http://127.0.0.1:9/api/chat.postMessage")
    );
    assert_eq!(
        body,
        json!({"text": "hi", "blocks": [], "channel": "C0123"})
    );
    assert_eq!(auth.as_deref(), Some("Bearer xoxb-sekrit"));
    let (_, _, body, _) = parts(
        &request(
            &t,
            msg,
            &Step::Reply {
                thread: "1700.000100".into(),
            },
            None,
        )
        .unwrap(),
    );
    assert_eq!(body["thread_ts"], "1700.000100");
    let answer = r#"{"ok":true,"channel":"C0123","ts":"1700.000100"}"#;
    assert_eq!(
        thread_of(&t, &Step::Create { name: "n".into() }, answer).as_deref(),
        Some("1700.000100")
    );
    assert_eq!(
        thread_of(&t, &Step::Reply { thread: "x".into() }, answer),
        None
    );
}

#[test]
fn thread_names_are_one_short_line() {
    assert_eq!(thread_name("  Ann \n · Chat "), "Ann · Chat");
    assert_eq!(thread_name("   "), "Conversation");
    assert_eq!(text_len(&thread_name(&"é".repeat(300))), 100);
}

#[test]
fn a_continued_thread_says_so_first() {
    let d = continued(
        TargetKind::Discord,
        json!({"embeds": [{"description": "x"}]}),
    );
    assert_eq!(d["content"], CONTINUED);
    let d = continued(TargetKind::Discord, json!({"content": "hi"}));
    assert_eq!(d["content"], format!("{CONTINUED}\nhi"));
    let s = continued(
        TargetKind::Slack,
        json!({"text": "hi", "blocks": [{"type": "section"}]}),
    );
    assert!(s["text"].as_str().unwrap().starts_with(CONTINUED));
    assert_eq!(s["blocks"][0]["type"], "context");
}

#[test]
fn coalescing_table() {
    use TargetKind::*;
    let embed =
        |d: &str| json!({"embeds": [{"description": d}], "allowed_mentions": {"parse": []}});
    let cases: Vec<(TargetKind, Vec<Value>, usize)> = vec![
        (Discord, vec![embed("a"), embed("b"), embed("c")], 3),
        (
            Discord,
            (0..12).map(|i| embed(&i.to_string())).collect(),
            10,
        ),
        // 6,000 characters across embeds.
        (
            Discord,
            vec![embed(&"x".repeat(4000)), embed(&"y".repeat(4000))],
            1,
        ),
        (
            Discord,
            vec![json!({"content": "a"}), json!({"content": "b"})],
            2,
        ),
        (
            Discord,
            vec![
                json!({"content": "a".repeat(1500)}),
                json!({"content": "b".repeat(600)}),
            ],
            1,
        ),
        (
            Discord,
            vec![
                json!({"content": "a"}),
                json!({"content": "b", "components": []}),
            ],
            1,
        ),
        (
            Discord,
            vec![
                json!({"content": "a", "username": "x"}),
                json!({"content": "b", "username": "y"}),
            ],
            1,
        ),
        (Slack, vec![json!({"text": "a"}), json!({"text": "b"})], 2),
        (
            Slack,
            vec![
                json!({"text": "a", "blocks": [{"type": "divider"}]}),
                json!({"text": "b", "blocks": [{"type": "divider"}]}),
            ],
            2,
        ),
        (
            Slack,
            vec![
                json!({"text": "a", "blocks": [{"type": "divider"}]}),
                json!({"text": "b"}),
            ],
            1,
        ),
        (
            Slack,
            vec![
                json!({"text": "a", "blocks": vec![json!({"type": "divider"}); 30]}),
                json!({"text": "b", "blocks": vec![json!({"type": "divider"}); 30]}),
            ],
            1,
        ),
    ];
    for (kind, bodies, want) in cases {
        let (merged, taken) = coalesce(kind, &bodies);
        assert_eq!(taken, want, "{kind} {bodies:?}");
        if kind == Discord && taken > 1 && bodies[0].get("embeds").is_some() {
            let all: Vec<&Value> = bodies[..taken]
                .iter()
                .flat_map(|b| b["embeds"].as_array().unwrap())
                .collect();
            assert_eq!(
                merged["embeds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .collect::<Vec<_>>(),
                all,
                "in order"
            );
        }
    }
    let (merged, _) = coalesce(Slack, &[json!({"text": "a"}), json!({"text": "b"})]);
    assert_eq!(merged["text"], "a\nb");
}
