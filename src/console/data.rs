//! What the console shows, read from the relay's parts (configuration in
//! force, store, metrics, target states) into plain view structs that the
//! pages render and the API serializes. Reads only: the actions are in
//! `mod.rs`. Secrets never enter a view: targets show their URL's host at
//! most, never a path, query, header or token.

use serde::Serialize;

use super::Deps;
use crate::delivery::TargetState;
use crate::metrics::INGEST_OUTCOMES;
use crate::render::format_iso8601;
use crate::store::{DeadLetter, StoreError};

/// One target's row on the overview.
#[derive(Debug, Clone, Serialize)]
pub struct TargetRow {
    pub name: String,
    pub kind: String,
    /// running, paused, down, disabled, standby (or `unconfigured` for a
    /// queue whose target the configuration no longer has).
    pub state: String,
    pub reason: Option<String>,
    /// `state` with its reason, as the page shows it.
    pub state_text: String,
    pub queue_depth: i64,
    /// Age of the head of the queue, milliseconds.
    pub oldest_age_ms: Option<i64>,
    pub oldest_age: String,
    pub dead_letters: i64,
    pub delivered_1h: u64,
    pub failed_1h: u64,
    pub throttled_1h: u64,
    /// The current rate-limit wait; the relay does not expose it yet: "—".
    pub rate_wait: String,
}

/// One ingest counter.
#[derive(Debug, Clone, Serialize)]
pub struct IngestCount {
    /// `accepted`, `duplicate`, or `rejected-REASON`.
    pub key: String,
    pub label: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreView {
    pub engine: String,
    /// SQLite: the file's size with its WAL, bytes.
    pub size_bytes: Option<u64>,
    pub size: String,
    /// PostgreSQL: this replica's name.
    pub replica: Option<String>,
    /// Targets whose lease this replica holds (it runs their worker).
    pub leases_here: Vec<String>,
    /// Targets running on another replica.
    pub leases_elsewhere: Vec<String>,
    /// Why the queue could not be read, if it could not.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub targets: Vec<TargetRow>,
    pub ingest: Vec<IngestCount>,
    pub store: StoreView,
    pub now: String,
}

/// Reads the overview.
pub async fn overview(deps: &Deps) -> Overview {
    let relay = deps.live.get();
    let now_ms = deps.clock.now_ms();
    let (stats, error) = match deps.store.queue_stats().await {
        Ok(s) => (s, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let states = deps.states.all();
    let mut names: Vec<(String, String)> = relay
        .config
        .targets
        .iter()
        .map(|t| (t.name.clone(), t.kind.to_string()))
        .collect();
    for s in &stats {
        if !names.iter().any(|(n, _)| *n == s.target) {
            names.push((s.target.clone(), "—".into()));
        }
    }
    let mut targets = Vec::new();
    let (mut here, mut elsewhere) = (Vec::new(), Vec::new());
    for (name, kind) in names {
        let configured = relay.config.targets.iter().find(|t| t.name == name);
        let state = states.iter().find(|(n, _)| *n == name).map(|(_, s)| s);
        let (word, reason) = match (configured, state) {
            (None, _) => (
                "unconfigured".to_owned(),
                Some(
                    "not in the configuration in force; its queue waits (see `crisp-relay queue`)"
                        .to_owned(),
                ),
            ),
            (Some(t), _) if !t.enabled => (
                "disabled".to_owned(),
                Some(t.disabled_reason.to_owned()).filter(|r| !r.is_empty()),
            ),
            (Some(_), None) => ("running".to_owned(), None),
            (Some(_), Some(s)) => (s.as_str().to_owned(), reason_of(s)),
        };
        match state {
            Some(TargetState::Running) => here.push(name.clone()),
            Some(TargetState::Standby) => elsewhere.push(name.clone()),
            _ => {}
        }
        let q = stats.iter().find(|s| s.target == name);
        let oldest = q
            .and_then(|q| q.head_queued_at_ms)
            .map(|t| (now_ms - t).max(0));
        let hour = deps
            .window
            .last_hour(&name, now_ms, deps.metrics.target_totals(&name));
        let rate_wait = deps.metrics.rate_wait_of(&name).map_or_else(
            || "—".to_owned(),
            |w| human_age(i64::try_from(w.as_millis()).unwrap_or(i64::MAX)),
        );
        targets.push(TargetRow {
            state_text: match &reason {
                Some(r) => format!("{word}: {r}"),
                None => word.clone(),
            },
            name,
            kind,
            state: word,
            reason,
            queue_depth: q.map_or(0, |q| q.pending),
            oldest_age_ms: oldest,
            oldest_age: oldest.map_or_else(|| "—".to_owned(), human_age),
            dead_letters: q.map_or(0, |q| q.dead),
            delivered_1h: hour.delivered,
            failed_1h: hour.failed,
            throttled_1h: hour.throttled,
            rate_wait,
        });
    }
    let ingest = deps
        .metrics
        .ingest_totals()
        .iter()
        .map(|(outcome, count)| {
            let key = match *outcome {
                "accepted" | "duplicate" => (*outcome).to_owned(),
                other => format!("rejected-{other}"),
            };
            IngestCount {
                label: outcome.replace('_', " "),
                key,
                count: *count,
            }
        })
        .collect();
    debug_assert_eq!(INGEST_OUTCOMES[0], "accepted");
    let info = deps.store.info();
    let size_bytes = match (&relay.config.startup.store_url, info.engine) {
        (None, "sqlite") => sqlite_size(&relay.config.startup.store_path).await,
        _ => None,
    };
    Overview {
        targets,
        ingest,
        store: StoreView {
            engine: info.engine.to_owned(),
            size: size_bytes.map_or_else(|| "—".to_owned(), human_size),
            size_bytes,
            leases_here: if info.replica.is_some() {
                here
            } else {
                Vec::new()
            },
            leases_elsewhere: elsewhere,
            replica: info.replica,
            error,
        },
        now: format_iso8601(now_ms),
    }
}

fn reason_of(s: &TargetState) -> Option<String> {
    match s {
        TargetState::Paused { reason } => Some(reason.clone()),
        TargetState::Down { reason, restarts } => Some(format!("{reason} (restarts: {restarts})")),
        _ => None,
    }
}

async fn sqlite_size(path: &std::path::Path) -> Option<u64> {
    let main = tokio::fs::metadata(path).await.ok()?.len();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = tokio::fs::metadata(&wal).await.map_or(0, |m| m.len());
    Some(main + wal)
}

/// One dead letter as listed.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterRow {
    pub id: i64,
    pub event_id: i64,
    pub event: String,
    pub target: String,
    pub route: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    /// Last status and error, as the page shows them.
    pub reason: String,
    pub created_at: String,
    pub failed_at: String,
    /// The original event, only when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl From<DeadLetter> for DeadLetterRow {
    fn from(d: DeadLetter) -> Self {
        let reason = match (d.last_status, &d.last_error) {
            (Some(s), Some(e)) => format!("HTTP {s}: {e}"),
            (Some(s), None) => format!("HTTP {s}"),
            (None, Some(e)) => e.clone(),
            (None, None) => "—".into(),
        };
        Self {
            id: d.id,
            event_id: d.event_id,
            event: d.event,
            target: d.target,
            route: d.route,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            reason,
            created_at: format_iso8601(d.created_at_ms),
            failed_at: format_iso8601(d.failed_at_ms),
            body: None,
        }
    }
}

pub async fn dead_letters(
    deps: &Deps,
    target: Option<&str>,
) -> Result<Vec<DeadLetterRow>, StoreError> {
    Ok(deps
        .store
        .dead_letters(target)
        .await?
        .into_iter()
        .map(DeadLetterRow::from)
        .collect())
}

/// One dead letter, with the event's body pretty-printed when `body`.
pub async fn dead_letter(
    deps: &Deps,
    id: i64,
    body: bool,
) -> Result<Option<DeadLetterRow>, StoreError> {
    let Some(d) = deps
        .store
        .dead_letters(None)
        .await?
        .into_iter()
        .find(|d| d.id == id)
    else {
        return Ok(None);
    };
    let mut row = DeadLetterRow::from(d);
    if body {
        row.body = Some(match deps.store.event_body(row.event_id).await? {
            Some(text) => pretty(&text),
            None => "(the event is no longer stored)".into(),
        });
    }
    Ok(Some(row))
}

/// `text` pretty-printed if it is JSON, else as is.
pub fn pretty(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteView {
    pub name: String,
    /// The event names it can match, or "any".
    pub events: String,
    pub targets: Vec<String>,
    pub template: Option<String>,
    #[serde(rename = "continue")]
    pub continue_matching: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetView {
    pub name: String,
    pub kind: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// The destination's host only (the rest of a webhook URL is a token).
    pub host: Option<String>,
    pub rate_limit: Option<String>,
    pub max_attempts: u32,
    pub timeout: String,
    pub batch: usize,
    pub bot: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigView {
    pub file: String,
    /// The configuration in force passed every check when it was loaded.
    pub valid: bool,
    pub warnings: Vec<String>,
    /// The errors of the last rejected reload, until one succeeds.
    pub last_reload_error: Option<String>,
    pub token_configured: bool,
    pub routes: Vec<RouteView>,
    pub targets: Vec<TargetView>,
}

pub fn config(deps: &Deps) -> ConfigView {
    let relay = deps.live.get();
    let cfg = &relay.config;
    let routes = cfg
        .router
        .routes()
        .iter()
        .map(|r| RouteView {
            name: r.name.clone(),
            events: r
                .event_names()
                .map_or_else(|| "any".to_owned(), |n| n.join(", ")),
            targets: r
                .targets
                .iter()
                .filter_map(|&i| cfg.targets.get(i).map(|t| t.name.clone()))
                .collect(),
            template: r.template.clone(),
            continue_matching: r.continue_matching,
        })
        .collect();
    let targets = cfg
        .targets
        .iter()
        .map(|t| TargetView {
            name: t.name.clone(),
            kind: t.kind.to_string(),
            enabled: t.enabled,
            disabled_reason: Some(t.disabled_reason.to_owned()).filter(|r| !r.is_empty()),
            host: t
                .url
                .as_ref()
                .and_then(|u| u.expose().host_str().map(str::to_owned))
                .or_else(|| {
                    t.bot
                        .as_ref()
                        .and_then(|b| b.api.host_str().map(str::to_owned))
                }),
            rate_limit: t.rate_limit.map(|r| {
                format!(
                    "{} per {} (burst {})",
                    r.requests,
                    human_age(i64::try_from(r.per.as_millis()).unwrap_or(i64::MAX)),
                    r.burst
                )
            }),
            max_attempts: t.retry.max_attempts,
            timeout: human_age(i64::try_from(t.timeout.as_millis()).unwrap_or(i64::MAX)),
            batch: t.batch,
            bot: t.bot.is_some(),
        })
        .collect();
    ConfigView {
        file: cfg.file.clone(),
        valid: true,
        warnings: cfg.warnings.iter().map(ToString::to_string).collect(),
        last_reload_error: deps.reload.last_error(),
        token_configured: cfg.admin.token.is_some(),
        routes,
        targets,
    }
}

/// A duration for people: `850 ms`, `42 s`, `3 min 5 s`, `2 h 10 min`,
/// `3 d 4 h`.
pub fn human_age(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match s {
        0 if ms < 1000 => format!("{ms} ms"),
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// Bytes for people: `512 B`, `1.5 KiB`, `20.0 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        let ages = [
            (0, "0 ms"),
            (850, "850 ms"),
            (42_000, "42 s"),
            (185_000, "3 min 5 s"),
            (7_800_000, "2 h 10 min"),
            (3 * 86_400_000 + 4 * 3_600_000, "3 d 4 h"),
            (-5, "0 ms"),
        ];
        for (ms, want) in ages {
            assert_eq!(human_age(ms), want);
        }
        let sizes = [
            (0, "0 B"),
            (1536, "1.5 KiB"),
            (20 * 1024 * 1024, "20.0 MiB"),
        ];
        for (b, want) in sizes {
            assert_eq!(human_size(b), want);
        }
    }

    #[test]
    fn bodies_are_pretty_printed_when_json() {
        assert_eq!(pretty(r#"{"a":1}"#), "{\n  \"a\": 1\n}");
        assert_eq!(pretty("not json <b>"), "not json <b>");
    }
}
