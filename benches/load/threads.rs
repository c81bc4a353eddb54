//! The threads phase (`cargo bench --bench load -- threads`, and part of
//! the full run): 20 conversations × 10 visitor messages (4 with
//! `--quick`), posted interleaved (c01 m01, c02 m01, … c20 m01, c01 m02, …)
//! one after the other as fast as ingest answers, to a relay whose only
//! target is a Discord forum webhook with `threads: per_conversation` and
//! the shipped `visitor_message` template, on the forum sink (`forum.rs`)
//! at Discord's real webhook limit, 5 requests per 2 s. Twice, each on a
//! fresh store: `coalesce: false` (the baseline) and `coalesce: true`.
//!
//! It owns the events (the sample `message:send` with a conversation, a
//! unique `data.fingerprint` and the tag `c07 m03` as `data.content`), the
//! checks (each conversation's messages exactly once, in one thread of its
//! own, in order) and the phase's rows and JSON. A run that fails a check
//! is reported and then fails the bench.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::drive::Conn;
use crate::forum::{Counts, Forum, Thread, tag};
use crate::relay::{RelaySetup, Start, queue_depth, start_relay_in};
use crate::report::{Lat, lat, lat_json, round2};
use crate::{KEY, Res};

pub const CONVERSATIONS: u32 = 20;
/// Discord's limit for one webhook, and the relay's default for Discord.
const LIMIT: u32 = 5;
const WINDOW: Duration = Duration::from_secs(2);
/// The shipped template, as a real forum target would use it.
const TEMPLATE: (&str, &str) = (
    "discord.json.hbs",
    include_str!("../../templates/visitor_message.discord.json.hbs"),
);
const EVENT: &str = "tests/fixtures/crisp-events/message_send_text_basic.json";

/// Messages per conversation.
pub fn messages(quick: bool) -> u32 {
    if quick { 4 } else { 10 }
}

/// What one relay run (one `coalesce` setting) measured.
pub struct ThreadsRun {
    pub coalesce: bool,
    pub counts: Counts,
    /// Threads in the forum at the end.
    pub threads: usize,
    /// Accepted posts, and the most messages one carried.
    pub posts: usize,
    pub most_in_a_post: usize,
    /// Posting all the events, and their acknowledgements.
    pub ingest_secs: f64,
    pub ack: Lat,
    /// From the first event posted to the last message seen at the forum.
    pub wall_secs: f64,
    /// Per message: ingest POST sent → the post carrying it arrived.
    pub e2e: Lat,
    /// What the checks found wrong; empty when all is right.
    pub problems: Vec<String>,
    /// Refusals the forum answered (status and body), the first few.
    pub refusals: Vec<String>,
    /// Warnings and errors the relay logged.
    pub log_problems: Vec<String>,
}

/// Both runs.
pub struct ThreadsPhase {
    pub messages: u32,
    pub off: ThreadsRun,
    pub on: ThreadsRun,
}

impl ThreadsPhase {
    /// An error naming every problem either run found.
    pub fn verdict(&self) -> Res<()> {
        let mut all = Vec::new();
        for run in [&self.off, &self.on] {
            for p in &run.problems {
                all.push(format!("coalesce {}: {p}", run.coalesce));
            }
        }
        if all.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "threads phase: {} problem(s): {}",
                all.len(),
                all.join("; ")
            )
            .into())
        }
    }

    fn requests_ratio(&self) -> f64 {
        self.on.counts.requests as f64 / (self.off.counts.requests as f64).max(1.0)
    }

    fn time_ratio(&self) -> f64 {
        self.on.wall_secs / self.off.wall_secs.max(1e-9)
    }

    fn e2e_p50_ratio(&self) -> f64 {
        self.on.e2e.p50 / self.off.e2e.p50.max(1e-9)
    }
}

/// Runs the phase: coalescing off, then on, each on a fresh relay and
/// forum. Problems are reported, not returned as errors: see
/// [`ThreadsPhase::verdict`].
pub async fn phase(quick: bool) -> Res<ThreadsPhase> {
    let each = messages(quick);
    eprintln!(
        "  threads: {CONVERSATIONS} conversations × {each} messages, interleaved, to a forum webhook at {LIMIT} per {} s",
        WINDOW.as_secs()
    );
    let forum = Forum::start(LIMIT, WINDOW).await?;
    let events = Events::load(each)?;
    let off = run(&forum, &events, false).await?;
    let on = run(&forum, &events, true).await?;
    let phase = ThreadsPhase {
        messages: each,
        off,
        on,
    };
    eprintln!(
        "  threads, coalesce on vs off: requests {:.2}×, time {:.2}×, end-to-end p50 {:.2}×",
        phase.requests_ratio(),
        phase.time_ratio(),
        phase.e2e_p50_ratio()
    );
    Ok(phase)
}

/// The events of the phase, in the order they are posted.
struct Events {
    each: u32,
    /// `(conversation, message, body)`, interleaved.
    list: Vec<(u32, u32, Bytes)>,
}

impl Events {
    fn load(each: u32) -> Res<Self> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(EVENT);
        let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let sample: Value = serde_json::from_slice(&text)
            .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
        let mut list = Vec::new();
        for m in 1..=each {
            for c in 1..=CONVERSATIONS {
                let mut v = sample.clone();
                let Some(data) = v.get_mut("data").and_then(Value::as_object_mut) else {
                    return Err(format!("{}: no `data` object", path.display()).into());
                };
                let session = format!("session_bench_{c:02}");
                data.insert("session_id".into(), json!(session));
                data.insert("content".into(), json!(tag(c, m)));
                // Unique per event: the relay drops resends by fingerprint.
                data.insert("fingerprint".into(), json!(900_000_000 + c * 1000 + m));
                data.insert(
                    "user".into(),
                    json!({"user_id": session, "nickname": format!("Visitor c{c:02}")}),
                );
                list.push((c, m, Bytes::from(serde_json::to_vec(&v)?)));
            }
        }
        Ok(Self { each, list })
    }
}

async fn run(forum: &Arc<Forum>, events: &Events, coalesce: bool) -> Res<ThreadsRun> {
    forum.reset();
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("relay.log");
    let setup = RelaySetup {
        filler_routes: 9,
        target: format!(
            "{{kind: discord, url: \"{}\", threads: per_conversation, coalesce: {coalesce}, timeout: 5s}}",
            forum.url()
        ),
        template: Some(TEMPLATE),
    };
    let start = Start {
        log: Some(&log),
        ..Start::default()
    };
    let (relay, _) = start_relay_in(dir.path(), &setup, &start).await?;

    // Post every event, one after the other on one connection.
    let uri = format!("/crisp/hooks?key={KEY}");
    let mut conn = Conn::open(relay.ingest).await?;
    let mut sent = HashMap::new();
    let mut ack_us = Vec::new();
    let first = Instant::now();
    for (c, m, body) in &events.list {
        let at = Instant::now();
        let status = conn
            .post(&uri, body.clone())
            .await
            .map_err(|e| format!("threads: posting {}: {e}", tag(*c, *m)))?;
        if status != 200 {
            return Err(format!("threads: the relay answered {status} to {}", tag(*c, *m)).into());
        }
        ack_us.push(at.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        sent.insert((*c, *m), at);
    }
    let ingest_secs = first.elapsed().as_secs_f64();

    // Until every message arrived (with one request per message at 5 per
    // 2 s: 0.4 s each), then until the relay has nothing left to send.
    let total = events.list.len();
    let deadline = Instant::now() + Duration::from_secs(60 + total as u64);
    while forum.tags_seen() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settle = Instant::now() + Duration::from_secs(10);
    while queue_depth(relay.admin).await.unwrap_or(0) > 0 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.stop();
    let log_problems = log_problems(&log);

    let threads = forum.threads();
    let counts = forum.counts();
    let mut check = check(&threads, &sent, events.each, coalesce);
    if counts.refused > 0 {
        check.problems.push(format!(
            "the forum refused {} request(s): {}",
            counts.refused,
            forum.refusals().join(" | ")
        ));
    }
    let r = ThreadsRun {
        coalesce,
        counts,
        threads: threads.len(),
        posts: threads.iter().map(|t| t.posts.len()).sum(),
        most_in_a_post: threads
            .iter()
            .flat_map(|t| &t.posts)
            .map(|p| p.tags.len())
            .max()
            .unwrap_or(0),
        ingest_secs,
        ack: lat(&mut ack_us),
        wall_secs: check
            .last
            .map_or(f64::NAN, |l| l.duration_since(first).as_secs_f64()),
        e2e: lat(&mut check.e2e_us),
        problems: check.problems,
        refusals: forum.refusals(),
        log_problems,
    };
    eprintln!(
        "  threads, coalesce {coalesce}: {total} events posted in {:.2} s (ack p50 {:.2} p99 {:.2} ms); \
         {} requests ({} threads created, {} replies, {} × 429, {} unknown thread, {} refused); \
         {:.1} s from first event to last message; end-to-end p50 {:.0} p99 {:.0} max {:.0} ms; \
         {} messages in {} posts in {} threads (at most {} in a post); {}; {} warnings or errors logged",
        r.ingest_secs,
        r.ack.p50,
        r.ack.p99,
        r.counts.requests,
        r.counts.created,
        r.counts.replies,
        r.counts.limited_429,
        r.counts.unknown_thread,
        r.counts.refused,
        r.wall_secs,
        r.e2e.p50,
        r.e2e.p99,
        r.e2e.max,
        r.e2e.n,
        r.posts,
        r.threads,
        r.most_in_a_post,
        if r.problems.is_empty() {
            "every conversation once, in one thread, in order".to_owned()
        } else {
            format!("{} PROBLEM(S)", r.problems.len())
        },
        r.log_problems.len(),
    );
    for p in &r.problems {
        eprintln!("    PROBLEM: {p}");
    }
    for line in r.log_problems.iter().take(10) {
        eprintln!("    relay log: {line}");
    }
    Ok(r)
}

/// What the checks of one run found.
struct Checked {
    problems: Vec<String>,
    /// End-to-end latency of each message's first arrival, µs.
    e2e_us: Vec<u32>,
    /// When the last post arrived.
    last: Option<Instant>,
}

/// Each conversation's messages exactly once, all in one thread that holds
/// only them and is named after the visitor, in order; with `coalesce`
/// off, one message per post.
fn check(
    threads: &[Thread],
    sent: &HashMap<(u32, u32), Instant>,
    each: u32,
    coalesce: bool,
) -> Checked {
    let mut problems = Vec::new();
    let mut e2e_us = Vec::new();
    let mut last: Option<Instant> = None;
    let mut seen: HashMap<(u32, u32), u32> = HashMap::new();
    // Conversation → the threads holding its messages.
    let mut homes: BTreeMap<u32, Vec<&Thread>> = BTreeMap::new();
    for t in threads {
        let mut convs: Vec<u32> = Vec::new();
        for p in &t.posts {
            last = Some(last.map_or(p.at, |l| l.max(p.at)));
            if !coalesce && p.tags.len() != 1 {
                problems.push(format!(
                    "a post in thread {} carries {} messages with coalescing off",
                    t.id,
                    p.tags.len()
                ));
            }
            for &(c, m) in &p.tags {
                let n = seen.entry((c, m)).or_insert(0);
                *n += 1;
                if *n == 1 {
                    match sent.get(&(c, m)) {
                        Some(s) => e2e_us.push(
                            p.at.saturating_duration_since(*s)
                                .as_micros()
                                .min(u128::from(u32::MAX)) as u32,
                        ),
                        None => problems.push(format!("{} arrived but was never sent", tag(c, m))),
                    }
                }
                if !convs.contains(&c) {
                    convs.push(c);
                }
            }
        }
        match convs.as_slice() {
            [] => problems.push(format!("thread {} ({:?}) holds no message", t.id, t.name)),
            [c] => {
                if !t.name.contains(&format!("c{c:02}")) {
                    problems.push(format!("thread {} of c{c:02} is named {:?}", t.id, t.name));
                }
            }
            many => problems.push(format!(
                "thread {} holds messages of conversations {many:?}",
                t.id
            )),
        }
        for c in convs {
            homes.entry(c).or_default().push(t);
        }
    }
    let dups: u32 = seen.values().map(|n| n - 1).sum();
    if dups > 0 {
        problems.push(format!("{dups} message(s) arrived more than once"));
    }
    let want: Vec<u32> = (1..=each).collect();
    for c in 1..=CONVERSATIONS {
        match homes.get(&c).map(Vec::as_slice) {
            None | Some([]) => problems.push(format!("c{c:02}: no thread, no message arrived")),
            Some([t]) => {
                let got: Vec<u32> = t
                    .posts
                    .iter()
                    .flat_map(|p| &p.tags)
                    .filter(|(tc, _)| *tc == c)
                    .map(|&(_, m)| m)
                    .collect();
                if got != want {
                    problems.push(format!(
                        "c{c:02}: thread {} holds messages {got:?}, want 1..={each} in order",
                        t.id
                    ));
                }
            }
            Some(many) => problems.push(format!(
                "c{c:02}: messages in {} threads ({})",
                many.len(),
                many.iter()
                    .map(|t| t.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
    Checked {
        problems,
        e2e_us,
        last,
    }
}

/// The relay's warnings and errors from its log (JSON lines).
pub fn log_problems(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l).map_or(!l.trim().is_empty(), |v| {
                matches!(
                    v.get("level").and_then(Value::as_str),
                    Some("WARN" | "ERROR")
                )
            })
        })
        .map(str::to_owned)
        .collect()
}

fn verdict_text(r: &ThreadsRun) -> String {
    if r.problems.is_empty() {
        "each conversation once, in one thread, in order".to_owned()
    } else {
        format!("**{} problem(s)**", r.problems.len())
    }
}

/// The phase's rows of the table.
pub fn table_rows(p: &ThreadsPhase) -> Vec<String> {
    let n = CONVERSATIONS * p.messages;
    let mut rows = Vec::new();
    for r in [&p.off, &p.on] {
        let which = if r.coalesce { "on" } else { "off" };
        rows.push(format!(
            "| threads, {CONVERSATIONS} conversations × {} messages to a forum webhook at {LIMIT} per {} s, coalesce {which}: requests / 429s / first event to last message | {} ({} threads) / {} / {:.1} s; {} | {} |",
            p.messages,
            WINDOW.as_secs(),
            r.counts.requests,
            r.counts.created,
            r.counts.limited_429,
            r.wall_secs,
            verdict_text(r),
            if r.coalesce {
                "fewer than off, 0".to_owned()
            } else {
                format!("{n}, 0")
            },
        ));
        rows.push(format!(
            "| same, coalesce {which}: end-to-end p50/p99/max | {:.0} / {:.0} / {:.0} ms | — |",
            r.e2e.p50, r.e2e.p99, r.e2e.max
        ));
    }
    rows.push(format!(
        "| threads, coalesce on vs off | requests **{:.2}×**, time **{:.2}×**, end-to-end p50 {:.2}× | — |",
        p.requests_ratio(),
        p.time_ratio(),
        p.e2e_p50_ratio()
    ));
    rows
}

fn run_json(r: &ThreadsRun) -> Value {
    json!({
        "requests": r.counts.requests,
        "threads_created": r.counts.created,
        "replies": r.counts.replies,
        "rate_limited_429": r.counts.limited_429,
        "unknown_thread_404": r.counts.unknown_thread,
        "refused": r.counts.refused,
        "threads": r.threads,
        "posts": r.posts,
        "most_messages_in_a_post": r.most_in_a_post,
        "ingest_secs": round2(r.ingest_secs),
        "ack": lat_json(r.ack),
        "wall_secs": round2(r.wall_secs),
        "end_to_end": lat_json(r.e2e),
        "correct": r.problems.is_empty(),
        "problems": r.problems,
        "refusals": r.refusals,
        "log_warnings_or_errors": r.log_problems.len(),
    })
}

/// The phase as JSON.
pub fn to_json(p: &ThreadsPhase) -> Value {
    json!({
        "conversations": CONVERSATIONS,
        "messages_each": p.messages,
        "limit": {"requests": LIMIT, "per_secs": WINDOW.as_secs()},
        "coalesce_off": run_json(&p.off),
        "coalesce_on": run_json(&p.on),
        "coalesce_on_vs_off": {
            "requests_ratio": round2(p.requests_ratio()),
            "time_ratio": round2(p.time_ratio()),
            "end_to_end_p50_ratio": round2(p.e2e_p50_ratio()),
        },
    })
}
