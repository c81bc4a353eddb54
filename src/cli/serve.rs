//! `serve`: run the relay until SIGTERM or SIGINT; SIGHUP reloads.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::app::Relay;

pub(super) fn run(relay: Relay) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(relay)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "relay stopped");
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(relay: Relay) -> Result<(), String> {
    let shutdown = CancellationToken::new();
    let running = crate::start(relay, shutdown.clone())
        .await
        .map_err(|e| e.to_string())?;
    wait_for_signal(&running.reload_handle()).await;
    tracing::info!("signal received; shutting down");
    shutdown.cancel();
    running.finished().await;
    Ok(())
}

/// Returns on SIGTERM or SIGINT; asks for a reload on SIGHUP without
/// waiting for it, so a stop signal is never held up by a reload.
async fn wait_for_signal(reload: &crate::reload::ReloadHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = int.recv() => return,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    // The outcome is logged by the reload itself.
                    reload.request();
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reload;
        let _ = tokio::signal::ctrl_c().await;
    }
}
