//! The Docker Engine adapter: implements [`ContainerEngine`] with bollard over the unix socket.
//!
//! Invariants:
//! - The API version is negotiated lazily on first use and again after a failed negotiation, so a
//!   plugin started while `dockerd` is down recovers when the daemon comes up. Debian's engine
//!   speaks API 1.41; newer engines refuse old clients, so negotiation is always on.
//! - Engine errors are classified once, in `docker::classify`: 404 → `NotFound`, 409 "not running" →
//!   `NotRunning`, other 4xx → `Rejected`, transport failures and 5xx → `Unavailable` (retryable).
//! - No bollard type leaves this module.

mod cgroup;
mod convert;

pub use convert::{LOG_DRIVER, parse_rfc3339_nanos, split_log_timestamp};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{ContainerUpdateBody, ExecConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, EventsOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, ResizeExecOptions, StatsOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OnceCell, mpsc};

use crate::engine::{
    ContainerEngine, ContainerEvent, ContainerExit, ContainerSpec, ContainerState,
    ContainerSummary, EngineError, EngineResult, ExecInput, ExecOutput, ExecSession, LogRecord,
    LogStream, ResourceLimits, StatsSample,
};

/// Seconds bollard waits for response headers. Streaming bodies (logs, wait, attach) are not cut.
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// A Docker engine reached over a unix socket.
pub struct DockerEngine {
    endpoint: String,
    /// The client, made and version-negotiated on first use (see [`negotiated`]).
    negotiated: Arc<OnceCell<Docker>>,
    /// Limits already written to cgroups, waiting to be recorded in Docker (one at a time).
    records: OnceCell<mpsc::UnboundedSender<(String, ContainerUpdateBody)>>,
    /// Whether the fall back from a direct cgroup write to Docker's update was logged.
    cgroup_fallback_logged: AtomicBool,
}

impl DockerEngine {
    /// Prepare a client for `endpoint` (`unix:///var/run/docker.sock`). Touches neither the
    /// daemon nor its socket, which may not exist yet: a plugin whose SetConfig failed would
    /// keep the Nomad agent from starting.
    pub fn connect(endpoint: &str) -> EngineResult<Self> {
        Ok(DockerEngine {
            endpoint: endpoint.to_string(),
            negotiated: Arc::new(OnceCell::new()),
            records: OnceCell::new(),
            cgroup_fallback_logged: AtomicBool::new(false),
        })
    }

    async fn client(&self) -> EngineResult<&Docker> {
        negotiated(&self.endpoint, &self.negotiated).await
    }

    /// Queue limits that are already in force for Docker's record. One worker updates Docker
    /// one container at a time: each update costs a `runc update`, and a burst of them in
    /// parallel would slow the claims still in flight.
    async fn record_later(&self, client: &Docker, id: &str, body: ContainerUpdateBody) {
        let queue = self
            .records
            .get_or_init(|| async {
                let (queue, mut pending) = mpsc::unbounded_channel::<(String, ContainerUpdateBody)>();
                let client = client.clone();
                tokio::spawn(async move {
                    while let Some((id, body)) = pending.recv().await {
                        let recorded = client.update_container(&id, body).await;
                        match recorded.map_err(|e| classify(e, "container", &id)) {
                            Ok(()) => {}
                            // The task is gone already; its limits were in force while it ran.
                            Err(err) if err.is_not_found() => {}
                            Err(err) => {
                                // The limits are in force; only `docker inspect` shows stale ones.
                                tracing::warn!(container_id = %id, error = %err, "recording a claimed container's limits in Docker failed");
                            }
                        }
                    }
                });
                queue
            })
            .await;
        let _ = queue.send((id.to_string(), body));
    }
}

/// The client of `endpoint`, made and version-negotiated once it works (tried again at every
/// call until then), so a plugin started before the engine recovers by itself.
async fn negotiated<'a>(endpoint: &str, cache: &'a OnceCell<Docker>) -> EngineResult<&'a Docker> {
    cache
        .get_or_try_init(|| async {
            let base = Docker::connect_with_unix(
                endpoint,
                REQUEST_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            )
            .map_err(|e| EngineError::Unavailable(format!("{endpoint}: {e}")))?;
            base.negotiate_version()
                .await
                .map_err(|e| classify(e, "docker", ""))
        })
        .await
}

/// CPUs of this host (the plugin runs on the node, beside the engine).
fn host_cpus() -> i64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as i64)
        .unwrap_or(1)
}

/// Write `body`'s limits into the cgroup of process `pid`, which must be container `id`'s (a
/// stale PID is harmless: its cgroup does not name the container).
async fn write_cgroups(pid: u32, id: &str, body: &ContainerUpdateBody) -> Result<(), String> {
    let (id, body) = (id.to_string(), body.clone());
    tokio::task::spawn_blocking(move || cgroup::Cgroups::of_process(pid, &id)?.apply(&body))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Whether Docker runs containers of this `HostConfig.Runtime` with runc, which keeps their
/// limits in the init process's host cgroup.
fn is_runc(runtime: Option<&str>) -> bool {
    matches!(
        runtime,
        None | Some("" | "runc" | "io.containerd.runc.v2" | "io.containerd.runtime.v1.linux")
    )
}

/// Map a bollard error to the port's error, naming the object it concerned.
fn classify(err: BollardError, kind: &'static str, id: &str) -> EngineError {
    match err {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => EngineError::NotFound {
                kind,
                id: id.to_string(),
            },
            409 if message.contains("is not running") => EngineError::NotRunning(id.to_string()),
            // `docker update` racing the container's exit answers 500 in either of these words.
            _ if message.contains("cannot update a stopped container")
                || message.contains("container not running") =>
            {
                EngineError::NotRunning(id.to_string())
            }
            400..=499 => EngineError::Rejected(message),
            _ => EngineError::Unavailable(format!("{status_code}: {message}")),
        },
        other => EngineError::Unavailable(other.to_string()),
    }
}

#[async_trait]
impl ContainerEngine for DockerEngine {
    async fn version(&self) -> EngineResult<String> {
        let version = self
            .client()
            .await?
            .version()
            .await
            .map_err(|e| classify(e, "docker", ""))?;
        Ok(version.version.unwrap_or_else(|| "unknown".to_string()))
    }

    async fn remaps_users(&self) -> EngineResult<bool> {
        let info = self
            .client()
            .await?
            .info()
            .await
            .map_err(|e| classify(e, "docker", ""))?;
        Ok(convert::remaps_users(
            info.security_options.as_deref().unwrap_or_default(),
        ))
    }

    async fn image_id(&self, image: &str) -> EngineResult<Option<String>> {
        match self.client().await?.inspect_image(image).await {
            Ok(inspected) => Ok(Some(inspected.id.unwrap_or_else(|| image.to_string()))),
            Err(e) => match classify(e, "image", image) {
                EngineError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> EngineResult<String> {
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = self
            .client()
            .await?
            .create_container(Some(options), convert::create_body(spec))
            .await
            .map_err(|e| classify(e, "image", &spec.image))?;
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> EngineResult<()> {
        self.client()
            .await?
            .start_container(id, None)
            .await
            .map_err(|e| classify(e, "container", id))
    }

    /// Writes the container's cgroup files directly, then records the limits in Docker in the
    /// background; falls back to Docker's update when the files cannot be written (see
    /// `docker::cgroup` for why).
    async fn update_limits(
        &self,
        id: &str,
        cgroup_pid: Option<u32>,
        limits: &ResourceLimits,
    ) -> EngineResult<()> {
        let client = self.client().await?;
        let body = convert::update_body(limits, host_cpus());
        match cgroup_pid {
            Some(pid) => match write_cgroups(pid, id, &body).await {
                Ok(()) => {
                    self.record_later(client, id, body).await;
                    return Ok(());
                }
                Err(reason) => {
                    if !self.cgroup_fallback_logged.swap(true, Ordering::Relaxed) {
                        tracing::info!(container_id = %id, %reason, "cannot write a claimed container's cgroup; limits go through Docker's update (slower)");
                    }
                }
            },
            None => {
                tracing::debug!(container_id = %id, "no cgroup to write (adopted, or not run by runc); limits go through Docker's update");
            }
        }
        client
            .update_container(id, body)
            .await
            .map_err(|e| classify(e, "container", id))
    }

    async fn send_launch_spec(&self, id: &str, spec: &[u8]) -> EngineResult<()> {
        let options = AttachContainerOptionsBuilder::default()
            .stdin(true)
            .stream(true)
            .stdout(false)
            .stderr(false)
            .build();
        let attached = self
            .client()
            .await?
            .attach_container(id, Some(options))
            .await
            .map_err(|e| classify(e, "container", id))?;
        let mut input = attached.input;
        let io_error = |e: std::io::Error| {
            EngineError::Unavailable(format!("writing the launch spec to {id}: {e}"))
        };
        input.write_all(spec).await.map_err(io_error)?;
        input.flush().await.map_err(io_error)?;
        // Half-close: with StdinOnce the engine then closes the container's stdin, which is the
        // entrypoint's end-of-spec signal if it never saw `end`.
        input.shutdown().await.map_err(io_error)?;
        Ok(())
    }

    async fn wait(&self, id: &str) -> EngineResult<ContainerExit> {
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut waits = self.client().await?.wait_container(id, Some(options));
        match waits.next().await {
            Some(Ok(_)) | Some(Err(BollardError::DockerContainerWaitError { .. })) | None => {}
            Some(Err(e)) => return Err(classify(e, "container", id)),
        }
        let state = self.inspect(id).await?;
        state.exit.ok_or_else(|| {
            EngineError::Unavailable(format!("container {id} reported stopped but is running"))
        })
    }

    async fn inspect(&self, id: &str) -> EngineResult<ContainerState> {
        let inspected = self
            .client()
            .await?
            .inspect_container(id, None)
            .await
            .map_err(|e| classify(e, "container", id))?;
        let state = inspected.state.unwrap_or_default();
        let host_runtime = inspected
            .host_config
            .as_ref()
            .and_then(|h| h.runtime.clone());
        let running = state.running.unwrap_or(false) || state.restarting.unwrap_or(false);
        let started_at = convert::parse_docker_time(state.started_at.as_deref());
        let init_pid = state
            .pid
            .and_then(|pid| u32::try_from(pid).ok())
            .filter(|pid| running && *pid > 0);
        let exit = (!running && started_at.is_some()).then(|| ContainerExit {
            exit_code: state.exit_code.unwrap_or(0),
            oom_killed: state.oom_killed.unwrap_or(false),
        });
        Ok(ContainerState {
            id: inspected.id.unwrap_or_else(|| id.to_string()),
            running,
            exit,
            started_at,
            finished_at: convert::parse_docker_time(state.finished_at.as_deref()),
            labels: inspected
                .config
                .and_then(|c| c.labels)
                .unwrap_or_default()
                .into_iter()
                .collect(),
            cgroup_pid: init_pid.filter(|_| is_runc(host_runtime.as_deref())),
            init_pid,
        })
    }

    /// The init process is ours if its cgroup names the container (runc; a recycled PID's does
    /// not).
    fn still_running(&self, id: &str, init_pid: u32) -> Option<bool> {
        let cgroups = std::fs::read_to_string(format!("/proc/{init_pid}/cgroup")).ok();
        Some(cgroups.is_some_and(|text| text.contains(id)))
    }

    async fn kill(&self, id: &str, signal: &str) -> EngineResult<()> {
        let options = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        self.client()
            .await?
            .kill_container(id, Some(options))
            .await
            .map_err(|e| classify(e, "container", id))
    }

    async fn remove(&self, id: &str) -> EngineResult<()> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self
            .client()
            .await?
            .remove_container(id, Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            }) if message.contains("already in progress") => Ok(()),
            Err(e) => Err(classify(e, "container", id)),
        }
    }

    fn logs(&self, id: &str, since_unix_secs: i64) -> BoxStream<'static, EngineResult<LogRecord>> {
        let id = id.to_string();
        let since = i32::try_from(since_unix_secs.max(0)).unwrap_or(i32::MAX);
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .since(since)
            .build();
        let client = match self.negotiated.get() {
            Some(client) => client.clone(),
            None => {
                let (endpoint, cache) = (self.endpoint.clone(), self.negotiated.clone());
                let stream =
                    futures::stream::once(
                        async move { negotiated(&endpoint, &cache).await.cloned() },
                    )
                    .map_ok(move |client| log_records(client, id.clone(), options.clone()))
                    .try_flatten();
                return stream.boxed();
            }
        };
        log_records(client, id, options)
    }

    async fn stats(&self, id: &str) -> EngineResult<StatsSample> {
        let options = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stats = self.client().await?.stats(id, Some(options));
        match stats.next().await {
            Some(Ok(response)) => Ok(convert::stats_sample(&response)),
            Some(Err(e)) => Err(classify(e, "container", id)),
            None => Err(EngineError::NotRunning(id.to_string())),
        }
    }

    fn events(
        &self,
        label_key: &str,
        label_value: &str,
    ) -> BoxStream<'static, EngineResult<ContainerEvent>> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![format!("{label_key}={label_value}")],
            ),
        ]);
        let options = EventsOptionsBuilder::default().filters(&filters).build();
        let (endpoint, cache) = (self.endpoint.clone(), self.negotiated.clone());
        futures::stream::once(async move { negotiated(&endpoint, &cache).await.cloned() })
            .map_ok(move |client| {
                client
                    .events(Some(options.clone()))
                    .filter_map(|item| async move {
                        match item {
                            Ok(message) => convert::container_event(&message).map(Ok),
                            Err(e) => Some(Err(classify(e, "docker", ""))),
                        }
                    })
                    .boxed()
            })
            .try_flatten()
            .boxed()
    }

    async fn list(
        &self,
        label_key: &str,
        label_value: &str,
    ) -> EngineResult<Vec<ContainerSummary>> {
        let filters = HashMap::from([("label", vec![format!("{label_key}={label_value}")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let listed = self
            .client()
            .await?
            .list_containers(Some(options))
            .await
            .map_err(|e| classify(e, "docker", ""))?;
        Ok(listed
            .into_iter()
            .map(|c| ContainerSummary {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                image: c.image.unwrap_or_default(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                created_at: std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(c.created.unwrap_or(0).max(0) as u64),
            })
            .collect())
    }

    async fn exec(
        &self,
        id: &str,
        user: &str,
        argv: Vec<String>,
        tty: bool,
    ) -> EngineResult<ExecSession> {
        let client = self.client().await?.clone();
        let config = ExecConfig {
            cmd: Some(argv),
            user: Some(user.to_string()),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(tty),
            ..Default::default()
        };
        let exec_id = client
            .create_exec(id, config)
            .await
            .map_err(|e| classify(e, "container", id))?
            .id;
        let started = client
            .start_exec(
                &exec_id,
                Some(StartExecOptions {
                    detach: false,
                    tty,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| classify(e, "exec", &exec_id))?;
        let StartExecResults::Attached { output, mut input } = started else {
            return Err(EngineError::Rejected("exec started detached".to_string()));
        };
        let (input_tx, mut input_rx) = tokio::sync::mpsc::channel::<ExecInput>(16);
        let resize_client = client.clone();
        let resize_id = exec_id.clone();
        tokio::spawn(async move {
            while let Some(message) = input_rx.recv().await {
                match message {
                    ExecInput::Stdin(data) => {
                        if input.write_all(&data).await.is_err() {
                            break;
                        }
                    }
                    ExecInput::CloseStdin => {
                        let _ = input.shutdown().await;
                    }
                    ExecInput::Resize { height, width } => {
                        let size = ResizeExecOptions {
                            h: i32::from(height),
                            w: i32::from(width),
                        };
                        let _ = resize_client.resize_exec(&resize_id, size).await;
                    }
                }
            }
        });
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let exec_for_output = exec_id.clone();
        let output = output
            .map(move |item| match item {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    Some(Ok(ExecOutput::Stdout(message)))
                }
                Ok(LogOutput::StdErr { message }) => Some(Ok(ExecOutput::Stderr(message))),
                Ok(LogOutput::StdIn { .. }) => None,
                Err(e) => Some(Err(classify(e, "exec", &exec_for_output))),
            })
            .chain(futures::stream::once(async move {
                let _ = done_tx.send(());
                None
            }))
            .filter_map(futures::future::ready)
            .boxed();
        let exit_code = async move {
            let _ = done_rx.await;
            let inspected = client
                .inspect_exec(&exec_id)
                .await
                .map_err(|e| classify(e, "exec", &exec_id))?;
            Ok(inspected.exit_code.unwrap_or(-1))
        }
        .boxed();
        Ok(ExecSession {
            output,
            input: input_tx,
            exit_code,
        })
    }
}

fn log_records(
    client: Docker,
    id: String,
    options: bollard::query_parameters::LogsOptions,
) -> BoxStream<'static, EngineResult<LogRecord>> {
    let id_for_errors = id.clone();
    client
        .logs(&id, Some(options))
        .filter_map(move |item| {
            let id = id_for_errors.clone();
            async move {
                let (stream, frame) = match item {
                    Ok(LogOutput::StdOut { message }) => (LogStream::Stdout, message),
                    Ok(LogOutput::StdErr { message }) => (LogStream::Stderr, message),
                    Ok(_) => return None,
                    Err(e) => return Some(Err(classify(e, "container", &id))),
                };
                Some(match split_log_timestamp(&frame) {
                    Some((timestamp_nanos, bytes)) => Ok(LogRecord {
                        stream,
                        timestamp_nanos,
                        bytes,
                    }),
                    None => Err(EngineError::Rejected(format!(
                        "container {id}: log frame without a timestamp"
                    ))),
                })
            }
        })
        .boxed()
}
