//! Wakers for the delivery workers, across replicas.
//!
//! Owns the per-target `Notify` map and the listener task. After a commit
//! that gives a target rows, the writer wakes the local worker at once and
//! (inside the same transaction) sends `pg_notify(CHANNEL, target)`, which
//! PostgreSQL delivers to every listening replica at commit. The listener
//! task here holds one connection that `LISTEN`s on [`CHANNEL`] and wakes
//! the named target's `Notify`; an empty payload wakes every target. When
//! its connection is lost and comes back, it wakes every target:
//! notifications sent meanwhile are gone.
//!
//! This module must not write to the database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::Notify;

/// The channel replicas tell each other about new work on.
pub(super) const CHANNEL: &str = "crisp_relay_work";

/// The payload that wakes every target (a replay of every dead letter).
pub(super) const ALL: &str = "";

/// One `Notify` per target. `notify_one` keeps a permit when nobody waits,
/// so a worker busy while the commit lands does not miss it.
#[derive(Clone, Default)]
pub(super) struct Wakers(Arc<std::sync::Mutex<HashMap<String, Arc<Notify>>>>);

impl Wakers {
    pub(super) fn get(&self, target: &str) -> Arc<Notify> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(target.to_owned()).or_default().clone()
    }

    pub(super) fn wake(&self, target: &str) {
        if target == ALL {
            return self.wake_all();
        }
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get(target) {
            n.notify_one();
        }
    }

    pub(super) fn wake_all(&self) {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for n in map.values() {
            n.notify_one();
        }
    }
}

/// A listener on [`CHANNEL`]: connected and listening when this returns,
/// so no commit made after [`super::PgStore::open`] is missed.
pub(super) async fn listen(options: &PgConnectOptions) -> Result<Listener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(Listener {
        pool,
        listener: Some(listener),
    })
}

pub(super) struct Listener {
    pool: PgPool,
    listener: Option<PgListener>,
}

impl Listener {
    /// Wakes `wakers` for each notification until the task is aborted
    /// (the store's close). Never ends on an error: it reconnects.
    pub(super) async fn run(mut self, wakers: Wakers) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let Some(listener) = self.listener.as_mut() else {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                // A fresh connection (the pool tests the old one before
                // handing it out again).
                match PgListener::connect_with(&self.pool).await {
                    Ok(mut l) => match l.listen(CHANNEL).await {
                        Ok(()) => {
                            self.listener = Some(l);
                            wakers.wake_all();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "store notifications: cannot listen")
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "store notifications: cannot connect"),
                }
                continue;
            };
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    backoff = Duration::from_millis(100);
                    wakers.wake(n.payload());
                }
                // The connection was lost and is back: what was sent in
                // between is gone.
                Ok(None) => {
                    tracing::warn!("store notifications: connection lost; reconnected");
                    wakers.wake_all();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "store notifications: connection failed; retrying");
                    // Gives its connection back before a new one is made.
                    self.listener = None;
                    wakers.wake_all();
                }
            }
        }
    }
}
