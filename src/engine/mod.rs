//! The container engine as polydev sees it: one word, "engine", for what Docker is to polydev.
//!
//! - this module: the port, [`ContainerEngine`], which `core`, `pool`, `logs` and the operator
//!   CLI talk to, and its types. No tonic or bollard type crosses it.
//! - [`watch`]: follows the engine — its event stream for polydev's containers, its outages —
//!   for the pool and the task supervisors.
//! - `fake`: an in-memory engine for fast, deterministic tests (only in test builds and with
//!   the `fake-engine` cargo feature, never in the shipped binary).
//! - The Docker adapter, `DockerEngine` in module `docker`, implements the port against a real
//!   engine; only the composition root names it.
//!
//! Invariants every implementation keeps:
//! - A container is identified by the engine's full id string. Operations on an id the engine does
//!   not know return [`EngineError::NotFound`], never a generic error, so callers can be idempotent.
//! - Nothing passed through [`ContainerSpec`] is secret. Secrets reach a container only through
//!   [`ContainerEngine::send_launch_spec`], which writes to the container's stdin and closes it.
//! - Long-lived operations (`wait`, `logs`) are cancel-safe: dropping the future or stream releases
//!   the connection and changes nothing in the engine.

#[cfg(any(test, feature = "fake-engine"))]
pub mod fake;
pub mod watch;

use std::collections::BTreeMap;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

/// What can go wrong talking to the container engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine does not know this container or image.
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    /// The operation needs a running container and this one is not running.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The engine could not be reached or answered with a server-side failure; retrying may help.
    #[error("container engine unavailable: {0}")]
    Unavailable(String),
    /// The engine refused the request as invalid; retrying the same request will not help.
    #[error("container engine rejected the request: {0}")]
    Rejected(String),
}

impl EngineError {
    /// Whether the same request may succeed later (engine down, timeouts, 5xx answers).
    pub fn is_retryable(&self) -> bool {
        matches!(self, EngineError::Unavailable(_))
    }

    /// Whether this is the engine saying the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, EngineError::NotFound { .. })
    }
}

/// Result alias for this layer.
pub type EngineResult<T> = Result<T, EngineError>;

/// Everything needed to create one container. Contains no secret.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// Container name (unique per engine). Docker accepts `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
    pub name: String,
    pub image: String,
    /// `uid:gid` the entrypoint runs as.
    pub user: String,
    /// Non-secret environment fixed at creation (e.g. `WARM_POOL=true`).
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub limits: ResourceLimits,
    pub mounts: Vec<BindMount>,
    pub security: SecurityOptions,
    /// Container working directory; `None` keeps the image's.
    pub work_dir: Option<String>,
    /// Docker network mode (`bridge`, `none`, `host`, `container:<id>`, ...); `None` is the default.
    pub network_mode: Option<String>,
    /// Maximum size of one container log file before the engine rotates it (e.g. `100m`).
    pub log_max_size: String,
    /// How many rotated log files the engine keeps.
    pub log_max_files: u32,
}

/// cgroup limits of a container; applied at creation and changed by [`ContainerEngine::update_limits`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceLimits {
    /// Hard memory limit in bytes (0 = unlimited).
    pub memory_bytes: i64,
    /// Soft memory reservation in bytes (0 = none); used when Nomad's `memory_max` raises the hard limit.
    pub memory_reservation_bytes: i64,
    /// Relative CPU weight (Docker `CpuShares`; 0 = engine default).
    pub cpu_shares: i64,
    /// CPU quota in units of 1e-9 CPUs (Docker `NanoCpus`; 0 = unlimited).
    pub nano_cpus: i64,
    /// `cpuset-cpus` list such as `0,2-3`; empty = any CPU.
    pub cpuset_cpus: String,
}

/// A host path bound into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub host_path: String,
    pub container_path: String,
    pub read_only: bool,
    /// `rslave` propagation: mounts made later under `host_path` on the host appear in the
    /// container (how the warm pool hands a task's alloc dirs to an already-running container).
    pub receives_host_mounts: bool,
}

/// Isolation settings; the defaults are the hardened ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityOptions {
    /// Drop every Linux capability.
    pub cap_drop_all: bool,
    /// Set `no-new-privileges` so setuid binaries cannot raise privileges.
    pub no_new_privileges: bool,
    /// Maximum number of processes (0 = unlimited).
    pub pids_limit: i64,
    /// Mount the image's root filesystem read-only.
    pub read_only_rootfs: bool,
    /// OCI runtime name (e.g. `runsc`); `None` is the engine default.
    pub oci_runtime: Option<String>,
    /// Empty tmpfs file systems mounted over the image (writable scratch space, gone with the
    /// container).
    pub scratch: Vec<ScratchMount>,
}

impl Default for SecurityOptions {
    fn default() -> Self {
        SecurityOptions {
            cap_drop_all: true,
            no_new_privileges: true,
            pids_limit: 512,
            read_only_rootfs: false,
            oci_runtime: None,
            scratch: Vec::new(),
        }
    }
}

/// A tmpfs mounted in a container, always `nosuid` and `nodev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScratchMount {
    pub container_path: String,
    /// `uid:gid` owning its root directory; `None` leaves it to root.
    pub owner: Option<(u32, u32)>,
    /// Permission bits of its root directory (e.g. `0o1777`). runc 1.1 replaces them with those
    /// of the directory the image has at `container_path`, if it has one.
    pub mode: u32,
    /// Whether programs may be executed from it.
    pub exec: bool,
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerExit {
    pub exit_code: i64,
    pub oom_killed: bool,
}

/// A container's state as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerState {
    pub id: String,
    pub running: bool,
    /// `Some` once the container has exited.
    pub exit: Option<ContainerExit>,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub labels: BTreeMap<String, String>,
    /// While it runs, the host PID whose cgroup carries the container's limits (its init
    /// process) — `None` when the engine keeps limits elsewhere (VM or sandbox runtimes).
    pub cgroup_pid: Option<u32>,
    /// While it runs, the host PID of the container's init process, whatever the runtime (its
    /// network namespace is the container's with runc).
    pub init_pid: Option<u32>,
}

/// One entry of a container listing.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// Engine state word: `created`, `running`, `exited`, `dead`, ...
    pub state: String,
    pub created_at: SystemTime,
}

/// Which output stream a log record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One record of a container's output, as the engine stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub stream: LogStream,
    /// When the engine read the bytes, in nanoseconds since the Unix epoch.
    pub timestamp_nanos: i128,
    /// The bytes exactly as the process wrote them (a line, or part of a long line).
    pub bytes: Bytes,
}

/// Raw counters of one stats sample; `core::stats` turns two of them into Nomad's usage figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSample {
    pub read_at: Option<SystemTime>,
    /// Total CPU time of the container, in nanoseconds.
    pub cpu_total_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_kernel_ns: u64,
    /// Host CPU time of all cores, in nanoseconds (the denominator of CPU percent).
    pub system_cpu_ns: u64,
    pub online_cpus: u32,
    pub throttled_periods: u64,
    pub throttled_time_ns: u64,
    /// cgroup v1 `usage_in_bytes` / v2 `memory.current`.
    pub memory_usage: u64,
    /// cgroup v1 `max_usage_in_bytes`; absent on cgroup v2.
    pub memory_max_usage: Option<u64>,
    /// Detailed memory counters (`rss`, `cache`, `swap` on v1; `anon`, `file` on v2; ...).
    pub memory_stats: BTreeMap<String, u64>,
}

/// What the engine says happened to a container (its event stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerEventKind {
    Start,
    /// The container stopped (its exit code, when the engine gave one).
    Die {
        exit_code: Option<i64>,
    },
    /// The kernel's OOM killer hit it (a `Die` follows).
    Oom,
    /// The container was removed.
    Destroy,
}

/// One event of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub id: String,
    pub kind: ContainerEventKind,
}

/// Output of a command run inside a task's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// Input to a command run inside a task's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecInput {
    Stdin(Bytes),
    /// Close the command's stdin.
    CloseStdin,
    Resize {
        height: u16,
        width: u16,
    },
}

/// A running `exec` session.
pub struct ExecSession {
    pub output: BoxStream<'static, EngineResult<ExecOutput>>,
    pub input: tokio::sync::mpsc::Sender<ExecInput>,
    /// Resolves to the exit code once the output has ended.
    pub exit_code: futures::future::BoxFuture<'static, EngineResult<i64>>,
}

/// The container engine, as polydev needs it.
#[async_trait]
pub trait ContainerEngine: Send + Sync + 'static {
    /// Engine version string (e.g. `20.10.24+dfsg1`); doubles as the health probe.
    async fn version(&self) -> EngineResult<String>;

    /// Whether the engine runs every container in a user namespace of its own (Docker's
    /// `userns-remap`, or a rootless engine), so a uid inside a container is not the same uid on
    /// the host.
    async fn remaps_users(&self) -> EngineResult<bool>;

    /// The id (`sha256:…`) of the local image with this reference, `None` if there is none.
    async fn image_id(&self, image: &str) -> EngineResult<Option<String>>;

    /// Create (but do not start) a container; returns its id.
    async fn create(&self, spec: &ContainerSpec) -> EngineResult<String>;

    /// Start a created container.
    async fn start(&self, id: &str) -> EngineResult<()>;

    /// Change a running container's cgroup limits in place. `cgroup_pid` (from
    /// [`ContainerState::cgroup_pid`]) lets an engine write the cgroup directly instead of
    /// taking its slower general path.
    async fn update_limits(
        &self,
        id: &str,
        cgroup_pid: Option<u32>,
        limits: &ResourceLimits,
    ) -> EngineResult<()>;

    /// Attach to the started container's stdin, write `spec` and close stdin. The container must
    /// have been created with stdin open; this is the only way a secret enters a container.
    async fn send_launch_spec(&self, id: &str, spec: &[u8]) -> EngineResult<()>;

    /// Wait for the container to stop and report how it ended. Returns at once if it already has.
    async fn wait(&self, id: &str) -> EngineResult<ContainerExit>;

    /// The container's current state.
    async fn inspect(&self, id: &str) -> EngineResult<ContainerState>;

    /// A local check, without asking the engine, of whether container `id` whose init process
    /// was `init_pid` still runs; `None` when this runtime cannot tell that way. Cheap enough
    /// for every warm claim.
    fn still_running(&self, id: &str, init_pid: u32) -> Option<bool>;

    /// Send a signal (`SIGTERM`, `SIGKILL`, `HUP`, ...) to the container's PID 1.
    async fn kill(&self, id: &str, signal: &str) -> EngineResult<()>;

    /// Remove the container, killing it first if it runs.
    async fn remove(&self, id: &str) -> EngineResult<()>;

    /// Follow the container's output from `since_unix_secs` on, with engine timestamps; the stream
    /// ends when the container has stopped and all output was delivered.
    fn logs(&self, id: &str, since_unix_secs: i64) -> BoxStream<'static, EngineResult<LogRecord>>;

    /// One stats sample of a running container.
    async fn stats(&self, id: &str) -> EngineResult<StatsSample>;

    /// Follow the engine's events for containers carrying label `key=value`, from now on. The
    /// stream ends or fails when the engine goes away; events it does not know are skipped.
    fn events(
        &self,
        label_key: &str,
        label_value: &str,
    ) -> BoxStream<'static, EngineResult<ContainerEvent>>;

    /// All containers (running or not) carrying label `key=value`.
    async fn list(&self, label_key: &str, label_value: &str)
    -> EngineResult<Vec<ContainerSummary>>;

    /// Run a command inside the running container as `user`.
    async fn exec(
        &self,
        id: &str,
        user: &str,
        argv: Vec<String>,
        tty: bool,
    ) -> EngineResult<ExecSession>;
}
