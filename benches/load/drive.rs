//! The load generator: the sample bodies with their bench tags, HTTP/1.1
//! client connections, closed-loop and paced (open-loop) drives over many
//! connections, waiting for the sink to hold what was acknowledged, and the
//! ingest-then-drain run built from them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::relay::{RelayProc, RelaySetup, start_relay};
use crate::report::cpu_secs;
use crate::sink::{Sink, SinkBehaviour};
use crate::{CONNECTIONS, KEY, Res};

/// The sample events, each split around its `data.bench` tag (and around
/// its `data.fingerprint`, which gets the tag too: every request is a new
/// message, never a resend the relay would answer as a duplicate).
pub struct Bodies {
    pub parts: Vec<Vec<Vec<u8>>>,
}

impl Bodies {
    pub fn load() -> Res<Self> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crisp-events");
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        let mut parts = Vec::new();
        for path in names {
            let mut v: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
            let Some(data) = v.get_mut("data").and_then(Value::as_object_mut) else {
                continue;
            };
            data.insert("bench".into(), json!("@@TAG@@"));
            if data.contains_key("fingerprint") {
                data.insert("fingerprint".into(), json!("@@TAG@@"));
            }
            let text = serde_json::to_string(&v)?;
            parts.push(
                text.split("@@TAG@@")
                    .map(|p| p.as_bytes().to_vec())
                    .collect(),
            );
        }
        if parts.is_empty() {
            return Err(format!("no sample events in {}", dir.display()).into());
        }
        Ok(Self { parts })
    }

    pub fn body(&self, i: u64, tag: &str) -> Bytes {
        let segments = &self.parts[(i as usize) % self.parts.len()];
        let len = segments.iter().map(Vec::len).sum::<usize>() + 2 * tag.len();
        let mut out = Vec::with_capacity(len);
        for (n, segment) in segments.iter().enumerate() {
            if n > 0 {
                out.extend_from_slice(tag.as_bytes());
            }
            out.extend_from_slice(segment);
        }
        Bytes::from(out)
    }
}

pub struct Conn {
    pub sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Res<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self { sender })
    }

    /// POSTs one body; the status, or an error.
    pub async fn post(&mut self, uri: &str, body: Bytes) -> Res<u16> {
        self.sender.ready().await?;
        let req = Request::post(uri)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(body))?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await?;
        Ok(status)
    }
}

#[derive(Default)]
pub struct LoadResult {
    pub ok: u64,
    pub rejected: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub ack_us: Vec<u32>,
    /// `(connection, n)` of every acknowledged event.
    pub acked: Vec<(u32, u64)>,
    /// CPU seconds this process (generator and sink) used.
    pub own_cpu: f64,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub enum Pace {
    /// Each connection sends as soon as the previous answer arrived, for
    /// `duration` or until `total` events were acknowledged.
    Closed { duration: Duration, total: u64 },
    /// `rate` events per second in all, spread over the connections, for
    /// `duration`; latency counts from the scheduled send time (no
    /// coordinated omission).
    Open { rate: u64, duration: Duration },
}

pub struct Load {
    pub addr: SocketAddr,
    pub uri: String,
    pub connections: usize,
    pub run: String,
    pub pace: Pace,
}

pub async fn drive(load: Load, bodies: Arc<Bodies>, epoch: Instant) -> Res<LoadResult> {
    drive_split(load, &[], bodies, epoch).await
}

/// [`drive`] over several servers: connection `c` goes to the `c % n`th of
/// `load.addr` and then `others` (each relay of a replicated store takes
/// its share); a connection that fails reconnects to its own server, else
/// to the next that answers, as a load balancer would.
pub async fn drive_split(
    load: Load,
    others: &[SocketAddr],
    bodies: Arc<Bodies>,
    epoch: Instant,
) -> Res<LoadResult> {
    let addrs: Arc<[SocketAddr]> = std::iter::once(load.addr)
        .chain(others.iter().copied())
        .collect();
    let cpu0 = cpu_secs("self");
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let acked_total = Arc::new(AtomicU64::new(0));
    let uri: Arc<str> = load.uri.into();
    let run: Arc<str> = load.run.into();
    let mut tasks = Vec::new();
    let pace = Arc::new(load.pace);
    for c in 0..load.connections {
        let (bodies, stop, acked_total, uri, run, pace) = (
            bodies.clone(),
            stop.clone(),
            acked_total.clone(),
            uri.clone(),
            run.clone(),
            pace.clone(),
        );
        let addrs = addrs.clone();
        let connections = load.connections as u64;
        tasks.push(tokio::spawn(async move {
            let mut out = LoadResult::default();
            let mut conn = match Conn::open(addrs[c % addrs.len()]).await {
                Ok(conn) => conn,
                Err(_) => {
                    out.errors += 1;
                    return out;
                }
            };
            let mut n = 0u64;
            loop {
                n += 1;
                let scheduled = match &*pace {
                    Pace::Closed { duration, total } => {
                        if started.elapsed() >= *duration
                            || acked_total.load(Ordering::Relaxed) >= *total
                            || stop.load(Ordering::Relaxed)
                        {
                            break;
                        }
                        Instant::now()
                    }
                    Pace::Open { rate, duration } => {
                        // Event k of the whole run is due at k / rate.
                        let k = (n - 1) * connections + c as u64;
                        let at = started + Duration::from_secs_f64(k as f64 / *rate as f64);
                        if at.duration_since(started) >= *duration {
                            break;
                        }
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                };
                let sent_us = scheduled.duration_since(epoch).as_micros();
                let tag = format!("{run}:{c}:{n}:{sent_us}");
                let body = bodies.body(c as u64 * 7919 + n, &tag);
                match conn.post(&uri, body).await {
                    Ok(200) => {
                        out.ok += 1;
                        acked_total.fetch_add(1, Ordering::Relaxed);
                        out.ack_us
                            .push(scheduled.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        out.acked.push((c as u32, n));
                    }
                    Ok(_) => out.rejected += 1,
                    Err(_) => {
                        out.errors += 1;
                        match reopen(&addrs, c).await {
                            Some(c2) => conn = c2,
                            None => break,
                        }
                    }
                }
            }
            out
        }));
    }
    let mut total = LoadResult::default();
    for t in tasks {
        let r = t.await?;
        total.ok += r.ok;
        total.rejected += r.rejected;
        total.errors += r.errors;
        total.ack_us.extend(r.ack_us);
        total.acked.extend(r.acked);
    }
    total.elapsed = started.elapsed();
    total.own_cpu = cpu_secs("self") - cpu0;
    stop.store(true, Ordering::Relaxed);
    Ok(total)
}

/// A new connection for connection `c`: to its own server, else to the
/// next of `addrs` that accepts one.
async fn reopen(addrs: &[SocketAddr], c: usize) -> Option<Conn> {
    for k in 0..addrs.len() {
        if let Ok(conn) = Conn::open(addrs[(c + k) % addrs.len()]).await {
            return Some(conn);
        }
    }
    None
}

/// Waits until the sink holds every acknowledged event or `limit` passes;
/// returns the missing ones.
pub async fn wait_delivered(sink: &Sink, acked: &[(u32, u64)], limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    loop {
        if sink.unique() >= acked.len() as u64 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let book = sink.book.lock().unwrap_or_else(|p| p.into_inner());
    acked.iter().filter(|k| !book.seen.contains(k)).count() as u64
}

/// Drives `rate` events/s in all over 32 connections for `d` into `relay`,
/// then waits (at most 60 s) for the sink to hold every acknowledged
/// event. Returns the load, the missing events and the sink's end-to-end
/// samples.
pub async fn paced(
    relay: &RelayProc,
    sink: &Sink,
    bodies: &Arc<Bodies>,
    epoch: Instant,
    run: &str,
    rate: u64,
    d: Duration,
) -> Res<(LoadResult, u64, Vec<u32>)> {
    let r = drive(
        Load {
            addr: relay.ingest,
            uri: format!("/crisp/hooks?key={KEY}"),
            connections: 32,
            run: run.into(),
            pace: Pace::Open { rate, duration: d },
        },
        bodies.clone(),
        epoch,
    )
    .await?;
    let missing = wait_delivered(sink, &r.acked, Duration::from_secs(60)).await;
    let e2e = std::mem::take(&mut sink.book.lock().unwrap_or_else(|p| p.into_inner()).e2e_us);
    Ok((r, missing, e2e))
}

/// What one ingest-then-drain run measured.
pub struct DrainRun {
    pub ingest_rps: f64,
    /// Delivered per second while ingest ran at full speed.
    pub during_rate: f64,
    pub drain_rate: f64,
    pub missing: u64,
    pub out_of_order: u64,
    pub duplicates: u64,
}

/// Fills a relay sending to `target` for `d` at full speed, then measures
/// delivery alone for `d`, then waits for everything and checks order.
/// With `hold`, the sink stalls while ingest runs (the relay's first send
/// waits, the rest queue up behind it) and lets go when ingest stops, so
/// the drain starts from the whole backlog.
pub async fn ingest_then_drain(
    sink: &Sink,
    bodies: &Arc<Bodies>,
    epoch: Instant,
    run: &str,
    target: String,
    d: Duration,
    hold: bool,
) -> Res<DrainRun> {
    sink.reset(run, SinkBehaviour::default());
    sink.held.send_replace(hold);
    let (relay, _) = start_relay(&RelaySetup {
        filler_routes: 9,
        target,
        template: None,
    })
    .await?;
    let ing = drive(
        Load {
            addr: relay.ingest,
            uri: format!("/crisp/hooks?key={KEY}"),
            connections: CONNECTIONS,
            run: run.into(),
            pace: Pace::Closed {
                duration: d,
                total: u64::MAX,
            },
        },
        bodies.clone(),
        epoch,
    )
    .await?;
    // Until the backlog is gone or `d` is over, whichever comes first.
    sink.held.send_replace(false);
    let delivered_during = sink.accepted.load(Ordering::Relaxed);
    let from = delivered_during;
    let start = Instant::now();
    while start.elapsed() < d && sink.unique() < ing.acked.len() as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain_rate =
        (sink.accepted.load(Ordering::Relaxed) - from) as f64 / start.elapsed().as_secs_f64();
    let missing = wait_delivered(sink, &ing.acked, Duration::from_secs(300)).await;
    let (out_of_order, duplicates) = {
        let b = sink.book.lock().unwrap_or_else(|p| p.into_inner());
        (b.out_of_order, b.duplicates)
    };
    relay.stop();
    Ok(DrainRun {
        ingest_rps: ing.rps(),
        during_rate: delivered_during as f64 / ing.elapsed.as_secs_f64(),
        drain_rate,
        missing,
        out_of_order,
        duplicates,
    })
}
