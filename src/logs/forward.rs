//! Who runs a task's log pump: this process, or a small process of its own.
//!
//! Why a process of its own in production: Nomad's logmon reads each FIFO until end-of-file and
//! then stops for good (`client/logmon/logmon.go`); it only reopens when the task restarts. If the
//! pump lived inside the plugin, a plugin crash would close the FIFOs' write ends and every line
//! the task printed afterwards would be lost, even though RecoverTask re-attaches the task. So,
//! like Nomad's docker driver with its `docker_logger`, each task gets a forwarder process
//! (`polydev forward-logs`, in its own process group) that holds the FIFOs open and survives the
//! plugin. A new plugin process adopts a live forwarder (found by its pid file) or, if it died
//! too, starts a new one that resumes from the persisted cursor.
//!
//! Invariants:
//! - A forwarder process never sees a secret in its argv or environment (its environment is
//!   cleared); the redaction values arrive on its stdin, which is then closed.
//! - `forward` returns once every byte the container wrote has been delivered (or forwarding
//!   failed), or at once with `Detached` when `cancel` fires (plugin shutdown).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::{CursorFile, LogError, LogSinks, PumpEnd, Redactor, SinkOptions, run_pump};
use crate::engine::ContainerEngine;

/// The subcommand a forwarder process runs.
pub const FORWARD_SUBCOMMAND: &str = "forward-logs";

/// How often an adopted forwarder process is checked for liveness.
const ADOPTED_POLL: Duration = Duration::from_millis(250);

/// One task's log forwarding.
pub struct ForwardJob {
    pub container_id: String,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// Values to redact from the output.
    pub secrets: Vec<SecretString>,
}

/// How forwarding ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardEnd {
    /// All output was delivered and the FIFOs are closed.
    Completed,
    /// The caller stopped waiting; forwarding resumes from the cursor later.
    Detached,
}

/// Why forwarding failed; published as a task event ("log forwarding failed: ...").
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Pump(#[from] LogError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// A forwarder process failed, in its own words (its `.done` file).
    #[error("{0}")]
    ForwarderFailed(String),
    #[error("the log forwarder exited without a result; see {}", log.display())]
    NoResult { log: PathBuf },
    #[error("cannot create {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open {}: {source}", path.display())]
    OpenLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the log forwarder {}: {source}", executable.display())]
    Spawn {
        executable: PathBuf,
        source: std::io::Error,
    },
    #[error("the log forwarder has no stdin")]
    NoStdin,
    #[error("cannot hand redaction values to the log forwarder: {0}")]
    HandSecrets(#[source] std::io::Error),
    #[error("waiting for the log forwarder failed: {0}")]
    Wait(#[source] std::io::Error),
}

/// Runs log pumps.
#[async_trait]
pub trait LogForwarder: Send + Sync + 'static {
    /// Deliver the container's output until it has all been written, or `cancel` fires.
    async fn forward(
        &self,
        job: ForwardJob,
        cancel: CancellationToken,
    ) -> Result<ForwardEnd, ForwardError>;

    /// The task is being destroyed: stop forwarding and delete what was kept for it.
    async fn discard(&self, container_id: &str);
}

/// Runs the pump as a task of this process (tests, the operator CLI).
pub struct InProcessForwarder {
    engine: Arc<dyn ContainerEngine>,
    state_dir: PathBuf,
    sink_options: SinkOptions,
}

impl InProcessForwarder {
    pub fn new(engine: Arc<dyn ContainerEngine>, state_dir: PathBuf) -> Self {
        InProcessForwarder {
            engine,
            state_dir,
            sink_options: SinkOptions::default(),
        }
    }
}

#[async_trait]
impl LogForwarder for InProcessForwarder {
    async fn forward(
        &self,
        job: ForwardJob,
        cancel: CancellationToken,
    ) -> Result<ForwardEnd, ForwardError> {
        Ok(pump_once(
            self.engine.clone(),
            &self.state_dir,
            &self.sink_options,
            job,
            cancel,
        )
        .await?)
    }

    async fn discard(&self, container_id: &str) {
        if let Err(err) = CursorFile::remove_for(&self.state_dir, container_id) {
            tracing::warn!(container_id, error = %err, "cannot remove log cursor");
        }
    }
}

/// Open the sinks and run the pump, unless the cursor says it already completed.
async fn pump_once(
    engine: Arc<dyn ContainerEngine>,
    state_dir: &Path,
    sink_options: &SinkOptions,
    job: ForwardJob,
    cancel: CancellationToken,
) -> Result<ForwardEnd, LogError> {
    let cursor = CursorFile::open(state_dir, &job.container_id)?;
    if cursor.cursor().finished {
        return Ok(ForwardEnd::Completed);
    }
    let sinks = tokio::select! {
        () = cancel.cancelled() => return Ok(ForwardEnd::Detached),
        sinks = LogSinks::open(&job.stdout, &job.stderr, sink_options) => sinks?,
    };
    let redactor = Redactor::new(
        job.secrets
            .iter()
            .map(|s| s.expose_secret().as_bytes().to_vec()),
    );
    let end = run_pump(engine, job.container_id, sinks, cursor, redactor, cancel).await?;
    Ok(match end {
        PumpEnd::Completed => ForwardEnd::Completed,
        PumpEnd::Cancelled => ForwardEnd::Detached,
    })
}

/// Runs each task's pump in a `polydev forward-logs` process that outlives the plugin.
pub struct ProcessForwarder {
    executable: PathBuf,
    engine_endpoint: String,
    state_dir: PathBuf,
}

impl ProcessForwarder {
    /// Forwarders run `executable forward-logs …`, reading from the engine at `engine_endpoint`
    /// (handed to the process as its argument) and keeping their files in `state_dir`.
    pub fn new(executable: PathBuf, engine_endpoint: String, state_dir: PathBuf) -> Self {
        ProcessForwarder {
            executable,
            engine_endpoint,
            state_dir,
        }
    }

    fn file(&self, container_id: &str, extension: &str) -> PathBuf {
        self.state_dir.join(format!("{container_id}.{extension}"))
    }

    /// The pid of this container's forwarder, if one is alive.
    fn live_forwarder(&self, container_id: &str) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.file(container_id, "pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        is_forwarder_of(pid, container_id).then_some(pid)
    }

    fn outcome(&self, container_id: &str) -> Result<ForwardEnd, ForwardError> {
        match std::fs::read_to_string(self.file(container_id, "done")) {
            Ok(text) if text.trim() == "ok" => Ok(ForwardEnd::Completed),
            Ok(text) => Err(ForwardError::ForwarderFailed(text.trim().to_string())),
            Err(_) => Err(ForwardError::NoResult {
                log: self.file(container_id, "forwarder.log"),
            }),
        }
    }

    async fn spawn(&self, job: &ForwardJob) -> Result<tokio::process::Child, ForwardError> {
        create_private_dir(&self.state_dir)?;
        let log_path = self.file(&job.container_id, "forwarder.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| ForwardError::OpenLog {
                path: log_path.clone(),
                source,
            })?;
        let _ = std::fs::remove_file(self.file(&job.container_id, "done"));
        let mut command = tokio::process::Command::new(&self.executable);
        command
            .arg(FORWARD_SUBCOMMAND)
            .arg(&job.container_id)
            .arg(&job.stdout)
            .arg(&job.stderr)
            .arg(&self.state_dir)
            .arg(&self.engine_endpoint)
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .process_group(0);
        if let Ok(filter) = std::env::var("POLYDEV_LOG") {
            command.env("POLYDEV_LOG", filter);
        }
        let mut child = command.spawn().map_err(|source| ForwardError::Spawn {
            executable: self.executable.clone(),
            source,
        })?;
        if let Some(pid) = child.id() {
            let _ = std::fs::write(self.file(&job.container_id, "pid"), pid.to_string());
        }
        let mut stdin = child.stdin.take().ok_or(ForwardError::NoStdin)?;
        let mut secrets = zeroize::Zeroizing::new(Vec::new());
        for secret in &job.secrets {
            secrets.extend_from_slice(STANDARD.encode(secret.expose_secret()).as_bytes());
            secrets.push(b'\n');
        }
        stdin
            .write_all(&secrets)
            .await
            .map_err(ForwardError::HandSecrets)?;
        drop(stdin);
        Ok(child)
    }
}

#[async_trait]
impl LogForwarder for ProcessForwarder {
    async fn forward(
        &self,
        job: ForwardJob,
        cancel: CancellationToken,
    ) -> Result<ForwardEnd, ForwardError> {
        if let Some(pid) = self.live_forwarder(&job.container_id) {
            tracing::debug!(container_id = %job.container_id, pid, "adopting the running log forwarder");
            while is_forwarder_of(pid, &job.container_id) {
                tokio::select! {
                    () = cancel.cancelled() => return Ok(ForwardEnd::Detached),
                    () = tokio::time::sleep(ADOPTED_POLL) => {}
                }
            }
            return self.outcome(&job.container_id);
        }
        if let Ok(cursor) = CursorFile::open(&self.state_dir, &job.container_id)
            && cursor.cursor().finished
        {
            return Ok(ForwardEnd::Completed);
        }
        let mut child = self.spawn(&job).await?;
        tokio::select! {
            () = cancel.cancelled() => Ok(ForwardEnd::Detached),
            status = child.wait() => match status {
                Ok(_) => self.outcome(&job.container_id),
                Err(e) => Err(ForwardError::Wait(e)),
            },
        }
    }

    async fn discard(&self, container_id: &str) {
        // The container is gone, so a live forwarder ends by itself within moments.
        for _ in 0..20 {
            if self.live_forwarder(container_id).is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(pid) = self.live_forwarder(container_id) {
            tracing::warn!(
                container_id,
                pid,
                "log forwarder did not end; terminating it"
            );
            terminate(pid, container_id);
        }
        for extension in ["pid", "done", "forwarder.log"] {
            let _ = std::fs::remove_file(self.file(container_id, extension));
        }
        if let Err(err) = CursorFile::remove_for(&self.state_dir, container_id) {
            tracing::warn!(container_id, error = %err, "cannot remove log cursor");
        }
    }
}

/// Create `dir` (and missing parents) readable by its owner only: it describes every task.
fn create_private_dir(dir: &Path) -> Result<(), ForwardError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|source| ForwardError::StateDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Whether `pid` is a live `forward-logs` process for `container_id` (guards against pid reuse).
fn is_forwarder_of(pid: u32, container_id: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmdline.split(|b| *b == 0);
    let _exe = args.next();
    args.next() == Some(FORWARD_SUBCOMMAND.as_bytes())
        && args.next() == Some(container_id.as_bytes())
        && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after_name = stat.rsplit_once(')')?.1;
            after_name
                .split_whitespace()
                .next()
                .map(|state| state == "Z")
        })
        .unwrap_or(false)
}

/// SIGTERM to `pid` if it is still the forwarder of `container_id`. The pid came from a file and
/// may not be our child, so it can exit, be reaped and be reused at any moment: a pidfd is taken
/// first and the identity checked after, so the signal reaches the process that was checked or,
/// if that one is gone, nobody. Kernels before 5.3 have no pidfd; there it is a plain `kill(2)`.
fn terminate(pid: u32, container_id: &str) {
    let Ok(raw) = i32::try_from(pid) else { return };
    let Some(target) = rustix::process::Pid::from_raw(raw) else {
        return;
    };
    match rustix::process::pidfd_open(target, rustix::process::PidfdFlags::empty()) {
        Ok(pidfd) => {
            if is_forwarder_of(pid, container_id) {
                let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::TERM);
            }
        }
        Err(rustix::io::Errno::NOSYS) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(raw),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        Err(_) => {} // gone already (ESRCH)
    }
}

/// The `forward-logs` process: `forward-logs <container> <stdout> <stderr> <state-dir>
/// <docker-endpoint>`, redaction values (base64, one per line) on stdin. `connect` makes the
/// engine the container's output is read from, given that endpoint (the composition root
/// passes Docker's; `logs` never names an engine). Returns the exit code.
pub fn forwarder_main(
    args: &[String],
    connect: impl FnOnce(&str) -> Result<Arc<dyn ContainerEngine>, crate::engine::EngineError>,
) -> i32 {
    let [container_id, stdout, stderr, state_dir, endpoint] = args else {
        eprintln_safe(
            "usage: polydev forward-logs <container> <stdout> <stderr> <state-dir> <docker-endpoint> (internal: started by the plugin)",
        );
        return 2;
    };
    let secrets = read_secrets_from_stdin();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln_safe(&format!("cannot start the async runtime: {e}"));
            return 1;
        }
    };
    let state_dir = PathBuf::from(state_dir);
    let done_path = state_dir.join(format!("{container_id}.done"));
    let result = runtime.block_on(async {
        let engine = connect(endpoint)?;
        let cancel = CancellationToken::new();
        let on_term = cancel.clone();
        tokio::spawn(async move {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
                on_term.cancel();
            }
        });
        let job = ForwardJob {
            container_id: container_id.clone(),
            stdout: stdout.into(),
            stderr: stderr.into(),
            secrets,
        };
        pump_once(engine, &state_dir, &SinkOptions::default(), job, cancel)
            .await
            .map_err(ForwardError::from)
    });
    match result {
        Ok(ForwardEnd::Completed) => {
            let _ = std::fs::write(&done_path, "ok");
            0
        }
        Ok(ForwardEnd::Detached) => 0,
        Err(err) => {
            let message = err.to_string();
            eprintln_safe(&format!(
                "log forwarding for {container_id} failed: {message}"
            ));
            let _ = std::fs::write(&done_path, &message);
            1
        }
    }
}

fn read_secrets_from_stdin() -> Vec<SecretString> {
    use std::io::Read;
    let mut input = zeroize::Zeroizing::new(String::new());
    if std::io::stdin().read_to_string(&mut input).is_err() {
        return Vec::new();
    }
    input
        .lines()
        .filter_map(|line| STANDARD.decode(line.trim()).ok())
        .filter_map(|bytes| String::from_utf8(bytes).ok())
        .map(SecretString::from)
        .collect()
}

/// Write a line to stderr, ignoring failures (the pipe may be gone).
fn eprintln_safe(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}

#[cfg(test)]
mod tests;
