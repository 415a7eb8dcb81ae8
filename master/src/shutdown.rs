//! The daemons' shutdown signal, shared by `pt-master` and `pt-worker`.

use std::future::Future;

use tracing::{info, warn};

/// Installs the SIGINT and SIGTERM handlers now, so that a signal arriving while the server
/// starts (a journal recovery can take seconds) is kept and stops it cleanly once it serves,
/// and returns a future that completes on the first of them. Call it inside a tokio runtime.
///
/// A second signal while the clean stop is under way (a worker waiting for the master's
/// answers, a final price fetch) ends the process at once, with status 128 + the signal's
/// number (130 for SIGINT, 143 for SIGTERM), as a process without handlers would: the operator
/// asked twice. Nothing acknowledged is lost by it: an answer goes out only after its commit is
/// durable, and the journal recovers a commit cut short as after a crash.
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
        tokio::spawn(async move {
            let (name, code) = tokio::select! {
                _ = interrupt.recv() => ("SIGINT", 130),
                _ = terminate.recv() => ("SIGTERM", 143),
            };
            warn!("{name} again: stopping at once, without finishing the shutdown");
            std::process::exit(code);
        });
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
