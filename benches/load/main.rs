//! The end-to-end load harness: `cargo bench --bench load`.
//!
//! In one run, all on 127.0.0.1, it starts
//! 1. a **baseline**: a bare hyper server (this binary re-executed) that
//!    reads each body, parses it as JSON and answers 200 — the ceiling for
//!    any ingest endpoint on this machine;
//! 2. the **relay** (the release `crisp-relay` binary cargo built for this
//!    bench) with its real SQLite store, routing every event to a webhook
//!    target on a local **sink** that runs in this process;
//!
//! and drives both with the same load: the 107 sample Crisp events, each
//! tagged with `data.bench = "run:connection:n:sent_µs"` so the sink can
//! measure end-to-end latency, check per-connection order (a connection
//! sends its next event only after the previous one was acknowledged, so
//! FIFO delivery must keep its order) and find losses and duplicates.
//!
//! Prints a table and JSON (also written to `target/relay-bench.json`).
//! Figures are ratios against the baseline measured in the same run, since
//! the machine is shared with the load generator and may be noisy.
//!
//! `cargo bench --bench load -- --quick` runs shorter phases;
//! `cargo bench --bench load -- soak --minutes 30 --rate 200` runs the soak;
//! `cargo bench --bench load -- prune` (with `--quick` or not) runs only the
//! prune phase and its reference: the relay started on a store holding
//! 1,000,000 delivered rows past retention, which it prunes as it starts,
//! under the same 1,000 events/s load as on an empty store;
//! `cargo bench --bench load -- threads` (with `--quick` or not) runs only
//! the threads phase: 20 conversations × 10 messages (4 with `--quick`) to
//! a Discord forum webhook with a thread per conversation at Discord's
//! limit of 5 requests per 2 s, with coalescing off and on;
//! `cargo bench --bench load -- replies` (with `--quick` or not) runs only
//! the replies phase: agents' replies in Slack threads, signed Events API
//! requests at 50 per second for 20 s (5 s with `--quick`), timed to their
//! arrival at a Crisp API sink, with the shipped `crisp.rate_limit` and
//! then with it lifted;
//! `CRISP_RELAY_BENCH_DATABASE_URL=postgres://… cargo bench --bench load --
//! postgres` (with `--quick` or not) runs only the postgres phase: ingest
//! and delivery on a PostgreSQL store with one replica and two, against
//! SQLite and the baseline, and a replica's failover (SIGKILL).
//!
//! `CRISP_RELAY_BENCH_BIN=/path/to/crisp-relay cargo bench --bench load`
//! runs that relay binary instead of the one cargo built (the harness still
//! builds its own), to measure another build, such as an older release,
//! with the same harness in the same session. The bench config uses only
//! keys that build must know (but the replies phase needs replies, and its
//! second run `crisp.rate_limit`).
//!
//! The harness is split by job: `sink.rs` (the destination), `baseline.rs`,
//! `relay.rs` (starting and stopping the relay, its config), `drive.rs`
//! (the load generator), `report.rs` (latency stats, table, JSON),
//! `prune.rs` (the prune phase), `threads.rs` (the threads phase) with
//! `forum.rs` (its Discord forum webhook), `replies.rs` (the replies phase)
//! with `replies_sinks.rs` (its Slack and Crisp APIs), `postgres.rs` (the
//! postgres phase) with `postgres_failover.rs` and `soak.rs`; this
//! file holds the command line and the full run's phases.

mod baseline;
mod drive;
mod forum;
mod postgres;
mod postgres_failover;
mod prune;
mod relay;
mod replies;
mod replies_sinks;
mod report;
mod sink;
mod soak;
mod threads;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use baseline::{baseline_server, measure_baseline};
use drive::{Bodies, Load, Pace, drive, ingest_then_drain, paced, wait_delivered};
use relay::{RelaySetup, free_port, queue_depth, start_relay, webhook_target};
use report::{Full, Lat, cpu_secs, lat, print_full, rss_mib};
use serde_json::json;
use sink::{Sink, SinkBehaviour};
use soak::soak;

const KEY: &str = "bench-key";
const CONNECTIONS: usize = 64;
const BACKLOG: u64 = 100_000;
/// The paced load of the prune phase, and of its empty-store reference.
const PRUNE_RATE: u64 = 1000;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("__baseline") {
        return match baseline_server(args.get(1).map(String::as_str).unwrap_or("0")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("baseline: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if std::env::var_os(relay::BIN_ENV).is_some_and(|p| !p.is_empty()) {
        let bin = relay::relay_binary();
        if !bin.is_file() {
            eprintln!(
                "relay-bench: {} names {}, which is not a file",
                relay::BIN_ENV,
                bin.display()
            );
            return ExitCode::FAILURE;
        }
        eprintln!(
            "relay-bench: relay binary {} (from {})",
            bin.display(),
            relay::BIN_ENV
        );
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = if args.first().map(String::as_str) == Some("soak") {
        rt.block_on(soak(&args[1..]))
    } else if args.first().map(String::as_str) == Some("prune") {
        rt.block_on(prune_only(args.iter().any(|a| a == "--quick")))
    } else if args.first().map(String::as_str) == Some("threads") {
        rt.block_on(threads_only(args.iter().any(|a| a == "--quick")))
    } else if args.first().map(String::as_str) == Some("postgres") {
        rt.block_on(postgres_only(args.iter().any(|a| a == "--quick")))
    } else if args.first().map(String::as_str) == Some("replies") {
        rt.block_on(replies_only(args.iter().any(|a| a == "--quick")))
    } else {
        rt.block_on(full(args.iter().any(|a| a == "--quick")))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------- the run

async fn full(quick: bool) -> Res<()> {
    let secs = if quick { 3 } else { 10 };
    let d = Duration::from_secs(secs);
    let epoch = Instant::now();
    let bodies = Arc::new(Bodies::load()?);
    let sink = Sink::start(epoch).await?;
    let uri = format!("/crisp/hooks?key={KEY}");
    let ten = RelaySetup {
        filler_routes: 9,
        target: webhook_target(&sink),
        template: None,
    };
    eprintln!(
        "relay-bench: {} sample events, {CONNECTIONS} connections, {secs} s per load phase",
        bodies.parts.len()
    );

    // Start-up time and idle RSS.
    let mut startups = Vec::new();
    let mut idle = (0.0, 0.0);
    for _ in 0..5 {
        let (relay, took) = start_relay(&ten).await?;
        startups.push(took.as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        idle = rss_mib(relay.pid());
        relay.stop();
    }
    startups.sort_by(f64::total_cmp);
    let startup_ms = startups[startups.len() / 2];
    eprintln!(
        "  start-up to ready: median {startup_ms:.1} ms; idle RSS {:.1} MiB",
        idle.0
    );

    // Baseline.
    let (base, base_lat, base_cpu) = measure_baseline(&bodies, epoch, d).await?;

    // Relay, 10 routes, unlimited sink: ingest and delivery under load.
    sink.reset("ingest", SinkBehaviour::default());
    let (relay, _) = start_relay(&ten).await?;
    let relay_cpu0 = cpu_secs(&relay.pid().to_string());
    let mut ing = drive(
        Load {
            addr: relay.ingest,
            uri: uri.clone(),
            connections: CONNECTIONS,
            run: "ingest".into(),
            pace: Pace::Closed {
                duration: d,
                total: u64::MAX,
            },
        },
        bodies.clone(),
        epoch,
    )
    .await?;
    let relay_cpu = cpu_secs(&relay.pid().to_string()) - relay_cpu0;
    let delivered_during = sink.accepted.load(Ordering::Relaxed);
    let (_, load_peak) = rss_mib(relay.pid());
    let ing_lat = lat(&mut ing.ack_us);
    eprintln!(
        "  relay ingest: {:.0} req/s (p99 {:.2} ms), {} rejected, {} errors; relay used {:.2} CPU-s; delivered during load {:.0}/s",
        ing.rps(),
        ing_lat.p99,
        ing.rejected,
        ing.errors,
        relay_cpu,
        delivered_during as f64 / ing.elapsed.as_secs_f64()
    );
    // Drain: delivery alone, then everything must have arrived, in order.
    let drain_from = sink.accepted.load(Ordering::Relaxed);
    let drain_start = Instant::now();
    tokio::time::sleep(d).await;
    let drain_rate = (sink.accepted.load(Ordering::Relaxed) - drain_from) as f64
        / drain_start.elapsed().as_secs_f64();
    let missing = wait_delivered(
        &sink,
        &ing.acked,
        Duration::from_secs(if quick { 120 } else { 300 }),
    )
    .await;
    let (out_of_order, duplicates) = {
        let b = sink.book.lock().unwrap_or_else(|p| p.into_inner());
        (b.out_of_order, b.duplicates)
    };
    let (_, load_peak_after) = rss_mib(relay.pid());
    relay.stop();
    eprintln!(
        "  delivery: {drain_rate:.0}/s draining the backlog; {missing} of {} acknowledged missing, {out_of_order} out of order, {duplicates} duplicates",
        ing.ok
    );

    // The same with `batch: 64`: one request carries up to 64 events. It
    // keeps up with full-speed ingest, so the sink stalls while ingest runs
    // (the first send waits; the timeout outlasts the stall) to leave a
    // backlog to drain.
    let batched = ingest_then_drain(
        &sink,
        &bodies,
        epoch,
        "batched",
        format!(
            "{{kind: webhook, url: \"http://{}/hook\", timeout: 60s, batch: 64}}",
            sink.addr
        ),
        d,
        true,
    )
    .await?;
    eprintln!(
        "  batch 64: ingest {:.0} req/s, delivered during load {:.0}/s; {:.0} events/s draining; {} missing, {} out of order, {} duplicates",
        batched.ingest_rps,
        batched.during_rate,
        batched.drain_rate,
        batched.missing,
        batched.out_of_order,
        batched.duplicates
    );

    // Fixed rates.
    let mut fixed = Vec::new();
    for rate in [200u64, 1000] {
        fixed.push(fixed_rate(&sink, &bodies, epoch, &ten, rate, d).await?);
    }

    // The 1,000 ev/s load again, on a relay that prunes 1,000,000 delivered
    // rows past retention as it starts.
    let prune = prune::phase(&sink, &bodies, epoch, &ten, PRUNE_RATE, d).await?;

    // Backlog of 100,000 with the sink gone.
    let gone = free_port()?;
    let (relay, _) = start_relay(&RelaySetup {
        filler_routes: 9,
        target: format!("{{kind: webhook, url: \"http://127.0.0.1:{gone}/hook\", timeout: 5s}}"),
        template: None,
    })
    .await?;
    let bl = drive(
        Load {
            addr: relay.ingest,
            uri: uri.clone(),
            connections: CONNECTIONS,
            run: "backlog".into(),
            pace: Pace::Closed {
                duration: Duration::from_secs(600),
                total: BACKLOG,
            },
        },
        bodies.clone(),
        epoch,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (backlog_rss, backlog_peak) = rss_mib(relay.pid());
    let pending = queue_depth(relay.admin).await.unwrap_or(0);
    relay.stop();
    eprintln!(
        "  backlog: {} acknowledged, {pending} pending; RSS {backlog_rss:.1} MiB, peak {backlog_peak:.1} MiB",
        bl.ok
    );

    // 1,000 routes.
    sink.reset("routes", SinkBehaviour::default());
    let (relay, _) = start_relay(&RelaySetup {
        filler_routes: 999,
        target: webhook_target(&sink),
        template: None,
    })
    .await?;
    let thousand = drive(
        Load {
            addr: relay.ingest,
            uri: uri.clone(),
            connections: CONNECTIONS,
            run: "routes".into(),
            pace: Pace::Closed {
                duration: d,
                total: u64::MAX,
            },
        },
        bodies.clone(),
        epoch,
    )
    .await?;
    relay.stop();
    eprintln!("  1,000 routes: {:.0} req/s", thousand.rps());

    // Threads in a Discord forum at its real limit, coalescing off and on.
    let threads = threads::phase(quick).await?;

    // Agents' replies from Slack threads to Crisp at 50/s, with the
    // shipped `crisp.rate_limit` and without it.
    let replies = replies::phase(quick).await?;

    print_full(Full {
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
    })
}

/// A paced load of `rate` events/s for `d` on a fresh relay: `(rate, sent
/// per second, ack latency, end-to-end latency, missing)`.
async fn fixed_rate(
    sink: &Sink,
    bodies: &Arc<Bodies>,
    epoch: Instant,
    setup: &RelaySetup,
    rate: u64,
    d: Duration,
) -> Res<(u64, f64, Lat, Lat, u64)> {
    let run = format!("rate{rate}");
    sink.reset(&run, SinkBehaviour::default());
    let (relay, _) = start_relay(setup).await?;
    let (mut r, missing, mut e2e) = paced(&relay, sink, bodies, epoch, &run, rate, d).await?;
    relay.stop();
    let ack = lat(&mut r.ack_us);
    let e2e = lat(&mut e2e);
    eprintln!(
        "  {rate}/s: sent {:.0}/s, ack p50 {:.2} p99 {:.2} max {:.2} ms; end-to-end p50 {:.2} p99 {:.2} max {:.2} ms; {missing} missing",
        r.rps(),
        ack.p50,
        ack.p99,
        ack.max,
        e2e.p50,
        e2e.p99,
        e2e.max
    );
    Ok((rate, r.rps(), ack, e2e, missing))
}

/// `prune` alone: the paced load on an empty store, then on one the relay
/// prunes as it starts; a table and JSON (also written to
/// `target/relay-bench-prune.json`).
async fn prune_only(quick: bool) -> Res<()> {
    let secs = if quick { 3 } else { 10 };
    let d = Duration::from_secs(secs);
    let epoch = Instant::now();
    let bodies = Arc::new(Bodies::load()?);
    let sink = Sink::start(epoch).await?;
    let ten = RelaySetup {
        filler_routes: 9,
        target: webhook_target(&sink),
        template: None,
    };
    eprintln!(
        "relay-bench prune: {PRUNE_RATE} ev/s for {secs} s on an empty store, then on one holding {} delivered rows past retention",
        prune::ROWS
    );
    let (_, _, empty, _, _) = fixed_rate(&sink, &bodies, epoch, &ten, PRUNE_RATE, d).await?;
    let run = prune::phase(&sink, &bodies, epoch, &ten, PRUNE_RATE, d).await?;
    println!();
    println!("| measure | figure | goal |");
    println!("|---|---|---|");
    println!(
        "| at {PRUNE_RATE} ev/s, empty store: ack p50/p99/max | {:.2} / {:.2} / {:.2} ms | p99 ≤ 10 ms at 1000 |",
        empty.p50, empty.p99, empty.max
    );
    for row in prune::table_rows(&run, PRUNE_RATE, Some(empty)) {
        println!("{row}");
    }
    println!();
    let report = json!({
        "machine": report::machine(),
        "relay_binary": relay::relay_binary().display().to_string(),
        "seconds_per_phase": secs,
        "prune": prune::to_json(&run, PRUNE_RATE, Some(empty)),
    });
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    report::write_json("relay-bench-prune.json", &text)?;
    Ok(())
}

/// `threads` alone: the threads phase; a table and JSON (also written to
/// `target/relay-bench-threads.json`). Fails if a conversation's messages
/// did not all arrive once, in one thread, in order.
async fn threads_only(quick: bool) -> Res<()> {
    let run = threads::phase(quick).await?;
    println!();
    println!("| measure | figure | goal |");
    println!("|---|---|---|");
    for row in threads::table_rows(&run) {
        println!("{row}");
    }
    println!();
    let report = json!({
        "machine": report::machine(),
        "relay_binary": relay::relay_binary().display().to_string(),
        "threads": threads::to_json(&run),
    });
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    report::write_json("relay-bench-threads.json", &text)?;
    run.verdict()
}

/// `replies` alone: the replies phase; a table and JSON (also written to
/// `target/relay-bench-replies.json`). Fails unless every reply was
/// acknowledged 200 and reached Crisp once, in its conversation's order.
async fn replies_only(quick: bool) -> Res<()> {
    let phase = replies::phase(quick).await?;
    println!();
    println!("| measure | figure | goal |");
    println!("|---|---|---|");
    for row in replies::table_rows(&phase) {
        println!("{row}");
    }
    println!();
    let report = json!({
        "machine": report::machine(),
        "relay_binary": relay::relay_binary().display().to_string(),
        "replies": replies::to_json(&phase),
    });
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    report::write_json("relay-bench-replies.json", &text)?;
    phase.verdict()
}

/// `postgres` alone: the relay on a PostgreSQL store (one replica, two,
/// failover) against SQLite and the baseline in the same run; a table and
/// JSON (also written to `target/relay-bench-postgres.json`). Skipped
/// without `CRISP_RELAY_BENCH_DATABASE_URL`; fails unless every
/// acknowledged event arrived, in order, and once (but for a failover's
/// repeats).
async fn postgres_only(quick: bool) -> Res<()> {
    let Some(phase) = postgres::phase(quick).await? else {
        return Ok(());
    };
    println!();
    println!("| measure | figure | goal |");
    println!("|---|---|---|");
    for row in phase.table_rows() {
        println!("{row}");
    }
    println!();
    let report = json!({
        "machine": report::machine(),
        "relay_binary": relay::relay_binary().display().to_string(),
        "postgres": phase.to_json(),
    });
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    report::write_json("relay-bench-postgres.json", &text)?;
    phase.verdict()
}
