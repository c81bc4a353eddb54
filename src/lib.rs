//! crisp-relay: receives Crisp Website Hooks, routes each event by the rules
//! in `relay.yaml`, stores it durably, and delivers rendered messages to
//! Discord, Slack, HTTP webhooks or standard output — paced, retried, in
//! order, never losing what it acknowledged.
//!
//! Module map (see ARCHITECTURE.md), along the data flow: the leaves
//! [`model`], [`text`], [`clock`] and [`secret`]; [`config`] → [`routing`];
//! [`render`] and [`targets`] (pure); [`app`] loads files and joins them;
//! [`server`] is the HTTP edge; [`store`] is the durable queue behind the
//! [`store::Store`] trait; [`delivery`] drains it; [`reload`] swaps the
//! configuration; [`cli`] is the command line. This file starts a relay:
//! [`start`] binds from the config, [`start_with`] takes listeners and
//! [`Parts`] (transport, clock, store) from the caller, as tests do.

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod delivery;
pub mod event;
pub mod lease;
pub mod listen;
pub mod metrics;
pub mod model;
pub mod reload;
pub mod render;
pub mod replies;
pub mod routing;
pub mod secret;
pub mod server;
pub mod signing;
pub mod store;
mod suggest;
pub mod targets;
pub mod telemetry;
pub mod text;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use app::Relay;

use clock::Clock;
use config::Startup;
use delivery::TargetStates;
use delivery::limiter::Limiters;
use delivery::transport::Transport;
use store::Store;

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot listen on {addr} ({what}): {source}\n  hint: is another process using the port? Change {what} in the config"
    )]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    Transport(String),
}

/// The listeners a relay serves on. [`start`] binds them from the config;
/// tests bind `127.0.0.1:0` themselves and pass them to [`start_with`].
pub struct Listeners {
    pub ingest: TcpListener,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds `server.listen` and `admin.listen`.
    pub async fn bind(startup: &Startup) -> Result<Self, StartError> {
        let bind = |what, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { what, addr, source })
        };
        let ingest = bind("server.listen", startup.listen).await?;
        let admin = match startup.admin_listen {
            Some(a) => Some(bind("admin.listen", a).await?),
            None => None,
        };
        Ok(Self { ingest, admin })
    }
}

/// What a relay runs with besides its configuration; tests inject each.
pub struct Parts {
    /// Sends requests to destinations.
    pub transport: Arc<dyn Transport>,
    /// The one clock of the store, the workers and ingest.
    pub clock: Clock,
    /// The store; `None`: open the one the configuration names.
    pub store: Option<Arc<dyn Store>>,
    /// Seeds the backoff jitter; `None`: random.
    pub seed: Option<u64>,
}

/// A started relay.
pub struct Running {
    pub ingest_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub store: Arc<dyn Store>,
    /// What each target's worker is doing.
    pub states: TargetStates,
    pub metrics: Arc<metrics::Metrics>,
    live: Arc<reload::Live>,
    task: JoinHandle<()>,
    supervisor: JoinHandle<()>,
    maintenance: JoinHandle<()>,
    reload: reload::ReloadHandle,
    abort: CancellationToken,
}

impl Running {
    /// Re-reads the config file and templates (what SIGHUP does).
    pub fn reload_handle(&self) -> reload::ReloadHandle {
        self.reload.clone()
    }

    /// After the shutdown token is cancelled: waits until the server has
    /// finished in-flight requests and the workers their in-flight sends —
    /// both within `server.shutdown_timeout` (of the configuration in force),
    /// after which sends still in flight are abandoned (they stay queued) —
    /// then closes the store.
    pub async fn finished(self) {
        let abort = self.abort.clone();
        let deadline = self.live.get().config.server.shutdown_timeout;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            abort.cancel();
        });
        let _ = self.task.await;
        let _ = self.supervisor.await;
        let _ = self.maintenance.await;
        timer.abort();
        self.store.close().await;
    }
}

/// Opens the store, binds the listeners from the config and serves until
/// `shutdown` is cancelled, with the real transport and the system clock.
pub async fn start(relay: Relay, shutdown: CancellationToken) -> Result<Running, StartError> {
    let transport = delivery::transport::HttpTransport::new().map_err(StartError::Transport)?;
    let listeners = Listeners::bind(&relay.config.startup).await?;
    let parts = Parts {
        transport: Arc::new(transport),
        clock: Clock::system(),
        store: None,
        seed: None,
    };
    start_with(relay, listeners, parts, shutdown).await
}

/// [`start`] on given listeners and parts. Logs the bound addresses.
pub async fn start_with(
    relay: Relay,
    listeners: Listeners,
    parts: Parts,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    let cfg = &relay.config;
    for t in cfg.targets.iter().filter(|t| !t.enabled) {
        tracing::warn!(target_name = %t.name, kind = %t.kind, "target disabled (empty url or `enabled: false`); routes skip it");
    }
    for w in &cfg.warnings {
        tracing::warn!(warning = %w, "configuration warning");
    }
    let store: Arc<dyn Store> = match parts.store {
        Some(s) => s,
        None => {
            store::open(
                &cfg.startup.store_location(),
                cfg.startup.queue_capacity,
                parts.clock,
            )
            .await?
        }
    };
    let Listeners { ingest, admin } = listeners;
    let ingest_addr = ingest.local_addr().map_err(|source| StartError::Bind {
        what: "server.listen",
        addr: cfg.startup.listen,
        source,
    })?;
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    tracing::info!(listener = "ingest", addr = %ingest_addr, path = %cfg.server.path, "listening");
    if let Some(a) = admin_addr {
        tracing::info!(listener = "admin", addr = %a, "listening");
    }
    let startup = cfg.startup.clone();
    let relay = Arc::new(relay);
    let abort = CancellationToken::new();
    let metrics = Arc::new(metrics::Metrics::new());
    metrics.register_targets(relay.config.targets.iter().map(|t| t.name.as_str()));
    let states = TargetStates::default();
    let live = Arc::new(reload::Live::new(relay.clone()));
    let (reload, supervisor) = reload::Supervisor {
        live: live.clone(),
        path: relay.path.clone(),
        store: store.clone(),
        transport: parts.transport,
        metrics: metrics.clone(),
        clock: parts.clock,
        seed: parts.seed,
        limiters: Limiters::default(),
        states: states.clone(),
        shutdown: shutdown.clone(),
        abort: abort.clone(),
    }
    .spawn();
    let maintenance = tokio::spawn(maintain(
        live.clone(),
        store.clone(),
        parts.clock,
        metrics.clone(),
        shutdown.clone(),
    ));
    let task = tokio::spawn(server::run(
        server::Shared {
            live: live.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            reload: reload.clone(),
            states: states.clone(),
            clock: parts.clock,
        },
        startup,
        ingest,
        admin,
        shutdown,
    ));
    Ok(Running {
        ingest_addr,
        admin_addr,
        store,
        states,
        metrics,
        live,
        task,
        supervisor,
        maintenance,
        reload,
        abort,
    })
}

/// How often delivered rows past `store.retention` are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How often orphaned deliveries are counted again (the CLI may have moved
/// or purged some meanwhile).
const ORPHANS_EVERY: Duration = Duration::from_secs(300);

/// Retention (at start, then hourly; `store.retention` of the configuration
/// in force; one replica at a time, under the `retention` lease) and the orphan gauges (every few minutes), until `stop`.
async fn maintain(
    live: Arc<reload::Live>,
    store: Arc<dyn Store>,
    clock: Clock,
    metrics: Arc<metrics::Metrics>,
    stop: CancellationToken,
) {
    let mut since_prune = PRUNE_EVERY;
    loop {
        if since_prune >= PRUNE_EVERY {
            since_prune = Duration::ZERO;
            let retention = live.get().config.store.retention;
            let before_ms = clock
                .now_ms()
                .saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
            let keys_before_ms = clock.now_ms().saturating_sub(store::DEDUPE_WINDOW_MS);
            // With several replicas, one prunes at a time (the others skip
            // this round); on SQLite the lease is always granted.
            let lease = match store.acquire("retention").await {
                Ok(Some(fence)) => Some(fence),
                Ok(None) => None,
                Err(store::StoreError::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take the retention lease; pruning later");
                    None
                }
            };
            let pruned = match &lease {
                Some(_) => store.prune(before_ms, keys_before_ms).await,
                None => Ok(store::Pruned::default()),
            };
            if let Some(fence) = &lease
                && let Err(e) = store.release(fence).await
            {
                tracing::warn!(error = %e, "cannot release the retention lease; it expires by itself");
            }
            match pruned {
                Ok(p) if p == store::Pruned::default() => {}
                Ok(p) => tracing::info!(
                    rows = p.deliveries,
                    events = p.events,
                    dedupe_keys = p.keys,
                    "pruned delivered rows past retention"
                ),
                Err(store::StoreError::Closed) => return,
                Err(e) => tracing::warn!(error = %e, "pruning failed"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(ORPHANS_EVERY) => {}
            () = stop.cancelled() => return,
        }
        since_prune += ORPHANS_EVERY;
        reload::report_orphans(&live.get(), store.as_ref(), &metrics, false).await;
    }
}
