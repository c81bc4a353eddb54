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
pub mod event;
pub mod render;
pub mod routing;
pub mod secret;
pub mod server;
pub mod store;
mod suggest;
pub mod targets;
pub mod telemetry;

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
}

/// A started relay.
pub struct Running {
    pub ingest_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub store: store::SqliteStore,
    task: JoinHandle<()>,
}

impl Running {
    /// Waits until the server has shut down (after the token is cancelled)
    /// and the store has committed everything it accepted.
    pub async fn finished(self) {
        let _ = self.task.await;
        self.store.close().await;
    }
}

/// Opens the store, binds the listeners from the config and serves until
/// `shutdown` is cancelled. Logs the bound addresses (port 0 picks a free one).
pub async fn start(relay: Relay, shutdown: CancellationToken) -> Result<Running, StartError> {
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
    let task = tokio::spawn(server::run(
        Arc::new(relay),
        store.clone(),
        ingest,
        admin,
        shutdown,
    ));
    Ok(Running {
        ingest_addr,
        admin_addr,
        store,
        task,
    })
}
