//! The delivery worker's timing on tokio's paused clock: backoff, server
//! hints and rate-limit headers are honoured to the millisecond, with no
//! wall-clock waiting. The real store (SQLite) and the real renderer run;
//! only the network is replaced by a scripted destination.
//!
//! Setup runs on the real clock (opening SQLite, storing the events), then
//! time is paused and the worker starts. From then on nothing holds a timer
//! but the worker itself, so the clock moves only while the worker sleeps:
//! the virtual time of each send is exact.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crisp_relay::Relay;
use crisp_relay::clock::Clock;
use crisp_relay::delivery::classify::{Answer, TransportError};
use crisp_relay::delivery::limiter::Limiters;
use crisp_relay::delivery::transport::{SendFuture, Transport};
use crisp_relay::delivery::{Context, Engine, TargetStates, backoff};
use crisp_relay::event::Event;
use crisp_relay::model::RetryPolicy;
use crisp_relay::store::{NewEvent, Op, SqliteStore};
use crisp_relay::targets::{Body, OutgoingRequest};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

/// A destination that answers from a script (then 200) and reports each send.
struct Scripted {
    script: Mutex<VecDeque<Result<Answer, TransportError>>>,
    sent: mpsc::UnboundedSender<(Instant, Value)>,
}

impl Transport for Scripted {
    fn send<'a>(&'a self, req: &'a OutgoingRequest, _timeout: Duration) -> SendFuture<'a> {
        let body = match &req.body {
            Body::Json(v) => v.clone(),
            Body::Text(t) => Value::String(t.clone()),
        };
        let _ = self.sent.send((Instant::now(), body));
        let next = self.script.lock().unwrap().pop_front();
        Box::pin(async move { next.unwrap_or_else(|| Ok(answer(200, &[], "{}"))) })
    }
}

fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
    Answer::new(status, headers, body)
}

struct Rig {
    _work: Workdir,
    clock: Clock,
    store: SqliteStore,
    relay: Arc<Relay>,
    sent: mpsc::UnboundedReceiver<(Instant, Value)>,
    stop: CancellationToken,
    transport: Arc<Scripted>,
    engine: Option<Engine>,
}

const SEED: u64 = 42;

/// One webhook target (no quota unless `target_extra` sets one), a route
/// sending everything to it with a template that shows the message text.
async fn rig(target_extra: &str, script: Vec<Result<Answer, TransportError>>) -> Rig {
    let config = config_with(&format!(
        "targets:\n  hook: {{kind: webhook, url: \"http://127.0.0.1:9/hook\"{target_extra}}}\n\
         routes:\n  - name: all\n    to: [hook]\n    template: seq\n"
    ));
    let work = Workdir::new(&config);
    work.write(
        "templates/seq.webhook.json.hbs",
        r#"{"seq": "{{data.content}}"}"#,
    );
    let relay = Relay::load_with_env(&work.config_path(), &|k| {
        (k == "CRISP_HOOK_KEY").then(|| KEY.to_owned())
    })
    .unwrap();
    let relay = Arc::new(relay);
    // One clock for the store and the worker, as in the relay.
    let clock = Clock::system();
    let store = SqliteStore::open(&work.path().join("data/relay.db"), 64, clock)
        .await
        .unwrap();
    // Warm the read pool on the real clock.
    store.next_pending("hook").await.unwrap();
    store.next_pending("hook").await.unwrap();

    tokio::time::pause();
    let (tx, rx) = mpsc::unbounded_channel();
    let transport = Arc::new(Scripted {
        script: Mutex::new(script.into()),
        sent: tx,
    });
    let stop = CancellationToken::new();
    Rig {
        _work: work,
        clock,
        store,
        relay,
        sent: rx,
        stop,
        transport,
        engine: None,
    }
}

impl Rig {
    /// Accepts events whose `data.content` is `seq`, as ingest would.
    async fn post(&self, seqs: &[&str]) {
        for seq in seqs {
            let body = format!(
                r#"{{"website_id":"w","event":"message:send","data":{{"content":"{seq}"}},"timestamp":1}}"#
            );
            let event = Event::parse(body.as_bytes(), 1).unwrap();
            let deliveries = self.relay.plan(&event);
            let new = NewEvent {
                received_at_ms: 1,
                website_id: "w".into(),
                name: event.name().into(),
                timestamp_ms: 1,
                body,
                conversation: None,
                dedupe: None,
            };
            self.store.accept(new, deliveries).await.unwrap();
        }
    }

    /// Starts the worker, after the events are stored: an idle worker holds
    /// a poll timer, which the paused clock would jump to while the store
    /// does I/O. Returns the start time.
    fn start(&mut self) -> Instant {
        let shared = Arc::new(Context {
            relay: self.relay.clone(),
            store: Arc::new(self.store.clone()),
            transport: self.transport.clone(),
            clock: self.clock,
            seed: Some(SEED),
            metrics: Arc::new(crisp_relay::metrics::Metrics::new()),
            limiters: Limiters::default(),
            states: TargetStates::default(),
        });
        self.engine = Some(Engine::start(
            shared,
            self.stop.clone(),
            CancellationToken::new(),
        ));
        Instant::now()
    }

    /// The next `n` sends: (milliseconds since `t0`, the `seq` sent).
    async fn sends(&mut self, n: usize, t0: Instant) -> Vec<(u128, String)> {
        let mut out = Vec::new();
        for _ in 0..n {
            let (at, body) = self.sent.recv().await.expect("worker stopped");
            out.push((
                (at - t0).as_millis(),
                body["seq"].as_str().unwrap_or("").to_owned(),
            ));
        }
        out
    }

    /// Stops the worker; its last results are committed when this returns.
    /// The clock runs again from here: a store read on the paused clock can
    /// wait on the read pool (a connection on its way back from the worker)
    /// while the runtime, idle, jumps to the pool's 30 s acquire timeout.
    async fn stop_worker(&mut self) {
        self.stop.cancel();
        if let Some(e) = self.engine.take() {
            e.join().await;
            tokio::time::resume();
        }
    }

    async fn finish(mut self) {
        self.stop_worker().await;
        self.store.close().await;
    }
}

/// Checks sends against expectations: same order and payloads, and each gap
/// between consecutive sends equal to the expected gap or at most 1 ms
/// longer (tokio's timers have millisecond granularity and round up).
#[track_caller]
fn assert_sends(got: &[(u128, String)], want: &[(u128, &str)]) {
    let seqs: Vec<&str> = got.iter().map(|s| s.1.as_str()).collect();
    let want_seqs: Vec<&str> = want.iter().map(|s| s.1).collect();
    assert_eq!(seqs, want_seqs, "order: {got:?}");
    for i in 1..got.len() {
        let gap = got[i].0 - got[i - 1].0;
        let want_gap = want[i].0 - want[i - 1].0;
        assert!(
            gap == want_gap || (want_gap > 0 && gap == want_gap + 1),
            "gap {i}: {gap} ms, want {want_gap} ms; got {got:?}, want {want:?}"
        );
    }
    assert_eq!(got.first().map(|s| s.0), Some(0), "{got:?}");
}

fn retry_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 10,
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(60),
        max_age: Duration::from_secs(86_400),
    }
}

#[tokio::test]
async fn a_failing_destination_is_retried_with_backoff_in_order_and_nothing_is_lost() {
    let failures = 5;
    let script = (0..failures)
        .map(|_| Ok(answer(503, &[], "unavailable")))
        .collect();
    let mut rig = rig(
        ", retry: {initial_backoff: 1s, max_backoff: 60s, max_attempts: 10}",
        script,
    )
    .await;
    rig.post(&["e1", "e2", "e3"]).await;
    let t0 = rig.start();
    let sends = rig.sends(failures + 3, t0).await;

    // The same schedule the worker draws from its seeded jitter.
    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut expected_at = 0u128;
    let mut expected = vec![(0u128, "e1")];
    for attempt in 1..=failures as u32 {
        let delay = backoff::delay(&retry_policy(), attempt, None, &mut rng);
        assert!(delay <= backoff::cap(&retry_policy(), attempt));
        expected_at += delay.as_millis();
        expected.push((expected_at, "e1"));
    }
    // e1 finally succeeds; e2 and e3 follow at once, in order.
    expected.push((expected_at, "e2"));
    expected.push((expected_at, "e3"));
    assert_sends(&sends, &expected);
    // The caps grew: the last wait may be up to 16 s, the first at most 1 s.
    assert!(backoff::cap(&retry_policy(), 5) == Duration::from_secs(16));
    rig.finish().await;
}

#[tokio::test]
async fn retry_after_of_a_429_is_honoured_to_the_millisecond() {
    let body =
        r#"{"message": "You are being rate limited.", "retry_after": 1.337, "global": false}"#;
    let script = vec![Ok(answer(429, &[("Retry-After", "2")], body))];
    let mut rig = rig("", script).await;
    rig.post(&["a", "b"]).await;
    let t0 = rig.start();
    let sends = rig.sends(3, t0).await;
    assert_sends(&sends, &[(0, "a"), (1337, "a"), (1337, "b")]);
    rig.finish().await;
}

#[tokio::test]
async fn retry_after_header_in_seconds_wins_over_a_shorter_backoff() {
    let script = vec![Ok(answer(503, &[("Retry-After", "7")], ""))];
    let mut rig = rig("", script).await;
    rig.post(&["a"]).await;
    let t0 = rig.start();
    assert_sends(&rig.sends(2, t0).await, &[(0, "a"), (7000, "a")]);
    rig.finish().await;
}

#[tokio::test]
async fn an_exhausted_discord_bucket_is_waited_out() {
    let headers = [
        ("X-RateLimit-Limit", "5"),
        ("X-RateLimit-Remaining", "0"),
        ("X-RateLimit-Reset-After", "1.250"),
        ("X-RateLimit-Bucket", "abc"),
    ];
    let script = vec![
        Ok(answer(
            200,
            &[
                ("X-RateLimit-Remaining", "1"),
                ("X-RateLimit-Reset-After", "1.250"),
            ],
            "{}",
        )),
        Ok(answer(200, &headers, "{}")),
    ];
    let mut rig = rig("", script).await;
    rig.post(&["a", "b", "c"]).await;
    let t0 = rig.start();
    // a and b go at once (b empties the bucket); c waits for the reset.
    assert_sends(&rig.sends(3, t0).await, &[(0, "a"), (0, "b"), (1250, "c")]);
    rig.finish().await;
}

#[tokio::test]
async fn the_configured_quota_paces_every_attempt_retries_included() {
    // 2 per second, burst 2: sends at 0, 0, then one per 500 ms plus the
    // limiter's 20 ms guard — and the retry of a failed send waits for the
    // quota too.
    let script = vec![Ok(answer(200, &[], "{}")), Ok(answer(500, &[], ""))];
    let mut rig = rig(", rate_limit: {requests: 2, per: 1s, burst: 2}, retry: {initial_backoff: 10ms, max_backoff: 10ms}", script).await;
    rig.post(&["a", "b", "c"]).await;
    let t0 = rig.start();
    let sends = rig.sends(4, t0).await;
    assert_sends(&sends, &[(0, "a"), (0, "b"), (520, "b"), (1040, "c")]);
    rig.finish().await;
}

#[tokio::test]
async fn giving_up_after_max_attempts_makes_a_dead_letter_and_the_queue_moves_on() {
    let script = (0..3)
        .map(|_| Err(TransportError::Connect("refused".into())))
        .collect();
    let mut rig = rig(
        ", retry: {max_attempts: 3, initial_backoff: 100ms, max_backoff: 100ms}",
        script,
    )
    .await;
    rig.post(&["a", "b"]).await;
    let t0 = rig.start();
    let sends = rig.sends(4, t0).await;
    let seqs: Vec<&str> = sends.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(seqs, vec!["a", "a", "a", "b"]);
    rig.stop_worker().await;
    let dead = rig.store.dead_letters(Some("hook")).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("refused"),
        "{dead:?}"
    );
    rig.finish().await;
}

/// A worker reads ahead of the last row it took; a dead letter replayed
/// behind that point (an older id) is picked up when the worker next reads
/// its queue from the start — every few seconds, once the rows it holds are
/// sent — not only after the whole backlog has drained.
#[tokio::test]
async fn a_replay_under_a_backlog_goes_before_the_backlog_has_drained() {
    let mut rig = rig(", rate_limit: {requests: 1, per: 1s, burst: 1}", vec![]).await;
    let seqs: Vec<String> = (1..=150).map(|i| format!("e{i}")).collect();
    let seq_refs: Vec<&str> = seqs.iter().map(String::as_str).collect();
    rig.post(&seq_refs).await;
    // e1 failed for good before this start; the backlog is e2..e150.
    rig.store
        .apply(Op::Dead {
            id: 1,
            attempts: 12,
            status: Some(503),
            error: "down".into(),
            at_ms: 0,
            latency_ms: None,
        })
        .await
        .unwrap();
    let t0 = rig.start();
    let first = rig.sends(3, t0).await;
    assert_eq!(first[0].1, "e2");
    rig.store
        .apply(Op::Replay {
            id: Some(1),
            target: None,
        })
        .await
        .unwrap();
    let rest = rig.sends(147, t0).await;
    let order: Vec<&str> = rest.iter().map(|s| s.1.as_str()).collect();
    let at = order
        .iter()
        .position(|s| *s == "e1")
        .expect("e1 was never sent");
    // At most one read-ahead (64 rows) plus a rescan period after the replay.
    assert!(
        at < 80,
        "e1 went out only after {at} of the backlog: {order:?}"
    );
    rig.finish().await;
}
