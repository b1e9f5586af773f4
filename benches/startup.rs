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
//! 1. Raw floors, through the library's Docker adapter ([`polydev::docker::DockerRuntime`]) or bollard:
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

#[path = "startup/stats.rs"]
mod stats;
#[path = "startup/svg.rs"]
mod svg;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use polydev::core::{DriverState, LaunchSpec, TASK_USER};
use polydev::docker::DockerRuntime;
use polydev::pb::hashicorp::nomad::plugins::base::proto::SetConfigRequest;
use polydev::pb::hashicorp::nomad::plugins::drivers::proto::{
    self as nomad, driver_client::DriverClient,
};
use polydev::pb::hashicorp::nomad::plugins::shared::structs::attribute::Value as AttrValue;
use polydev::runtime::{
    ContainerRuntime, ContainerSpec, ExecOutput, ResourceLimits, SecurityOptions,
};
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
    let floors = floors(&run, floor_n).await.context("raw floors")?;

    eprintln!("[2/6] StartTask, pool off ({tasks} tasks + {ttfb_n} codex --version)");
    let cold = startup_series(&run, "cold", Pool::off(), tasks, ttfb_n)
        .await
        .context("cold series")?;

    eprintln!(
        "[3/6] StartTask, pool on, target {warm_target} ({tasks} tasks + {ttfb_n} codex --version)"
    );
    let warm = startup_series(&run, "warm", Pool::on(warm_target, 64), tasks, ttfb_n)
        .await
        .context("warm series")?;

    eprintln!("[4/6] burst: 20 concurrent StartTasks, pool of 20");
    let burst20 = burst(&run, "burst20", Pool::on(20, 64), 20)
        .await
        .context("burst with a pool of 20")?;
    eprintln!("[5/6] burst: 20 concurrent StartTasks, pool of 5");
    let burst5 = burst(&run, "burst5", Pool::on(5, 64), 20)
        .await
        .context("burst with a pool of 5")?;

    eprintln!("[6/6] plugin RSS idle and with {rss_tasks} tasks (test image)");
    let rss = rss(&run, rss_tasks).await.context("RSS")?;

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
    for pid in PLUGIN_PIDS.lock().unwrap().drain(..) {
        // SAFETY: plain kill(2) on a pid this process spawned and has not reaped yet.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let Some(info) = CLEANUP.get() else { return };
    remove_run_containers(&info.images);
    stop_forwarders(&info.root);
    for image in &info.images {
        let _ = Command::new("docker").args(["rmi", image]).output();
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

/// `polydev forward-logs` processes whose arguments live under `root` (this run's data dirs).
fn forwarders(root: &Path) -> Vec<u32> {
    let root = root.as_os_str().as_bytes();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.get(1) == Some(&&b"forward-logs"[..]) && args.iter().any(|a| a.starts_with(root)) {
            pids.push(pid);
        }
    }
    pids
}

fn stop_forwarders(root: &Path) {
    let pids = forwarders(root);
    for pid in &pids {
        // SAFETY: kill(2) on a forwarder the plugin we spawned started, identified by its argv.
        unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
    }
    if !pids.is_empty() {
        std::thread::sleep(Duration::from_millis(300));
        for pid in forwarders(root) {
            // SAFETY: as above; it survived SIGTERM.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
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

fn task_limits() -> ResourceLimits {
    // What `support::task_config` asks for: 128 MB, 100 CPU shares.
    ResourceLimits {
        memory_bytes: 128 << 20,
        memory_reservation_bytes: 0,
        cpu_shares: 100,
        nano_cpus: 0,
        cpuset_cpus: String::new(),
    }
}

/// `task_limits()` as Docker's update API takes them (no quota: every host CPU, as polydev sends).
fn docker_update_body() -> bollard::models::ContainerUpdateBody {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    bollard::models::ContainerUpdateBody {
        memory: Some(128 << 20),
        memory_swap: Some(128 << 20),
        cpu_shares: Some(100),
        nano_cpus: Some(cpus * 1_000_000_000),
        ..Default::default()
    }
}

fn idle_limits() -> ResourceLimits {
    // The pool's defaults: 0.1 CPU, 256 MB.
    ResourceLimits {
        memory_bytes: 256 << 20,
        memory_reservation_bytes: 0,
        cpu_shares: 0,
        nano_cpus: 100_000_000,
        cpuset_cpus: String::new(),
    }
}

/// A container like a task's (hardened, uid 1000, local log driver), without alloc mounts.
fn floor_spec(run: &Run, name: &str, warm: bool, limits: ResourceLimits) -> ContainerSpec {
    ContainerSpec {
        name: format!("polydev-bench-{}-{name}", run.id),
        image: run.openai.clone(),
        user: TASK_USER.into(),
        env: if warm {
            vec!["WARM_POOL=true".into()]
        } else {
            Vec::new()
        },
        labels: BTreeMap::from([("io.polydev.bench".to_string(), run.id.clone())]),
        limits,
        mounts: Vec::new(),
        security: SecurityOptions::default(),
        work_dir: None,
        network_mode: None,
        log_max_size: "100m".into(),
        log_max_files: 3,
    }
}

async fn floors(run: &Run, n: usize) -> Result<Floors> {
    let docker = DockerRuntime::connect(DOCKER_ENDPOINT)?;
    docker.version().await?;

    // create + start; the first sample warms caches and is discarded.
    let mut create_start = Vec::new();
    for i in 0..=n {
        let spec = floor_spec(run, &format!("cold-{i}"), false, task_limits());
        let t0 = Instant::now();
        let id = docker.create(&spec).await?;
        docker.start(&id).await?;
        let took = t0.elapsed();
        docker.remove(&id).await?;
        if i > 0 {
            create_start.push(took);
        }
    }

    // exec into one running container.
    let spec = floor_spec(run, "exec", true, task_limits());
    let id = docker.create(&spec).await?;
    docker.start(&id).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut exec_first, mut exec_exit) = (Vec::new(), Vec::new());
    for i in 0..=n {
        let t0 = Instant::now();
        let session = docker
            .exec(&id, TASK_USER, vec!["echo".into(), "x".into()], false)
            .await?;
        drop(session.input);
        let mut output = session.output;
        let mut first = None;
        while let Some(item) = output.next().await {
            if first.is_none() && matches!(item?, ExecOutput::Stdout(_)) {
                first = Some(t0.elapsed());
            }
        }
        let code = session.exit_code.await?;
        let exit = t0.elapsed();
        if code != 0 {
            bail!("exec echo exited {code}");
        }
        if i > 0 {
            exec_first.push(first.context("exec produced no output")?);
            exec_exit.push(exit);
        }
    }
    docker.remove(&id).await?;

    // claim: idle, started WARM_POOL containers, then Docker's own update + send_launch_spec;
    // polydev's direct cgroup write of the same limits is timed on the running task after it.
    let engine =
        bollard::Docker::connect_with_unix(DOCKER_ENDPOINT, 120, bollard::API_DEFAULT_VERSION)?
            .negotiate_version()
            .await?;
    let mut idle = Vec::new();
    for i in 0..=n {
        let spec = floor_spec(run, &format!("idle-{i}"), true, idle_limits());
        let id = docker.create(&spec).await?;
        docker.start(&id).await?;
        idle.push(id);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut claim, mut update, mut launch) = (Vec::new(), Vec::new(), Vec::new());
    let mut limits_write = Vec::new();
    for (i, id) in idle.iter().enumerate() {
        let spec = LaunchSpec {
            argv: vec!["sh".into(), "-c".into(), "sleep 30".into()],
            env: vec![("PROVIDER".into(), PROVIDER.into())],
            secret_env: vec![("OPENAI_API_KEY".into(), SecretString::from(run.key.clone()))],
            work_dir: Some("/tmp".into()),
            required: vec!["OPENAI_API_KEY".into()],
        }
        .encode();
        let pid = docker.inspect(id).await?.pid;
        let t0 = Instant::now();
        engine.update_container(id, docker_update_body()).await?;
        let t1 = Instant::now();
        docker.send_launch_spec(id, &spec).await?;
        let t2 = Instant::now();
        docker.update_limits(id, pid, &task_limits()).await?;
        if i > 0 {
            claim.push(t2 - t0);
            update.push(t1 - t0);
            launch.push(t2 - t1);
            limits_write.push(t2.elapsed());
        }
        // Let the update Docker records in the background finish before the next sample.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let nano_cpus_after_claim = Command::new("docker")
        .args(["inspect", "--format", "{{.HostConfig.NanoCpus}}", &idle[0]])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    // The claimed containers really run the task (checked once, untimed).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let state = docker.inspect(&idle[n]).await?;
    if !state.running {
        bail!("a claimed floor container is not running the task: {state:?}");
    }
    for id in &idle {
        docker.remove(id).await?;
    }
    Ok(Floors {
        create_start,
        exec_first,
        exec_exit,
        claim,
        update,
        launch,
        limits_write,
        nano_cpus_after_claim,
    })
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

/// The agent's `plugin "polydev" { config { … } }`: provider `openai` on `image`, credentials
/// from the plugin's environment only, and the pool of `openai` alone.
fn plugin_config(image: &str, data_dir: &Path, pool: Pool) -> Vec<u8> {
    let provider = cty_object(vec![
        ("command", Value::Nil),
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
    docker: DockerRuntime,
    bollard: bollard::Docker,
    image: String,
    data_dir: PathBuf,
    events: Arc<Mutex<Vec<(String, String)>>>,
    fingerprint: Arc<Mutex<FingerprintSeen>>,
}

impl Session {
    async fn open(run: &Run, name: &str, image: &str, pool: Pool) -> Result<Session> {
        let data_dir = run.root.path().join(name);
        std::fs::create_dir_all(&data_dir)?;
        let config = plugin_config(image, &data_dir, pool);
        polydev::config::decode_plugin_config(&config)
            .map_err(|e| anyhow::anyhow!("the harness's plugin config is invalid: {e}"))?;
        let plugin = Plugin::spawn(&[("OPENAI_API_KEY", run.key.as_str())]);
        let pid = plugin.pid();
        PLUGIN_PIDS.lock().unwrap().push(pid);
        let (mut base, driver) = plugin.clients().await;
        base.set_config(SetConfigRequest {
            msgpack_config: config,
            nomad_config: None,
            plugin_api_version: "0.1.0".into(),
        })
        .await
        .with_context(|| format!("SetConfig; plugin log:\n{}", plugin.stderr()))?;

        let events = Arc::new(Mutex::new(Vec::new()));
        let mut stream = driver
            .clone()
            .task_events(nomad::TaskEventsRequest {})
            .await?
            .into_inner();
        let sink = events.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                sink.lock().unwrap().push((event.task_id, event.message));
            }
        });
        let fingerprint = Arc::new(Mutex::new(FingerprintSeen::default()));
        let mut stream = driver
            .clone()
            .fingerprint(nomad::FingerprintRequest {})
            .await?
            .into_inner();
        let sink = fingerprint.clone();
        tokio::spawn(async move {
            while let Some(Ok(response)) = stream.next().await {
                let idle = response
                    .attributes
                    .get(IDLE_ATTR)
                    .and_then(|a| a.value.clone())
                    .and_then(|v| match v {
                        AttrValue::IntVal(n) => Some(n),
                        AttrValue::FloatVal(f) => Some(f as i64),
                        AttrValue::StringVal(s) => s.parse().ok(),
                        AttrValue::BoolVal(_) => None,
                    });
                let mut seen = sink.lock().unwrap();
                seen.updates += 1;
                if idle.is_some() {
                    seen.idle = idle;
                }
            }
        });
        let bollard =
            bollard::Docker::connect_with_unix(DOCKER_ENDPOINT, 120, bollard::API_DEFAULT_VERSION)?
                .negotiate_version()
                .await?;
        Ok(Session {
            plugin: Some(plugin),
            pid,
            driver,
            docker: DockerRuntime::connect(DOCKER_ENDPOINT)?,
            bollard,
            image: image.to_string(),
            data_dir,
            events,
            fingerprint,
        })
    }

    /// Running containers of this session's image alias that run no task of ours: the idle pool.
    async fn idle_containers(&self, busy: usize) -> Result<usize> {
        let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .all(false)
            .build();
        let listed = self.bollard.list_containers(Some(options)).await?;
        let running = listed
            .iter()
            .filter(|c| c.image.as_deref() == Some(self.image.as_str()))
            .count();
        Ok(running.saturating_sub(busy))
    }

    /// Wait for the pool's first fill. `seen` is false when, after 10 s, neither Docker nor the
    /// fingerprint showed any pool container (the pool is not implemented in this build).
    async fn initial_fill(&self, target: usize) -> Result<Fill> {
        let t0 = Instant::now();
        loop {
            let idle = self.idle_containers(0).await?;
            let attr = self.fingerprint.lock().unwrap().idle;
            if idle >= target || attr.is_some_and(|n| n >= target as i64) {
                return Ok(Fill {
                    seen: true,
                    reached: true,
                    took: t0.elapsed(),
                });
            }
            let elapsed = t0.elapsed();
            if (idle == 0 && attr.is_none() && elapsed >= Duration::from_secs(10))
                || elapsed >= Duration::from_secs(120)
            {
                return Ok(Fill {
                    seen: idle > 0 || attr.is_some(),
                    reached: false,
                    took: elapsed,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Between sequential starts: wait until `target` idle containers run again, as Docker shows
    /// them or as a fingerprint sent since the wait began reports them, and at least [`SETTLE`].
    /// Without any sign of a pool (or after 3 waits that timed out) it only settles.
    async fn wait_refill(&self, target: usize, seen: bool, waits: &mut Waits) -> Result<()> {
        let settle = tokio::time::sleep(SETTLE);
        if !seen || waits.timed_out >= 3 {
            settle.await;
            waits.fallback += 1;
            return Ok(());
        }
        let t0 = Instant::now();
        let updates_before = self.fingerprint.lock().unwrap().updates;
        loop {
            let reported = {
                let fp = self.fingerprint.lock().unwrap();
                fp.updates > updates_before && fp.idle.is_some_and(|n| n >= target as i64)
            };
            if reported || self.idle_containers(0).await? >= target {
                waits.filled.push(t0.elapsed());
                settle.await;
                return Ok(());
            }
            if t0.elapsed() >= Duration::from_secs(30) {
                waits.timed_out += 1;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Alloc dir, FIFOs with logmon-like readers and the TaskConfig: everything not timed.
    fn prepare(&self, run: &Run, phase: &str, options: &TaskOptions, ttfb: bool) -> Prepared {
        let id = run.task_id(phase);
        let alloc = AllocDir::new("bench");
        let (first_tx, first_rx) = if ttfb {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let stdout = TimedFifo::start(&alloc.fifo("stdout"), first_tx);
        let stderr = TimedFifo::start(&alloc.fifo("stderr"), None);
        let config = task_config(&id, Some(alloc.root.path()), options);
        Prepared {
            id,
            alloc,
            stdout,
            stderr,
            first_byte: first_rx,
            config,
        }
    }

    /// StartTask, timed from request sent to response received.
    async fn start(&self, prepared: Prepared) -> Result<Running> {
        let mut driver = self.driver.clone();
        let request = nomad::StartTaskRequest {
            task: Some(prepared.config),
        };
        let sent_wall = SystemTime::now();
        let sent = Instant::now();
        let response = driver.start_task(request).await;
        let latency = sent.elapsed();
        let handle = response
            .with_context(|| format!("StartTask {}", prepared.id))?
            .into_inner()
            .handle
            .context("StartTask returned no handle")?;
        let state = DriverState::decode(&handle.driver_state)?;
        Ok(Running {
            id: prepared.id,
            container: state.container_id,
            _alloc: prepared.alloc,
            stdout: prepared.stdout,
            stderr: prepared.stderr,
            first_byte: prepared.first_byte,
            sent,
            sent_wall,
            latency,
        })
    }

    /// Whether the task's container was started before its StartTask was sent (a warm claim).
    async fn prestarted(&self, task: &Running) -> Option<bool> {
        let state = self.docker.inspect(&task.container).await.ok()?;
        Some(state.started_at? < task.sent_wall)
    }

    /// DestroyTask (force) and drain the FIFO readers. Not timed.
    async fn destroy(&self, task: Running) -> Result<()> {
        self.driver
            .clone()
            .destroy_task(nomad::DestroyTaskRequest {
                task_id: task.id.clone(),
                force: true,
            })
            .await
            .with_context(|| format!("DestroyTask {}", task.id))?;
        task.stdout.finish(Duration::from_secs(5)).await;
        task.stderr.finish(Duration::from_secs(5)).await;
        Ok(())
    }

    async fn wait_exit(&self, id: &str) -> Result<i64> {
        let response = tokio::time::timeout(
            Duration::from_secs(120),
            self.driver.clone().wait_task(nomad::WaitTaskRequest {
                task_id: id.to_string(),
            }),
        )
        .await
        .context("WaitTask timed out")??
        .into_inner();
        Ok(response.result.map_or(-1, |r| r.exit_code as i64))
    }

    /// What TaskEvents said about a task's start.
    fn event_kind(&self, task_id: &str) -> EventKind {
        let events = self.events.lock().unwrap();
        let mut kind = EventKind::None;
        for (_, message) in events.iter().filter(|(id, _)| id == task_id) {
            if message.contains(WARM_EVENT) {
                kind = EventKind::Warm;
            } else if message.contains(COLD_EVENT) && kind == EventKind::None {
                kind = EventKind::Cold;
            }
        }
        kind
    }

    /// Kill the plugin and remove what it left behind (idle pool containers, forwarders).
    fn close(&mut self) {
        let Some(mut plugin) = self.plugin.take() else {
            return;
        };
        plugin.kill9();
        PLUGIN_PIDS.lock().unwrap().retain(|pid| *pid != self.pid);
        // A killed plugin leaves its socket directory behind.
        if let Some(dir) = plugin.socket.parent()
            && dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("polydev-plugin-"))
        {
            let _ = std::fs::remove_dir_all(dir);
        }
        std::thread::sleep(Duration::from_millis(200));
        let left = remove_run_containers(std::slice::from_ref(&self.image));
        LEFTOVER_CONTAINERS.fetch_add(left, Ordering::Relaxed);
        stop_forwarders(&self.data_dir);
    }
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
        let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path; the result is checked.
        let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
        assert_eq!(rc, 0, "mkfifo {}", path.display());
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
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: open/close of a path we created; a failure (no reader) is fine.
    unsafe {
        let fd = libc::open(c_path.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK);
        if fd >= 0 {
            libc::close(fd);
        }
    }
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

/// Sequential StartTasks of `sh -c 'sleep 30'` (each destroyed, untimed, before the next), then
/// `ttfb_n` runs of `codex --version` timed to their first stdout byte.
async fn startup_series(
    run: &Run,
    name: &str,
    pool: Pool,
    tasks: usize,
    ttfb_n: usize,
) -> Result<Series> {
    let mut session = Session::open(run, name, &run.openai, pool).await?;
    let target = pool.target as usize;
    let fill = if target > 0 {
        Some(session.initial_fill(target).await?)
    } else {
        None
    };
    let seen = fill.as_ref().is_some_and(|f| f.seen);
    let mut waits = Waits::default();
    let mut series = Series {
        latencies: Vec::new(),
        hit_latencies: Vec::new(),
        hits: Hits::default(),
        ttfb: Vec::new(),
        ttfb_hits: Hits::default(),
        fill: None,
        waits: Waits::default(),
        fingerprint_idle: None,
        codex_output: String::new(),
    };
    let mut started = Vec::new();
    // Two discarded warm-up starts, then the measured ones.
    for i in 0..tasks + 2 {
        if target > 0 {
            session.wait_refill(target, seen, &mut waits).await?;
        } else {
            tokio::time::sleep(SETTLE).await;
        }
        let prepared = session.prepare(run, name, &sleep_task(), false);
        let task = session.start(prepared).await?;
        let prestarted = session.prestarted(&task).await;
        if i >= 2 {
            series.latencies.push(task.latency);
            if prestarted == Some(true) {
                series.hit_latencies.push(task.latency);
            }
            started.push((task.id.clone(), prestarted));
        }
        session.destroy(task).await?;
    }

    let mut ttfb_started = Vec::new();
    for _ in 0..ttfb_n {
        if target > 0 {
            session.wait_refill(target, seen, &mut waits).await?;
        } else {
            tokio::time::sleep(SETTLE).await;
        }
        let mut options = TaskOptions::new(PROVIDER, "codex", &["--version"]);
        options.work_dir = Some("/local".into());
        let prepared = session.prepare(run, name, &options, true);
        let mut task = session.start(prepared).await?;
        let prestarted = session.prestarted(&task).await;
        let first = tokio::time::timeout(
            Duration::from_secs(120),
            task.first_byte.take().context("no first-byte receiver")?,
        )
        .await
        .context("codex --version printed nothing within 120 s")?
        .context("the stdout FIFO closed without output")?;
        series.ttfb.push(first - task.sent);
        let code = session.wait_exit(&task.id).await?;
        let id = task.id.clone();
        let stdout = std::mem::replace(&mut task.stdout, TimedFifo::noop());
        session.destroy(task).await?;
        let output = stdout
            .finish(Duration::from_secs(10))
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&output).trim().to_string();
        if code != 0 || !text.contains("codex") {
            bail!("codex --version exited {code} with output {text:?}");
        }
        series.codex_output = text;
        ttfb_started.push((id, prestarted));
    }

    // Events may trail the responses by a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (id, prestarted) in started {
        series.hits.add(session.event_kind(&id), prestarted);
    }
    for (id, prestarted) in ttfb_started {
        series.ttfb_hits.add(session.event_kind(&id), prestarted);
    }
    series.fill = fill;
    series.waits = waits;
    series.fingerprint_idle = session.fingerprint.lock().unwrap().idle;
    session.close();
    Ok(series)
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

/// `n` StartTasks sent at once on one connection (as Nomad's client multiplexes them).
async fn burst(run: &Run, name: &str, pool: Pool, n: usize) -> Result<Burst> {
    let mut session = Session::open(run, name, &run.openai, pool).await?;
    let fill = session.initial_fill(pool.target as usize).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let prepared: Vec<Prepared> = (0..n)
        .map(|_| session.prepare(run, name, &sleep_task(), false))
        .collect();
    let results = futures::future::join_all(prepared.into_iter().map(|p| session.start(p))).await;
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let mut running = Vec::new();
    for result in results {
        match result {
            Ok(task) => {
                latencies.push(task.latency);
                running.push(task);
            }
            Err(err) => failures.push(format!("{err:#}")),
        }
    }
    let mut prestarted = Vec::new();
    for task in &running {
        prestarted.push((task.id.clone(), session.prestarted(task).await));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut hits = Hits::default();
    for (id, pre) in prestarted {
        hits.add(session.event_kind(&id), pre);
    }
    let destroys = futures::stream::iter(running.into_iter().map(|t| session.destroy(t)))
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    for result in destroys {
        result?;
    }
    session.close();
    Ok(Burst {
        pool: pool.target,
        latencies,
        failures,
        hits,
        fill,
    })
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

/// `VmRSS`, `RssAnon` and `VmHWM` of a process, in kB.
fn memory_kb(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"), field("VmHWM:"))
}

async fn rss(run: &Run, tasks: usize) -> Result<Rss> {
    let pool = Pool::on(polydev::config::pool::DEFAULT_TARGET, tasks as u32 + 32);
    let mut session = Session::open(run, "rss", &run.test, pool).await?;
    let fill = session.initial_fill(pool.target as usize).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_kb, _, _) = memory_kb(session.pid);

    let mut options = TaskOptions::new(PROVIDER, "sh", &["-c", "sleep 300"]);
    options.work_dir = Some("/local".into());
    let starts = futures::stream::iter((0..tasks).map(|_| {
        let prepared = session.prepare(run, "rss", &options, false);
        session.start(prepared)
    }))
    .buffer_unordered(4)
    .collect::<Vec<_>>()
    .await;
    let mut running = Vec::new();
    for start in starts {
        running.push(start?);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (loaded_kb, _, peak_kb) = memory_kb(session.pid);
    let pids = forwarders(&session.data_dir);
    let (mut forwarders_rss_kb, mut forwarders_anon_kb) = (0, 0);
    for pid in &pids {
        let (rss, anon, _) = memory_kb(*pid);
        forwarders_rss_kb += rss;
        forwarders_anon_kb += anon;
    }
    let destroys = futures::stream::iter(running.into_iter().map(|t| session.destroy(t)))
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    for result in destroys {
        result?;
    }
    session.close();
    Ok(Rss {
        idle_kb,
        loaded_kb,
        peak_kb,
        tasks,
        forwarders: pids.len(),
        forwarders_rss_kb,
        forwarders_anon_kb,
        fill,
    })
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

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

fn fill_text(fill: &Fill) -> String {
    match (fill.seen, fill.reached) {
        (true, true) => format!("pool filled in {:.1} s", fill.took.as_secs_f64()),
        (true, false) => format!(
            "pool seen but NOT filled after {:.0} s",
            fill.took.as_secs_f64()
        ),
        (false, _) => format!(
            "no pool container seen in {:.0} s (pool not in this build?)",
            fill.took.as_secs_f64()
        ),
    }
}

impl Report {
    fn table(&self) -> String {
        let mut rows: Vec<[String; 8]> = Vec::new();
        let mut series =
            |name: &str, samples: &[Duration], target: &str, verdict: &str| match Summary::of(
                samples,
            ) {
                Some(s) => rows.push([
                    name.to_string(),
                    s.n.to_string(),
                    ms(s.p50),
                    ms(s.p90),
                    ms(s.p99),
                    ms(s.max),
                    target.to_string(),
                    verdict.to_string(),
                ]),
                None => rows.push([
                    name.to_string(),
                    "0".into(),
                    "—".into(),
                    "—".into(),
                    "—".into(),
                    "—".into(),
                    target.to_string(),
                    "no samples".into(),
                ]),
            };
        let f = &self.floors;
        series(
            "Floor: docker create+start (openai image)",
            &f.create_start,
            "",
            "",
        );
        series(
            "Floor: docker exec `echo` → first output",
            &f.exec_first,
            "",
            "",
        );
        series("Floor: docker exec `echo` → exit", &f.exec_exit, "", "");
        series(
            "Floor: claim through Docker = update + send_launch_spec",
            &f.claim,
            "",
            "",
        );
        series("  … of which Docker's update", &f.update, "", "");
        series(
            "  … of which send_launch_spec (attach + write)",
            &f.launch,
            "",
            "",
        );
        series(
            "polydev's limits write (cgroup files; Docker's record follows)",
            &f.limits_write,
            "",
            "",
        );
        let cold = Summary::of(&self.cold.latencies);
        let warm = Summary::of(&self.warm.latencies);
        series("StartTask cold (pool off)", &self.cold.latencies, "", "");
        let warm_ok = warm.is_some_and(|w| w.p50 <= Duration::from_millis(25));
        series(
            &format!("StartTask warm (pool target {})", self.warm_target),
            &self.warm.latencies,
            "p50 ≤ 25 ms",
            verdict(warm_ok),
        );
        series(
            "StartTask warm, pool hits only",
            &self.warm.hit_latencies,
            "",
            "",
        );
        let b20 = Summary::of(&self.burst20.latencies);
        let b20_ok = b20.is_some_and(|b| b.p99 <= Duration::from_millis(250))
            && self.burst20.failures.is_empty();
        series(
            "Burst 20 concurrent, pool of 20",
            &self.burst20.latencies,
            "p99 ≤ 250 ms",
            verdict(b20_ok),
        );
        series(
            "Burst 20 concurrent, pool of 5",
            &self.burst5.latencies,
            "",
            "",
        );
        series("TTFB `codex --version`, cold", &self.cold.ttfb, "", "");
        series("TTFB `codex --version`, warm", &self.warm.ttfb, "", "");
        let speedup = match (cold, warm) {
            (Some(c), Some(w)) if !w.p50.is_zero() => c.p50.as_secs_f64() / w.p50.as_secs_f64(),
            _ => 0.0,
        };
        let single = |name: &str, value: String, target: &str, verdict: &str| -> [String; 8] {
            [
                name.to_string(),
                String::new(),
                value,
                String::new(),
                String::new(),
                String::new(),
                target.to_string(),
                verdict.to_string(),
            ]
        };
        rows.push(single(
            "Speed-up: cold p50 / warm p50",
            format!("{speedup:.1}×"),
            "≥ 8×",
            verdict(speedup >= 8.0),
        ));
        let r = &self.rss;
        rows.push(single(
            "Plugin VmRSS, idle (configured, pool filled)",
            mb(r.idle_kb),
            "≤ 20 MB",
            verdict(r.idle_kb <= 20 * 1024),
        ));
        rows.push(single(
            &format!("Plugin VmRSS, {} tasks running", r.tasks),
            mb(r.loaded_kb),
            "≤ 60 MB",
            verdict(r.loaded_kb <= 60 * 1024),
        ));
        rows.push(single(
            "Plugin VmHWM (peak RSS) over the RSS phase",
            mb(r.peak_kb),
            "",
            "",
        ));
        rows.push(single(
            &format!("Σ VmRSS of {} `forward-logs` processes", r.forwarders),
            mb(r.forwarders_rss_kb),
            "",
            "",
        ));
        rows.push(single(
            &format!("Σ RssAnon of {} `forward-logs` processes", r.forwarders),
            mb(r.forwarders_anon_kb),
            "",
            "",
        ));

        let mut out = String::new();
        out.push_str(&format!(
            "\n## polydev startup benchmark — commit {}, docker {}, {} CPUs, run {:.0} s\n\n",
            self.env.commit,
            self.env.docker_version,
            self.env.cpus,
            self.took.as_secs_f64()
        ));
        out.push_str(
            "| Measurement | n | p50 ms | p90 ms | p99 ms | max ms | Target | Verdict |\n",
        );
        out.push_str("|---|--:|--:|--:|--:|--:|---|---|\n");
        for row in rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out.push('\n');
        let notes = self.notes();
        for note in notes {
            out.push_str(&format!("- {note}\n"));
        }
        out
    }

    fn notes(&self) -> Vec<String> {
        let w = &self.warm;
        let waits = &w.waits;
        let wait_summary = Summary::of(&waits.filled)
            .map(|s| format!("median {} ms, max {} ms", ms(s.p50), ms(s.max)))
            .unwrap_or_else(|| "none".into());
        vec![
            format!(
                "Image: {OPENAI_IMAGE} (`codex --version` printed {:?}); tasks `sh -c 'sleep 30'`, 128 MB, 100 CPU shares; 2 discarded warm-up starts per series; p99 is nearest-rank (= max for n < 100).",
                w.codex_output
            ),
            format!("Cold series: {}.", self.cold.hits.text()),
            format!(
                "Warm series: {}; {}; fingerprint `{IDLE_ATTR}` last = {}.",
                w.hits.text(),
                w.fill.as_ref().map(fill_text).unwrap_or_default(),
                w.fingerprint_idle
                    .map_or("never reported".to_string(), |v| v.to_string())
            ),
            format!(
                "Warm refill waits before each start: {} until Docker showed {} idle containers ({wait_summary}), {} timed out (30 s), {} plain {} s settles (no pool seen); every sequential start, cold or warm, follows ≥ {} s of quiet.",
                waits.filled.len(),
                self.warm_target,
                waits.timed_out,
                waits.fallback,
                SETTLE.as_secs(),
                SETTLE.as_secs()
            ),
            format!(
                "TTFB of `codex --version` (StartTask sent → first stdout byte in the FIFO): cold {}, {}; warm {}, {}.",
                spread(&self.cold.ttfb),
                self.cold.ttfb_hits.text(),
                spread(&w.ttfb),
                w.ttfb_hits.text()
            ),
            format!(
                "Burst, pool of 20: {}; {}; {} failed{}.",
                self.burst20.hits.text(),
                fill_text(&self.burst20.fill),
                self.burst20.failures.len(),
                first_failure(&self.burst20.failures)
            ),
            format!(
                "Burst, pool of {}: {}; {}; {} failed{}.",
                self.burst5.pool,
                self.burst5.hits.text(),
                fill_text(&self.burst5.fill),
                self.burst5.failures.len(),
                first_failure(&self.burst5.failures)
            ),
            format!(
                "RSS phase: test image, pool target {}; {}; {} forwarders found for {} tasks. VmRSS of forwarders counts the shared binary pages once per process; RssAnon is their private memory.",
                polydev::config::pool::DEFAULT_TARGET,
                fill_text(&self.rss.fill),
                self.rss.forwarders,
                self.rss.tasks
            ),
            format!(
                "Claim floor: after Docker's update with polydev's body (no quota = every host CPU) a claimed container's HostConfig.NanoCpus is {:?}{}.",
                self.floors.nano_cpus_after_claim,
                if self.floors.nano_cpus_after_claim == "100000000" {
                    " — the idle 0.1-CPU quota SURVIVES the claim (the engine ignores 0 on update), so a warm task would stay throttled to 0.1 CPU unless the pool sets an explicit quota"
                } else {
                    " (the idle 0.1-CPU quota was lifted)"
                }
            ),
            format!(
                "Cleanup: the harness removed {} leftover containers (idle pool containers) after the sessions; plugins and forwarders were stopped.",
                self.leftovers
            ),
        ]
    }

    fn svg(&self) -> String {
        let row = |label: &str, samples: &[Duration]| {
            Summary::of(samples).map(|s| svg::Row {
                label: label.to_string(),
                p50: s.p50,
                p99: s.p99,
                n: s.n,
            })
        };
        let f = &self.floors;
        let sections = vec![
            svg::Section {
                title: "Floors: Docker's API, and polydev's limits write".into(),
                rows: [
                    row("create + start", &f.create_start),
                    row("exec echo → first output", &f.exec_first),
                    row("claim via Docker: update + launch spec", &f.claim),
                    row("polydev's limits write (cgroup files)", &f.limits_write),
                ]
                .into_iter()
                .flatten()
                .collect(),
            },
            svg::Section {
                title: "StartTask, sequential (request → task running)".into(),
                rows: [
                    row("cold (pool off)", &self.cold.latencies),
                    row(
                        &format!(
                            "warm (target {}, {}/{} hits)",
                            self.warm_target, self.warm.hits.prestarted, self.warm.hits.n
                        ),
                        &self.warm.latencies,
                    ),
                ]
                .into_iter()
                .flatten()
                .collect(),
            },
            svg::Section {
                title: "StartTask, 20 at once".into(),
                rows: [
                    row(
                        &format!(
                            "pool of 20 ({}/{} hits)",
                            self.burst20.hits.prestarted, self.burst20.hits.n
                        ),
                        &self.burst20.latencies,
                    ),
                    row(
                        &format!(
                            "pool of 5 ({}/{} hits)",
                            self.burst5.hits.prestarted, self.burst5.hits.n
                        ),
                        &self.burst5.latencies,
                    ),
                ]
                .into_iter()
                .flatten()
                .collect(),
            },
            svg::Section {
                title: "Time to first byte of `codex --version`".into(),
                rows: [row("cold", &self.cold.ttfb), row("warm", &self.warm.ttfb)]
                    .into_iter()
                    .flatten()
                    .collect(),
            },
        ];
        let subtitle = vec![
            format!(
                "commit {} · docker {} · {} CPUs · image {} · one run, real Docker, real plugin binary over its unix socket",
                self.env.commit, self.env.docker_version, self.env.cpus, OPENAI_IMAGE
            ),
            format!(
                "plugin RSS idle {} · with {} tasks {} · Σ RSS of {} forward-logs {} (private {})",
                mb(self.rss.idle_kb),
                self.rss.tasks,
                mb(self.rss.loaded_kb),
                self.rss.forwarders,
                mb(self.rss.forwarders_rss_kb),
                mb(self.rss.forwarders_anon_kb)
            ),
            format!(
                "pool observed in this build: {} · warm series: {}/{} starts on a pre-started container, {} \"claimed warm container\" events",
                if self.warm.fill.as_ref().is_some_and(|f| f.seen) {
                    "yes"
                } else {
                    "NO — warm = cold here"
                },
                self.warm.hits.prestarted,
                self.warm.hits.n,
                self.warm.hits.events_warm
            ),
        ];
        svg::render(
            "polydev StartTask latency: cold vs warm pool",
            &subtitle,
            &sections,
            &[
                svg::Target {
                    at: Duration::from_millis(25),
                    label: "warm p50 target 25 ms".into(),
                },
                svg::Target {
                    at: Duration::from_millis(250),
                    label: "burst p99 target 250 ms".into(),
                },
            ],
        )
    }
}

/// "median X ms, range A–B ms".
fn spread(samples: &[Duration]) -> String {
    Summary::of(samples)
        .map(|s| {
            format!(
                "median {} ms, range {}–{} ms",
                ms(s.p50),
                ms(s.min),
                ms(s.max)
            )
        })
        .unwrap_or_else(|| "no samples".into())
}

fn first_failure(failures: &[String]) -> String {
    failures
        .first()
        .map(|f| format!(" (first: {f})"))
        .unwrap_or_default()
}
