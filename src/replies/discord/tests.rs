use std::time::Duration;

use serde_json::{Value, json};

use super::protocol::{
    Action, Next, Proto, Session, close_action, gateway_bot_request, gateway_url,
};
use super::*;

fn msg(v: Value) -> Option<Message> {
    Message::from_json(&v)
}

fn person() -> Value {
    json!({
        "id": "1300000000000000010",
        "channel_id": "1200000000000000001",
        "guild_id": "1100000000000000001",
        "type": 0,
        "content": "Hello from the thread",
        "author": {"id": "1100000000000000042", "username": "ana", "global_name": "Ana B.", "avatar": "a_1269e74af4df7417b13759eae50c83dc"},
        "attachments": [
            {"id": "1", "filename": "shot.png", "url": "https://cdn.discordapp.com/attachments/1/2/shot.png", "content_type": "image/png", "size": 3},
            {"id": "2", "filename": "notes.txt", "url": "https://cdn.discordapp.com/attachments/1/3/notes.txt", "size": 4},
            {"id": "3", "url": "https://cdn.discordapp.com/attachments/1/4/x"},
        ],
    })
}

#[test]
fn from_json_reads_a_message() {
    let m = msg(person()).unwrap();
    assert_eq!(m.id, "1300000000000000010");
    assert_eq!(m.channel_id, "1200000000000000001");
    assert_eq!(m.guild_id.as_deref(), Some("1100000000000000001"));
    assert_eq!(m.content, "Hello from the thread");
    assert_eq!(m.kind, 0);
    assert_eq!(m.webhook_id, None);
    assert_eq!(
        m.author,
        Author {
            id: "1100000000000000042".into(),
            username: "ana".into(),
            global_name: Some("Ana B.".into()),
            avatar: Some("a_1269e74af4df7417b13759eae50c83dc".into()),
            bot: false,
        }
    );
    assert_eq!(
        m.attachments,
        vec![
            Attachment {
                filename: "shot.png".into(),
                url: "https://cdn.discordapp.com/attachments/1/2/shot.png".into(),
                content_type: Some("image/png".into()),
            },
            Attachment {
                filename: "notes.txt".into(),
                url: "https://cdn.discordapp.com/attachments/1/3/notes.txt".into(),
                content_type: None,
            },
        ]
    );
}

#[test]
fn from_json_table() {
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = person();
        f(&mut v);
        v
    };
    // (case, input, parsed?)
    let cases: Vec<(&str, Value, bool)> = vec![
        ("complete", person(), true),
        (
            "numeric ids",
            with(&|v| {
                v["id"] = json!(5);
                v["channel_id"] = json!(6);
                v["author"]["id"] = json!(7)
            }),
            true,
        ),
        (
            "no guild (REST)",
            with(&|v| {
                v.as_object_mut().unwrap().remove("guild_id");
            }),
            true,
        ),
        (
            "no content (no intent)",
            with(&|v| {
                v.as_object_mut().unwrap().remove("content");
            }),
            true,
        ),
        (
            "no id",
            with(&|v| {
                v.as_object_mut().unwrap().remove("id");
            }),
            false,
        ),
        ("empty id", with(&|v| v["id"] = json!("")), false),
        (
            "no channel",
            with(&|v| {
                v.as_object_mut().unwrap().remove("channel_id");
            }),
            false,
        ),
        (
            "no author",
            with(&|v| {
                v.as_object_mut().unwrap().remove("author");
            }),
            false,
        ),
        (
            "author without id",
            with(&|v| {
                v["author"].as_object_mut().unwrap().remove("id");
            }),
            false,
        ),
        (
            "no type",
            with(&|v| {
                v.as_object_mut().unwrap().remove("type");
            }),
            false,
        ),
        ("type as text", with(&|v| v["type"] = json!("0")), false),
        ("negative id", with(&|v| v["id"] = json!(-1)), false),
        (
            "attachments not a list",
            with(&|v| v["attachments"] = json!("x")),
            true,
        ),
        ("not an object", json!([1, 2]), false),
        ("null", Value::Null, false),
    ];
    for (case, input, parsed) in cases {
        assert_eq!(msg(input).is_some(), parsed, "{case}");
    }
    let m = msg(with(&|v| v["type"] = json!(300))).unwrap();
    assert_eq!(m.kind, u8::MAX, "a type above 254 is kept as 255");
    let m = msg(with(&|v| {
        v["author"]["global_name"] = json!("  ");
        v["author"]["avatar"] = Value::Null;
        v["attachments"] = json!("x");
    }))
    .unwrap();
    assert_eq!((m.author.global_name, m.author.avatar), (None, None));
    assert!(m.attachments.is_empty());
}

fn author(id: &str, avatar: Option<&str>, global: Option<&str>) -> Author {
    Author {
        id: id.into(),
        username: "ana".into(),
        global_name: global.map(str::to_owned),
        avatar: avatar.map(str::to_owned),
        bot: false,
    }
}

#[test]
fn avatar_url_table() {
    let cases = [
        (
            "42",
            Some("abc123"),
            Some("https://cdn.discordapp.com/avatars/42/abc123.png"),
        ),
        (
            "42",
            Some("a_1269e74af4df7417b13759eae50c83dc"),
            Some("https://cdn.discordapp.com/avatars/42/a_1269e74af4df7417b13759eae50c83dc.png"),
        ),
        ("42", None, None),
        ("42", Some(""), None),
        ("42", Some("../../x"), None),
        ("42", Some("abc?x=1"), None),
        ("4/2", Some("abc"), None),
        ("", Some("abc"), None),
    ];
    for (id, hash, want) in cases {
        assert_eq!(
            avatar_url(&author(id, hash, None)).as_deref(),
            want,
            "{id} {hash:?}"
        );
    }
}

#[test]
fn display_name_table() {
    assert_eq!(display_name(&author("1", None, Some("Ana B."))), "Ana B.");
    assert_eq!(display_name(&author("1", None, None)), "ana");
    // from_json drops blank display names, so the username shows.
    let mut v = person();
    v["author"]["global_name"] = json!("");
    assert_eq!(display_name(&msg(v).unwrap().author), "ana");
}

#[test]
fn is_person_table() {
    let base = msg(person()).unwrap();
    let with = |f: &dyn Fn(&mut Message)| {
        let mut m = base.clone();
        f(&mut m);
        m
    };
    let own = Some("1100000000000000099");
    let cases: Vec<(&str, Message, Option<&str>, bool)> = vec![
        ("a person's message", base.clone(), own, true),
        ("own id unknown", base.clone(), None, true),
        ("a reply (type 19)", with(&|m| m.kind = 19), own, true),
        ("a bot", with(&|m| m.author.bot = true), own, false),
        (
            "a webhook (the relay's posts)",
            with(&|m| m.webhook_id = Some("77".into())),
            own,
            false,
        ),
        (
            "the relay's bot",
            with(&|m| m.author.id = "1100000000000000099".into()),
            own,
            false,
        ),
        (
            "thread created notice (18)",
            with(&|m| m.kind = 18),
            own,
            false,
        ),
        ("thread starter (21)", with(&|m| m.kind = 21), own, false),
        ("pin notice (6)", with(&|m| m.kind = 6), own, false),
        ("slash command (20)", with(&|m| m.kind = 20), own, false),
        ("unknown type", with(&|m| m.kind = u8::MAX), own, false),
    ];
    for (case, m, own, want) in cases {
        assert_eq!(is_person(&m, own), want, "{case}");
    }
}

fn header(req: &crate::targets::OutgoingRequest, name: &str) -> String {
    req.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| match v {
            crate::targets::HeaderValue::Plain(s) => (*s).to_owned(),
            crate::targets::HeaderValue::Secret(s) => s.expose().to_owned(),
        })
        .unwrap_or_default()
}

#[test]
fn rest_requests() {
    let token = Secret::new("tok.EN-secret");
    let cases = [
        (
            "https://discord.com/api/v10",
            "https://discord.com/api/v10/channels/123/messages?after=456&limit=100",
        ),
        (
            "https://discord.com/api/v10/",
            "https://discord.com/api/v10/channels/123/messages?after=456&limit=100",
        ),
        (
            "http://127.0.0.1:9/api/v10",
            "http://127.0.0.1:9/api/v10/channels/123/messages?after=456&limit=100",
        ),
    ];
    for (api, want) in cases {
        let req =
            messages_after_request(&url::Url::parse(api).unwrap(), &token, "123", "456", "100");
        assert_eq!(req.method, "GET");
        assert_eq!(req.url.as_ref().unwrap().expose().as_str(), want);
        assert_eq!(header(&req, "authorization"), "Bot tok.EN-secret");
        assert!(header(&req, "user-agent").starts_with("DiscordBot ("));
        assert_eq!(req.body, Body::Text(String::new()));
        assert!(!format!("{req:?}").contains("secret"), "{req:?}");
    }
    // A channel id is one segment, whatever it holds.
    let req = messages_after_request(
        &url::Url::parse("https://d.test/api").unwrap(),
        &token,
        "1/../2",
        "3",
        "100",
    );
    assert_eq!(
        req.url.unwrap().expose().path(),
        "/api/channels/1%2F..%2F2/messages"
    );
    let req = gateway_bot_request(
        &url::Url::parse("https://discord.com/api/v10").unwrap(),
        &token,
    );
    assert_eq!(
        req.url.as_ref().unwrap().expose().as_str(),
        "https://discord.com/api/v10/gateway/bot"
    );
    assert_eq!(header(&req, "authorization"), "Bot tok.EN-secret");
    assert!(!format!("{req:?}").contains("secret"));
}

#[test]
fn parse_messages_table() {
    let m = |id: &str| json!({"id": id, "channel_id": "9", "type": 0, "author": {"id": "1", "username": "a"}, "content": id});
    let ids = |body: &str| {
        parse_messages(body)
            .into_iter()
            .map(|m| m.id)
            .collect::<Vec<_>>()
    };
    let newest_first = json!([
        m("1300000000000000012"),
        m("1300000000000000011"),
        m("999999999999999999")
    ]);
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "newest first → oldest first",
            newest_first.to_string(),
            vec![
                "999999999999999999",
                "1300000000000000011",
                "1300000000000000012",
            ],
        ),
        ("empty", "[]".into(), vec![]),
        (
            "items that are not messages skipped",
            json!([m("3"), {"id": "2"}, 7, m("1")]).to_string(),
            vec!["1", "3"],
        ),
        (
            "an error object",
            json!({"message": "Missing Access", "code": 50001}).to_string(),
            vec![],
        ),
        (
            "cut answer",
            newest_first.to_string()[..60].to_owned(),
            vec![],
        ),
        ("not JSON", "<html>".into(), vec![]),
    ];
    for (case, body, want) in cases {
        assert_eq!(ids(&body), want, "{case}");
    }
}

#[test]
fn close_codes() {
    let all = GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT;
    for code in [
        None,
        Some(1000),
        Some(1001),
        Some(1006),
        Some(4000),
        Some(4001),
        Some(4002),
        Some(4005),
        Some(4008),
        Some(4999),
    ] {
        assert_eq!(close_action(code, all), Next::Resume, "{code:?}");
    }
    for code in [4003, 4007, 4009] {
        assert_eq!(close_action(Some(code), all), Next::Identify, "{code}");
    }
    for code in [4004, 4010, 4011, 4012, 4013, 4014] {
        let Next::Fatal(reason) = close_action(Some(code), all) else {
            panic!("{code} must be fatal");
        };
        assert!(reason.contains(&code.to_string()), "{reason}");
    }
    let Next::Fatal(reason) = close_action(Some(4014), all) else {
        unreachable!()
    };
    assert!(
        reason.contains("Message Content Intent") && reason.contains("Developer Portal"),
        "{reason}"
    );
    let Next::Fatal(reason) = close_action(Some(4004), all) else {
        unreachable!()
    };
    assert!(reason.contains("token"), "{reason}");
}

#[test]
fn gateway_urls() {
    let cases = [
        (
            r#"{"url": "wss://gateway.discord.gg", "shards": 1}"#,
            Some("wss://gateway.discord.gg/?v=10&encoding=json"),
        ),
        (
            r#"{"url": "wss://gateway.discord.gg/?v=6#x"}"#,
            Some("wss://gateway.discord.gg/?v=10&encoding=json"),
        ),
        (
            r#"{"url": "ws://127.0.0.1:9"}"#,
            Some("ws://127.0.0.1:9/?v=10&encoding=json"),
        ),
        (r#"{"url": "https://gateway.discord.gg"}"#, None),
        (r#"{"url": "gateway.discord.gg"}"#, None),
        (r#"{"url": 5}"#, None),
        (r#"{"message": "401: Unauthorized", "code": 0}"#, None),
        ("not json", None),
    ];
    for (body, want) in cases {
        assert_eq!(
            gateway_url(body).as_ref().map(url::Url::as_str),
            want,
            "{body}"
        );
    }
}

fn text(v: Value) -> String {
    v.to_string()
}

#[test]
fn protocol_steps() {
    let mut p = Proto::default();
    let token = Secret::new("tok.EN-secret");
    // Before READY: IDENTIFY with the intents, heartbeats with null.
    let login = p.login(&token, 33281);
    assert_eq!(login["op"], 2);
    assert_eq!(login["d"]["token"], "tok.EN-secret");
    assert_eq!(login["d"]["intents"], 33281);
    assert_eq!(login["d"]["properties"]["browser"], "crisp-relay");
    assert_eq!(p.heartbeat(), json!({"op": 1, "d": null}));

    let steps: Vec<(Value, Action)> = vec![
        (
            json!({"op": 10, "d": {"heartbeat_interval": 41250}}),
            Action::Hello(Duration::from_millis(41250)),
        ),
        (
            json!({"op": 10, "d": {"heartbeat_interval": 0}}),
            Action::Hello(Duration::from_millis(50)),
        ),
        (
            json!({"op": 10, "d": {}}),
            Action::End(Next::Resume, Duration::ZERO),
        ),
        (json!({"op": 11}), Action::Ack),
        (json!({"op": 1, "d": null}), Action::Beat),
        (
            json!({"op": 0, "s": 1, "t": "READY", "d": {"session_id": "sess-1", "resume_gateway_url": "wss://resume.example", "user": {"id": "99", "bot": true}}}),
            Action::Up(GatewayEvent::Ready {
                bot_user_id: Some("99".into()),
            }),
        ),
        (
            json!({"op": 0, "s": 2, "t": "GUILD_CREATE", "d": {"id": "1"}}),
            Action::Nothing,
        ),
        (
            json!({"op": 0, "s": 3, "t": "MESSAGE_CREATE", "d": person()}),
            Action::Emit(GatewayEvent::Message(Box::new(msg(person()).unwrap()))),
        ),
        (
            json!({"op": 0, "s": 4, "t": "MESSAGE_CREATE", "d": {"id": "broken"}}),
            Action::Nothing,
        ),
        (
            json!({"op": 0, "s": 5, "t": "RESUMED", "d": null}),
            Action::Up(GatewayEvent::Resumed),
        ),
        (json!({"op": 42, "d": {"x": 1}}), Action::Nothing),
        (json!({"d": 1}), Action::Nothing),
        (json!([1, 2]), Action::Nothing),
        (
            json!({"op": 7, "d": null}),
            Action::End(Next::Resume, Duration::ZERO),
        ),
        (
            json!({"op": 9, "d": true}),
            Action::End(Next::Resume, Duration::ZERO),
        ),
    ];
    for (payload, want) in steps {
        assert_eq!(p.on_text(&text(payload.clone())), want, "{payload}");
    }
    assert_eq!(p.on_text("{not json"), Action::Nothing);
    assert_eq!(p.on_text(""), Action::Nothing);
    assert_eq!(
        p.session,
        Some(Session {
            id: "sess-1".into(),
            resume_url: Some(url::Url::parse("wss://resume.example/?v=10&encoding=json").unwrap()),
        })
    );
    // The last `s` seen, whatever its dispatch was.
    assert_eq!(p.seq, Some(5));
    assert_eq!(p.heartbeat(), json!({"op": 1, "d": 5}));
    assert_eq!(
        p.login(&token, 33281),
        json!({"op": 6, "d": {"token": "tok.EN-secret", "session_id": "sess-1", "seq": 5}})
    );
    // Op 9 false: identify anew after 1–5 s.
    let Action::End(Next::Identify, wait) = p.on_text(r#"{"op": 9, "d": false}"#) else {
        panic!("op 9 false must start a new session");
    };
    assert!(
        (Duration::from_secs(1)..=Duration::from_secs(5)).contains(&wait),
        "{wait:?}"
    );
    // Op 9 true without a session cannot resume.
    let mut fresh = Proto::default();
    assert!(matches!(
        fresh.on_text(r#"{"op": 9, "d": true}"#),
        Action::End(Next::Identify, _)
    ));
    // A READY with an unusable resume URL still makes a session.
    fresh.on_text(&text(json!({"op": 0, "s": 1, "t": "READY", "d": {"session_id": "s", "resume_gateway_url": "https://x"}})));
    assert_eq!(
        fresh.session.as_ref().map(|s| s.resume_url.is_none()),
        Some(true)
    );
}

#[test]
fn debug_shows_no_token() {
    let cfg = GatewayConfig {
        token: Secret::new("tok.EN-secret"),
        api: url::Url::parse("https://discord.com/api/v10").unwrap(),
        intents: GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT,
    };
    let shown = format!("{cfg:?} {cfg:#?}");
    assert!(!shown.contains("secret"), "{shown}");
    assert!(shown.contains("discord.com"), "{shown}");
}
