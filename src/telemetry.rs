//! Logging setup. Owns the tracing subscriber; must never log secrets (the
//! types in [`crate::secret`] make that hard to do by accident).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs to stderr. `RUST_LOG` wins over `default_filter` when set.
pub fn init(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
