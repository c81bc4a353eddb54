//! The postgres phase (`cargo bench --bench load -- postgres`, alone): the
//! relay on the PostgreSQL store named by `CRISP_RELAY_BENCH_DATABASE_URL`
//! (skipped, saying so, when it is not set), each run in a schema of its
//! own (`bench_<random>`, dropped at the end), against the bare-hyper
//! baseline and the SQLite store measured in the same run with the same
//! 64-connection load and the same relay setup (10 routes, one webhook
//! target on the sink):
//! 1. ingest (the sink stalled meanwhile), then the backlog drained
//!    (delivered/s; every acknowledged event must arrive once, in order;
//!    the target's timeout is 60 s for the stall), on SQLite, on PostgreSQL with one
//!    replica and with two (two relays on one schema, the generator's
//!    connections split across both);
//! 2. failover (`postgres_failover.rs`): a steady stream to two replicas,
//!    the one holding the target's lease SIGKILLed, with `lease: 2s` and
//!    (without `--quick`) the default `10s`.
//!
//! Table and JSON (also written to `target/relay-bench-postgres.json`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{Connection as _, PgConnection};

use crate::baseline::measure_baseline;
use crate::drive::{Bodies, Load, LoadResult, Pace, drive_split, wait_delivered};
use crate::postgres_failover::{self, FailoverRun};
use crate::relay::{RelayProc, RelaySetup, Start, start_relay, start_relay_in, webhook_target};
use crate::report::{Lat, cpu_secs, lat, lat_json, round2};
use crate::sink::{Sink, SinkBehaviour};
use crate::{CONNECTIONS, KEY, Res};

/// Names the database; the phase is skipped without it.
pub const URL_ENV: &str = "CRISP_RELAY_BENCH_DATABASE_URL";

/// A schema of its own on the bench's database; `url` connects into it.
pub struct Schema {
    base: String,
    pub name: String,
    pub url: String,
}

impl Schema {
    pub async fn create(base: &str) -> Res<Self> {
        let name = format!("bench_{:08x}", fastrand::u32(..));
        let mut conn = PgConnection::connect(base).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        Ok(Self {
            base: base.to_owned(),
            name,
            url,
        })
    }

    /// The relay's `store:` section for this schema.
    pub fn store(&self, lease_secs: u64) -> String {
        format!("{{url: \"{}\", lease: {lease_secs}s}}", self.url)
    }

    /// Drops the schema; says so on stderr when it cannot.
    pub async fn drop_schema(self) {
        let dropped = async {
            let mut conn = PgConnection::connect(&self.base).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA {} CASCADE",
                self.name
            )))
            .execute(&mut conn)
            .await?;
            conn.close().await?;
            Res::Ok(())
        };
        if let Err(e) = dropped.await {
            eprintln!("  (could not drop schema {}: {e})", self.name);
        }
    }
}

/// Starts one replica on `store` in a directory of its own, its log (JSON
/// lines) in `relay.log` there.
pub async fn start_replica(setup: &RelaySetup, store: &str) -> Res<RelayProc> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("relay.log");
    let start = Start {
        store,
        log: Some(&log),
        ..Start::default()
    };
    let (mut relay, _) = start_relay_in(dir.path(), setup, &start).await?;
    relay.proc._dir = Some(dir);
    Ok(relay)
}

/// The warnings and errors in a replica's log.
pub fn log_problems(relay: &RelayProc) -> Vec<String> {
    let Some(dir) = &relay.proc._dir else {
        return Vec::new();
    };
    std::fs::read_to_string(dir.path().join("relay.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
        .map(str::to_owned)
        .collect()
}

/// CPU seconds each PostgreSQL server process has used.
fn db_cpu() -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid.parse::<u32>().is_ok()
            && std::fs::read_to_string(entry.path().join("comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        {
            out.insert(pid.clone(), cpu_secs(&pid));
        }
    }
    out
}

/// The server's counters: transactions committed in the database, and WAL
/// flushes (fsyncs) of the whole cluster.
async fn db_counters(base: &str) -> Option<(i64, i64)> {
    let mut conn = PgConnection::connect(base).await.ok()?;
    let row: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()), \
                (SELECT wal_sync FROM pg_stat_wal)",
    )
    .fetch_one(&mut conn)
    .await
    .ok()?;
    let _ = conn.close().await;
    Some(row)
}

/// What one ingest-then-drain run measured.
pub struct IngestRun {
    pub label: &'static str,
    pub replicas: usize,
    pub load: LoadResult,
    pub ack: Lat,
    /// CPU seconds during the ingest load: the relays, the database's
    /// processes (PostgreSQL), this process (generator and sink).
    pub relay_cpu: f64,
    pub db_cpu: Option<f64>,
    /// Per second during the ingest load: transactions committed in the
    /// database and WAL fsyncs of the cluster (PostgreSQL).
    pub commits_per_s: Option<f64>,
    pub wal_syncs_per_s: Option<f64>,
    pub drain_rate: f64,
    pub missing: u64,
    pub out_of_order: u64,
    pub duplicates: u64,
    pub log_problems: usize,
}

/// The closed-loop load on [`CONNECTIONS`] connections split over
/// `relays` for `d`, then delivery alone for `d` (the sink's accepted
/// rate), then every acknowledged event must arrive once, in order.
async fn ingest_run(
    sink: &Sink,
    bodies: &Arc<Bodies>,
    epoch: Instant,
    label: &'static str,
    relays: &[RelayProc],
    base: Option<&str>,
    d: Duration,
) -> Res<IngestRun> {
    // The bench tag's run: `sqlite`, `pg1`, `pg2`.
    let run = match base {
        None => "sqlite".to_owned(),
        Some(_) => format!("pg{}", relays.len()),
    };
    sink.reset(&run, SinkBehaviour::default());
    // The sink stalls while ingest runs, so that ingest is measured alone
    // and the drain starts from the whole backlog (a relay that delivers
    // as fast as it ingests would leave none).
    sink.held.send_replace(true);
    let pids: Vec<String> = relays.iter().map(|r| r.pid().to_string()).collect();
    let relay_cpu = || pids.iter().map(|p| cpu_secs(p)).sum::<f64>();
    let (cpu0, db0) = (relay_cpu(), db_cpu());
    let counters0 = match base {
        Some(b) => db_counters(b).await,
        None => None,
    };
    let others: Vec<_> = relays[1..].iter().map(|r| r.ingest).collect();
    let mut load = drive_split(
        Load {
            addr: relays[0].ingest,
            uri: format!("/crisp/hooks?key={KEY}"),
            connections: CONNECTIONS,
            run,
            pace: Pace::Closed {
                duration: d,
                total: u64::MAX,
            },
        },
        &others,
        bodies.clone(),
        epoch,
    )
    .await?;
    let secs = load.elapsed.as_secs_f64();
    let relay_cpu = relay_cpu() - cpu0;
    let db_cpu = base.map(|_| {
        db_cpu()
            .iter()
            .map(|(pid, after)| after - db0.get(pid).copied().unwrap_or(0.0))
            .sum::<f64>()
    });
    let counters1 = match base {
        Some(b) => db_counters(b).await,
        None => None,
    };
    let per_s =
        |f: fn((i64, i64)) -> i64| Some((f(counters1?) - f(counters0?)) as f64 / secs.max(1e-9));
    let (commits_per_s, wal_syncs_per_s) = (per_s(|c| c.0), per_s(|c| c.1));
    let ack = lat(&mut load.ack_us);
    // Delivery alone for `d`, from the backlog ingest left.
    sink.held.send_replace(false);
    let from = sink.accepted.load(Ordering::Relaxed);
    let start = Instant::now();
    while start.elapsed() < d && sink.unique() < load.acked.len() as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain_rate =
        (sink.accepted.load(Ordering::Relaxed) - from) as f64 / start.elapsed().as_secs_f64();
    let missing = wait_delivered(sink, &load.acked, Duration::from_secs(300)).await;
    let (out_of_order, duplicates) = {
        let b = sink.book.lock().unwrap_or_else(|p| p.into_inner());
        (b.out_of_order, b.duplicates)
    };
    let log_problems = relays.iter().map(|r| log_problems(r).len()).sum();
    let r = IngestRun {
        label,
        replicas: relays.len(),
        load,
        ack,
        relay_cpu,
        db_cpu,
        commits_per_s,
        wal_syncs_per_s,
        drain_rate,
        missing,
        out_of_order,
        duplicates,
        log_problems,
    };
    eprintln!(
        "  {label}: ingest {:.0} req/s (p50 {:.2} p99 {:.2} ms), {} rejected, {} errors; CPU-s relays {:.2}, database {}, generator {:.2}; \
         commits/s {}, WAL fsyncs/s {}; draining {:.0}/s; {} of {} missing, {} out of order, {} duplicates; {} warnings or errors logged",
        r.load.rps(),
        r.ack.p50,
        r.ack.p99,
        r.load.rejected,
        r.load.errors,
        r.relay_cpu,
        opt(r.db_cpu, 2),
        r.load.own_cpu,
        opt(r.commits_per_s, 0),
        opt(r.wal_syncs_per_s, 0),
        r.drain_rate,
        r.missing,
        r.load.ok,
        r.out_of_order,
        r.duplicates,
        r.log_problems,
    );
    Ok(r)
}

fn opt(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "—".to_owned(), |x| format!("{x:.decimals$}"))
}

/// Everything the phase measured.
pub struct PgPhase {
    pub secs: u64,
    pub base: LoadResult,
    pub base_lat: Lat,
    pub runs: Vec<IngestRun>,
    pub failovers: Vec<FailoverRun>,
}

/// The phase; `None` (after saying so) without [`URL_ENV`].
pub async fn phase(quick: bool) -> Res<Option<PgPhase>> {
    let Some(url) = std::env::var(URL_ENV).ok().filter(|u| !u.is_empty()) else {
        eprintln!(
            "relay-bench postgres: skipped: {URL_ENV} is not set (e.g. postgres://postgres@127.0.0.1:5432/test; \
             the user must be allowed to CREATE SCHEMA)"
        );
        return Ok(None);
    };
    let secs = if quick { 3 } else { 10 };
    let d = Duration::from_secs(secs);
    let epoch = Instant::now();
    let bodies = Arc::new(Bodies::load()?);
    let sink = Sink::start(epoch).await?;
    let setup = RelaySetup {
        filler_routes: 9,
        target: webhook_target(&sink),
        template: None,
    };
    eprintln!(
        "relay-bench postgres: {CONNECTIONS} connections, {secs} s per load phase; baseline, SQLite, PostgreSQL with 1 and 2 replicas, failover"
    );
    let (base, base_lat, _) = measure_baseline(&bodies, epoch, d).await?;
    // The relay's first send waits while the sink is held: a timeout that
    // outlasts the ingest load.
    let held = RelaySetup {
        target: format!(
            "{{kind: webhook, url: \"http://{}/hook\", timeout: 60s}}",
            sink.addr
        ),
        ..setup
    };

    let mut runs = Vec::new();
    let (relay, _) = start_relay(&held).await?;
    let r = ingest_run(&sink, &bodies, epoch, "SQLite", &[relay], None, d).await;
    runs.push(r?);
    for (replicas, label) in [(1, "PostgreSQL, 1 replica"), (2, "PostgreSQL, 2 replicas")] {
        let schema = Schema::create(&url).await?;
        let r = async {
            let mut relays = Vec::new();
            for _ in 0..replicas {
                relays.push(start_replica(&held, &schema.store(10)).await?);
            }
            let r = ingest_run(&sink, &bodies, epoch, label, &relays, Some(&url), d).await;
            for relay in relays {
                relay.stop();
            }
            r
        }
        .await;
        schema.drop_schema().await;
        runs.push(r?);
    }

    let mut failovers = Vec::new();
    let leases: &[u64] = if quick { &[2] } else { &[2, 10] };
    for &lease in leases {
        failovers.push(postgres_failover::run(&sink, &bodies, epoch, &setup, &url, lease).await?);
    }
    Ok(Some(PgPhase {
        secs,
        base,
        base_lat,
        runs,
        failovers,
    }))
}

impl PgPhase {
    /// Fails unless every acknowledged event arrived, in order, and (but
    /// for a failover's repeats) once.
    pub fn verdict(&self) -> Res<()> {
        let mut bad = Vec::new();
        for r in &self.runs {
            if r.missing + r.out_of_order + r.duplicates > 0 {
                bad.push(format!(
                    "{}: {} missing, {} out of order, {} duplicated",
                    r.label, r.missing, r.out_of_order, r.duplicates
                ));
            }
        }
        for f in &self.failovers {
            if f.lost + f.out_of_order > 0 || f.takeover_ms.is_none() {
                bad.push(format!(
                    "failover with lease {} s: {} lost, {} out of order, {}",
                    f.lease_secs,
                    f.lost,
                    f.out_of_order,
                    if f.takeover_ms.is_some() {
                        "taken over"
                    } else {
                        "never taken over"
                    }
                ));
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(format!("postgres phase: {}", bad.join("; ")).into())
        }
    }

    pub fn table_rows(&self) -> Vec<String> {
        let base = self.base.rps();
        let mut rows = vec![format!(
            "| baseline ingest ({CONNECTIONS} conns) | {base:.0} req/s (p50 {:.2} / p99 {:.2} ms) | — |",
            self.base_lat.p50, self.base_lat.p99
        )];
        for r in &self.runs {
            rows.push(format!(
                "| {} ingest ({CONNECTIONS} conns, durable) | {:.0} req/s = **{:.2}×** baseline; ack p50 {:.2} / p99 {:.2} ms | — |",
                r.label,
                r.load.rps(),
                r.load.rps() / base,
                r.ack.p50,
                r.ack.p99
            ));
            rows.push(format!(
                "| {}: CPU-s in {} s of ingest: relays / database / generator and sink; commits/s, WAL fsyncs/s | {:.1} / {} / {:.1}; {}, {} | — |",
                r.label,
                self.secs,
                r.relay_cpu,
                opt(r.db_cpu, 1),
                r.load.own_cpu,
                opt(r.commits_per_s, 0),
                opt(r.wal_syncs_per_s, 0)
            ));
            rows.push(format!(
                "| {}: delivered/s, one webhook, one request per event (draining) | {:.0}/s = **{:.3}×** baseline; {} of {} lost, {} out of order, {} dup | — |",
                r.label,
                r.drain_rate,
                r.drain_rate / base,
                r.missing,
                r.load.ok,
                r.out_of_order,
                r.duplicates
            ));
        }
        for f in &self.failovers {
            rows.extend(postgres_failover::table_rows(f));
        }
        rows
    }

    pub fn to_json(&self) -> Value {
        let base = self.base.rps();
        json!({
            "seconds_per_phase": self.secs,
            "connections": CONNECTIONS,
            "baseline": {"requests_per_s": base.round(), "ack": lat_json(self.base_lat)},
            "ingest": self.runs.iter().map(|r| json!({
                "store": r.label,
                "replicas": r.replicas,
                "requests_per_s": r.load.rps().round(),
                "ratio_to_baseline": round2(r.load.rps() / base),
                "ack": lat_json(r.ack),
                "rejected": r.load.rejected,
                "errors": r.load.errors,
                "relay_cpu_s": round2(r.relay_cpu),
                "database_cpu_s": r.db_cpu.map(round2),
                "generator_cpu_s": round2(r.load.own_cpu),
                "commits_per_s": r.commits_per_s.map(f64::round),
                "wal_fsyncs_per_s": r.wal_syncs_per_s.map(f64::round),
                "delivered_per_s_draining": r.drain_rate.round(),
                "delivered_ratio_to_baseline": (r.drain_rate / base * 1000.0).round() / 1000.0,
                "acknowledged": r.load.ok,
                "missing": r.missing,
                "out_of_order": r.out_of_order,
                "duplicates": r.duplicates,
                "log_warnings_or_errors": r.log_problems,
            })).collect::<Vec<_>>(),
            "failover": self.failovers.iter().map(postgres_failover::to_json).collect::<Vec<_>>(),
        })
    }
}

/// Whether `relay`'s `/readyz` lists `target` among `store.targets_here`.
pub async fn holds(relay: &RelayProc, target: &str) -> bool {
    let Ok((_, body)) = crate::relay::http_get(relay.admin, "/readyz").await else {
        return false;
    };
    serde_json::from_str::<Value>(&body).is_ok_and(|v| {
        v["store"]["targets_here"]
            .as_array()
            .is_some_and(|a| a.iter().any(|t| t == target))
    })
}
