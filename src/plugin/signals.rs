//! Unix signal policy of a go-plugin server.
//!
//! Job: keep the host's Ctrl-C from killing the plugin, and turn SIGTERM into a graceful
//! shutdown.
//!
//! Invariants:
//! - Once [`install`] has returned, SIGINT never terminates the process: tokio keeps its handler
//!   installed for the life of the process, even after the watcher task ends. Nomad does not give
//!   the plugin its own process group, so a Ctrl-C in the agent's terminal reaches the plugin
//!   too, and go-plugin's Go server ignores it the same way.
//! - SIGTERM cancels the shutdown token (the same path as `GRPCController/Shutdown`).
//! - The watcher task ends when the token is cancelled.

use std::io;

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Installs the SIGINT and SIGTERM handlers and spawns their watcher. Must run inside a tokio
/// runtime.
///
/// # Errors
/// A handler could not be registered.
pub fn install(shutdown: CancellationToken) -> io::Result<JoinHandle<()>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(()) = interrupt.recv() => {
                    tracing::debug!("ignoring SIGINT: the host's Ctrl-C reaches plugins too; \
                                     Nomad stops plugins through GRPCController.Shutdown");
                }
                Some(()) = terminate.recv() => {
                    tracing::info!("SIGTERM received; shutting down");
                    shutdown.cancel();
                }
            }
        }
    }))
}
