//! Prometheus metrics, served on the admin listener at `/metrics`.
//!
//! Owns the metric families and the few helpers that update them. Label
//! values come only from the configuration (target names) and fixed sets
//! (outcomes, known Crisp event names) — never from event content or URLs, so
//! cardinality stays bounded and nothing secret can leak. Gauges about the
//! queue are read from the store at scrape time, from the queued rows only
//! (never the delivered history).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The Crisp event names (research/crisp.md §3); any other name is
/// counted as `other`, so a client cannot grow the label set.
const KNOWN_EVENTS: &[&str] = &[
    "session:update_availability",
    "session:update_verify",
    "session:request:initiated",
    "session:set_email",
    "session:set_phone",
    "session:set_address",
    "session:set_subject",
    "session:set_avatar",
    "session:set_nickname",
    "session:set_origin",
    "session:set_data",
    "session:set_segments",
    "session:set_block",
    "session:set_opened",
    "session:set_closed",
    "session:set_participants",
    "session:set_mentions",
    "session:set_routing",
    "session:set_inbox",
    "session:set_state",
    "session:sync:capabilities",
    "session:sync:geolocation",
    "session:sync:system",
    "session:sync:network",
    "session:sync:timezone",
    "session:sync:locales",
    "session:sync:pages",
    "session:sync:events",
    "session:sync:rating",
    "session:sync:topic",
    "session:removed",
    "session:error",
    "message:send",
    "message:received",
    "message:updated",
    "message:removed",
    "message:compose:send",
    "message:compose:receive",
    "message:acknowledge:read:send",
    "message:acknowledge:read:received",
    "message:acknowledge:unread:send",
    "message:acknowledge:delivered",
    "message:acknowledge:ignored",
    "message:notify:unread:send",
    "message:notify:unread:received",
    "spam:message",
    "spam:decision",
    "people:profile:created",
    "people:profile:updated",
    "people:profile:removed",
    "people:bind:session",
    "people:sync:profile",
    "people:import:progress",
    "people:import:done",
    "campaign:progress",
    "campaign:dispatched",
    "campaign:running",
    "browsing:request:initiated",
    "browsing:request:rejected",
    "call:request:initiated",
    "call:request:rejected",
    "identity:verify:request",
    "widget:action:processed",
    "status:health:changed",
    "website:update_visitors_count",
    "website:update_operators_availability",
    "website:users:available",
    "bucket:url:upload:generated",
    "bucket:url:avatar:generated",
    "bucket:url:website:generated",
    "bucket:url:campaign:generated",
    "bucket:url:helpdesk:generated",
    "bucket:url:status:generated",
    "bucket:url:processing:generated",
    "media:animation:listed",
    "email:subscribe",
    "email:track:view",
    "plugin:channel",
    "plugin:event",
    "plugin:subscription:updated",
    "plugin:settings:saved",
    "plan:subscription:updated",
];

/// The event label for an event name: itself if Crisp documents it, else
/// `other`; `unknown` when the request was rejected before it was read.
pub fn event_label(name: Option<&str>) -> &'static str {
    match name {
        None => "unknown",
        Some(n) => KNOWN_EVENTS
            .iter()
            .find(|k| **k == n)
            .copied()
            .unwrap_or("other"),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetOutcome {
    pub target: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetSource {
    pub target: String,
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplyLabels {
    /// `slack` or `discord`.
    pub source: &'static str,
    /// `accepted`, `duplicate` (a retry or a message seen before), or for
    /// Slack `unauthorized` (signature or timestamp refused).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EngineLabel {
    pub engine: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabel {
    pub lease: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: &'static str,
}

/// What ingest answers a hook request with (the `outcome` label of
/// `events_received`), in the order the console shows them.
pub const INGEST_OUTCOMES: [&str; 6] = [
    "accepted",
    "duplicate",
    "unauthorized",
    "too_large",
    "unavailable",
    "invalid",
];

/// A target's counters, as the console reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetTotals {
    pub delivered: u64,
    /// Dead-lettered (failed for good).
    pub failed: u64,
    /// 429s from the destination.
    pub throttled: u64,
}

/// Histogram buckets from 0.5 ms to about 33 s.
#[derive(Clone)]
pub struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.0005, 2.0, 17))
    }
}

/// Every metric the relay exports.
pub struct Metrics {
    registry: Registry,
    pub events_received: Family<EventLabels, Counter>,
    pub replies_received: Family<ReplyLabels, Counter>,
    pub deliveries: Family<TargetOutcome, Counter>,
    pub delivery_duration: Family<TargetLabel, Histogram, Buckets>,
    pub end_to_end: Family<TargetLabel, Histogram, Buckets>,
    pub queue_depth: Family<TargetLabel, Gauge>,
    pub oldest_pending: Family<TargetLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub rate_limited: Family<TargetSource, Counter>,
    /// The rate-limit wait a target's worker is in (seconds, as it began;
    /// 0 when it is not waiting).
    pub rate_limit_wait: Family<TargetLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub dead_letters: Family<TargetLabel, Gauge>,
    pub config_reloads: Family<OutcomeLabel, Counter>,
    pub target_up: Family<TargetLabel, Gauge>,
    pub lease_held: Family<LeaseLabel, Gauge>,
    /// 1 while the store answers (read at scrape time), by engine.
    pub store_up: Family<EngineLabel, Gauge>,
    pub worker_restarts: Family<TargetLabel, Counter>,
    pub orphaned: Family<TargetLabel, Gauge>,
    /// The targets whose queue gauges are exported.
    targets: std::sync::RwLock<Vec<String>>,
    /// `events_received` summed over events, by [`INGEST_OUTCOMES`].
    ingest_totals: [std::sync::atomic::AtomicU64; INGEST_OUTCOMES.len()],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("crisp_relay");
        let events_received = Family::<EventLabels, Counter>::default();
        registry.register(
            "events_received",
            "Crisp hook requests by event and outcome",
            events_received.clone(),
        );
        let replies_received = Family::<ReplyLabels, Counter>::default();
        registry.register(
            "replies_received",
            "Agents' replies read from chat threads, by source and outcome",
            replies_received.clone(),
        );
        let deliveries = Family::<TargetOutcome, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery attempts by target and outcome (delivered, retried, dead_lettered)",
            deliveries.clone(),
        );
        let delivery_duration = Family::new_with_constructor(Buckets);
        registry.register(
            "delivery_duration_seconds",
            "Time to send one delivery and read the answer",
            delivery_duration.clone(),
        );
        let end_to_end = Family::new_with_constructor(Buckets);
        registry.register(
            "end_to_end_seconds",
            "Time from ingest to delivered",
            end_to_end.clone(),
        );
        let queue_depth = Family::<TargetLabel, Gauge>::default();
        registry.register(
            "queue_depth",
            "Pending deliveries per target",
            queue_depth.clone(),
        );
        let oldest_pending =
            Family::<TargetLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "oldest_pending_seconds",
            "Age of the oldest pending delivery per target",
            oldest_pending.clone(),
        );
        let rate_limited = Family::<TargetSource, Counter>::default();
        registry.register(
            "rate_limited",
            "Sends held back by the local quota or a remote 429",
            rate_limited.clone(),
        );
        let rate_limit_wait =
            Family::<TargetLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "rate_limit_wait_seconds",
            "The rate-limit wait a target's worker is in, as it began (0: not waiting)",
            rate_limit_wait.clone(),
        );
        let dead_letters = Family::<TargetLabel, Gauge>::default();
        registry.register(
            "dead_letters",
            "Dead letters per target",
            dead_letters.clone(),
        );
        let config_reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads by outcome",
            config_reloads.clone(),
        );
        let target_up = Family::<TargetLabel, Gauge>::default();
        registry.register(
            "target_up",
            "1 while the target's worker runs (here, or on another replica that holds its lease); 0 when it is paused, down (restarting) or disabled",
            target_up.clone(),
        );
        let lease_held = Family::<LeaseLabel, Gauge>::default();
        registry.register(
            "lease_held",
            "1 while this replica holds the lease (`target:NAME`: it runs the target's worker; `gateway:NAME`: the Discord Gateway listener); 0 when another replica does",
            lease_held.clone(),
        );
        let worker_restarts = Family::<TargetLabel, Counter>::default();
        registry.register(
            "worker_restarts",
            "Delivery workers that ended unexpectedly and were restarted",
            worker_restarts.clone(),
        );
        let orphaned = Family::<TargetLabel, Gauge>::default();
        registry.register(
            "orphaned_deliveries",
            "Queued deliveries whose target or template the configuration no longer has",
            orphaned.clone(),
        );
        let store_up = Family::<EngineLabel, Gauge>::default();
        registry.register(
            "store_up",
            "1 when the store (SQLite file or PostgreSQL database) answered the last scrape's reads; 0 when it did not",
            store_up.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running version", build_info);
        Self {
            registry,
            events_received,
            replies_received,
            deliveries,
            delivery_duration,
            end_to_end,
            queue_depth,
            oldest_pending,
            rate_limited,
            rate_limit_wait,
            dead_letters,
            config_reloads,
            target_up,
            lease_held,
            store_up,
            worker_restarts,
            orphaned,
            targets: std::sync::RwLock::new(Vec::new()),
            ingest_totals: Default::default(),
        }
    }

    /// Sets the queue gauges from the store's figures; targets absent from
    /// `stats` have an empty queue.
    pub fn set_queue(&self, stats: &[crate::store::QueueStats], now_ms: i64) {
        let targets = self
            .targets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for target in targets {
            let row = stats.iter().find(|r| r.target == target);
            let (pending, head, dead) =
                row.map_or((0, None, 0), |r| (r.pending, r.head_queued_at_ms, r.dead));
            let label = TargetLabel { target };
            self.queue_depth.get_or_create(&label).set(pending);
            self.dead_letters.get_or_create(&label).set(dead);
            let age = head.map_or(0.0, |t| (now_ms - t).max(0) as f64 / 1000.0);
            self.oldest_pending.get_or_create(&label).set(age);
        }
    }

    /// Sets the orphan gauges: `counts` by target name (targets no longer
    /// configured included); the others go to 0.
    pub fn set_orphans(&self, counts: &[(String, i64)]) {
        let known: Vec<String> = self
            .targets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for t in &known {
            if !counts.iter().any(|(n, _)| n == t) {
                self.orphaned
                    .get_or_create(&TargetLabel { target: t.clone() })
                    .set(0);
            }
        }
        for (t, n) in counts {
            self.orphaned
                .get_or_create(&TargetLabel { target: t.clone() })
                .set(*n);
        }
    }

    pub fn store_up(&self, engine: &'static str, up: bool) {
        self.store_up
            .get_or_create(&EngineLabel { engine })
            .set(i64::from(up));
    }

    pub fn lease_held(&self, lease: &str, held: bool) {
        self.lease_held
            .get_or_create(&LeaseLabel {
                lease: lease.to_owned(),
            })
            .set(i64::from(held));
    }

    pub fn target_up(&self, target: &str, up: bool) {
        self.target_up
            .get_or_create(&TargetLabel {
                target: target.to_owned(),
            })
            .set(i64::from(up));
    }

    /// A target no longer configured has no `target_up` series (rather than
    /// its last value forever).
    pub fn forget_target_up(&self, target: &str) {
        self.target_up.remove(&TargetLabel {
            target: target.to_owned(),
        });
    }

    pub fn worker_restart(&self, target: &str) {
        self.worker_restarts
            .get_or_create(&TargetLabel {
                target: target.to_owned(),
            })
            .inc();
    }

    /// One send's duration, until the answer.
    pub fn observe_send(&self, target: &str, took: std::time::Duration) {
        self.delivery_duration
            .get_or_create(&TargetLabel {
                target: target.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// One delivery delivered, `e2e_ms` after it was received.
    pub fn delivered(&self, target: &str, e2e_ms: i64) {
        self.delivery(target, "delivered");
        self.end_to_end
            .get_or_create(&TargetLabel {
                target: target.to_owned(),
            })
            .observe(e2e_ms.max(0) as f64 / 1000.0);
    }

    /// One reply (or refused request) from a chat.
    pub fn reply(&self, source: &'static str, outcome: &'static str) {
        self.replies_received
            .get_or_create(&ReplyLabels { source, outcome })
            .inc();
    }

    pub fn event(&self, name: Option<&str>, outcome: &'static str) {
        if let Some(i) = INGEST_OUTCOMES.iter().position(|o| *o == outcome) {
            self.ingest_totals[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.events_received
            .get_or_create(&EventLabels {
                event: event_label(name),
                outcome,
            })
            .inc();
    }

    pub fn delivery(&self, target: &str, outcome: &'static str) {
        self.deliveries
            .get_or_create(&TargetOutcome {
                target: target.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn config_reload(&self, outcome: &'static str) {
        self.config_reloads
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub fn rate_limited(&self, target: &str, source: &'static str) {
        self.rate_limited
            .get_or_create(&TargetSource {
                target: target.to_owned(),
                source,
            })
            .inc();
    }

    /// Records the rate-limit wait `target`'s worker is entering (`None`:
    /// it may send now).
    pub fn rate_wait(&self, target: &str, wait: Option<std::time::Duration>) {
        self.rate_limit_wait
            .get_or_create(&TargetLabel {
                target: target.to_owned(),
            })
            .set(wait.map_or(0.0, |w| w.as_secs_f64()));
    }

    /// The rate-limit wait `target`'s worker is in, as it began; `None`
    /// when it is not waiting.
    pub fn rate_wait_of(&self, target: &str) -> Option<std::time::Duration> {
        let secs = self
            .rate_limit_wait
            .get_or_create(&TargetLabel {
                target: target.to_owned(),
            })
            .get();
        (secs > 0.0).then(|| std::time::Duration::from_secs_f64(secs))
    }

    /// Hook requests since start, by outcome ([`INGEST_OUTCOMES`]).
    pub fn ingest_totals(&self) -> [(&'static str, u64); INGEST_OUTCOMES.len()] {
        std::array::from_fn(|i| {
            (
                INGEST_OUTCOMES[i],
                self.ingest_totals[i].load(std::sync::atomic::Ordering::Relaxed),
            )
        })
    }

    /// `target`'s delivered, dead-lettered and remote-429 counts since
    /// start.
    pub fn target_totals(&self, target: &str) -> TargetTotals {
        let outcome = |outcome| {
            self.deliveries
                .get_or_create(&TargetOutcome {
                    target: target.to_owned(),
                    outcome,
                })
                .get()
        };
        TargetTotals {
            delivered: outcome("delivered"),
            failed: outcome("dead_lettered"),
            throttled: self
                .rate_limited
                .get_or_create(&TargetSource {
                    target: target.to_owned(),
                    source: "remote",
                })
                .get(),
        }
    }

    /// Makes every per-target series exist from the start (a dashboard sees
    /// zeros rather than gaps).
    pub fn register_targets<'a>(&self, targets: impl IntoIterator<Item = &'a str>) {
        for t in targets {
            let mut known = self.targets.write().unwrap_or_else(|p| p.into_inner());
            if !known.iter().any(|k| k == t) {
                known.push(t.to_owned());
            }
            drop(known);
            for outcome in ["delivered", "retried", "dead_lettered"] {
                let _ = self.deliveries.get_or_create(&TargetOutcome {
                    target: t.to_owned(),
                    outcome,
                });
            }
            for source in ["local", "remote"] {
                let _ = self.rate_limited.get_or_create(&TargetSource {
                    target: t.to_owned(),
                    source,
                });
            }
            let label = TargetLabel {
                target: t.to_owned(),
            };
            let _ = self.queue_depth.get_or_create(&label);
            let _ = self.rate_limit_wait.get_or_create(&label);
            let _ = self.dead_letters.get_or_create(&label);
            let _ = self.oldest_pending.get_or_create(&label);
            let _ = self.worker_restarts.get_or_create(&label);
            let _ = self.orphaned.get_or_create(&label);
        }
        for outcome in ["ok", "rejected"] {
            let _ = self.config_reloads.get_or_create(&OutcomeLabel { outcome });
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
