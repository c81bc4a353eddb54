//! Several relays on one PostgreSQL database: every replica ingests, one
//! at a time runs a target's worker (its lease), and when that one dies
//! another takes over — with every acknowledged event delivered, in order,
//! repeats within the stated bound. Also: the database's connections cut
//! mid-stream. Skipped (and says so) without CRISP_RELAY_TEST_DATABASE_URL.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;

use serde_json::Value;

use crate::fakes::FakeServer;
use crate::helpers::{KEY, TestApp, Workdir, message, seq_in};
use crate::pg::TestDb;

/// The most sends a takeover may repeat: the killed worker's uncommitted
/// window (`WINDOW`, 64) and the send in flight.
const REPEAT_BOUND: usize = 65;

fn config(hook: &str) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:0\n  path: /crisp/hooks\n  keys: [\"${{CRISP_HOOK_KEY}}\"]\n\
         admin:\n  listen: 127.0.0.1:0\nstore:\n  url: \"${{DATABASE_URL}}\"\n  lease: 2s\n\
         templates: templates\ntargets:\n  hook: {{kind: webhook, url: \"{hook}\", timeout: 5s}}\n\
         routes:\n  - name: all\n    to: [hook]\n"
    )
}

async fn spawn(cfg: &str, db: &TestDb) -> TestApp {
    TestApp::spawn_in(Workdir::new(cfg), &[("DATABASE_URL", db.url.as_str())]).await
}

async fn ready(app: &TestApp) -> Value {
    let resp = app.admin_get("/readyz").await;
    serde_json::from_str(&resp.text().await.unwrap_or_default()).unwrap_or(Value::Null)
}

/// Whether `app` runs target `hook` (holds its lease).
async fn holds_hook(app: &TestApp) -> bool {
    let r = ready(app).await;
    r["store"]["targets_here"]
        .as_array()
        .is_some_and(|a| a.iter().any(|t| t == "hook"))
}

/// Waits until exactly one of `apps` holds the target; its index.
async fn holder(apps: &[&TestApp]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut held = Vec::new();
        for (i, app) in apps.iter().enumerate() {
            if holds_hook(app).await {
                held.push(i);
            }
        }
        if held.len() == 1 {
            return held[0];
        }
        assert!(
            Instant::now() < deadline,
            "no single holder of target:hook (holders: {held:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Posts `msg seq` to `app`; whether it was acknowledged `200`.
async fn post(client: &reqwest::Client, app: &TestApp, seq: usize) -> Option<u16> {
    let resp = client
        .post(app.hook_url(KEY))
        .header("content-type", "application/json")
        .body(message(seq))
        .send()
        .await
        .ok()?;
    Some(resp.status().as_u16())
}

/// What the fake received, as seqs in arrival order (with their times).
fn arrivals(hook: &FakeServer) -> Vec<(usize, Instant)> {
    hook.received()
        .iter()
        .map(|r| (seq_in(&r.body_text()), r.at))
        .collect()
}

/// Waits until every seq in `acked` arrived at the fake.
async fn wait_delivered(hook: &FakeServer, acked: &[usize], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got: HashSet<usize> = arrivals(hook).into_iter().map(|(s, _)| s).collect();
        let missing: Vec<&usize> = acked.iter().filter(|s| !got.contains(s)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged events never delivered: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every acknowledged event arrived; the first arrivals follow the order
/// they were acknowledged in; nothing arrived that was not posted; repeats
/// within `bound`. Answers the number of repeats.
fn check_delivery(
    arrived: &[(usize, Instant)],
    acked: &[usize],
    posted: usize,
    bound: usize,
) -> usize {
    let mut seen = HashSet::new();
    let mut firsts = Vec::new();
    let mut repeats = 0;
    for (seq, _) in arrived {
        assert!((1..=posted).contains(seq), "msg {seq} was never posted");
        if seen.insert(*seq) {
            firsts.push(*seq);
        } else {
            repeats += 1;
        }
    }
    // Events answered 503 may or may not have been stored; the acknowledged
    // ones must be there, in their order.
    let acked_set: HashSet<usize> = acked.iter().copied().collect();
    let order: Vec<usize> = firsts
        .into_iter()
        .filter(|s| acked_set.contains(s))
        .collect();
    assert_eq!(
        order, acked,
        "delivery order differs from acknowledgement order"
    );
    assert!(repeats <= bound, "{repeats} repeats, more than {bound}");
    repeats
}

/// Two relays on one database; events spread over both; the one running
/// the target is SIGKILLed mid-stream and later started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_stream_hands_its_target_over_in_order() {
    let Some(db) = TestDb::new("failover").await else {
        return;
    };
    let hook = FakeServer::webhook().await;
    // 20 ms per answer: a backlog builds, so the kill lands mid-queue.
    hook.set_delay(Duration::from_millis(20));
    let cfg = config(&hook.url("/hook"));
    let mut apps = vec![spawn(&cfg, &db).await, spawn(&cfg, &db).await];
    let first = holder(&[&apps[0], &apps[1]]).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let total = 300;
    let (kill_at, restart_at) = (100, 200);
    let mut acked = Vec::new();
    let mut refused = 0;
    let mut killed_at = None;
    let mut up = [true, true];
    for seq in 1..=total {
        if seq == kill_at {
            apps[first].kill();
            up[first] = false;
            killed_at = Some(Instant::now());
        }
        if seq == restart_at {
            let work = std::mem::replace(&mut apps[first], spawn(&cfg, &db).await).into_work();
            drop(work);
            up[first] = true;
        }
        let pick = if up[seq % 2] { seq % 2 } else { 1 - seq % 2 };
        match post(&client, &apps[pick], seq).await {
            Some(200) => acked.push(seq),
            _ => refused += 1,
        }
    }
    wait_delivered(&hook, &acked, Duration::from_secs(90)).await;
    let arrived = arrivals(&hook);
    let repeats = check_delivery(&arrived, &acked, total, REPEAT_BOUND);
    let killed_at = killed_at.unwrap();
    let before = arrived.iter().filter(|(_, at)| *at < killed_at).count();
    let resumed = arrived
        .iter()
        .find(|(_, at)| *at > killed_at)
        .map(|(_, at)| at.duration_since(killed_at));
    eprintln!(
        "failover: {} acknowledged ({refused} not), {before} delivered before the kill, \
         first delivery after it {resumed:?} later (lease 2s), {repeats} repeats",
        acked.len()
    );
    assert!(before < acked.len(), "the kill did not land mid-stream");
    // Exactly one replica runs the target afterwards (the survivor, or the
    // restarted one if the dead replica's lease lapsed before the survivor
    // polled); the other stands by, ready.
    let now = holder(&[&apps[0], &apps[1]]).await;
    let standby = ready(&apps[1 - now]).await;
    assert_eq!(standby["status"], "ready", "{standby}");
    assert_eq!(
        standby["store"]["targets_on_other_replicas"][0], "hook",
        "{standby}"
    );
    drop(apps);
    db.drop_schema().await;
}

/// A replica stopped with SIGTERM gives its leases up at once: the other
/// takes the target over without waiting for the lease to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_cleanly_releases_its_target_at_once() {
    let Some(db) = TestDb::new("release").await else {
        return;
    };
    let hook = FakeServer::webhook().await;
    let cfg = config(&hook.url("/hook"));
    let mut apps = vec![spawn(&cfg, &db).await, spawn(&cfg, &db).await];
    let first = holder(&[&apps[0], &apps[1]]).await;
    assert!(apps[first].terminate().success());
    let leases = db
        .execute(&format!(
            "SELECT 1 FROM {}.leases WHERE holder IS NULL AND name = 'target:hook'",
            db.schema
        ))
        .await;
    assert_eq!(leases, 1, "the lease was not released on SIGTERM");
    let other = &apps[1 - first];
    assert_eq!(post(&reqwest::Client::new(), other, 1).await, Some(200));
    wait_delivered(&hook, &[1], Duration::from_secs(30)).await;
    assert!(holds_hook(other).await);
    drop(apps);
    db.drop_schema().await;
}

/// The database cuts every connection of the relay mid-stream: ingest
/// answers 503 while it cannot commit (never 200 for what it did not
/// store), the worker pauses and resumes, and every acknowledged event is
/// delivered once the connections come back, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_stream_lose_nothing_acknowledged() {
    let Some(db) = TestDb::new("cut").await else {
        return;
    };
    let hook = FakeServer::webhook().await;
    hook.set_delay(Duration::from_millis(10));
    let cfg = config(&hook.url("/hook"));
    let app = spawn(&cfg, &db).await;
    let client = reqwest::Client::new();
    let total = 200;
    let mut acked = Vec::new();
    let mut statuses = std::collections::BTreeMap::new();
    let mut cut = 0;
    for seq in 1..=total {
        if seq % 50 == 0 {
            cut += db.terminate_connections().await;
        }
        let status = post(&client, &app, seq).await;
        *statuses.entry(status).or_insert(0) += 1;
        if status == Some(200) {
            acked.push(seq);
        }
    }
    assert!(cut > 0, "no connection was cut");
    wait_delivered(&hook, &acked, Duration::from_secs(90)).await;
    let arrived = arrivals(&hook);
    let repeats = check_delivery(&arrived, &acked, total, REPEAT_BOUND * 4);
    eprintln!("connection cuts: {cut} connections cut, answers {statuses:?}, {repeats} repeats");
    for status in statuses.keys() {
        assert!(
            matches!(status, Some(200 | 503)),
            "ingest answered {status:?}; only 200 or 503 are right"
        );
    }
    let r = ready(&app).await;
    assert_eq!(r["status"], "ready", "{r}");
    drop(app);
    db.drop_schema().await;
}
