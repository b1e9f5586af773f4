//! The log pump: a task container's output → Nomad's stdout/stderr FIFOs, resumable after a
//! plugin restart.
//!
//! Layout:
//! - [`fifo`]: the two sinks (Nomad's FIFOs, `/dev/null`, regular files, or discard), opened
//!   without blocking the runtime and written with back-pressure.
//! - [`redact`]: replaces known secret values with `[REDACTED]`, across chunk boundaries.
//! - [`cursor`]: how far the pump got, persisted in the state dir after every record.
//! - [`pump`]: [`run_pump`], which ties them together.
//! - [`forward`]: who runs a task's pump — a `polydev forward-logs` process of its own that
//!   outlives the plugin, adopted by the next plugin process.
//!
//! Invariants of the whole module:
//! - Bytes are forwarded exactly as the engine delivered them, per stream and in order, except
//!   for the entrypoint's pre-launch banner (dropped, see [`pump`]) and redacted secrets.
//! - After a crash of the plugin process, a new pump started with the same cursor file forwards
//!   every record not yet forwarded, and none that was — with one documented window: the single
//!   record being written when the process died may be written twice.
//! - When `disable_log_collection` is on, the FIFO paths do not exist: the caller must not open
//!   them nor run the pump (use [`LogSinks::discard`] if a value is needed).

pub mod cursor;
pub mod fifo;
pub mod forward;
pub mod pump;
pub mod redact;

use std::path::PathBuf;
use std::time::Duration;

use crate::engine::EngineError;

pub use cursor::{Cursor, CursorFile, StreamCursor};
pub use fifo::{LogSinks, Sink, SinkOptions};
pub use pump::{ENTRYPOINT_LAUNCH_SENTINEL, PumpEnd, run_pump};
pub use redact::{MIN_SECRET_LEN, REDACTED, Redactor, StreamRedactor};

/// What can go wrong forwarding a task's logs.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// No process opened the FIFO for reading within the allowed time (logmon gone or not started).
    #[error("no reader opened log FIFO {} within {waited:?}", path.display())]
    NoReader { path: PathBuf, waited: Duration },
    /// The sink path does not exist (with log collection disabled, the pump must not be run).
    #[error("log sink {} does not exist after waiting {waited:?}", path.display())]
    SinkMissing { path: PathBuf, waited: Duration },
    /// The sink path is not a FIFO of ours: a symlink, a regular file, a device, or a FIFO of
    /// another user. Task output is never written there.
    #[error("refusing the log sink: {0}")]
    Unsafe(Box<crate::safe_open::UnsafePath>),
    /// Opening a sink failed for another reason.
    #[error("cannot open log sink {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The reader went away and did not come back, or the write failed otherwise.
    #[error("writing to log sink {} failed: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The cursor file could not be read, written or removed.
    #[error("log cursor file {}: {source}", path.display())]
    CursorIo {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The cursor file exists but does not hold a cursor this version wrote.
    #[error("log cursor file {} is corrupt: {reason}", path.display())]
    CursorCorrupt { path: PathBuf, reason: &'static str },
    /// A container id that cannot safely name a file.
    #[error("container id {0:?} cannot name a cursor file")]
    InvalidContainerId(String),
    /// The engine refused to give the logs (e.g. a logging driver that cannot be read).
    #[error("reading container logs failed: {0}")]
    Runtime(#[from] EngineError),
}

#[cfg(test)]
pub(crate) mod test_support;
