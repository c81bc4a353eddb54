//! The prune phase (`cargo bench --bench load -- prune` alone, and part of
//! the full run): a store holding 1,000,000 delivered deliveries and their
//! events, two days old, which the relay prunes as it starts (retention
//! 1d) while a paced load of 1,000 events/s measures ack latency; the same
//! load on an empty store is the reference.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection as _, SqliteConnection};

use crate::Res;
use crate::drive::{Bodies, paced};
use crate::relay::{RelaySetup, Start, http_get, start_relay_in};
use crate::report::{Lat, lat, round2};
use crate::sink::{Sink, SinkBehaviour};

/// Delivered deliveries (one per event) in the store before the relay starts.
pub const ROWS: u64 = 1_000_000;
/// Events, and as many deliveries, per transaction while filling the store.
const FILL_CHUNK: u64 = 100_000;
/// How old the rows are: past the retention the relay is given.
const AGE_MS: i64 = 2 * 86_400_000;
/// The store section: the bench's store, with a one-day retention.
const STORE: &str = "{path: data/relay.db, retention: 1d}";
/// The line the relay logs when a prune removed rows.
const PRUNED: &str = "pruned delivered rows past retention";
/// A small event body.
const BODY: &str = r#"{"event":"message:send","data":{"content":"old"}}"#;

/// What the prune phase measured.
pub struct PruneRun {
    /// Deliveries the relay said it pruned, if it said so.
    pub rows: Option<u64>,
    /// Events it said it pruned (relays that report them).
    pub events: Option<u64>,
    /// From the relay's spawn to its log line saying the prune is done.
    pub prune_secs: Option<f64>,
    /// From spawn to the ingest port accepting connections, when the load
    /// starts.
    pub listening_ms: f64,
    /// From spawn to `/readyz` answering 200, if it did.
    pub ready_ms: Option<f64>,
    /// Filling the store directly with sqlx.
    pub fill_secs: f64,
    pub sent_rps: f64,
    /// Events answered other than 200, and failed requests.
    pub rejected: u64,
    pub errors: u64,
    pub ack: Lat,
    pub e2e: Lat,
    pub missing: u64,
    /// Rows in the store once the relay stopped.
    pub left_events: i64,
    pub left_deliveries: i64,
    /// Warnings and errors the relay logged.
    pub log_problems: Vec<String>,
}

/// Fills a store with [`ROWS`] delivered rows past retention (schema
/// created by the relay itself, started once and stopped), then starts the
/// relay on it and at once drives `rate` events/s for `d`, watching its log
/// for the end of the prune.
pub async fn phase(
    sink: &Sink,
    bodies: &Arc<Bodies>,
    epoch: Instant,
    setup: &RelaySetup,
    rate: u64,
    d: Duration,
) -> Res<PruneRun> {
    let dir = tempfile::tempdir()?;
    let mut start = Start {
        store: STORE,
        ..Start::default()
    };
    let (relay, _) = start_relay_in(dir.path(), setup, &start).await?;
    relay.stop();
    let db = dir.path().join("data/relay.db");
    let filling = Instant::now();
    fill(&db, ROWS).await?;
    let fill_secs = filling.elapsed().as_secs_f64();
    eprintln!(
        "  prune: store filled with {ROWS} delivered rows and their events, two days old, in {fill_secs:.1} s"
    );

    sink.reset("prune", SinkBehaviour::default());
    let log = dir.path().join("relay.log");
    let watch = Watch::spawn(log.clone());
    start.log = Some(&log);
    // The load starts as soon as the ingest port accepts connections: a
    // relay may not answer `/readyz` while it prunes.
    start.ready = false;
    let (relay, listening) = start_relay_in(dir.path(), setup, &start).await?;
    let spawned = Instant::now() - listening;
    let admin = relay.admin;
    let ready = tokio::spawn(async move {
        while spawned.elapsed() < Duration::from_secs(600) {
            if let Ok((200, _)) = http_get(admin, "/readyz").await {
                return Some(spawned.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    });
    let (mut r, missing, mut e2e) = paced(&relay, sink, bodies, epoch, "prune", rate, d).await?;
    // The prune may outlast the load: wait for it, at most 10 minutes.
    let deadline = Instant::now() + Duration::from_secs(600);
    while watch.pruned().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = ready.await.ok().flatten();
    relay.stop();
    let (pruned, log_problems) = watch.finish();
    let (left_events, left_deliveries) = count(&db).await?;
    let run = PruneRun {
        rows: pruned.as_ref().and_then(|p| p.rows),
        events: pruned.as_ref().and_then(|p| p.events),
        prune_secs: pruned.map(|p| p.at.duration_since(spawned).as_secs_f64()),
        listening_ms: listening.as_secs_f64() * 1000.0,
        ready_ms: ready.map(|r| r.as_secs_f64() * 1000.0),
        fill_secs,
        sent_rps: r.rps(),
        rejected: r.rejected,
        errors: r.errors,
        ack: lat(&mut r.ack_us),
        e2e: lat(&mut e2e),
        missing,
        left_events,
        left_deliveries,
        log_problems,
    };
    eprintln!(
        "  prune: {} deliveries and {} events pruned in {} from spawn (listening after {:.1} ms, ready after {}); \
         at {rate}/s meanwhile: sent {:.0}/s, {} rejected, {} errors, ack p50 {:.2} p99 {:.2} max {:.2} ms; \
         end-to-end p50 {:.2} p99 {:.2} max {:.2} ms; {missing} missing; \
         left {} events, {} deliveries; {} warnings or errors logged",
        opt(run.rows),
        opt(run.events),
        run.prune_secs
            .map_or_else(|| "(no log line seen)".to_owned(), |s| format!("{s:.2} s")),
        run.listening_ms,
        run.ready_ms
            .map_or_else(|| "never".to_owned(), |ms| format!("{ms:.1} ms")),
        run.sent_rps,
        run.rejected,
        run.errors,
        run.ack.p50,
        run.ack.p99,
        run.ack.max,
        run.e2e.p50,
        run.e2e.p99,
        run.e2e.max,
        run.left_events,
        run.left_deliveries,
        run.log_problems.len(),
    );
    for line in run.log_problems.iter().take(10) {
        eprintln!("    relay log: {line}");
    }
    Ok(run)
}

fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "?".to_owned(), |n| n.to_string())
}

/// The table's rows for the prune phase; `empty` is the ack latency of the
/// same load on an empty store.
pub fn table_rows(p: &PruneRun, rate: u64, empty: Option<Lat>) -> Vec<String> {
    let empty = empty.map_or_else(String::new, |e| {
        format!(
            " (empty store: {:.2} / {:.2} / {:.2} ms)",
            e.p50, e.p99, e.max
        )
    });
    vec![
        format!(
            "| prune at start-up, {ROWS} delivered rows past retention | {} deliveries, {} events in {} from spawn | — |",
            opt(p.rows),
            opt(p.events),
            p.prune_secs
                .map_or_else(|| "? (no log line)".to_owned(), |s| format!("{s:.2} s")),
        ),
        format!(
            "| at {rate} ev/s from spawn, during that prune: ack p50/p99/max | {:.2} / {:.2} / {:.2} ms{empty}; {} rejected, {} errors, {} lost | — |",
            p.ack.p50, p.ack.p99, p.ack.max, p.rejected, p.errors, p.missing
        ),
        format!(
            "| that relay: listening / ready (`/readyz` 200) after spawn | {:.1} ms / {} | — |",
            p.listening_ms,
            p.ready_ms
                .map_or_else(|| "never".to_owned(), |ms| format!("{ms:.1} ms"))
        ),
    ]
}

/// The phase as JSON; `empty` as in [`table_rows`].
pub fn to_json(p: &PruneRun, rate: u64, empty: Option<Lat>) -> Value {
    json!({
        "rows": p.rows,
        "events": p.events,
        "prune_secs": p.prune_secs.map(round2),
        "ack_p50_ms": round2(p.ack.p50),
        "ack_p99_ms": round2(p.ack.p99),
        "ack_max_ms": round2(p.ack.max),
        "ack_samples": p.ack.n,
        "rate": rate,
        "sent_per_s": p.sent_rps.round(),
        "end_to_end": crate::report::lat_json(p.e2e),
        "rejected": p.rejected,
        "errors": p.errors,
        "missing": p.missing,
        "listening_ms": round2(p.listening_ms),
        "ready_ms": p.ready_ms.map(round2),
        "fill_secs": round2(p.fill_secs),
        "left": {"events": p.left_events, "deliveries": p.left_deliveries},
        "log_warnings_or_errors": p.log_problems.len(),
        "empty_store_ack": empty.map(|e| json!({
            "p50_ms": round2(e.p50), "p99_ms": round2(e.p99), "max_ms": round2(e.max),
        })),
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn options(db: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Wal)
}

/// Inserts `rows` events and one delivered delivery for each, with the
/// columns both schema versions have, [`FILL_CHUNK`] of each per
/// transaction.
async fn fill(db: &Path, rows: u64) -> Res<()> {
    let mut conn =
        SqliteConnection::connect_with(&options(db).synchronous(SqliteSynchronous::Off)).await?;
    let at = now_ms() - AGE_MS;
    let mut from = 1;
    while from <= rows {
        let to = (from + FILL_CHUNK - 1).min(rows);
        let mut tx = conn.begin().await?;
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
             INSERT INTO events (id, received_at, website_id, name, timestamp, body) \
             SELECT i, ?3, 'bench-prune', 'message:send', ?3, ?4 FROM n",
        )
        .bind(from as i64)
        .bind(to as i64)
        .bind(at)
        .bind(BODY)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
             INSERT INTO deliveries (event_id, route, target, template, state, attempts, \
                                     next_attempt_at, created_at, updated_at) \
             SELECT i, 'all', 'sink', NULL, 'delivered', 1, ?3, ?3, ?3 FROM n",
        )
        .bind(from as i64)
        .bind(to as i64)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        from = to + 1;
    }
    let (events, deliveries) = counts(&mut conn).await?;
    conn.close().await?;
    if events < rows as i64 || deliveries < rows as i64 {
        return Err(format!("the store holds {events} events, {deliveries} deliveries").into());
    }
    Ok(())
}

/// Events and deliveries in the store.
async fn count(db: &Path) -> Res<(i64, i64)> {
    let mut conn = SqliteConnection::connect_with(&options(db)).await?;
    let n = counts(&mut conn).await?;
    conn.close().await?;
    Ok(n)
}

async fn counts(conn: &mut SqliteConnection) -> Res<(i64, i64)> {
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&mut *conn)
        .await?;
    let deliveries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries")
        .fetch_one(&mut *conn)
        .await?;
    Ok((events, deliveries))
}

/// The relay's prune line, when this process read it.
struct Pruned {
    at: Instant,
    rows: Option<u64>,
    events: Option<u64>,
}

#[derive(Default)]
struct Seen {
    pruned: Option<Pruned>,
    problems: Vec<String>,
}

/// Follows the relay's log file (JSON lines) on a thread of its own, every
/// 5 ms, for the prune line and for warnings and errors.
struct Watch {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Watch {
    fn spawn(path: PathBuf) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut offset = 0;
            let mut partial = String::new();
            loop {
                // Read once more after the stop, for the last lines.
                let last = st.load(Ordering::Relaxed);
                let mut chunk = Vec::new();
                if let Ok(mut f) = std::fs::File::open(&path) {
                    if f.seek(SeekFrom::Start(offset)).is_ok() {
                        offset += f.read_to_end(&mut chunk).unwrap_or(0) as u64;
                    }
                }
                partial.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = partial.find('\n') {
                    let line: String = partial.drain(..=end).collect();
                    look_at(line.trim_end(), &s);
                }
                if last {
                    if !partial.trim().is_empty() {
                        look_at(partial.trim(), &s);
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self { seen, stop, thread }
    }

    fn pruned(&self) -> Option<Instant> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.pruned.as_ref().map(|p| p.at)
    }

    /// Stops following; what was seen.
    fn finish(self) -> (Option<Pruned>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        (seen.pruned.take(), std::mem::take(&mut seen.problems))
    }
}

fn look_at(line: &str, seen: &Mutex<Seen>) {
    let at = Instant::now();
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        if !line.is_empty() {
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.problems.push(format!("(not JSON) {line}"));
        }
        return;
    };
    // Fields are at the top level (flattened) or under `fields`.
    let field = |name: &str| v.get(name).or_else(|| v.get("fields")?.get(name));
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    if field("message").and_then(Value::as_str) == Some(PRUNED) && seen.pruned.is_none() {
        seen.pruned = Some(Pruned {
            at,
            rows: field("rows").and_then(Value::as_u64),
            events: field("events").and_then(Value::as_u64),
        });
    }
    if matches!(
        v.get("level").and_then(Value::as_str),
        Some("WARN" | "ERROR")
    ) {
        seen.problems.push(line.to_owned());
    }
}
