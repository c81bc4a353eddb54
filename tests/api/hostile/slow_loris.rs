//! Slow-loris clients, dribbling a head that never ends: one is
//! disconnected at `header_read_timeout`; 200 at once neither starve a valid
//! request nor outlive the timeout; at `max_connections` a valid request
//! waits for their slots and is then served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::helpers::*;
use crate::raw_http::Conn;

/// One client dribbling its request head a byte at a time, never finishing:
/// `header_read_timeout` is a deadline for the whole head, so the server
/// closes the connection (without an answer: hyper just drops it).
pub(super) async fn case_slow_head(app: &TestApp) {
    let slow = open_slow(app.ingest).await;
    let got = dribble_until_closed(slow, Duration::from_millis(50)).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    still_serves(app, "a slow-loris head").await;
}

/// The start of a request head, whose last header never ends.
pub(super) fn slow_head_start() -> Vec<u8> {
    format!(
        "POST /crisp/hooks?key={KEY} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Slow: "
    )
    .into_bytes()
}

/// A connection that has sent the start of a head that never ends.
async fn open_slow(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&slow_head_start()).await.unwrap();
    stream
}

/// Sends one more byte of the head every `every` until the server closes
/// the connection; what the server sent before that.
async fn dribble_until_closed(stream: TcpStream, every: Duration) -> Vec<u8> {
    let (mut rd, mut wr) = stream.into_split();
    tokio::time::timeout(GUARD, async move {
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        let mut ticks = tokio::time::interval(every);
        loop {
            tokio::select! {
                r = rd.read(&mut chunk) => match r {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                },
                _ = ticks.tick() => {
                    // A failed write also means the server is gone; the read
                    // side then sees the end.
                    let _ = wr.write_all(b"a").await;
                }
            }
        }
    })
    .await
    .expect("the server kept a slow-loris connection open")
}

// ---------------------------------------------------------------------------
// The tests

#[tokio::test]
async fn a_slow_loris_head_is_disconnected() {
    let app = battery_app().await;
    case_slow_head(&app).await;
}

/// 200 slow-loris connections hang (a long `header_read_timeout`, the default
/// `max_connections` of 1024): a valid request is served meanwhile, and every
/// one of the 200 was still open and served once it finished its request.
#[tokio::test]
async fn two_hundred_slow_loris_connections_do_not_starve_a_valid_request() {
    const N: usize = 200;
    let app = TestApp::spawn_with(&config("  header_read_timeout: 120s\n")).await;
    let stop = CancellationToken::new();
    let mut slow = JoinSet::new();
    for i in 0..N {
        let (rd, mut wr) = open_slow(app.ingest).await.into_split();
        let stop = stop.clone();
        slow.spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = ticks.tick() => wr.write_all(b"a").await.unwrap_or_else(|e| panic!("slow connection {i} closed: {e}")),
                }
            }
            (i, rd, wr)
        });
    }
    still_serves(&app, "200 slow-loris connections").await;

    // Each hanging connection now finishes its request, and is answered.
    stop.cancel();
    let body = fixture(FIXTURE);
    let mut finish = JoinSet::new();
    while let Some(r) = slow.join_next().await {
        let (i, rd, mut wr) = r.unwrap();
        let mut rest = format!("\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        rest.extend_from_slice(&body);
        finish.spawn(async move {
            wr.write_all(&rest).await.unwrap();
            let mut raw = Conn::from_halves(rd, wr, GUARD);
            (i, raw.response().await.status)
        });
    }
    let mut answered = 0;
    while let Some(r) = finish.join_next().await {
        let (i, status) = r.unwrap();
        assert_eq!(status, 200, "slow connection {i}");
        answered += 1;
    }
    assert_eq!(answered, N);
}

/// With a short `header_read_timeout`, 200 slow-loris connections are all
/// closed by the server, however long they keep dribbling.
#[tokio::test]
async fn two_hundred_slow_loris_connections_are_all_disconnected() {
    let app = battery_app().await;
    let mut slow = JoinSet::new();
    for _ in 0..200 {
        let ingest = app.ingest;
        slow.spawn(async move {
            let stream = open_slow(ingest).await;
            dribble_until_closed(stream, Duration::from_millis(200)).await
        });
    }
    while let Some(r) = slow.join_next().await {
        let got = r.unwrap();
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    }
    still_serves(&app, "200 slow-loris connections, closed").await;
}

/// At `max_connections`, further connections wait in the kernel's backlog
/// until a slot frees: slow-loris connections hold their slots until
/// `header_read_timeout`, so a valid request behind twice as many of them as
/// there are slots waits for them to be dropped, and is then served.
#[tokio::test]
async fn at_max_connections_a_valid_request_is_served_once_slow_loris_slots_expire() {
    let app =
        TestApp::spawn_with(&config("  header_read_timeout: 1s\n  max_connections: 8\n")).await;
    // All 16 are connected (accepted, or queued in the backlog) before the
    // valid request connects.
    let mut slow = JoinSet::new();
    for _ in 0..16 {
        let stream = open_slow(app.ingest).await;
        slow.spawn(dribble_until_closed(stream, Duration::from_millis(200)));
    }
    let started = Instant::now();
    still_serves(&app, "16 slow-loris connections over 8 slots").await;
    // Not asserted (no timing assertions): printed for the record.
    eprintln!(
        "valid request behind 16 slow-loris connections over 8 slots (header_read_timeout 1s): answered after {:?}",
        started.elapsed()
    );
    while let Some(r) = slow.join_next().await {
        let got = r.unwrap();
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    }
}
