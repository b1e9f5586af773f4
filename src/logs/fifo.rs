//! The two places a task's output goes: Nomad's stdout/stderr FIFOs (or what stands in for them).
//!
//! [`Sink::open`] decides by what the path is:
//! - `/dev/null` (Nomad's `logs { disabled = true }`): discard, without opening anything.
//! - `/dev/fd/1` or `/dev/fd/2`: this process's own stdout or stderr, written through a
//!   duplicate of the descriptor — the same open file, so output lands after what the caller's
//!   shell wrote before and before what it writes after, for files, pipes, sockets and ttys alike
//!   (`polydev run`). Reopening the path instead would start a file at offset 0 again.
//! - anything else must be a FIFO (logmon's) owned by this process's user, opened through
//!   [`crate::safe_open`]: never through a symlink, and never a regular file or a device in its
//!   place, which are refused ([`LogError::Unsafe`]) rather than created or appended to. The path
//!   sits in the alloc's `logs/` directory, which Nomad makes writable by everyone. It is opened
//!   `O_WRONLY | O_NONBLOCK`; until logmon has the read side open that fails with `ENXIO`, and it
//!   is retried every [`SinkOptions::retry_interval`] until [`SinkOptions::open_timeout`], then
//!   [`LogError::NoReader`]. The runtime never blocks: a blocking `open(2)` could hang forever if
//!   logmon is gone. A path that does not exist yet is waited for the same way.
//!
//! Writes to a FIFO apply back-pressure: a full pipe parks the task until it is writable again (no
//! spinning, no blocked thread). SIGPIPE is ignored by Rust programs, so a reader that went away
//! shows as `EPIPE`: the sink reopens the FIFO once (waiting for a new reader as above) and writes
//! the rest of the buffer; if that fails too, the write fails with [`LogError::Write`] or
//! [`LogError::NoReader`]. Bytes the kernel accepted before the reader vanished are lost with it.
//! File writes are flushed before `write_all` returns, so the cursor never runs ahead of them.
//!
//! Sinks close (drop their descriptors) when the pump finishes: EOF is what ends logmon's copy.
//! With `disable_log_collection` the FIFO paths do not exist; use [`LogSinks::discard`].

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::time::Instant;

use crate::engine::LogStream;
use crate::safe_open;

use super::LogError;

/// How long and how often to wait for a FIFO's reader.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Give up opening (or reopening) after this long.
    pub open_timeout: Duration,
    /// Pause between two open attempts.
    pub retry_interval: Duration,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            open_timeout: Duration::from_secs(10),
            retry_interval: Duration::from_millis(50),
        }
    }
}

enum Target {
    Fifo(pipe::Sender),
    File(tokio::fs::File),
    Discard,
}

/// One output destination.
pub struct Sink {
    path: PathBuf,
    target: Target,
    options: SinkOptions,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.target {
            Target::Fifo(_) => "fifo",
            Target::File(_) => "file",
            Target::Discard => "discard",
        };
        f.debug_struct("Sink")
            .field("path", &self.path)
            .field("kind", &kind)
            .finish()
    }
}

impl Sink {
    /// Opens `path` as described in the module docs.
    pub async fn open(path: &Path, options: &SinkOptions) -> Result<Sink, LogError> {
        if path == Path::new("/dev/null") {
            return Ok(Sink {
                path: path.to_path_buf(),
                target: Target::Discard,
                options: options.clone(),
            });
        }
        if let Some(duplicate) = inherited_fd(path) {
            let duplicate = duplicate.map_err(|source| LogError::Open {
                path: path.to_path_buf(),
                source,
            })?;
            return Ok(Sink {
                path: path.to_path_buf(),
                target: Target::File(tokio::fs::File::from_std(std::fs::File::from(duplicate))),
                options: options.clone(),
            });
        }
        let deadline = Instant::now() + options.open_timeout;
        let sender = open_fifo(path, options, deadline).await?;
        Ok(Sink {
            path: path.to_path_buf(),
            target: Target::Fifo(sender),
            options: options.clone(),
        })
    }

    /// Appends to a regular file, creating it if needed (tests read a pump's output this way;
    /// task output only ever goes to a FIFO, `/dev/null` or the caller's own stdout/stderr).
    #[cfg(test)]
    pub async fn append_file(path: &Path) -> Result<Sink, LogError> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .await
            .map_err(|source| LogError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Sink {
            path: path.to_path_buf(),
            target: Target::File(file),
            options: SinkOptions::default(),
        })
    }

    /// A sink that drops everything.
    pub fn discard() -> Sink {
        Sink {
            path: PathBuf::from("/dev/null"),
            target: Target::Discard,
            options: SinkOptions::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes all of `bytes`, waiting while the pipe is full. Cancel-safe only in the sense that
    /// dropping it leaves a prefix of `bytes` written.
    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        match &mut self.target {
            Target::Discard => Ok(()),
            Target::File(file) => {
                let result = async {
                    file.write_all(bytes).await?;
                    file.flush().await
                }
                .await;
                result.map_err(|source| LogError::Write {
                    path: self.path.clone(),
                    source,
                })
            }
            Target::Fifo(_) => self.write_fifo(bytes).await,
        }
    }

    async fn write_fifo(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        let mut written = 0;
        let mut reopened = false;
        while written < bytes.len() {
            let Target::Fifo(sender) = &mut self.target else {
                unreachable!("write_fifo on a FIFO sink")
            };
            match sender.write(&bytes[written..]).await {
                Ok(0) => {
                    let source =
                        std::io::Error::new(ErrorKind::WriteZero, "pipe accepted no bytes");
                    return Err(LogError::Write {
                        path: self.path.clone(),
                        source,
                    });
                }
                Ok(n) => written += n,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) if err.kind() == ErrorKind::BrokenPipe && !reopened => {
                    reopened = true;
                    tracing::warn!(path = %self.path.display(), "log FIFO reader went away; reopening");
                    let deadline = Instant::now() + self.options.open_timeout;
                    let sender = open_fifo(&self.path, &self.options, deadline).await?;
                    self.target = Target::Fifo(sender);
                }
                Err(source) => {
                    return Err(LogError::Write {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Flushes and closes the sink.
    pub async fn close(self) -> Result<(), LogError> {
        if let Target::File(mut file) = self.target {
            file.flush().await.map_err(|source| LogError::Write {
                path: self.path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// `/dev/fd/1` and `/dev/fd/2` name this process's stdout and stderr: a duplicate of it.
fn inherited_fd(path: &Path) -> Option<std::io::Result<std::os::fd::OwnedFd>> {
    let duplicate = match path.to_str()? {
        "/dev/fd/1" => nix::unistd::dup(std::io::stdout()),
        "/dev/fd/2" => nix::unistd::dup(std::io::stderr()),
        _ => return None,
    };
    Some(duplicate.map_err(std::io::Error::from))
}

/// Opens the FIFO at `path` for writing through [`safe_open`], waiting (until `deadline`) while it
/// does not exist yet or has no reader. Anything but a FIFO owned by this process's user is
/// refused at once: a task may have planted a symlink or a file in its place.
async fn open_fifo(
    path: &Path,
    options: &SinkOptions,
    deadline: Instant,
) -> Result<pipe::Sender, LogError> {
    let owner = nix::unistd::geteuid().as_raw();
    loop {
        let opened = safe_open::open_fifo_for_writing(path, owner);
        let waiting = match &opened {
            Ok(_) => false,
            Err(err) => err.os_error().is_some_and(|source| {
                source.raw_os_error() == Some(libc::ENXIO) || source.kind() == ErrorKind::NotFound
            }),
        };
        if !waiting {
            let fd = opened.map_err(|refused| LogError::Unsafe(Box::new(refused)))?;
            return pipe::Sender::from_owned_fd(fd).map_err(|source| LogError::Open {
                path: path.to_path_buf(),
                source,
            });
        }
        if Instant::now() >= deadline {
            let missing = opened
                .err()
                .and_then(|err| err.os_error().map(std::io::Error::kind))
                == Some(ErrorKind::NotFound);
            return Err(if missing {
                LogError::SinkMissing {
                    path: path.to_path_buf(),
                    waited: options.open_timeout,
                }
            } else {
                LogError::NoReader {
                    path: path.to_path_buf(),
                    waited: options.open_timeout,
                }
            });
        }
        tokio::time::sleep(options.retry_interval).await;
    }
}

/// The task's stdout and stderr sinks.
#[derive(Debug)]
pub struct LogSinks {
    pub stdout: Sink,
    pub stderr: Sink,
}

impl LogSinks {
    /// Opens both paths concurrently, so waiting for logmon costs one timeout, not two.
    pub async fn open(
        stdout_path: &Path,
        stderr_path: &Path,
        options: &SinkOptions,
    ) -> Result<LogSinks, LogError> {
        let (stdout, stderr) = tokio::try_join!(
            Sink::open(stdout_path, options),
            Sink::open(stderr_path, options)
        )?;
        Ok(LogSinks { stdout, stderr })
    }

    /// Both streams discarded.
    pub fn discard() -> LogSinks {
        LogSinks {
            stdout: Sink::discard(),
            stderr: Sink::discard(),
        }
    }

    pub fn get_mut(&mut self, stream: LogStream) -> &mut Sink {
        match stream {
            LogStream::Stdout => &mut self.stdout,
            LogStream::Stderr => &mut self.stderr,
        }
    }

    /// Flushes and closes both sinks.
    pub async fn close(self) -> Result<(), LogError> {
        let (a, b) = tokio::join!(self.stdout.close(), self.stderr.close());
        a.and(b)
    }
}

#[cfg(test)]
mod tests;
