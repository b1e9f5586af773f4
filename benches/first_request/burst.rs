//! Bursts: `n` StartTasks at once against a pool whose target is smaller than `n`, next to `n`
//! concurrent `docker run -d` of the baseline image; and the pool's size over the whole time,
//! sampled from what the plugin reports to Nomad.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::support::real::{AllocDir, FifoReader};
use crate::support::{TaskOptions, task_config};
use anyhow::{Context, Result, bail};
use tokio_util::sync::CancellationToken;

use super::cli::Cli;
use super::session::Session;

/// What one burst measured.
pub struct Burst {
    pub label: String,
    /// StartTask (or `docker run -d`) latency of each task.
    pub starts: Vec<Duration>,
    /// From the same moment to the task's end (its CLI done; for polydev, its output delivered
    /// too): with CPU-heavy tasks, what a burst's users wait for.
    pub exited: Vec<Duration>,
    /// How many were warm claims (polydev only).
    pub warm: usize,
}

/// The pool's idle count over time: (since the session's clock began, idle containers).
#[derive(Clone, Default)]
pub struct Timeline(Arc<Mutex<Vec<(Duration, i64)>>>);

impl Timeline {
    /// Sample `provider`'s reported idle count every 250 ms until `stop`.
    pub fn sample(
        &self,
        session: Arc<Session>,
        provider: &'static str,
        clock: Instant,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let points = self.0.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                if let Some(idle) = session.reported_idle(provider).await {
                    points.lock().push((clock.elapsed(), idle));
                }
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        })
    }

    pub fn points(&self) -> Vec<(Duration, i64)> {
        self.0.lock().clone()
    }
}

/// `n` concurrent StartTasks of `cli --version`; waits for every task's end and destroys it.
pub async fn polydev_burst(
    session: &Arc<Session>,
    cli: &'static Cli,
    n: usize,
    label: &str,
) -> Result<Burst> {
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..n {
        let session = session.clone();
        runs.spawn(async move { one_task(&session, cli).await });
    }
    let (mut starts, mut exited) = (Vec::new(), Vec::new());
    let mut warm = 0;
    let mut failures = Vec::new();
    while let Some(joined) = runs.join_next().await {
        match joined.context("a burst task panicked")? {
            Ok(task) => {
                starts.push(task.started);
                exited.push(task.exited);
                warm += usize::from(task.warm);
            }
            Err(err) => failures.push(format!("{err:#}")),
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {n} tasks of {label} failed: {}",
            failures.len(),
            failures.join("; ")
        );
    }
    Ok(Burst {
        label: label.to_string(),
        starts,
        exited,
        warm,
    })
}

/// One burst task: when StartTask returned and when the task ended, from the moment it was
/// asked for.
struct TaskTimes {
    started: Duration,
    exited: Duration,
    warm: bool,
}

async fn one_task(session: &Session, cli: &Cli) -> Result<TaskTimes> {
    let alloc = AllocDir::new(cli.command);
    let (stdout, stderr) = (
        FifoReader::start(&alloc.fifo("stdout")),
        FifoReader::start(&alloc.fifo("stderr")),
    );
    // The id names the task, and the task names its FIFOs: it must be the AllocDir's name.
    let id = crate::support::tasks::unique_id(cli.command);
    let mut task = task_config(
        &id,
        Some(alloc.root.path()),
        &TaskOptions::new(cli.provider, cli.command, &["--version"]),
    );
    task.name = cli.command.into();
    crate::support::set_memory_mb(&mut task, 512);
    let asked = Instant::now();
    let handle = session.start(task).await?;
    let took = asked.elapsed();
    let container = polydev::core::DriverState::decode(&handle.driver_state)?.container_id;
    let _guard = crate::support::tasks::ContainerGuard::new(&container);
    let warm = session.was_warm(&id).await;
    let exit = session.wait(&id, Duration::from_secs(120)).await;
    let exited = asked.elapsed();
    session.destroy(&id).await;
    let limit = Duration::from_secs(30);
    let drained = tokio::task::spawn_blocking(move || {
        (stdout.finish_within(limit), stderr.finish_within(limit))
    })
    .await
    .context("a FIFO reader panicked")?;
    match (exit, drained) {
        (Some(0), (Some(_), Some(_))) => Ok(TaskTimes {
            started: took,
            exited,
            warm,
        }),
        (Some(0), _) => bail!(
            "task {id} exited 0 but its log FIFOs were not closed within {limit:?}; its events: {:?}; plugin log:\n{}",
            session.events_of(&id),
            session.log_warnings()
        ),
        (other, _) => bail!(
            "task {id} ended with {other:?}; its events: {:?}",
            session.events_of(&id)
        ),
    }
}

/// `n` concurrent `docker run -d` of the baseline image running `cli --version`, each timed until
/// the command returned (the container is started); then all are waited for and removed.
pub async fn docker_burst(cli: &Cli, n: usize, run_id: &str, label: &str) -> Result<Burst> {
    let image = cli.baseline_image();
    let mut runs = tokio::task::JoinSet::new();
    for index in 0..n {
        let name = format!("polydev-bench-{run_id}-{label}-{index}");
        let (image, command) = (image.clone(), cli.command);
        runs.spawn_blocking(move || {
            let asked_at = SystemTime::now();
            let asked = Instant::now();
            let output = std::process::Command::new("docker")
                .args([
                    "run",
                    "-d",
                    "--name",
                    &name,
                    "--label",
                    super::RUN_LABEL,
                    "--network",
                    "none",
                    "--memory",
                    "512m",
                    "--user",
                    "1000:1000",
                    "--entrypoint",
                    command,
                    &image,
                    "--version",
                ])
                .output();
            (asked.elapsed(), asked_at, name, output)
        });
    }
    let mut starts = Vec::new();
    let mut names = Vec::new();
    let mut asked_at = Vec::new();
    let mut failures = Vec::new();
    while let Some(joined) = runs.join_next().await {
        let (took, at, name, output) = joined.context("a docker run thread panicked")?;
        asked_at.push(at);
        names.push(name);
        match output {
            Ok(out) if out.status.success() => starts.push(took),
            Ok(out) => failures.push(String::from_utf8_lossy(&out.stderr).trim().to_string()),
            Err(err) => failures.push(err.to_string()),
        }
    }
    let mut wait = std::process::Command::new("docker");
    wait.arg("wait").args(&names);
    let _ = tokio::task::spawn_blocking(move || wait.output()).await;
    let mut inspect = std::process::Command::new("docker");
    inspect
        .args(["inspect", "-f", "{{.State.FinishedAt}}"])
        .args(&names);
    let finished = tokio::task::spawn_blocking(move || inspect.output())
        .await?
        .context("docker inspect")?;
    let exited = String::from_utf8_lossy(&finished.stdout)
        .lines()
        .zip(&asked_at)
        .filter_map(|(at, asked)| {
            let nanos = polydev::docker::parse_rfc3339_nanos(at.trim())?;
            let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).ok()?);
            at.duration_since(*asked).ok()
        })
        .collect();
    let mut remove = std::process::Command::new("docker");
    remove.args(["rm", "-f"]).args(&names);
    let _ = tokio::task::spawn_blocking(move || remove.output()).await;
    if !failures.is_empty() {
        bail!(
            "{} of {n} docker runs failed: {}",
            failures.len(),
            failures.join("; ")
        );
    }
    Ok(Burst {
        label: label.to_string(),
        starts,
        exited,
        warm: 0,
    })
}
