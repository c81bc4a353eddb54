//! crisp-relay: receives Crisp Website Hooks, routes each event by the rules
//! in `relay.yaml`, stores it durably, and (see the delivery module, coming)
//! sends rendered messages to Discord, Slack and HTTP webhooks.
//!
//! Module map (see ARCHITECTURE.md): [`config`] → [`routing`] and [`render`]
//! are pure; [`app`] loads files and joins them; [`server`] is the HTTP edge;
//! [`store`] is the durable queue; [`targets`] builds each destination's
//! request; [`cli`] is the command line.

pub mod app;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod event;
pub mod metrics;
pub mod model;
pub mod reload;
pub mod render;
pub mod routing;
pub mod secret;
pub mod server;
pub mod store;
mod suggest;
pub mod targets;
pub mod telemetry;
pub mod text;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use app::Relay;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

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

/// A started relay.
pub struct Running {
    pub ingest_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub store: store::SqliteStore,
    task: JoinHandle<()>,
    supervisor: JoinHandle<()>,
    pruning: delivery::Engine,
    reload: reload::ReloadHandle,
    abort: CancellationToken,
    shutdown_timeout: std::time::Duration,
}

impl Running {
    /// Re-reads the config file and templates (what SIGHUP does).
    pub fn reload_handle(&self) -> reload::ReloadHandle {
        self.reload.clone()
    }

    /// After the shutdown token is cancelled: waits until the server has
    /// finished in-flight requests and the workers their in-flight sends —
    /// both within `server.shutdown_timeout`, after which sends still in
    /// flight are abandoned (they stay queued) — then closes the store.
    pub async fn finished(self) {
        let abort = self.abort.clone();
        let deadline = self.shutdown_timeout;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            abort.cancel();
        });
        let _ = self.task.await;
        let _ = self.supervisor.await;
        self.pruning.join().await;
        timer.abort();
        self.store.close().await;
    }
}

/// Opens the store, binds the listeners from the config and serves until
/// `shutdown` is cancelled. Logs the bound addresses (port 0 picks a free one).
pub async fn start(relay: Relay, shutdown: CancellationToken) -> Result<Running, StartError> {
    let transport = delivery::transport::HttpTransport::new().map_err(StartError::Transport)?;
    start_with(relay, Arc::new(transport), shutdown).await
}

/// [`start`] with a given transport (tests use an in-memory one).
pub async fn start_with(
    relay: Relay,
    transport: Arc<dyn delivery::transport::Transport>,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    let cfg = &relay.config;
    for t in cfg.targets.iter().filter(|t| !t.enabled) {
        tracing::warn!(target_name = %t.name, kind = %t.kind, "target disabled: its url is empty; routes skip it");
    }
    let store = store::SqliteStore::open(&cfg.store.path, cfg.store.queue_capacity).await?;
    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { what, addr, source })
    };
    let ingest = bind("server.listen", cfg.server.listen).await?;
    let admin = match cfg.admin.listen {
        Some(a) => Some(bind("admin.listen", a).await?),
        None => None,
    };
    let ingest_addr = ingest.local_addr().map_err(|source| StartError::Bind {
        what: "server.listen",
        addr: cfg.server.listen,
        source,
    })?;
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    tracing::info!(listener = "ingest", addr = %ingest_addr, path = %cfg.server.path, "listening");
    if let Some(a) = admin_addr {
        tracing::info!(listener = "admin", addr = %a, "listening");
    }
    let shutdown_timeout = relay.config.server.shutdown_timeout;
    let relay = Arc::new(relay);
    let abort = CancellationToken::new();
    let metrics = Arc::new(metrics::Metrics::new());
    metrics.register_targets(relay.config.enabled_targets().map(|t| t.name.as_str()));
    let clock = delivery::WallClock::new();
    let shared = Arc::new(delivery::Shared {
        relay: relay.clone(),
        store: store.clone(),
        transport: transport.clone(),
        clock,
        seed: None,
        metrics: metrics.clone(),
    });
    let pruning = delivery::Engine::none().with_pruning(shared, shutdown.clone());
    let live = Arc::new(reload::Live::new(relay.clone()));
    let (reload, supervisor) = reload::Supervisor {
        live: live.clone(),
        path: relay.path.clone(),
        store: store.clone(),
        transport,
        metrics: metrics.clone(),
        clock,
        shutdown: shutdown.clone(),
        abort: abort.clone(),
    }
    .spawn();
    let task = tokio::spawn(server::run(
        live,
        store.clone(),
        ingest,
        admin,
        metrics,
        reload.clone(),
        shutdown,
    ));
    Ok(Running {
        ingest_addr,
        admin_addr,
        store,
        task,
        supervisor,
        pruning,
        reload,
        abort,
        shutdown_timeout,
    })
}
