//! One integration-test binary (faster to link than one per file). Each
//! module drives the real `crisp-relay` binary: a server on 127.0.0.1:0, or
//! the `check` / `render` commands; `properties` tests the library's
//! rendering functions directly, on generated input, and `gateway` runs the
//! library's Discord Gateway client against a fake Gateway.
//!
//! A module grown past one job is a directory, one theme a file, with what
//! its files share in `mod.rs`: `browser/`, `config_errors/`, `delivery/`, `fakes/`,
//! `hostile/`, `ingest/`, `rendering/`.

mod helpers;
mod raw_http;

mod browser;
mod cli;
mod config_errors;
mod console;
mod console_history;
mod delivery;
mod engine;
mod engine_leases;
mod fakes;
mod gateway;
mod healthcheck;
mod hostile;
mod hostile_destinations;
mod ingest;
mod metrics;
mod pg;
mod properties;
mod queue;
mod reload;
mod rendering;
mod replicas;
mod replies;
mod retry_timing;
mod store_engines;
mod store_history;
mod store_history_upgrade;
mod store_ops;
mod store_pg;
mod threads;
