//! The daemons' shutdown signal, shared by `pt-master` and `pt-worker`.

use std::future::Future;

use tracing::{info, warn};

/// Installs the SIGINT and SIGTERM handlers now, so that a signal arriving while the server
/// starts (a journal recovery can take seconds) is kept and stops it cleanly once it serves,
/// and returns a future that completes on the first of them. Call it inside a tokio runtime.
///
/// A signal when a stop is already under way ends the process at once, with status 128 + the
/// signal's number (130 for SIGINT, 143 for SIGTERM), as a process without handlers would: a
/// second signal (the operator asked twice: the clean stop may wait for a worker's answers or a
/// final price fetch), or a first one after the returned future was dropped (the server stopped
/// for another reason, a failure, and no longer waits for a signal). Nothing acknowledged is
/// lost by it: an answer goes out only after its commit is durable, and the journal recovers a
/// commit cut short as after a crash. The signals are watched from the moment the handlers are
/// installed, so two during start-up are two, not one.
#[cfg(unix)]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut next = async || {
            tokio::select! {
                _ = interrupt.recv() => ("SIGINT", 130),
                _ = terminate.recv() => ("SIGTERM", 143),
            }
        };
        let (name, code) = next().await;
        if stop.send(()).is_ok() {
            info!("{name}: shutting down");
            let (name, code) = next().await;
            warn!("{name} again: stopping at once, without finishing the shutdown");
            std::process::exit(code);
        }
        warn!("{name} while the server stops: stopping at once, without finishing the shutdown");
        std::process::exit(code);
    });
    Ok(async move {
        // The watcher ends only with the runtime (or the process).
        let _ = stopped.await;
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
