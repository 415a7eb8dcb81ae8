//! The daemons' shutdown signal, shared by `pt-master` and `pt-worker`.

use std::future::Future;

use tracing::info;

/// Installs the SIGINT and SIGTERM handlers now, so that a signal arriving while the server
/// starts (a journal recovery can take seconds) is kept and stops it cleanly once it serves,
/// and returns a future that completes on the first of them. Call it inside a tokio runtime.
#[cfg(unix)]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => info!("SIGINT: shutting down"),
            _ = terminate.recv() => info!("SIGTERM: shutting down"),
        }
    })
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    Ok(async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(cause = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        info!("Ctrl-C: shutting down");
    })
}
