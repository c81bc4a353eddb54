//! Hot reload: `SIGHUP` or `POST /-/reload` re-reads `relay.yaml` and the
//! templates. A valid new configuration replaces the old one for new events
//! at once; the delivery workers are restarted on it after their in-flight
//! sends finish under the old one. An invalid one is rejected with the same
//! errors `check` gives, logged and counted, and the relay keeps running on
//! the old one. Listen addresses and listener limits need a restart.
//!
//! Owns the current [`Relay`] and the supervisor of the delivery engine;
//! must not parse or validate anything itself (that is [`Relay::load`]).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::app::Relay;
use crate::delivery::{Engine, Shared, WallClock, transport::Transport};
use crate::metrics::Metrics;
use crate::store::SqliteStore;

/// The configuration in force, swapped whole on reload.
pub struct Live {
    current: RwLock<Arc<Relay>>,
}

impl Live {
    pub fn new(relay: Arc<Relay>) -> Self {
        Self {
            current: RwLock::new(relay),
        }
    }

    /// The relay to use for one request (a cheap `Arc` clone).
    pub fn get(&self) -> Arc<Relay> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, relay: Arc<Relay>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = relay;
    }
}

/// Asks the supervisor to reload; answers with the errors if rejected.
#[derive(Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<oneshot::Sender<Result<(), String>>>,
}

impl ReloadHandle {
    pub async fn reload(&self) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(reply)
            .await
            .map_err(|_| "the relay is shutting down".to_owned())?;
        rx.await
            .map_err(|_| "the relay is shutting down".to_owned())?
    }
}

/// What the supervisor needs to (re)start the delivery engine.
pub struct Supervisor {
    pub live: Arc<Live>,
    pub path: PathBuf,
    pub store: SqliteStore,
    pub transport: Arc<dyn Transport>,
    pub metrics: Arc<Metrics>,
    pub clock: WallClock,
    pub shutdown: CancellationToken,
    pub abort: CancellationToken,
}

impl Supervisor {
    fn engine(&self, relay: Arc<Relay>) -> (Engine, CancellationToken) {
        let stop = self.shutdown.child_token();
        let shared = Arc::new(Shared {
            relay,
            store: self.store.clone(),
            transport: self.transport.clone(),
            clock: self.clock,
            seed: None,
            metrics: self.metrics.clone(),
        });
        (
            Engine::start(shared, stop.clone(), self.abort.clone()),
            stop,
        )
    }

    /// Starts the engine and serves reload requests until shutdown; returns
    /// once the last engine has stopped.
    pub fn spawn(self) -> (ReloadHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4);
        (ReloadHandle { tx }, tokio::spawn(self.run(rx)))
    }

    async fn run(self, mut rx: mpsc::Receiver<oneshot::Sender<Result<(), String>>>) {
        let (mut engine, mut stop) = self.engine(self.live.get());
        loop {
            let reply = tokio::select! {
                r = rx.recv() => match r { Some(r) => r, None => break },
                () = self.shutdown.cancelled() => break,
            };
            let result = match Relay::load(&self.path) {
                Ok(new) => {
                    let old = self.live.get();
                    if new.config.server.listen != old.config.server.listen
                        || new.config.admin.listen != old.config.admin.listen
                        || new.config.server.max_connections != old.config.server.max_connections
                        || new.config.store.path != old.config.store.path
                    {
                        warn!(
                            "listen addresses, connection limit or store path changed: they take effect after a restart"
                        );
                    }
                    let new = Arc::new(new);
                    self.metrics
                        .register_targets(new.config.enabled_targets().map(|t| t.name.as_str()));
                    self.live.set(new.clone());
                    // Workers finish their in-flight sends under the old config.
                    stop.cancel();
                    engine.join().await;
                    (engine, stop) = self.engine(new);
                    self.metrics.config_reload("ok");
                    info!(file = %self.path.display(), "configuration reloaded");
                    Ok(())
                }
                Err(e) => {
                    self.metrics.config_reload("rejected");
                    error!(file = %self.path.display(), errors = %e, "configuration rejected; still running the previous one");
                    Err(e.to_string())
                }
            };
            let _ = reply.send(result);
        }
        engine.join().await;
    }
}
