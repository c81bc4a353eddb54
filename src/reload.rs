//! Hot reload: `SIGHUP` or `POST /-/reload` re-reads `relay.yaml` and the
//! templates. A valid new configuration replaces the old one for new events
//! at once; the delivery workers are restarted on it after their in-flight
//! sends finish under the old one, each keeping its rate limiter while its
//! kind and URL are unchanged. An invalid one is rejected with the same
//! errors `check` gives, logged and counted, and the relay keeps running on
//! the old one. Start-up settings ([`crate::config::Startup`]) that changed
//! are named in a warning: they need a restart.
//!
//! Loading runs on a blocking thread, and a reload never holds up a
//! shutdown: the signal loop only asks for one, and a reload waiting for
//! in-flight sends gives way when the relay stops.
//!
//! Owns the current [`Relay`] ([`Live`]) and the supervisor of the delivery
//! engine; must not parse or validate anything itself (that is
//! [`Relay::load`]).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::app::Relay;
use crate::clock::Clock;
use crate::delivery::limiter::Limiters;
use crate::delivery::{Context, Engine, TargetStates, transport::Transport};
use crate::metrics::Metrics;
use crate::store::Store;

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

type Reply = oneshot::Sender<Result<(), String>>;

/// Asks the supervisor to reload.
#[derive(Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<Reply>,
    last_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl ReloadHandle {
    /// The errors of the last reload, if it was rejected (whatever asked
    /// for it: `SIGHUP`, `POST /-/reload`, the console); `None` once one
    /// succeeds. Shown by the console's configuration page.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads and answers with the errors if the new configuration is
    /// rejected (`POST /-/reload`).
    pub async fn reload(&self) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(reply)
            .await
            .map_err(|_| "the relay is shutting down".to_owned())?;
        rx.await
            .map_err(|_| "the relay is shutting down".to_owned())?
    }

    /// Asks for a reload without waiting for it (`SIGHUP`); the outcome is
    /// logged. While reloads are already queued, another adds nothing.
    pub fn request(&self) {
        let (reply, _) = oneshot::channel();
        let _ = self.tx.try_send(reply);
    }
}

/// What the supervisor needs to (re)start the delivery engine.
pub struct Supervisor {
    pub live: Arc<Live>,
    pub path: PathBuf,
    pub store: Arc<dyn Store>,
    pub transport: Arc<dyn Transport>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub seed: Option<u64>,
    pub limiters: Limiters,
    pub states: TargetStates,
    pub shutdown: CancellationToken,
    pub abort: CancellationToken,
}

/// The delivery workers and reply listeners of one configuration.
struct Running {
    engine: Engine,
    listeners: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    async fn join(self) {
        self.engine.join().await;
        for l in self.listeners {
            let _ = l.await;
        }
    }
}

impl Supervisor {
    fn engine(&self, relay: Arc<Relay>) -> (Running, CancellationToken) {
        let stop = self.shutdown.child_token();
        let listeners = crate::listen::start(
            &relay,
            &crate::listen::Parts {
                store: self.store.clone(),
                metrics: self.metrics.clone(),
                transport: self.transport.clone(),
                clock: self.clock,
            },
            &stop,
        );
        let ctx = Arc::new(Context {
            relay,
            store: self.store.clone(),
            transport: self.transport.clone(),
            clock: self.clock,
            seed: self.seed,
            metrics: self.metrics.clone(),
            limiters: self.limiters.clone(),
            states: self.states.clone(),
        });
        (
            Running {
                engine: Engine::start(ctx, stop.clone(), self.abort.clone()),
                listeners,
            },
            stop,
        )
    }

    /// Starts the engine and serves reload requests until shutdown; returns
    /// once the last engine has stopped.
    pub fn spawn(self) -> (ReloadHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(2);
        let last_error = Arc::new(std::sync::Mutex::new(None));
        let handle = ReloadHandle {
            tx,
            last_error: last_error.clone(),
        };
        (handle, tokio::spawn(self.run(rx, last_error)))
    }

    async fn run(
        self,
        mut rx: mpsc::Receiver<Reply>,
        last_error: Arc<std::sync::Mutex<Option<String>>>,
    ) {
        let record = |e: Option<String>| {
            *last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
        };
        let relay = self.live.get();
        let (mut engine, mut stop) = self.engine(relay.clone());
        report_orphans(&relay, self.store.as_ref(), &self.metrics, true).await;
        loop {
            let reply = tokio::select! {
                r = rx.recv() => match r { Some(r) => r, None => break },
                () = self.shutdown.cancelled() => break,
            };
            let path = self.path.clone();
            let loaded = tokio::task::spawn_blocking(move || Relay::load(&path)).await;
            let new = match loaded {
                Ok(Ok(new)) => Arc::new(new),
                Ok(Err(e)) => {
                    self.metrics.config_reload("rejected");
                    error!(file = %self.path.display(), errors = %e, "configuration rejected; still running the previous one");
                    record(Some(e.to_string()));
                    let _ = reply.send(Err(e.to_string()));
                    continue;
                }
                Err(e) => {
                    self.metrics.config_reload("rejected");
                    error!(error = %e, "loading the configuration failed; still running the previous one");
                    record(Some(format!("loading failed: {e}")));
                    let _ = reply.send(Err(format!("loading failed: {e}")));
                    continue;
                }
            };
            let old = self.live.get();
            let restart = old.config.startup.changed(&new.config.startup);
            if !restart.is_empty() {
                warn!(settings = %restart.join(", "), "these settings changed but only take effect after a restart");
            }
            for w in &new.config.warnings {
                warn!(warning = %w, "configuration warning");
            }
            self.metrics
                .register_targets(new.config.targets.iter().map(|t| t.name.as_str()));
            self.live.set(new.clone());
            // Workers finish their in-flight sends under the old config; a
            // shutdown meanwhile ends the reload (and the relay) at once.
            stop.cancel();
            let joined = engine.join();
            tokio::pin!(joined);
            tokio::select! {
                () = &mut joined => {}
                () = self.shutdown.cancelled() => {
                    let _ = reply.send(Err("the relay is shutting down".into()));
                    joined.await;
                    return;
                }
            }
            (engine, stop) = self.engine(new.clone());
            self.metrics.config_reload("ok");
            record(None);
            info!(file = %self.path.display(), "configuration reloaded");
            let _ = reply.send(Ok(()));
            report_orphans(&new, self.store.as_ref(), &self.metrics, true).await;
        }
        engine.join().await;
    }
}

/// Counts (and, with `log`, logs) the queued deliveries that `relay` cannot
/// send (their target or template is gone): they stay queued until the name
/// comes back or `crisp-relay queue` moves or purges them.
pub async fn report_orphans(relay: &Relay, store: &dyn Store, metrics: &Metrics, log: bool) {
    let groups = match store.pending_groups().await {
        Ok(g) => g,
        Err(e) => {
            warn!(error = %e, "cannot count queued deliveries by target and template");
            return;
        }
    };
    let orphans = relay.orphans(&groups);
    let mut by_target: Vec<(String, i64)> = Vec::new();
    for o in &orphans {
        if !log {
            continue;
        }
        warn!(
            target_name = %o.target,
            template = o.template.as_deref().unwrap_or(""),
            deliveries = o.count,
            why = %o.why,
            "queued deliveries cannot be sent with this configuration; they stay queued until it names them again (see `crisp-relay queue`)"
        );
    }
    for o in &orphans {
        match by_target.iter_mut().find(|(t, _)| *t == o.target) {
            Some((_, n)) => *n += o.count,
            None => by_target.push((o.target.clone(), o.count)),
        }
    }
    metrics.set_orphans(&by_target);
}
