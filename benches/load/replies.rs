//! The replies phase (`cargo bench --bench load -- replies`, and part of
//! the full run): agents' replies written in Slack threads, from Slack's
//! Events API to Crisp's REST API, timed from the moment the bench sends a
//! reply's event to the moment the Crisp sink holds it.
//!
//! Setup, on a fresh relay each run: one Slack bot target (`threads:
//! per_conversation`, `replies: {signing_secret}`, `rate_limit: {requests:
//! 100, per: 1s}` so that opening the threads is not paced at Slack's
//! default 1/s) on the Slack sink, the shipped `visitor_message` template,
//! and `crisp:` on the Crisp sink (`replies_sinks.rs`). One visitor
//! `message:send` per conversation (content `open c07`) opens its thread;
//! the phase waits until every conversation has one (matched by that text)
//! and the relay's queue is empty (the thread map is written before the
//! rows that created it are marked delivered, so a reply finds its thread).
//!
//! Load: signed Slack `event_callback` message events — a person's reply in
//! the conversation's thread, `text` `reply c07 n0012` (conversation, its
//! n-th reply), a unique `event_id` and `ts` — at a fixed rate, spread
//! round-robin over the conversations, on a few keep-alive connections.
//! A conversation's replies always go on the same connection, which sends
//! its next only after the previous was answered, so their order at the
//! relay is the order they were sent. Latency counts from each reply's
//! scheduled send time (no coordinated omission).
//!
//! Runs at 50 replies/s twice: with the shipped `crisp.rate_limit` (10
//! requests a second: README, "Replies"), where the queue grows and the
//! chat → Crisp latency is the cap's, then with it lifted to 1,000 a
//! second, which shows the path itself (a relay build that does not know
//! `crisp.rate_limit` refuses that config). The baseline: the Crisp sink's
//! own round trip from a bare client. A run whose replies did not all reach
//! Crisp once, in each conversation's order, in the right conversation, or
//! that were not all acknowledged 200, is reported and then fails the bench.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::{Value, json};

use crate::drive::Conn;
use crate::relay::{RelayProc, RelaySetup, Start, queue_depth, start_relay_in};
use crate::replies_sinks::{
    BOT_TOKEN, CHANNEL, CRISP_ID, CRISP_KEY, CrispApi, CrispMessage, SlackApi, crisp_authorization,
};
use crate::report::{Lat, lat, lat_json, round2};
use crate::threads::log_problems;
use crate::{KEY, Res};

/// Conversations (threads) the replies are spread over, at most.
pub const CONVERSATIONS: u32 = 50;
/// Keep-alive connections the replies are sent on (divides every run's
/// conversation count, so a conversation stays on one connection).
const CONNECTIONS: u32 = 5;
/// Replies per second of each run, and its `crisp.rate_limit`.
const RUNS: [(u32, Cap); 2] = [(50, Cap::Shipped), (50, Cap::Lifted)];
/// The relay's default `crisp.rate_limit`, requests per second.
const SHIPPED_CAP: u32 = 10;
/// The `crisp.rate_limit` of the run without the cap: far above the load.
const LIFTED_CAP: u32 = 1000;
const SECRET: &str = "bench-slack-signing-secret";
const TEMPLATE: (&str, &str) = (
    "slack.json.hbs",
    include_str!("../../templates/visitor_message.slack.json.hbs"),
);
const EVENT: &str = "tests/fixtures/crisp-events/message_send_text_basic.json";

/// The `crisp.rate_limit` of a run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// Not set: the relay's default.
    Shipped,
    /// Set to [`LIFTED_CAP`] per second.
    Lifted,
}

impl Cap {
    fn per_s(self) -> u32 {
        match self {
            Cap::Shipped => SHIPPED_CAP,
            Cap::Lifted => LIFTED_CAP,
        }
    }

    /// What it adds to the `crisp:` section.
    fn config(self) -> String {
        match self {
            Cap::Shipped => String::new(),
            Cap::Lifted => format!(", rate_limit: {{requests: {LIFTED_CAP}, per: 1s}}"),
        }
    }

    fn name(self) -> String {
        match self {
            Cap::Shipped => format!("shipped cap ({SHIPPED_CAP}/s)"),
            Cap::Lifted => format!("cap lifted ({LIFTED_CAP}/s)"),
        }
    }
}

/// Seconds of load per run.
pub fn seconds(quick: bool) -> u64 {
    if quick { 5 } else { 20 }
}

/// What one run (one rate) measured.
pub struct RepliesRun {
    pub rate: u32,
    pub cap: Cap,
    pub conversations: u32,
    /// Posting the visitor events until every thread existed.
    pub setup_secs: f64,
    pub sent: usize,
    pub acked: usize,
    /// Answers other than 200, and failed requests.
    pub errors: usize,
    pub error_samples: Vec<String>,
    /// Replies in Crisp (distinct), and the requests Crisp accepted.
    pub delivered: usize,
    pub crisp_accepted: usize,
    pub ack: Lat,
    /// Scheduled send → the Crisp sink holding it.
    pub e2e: Lat,
    /// The relay's 200 → the Crisp sink holding it: the queue and the send.
    pub after_ack: Lat,
    /// First reply sent → last reply in Crisp.
    pub wall_secs: f64,
    /// Replies per second into Crisp, first arrival to last.
    pub crisp_per_s: f64,
    /// ✅ reactions on the replies' messages.
    pub checks: usize,
    pub problems: Vec<String>,
    pub log_problems: Vec<String>,
}

/// The runs and the baseline.
pub struct RepliesPhase {
    pub secs: u64,
    /// A bare client's round trip to the Crisp sink.
    pub crisp_rtt: Lat,
    pub runs: Vec<RepliesRun>,
}

impl RepliesPhase {
    /// The first run with `cap`.
    fn run(&self, cap: Cap) -> Option<&RepliesRun> {
        self.runs.iter().find(|r| r.cap == cap)
    }
}

impl RepliesRun {
    fn name(&self) -> String {
        format!("{}/s, {}", self.rate, self.cap.name())
    }
}

impl RepliesPhase {
    /// An error naming every problem a run found.
    pub fn verdict(&self) -> Res<()> {
        let all: Vec<String> = self
            .runs
            .iter()
            .flat_map(|r| r.problems.iter().map(move |p| format!("{}: {p}", r.name())))
            .collect();
        if all.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "replies phase: {} problem(s): {}",
                all.len(),
                all.join("; ")
            )
            .into())
        }
    }
}

/// Runs the phase: the baseline, then each run on a fresh relay and
/// sinks. Problems are reported, not returned: see
/// [`RepliesPhase::verdict`].
pub async fn phase(quick: bool) -> Res<RepliesPhase> {
    let secs = seconds(quick);
    eprintln!(
        "  replies: Slack thread replies to Crisp for {secs} s each at {}, over up to {CONVERSATIONS} conversations",
        RUNS.map(|(rate, cap)| format!("{rate}/s with the {}", cap.name()))
            .join(", then ")
    );
    let slack = Arc::new(SlackApi::start().await?);
    let crisp = CrispApi::start().await?;
    let crisp_rtt = round_trip(&crisp).await?;
    eprintln!(
        "  replies: the Crisp sink's round trip from a bare client: p50 {:.2} p99 {:.2} ms",
        crisp_rtt.p50, crisp_rtt.p99
    );
    let sample = sample_event()?;
    let mut runs = Vec::new();
    for (rate, cap) in RUNS {
        runs.push(run(&slack, &crisp, &sample, rate, cap, secs).await?);
    }
    Ok(RepliesPhase {
        secs,
        crisp_rtt,
        runs,
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

/// `v0=hex(HMAC-SHA256(secret, "v0:{timestamp}:{body}"))`.
fn signature(timestamp: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(format!("v0:{timestamp}:").as_bytes());
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

/// POSTs with `headers`; the status.
async fn post(conn: &mut Conn, uri: &str, headers: &[(&str, &str)], body: Bytes) -> Res<u16> {
    conn.sender.ready().await?;
    let mut req = Request::post(uri)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = conn.sender.send_request(req.body(Full::new(body))?).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(status)
}

/// 200 operator messages to the Crisp sink, one after the other on one
/// connection, as the relay would send them: the floor of the last hop.
async fn round_trip(crisp: &CrispApi) -> Res<Lat> {
    let mut conn = Conn::open(crisp.addr).await?;
    let auth = crisp_authorization();
    let headers = [
        ("authorization", auth.as_str()),
        ("x-crisp-tier", "website"),
    ];
    let mut samples = Vec::new();
    for n in 0..200 {
        let body = json!({"type": "text", "from": "operator", "origin": "chat",
            "content": format!("reply c01 n{n:04}"), "user": {"nickname": "Agent"}});
        let at = Instant::now();
        let status = post(
            &mut conn,
            "/v1/website/w/conversation/s/message",
            &headers,
            Bytes::from(body.to_string()),
        )
        .await?;
        if status != 201 {
            return Err(format!("replies: the Crisp sink answered {status} to the bench").into());
        }
        samples.push(micros(at.elapsed()));
    }
    crisp.reset();
    Ok(lat(&mut samples[10..]))
}

fn sample_event() -> Res<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(EVENT);
    let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()).into())
}

fn session(c: u32) -> String {
    format!("session_bench_reply_{c:02}")
}

fn reply_text(c: u32, m: u32) -> String {
    format!("reply c{c:02} n{m:04}")
}

/// `(c, m)` of `reply c07 n0012`.
fn parse_reply(text: &str) -> Option<(u32, u32)> {
    let rest = text.strip_prefix("reply c")?;
    let (c, m) = rest.split_once(" n")?;
    Some((c.parse().ok()?, m.parse().ok()?))
}

/// The conversation a thread's parent opened (`open c07` in its text).
fn parent_of(text: &str) -> Option<u32> {
    let at = text.find("open c")? + "open c".len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The visitor's message that opens conversation `c`'s thread.
fn visitor_event(sample: &Value, c: u32) -> Res<Bytes> {
    let mut v = sample.clone();
    let Some(data) = v.get_mut("data").and_then(Value::as_object_mut) else {
        return Err(format!("{EVENT}: no `data` object").into());
    };
    data.insert("session_id".into(), json!(session(c)));
    data.insert("content".into(), json!(format!("open c{c:02}")));
    data.insert("fingerprint".into(), json!(910_000_000 + c));
    data.insert(
        "user".into(),
        json!({"user_id": session(c), "nickname": format!("Visitor c{c:02}")}),
    );
    Ok(Bytes::from(serde_json::to_vec(&v)?))
}

/// A person's reply in a thread, as Slack's Events API posts it.
fn reply_event(rate: u32, k: u64, thread_ts: &str, ts: &str, text: &str) -> Bytes {
    Bytes::from(
        json!({
            "token": "bench-verification-token",
            "team_id": "T0BENCH",
            "api_app_id": "A0BENCH",
            "type": "event_callback",
            "event_id": format!("Ev{rate:03}R{k:07}"),
            "event_time": now_secs(),
            "event": {
                "type": "message",
                "channel": CHANNEL,
                "channel_type": "channel",
                "user": "U0BENCHAGENT",
                "text": text,
                "ts": ts,
                "thread_ts": thread_ts,
                "user_profile": {"display_name": "Agent", "real_name": "Bench Agent"},
            },
        })
        .to_string(),
    )
}

/// One reply as sent.
struct Sent {
    c: u32,
    m: u32,
    at: Instant,
    /// The status, or why there was none.
    answer: Result<u16, String>,
    ack_us: u32,
}

async fn run(
    slack: &Arc<SlackApi>,
    crisp: &CrispApi,
    sample: &Value,
    rate: u32,
    cap: Cap,
    secs: u64,
) -> Res<RepliesRun> {
    let name = format!("{rate}/s, {}", cap.name());
    slack.reset();
    crisp.reset();
    let conversations = CONVERSATIONS.min(rate).max(CONNECTIONS);
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("relay.log");
    let setup = RelaySetup {
        filler_routes: 0,
        target: format!(
            "{{kind: slack, token: \"{BOT_TOKEN}\", channel: {CHANNEL}, api_url: \"{}\", threads: per_conversation, \
             rate_limit: {{requests: 100, per: 1s}}, timeout: 5s, replies: {{signing_secret: \"{SECRET}\"}}}}",
            slack.api_url()
        ),
        template: Some(TEMPLATE),
    };
    let extra = format!(
        "crisp: {{identifier: \"{CRISP_ID}\", key: \"{CRISP_KEY}\", api_url: \"{}\"{}}}\n",
        crisp.api_url(),
        cap.config()
    );
    let start = Start {
        log: Some(&log),
        extra: &extra,
        ..Start::default()
    };
    let (relay, _) = start_relay_in(dir.path(), &setup, &start).await?;
    let opened = Instant::now();
    let parents = open_threads(&relay, slack, sample, conversations).await?;
    let setup_secs = opened.elapsed().as_secs_f64();
    eprintln!(
        "  replies {name}: {conversations} threads opened in {setup_secs:.2} s; sending for {secs} s on {CONNECTIONS} connections"
    );

    let started = Instant::now();
    let sent = send(&relay, slack, parents, rate, secs).await?;
    let acked: HashSet<(u32, u32)> = sent
        .iter()
        .filter(|s| s.answer == Ok(200))
        .map(|s| (s.c, s.m))
        .collect();
    let errors: Vec<String> = sent
        .iter()
        .filter(|s| s.answer != Ok(200))
        .map(|s| match &s.answer {
            Ok(status) => format!("{} answered {status}", reply_text(s.c, s.m)),
            Err(e) => format!("{}: {e}", reply_text(s.c, s.m)),
        })
        .collect();
    let mut ack_us: Vec<u32> = sent
        .iter()
        .filter(|s| s.answer == Ok(200))
        .map(|s| s.ack_us)
        .collect();
    eprintln!(
        "  replies {name}: {} sent in {:.1} s, {} acknowledged 200, {} errors; waiting for Crisp (at most {}/s: about {:.0} s)",
        sent.len(),
        started.elapsed().as_secs_f64(),
        acked.len(),
        errors.len(),
        cap.per_s(),
        (acked.len() as f64 / f64::from(cap.per_s()) - started.elapsed().as_secs_f64()).max(0.0)
    );
    wait_for_crisp(&relay, slack, crisp, acked.len(), cap.per_s()).await;
    relay.stop();
    let log_problems = log_problems(&log);

    let messages = crisp.messages();
    let mut check = check(&messages, &sent, &acked, conversations, sample);
    check.problems.extend(sink_problems(slack, crisp));
    if !errors.is_empty() {
        check.problems.push(format!(
            "{} of {} replies not acknowledged 200: {}",
            errors.len(),
            sent.len(),
            few(&errors)
        ));
    }
    let first_sent = sent.iter().map(|s| s.at).min();
    let (first_in, last_in) = (
        messages.iter().map(|m| m.at).min(),
        messages.iter().map(|m| m.at).max(),
    );
    let r = RepliesRun {
        rate,
        cap,
        conversations,
        setup_secs,
        sent: sent.len(),
        acked: acked.len(),
        errors: errors.len(),
        error_samples: errors.into_iter().take(5).collect(),
        delivered: check.delivered,
        crisp_accepted: messages.len(),
        ack: lat(&mut ack_us),
        e2e: lat(&mut check.e2e_us),
        after_ack: lat(&mut check.after_ack_us),
        wall_secs: match (first_sent, last_in) {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
            _ => f64::NAN,
        },
        crisp_per_s: match (first_in, last_in) {
            (Some(a), Some(b)) if messages.len() > 1 => {
                (messages.len() - 1) as f64 / b.duration_since(a).as_secs_f64().max(1e-9)
            }
            _ => f64::NAN,
        },
        checks: slack
            .reactions()
            .iter()
            .filter(|(_, name)| name == "white_check_mark")
            .count(),
        problems: check.problems,
        log_problems,
    };
    eprintln!(
        "  replies {name}: {} in Crisp ({} requests) at {:.2}/s, {:.1} s from first sent to last in Crisp; \
         ack p50 {:.2} p99 {:.2} max {:.2} ms; chat → Crisp p50 {} p99 {} max {} (after the 200: p50 {} p99 {}); {} ✅; {}; {} warnings or errors logged",
        r.delivered,
        r.crisp_accepted,
        r.crisp_per_s,
        r.wall_secs,
        r.ack.p50,
        r.ack.p99,
        r.ack.max,
        ms_or_s(r.e2e.p50),
        ms_or_s(r.e2e.p99),
        ms_or_s(r.e2e.max),
        ms_or_s(r.after_ack.p50),
        ms_or_s(r.after_ack.p99),
        r.checks,
        if r.problems.is_empty() {
            "each reply once, in order, in its conversation".to_owned()
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

/// Posts one visitor message per conversation and waits until every
/// conversation has one thread and the relay's queue is empty (the map is
/// written by then); each conversation's thread `ts`, in order.
async fn open_threads(
    relay: &RelayProc,
    slack: &SlackApi,
    sample: &Value,
    conversations: u32,
) -> Res<Vec<String>> {
    let opened = Instant::now();
    let mut conn = Conn::open(relay.ingest).await?;
    let uri = format!("/crisp/hooks?key={KEY}");
    for c in 1..=conversations {
        let status = post(&mut conn, &uri, &[], visitor_event(sample, c)?).await?;
        if status != 200 {
            return Err(format!("replies: the relay answered {status} to visitor c{c:02}").into());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let threads = loop {
        let parents = slack.parents();
        let ready =
            parents.len() >= conversations as usize && queue_depth(relay.admin).await == Some(0);
        if ready || Instant::now() > deadline {
            break parents;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut thread_of: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for p in &threads {
        if let Some(c) = parent_of(&p.text) {
            thread_of.entry(c).or_default().push(p.ts.clone());
        }
    }
    (1..=conversations)
        .map(|c| match thread_of.get(&c).map(Vec::as_slice) {
            Some([ts]) => Ok(ts.clone()),
            other => Err(format!(
                "replies: conversation c{c:02} has {} thread(s) after {:.1} s (the Slack sink saw {} parents: {:?}; refused {:?})",
                other.map_or(0, <[String]>::len),
                opened.elapsed().as_secs_f64(),
                threads.len(),
                threads.iter().map(|p| &p.text).take(3).collect::<Vec<_>>(),
                slack.refused()
            )
            .into()),
        })
        .collect()
}

/// The load: reply `k` of the run is due at `k / rate`, to conversation
/// `k mod N`, on connection `k mod CONNECTIONS` (so each conversation
/// keeps to one connection), signed as Slack signs.
async fn send(
    relay: &RelayProc,
    slack: &Arc<SlackApi>,
    parents: Vec<String>,
    rate: u32,
    secs: u64,
) -> Res<Vec<Sent>> {
    let conversations = parents.len() as u64;
    let parents = Arc::new(parents);
    let started = Instant::now();
    let duration = Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for conn_no in 0..CONNECTIONS {
        let (slack, parents) = (slack.clone(), parents.clone());
        let addr = relay.ingest;
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut conn = Conn::open(addr).await.ok();
            for n in 0u64.. {
                let k = n * u64::from(CONNECTIONS) + u64::from(conn_no);
                let at = started + Duration::from_secs_f64(k as f64 / f64::from(rate));
                if at.duration_since(started) >= duration {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                let c = (k % conversations) as u32 + 1;
                let m = (k / conversations) as u32 + 1;
                let body = reply_event(
                    rate,
                    k,
                    &parents[c as usize - 1],
                    &slack.next_ts(),
                    &reply_text(c, m),
                );
                let timestamp = now_secs().to_string();
                let sig = signature(&timestamp, &body);
                let headers = [
                    ("x-slack-request-timestamp", timestamp.as_str()),
                    ("x-slack-signature", sig.as_str()),
                ];
                let answer = match conn.as_mut() {
                    Some(cn) => post(cn, "/slack/events", &headers, body)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err("cannot connect".to_owned()),
                };
                if answer.is_err() {
                    conn = Conn::open(addr).await.ok();
                }
                out.push(Sent {
                    c,
                    m,
                    at,
                    answer,
                    ack_us: micros(at.elapsed()),
                });
            }
            out
        }));
    }
    let mut sent = Vec::new();
    for t in tasks {
        sent.extend(t.await?);
    }
    Ok(sent)
}

/// Until Crisp holds `acked` replies (at a little under the cap of `cap`
/// per second, with room to spare), then until the relay has nothing left
/// to send and the ✅ reactions (sent in the background after each reply)
/// are in.
async fn wait_for_crisp(
    relay: &RelayProc,
    slack: &SlackApi,
    crisp: &CrispApi,
    acked: usize,
    cap: u32,
) {
    let deadline =
        Instant::now() + Duration::from_secs_f64(acked as f64 / (f64::from(cap) * 0.8) + 30.0);
    let mut told = Instant::now();
    while crisp.count() < acked && Instant::now() < deadline {
        if told.elapsed() >= Duration::from_secs(30) {
            eprintln!("    … {} of {acked} in Crisp", crisp.count());
            told = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settle = Instant::now() + Duration::from_secs(10);
    while queue_depth(relay.admin).await.unwrap_or(0) > 0 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settle = Instant::now() + Duration::from_secs(5);
    while slack.reaction_count() < crisp.count() && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the sinks refused, and messages the relay posted into the threads
/// (none expected: a failed reply's note would be one).
fn sink_problems(slack: &SlackApi, crisp: &CrispApi) -> Vec<String> {
    let mut problems = Vec::new();
    let (refused, refusals) = crisp.refusals();
    if refused > 0 {
        problems.push(format!(
            "the Crisp sink refused {refused} request(s): {}",
            refusals.join(" | ")
        ));
    }
    let refused = slack.refused();
    if !refused.is_empty() {
        problems.push(format!(
            "the Slack sink refused request(s): {}",
            refused.join(" | ")
        ));
    }
    let notes = slack.in_threads();
    if !notes.is_empty() {
        problems.push(format!(
            "the relay posted {} message(s) into the threads: {}",
            notes.len(),
            few(&notes)
        ));
    }
    problems
}

/// The first five, joined.
fn few(v: &[String]) -> String {
    v.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
}

/// What the checks of one run found.
struct Checked {
    problems: Vec<String>,
    delivered: usize,
    /// Per reply, its first arrival: scheduled send → in Crisp, and the
    /// relay's 200 → in Crisp, µs.
    e2e_us: Vec<u32>,
    after_ack_us: Vec<u32>,
}

/// Every acknowledged reply in Crisp exactly once, in its conversation,
/// under the agent's name, each conversation's in the order sent; nothing
/// else.
fn check(
    messages: &[CrispMessage],
    sent: &[Sent],
    acked: &HashSet<(u32, u32)>,
    conversations: u32,
    sample: &Value,
) -> Checked {
    let website = sample["website_id"].as_str().unwrap_or("");
    let sent_at: HashMap<(u32, u32), (Instant, u32)> = sent
        .iter()
        .map(|s| ((s.c, s.m), (s.at, s.ack_us)))
        .collect();
    let mut problems = Vec::new();
    let (mut e2e_us, mut after_ack_us) = (Vec::new(), Vec::new());
    let mut seen: HashMap<(u32, u32), u32> = HashMap::new();
    let mut last: HashMap<u32, u32> = HashMap::new();
    let (mut foreign, mut misrouted, mut unnamed, mut unacked) =
        (Vec::new(), Vec::new(), 0usize, Vec::new());
    let mut out_of_order = Vec::new();
    for msg in messages {
        let Some((c, m)) =
            parse_reply(&msg.content).filter(|(c, _)| (1..=conversations).contains(c))
        else {
            foreign.push(msg.content.clone());
            continue;
        };
        if msg.website != website || msg.session != session(c) {
            misrouted.push(format!(
                "{} went to {}/{}",
                reply_text(c, m),
                msg.website,
                msg.session
            ));
        }
        if msg.nickname != "Agent" {
            unnamed += 1;
        }
        let n = seen.entry((c, m)).or_insert(0);
        *n += 1;
        if *n > 1 {
            continue;
        }
        match sent_at.get(&(c, m)) {
            Some(&(at, ack_us)) => {
                let took = micros(msg.at.saturating_duration_since(at));
                e2e_us.push(took);
                after_ack_us.push(took.saturating_sub(ack_us));
            }
            None => foreign.push(msg.content.clone()),
        }
        if !acked.contains(&(c, m)) {
            unacked.push(reply_text(c, m));
        }
        let prev = last.entry(c).or_insert(0);
        if m < *prev {
            out_of_order.push(format!("{} after n{prev:04}", reply_text(c, m)));
        }
        *prev = (*prev).max(m);
    }
    let dups: u32 = seen.values().map(|n| n - 1).sum();
    if dups > 0 {
        problems.push(format!("{dups} reply(ies) reached Crisp more than once"));
    }
    let mut missing: Vec<String> = acked
        .iter()
        .filter(|k| !seen.contains_key(k))
        .map(|&(c, m)| reply_text(c, m))
        .collect();
    missing.sort();
    if !missing.is_empty() {
        problems.push(format!(
            "{} acknowledged reply(ies) never reached Crisp: {}",
            missing.len(),
            few(&missing)
        ));
    }
    if !out_of_order.is_empty() {
        problems.push(format!(
            "{} reply(ies) reached Crisp out of their conversation's order: {}",
            out_of_order.len(),
            few(&out_of_order)
        ));
    }
    if !misrouted.is_empty() {
        problems.push(format!(
            "{} reply(ies) reached the wrong conversation: {}",
            misrouted.len(),
            few(&misrouted)
        ));
    }
    if !foreign.is_empty() {
        problems.push(format!(
            "{} message(s) in Crisp that the bench did not send: {}",
            foreign.len(),
            few(&foreign)
        ));
    }
    if !unacked.is_empty() {
        problems.push(format!(
            "{} reply(ies) reached Crisp though not acknowledged 200: {}",
            unacked.len(),
            few(&unacked)
        ));
    }
    if unnamed > 0 {
        problems.push(format!(
            "{unnamed} reply(ies) reached Crisp under another name than the agent's"
        ));
    }
    Checked {
        problems,
        delivered: seen.len(),
        e2e_us,
        after_ack_us,
    }
}

fn verdict_text(r: &RepliesRun) -> String {
    if r.problems.is_empty() {
        "each once, in order".to_owned()
    } else {
        format!("**{} problem(s)**", r.problems.len())
    }
}

/// Milliseconds as `12.3 ms`, or `45.1 s` from 1 s up.
fn ms_or_s(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

/// The phase's rows of the table.
pub fn table_rows(p: &RepliesPhase) -> Vec<String> {
    let mut rows = vec![format!(
        "| replies: the Crisp sink's round trip from a bare client (baseline), p50/p99 | {:.2} / {:.2} ms | — |",
        p.crisp_rtt.p50, p.crisp_rtt.p99
    )];
    for r in &p.runs {
        let name = r.name();
        rows.push(format!(
            "| replies at {name} for {} s over {} threads: sent / acknowledged 200 / in Crisp | {} / {} / {}; {} | all, 0 errors |",
            p.secs,
            r.conversations,
            r.sent,
            r.acked,
            r.delivered,
            verdict_text(r)
        ));
        rows.push(format!(
            "| same, {name}: ack p50/p99/max | {:.2} / {:.2} / {:.2} ms | < 3 s (Slack) |",
            r.ack.p50, r.ack.p99, r.ack.max
        ));
        rows.push(format!(
            "| same, {name}: chat → Crisp p50/p99/max (of which after the 200: p50/p99) | {} / {} / {} ({} / {}) | — |",
            ms_or_s(r.e2e.p50),
            ms_or_s(r.e2e.p99),
            ms_or_s(r.e2e.max),
            ms_or_s(r.after_ack.p50),
            ms_or_s(r.after_ack.p99)
        ));
        rows.push(format!(
            "| same, {name}: into Crisp; first sent to last in Crisp | {:.2}/s; {:.1} s | ≤ {}/s |",
            r.crisp_per_s,
            r.wall_secs,
            r.cap.per_s().min(r.rate)
        ));
    }
    if let (Some(shipped), Some(lifted)) = (p.run(Cap::Shipped), p.run(Cap::Lifted)) {
        rows.push(format!(
            "| replies, {} vs {}: chat → Crisp p50 / p99 | **{:.0}×** / {:.0}× | — |",
            Cap::Shipped.name(),
            Cap::Lifted.name(),
            shipped.e2e.p50 / lifted.e2e.p50.max(1e-9),
            shipped.e2e.p99 / lifted.e2e.p99.max(1e-9)
        ));
    }
    rows
}

fn run_json(r: &RepliesRun) -> Value {
    json!({
        "rate_per_s": r.rate,
        "crisp_rate_limit_per_s": r.cap.per_s(),
        "crisp_rate_limit_set": r.cap == Cap::Lifted,
        "conversations": r.conversations,
        "threads_opened_secs": round2(r.setup_secs),
        "sent": r.sent,
        "acknowledged_200": r.acked,
        "errors": r.errors,
        "error_samples": r.error_samples,
        "delivered_to_crisp": r.delivered,
        "crisp_requests_accepted": r.crisp_accepted,
        "ack": lat_json(r.ack),
        "chat_to_crisp": lat_json(r.e2e),
        "acknowledged_to_crisp": lat_json(r.after_ack),
        "first_sent_to_last_in_crisp_secs": round2(r.wall_secs),
        "into_crisp_per_s": round2(r.crisp_per_s),
        "check_mark_reactions": r.checks,
        "correct": r.problems.is_empty(),
        "problems": r.problems,
        "log_warnings_or_errors": r.log_problems.len(),
    })
}

/// The phase as JSON.
pub fn to_json(p: &RepliesPhase) -> Value {
    json!({
        "seconds_per_run": p.secs,
        "connections": CONNECTIONS,
        "crisp_rate_limit_default_per_s": SHIPPED_CAP,
        "crisp_sink_round_trip": lat_json(p.crisp_rtt),
        "runs": p.runs.iter().map(run_json).collect::<Vec<_>>(),
    })
}
