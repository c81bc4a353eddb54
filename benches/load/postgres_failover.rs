//! The postgres phase's failover run: two replicas on a fresh schema with
//! `lease` as given, a steady open-loop stream of [`RATE`] events/s spread
//! over both, and after [`KILL_AFTER`] the replica whose `/readyz` lists
//! the target in `targets_here` is SIGKILLed. It measures the time from
//! the kill to the next event arriving at the sink from the replica that
//! took over (the first arrival after a pause of [`PAUSE`]: what arrives
//! at once was already sent by the dead one), the time until the other's
//! `/readyz` lists the target, and counts repeats (the sink saw an event
//! twice) and losses (acknowledged, never arrived: must be 0).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::drive::{Bodies, Load, Pace, drive_split, wait_delivered};
use crate::postgres::{Schema, holds, log_problems, start_replica};
use crate::relay::RelaySetup;
use crate::report::{Lat, lat, lat_json, round2};
use crate::sink::{Sink, SinkBehaviour};
use crate::{KEY, Res};

/// Events per second, in all, to the two replicas.
pub const RATE: u64 = 200;
/// Connections of the stream, half on each replica.
const CONNECTIONS: usize = 16;
/// From the stream's start to the kill.
const KILL_AFTER: Duration = Duration::from_secs(3);
/// A gap in arrivals this long after the kill marks the takeover.
const PAUSE: Duration = Duration::from_millis(100);
/// The target's name in the bench config.
const TARGET: &str = "sink";

/// What one failover run measured.
pub struct FailoverRun {
    pub lease_secs: u64,
    pub stream_secs: f64,
    pub acked: u64,
    pub rejected: u64,
    pub errors: u64,
    pub ack: Lat,
    pub e2e: Lat,
    /// From the kill to the first event the new holder delivered.
    pub takeover_ms: Option<f64>,
    /// Whether arrivals paused after the kill (else `takeover_ms` is the
    /// first arrival after it).
    pub paused: bool,
    /// Events that arrived after the kill but before the pause ended (sent
    /// by the dead replica).
    pub stale: u64,
    /// From the kill to the survivor's `/readyz` listing the target.
    pub readyz_ms: Option<f64>,
    pub repeats: u64,
    pub lost: u64,
    pub out_of_order: u64,
    /// Warnings and errors the survivor logged.
    pub log_problems: Vec<String>,
}

/// The run, on a schema of its own (dropped after).
pub async fn run(
    sink: &Sink,
    bodies: &Arc<Bodies>,
    epoch: Instant,
    setup: &RelaySetup,
    url: &str,
    lease_secs: u64,
) -> Res<FailoverRun> {
    let schema = Schema::create(url).await?;
    let r = run_on(sink, bodies, epoch, setup, &schema, lease_secs).await;
    schema.drop_schema().await;
    r
}

async fn run_on(
    sink: &Sink,
    bodies: &Arc<Bodies>,
    epoch: Instant,
    setup: &RelaySetup,
    schema: &Schema,
    lease_secs: u64,
) -> Res<FailoverRun> {
    let lease = Duration::from_secs(lease_secs);
    let store = schema.store(lease_secs);
    let mut relays = vec![
        start_replica(setup, &store).await?,
        start_replica(setup, &store).await?,
    ];
    // One of them takes the target's lease.
    let deadline = Instant::now() + lease + Duration::from_secs(10);
    while !(holds(&relays[0], TARGET).await || holds(&relays[1], TARGET).await) {
        if Instant::now() > deadline {
            return Err("no replica took the target's lease".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let run = format!("failover{lease_secs}");
    sink.reset(&run, SinkBehaviour::default());
    let stream = KILL_AFTER + lease + Duration::from_secs(5);
    let load = Load {
        addr: relays[0].ingest,
        uri: format!("/crisp/hooks?key={KEY}"),
        connections: CONNECTIONS,
        run,
        pace: Pace::Open {
            rate: RATE,
            duration: stream,
        },
    };
    let (other, bodies) = (relays[1].ingest, bodies.clone());
    let drive = tokio::spawn(async move { drive_split(load, &[other], bodies, epoch).await });
    tokio::time::sleep(KILL_AFTER).await;
    let holder = if holds(&relays[0], TARGET).await {
        0
    } else if holds(&relays[1], TARGET).await {
        1
    } else {
        return Err("neither replica lists the target in targets_here".into());
    };
    let mut dead = relays.remove(holder);
    let killed = Instant::now();
    dead.proc.child.kill()?;
    let _ = dead.proc.child.wait();
    drop(dead);
    let survivor = relays.remove(0);
    let mut readyz = None;
    while killed.elapsed() < lease + Duration::from_secs(30) {
        if holds(&survivor, TARGET).await {
            readyz = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut load = drive.await??;
    let lost = wait_delivered(sink, &load.acked, Duration::from_secs(60)).await;
    let (arrived, mut e2e, repeats, out_of_order) = {
        let mut b = sink.book.lock().unwrap_or_else(|p| p.into_inner());
        (
            std::mem::take(&mut b.arrived_us),
            std::mem::take(&mut b.e2e_us),
            b.duplicates,
            b.out_of_order,
        )
    };
    let log_problems = log_problems(&survivor);
    survivor.stop();
    let killed_us = killed.duration_since(epoch).as_micros() as u64;
    let (takeover_us, paused, stale) = takeover(&arrived, killed_us);
    let r = FailoverRun {
        lease_secs,
        stream_secs: load.elapsed.as_secs_f64(),
        acked: load.ok,
        rejected: load.rejected,
        errors: load.errors,
        ack: lat(&mut load.ack_us),
        e2e: lat(&mut e2e),
        takeover_ms: takeover_us.map(|us| us as f64 / 1000.0),
        paused,
        stale,
        readyz_ms: readyz.map(|d| d.as_secs_f64() * 1000.0),
        repeats,
        lost,
        out_of_order,
        log_problems,
    };
    eprintln!(
        "  failover, lease {lease_secs} s: {} acknowledged, {} rejected, {} errors at {RATE}/s; next event at the sink {} after the kill{} \
         ({} stale before); /readyz lists the target after {}; {} repeats, {} lost, {} out of order; ack p99 {:.2} max {:.2} ms; \
         end-to-end p50 {:.2} p99 {:.2} max {:.2} ms; survivor logged {} warnings or errors",
        r.acked,
        r.rejected,
        r.errors,
        ms(r.takeover_ms),
        if r.paused { "" } else { " (no pause!)" },
        r.stale,
        ms(r.readyz_ms),
        r.repeats,
        r.lost,
        r.out_of_order,
        r.ack.p99,
        r.ack.max,
        r.e2e.p50,
        r.e2e.p99,
        r.e2e.max,
        r.log_problems.len()
    );
    for line in r.log_problems.iter().take(10) {
        eprintln!("    survivor log: {line}");
    }
    Ok(r)
}

/// From arrival times (µs) and the kill's: the time to the first arrival
/// after a pause of [`PAUSE`] (else to the first arrival), whether there
/// was a pause, and how many arrived before it.
fn takeover(arrived: &[u64], killed_us: u64) -> (Option<u64>, bool, u64) {
    let mut after: Vec<u64> = arrived
        .iter()
        .copied()
        .filter(|&a| a >= killed_us)
        .collect();
    after.sort_unstable();
    let mut prev = killed_us;
    for (i, &a) in after.iter().enumerate() {
        if a - prev >= PAUSE.as_micros() as u64 {
            return (Some(a - killed_us), true, i as u64);
        }
        prev = a;
    }
    (after.first().map(|a| a - killed_us), false, 0)
}

fn ms(x: Option<f64>) -> String {
    x.map_or_else(|| "never".to_owned(), |x| format!("{x:.0} ms"))
}

pub fn table_rows(f: &FailoverRun) -> Vec<String> {
    vec![
        format!(
            "| failover, `lease: {}s`, {RATE} ev/s over 2 replicas: SIGKILL of the holder → next event at the sink | **{}**{} ({} sent by the dead one just before); `/readyz` of the other lists the target after {} | ≤ lease + 2 s |",
            f.lease_secs,
            ms(f.takeover_ms),
            if f.paused {
                ""
            } else {
                " (no pause in arrivals)"
            },
            f.stale,
            ms(f.readyz_ms)
        ),
        format!(
            "| failover, `lease: {}s`: acknowledged / repeats / lost / out of order | {} / {} / **{}** / {} ({} requests failed with the connection) | lost 0 |",
            f.lease_secs, f.acked, f.repeats, f.lost, f.out_of_order, f.errors
        ),
        format!(
            "| failover, `lease: {}s`: ack p50 / p99 / max; end-to-end p50 / p99 / max | {:.2} / {:.2} / {:.2} ms; {:.1} / {:.0} / {:.0} ms | — |",
            f.lease_secs, f.ack.p50, f.ack.p99, f.ack.max, f.e2e.p50, f.e2e.p99, f.e2e.max
        ),
    ]
}

pub fn to_json(f: &FailoverRun) -> Value {
    json!({
        "lease_s": f.lease_secs,
        "rate": RATE,
        "stream_s": round2(f.stream_secs),
        "kill_after_s": KILL_AFTER.as_secs(),
        "kill_to_next_event_ms": f.takeover_ms.map(round2),
        "arrivals_paused": f.paused,
        "stale_after_kill": f.stale,
        "kill_to_readyz_ms": f.readyz_ms.map(round2),
        "acknowledged": f.acked,
        "rejected": f.rejected,
        "errors": f.errors,
        "repeats": f.repeats,
        "lost": f.lost,
        "out_of_order": f.out_of_order,
        "ack": lat_json(f.ack),
        "end_to_end": lat_json(f.e2e),
        "survivor_log_warnings_or_errors": f.log_problems.len(),
    })
}
