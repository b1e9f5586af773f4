//! One timed CLI run, through polydev (StartTask over the plugin's socket, a warm or a cold
//! container) or through `docker run` (the baseline). Both are timed from the moment the start
//! is asked for: to the first request the stand-in API receives, and to the moment the canned
//! reply's text has arrived on the task's stdout.

use parking_lot::Mutex;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::canned::REPLY_TEXT;
use crate::support::real::{AllocDir, FifoReader};
use crate::support::upstream::StandIn;
use crate::support::{TaskOptions, task_config};
use anyhow::{Context, Result, bail};

use super::cli::{BASELINE_CA, BASELINE_HOME, Cli};
use super::session::Session;

/// How long one CLI run may take before the benchmark gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// A first request later than this is reported with the plugin's warnings, to say why.
const SLOW_FIRST_REQUEST: Duration = Duration::from_secs(3);

/// The timings of one run.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Start asked for → StartTask returned (or `docker run` printed nothing yet: `None`).
    pub started: Option<Duration>,
    /// Start asked for → the first request at the stand-in API.
    pub first_request: Duration,
    /// Its path (which endpoint the CLI called first).
    pub first_path: String,
    /// Start asked for → the reply's text on the task's stdout.
    pub reply_on_stdout: Duration,
    /// The start was a warm claim (polydev only).
    pub warm: bool,
}

/// Chunks of a stream with the time each arrived; readable while the writer still writes.
#[derive(Clone, Default)]
pub struct TimedStream(Arc<Mutex<(Vec<u8>, Option<Instant>)>>);

impl TimedStream {
    /// Read `source` to EOF on a thread, noting when `REPLY_TEXT` is first complete.
    pub fn follow(
        mut source: impl Read + Send + 'static,
    ) -> (TimedStream, std::thread::JoinHandle<()>) {
        let stream = TimedStream::default();
        let sink = stream.clone();
        let thread = std::thread::spawn(move || {
            let mut chunk = [0u8; 64 * 1024];
            while let Ok(n) = source.read(&mut chunk) {
                if n == 0 {
                    return;
                }
                let mut state = sink.0.lock();
                state.0.extend_from_slice(&chunk[..n]);
                if state.1.is_none() && contains(&state.0, REPLY_TEXT.as_bytes()) {
                    state.1 = Some(Instant::now());
                }
            }
        });
        (stream, thread)
    }

    pub fn reply_at(&self) -> Option<Instant> {
        self.0.lock().1
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().0).into_owned()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether `path` is one of the model endpoints (not a connectivity probe or a 404).
fn is_model_request(path: &str) -> bool {
    path.starts_with("/v1/responses")
        || path.starts_with("/v1/messages")
        || path.contains(":generateContent")
        || path.contains(":streamGenerateContent")
}

/// The first model request the stand-in received at or after `since`, waiting up to `limit`.
async fn first_request_after(
    api: &StandIn,
    since: Instant,
    limit: Duration,
) -> Option<(Instant, String)> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(first) = api
            .requests()
            .into_iter()
            .filter(|r| r.arrived >= since && is_model_request(&r.path))
            .min_by_key(|r| r.arrived)
        {
            return Some((first.arrived, first.path));
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One prompt through polydev: StartTask, the CLI's first request, the reply on stdout, exit 0.
pub async fn through_polydev(session: &Session, cli: &Cli, api: &StandIn) -> Result<Timing> {
    let alloc = AllocDir::new(cli.command);
    let stdout_fifo = alloc.fifo("stdout");
    nix::unistd::mkfifo(
        &stdout_fifo,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )?;
    let path = stdout_fifo.clone();
    let opened = std::thread::spawn(move || std::fs::File::open(path));
    let stderr = FifoReader::start(&alloc.fifo("stderr"));
    let id = crate::support::tasks::unique_id(cli.command);
    let args = cli.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut options = TaskOptions::new(cli.provider, cli.command, &args);
    options.work_dir = Some("/local".into());
    let mut task = task_config(&id, Some(alloc.root.path()), &options);
    task.name = cli.command.into();
    crate::support::set_memory_mb(&mut task, 512);

    let asked = Instant::now();
    let handle = session.start(task).await?;
    let started = asked.elapsed();
    let container = polydev::core::DriverState::decode(&handle.driver_state)
        .context("decode the task handle")?
        .container_id;
    let _guard = crate::support::tasks::ContainerGuard::new(&container);
    let file = tokio::time::timeout(
        RUN_LIMIT,
        tokio::task::spawn_blocking(move || opened.join()),
    )
    .await
    .with_context(|| format!("no log forwarder opened {}'s stdout FIFO", cli.command))??
    .expect("FIFO opener")?;
    let (stdout, reader) = TimedStream::follow(file);
    let first = first_request_after(api, asked, RUN_LIMIT).await;
    let exit = session.wait(&id, RUN_LIMIT).await;
    session.destroy(&id).await;
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    let stderr = tokio::task::spawn_blocking(move || stderr.finish_within(RUN_LIMIT)).await?;
    let stderr = String::from_utf8_lossy(
        &stderr.with_context(|| format!("{}'s stderr FIFO was never closed", cli.command))?,
    )
    .into_owned();
    let exit = exit.with_context(|| format!("{} never exited; stderr {stderr:?}", cli.command))?;
    if exit != 0 {
        bail!(
            "{} exited {exit}: stdout {:?} stderr {stderr:?}",
            cli.command,
            stdout.text()
        );
    }
    let (arrived, first_path) =
        first.with_context(|| format!("{} sent no request to the API", cli.command))?;
    let reply = stdout.reply_at().with_context(|| {
        format!(
            "{} never printed the reply: {:?}",
            cli.command,
            stdout.text()
        )
    })?;
    if arrived - asked > SLOW_FIRST_REQUEST {
        eprintln!(
            "  {}: slow first request ({:?}); plugin warnings:\n{}",
            cli.command,
            arrived - asked,
            session.log_warnings()
        );
    }
    Ok(Timing {
        started: Some(started),
        first_request: arrived - asked,
        first_path,
        reply_on_stdout: reply - asked,
        warm: session.was_warm(&id).await,
    })
}

/// One prompt the docker-driver way: `docker run` of the baseline image, key in the
/// environment, host network, pointed straight at the stand-in.
pub async fn through_docker_run(
    cli: &Cli,
    api: &StandIn,
    key: &str,
    name: &str,
    scratch: &Path,
) -> Result<Timing> {
    let home = scratch.join(name);
    std::fs::create_dir_all(&home)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777))?;
    }
    let env = cli.baseline_env(key, &api.origin(), &home)?;
    let mut command = Command::new("docker");
    command.args([
        "run",
        "--rm",
        "--name",
        name,
        "--network",
        "host",
        "--user",
        "1000:1000",
    ]);
    command.args(["--label", super::RUN_LABEL, "--memory", "512m"]);
    command
        .arg("-v")
        .arg(format!("{}:{BASELINE_HOME}", home.display()));
    command
        .arg("-v")
        .arg(format!("{}:{BASELINE_CA}:ro", api.ca_path()));
    command.args(["-w", BASELINE_HOME]);
    for variable in &env {
        command.arg("-e").arg(variable);
    }
    command.args(["--entrypoint", cli.command, &cli.baseline_image()]);
    command.args(cli.args());
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let asked = Instant::now();
    let mut child = command.spawn().context("spawn docker run")?;
    let (stdout, out_thread) = TimedStream::follow(child.stdout.take().unwrap());
    let (stderr, err_thread) = TimedStream::follow(child.stderr.take().unwrap());
    let first = first_request_after(api, asked, RUN_LIMIT).await;
    let status =
        tokio::time::timeout(RUN_LIMIT, tokio::task::spawn_blocking(move || child.wait())).await;
    let _ = Command::new("docker").args(["rm", "-f", name]).output();
    let status = status.context("docker run did not end in time")???;
    let _ = out_thread.join();
    let _ = err_thread.join();
    if !status.success() {
        bail!(
            "baseline {} failed ({status}): stdout {:?} stderr {:?}",
            cli.command,
            stdout.text(),
            stderr.text()
        );
    }
    let (arrived, first_path) =
        first.with_context(|| format!("baseline {} sent no request", cli.command))?;
    let reply = stdout.reply_at().with_context(|| {
        format!(
            "baseline {} never printed the reply: {:?}",
            cli.command,
            stdout.text()
        )
    })?;
    Ok(Timing {
        started: None,
        first_request: arrived - asked,
        first_path,
        reply_on_stdout: reply - asked,
        warm: false,
    })
}
