//! The Discord Gateway client (`crisp_relay::replies::discord::run`) against
//! the fake Gateway (`fakes::discord_gateway`): messages in order, resumes
//! that lose and double nothing, zombie connections, server requests
//! (op 1, 7, 9), fatal close codes with what to do, hostile payloads, and
//! a clean stop. Real sockets on the wall clock: heartbeats are short, and
//! nothing asserts on timings (the waits only bound a failure).

use std::time::Duration;

use crisp_relay::replies::discord::{
    GUILD_MESSAGES, GUILDS, GatewayConfig, GatewayEvent, MESSAGE_CONTENT, Message, run,
};
use crisp_relay::secret::Secret;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fakes::{FakeGateway, GATEWAY_BOT_USER_ID, PERSON_USER_ID};

const TOKEN: &str = "MTEwMDAwMDAwMDAwMDAwMDk5.fake.gateway-token-secret";
const INTENTS: u64 = GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT;
const THREAD: &str = "1200000000000000001";
/// Bounds every wait (a failure, never a timing under test).
const PATIENCE: Duration = Duration::from_secs(20);

struct Client {
    events: mpsc::Receiver<GatewayEvent>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

fn start(fake: &FakeGateway, token: &str) -> Client {
    start_with(fake, token, 16)
}

/// The client with a sink of `capacity` events.
fn start_with(fake: &FakeGateway, token: &str, capacity: usize) -> Client {
    let (tx, events) = mpsc::channel(capacity);
    let stop = CancellationToken::new();
    let cfg = GatewayConfig {
        token: Secret::new(token),
        api: fake.api(),
        intents: INTENTS,
    };
    let task = tokio::spawn(run(cfg, tx, stop.clone()));
    Client { events, stop, task }
}

impl Client {
    async fn next(&mut self) -> GatewayEvent {
        match tokio::time::timeout(PATIENCE, self.events.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("the client stopped"),
            Err(_) => panic!("no event within {PATIENCE:?}"),
        }
    }

    async fn expect(&mut self, want: GatewayEvent) {
        let got = self.next().await;
        assert_eq!(got, want);
    }

    async fn ready(&mut self) {
        self.expect(GatewayEvent::Ready {
            bot_user_id: Some(GATEWAY_BOT_USER_ID.into()),
        })
        .await;
    }

    async fn message(&mut self) -> Message {
        match self.next().await {
            GatewayEvent::Message(m) => *m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The events up to and including the message with id `last`.
    async fn until_message(&mut self, last: &str) -> Vec<GatewayEvent> {
        let mut seen = Vec::new();
        loop {
            let e = self.next().await;
            let done = matches!(&e, GatewayEvent::Message(m) if m.id == last);
            seen.push(e);
            if done {
                return seen;
            }
        }
    }

    /// Waits for the task to end by itself.
    async fn ended(self) {
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the client must stop by itself")
            .unwrap();
    }
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ids(events: &[GatewayEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            GatewayEvent::Message(m) => Some(m.id.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_in_order() {
    let fake = FakeGateway::start(TOKEN).await;
    let mut client = start(&fake, TOKEN);
    client.ready().await;

    let asked = fake.http.received();
    assert_eq!(asked.len(), 1, "one Get Gateway Bot");
    assert_eq!(asked[0].path, "/api/v10/gateway/bot");
    assert_eq!(
        asked[0].header("authorization"),
        Some(format!("Bot {TOKEN}").as_str())
    );
    assert!(
        asked[0]
            .header("user-agent")
            .unwrap()
            .starts_with("DiscordBot (")
    );
    let conns = fake.connections();
    assert_eq!(conns[0].path, "/?v=10&encoding=json");
    let identify = &fake.sent_op(2)[0].payload["d"];
    assert_eq!(identify["token"], TOKEN);
    assert_eq!(identify["intents"], INTENTS);

    fake.push_message("1300000000000000001", THREAD, "first");
    fake.dispatch(
        "TYPING_START",
        json!({"channel_id": THREAD, "user_id": PERSON_USER_ID}),
    );
    fake.dispatch(
        "MESSAGE_UPDATE",
        FakeGateway::message("1300000000000000001", THREAD, "edited"),
    );
    fake.push_message("1300000000000000002", THREAD, "second");
    let texts: Vec<String> = [client.message().await, client.message().await]
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(texts, ["first", "second"]);
    assert_eq!(fake.connections().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_gets_every_message_in_order() {
    let fake = FakeGateway::start(TOKEN).await;
    let mut client = start_with(&fake, TOKEN, 1);
    client.ready().await;
    let ids: Vec<String> = (0..60)
        .map(|i| format!("13000000000000001{i:02}"))
        .collect();
    let mut last = 0;
    for id in &ids {
        last = fake.push_message(id, THREAD, id);
    }
    // A heartbeat carrying the last `s` means the client has read them all
    // (most now wait in its queue, the sink being full).
    fake.request_heartbeat();
    eventually("a heartbeat after the messages", || {
        fake.sent_op(1).into_iter().find(|s| s.payload["d"] == last)
    })
    .await;
    let mut got = Vec::new();
    for _ in &ids {
        got.push(client.message().await.id);
    }
    assert_eq!(got, ids);
    assert_eq!(fake.connections().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_loses_nothing() {
    let fake = FakeGateway::start(TOKEN).await;
    fake.set_heartbeat_interval(Duration::from_millis(100));
    let mut client = start_with(&fake, TOKEN, 1);
    client.ready().await;
    // More than the client queues (256): it stops reading, so it misses the
    // heartbeat ACKs, leaves, and resumes once the queue has been taken.
    let ids: Vec<String> = (0..300)
        .map(|i| format!("1300000000000001{i:03}"))
        .collect();
    for id in &ids {
        fake.push_message(id, THREAD, "m");
    }
    eventually("the client to leave", || fake.connections()[0].client_close).await;
    let mut got = Vec::new();
    for _ in &ids {
        got.push(client.message().await.id);
    }
    assert_eq!(got, ids);
    assert!(!fake.sent_op(6).is_empty(), "resumed");
    assert_eq!(fake.sent_op(2).len(), 1, "no second IDENTIFY");
}

/// Drops (`close`: `None`) or closes the connection while a message is
/// posted; the client must resume the session on `resume_gateway_url` with
/// the last `s` it saw, get the missed message once, and go on.
async fn resumes_after(close: Option<u16>) {
    let fake = FakeGateway::start(TOKEN).await;
    let mut client = start(&fake, TOKEN);
    client.ready().await;
    let seen = fake.push_message("1300000000000000001", THREAD, "before");
    assert_eq!(client.message().await.content, "before");
    let session = fake.session_id().unwrap();

    fake.hold_new_connections(true);
    match close {
        Some(code) => fake.close(code),
        None => fake.drop_connections(),
    }
    eventually("the connection to end", || {
        (fake.open_connections() == 0).then_some(())
    })
    .await;
    fake.push_message("1300000000000000002", THREAD, "while away");
    fake.hold_new_connections(false);

    let resume = eventually("a RESUME", || fake.sent_op(6).into_iter().next()).await;
    assert_eq!(resume.payload["d"]["session_id"], session.as_str());
    assert_eq!(resume.payload["d"]["seq"], seen);
    assert_eq!(resume.payload["d"]["token"], TOKEN);
    assert_eq!(
        fake.connections()[resume.conn].path,
        "/resume?v=10&encoding=json"
    );

    fake.push_message("1300000000000000003", THREAD, "after");
    let events = client.until_message("1300000000000000003").await;
    assert_eq!(
        ids(&events),
        ["1300000000000000002", "1300000000000000003"],
        "{events:?}"
    );
    assert!(events.contains(&GatewayEvent::Resumed), "{events:?}");
    assert_eq!(fake.sent_op(2).len(), 1, "no second IDENTIFY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_resumed_and_nothing_is_lost_or_doubled() {
    resumes_after(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_with_4000_is_resumed_and_nothing_is_lost_or_doubled() {
    resumes_after(Some(4000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_heartbeat_acks_cause_a_reconnect() {
    let fake = FakeGateway::start(TOKEN).await;
    fake.set_heartbeat_interval(Duration::from_millis(100));
    fake.set_ack_heartbeats(false);
    let mut client = start(&fake, TOKEN);
    client.ready().await;
    let resume = eventually("a RESUME", || fake.sent_op(6).into_iter().next()).await;
    let first = &fake.connections()[0];
    let code = first
        .client_close
        .expect("the client closes the zombie connection");
    assert!(
        ![1000, 1001].contains(&code),
        "close {code} would end the session"
    );
    assert!(resume.conn > 0);
    // Unacknowledged: the client beat at most twice on the first connection.
    let beats = fake.sent_op(1).iter().filter(|s| s.conn == 0).count();
    assert!((1..=2).contains(&beats), "{beats} heartbeats");

    fake.set_ack_heartbeats(true);
    fake.push_message("1300000000000000001", THREAD, "still here");
    let events = client.until_message("1300000000000000001").await;
    assert_eq!(ids(&events), ["1300000000000000001"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_can_ask_for_a_heartbeat() {
    let fake = FakeGateway::start(TOKEN).await;
    // Long enough that the first (jittered) beat is very unlikely to come.
    fake.set_heartbeat_interval(Duration::from_secs(3600));
    let mut client = start(&fake, TOKEN);
    client.ready().await;
    let seq = fake.push_message("1300000000000000001", THREAD, "m");
    client.message().await;
    fake.request_heartbeat();
    // It carries the last `s` (a heartbeat sent before the message could not).
    eventually("a heartbeat with the last s", || {
        fake.sent_op(1).into_iter().find(|s| s.payload["d"] == seq)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_and_invalid_session_are_followed() {
    let fake = FakeGateway::start(TOKEN).await;
    let mut client = start(&fake, TOKEN);
    client.ready().await;

    // Op 7: reconnect and resume.
    fake.reconnect();
    client.expect(GatewayEvent::Resumed).await;
    // Op 9 d=true: resume.
    fake.invalid_session(true);
    client.expect(GatewayEvent::Resumed).await;
    assert_eq!(fake.sent_op(6).len(), 2);
    // Op 9 d=false: a new session.
    fake.invalid_session(false);
    client.ready().await;
    let identifies = fake.sent_op(2);
    assert_eq!(identifies.len(), 2);
    assert_eq!(fake.session_id().as_deref(), Some("fake-session-2"));
    let last = fake.connections().len() - 1;
    assert_eq!(identifies[1].conn, last);
    assert_eq!(
        fake.connections()[last].path,
        "/?v=10&encoding=json",
        "a new session starts on the Get Gateway Bot URL"
    );
    fake.push_message("1300000000000000001", THREAD, "new session");
    assert_eq!(client.message().await.content, "new session");
}

fn assert_fatal(event: GatewayEvent, needles: &[&str]) -> String {
    let GatewayEvent::Fatal(reason) = event else {
        panic!("expected Fatal, got {event:?}");
    };
    for n in needles {
        assert!(reason.contains(n), "{n:?} missing from {reason:?}");
    }
    assert!(
        !reason.contains(TOKEN) && !reason.contains("secret"),
        "{reason}"
    );
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disallowed_intents_are_fatal_and_say_what_to_enable() {
    let fake = FakeGateway::start(TOKEN).await;
    fake.disallow_intents(MESSAGE_CONTENT);
    let mut client = start(&fake, TOKEN);
    let event = client.next().await;
    assert_fatal(
        event,
        &["4014", "Message Content Intent", "Developer Portal"],
    );
    client.ended().await;
    assert_eq!(fake.connections().len(), 1, "no reconnect after 4014");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_fatal() {
    // The Gateway refuses it (4004).
    let fake = FakeGateway::start(TOKEN).await;
    fake.revoke_gateway_token();
    let mut client = start(&fake, TOKEN);
    assert_fatal(client.next().await, &["4004", "token"]);
    client.ended().await;
    assert_eq!(fake.connections().len(), 1, "no reconnect after 4004");

    // Get Gateway Bot refuses it (401): no connection at all.
    let fake = FakeGateway::start(TOKEN).await;
    let mut client = start(&fake, "wrong-token");
    assert_fatal(client.next().await, &["401", "token"]);
    client.ended().await;
    assert!(fake.connections().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_do_not_stop_the_client() {
    let fake = FakeGateway::start(TOKEN).await;
    let mut client = start(&fake, TOKEN);
    client.ready().await;
    for raw in [
        "not json",
        "",
        "[1, 2, 3]",
        r#"{"op": 42, "d": {"x": 1}}"#,
        r#"{"op": "0", "t": "MESSAGE_CREATE", "d": {}}"#,
        r#"{"op": 0, "s": "x", "t": "MESSAGE_CREATE", "d": {"id": 5}}"#,
        r#"{"op": 0, "t": "MESSAGE_CREATE", "d": null}"#,
        r#"{"op": 10, "d": {"heartbeat_interval": 1}}"#,
        r#"{"op": 11, "d": {"nested": [[[[[[[[]]]]]]]]}}"#,
    ] {
        fake.send_raw(raw);
    }
    fake.push_message("1300000000000000001", THREAD, "fine");
    let events = client.until_message("1300000000000000001").await;
    assert_eq!(ids(&events), ["1300000000000000001"]);
    assert_eq!(
        fake.connections().len(),
        1,
        "odd payloads are ignored, not fatal"
    );

    // Over the frame cap (16 MiB): the client drops the connection and
    // resumes; nothing is lost.
    fake.send_raw(&"x".repeat(16 * 1024 * 1024 + 1));
    fake.push_message("1300000000000000002", THREAD, "after the flood");
    let events = client.until_message("1300000000000000002").await;
    assert_eq!(ids(&events), ["1300000000000000002"]);
    assert!(fake.connections().len() >= 2);
    assert!(!fake.sent_op(6).is_empty(), "resumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_closes_the_session_and_ends_the_task() {
    let fake = FakeGateway::start(TOKEN).await;
    let mut client = start(&fake, TOKEN);
    client.ready().await;
    client.stop.cancel();
    let stop = client.stop.clone();
    client.ended().await;
    assert!(stop.is_cancelled());
    eventually("the close", || fake.connections()[0].client_close).await;
    assert_eq!(fake.connections()[0].client_close, Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_shows_in_debug_output() {
    let fake = FakeGateway::start(TOKEN).await;
    let cfg = GatewayConfig {
        token: Secret::new(TOKEN),
        api: fake.api(),
        intents: INTENTS,
    };
    let shown = format!("{cfg:?} {cfg:#?}");
    assert!(
        !shown.contains(TOKEN) && !shown.contains("secret"),
        "{shown}"
    );
    let req = crisp_relay::replies::discord::messages_after_request(
        &cfg.api, &cfg.token, THREAD, "1", "100",
    );
    let shown = format!("{req:?}");
    assert!(
        !shown.contains(TOKEN) && !shown.contains("secret"),
        "{shown}"
    );
    let mut client = start(&fake, TOKEN);
    client.ready().await;
    fake.push_message("1300000000000000001", THREAD, "m");
    let shown = format!("{:?}", client.next().await);
    assert!(!shown.contains(TOKEN), "{shown}");
}
