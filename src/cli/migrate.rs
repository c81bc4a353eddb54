//! `crisp-relay migrate`: creates or upgrades the store's schema and exits,
//! so a deployment can run it as a step of its own (an init container, a
//! release job) before the replicas start. `serve` does the same at start;
//! both are safe when several processes run them at once.

use std::path::Path;
use std::process::ExitCode;

use super::load_startup;
use crate::clock::Clock;
use crate::store::{self, Location};

pub(super) async fn run(path: &Path) -> ExitCode {
    let startup = match load_startup(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let location = startup.store_location();
    let store = match store::open(&location, 16, Clock::system()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    store.close().await;
    let (where_, version) = match &location {
        Location::Sqlite(p) => (p.display().to_string(), store::sqlite::SCHEMA_VERSION),
        Location::Postgres { url, .. } => {
            (url.redacted().to_owned(), store::postgres::SCHEMA_VERSION)
        }
    };
    println!("ok: the store at {where_} is at schema version {version}");
    ExitCode::SUCCESS
}
