//! [`run_pump`]: follows a task container's output and writes it to the task's sinks.
//!
//! Job, in order of each record the engine delivers:
//! 1. **Skip what was already done.** The pump asks the engine for `since` = the floor, in
//!    seconds, of the older stream's cursor timestamp (0 when a stream has none), and skips, per
//!    stream, every record at or before the cursor: timestamp below it, or equal and within the
//!    number already consumed at that timestamp. The first record after the cursor loses its
//!    first `partial` bytes (see [`super::cursor`]). This assumes, as Docker guarantees, that one
//!    stream's records arrive in timestamp order and are replayed identically.
//! 2. **Drop the entrypoint's banner.** Until a stderr line equal to
//!    [`ENTRYPOINT_LAUNCH_SENTINEL`] has been seen, stderr bytes are dropped (the sentinel line
//!    too); bytes after it in the same record are kept. stdout is always forwarded. The sentinel
//!    must arrive within one record (Docker splits records only at newlines and at 16 KiB). The
//!    dropped bytes (the last [`PRELAUNCH_KEEP`] of them) are kept in memory; if the output ends
//!    without a sentinel — the entrypoint refused the launch spec — they are written to stderr
//!    after all, so the user sees why. Until the sentinel, the persisted stderr cursor stays at
//!    the start, so a restarted pump rebuilds that buffer from the engine.
//! 3. **Redact** per stream, then **write** byte-exact to the stream's sink, in delivery order.
//! 4. **Persist** the cursor after the write. The window: if the process dies after a write and
//!    before its cursor save, the next pump writes that one record again; nothing is ever lost.
//!    A record whose write was interrupted (cancel, crash) may appear partly and then in full.
//!
//! When the log stream ends while the container still runs, or fails (engine restart, dropped
//! connection), the pump follows again from its position after a backoff (100 ms doubling to
//! 2 s). When it ends because the container stopped (or was removed), the pump flushes the
//! redactors' carry-over, marks the cursor finished, closes the sinks and returns
//! [`PumpEnd::Completed`]. A finished cursor makes a later pump complete at once.
//!
//! Cancellation (the plugin shutting down) returns [`PumpEnd::Cancelled`] promptly: nothing is
//! flushed or finished, the cursor stays where it is, and the next plugin process resumes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::engine::{ContainerEngine, EngineError, LogRecord, LogStream};

use super::LogError;
use super::cursor::{Cursor, CursorFile, StreamCursor};
use super::fifo::LogSinks;
use super::redact::{Redactor, StreamRedactor};

/// The exact stderr line the entrypoint prints right before it `exec`s the task's command.
pub const ENTRYPOINT_LAUNCH_SENTINEL: &[u8] = b"polydev-entrypoint: launch\n";

/// How much of the pre-launch stderr is kept for the no-sentinel case.
pub const PRELAUNCH_KEEP: usize = 64 * 1024;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How a pump that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PumpEnd {
    /// The container stopped and all its output was written; the sinks are closed.
    Completed,
    /// `cancel` fired; the cursor holds the position to resume from.
    Cancelled,
}

/// Forwards the output of `container_id` to `sinks` until the container has stopped and all
/// output is written, or `cancel` fires. See the module docs for the guarantees.
pub async fn run_pump(
    engine: Arc<dyn ContainerEngine>,
    container_id: String,
    sinks: LogSinks,
    cursor: CursorFile,
    redactor: Redactor,
    cancel: CancellationToken,
) -> Result<PumpEnd, LogError> {
    let mut pump = Pump::new(engine, container_id, sinks, cursor, &redactor);
    tokio::select! {
        biased;
        () = cancel.cancelled() => Ok(PumpEnd::Cancelled),
        result = pump.run() => result.map(|()| PumpEnd::Completed),
    }
}

/// A record (or its tail) whose bytes the redactor may still hold back.
struct Pending {
    key: (i128, u64),
    /// Leading bytes of the record that were not fed to the redactor (skipped or dropped).
    base: u64,
    /// Offset of the first fed byte in the stream of fed bytes.
    start: u64,
    len: u64,
}

/// Per-stream state of one pump.
struct StreamState {
    redactor: StreamRedactor,
    /// Everything at or before this is consumed (in memory); drives skipping on re-follow.
    frontier: StreamCursor,
    /// What may be persisted: everything at or before it is written to the sink.
    committed: StreamCursor,
    pending: VecDeque<Pending>,
    fed_total: u64,
    /// `(timestamp, records seen with it)` in the current follow, to key each record.
    seen: (i128, u64),
}

impl StreamState {
    fn new(redactor: StreamRedactor, cursor: StreamCursor) -> Self {
        StreamState {
            redactor,
            frontier: cursor,
            committed: cursor,
            pending: VecDeque::new(),
            fed_total: 0,
            seen: (i128::MIN, 0),
        }
    }

    /// The record's key (timestamp, ordinal among this follow's records with that timestamp).
    fn key(&mut self, timestamp: i128) -> (i128, u64) {
        if self.seen.0 == timestamp {
            self.seen.1 += 1;
        } else {
            self.seen = (timestamp, 1);
        }
        self.seen
    }

    /// `None` when the record was consumed already, else how many leading bytes to skip.
    fn resume_offset(&mut self, key: (i128, u64)) -> Option<u64> {
        let f = &mut self.frontier;
        if key.0 < f.timestamp_nanos
            || (key.0 == f.timestamp_nanos && key.1 <= f.count_at_timestamp)
        {
            return None;
        }
        let skip = f.partial;
        *f = StreamCursor {
            timestamp_nanos: key.0,
            count_at_timestamp: key.1,
            partial: 0,
        };
        Some(skip)
    }

    /// Accounts for `len` bytes of record `key` (after `base` unfed ones) having been fed, and
    /// moves `committed` over every record whose bytes have all left the redactor.
    fn fed(&mut self, key: (i128, u64), base: u64, len: u64) {
        self.pending.push_back(Pending {
            key,
            base,
            start: self.fed_total,
            len,
        });
        self.fed_total += len;
        let consumed = self.fed_total - self.redactor.pending() as u64;
        while let Some(front) = self.pending.front() {
            if front.start + front.len > consumed {
                self.committed.partial = front.base + (consumed - front.start);
                return;
            }
            self.committed = StreamCursor {
                timestamp_nanos: front.key.0,
                count_at_timestamp: front.key.1,
                partial: 0,
            };
            self.pending.pop_front();
        }
    }
}

struct Pump {
    engine: Arc<dyn ContainerEngine>,
    id: String,
    sinks: Option<LogSinks>,
    cursor_file: CursorFile,
    stdout: StreamState,
    stderr: StreamState,
    launched: bool,
    /// Pre-launch stderr, for the no-sentinel case.
    prelaunch: Vec<u8>,
    prelaunch_dropped: u64,
    /// Whether the next pre-launch stderr byte starts a line.
    prelaunch_line_start: bool,
    out: Vec<u8>,
}

impl Pump {
    fn new(
        engine: Arc<dyn ContainerEngine>,
        id: String,
        sinks: LogSinks,
        cursor_file: CursorFile,
        redactor: &Redactor,
    ) -> Self {
        let cursor = *cursor_file.cursor();
        Pump {
            engine,
            id,
            sinks: Some(sinks),
            cursor_file,
            stdout: StreamState::new(redactor.stream(), cursor.stdout),
            stderr: StreamState::new(redactor.stream(), cursor.stderr),
            launched: cursor.launched,
            prelaunch: Vec::new(),
            prelaunch_dropped: 0,
            prelaunch_line_start: true,
            out: Vec::new(),
        }
    }

    fn state(&mut self, stream: LogStream) -> &mut StreamState {
        match stream {
            LogStream::Stdout => &mut self.stdout,
            LogStream::Stderr => &mut self.stderr,
        }
    }

    fn sinks(&mut self) -> &mut LogSinks {
        self.sinks
            .as_mut()
            .expect("sinks are taken only when the pump finishes")
    }

    fn since(&self) -> i64 {
        let frontier = Cursor {
            stdout: self.stdout.frontier,
            stderr: self.stderr.frontier,
            ..Cursor::default()
        };
        frontier.since_unix_secs()
    }

    async fn run(&mut self) -> Result<(), LogError> {
        if self.cursor_file.cursor().finished {
            return self.close_sinks().await;
        }
        let mut backoff = BACKOFF_START;
        // Docker 20.10's `local` log driver can end a follow at container exit before it has
        // sent the last partial (newline-less) records; a second read of the stopped container
        // returns them. So finishing takes one more pass after the container has stopped (the
        // cursor makes the pass skip everything already forwarded).
        let mut final_pass = false;
        loop {
            let since = self.since();
            tracing::debug!(container = %self.id, since, "following container logs");
            self.stdout.seen = (i128::MIN, 0);
            self.stderr.seen = (i128::MIN, 0);
            let mut stream = self.engine.logs(&self.id, since);
            let ended = loop {
                match stream.next().await {
                    Some(Ok(record)) => {
                        self.handle(record).await?;
                        backoff = BACKOFF_START;
                    }
                    Some(Err(err)) => break Err(err),
                    None => break Ok(()),
                }
            };
            drop(stream);
            let stopped = match ended {
                Ok(()) => match self.engine.inspect(&self.id).await {
                    Ok(state) => !state.running,
                    Err(err) => self.classify(err)?,
                },
                Err(err) => {
                    tracing::warn!(container = %self.id, error = %err, "container log stream failed");
                    self.classify(err)?
                }
            };
            if stopped && final_pass {
                return self.finish().await;
            }
            if stopped {
                final_pass = true;
                continue;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// `Ok(true)`: the container is gone, finish; `Ok(false)`: retry; `Err`: give up.
    fn classify(&self, err: EngineError) -> Result<bool, LogError> {
        match err {
            EngineError::NotFound { .. } => {
                tracing::warn!(container = %self.id, "container vanished; finishing its logs");
                Ok(true)
            }
            EngineError::Rejected(_) => Err(err.into()),
            EngineError::Unavailable(_) | EngineError::NotRunning(_) => Ok(false),
        }
    }

    async fn handle(&mut self, record: LogRecord) -> Result<(), LogError> {
        let stream = record.stream;
        let state = self.state(stream);
        let key = state.key(record.timestamp_nanos);
        let frontier_before = state.frontier;
        let Some(skip) = state.resume_offset(key) else {
            return Ok(());
        };
        let skip = usize::try_from(skip)
            .unwrap_or(usize::MAX)
            .min(record.bytes.len());
        let mut start = skip;
        if stream == LogStream::Stderr && !self.launched {
            match self.find_sentinel(&record.bytes[skip..]) {
                None => {
                    self.keep_prelaunch(&record.bytes[skip..]);
                    return Ok(());
                }
                Some(end) => {
                    self.keep_prelaunch(
                        &record.bytes[skip..skip + end - ENTRYPOINT_LAUNCH_SENTINEL.len()],
                    );
                    start = skip + end;
                    self.launched = true;
                    tracing::debug!(container = %self.id, "task command launched");
                    // Every stderr record before this one was dropped: that is consumed too.
                    self.stderr.committed = frontier_before;
                }
            }
        }
        self.forward(stream, key, &record.bytes, start).await
    }

    /// Feeds `bytes[start..]` of record `key` through the stream's redactor, writes the output
    /// and saves the cursor.
    async fn forward(
        &mut self,
        stream: LogStream,
        key: (i128, u64),
        bytes: &bytes::Bytes,
        start: usize,
    ) -> Result<(), LogError> {
        let fed = &bytes[start..];
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let state = self.state(stream);
        let passthrough = state.redactor.is_passthrough();
        if !passthrough {
            state.redactor.push(fed, &mut out);
        }
        let data: &[u8] = if passthrough { fed } else { &out };
        if !data.is_empty() {
            self.sinks().get_mut(stream).write_all(data).await?;
        }
        self.out = out;
        self.state(stream).fed(key, start as u64, fed.len() as u64);
        self.save(false)
    }

    /// End of the sentinel line in `bytes` if the sentinel starts a line there.
    fn find_sentinel(&self, bytes: &[u8]) -> Option<usize> {
        let sentinel = ENTRYPOINT_LAUNCH_SENTINEL;
        (0..bytes.len())
            .filter(|&p| {
                if p == 0 {
                    self.prelaunch_line_start
                } else {
                    bytes[p - 1] == b'\n'
                }
            })
            .find(|&p| bytes[p..].starts_with(sentinel))
            .map(|p| p + sentinel.len())
    }

    fn keep_prelaunch(&mut self, bytes: &[u8]) {
        if let Some(&last) = bytes.last() {
            self.prelaunch_line_start = last == b'\n';
        }
        self.prelaunch.extend_from_slice(bytes);
        if self.prelaunch.len() > PRELAUNCH_KEEP {
            let excess = self.prelaunch.len() - PRELAUNCH_KEEP;
            self.prelaunch.drain(..excess);
            self.prelaunch_dropped += excess as u64;
        }
    }

    fn save(&mut self, finished: bool) -> Result<(), LogError> {
        let cursor = Cursor {
            stdout: self.stdout.committed,
            stderr: self.stderr.committed,
            launched: self.launched,
            finished,
        };
        self.cursor_file.save(&cursor)
    }

    /// The container stopped and every record was handled: flush, finish, close.
    async fn finish(&mut self) -> Result<(), LogError> {
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let mut out = Vec::new();
            self.state(stream).redactor.finish(&mut out);
            if !out.is_empty() {
                self.sinks().get_mut(stream).write_all(&out).await?;
            }
            let state = self.state(stream);
            state.pending.clear();
            state.committed = StreamCursor {
                partial: 0,
                ..state.frontier
            };
        }
        if !self.launched && (!self.prelaunch.is_empty() || self.prelaunch_dropped > 0) {
            tracing::warn!(container = %self.id, "container ended before launching the task; forwarding its entrypoint output");
            let mut out = Vec::new();
            if self.prelaunch_dropped > 0 {
                let note = format!(
                    "[polydev: {} earlier bytes of entrypoint output omitted]\n",
                    self.prelaunch_dropped
                );
                out.extend_from_slice(note.as_bytes());
            }
            let mut redactor =
                std::mem::replace(&mut self.stderr.redactor, Redactor::none().stream());
            redactor.push(&self.prelaunch, &mut out);
            redactor.finish(&mut out);
            self.sinks().stderr.write_all(&out).await?;
        }
        self.save(true)?;
        self.close_sinks().await
    }

    async fn close_sinks(&mut self) -> Result<(), LogError> {
        match self.sinks.take() {
            Some(sinks) => sinks.close().await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
