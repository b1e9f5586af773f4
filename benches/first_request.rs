//! What a user waits for: from StartTask to the moment the CLI's first request reaches the
//! model's API, and to the moment the reply's text is on the task's stdout. One run, one
//! machine, real Docker, the real plugin binary over its unix socket, the real CLIs in the
//! shipped images, and a local HTTPS stand-in for each provider's API that records when each
//! request arrives (the real APIs are unreachable here). It prints tables, writes
//! `benches/first_request.svg` and `benches/first_request_pool.svg`, and never asserts on a
//! timing.
//!
//! Reproduce (as root, Docker running; about 15 minutes on 2 cores):
//!
//! ```sh
//! cargo bench --bench first_request
//! ```
//!
//! It runs `containers/build-images.sh` and `containers/build-images.sh --baseline` first
//! (idempotent; `BENCH_NO_BUILD=1` uses the images as they are). What it measures, in order:
//! 1. Per CLI, `BENCH_RUNS` rounds (after one uncounted round that fills the page cache), each
//!    a prompt three ways in turn: through polydev from a warm container (pool target 1),
//!    through polydev cold (pool off), and the baseline: `docker run` of `polydev-<provider>-baseline` — the original recipe,
//!    Debian's Node 20 plus the npm package at the same CLI version — with the key in its
//!    environment and the host network, as Nomad's docker driver would run it. The baseline gets
//!    the same switches against telemetry and update checks as polydev's launch.
//! 2. Bursts with the pool's target at 2 (`BENCH_BURST_PROVIDER`, default anthropic): 20
//!    concurrent `docker run -d` of the baseline image and 20 StartTasks (`<cli> --version`);
//!    `BENCH_GAP` (60) seconds after that burst began, a second burst of 20; then, on a fresh
//!    plugin, 50 of each. StartTask p50/p90/p99, how many were warm, and the pool's idle count
//!    over the whole time.
//!
//! `BENCH_BURSTS=0` leaves the bursts out; `BENCH_COLD_PARALLELISM` sets the plugin's
//! `cold_start_parallelism` (0, the default: four per CPU).
//!
//! Everything the run starts carries the label `io.polydev.bench=first-request` or belongs to one
//! of its plugins' data dirs, and is removed at the end, on error, on Ctrl-C and on SIGTERM.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "first_request/burst.rs"]
mod burst;
#[path = "first_request/cli.rs"]
mod cli;
#[path = "first_request/report.rs"]
mod report;
#[path = "first_request/runs.rs"]
mod runs;
#[path = "first_request/session.rs"]
mod session;
// Shared with the startup benchmark, which reads every field.
#[allow(dead_code)]
#[path = "startup/stats.rs"]
mod stats;
#[path = "startup/svg.rs"]
mod svg;

use parking_lot::Mutex;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cli::{CLIS, Cli};
use session::{PoolSetting, Session};
use support::upstream::StandIn;
use tokio_util::sync::CancellationToken;

/// The label of every container the baseline starts.
pub const RUN_LABEL: &str = "io.polydev.bench=first-request";
/// Plugins this run spawned, and their data dirs (killed and cleaned up on Ctrl-C or SIGTERM).
pub static PLUGIN_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
pub static DATA_DIRS: Mutex<Vec<std::path::PathBuf>> = Mutex::new(Vec::new());
/// Quiet time before each sequential run, so the previous task's teardown never overlaps it.
const SETTLE: Duration = Duration::from_secs(1);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        tokio::spawn(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut interrupt), Ok(mut terminate)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            eprintln!("interrupted: cleaning up");
            for pid in PLUGIN_PIDS.lock().iter() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            for data_dir in DATA_DIRS.lock().iter() {
                session::remove_everything_of(data_dir);
            }
            remove_labelled_containers();
            std::process::exit(130);
        });
        bench().await
    });
    // A thread stuck in a blocking call (a FIFO that never got its writer) must not keep the
    // run from ending and saying why.
    runtime.shutdown_timeout(Duration::from_secs(10));
    remove_labelled_containers();
    if let Err(err) = result {
        eprintln!("benchmark failed: {err:#}");
        std::process::exit(1);
    }
}

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn remove_labelled_containers() {
    let listed = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={RUN_LABEL}")])
        .output();
    if let Ok(out) = listed {
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}

fn build_images() -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("containers/build-images.sh");
    for extra in [&[][..], &["--baseline"][..]] {
        let status = std::process::Command::new("bash")
            .arg(&script)
            .args(extra)
            .status()
            .context("run containers/build-images.sh")?;
        if !status.success() {
            bail!("containers/build-images.sh {extra:?} failed");
        }
    }
    Ok(())
}

/// The installed CLI version in `image` (its `POLYDEV_CLI_VERSION`, or the image's label).
fn cli_version(image: &str) -> String {
    let out = std::process::Command::new("docker")
        .args([
            "image",
            "inspect",
            "-f",
            "{{range .Config.Env}}{{println .}}{{end}}",
            image,
        ])
        .output();
    out.ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("POLYDEV_CLI_VERSION=").map(str::to_string))
        })
        .unwrap_or_else(|| "?".into())
}

/// The series of one CLI: warm, cold and the baseline.
pub struct CliSeries {
    pub cli: &'static Cli,
    pub version: String,
    pub warm: Vec<runs::Timing>,
    pub cold: Vec<runs::Timing>,
    pub baseline: Vec<runs::Timing>,
}

async fn bench() -> Result<()> {
    let n = knob("BENCH_RUNS", 5);
    let gap = Duration::from_secs(knob("BENCH_GAP", 60) as u64);
    let burst_provider =
        std::env::var("BENCH_BURST_PROVIDER").unwrap_or_else(|_| "anthropic".into());
    let burst_cli: &'static Cli = CLIS
        .iter()
        .find(|c| c.provider == burst_provider)
        .with_context(|| {
            format!("BENCH_BURST_PROVIDER={burst_provider}: want openai, anthropic or google")
        })?;
    let begun = Instant::now();
    if std::env::var_os("BENCH_NO_BUILD").is_none() {
        build_images()?;
    }
    let root = tempfile::Builder::new()
        .prefix("polydev-bench-fr")
        .tempdir()?;
    let key = support::tasks::test_key();
    let api = StandIn::start(support::canned::canned).await;
    let scratch = root.path().join("baseline-homes");

    let mut series: Vec<CliSeries> = CLIS
        .iter()
        .map(|cli| CliSeries {
            cli,
            version: cli_version(&cli.image()),
            warm: Vec::new(),
            cold: Vec::new(),
            baseline: Vec::new(),
        })
        .collect();

    eprintln!(
        "[1/2] prompts: warm, cold and docker run in turn ({n} each per CLI, after one uncounted round)"
    );
    // The three ways take turns, so a change in the machine's load hits all of them alike.
    let pools: Vec<(&str, PoolSetting)> = CLIS
        .iter()
        .map(|c| (c.provider, PoolSetting { target: 1, max: 64 }))
        .collect();
    let warm = Session::open(root.path(), "warm", &key, &api, &pools).await?;
    let cold = Session::open(root.path(), "cold", &key, &api, &[]).await?;
    for entry in &mut series {
        for round in 0..=n {
            warm.wait_for_idle(entry.cli.provider, 1, Duration::from_secs(120))
                .await?;
            tokio::time::sleep(SETTLE).await;
            let timing = runs::through_polydev(&warm, entry.cli, &api).await?;
            eprintln!("  {} warm: {timing:?}", entry.cli.command);
            if round > 0 {
                entry.warm.push(timing);
            }
            tokio::time::sleep(SETTLE).await;
            let timing = runs::through_polydev(&cold, entry.cli, &api).await?;
            eprintln!("  {} cold: {timing:?}", entry.cli.command);
            if round > 0 {
                entry.cold.push(timing);
            }
            tokio::time::sleep(SETTLE).await;
            let name = format!(
                "polydev-bench-baseline-{}-{}-{round}",
                std::process::id(),
                entry.cli.command
            );
            let timing = runs::through_docker_run(entry.cli, &api, &key, &name, &scratch).await?;
            eprintln!("  {} docker run: {timing:?}", entry.cli.command);
            if round > 0 {
                entry.baseline.push(timing);
            }
        }
    }
    drop((warm, cold));

    eprintln!(
        "[2/2] bursts of {} with the pool's target at 2",
        burst_cli.command
    );
    let run_id = std::process::id().to_string();
    let clock = Instant::now();
    let timeline = burst::Timeline::default();
    let mut bursts = Vec::new();
    let mut marks = Vec::new();
    let sizes: &[(usize, bool)] = if knob("BENCH_BURSTS", 1) == 0 {
        &[]
    } else {
        &[(20, true), (50, false)]
    };
    for &(size, second) in sizes {
        let pools = [(burst_cli.provider, PoolSetting { target: 2, max: 64 })];
        let session = Arc::new(
            Session::open(root.path(), &format!("burst{size}"), &key, &api, &pools).await?,
        );
        session
            .wait_for_idle(burst_cli.provider, 2, Duration::from_secs(120))
            .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let stop = CancellationToken::new();
        let sampler = timeline.sample(session.clone(), burst_cli.provider, clock, stop.clone());
        marks.push((clock.elapsed(), format!("docker run ×{size}")));
        bursts.push(
            burst::docker_burst(burst_cli, size, &run_id, &format!("docker-run-{size}")).await?,
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        let first_began = Instant::now();
        marks.push((clock.elapsed(), format!("polydev ×{size}")));
        bursts.push(
            burst::polydev_burst(&session, burst_cli, size, &format!("polydev-{size}")).await?,
        );
        if second {
            tokio::time::sleep(gap.saturating_sub(first_began.elapsed())).await;
            marks.push((clock.elapsed(), format!("polydev ×{size} again")));
            bursts.push(
                burst::polydev_burst(
                    &session,
                    burst_cli,
                    size,
                    &format!("polydev-{size}-again-after-{}s", gap.as_secs()),
                )
                .await?,
            );
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        stop.cancel();
        let _ = sampler.await;
    }

    let report = report::Report {
        series,
        bursts,
        timeline: timeline.points(),
        marks,
        burst_cli: burst_cli.command,
        took: begun.elapsed(),
    };
    println!("{}", report.table());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches");
    std::fs::write(dir.join("first_request.svg"), report.chart())?;
    println!("chart: benches/first_request.svg");
    if !report.timeline.is_empty() {
        std::fs::write(dir.join("first_request_pool.svg"), report.pool_chart())?;
        println!("chart: benches/first_request_pool.svg");
    }
    Ok(())
}
