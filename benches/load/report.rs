//! What a run reports: latency percentiles, a process's RSS and CPU time,
//! the machine, and the full run's table and JSON (also written to
//! `target/relay-bench.json`; the prune, threads and replies phases' rows
//! and JSON come from `prune.rs`, `threads.rs` and `replies.rs`).

use std::path::Path;

use serde_json::{Value, json};

use crate::drive::{DrainRun, LoadResult};
use crate::prune::{self, PruneRun};
use crate::relay::relay_binary;
use crate::replies::{self, RepliesPhase};
use crate::threads::{self, ThreadsPhase};
use crate::{CONNECTIONS, PRUNE_RATE, Res};

#[derive(Default, Clone, Copy)]
pub struct Lat {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub n: usize,
}

/// Percentiles in milliseconds of microsecond samples.
pub fn lat(samples: &mut [u32]) -> Lat {
    if samples.is_empty() {
        return Lat::default();
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        f64::from(samples[i]) / 1000.0
    };
    Lat {
        p50: at(0.50),
        p99: at(0.99),
        max: f64::from(samples[samples.len() - 1]) / 1000.0,
        n: samples.len(),
    }
}

pub fn lat_json(l: Lat) -> Value {
    json!({"p50_ms": round2(l.p50), "p99_ms": round2(l.p99), "max_ms": round2(l.max), "samples": l.n})
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `VmRSS` and `VmHWM` (peak) of a process, in MiB.
pub fn rss_mib(pid: u32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|k| k.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_secs(pid: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is 3rd, utime 14th, stime 15th.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "os": std::env::consts::OS,
    })
}

/// Writes a report's JSON to `target/<name>` in the package, creating
/// `target/` when cargo built elsewhere (`CARGO_TARGET_DIR`).
pub fn write_json(name: &str, text: &str) -> Res<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let out = dir.join(name);
    std::fs::write(&out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("relay-bench: JSON written to {}", out.display());
    Ok(())
}

/// Everything the full run measured, for its table and JSON.
pub struct Full {
    pub secs: u64,
    pub base: LoadResult,
    pub base_lat: Lat,
    pub base_cpu: f64,
    pub ing: LoadResult,
    pub ing_lat: Lat,
    pub relay_cpu: f64,
    pub delivered_during: u64,
    pub drain_rate: f64,
    pub missing: u64,
    pub out_of_order: u64,
    pub duplicates: u64,
    pub batched: DrainRun,
    /// `(rate, sent per second, ack, end-to-end, missing)`.
    pub fixed: Vec<(u64, f64, Lat, Lat, u64)>,
    pub idle: (f64, f64),
    pub load_peak: f64,
    pub load_peak_after: f64,
    pub backlog_rss: f64,
    pub backlog_peak: f64,
    pub bl: LoadResult,
    pub pending: u64,
    pub startup_ms: f64,
    pub thousand: LoadResult,
    pub prune: PruneRun,
    pub threads: ThreadsPhase,
    pub replies: RepliesPhase,
}

/// Prints the full run's table and JSON, and writes the JSON to
/// `target/relay-bench.json`; then fails if the threads phase found a
/// conversation's messages missing, repeated, split or out of order, or
/// the replies phase a reply unacknowledged, missing, repeated or out of
/// order.
pub fn print_full(f: Full) -> Res<()> {
    let Full {
        secs,
        base,
        base_lat,
        base_cpu,
        ing,
        ing_lat,
        relay_cpu,
        delivered_during,
        drain_rate,
        missing,
        out_of_order,
        duplicates,
        batched,
        fixed,
        idle,
        load_peak,
        load_peak_after,
        backlog_rss,
        backlog_peak,
        bl,
        pending,
        startup_ms,
        thousand,
        prune,
        threads,
        replies,
    } = f;
    let prune_empty = fixed
        .iter()
        .find(|(rate, ..)| *rate == PRUNE_RATE)
        .map(|(_, _, ack, _, _)| *ack);
    let ratio = ing.rps() / base.rps();
    let delivered_ratio = drain_rate / base.rps();
    let routing_cost = 1.0 - thousand.rps() / ing.rps();
    let report = json!({
        "machine": machine(),
        "relay_binary": relay_binary().display().to_string(),
        "seconds_per_phase": secs,
        "connections": CONNECTIONS,
        "baseline": {"requests_per_s": base.rps().round(), "ack": lat_json(base_lat),
                     "generator_cpu_s": round2(base.own_cpu), "server_cpu_s": round2(base_cpu)},
        "relay": {
            "requests_per_s": ing.rps().round(),
            "ratio_to_baseline": round2(ratio),
            "ack": lat_json(ing_lat),
            "rejected": ing.rejected, "errors": ing.errors,
            "relay_cpu_s": round2(relay_cpu), "generator_cpu_s": round2(ing.own_cpu),
            "delivered_per_s_during_load": (delivered_during as f64 / ing.elapsed.as_secs_f64()).round(),
            "delivered_per_s_draining": drain_rate.round(),
            "delivered_ratio_to_baseline": (delivered_ratio * 1000.0).round() / 1000.0,
            "missing": missing, "out_of_order": out_of_order, "duplicates": duplicates,
        },
        "batched_64": {
            "requests_per_s": batched.ingest_rps.round(),
            "delivered_per_s_during_load": batched.during_rate.round(),
            "delivered_per_s_draining": batched.drain_rate.round(),
            "delivered_ratio_to_baseline": (batched.drain_rate / base.rps() * 1000.0).round() / 1000.0,
            "missing": batched.missing, "out_of_order": batched.out_of_order,
            "duplicates": batched.duplicates,
        },
        "fixed_rate": fixed.iter().map(|(rate, sent, ack, e2e, missing)| json!({
            "rate": rate, "sent_per_s": sent.round(), "ack": lat_json(*ack), "end_to_end": lat_json(*e2e), "missing": missing,
        })).collect::<Vec<_>>(),
        "rss_mib": {"idle": round2(idle.0), "under_load_peak": round2(load_peak.max(load_peak_after)),
                    "backlog": round2(backlog_rss), "backlog_peak": round2(backlog_peak),
                    "backlog_events": bl.ok, "backlog_pending": pending},
        "startup_ms": round2(startup_ms),
        "routing": {"routes_10_rps": ing.rps().round(), "routes_1000_rps": thousand.rps().round(),
                    "cost": round2(routing_cost)},
        "prune": prune::to_json(&prune, PRUNE_RATE, prune_empty),
        "threads": threads::to_json(&threads),
        "replies": replies::to_json(&replies),
    });
    println!();
    println!("| measure | figure | goal |");
    println!("|---|---|---|");
    println!(
        "| baseline ingest ({CONNECTIONS} conns) | {:.0} req/s | — |",
        base.rps()
    );
    println!(
        "| relay ingest ({CONNECTIONS} conns, durable) | {:.0} req/s = **{:.2}×** baseline | ≥ 0.50× |",
        ing.rps(),
        ratio
    );
    println!(
        "| ack latency at {CONNECTIONS} conns | p50 {:.2} / p99 {:.2} / max {:.2} ms | — |",
        ing_lat.p50, ing_lat.p99, ing_lat.max
    );
    println!(
        "| delivered/s, one webhook, in order (draining) | {drain_rate:.0}/s = **{delivered_ratio:.3}×** baseline | ≥ 0.15× |"
    );
    println!(
        "| same, target with `batch: 64` (draining) | {:.0} events/s = **{:.3}×** baseline; {} lost, {} out of order, {} dup | ≥ 0.15× |",
        batched.drain_rate,
        batched.drain_rate / base.rps(),
        batched.missing,
        batched.out_of_order,
        batched.duplicates
    );
    println!(
        "| delivered/s during full ingest load | {:.0}/s | — |",
        delivered_during as f64 / ing.elapsed.as_secs_f64()
    );
    println!(
        "| lost / out of order / duplicates | {missing} / {out_of_order} / {duplicates} | 0 / 0 / — |"
    );
    for (rate, _, ack, e2e, missing) in &fixed {
        println!(
            "| at {rate} ev/s: ack p50/p99/max | {:.2} / {:.2} / {:.2} ms | p99 ≤ 10 ms at 1000 |",
            ack.p50, ack.p99, ack.max
        );
        println!(
            "| at {rate} ev/s: end-to-end p50/p99/max | {:.2} / {:.2} / {:.2} ms ({missing} lost) | p99 ≤ 50 ms at 200 |",
            e2e.p50, e2e.p99, e2e.max
        );
    }
    for row in prune::table_rows(&prune, PRUNE_RATE, prune_empty) {
        println!("{row}");
    }
    for row in threads::table_rows(&threads) {
        println!("{row}");
    }
    for row in replies::table_rows(&replies) {
        println!("{row}");
    }
    println!("| RSS idle | {:.1} MiB | ≤ 15 |", idle.0);
    println!(
        "| RSS peak under load | {:.1} MiB | ≤ 60 |",
        load_peak.max(load_peak_after)
    );
    println!(
        "| RSS with {} queued (peak) | {backlog_rss:.1} MiB ({backlog_peak:.1}) | < 80 |",
        bl.ok
    );
    println!("| start-up to ready (median of 5) | {startup_ms:.1} ms | — |");
    println!(
        "| routing 10 → 1,000 routes | {:.0} → {:.0} req/s: cost {:.0}% | ≤ 20% |",
        ing.rps(),
        thousand.rps(),
        routing_cost * 100.0
    );
    println!();
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    write_json("relay-bench.json", &text)?;
    match (threads.verdict(), replies.verdict()) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Err(a), Err(b)) => Err(format!("{a}; {b}").into()),
    }
}
