//! The delivery engine run through the library (`LibApp`: listeners bound
//! here, transport and clock injected), for what a process cannot show: a
//! destination whose send panics inside the worker, and a relay whose clock
//! is far from the system's. Ingest, the store and the workers are the real
//! ones; events arrive over HTTP.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crisp_relay::clock::Clock;
use crisp_relay::delivery::TargetState;
use crisp_relay::delivery::classify::{Answer, TransportError};
use crisp_relay::delivery::transport::{SendFuture, Transport};
use crisp_relay::targets::{Body, OutgoingRequest};

use crate::helpers::*;

/// How long a condition may take to hold; only a hang guard.
const GUARD: Duration = Duration::from_secs(30);

/// A destination that answers from a script: for each send, in order, the
/// next entry (then 200). `Panic` makes the send panic, inside the worker.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Step {
    Answer(u16),
    Panic,
}

pub(crate) struct Scripted {
    script: Mutex<Vec<Step>>,
    /// (seq, status answered) of every send, panics as status 0.
    sent: Mutex<Vec<(usize, u16)>>,
    panics: AtomicUsize,
}

impl Scripted {
    pub(crate) fn new(script: &[Step]) -> Arc<Self> {
        let mut script = script.to_vec();
        script.reverse();
        Arc::new(Self {
            script: Mutex::new(script),
            sent: Mutex::new(Vec::new()),
            panics: AtomicUsize::new(0),
        })
    }

    fn sent(&self) -> Vec<(usize, u16)> {
        self.sent.lock().unwrap().clone()
    }

    /// The seqs answered 2xx, in order.
    pub(crate) fn delivered(&self) -> Vec<usize> {
        self.sent()
            .into_iter()
            .filter(|(_, s)| (200..300).contains(s))
            .map(|(seq, _)| seq)
            .collect()
    }
}

impl Transport for Scripted {
    fn send<'a>(&'a self, req: &'a OutgoingRequest, _timeout: Duration) -> SendFuture<'a> {
        let text = match &req.body {
            Body::Json(v) => v.to_string(),
            Body::Text(t) => t.clone(),
        };
        let seq = seq_in(&text);
        let step = self
            .script
            .lock()
            .unwrap()
            .pop()
            .unwrap_or(Step::Answer(200));
        Box::pin(async move {
            match step {
                Step::Panic => {
                    self.sent.lock().unwrap().push((seq, 0));
                    self.panics.fetch_add(1, Ordering::SeqCst);
                    panic!("the destination's answer broke the worker (test)");
                }
                Step::Answer(status) => {
                    self.sent.lock().unwrap().push((seq, status));
                    Ok::<_, TransportError>(Answer::new(status, &[], "{}"))
                }
            }
        })
    }
}

/// A webhook target `hook` receiving every event (the event as sent).
pub(crate) fn hook_config(retry: &str) -> Workdir {
    Workdir::new(&config_with(&format!(
        "targets:\n  hook: {{kind: webhook, url: \"http://127.0.0.1:9/hook\", {retry}}}\n\
         routes:\n  - name: all\n    to: [hook]\n"
    )))
}

pub(crate) async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + GUARD;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn system_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_panics_is_restarted_and_nothing_it_held_is_lost_or_reordered() {
    // The second send panics (a bug a destination's answer could trip).
    let dest = Scripted::new(&[Step::Answer(200), Step::Panic]);
    let app = LibApp::start(
        hook_config("retry: {initial_backoff: 50ms, max_backoff: 1s}"),
        dest.clone(),
        Clock::system(),
    )
    .await;
    for seq in 1..=5 {
        assert_eq!(app.post_event(message(seq)).await, 200);
    }
    wait_until("the panic", || dest.panics.load(Ordering::SeqCst) == 1).await;
    // Down while it waits to restart; /readyz says so, ingest goes on.
    wait_until("the target to show as down", || {
        matches!(
            app.running().states.get("hook"),
            Some(TargetState::Down { .. })
        )
    })
    .await;
    let ready = app.admin_text("/readyz").await;
    assert!(
        ready.contains("\"hook\"") && ready.contains("\"down\"") && ready.contains("panicked"),
        "{ready}"
    );
    assert_eq!(app.post_event(message(6)).await, 200);

    wait_until("all six delivered", || dest.delivered().len() == 6).await;
    // In order, each once; the row whose send panicked was sent again.
    assert_eq!(dest.delivered(), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(dest.sent()[..3], [(1, 200), (2, 0), (2, 200)]);
    assert_eq!(app.running().states.get("hook"), Some(TargetState::Running));
    let metrics = app.admin_text("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "crisp_relay_worker_restarts_total{target=\"hook\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "crisp_relay_target_up{target=\"hook\"}"),
        Some(1.0)
    );
    // Every result committed: the queue is empty.
    let deadline = Instant::now() + GUARD;
    loop {
        let m = app.admin_text("/metrics").await;
        if metric(&m, "crisp_relay_queue_depth{target=\"hook\"}") == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the queue never emptied:\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

/// The store stamps rows and the workers compare them with the same clock.
/// Here that clock is a day off the system's, as after the system clock was
/// stepped forward or back while the relay ran: a new event goes at once,
/// and a failed one is retried, not dead-lettered by `max_age` (1 h).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_clock_a_day_off_the_system_nothing_is_delayed_or_aged() {
    let day = 86_400_000;
    for offset in [day, -day] {
        let dest = Scripted::new(&[Step::Answer(503)]);
        let app = LibApp::start(
            hook_config("retry: {initial_backoff: 50ms, max_backoff: 1s, max_age: 1h}"),
            dest.clone(),
            Clock::starting_at(system_ms() + offset),
        )
        .await;
        assert_eq!(app.post_event(message(1)).await, 200);
        assert_eq!(app.post_event(message(2)).await, 200);
        wait_until(&format!("delivery with the clock {offset} ms off"), || {
            dest.delivered() == vec![1, 2]
        })
        .await;
        assert_eq!(
            dest.sent(),
            vec![(1, 503), (1, 200), (2, 200)],
            "offset {offset}"
        );
        let dead = app.running().store.dead_letters(None).await.unwrap();
        assert!(dead.is_empty(), "offset {offset}: {dead:?}");
        app.stop().await;
    }
}
