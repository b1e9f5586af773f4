//! Startup benchmark of polydev's warm pool: one run, one machine, real Docker, the real plugin
//! binary spoken to over its unix socket exactly as Nomad does (handshake, SetConfig with a
//! cty-msgpack plugin config, StartTask with logmon-like FIFO readers, WaitTask, DestroyTask).
//!
//! Reproduce (as root, Docker running; about 10 minutes on 2 cores):
//!
//! ```sh
//! cargo bench --bench startup
//! ```
//!
//! It runs `containers/build-images.sh --provider openai` and `--test-only` first (idempotent; the
//! very first Codex image build takes minutes), prints one markdown table and writes
//! `benches/startup.svg`. It measures and reports; it never asserts on a timing.
//!
//! What it measures, in order:
//! 1. Raw floors, through the library's Docker adapter ([`polydev::docker::DockerEngine`]) or bollard:
//!    `create`+`start` of the provider image, `exec` into a running container of it (to first
//!    output and to exit), and the claim floor through Docker (the engine's `update` of the
//!    limits + `send_launch_spec`) on an idle, already started `WARM_POOL=true` container — next
//!    to polydev's own claim-time limits write (the cgroup files, Docker's record following).
//! 2. StartTask latency (request sent → response received, i.e. "task running"), sequentially,
//!    pool off ("cold") and pool on ("warm", waiting for the refill between starts).
//! 3. Bursts of 20 concurrent StartTasks with a pool of 20, then of 5.
//! 4. Time to first byte of `codex --version` in the task's stdout FIFO, cold and warm.
//! 5. Plugin RSS idle and with 100 running tasks, and the `forward-logs` processes' RSS.
//!
//! Whether a start was warm is read twice, independently: from the TaskEvents stream ("claimed
//! warm container …" / "pool empty: cold start") and from Docker (was the task's container
//! already started before the request was sent?).
//!
//! The provider image is referenced through a per-run alias tag of the very same image id
//! (`polydev-bench-<run>:openai`), so the harness can find and remove every container the run
//! caused — idle pool containers included — without touching containers of anything else that
//! shares the Docker daemon. Every container, plugin and `forward-logs` process the run started is
//! removed on success, on error, on panic (drop guards) and on Ctrl-C.
//!
//! Knobs (environment): `BENCH_TASKS` (50), `BENCH_FLOOR` (30), `BENCH_TTFB` (10),
//! `BENCH_RSS_TASKS` (100), `BENCH_WARM_TARGET` (4).

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "startup/floors.rs"]
mod floors;
#[path = "startup/phases.rs"]
mod phases;
#[path = "startup/report.rs"]
mod report;
#[path = "startup/session.rs"]
mod session;
#[path = "startup/stats.rs"]
mod stats;
#[path = "startup/svg.rs"]
mod svg;

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use polydev::config::SecurityConfig;
use polydev::container_parts::{security_options, task_user};
use polydev::core::{DriverState, LaunchSpec};
use polydev::docker::DockerEngine;
use polydev::engine::{ContainerEngine, ContainerSpec, ExecOutput, ResourceLimits};
use polydev::pb::hashicorp::nomad::plugins::drivers::proto::{
    self as nomad, driver_client::DriverClient,
};
use polydev::pb::hashicorp::nomad::plugins::shared::structs::attribute::Value as AttrValue;
use rmpv::Value;
use secrecy::SecretString;
use stats::{Summary, ms};
use support::real::{AllocDir, Plugin};
use support::{TaskOptions, cty_object, encode, str_list, task_config};
use tokio::sync::oneshot;
use tonic::transport::Channel;

const PROVIDER: &str = "openai";
const OPENAI_IMAGE: &str = "polydev-openai-runtime:latest";
const TEST_IMAGE: &str = support::real::TEST_IMAGE;
const DOCKER_ENDPOINT: &str = "unix:///var/run/docker.sock";
const IDLE_ATTR: &str = "driver.polydev.pool.openai.idle";
const WARM_EVENT: &str = "claimed warm container";
const COLD_EVENT: &str = "pool empty";
/// Quiet time before every sequential start, cold or warm, so that the previous task's teardown
/// (container removal, forwarder exit) never overlaps a measurement; a warm start additionally
/// waits for the pool's refill.
const SETTLE: Duration = Duration::from_secs(1);

// ------------------------------------------------------------------------------------- main

fn main() {
    let run = Arc::new(Run::new());
    let _ = CLEANUP.set(CleanupInfo {
        images: vec![run.openai.clone(), run.test.clone()],
        root: run.root.path().to_path_buf(),
    });
    let guard = CleanupGuard;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        tokio::spawn(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: cleaning up");
                cleanup_everything();
                std::process::exit(130);
            }
        });
        bench(run.clone()).await
    });
    drop(runtime);
    drop(guard);
    drop(run);
    match result {
        Ok(()) => {}
        Err(err) => {
            eprintln!("benchmark failed: {err:#}");
            std::process::exit(1);
        }
    }
}

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn bench(run: Arc<Run>) -> Result<()> {
    let tasks = knob("BENCH_TASKS", 50);
    let floor_n = knob("BENCH_FLOOR", 30);
    let ttfb_n = knob("BENCH_TTFB", 10);
    let rss_tasks = knob("BENCH_RSS_TASKS", 100);
    let warm_target = knob("BENCH_WARM_TARGET", 4) as u32;
    let begun = Instant::now();

    let env = prepare_images(&run)?;
    eprintln!(
        "run {}: docker {}, {} CPUs, images aliased as {} / {}",
        run.id, env.docker_version, env.cpus, run.openai, run.test
    );

    eprintln!("[1/6] raw Docker floors ({floor_n} samples each)");
    let floors = floors::measure(&run, floor_n).await.context("raw floors")?;

    eprintln!("[2/6] StartTask, pool off ({tasks} tasks + {ttfb_n} codex --version)");
    let cold = phases::startup_series(&run, "cold", Pool::off(), tasks, ttfb_n)
        .await
        .context("cold series")?;

    eprintln!(
        "[3/6] StartTask, pool on, target {warm_target} ({tasks} tasks + {ttfb_n} codex --version)"
    );
    let warm = phases::startup_series(&run, "warm", Pool::on(warm_target, 64), tasks, ttfb_n)
        .await
        .context("warm series")?;

    eprintln!("[4/6] burst: 20 concurrent StartTasks, pool of 20");
    let burst20 = phases::burst(&run, "burst20", Pool::on(20, 64), 20)
        .await
        .context("burst with a pool of 20")?;
    eprintln!("[5/6] burst: 20 concurrent StartTasks, pool of 5");
    let burst5 = phases::burst(&run, "burst5", Pool::on(5, 64), 20)
        .await
        .context("burst with a pool of 5")?;

    eprintln!("[6/6] plugin RSS idle and with {rss_tasks} tasks (test image)");
    let rss = phases::rss(&run, rss_tasks).await.context("RSS")?;

    let report = Report {
        env,
        floors,
        cold,
        warm,
        burst20,
        burst5,
        rss,
        warm_target,
        took: begun.elapsed(),
        leftovers: LEFTOVER_CONTAINERS.load(Ordering::Relaxed),
    };
    println!("{}", report.table());
    let svg_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/startup.svg");
    std::fs::write(&svg_path, report.svg())
        .with_context(|| format!("write {}", svg_path.display()))?;
    println!("chart: {}", svg_path.display());
    Ok(())
}

// ------------------------------------------------------------------------- run and cleanup

/// Identity and scratch space of one benchmark run.
struct Run {
    id: String,
    /// Alias tag of the Codex image (same image id).
    openai: String,
    /// Alias tag of the busybox test image (same image id).
    test: String,
    root: tempfile::TempDir,
    key: String,
    seq: AtomicU64,
}

impl Run {
    fn new() -> Run {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let id = format!("{:08x}", hasher.finish() as u32);
        let root = tempfile::Builder::new()
            .prefix(&format!("polydev-bench-{id}-"))
            .tempdir()
            .expect("scratch directory");
        Run {
            openai: format!("polydev-bench-{id}:openai"),
            test: format!("polydev-bench-{id}:test"),
            key: format!("sk-bench-{id}-0123456789abcdef0123456789abcdef"),
            id,
            root,
            seq: AtomicU64::new(0),
        }
    }

    /// A fresh Nomad task id `<alloc>/bench/<suffix>`; the container name derives from it.
    fn task_id(&self, phase: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}-{n:04x}-4000-8000-{phase}/bench/{}{n:05}",
            self.id, self.id
        )
    }
}

struct CleanupInfo {
    images: Vec<String>,
    root: PathBuf,
}

static CLEANUP: OnceLock<CleanupInfo> = OnceLock::new();
/// Plugin processes alive right now (for the Ctrl-C path; the normal path drops them).
static PLUGIN_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// Containers the harness itself had to remove after a session (idle pool containers).
static LEFTOVER_CONTAINERS: AtomicUsize = AtomicUsize::new(0);

struct CleanupGuard;

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        cleanup_everything();
    }
}

/// Kill our plugins, remove every container created from this run's alias tags, stop our log
/// forwarders, and drop the alias tags. Idempotent.
fn cleanup_everything() {
    for pid in PLUGIN_PIDS.lock().drain(..) {
        // A pid this process spawned and has not reaped yet: it cannot have been reused.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let Some(info) = CLEANUP.get() else { return };
    remove_run_containers(&info.images);
    stop_forwarders(&info.root);
    unmount_slot_roots(&info.root);
    for image in &info.images {
        let _ = Command::new("docker").args(["rmi", image]).output();
    }
}

/// Each session's plugin made its `<data_dir>/slots` a shared bind mount (it outlives the
/// plugin by design); the run's scratch root is about to go, so take them down.
fn unmount_slot_roots(root: &Path) {
    for session in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let slots = session.path().join("slots");
        if slots.is_dir() {
            let _ = Command::new("umount")
                .arg("-R")
                .arg("-l")
                .arg(&slots)
                .output();
        }
    }
}

/// `docker rm -f` every container (any state) whose image reference is one of `images`.
fn remove_run_containers(images: &[String]) -> usize {
    let Ok(out) = Command::new("docker")
        .args(["ps", "-a", "--no-trunc", "--format", "{{.ID}}\t{{.Image}}"])
        .output()
    else {
        return 0;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, image)| images.iter().any(|i| i == image))
        .map(|(id, _)| id.to_string())
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v"])
            .args(&ids)
            .output();
    }
    ids.len()
}

/// `polydev forward-logs` processes whose arguments live under `root` (this run's data dirs), as
/// pidfds taken before their argv was read: they are not our children and may exit and have
/// their pid reused at any moment, but a pidfd keeps naming the process that was checked.
fn forwarders(root: &Path) -> Vec<(u32, std::os::fd::OwnedFd)> {
    let root = root.as_os_str().as_bytes();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some((pid, target)) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
            .and_then(|pid| Some((pid, rustix::process::Pid::from_raw(pid.try_into().ok()?)?)))
        else {
            continue;
        };
        let Ok(pidfd) = rustix::process::pidfd_open(target, rustix::process::PidfdFlags::empty())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.get(1) == Some(&&b"forward-logs"[..]) && args.iter().any(|a| a.starts_with(root)) {
            pids.push((pid, pidfd));
        }
    }
    pids
}

fn stop_forwarders(root: &Path) {
    use rustix::process::{Signal, pidfd_send_signal};
    let pidfds = forwarders(root);
    for (_, pidfd) in &pidfds {
        let _ = pidfd_send_signal(pidfd, Signal::TERM);
    }
    if !pidfds.is_empty() {
        std::thread::sleep(Duration::from_millis(300));
        for (_, pidfd) in forwarders(root) {
            // It survived SIGTERM.
            let _ = pidfd_send_signal(&pidfd, Signal::KILL);
        }
    }
}

struct Env {
    docker_version: String,
    cpus: usize,
    commit: String,
}

/// Build (idempotently) and alias the images; describe the machine.
fn prepare_images(run: &Run) -> Result<Env> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("containers/build-images.sh");
    for args in [&["--provider", "openai"][..], &["--test-only"][..]] {
        let status = Command::new("bash")
            .arg(&script)
            .args(args)
            .status()
            .context("run containers/build-images.sh")?;
        if !status.success() {
            bail!("containers/build-images.sh {args:?} failed");
        }
    }
    for (image, alias) in [(OPENAI_IMAGE, &run.openai), (TEST_IMAGE, &run.test)] {
        let out = Command::new("docker")
            .args(["tag", image, alias])
            .output()?;
        if !out.status.success() {
            bail!(
                "docker tag {image} {alias}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let text = |cmd: &str, args: &[&str]| -> String {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    Ok(Env {
        docker_version: text("docker", &["version", "--format", "{{.Server.Version}}"]),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        commit: text(
            "git",
            &[
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "rev-parse",
                "--short",
                "HEAD",
            ],
        ),
    })
}

// ------------------------------------------------------------------------------ raw floors

struct Floors {
    create_start: Vec<Duration>,
    exec_first: Vec<Duration>,
    exec_exit: Vec<Duration>,
    claim: Vec<Duration>,
    /// The claim's two halves.
    update: Vec<Duration>,
    launch: Vec<Duration>,
    /// polydev's claim-time limits write (cgroup files directly; Docker's record follows).
    limits_write: Vec<Duration>,
    /// `HostConfig.NanoCpus` of a claimed container after `update_limits(nano_cpus = 0)`.
    nano_cpus_after_claim: String,
}

// --------------------------------------------------------------------- plugin sessions

#[derive(Clone, Copy)]
struct Pool {
    target: u32,
    max: u32,
}

impl Pool {
    fn off() -> Pool {
        Pool { target: 0, max: 64 }
    }

    fn on(target: u32, max: u32) -> Pool {
        Pool { target, max }
    }

    /// `pool "openai" { … }` as Nomad encodes it (every attribute present, defaults filled in).
    fn block(self) -> Value {
        cty_object(vec![
            ("idle_cpus", Value::F64(0.1)),
            ("idle_memory", Value::from(256)),
            ("max", Value::from(self.max)),
            ("max_idle_age", Value::from("1h")),
            ("refill_parallelism", Value::from(2)),
            ("target", Value::from(self.target)),
            ("wait_timeout", Value::from("30s")),
            ("when_empty", Value::from("cold")),
        ])
    }
}

/// How the benchmarked provider gets its key: `BENCH_CREDENTIAL_MODE` (`broker`, the default,
/// or `env`).
fn credential_mode() -> String {
    std::env::var("BENCH_CREDENTIAL_MODE").unwrap_or_else(|_| "broker".to_string())
}

/// The agent's `plugin "polydev" { config { … } }`: provider `openai` on `image`, credentials
/// from the plugin's environment only, and the pool of `openai` alone.
fn plugin_config(image: &str, data_dir: &Path, pool: Pool) -> Vec<u8> {
    let provider = cty_object(vec![
        ("command", Value::Nil),
        ("credential_mode", Value::from(credential_mode())),
        ("credentials", str_list(&["OPENAI_API_KEY"])),
        ("image", Value::from(image)),
        ("optional_credentials", Value::Nil),
    ]);
    encode(&cty_object(vec![
        ("container_log", Value::Nil),
        ("credentials_from_env", Value::Boolean(true)),
        ("credentials_from_store", Value::Boolean(false)),
        ("data_dir", Value::from(data_dir.to_str().unwrap())),
        ("disable_log_collection", Value::Boolean(false)),
        ("docker_endpoint", Value::from(DOCKER_ENDPOINT)),
        (
            "pool",
            // Only the benchmarked provider keeps warm containers; the others' pools are off so
            // the run creates nothing it does not measure (and cleans up).
            Value::Map(vec![
                (Value::from("anthropic"), Pool::off().block()),
                (Value::from("google"), Pool::off().block()),
                (Value::from(PROVIDER), pool.block()),
            ]),
        ),
        (
            "provider",
            Value::Map(vec![(Value::from(PROVIDER), provider)]),
        ),
        ("security", Value::Nil),
    ]))
}

#[derive(Default)]
struct FingerprintSeen {
    idle: Option<i64>,
    updates: usize,
}

/// One plugin process, configured once, with TaskEvents and Fingerprint streams open as Nomad
/// keeps them.
struct Session {
    plugin: Option<Plugin>,
    pid: u32,
    driver: DriverClient<Channel>,
    docker: DockerEngine,
    bollard: bollard::Docker,
    image: String,
    data_dir: PathBuf,
    events: Arc<Mutex<Vec<(String, String)>>>,
    fingerprint: Arc<Mutex<FingerprintSeen>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

struct Fill {
    seen: bool,
    reached: bool,
    took: Duration,
}

#[derive(Default)]
struct Waits {
    filled: Vec<Duration>,
    timed_out: usize,
    fallback: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EventKind {
    Warm,
    Cold,
    None,
}

/// How each start of a series was served.
#[derive(Default, Clone, Copy)]
struct Hits {
    n: usize,
    /// TaskEvents said "claimed warm container".
    events_warm: usize,
    /// TaskEvents said "pool empty: cold start".
    events_cold: usize,
    /// The task's container was running before StartTask was sent.
    prestarted: usize,
}

impl Hits {
    fn add(&mut self, kind: EventKind, prestarted: Option<bool>) {
        self.n += 1;
        match kind {
            EventKind::Warm => self.events_warm += 1,
            EventKind::Cold => self.events_cold += 1,
            EventKind::None => {}
        }
        if prestarted == Some(true) {
            self.prestarted += 1;
        }
    }

    fn text(&self) -> String {
        format!(
            "warm hits {}/{} by container StartedAt; TaskEvents: {} warm, {} cold, {} without a pool event",
            self.prestarted,
            self.n,
            self.events_warm,
            self.events_cold,
            self.n - self.events_warm - self.events_cold
        )
    }
}

struct Prepared {
    id: String,
    alloc: AllocDir,
    stdout: TimedFifo,
    stderr: TimedFifo,
    first_byte: Option<oneshot::Receiver<Instant>>,
    config: nomad::TaskConfig,
}

struct Running {
    id: String,
    container: String,
    /// Kept so the alloc dir lives as long as the task.
    _alloc: AllocDir,
    stdout: TimedFifo,
    stderr: TimedFifo,
    first_byte: Option<oneshot::Receiver<Instant>>,
    sent: Instant,
    sent_wall: SystemTime,
    latency: Duration,
}

/// Reads one FIFO to EOF on a thread, like Nomad's logmon, noting when the first byte arrived.
struct TimedFifo {
    path: PathBuf,
    thread: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl TimedFifo {
    fn start(path: &Path, first: Option<oneshot::Sender<Instant>>) -> TimedFifo {
        if let Err(errno) =
            nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        {
            panic!("mkfifo {}: {errno}", path.display());
        }
        let owned = path.to_path_buf();
        let thread = std::thread::spawn(move || {
            use std::io::Read;
            let mut first = first;
            let mut bytes = Vec::new();
            let Ok(mut file) = std::fs::File::open(&owned) else {
                return bytes;
            };
            let mut buf = [0u8; 65536];
            while let Ok(n) = file.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Some(tx) = first.take() {
                    let _ = tx.send(Instant::now());
                }
                bytes.extend_from_slice(&buf[..n]);
            }
            bytes
        });
        TimedFifo {
            path: path.to_path_buf(),
            thread: Some(thread),
        }
    }

    /// Everything read, once the writer closed; `None` if that took longer than `limit` (the
    /// reader is then released and left to finish on its own).
    async fn finish(mut self, limit: Duration) -> Option<Vec<u8>> {
        let thread = self.thread.take()?;
        let join = tokio::task::spawn_blocking(move || thread.join().ok());
        match tokio::time::timeout(limit, join).await {
            Ok(Ok(bytes)) => bytes,
            _ => {
                release_fifo_reader(&self.path);
                None
            }
        }
    }
}

impl Drop for TimedFifo {
    fn drop(&mut self) {
        if self.thread.take().is_some() {
            release_fifo_reader(&self.path);
        }
    }
}

/// A reader blocked in open(2) because no writer ever came: open and close the write end once.
fn release_fifo_reader(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    // Opened and closed at once; a failure (no reader left) is fine.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
}

fn sleep_task() -> TaskOptions {
    let mut options = TaskOptions::new(PROVIDER, "sh", &["-c", "sleep 30"]);
    options.work_dir = Some("/local".into());
    options
}

// ----------------------------------------------------------------------- startup series

struct Series {
    latencies: Vec<Duration>,
    /// Latencies of the starts that were served by a pre-started container.
    hit_latencies: Vec<Duration>,
    hits: Hits,
    ttfb: Vec<Duration>,
    ttfb_hits: Hits,
    fill: Option<Fill>,
    waits: Waits,
    fingerprint_idle: Option<i64>,
    codex_output: String,
}

impl TimedFifo {
    /// A placeholder that owns no reader.
    fn noop() -> TimedFifo {
        TimedFifo {
            path: PathBuf::new(),
            thread: None,
        }
    }
}

// -------------------------------------------------------------------------------- burst

struct Burst {
    pool: u32,
    latencies: Vec<Duration>,
    failures: Vec<String>,
    hits: Hits,
    fill: Fill,
}

// ---------------------------------------------------------------------------------- RSS

struct Rss {
    idle_kb: u64,
    loaded_kb: u64,
    peak_kb: u64,
    tasks: usize,
    forwarders: usize,
    forwarders_rss_kb: u64,
    forwarders_anon_kb: u64,
    fill: Fill,
}

// ------------------------------------------------------------------------------- report

struct Report {
    env: Env,
    floors: Floors,
    cold: Series,
    warm: Series,
    burst20: Burst,
    burst5: Burst,
    rss: Rss,
    warm_target: u32,
    took: Duration,
    leftovers: usize,
}
