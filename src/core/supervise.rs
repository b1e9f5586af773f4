//! A task's background work: wait for its container to end and pump its output to Nomad.
//!
//! Guarantees:
//! - The exit is published only after the log pump has delivered everything the container wrote
//!   (bounded by [`PUMP_DRAIN_LIMIT`]), so when WaitTask returns, the logs are complete.
//! - Cancelling `TaskEntry::background` (plugin shutdown, DestroyTask) stops the work without
//!   touching the container; the pump's cursor lets the next plugin process resume exactly.
//! - Engine hiccups while waiting are retried with backoff; a container that disappears ends the
//!   task with an error instead of hanging WaitTask forever.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::task::JoinHandle;

use super::registry::TaskEntry;
use super::task::{ExitOutcome, LogPaths};
use super::{Core, CoreError};
use crate::logs::forward::{ForwardEnd, ForwardError, ForwardJob};

/// How long the exit waits for the log pump to finish after the container ended.
const PUMP_DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How long before its API goes away an engine that is stopping may kill containers.
const ENGINE_STOP_WINDOW: Duration = Duration::from_secs(30);
/// How long a signal death waits to see whether the engine is going away.
const ENGINE_LOSS_GRACE: Duration = Duration::from_secs(3);
/// Backoff bounds while the engine cannot answer `wait`.
const WAIT_RETRY_MIN: Duration = Duration::from_millis(200);
const WAIT_RETRY_MAX: Duration = Duration::from_secs(5);

impl Core {
    /// Spawn the waiter (and the log pump, unless log collection is off) of a started task.
    pub(super) fn spawn_supervisor(
        self: &Arc<Self>,
        task: Arc<TaskEntry>,
        secrets: Vec<SecretString>,
    ) {
        let core = self.clone();
        tokio::spawn(async move {
            let pump = task
                .state
                .logs
                .clone()
                .map(|paths| core.spawn_log_pump(&task, paths, secrets));
            let outcome = tokio::select! {
                _ = task.background.cancelled() => {
                    tracing::debug!(task_id = %task.id, "task supervisor detached");
                    return;
                }
                outcome = core.wait_for_container(&task) => outcome,
            };
            let outcome = core.blame_the_engine(&task, outcome).await;
            task.mark_container_stopped();
            task.close_broker();
            if let Some(pump) = pump {
                core.finish_pump(&task, pump).await;
            }
            tracing::info!(task_id = %task.id, exit_code = outcome.exit_code, oom_killed = outcome.oom_killed, "task exited");
            task.publish_exit(outcome);
        });
    }

    fn spawn_log_pump(
        &self,
        task: &TaskEntry,
        paths: LogPaths,
        secrets: Vec<SecretString>,
    ) -> JoinHandle<Result<ForwardEnd, ForwardError>> {
        let forwarder = self.forwarder.clone();
        let job = ForwardJob {
            container_id: task.container_id().to_string(),
            stdout: paths.stdout.into(),
            stderr: paths.stderr.into(),
            secrets,
        };
        let cancel = task.background.clone();
        tokio::spawn(async move { forwarder.forward(job, cancel).await })
    }

    async fn finish_pump(
        &self,
        task: &TaskEntry,
        mut pump: JoinHandle<Result<ForwardEnd, ForwardError>>,
    ) {
        match tokio::time::timeout(PUMP_DRAIN_LIMIT, &mut pump).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(err))) => {
                tracing::warn!(task_id = %task.id, error = %err, "log forwarding failed");
                self.publish(task, format!("log forwarding failed: {err}"));
            }
            Ok(Err(join_err)) => {
                tracing::error!(task_id = %task.id, error = %join_err, "log forwarding panicked");
            }
            Err(_) => {
                pump.abort();
                tracing::warn!(task_id = %task.id, "log forwarding did not drain in time");
                self.publish(
                    task,
                    "log forwarding stopped waiting: Nomad's log reader did not keep up",
                );
            }
        }
    }

    /// A death by signal that Nomad did not ask for, around the time the engine went away, was
    /// the engine stopping: say so (the engine stops its containers, then its API, so the
    /// death may come first; allow a few seconds for the outage to show).
    async fn blame_the_engine(&self, task: &TaskEntry, outcome: ExitOutcome) -> ExitOutcome {
        let killed = outcome.exit_code > 128 && outcome.exit_code <= 128 + 64;
        let Some(watch) = self.engine_watch.get() else {
            return outcome;
        };
        if !killed || outcome.oom_killed || task.stop_requested() {
            return outcome;
        }
        let finished_at = match self.engine.inspect(task.container_id()).await {
            Ok(state) => state.finished_at,
            Err(_) => None,
        };
        let finished_at = finished_at.unwrap_or_else(std::time::SystemTime::now);
        if watch
            .interrupted(finished_at, ENGINE_STOP_WINDOW, ENGINE_LOSS_GRACE)
            .await
        {
            tracing::warn!(task_id = %task.id, exit_code = outcome.exit_code, "the container engine stopped the task's container");
            return ExitOutcome::engine_stopped(outcome.exit_code);
        }
        outcome
    }

    /// Wait for the task's container to end, riding out engine outages.
    async fn wait_for_container(&self, task: &TaskEntry) -> ExitOutcome {
        let mut backoff = WAIT_RETRY_MIN;
        loop {
            match self.engine.wait(task.container_id()).await {
                Ok(exit) => return ExitOutcome::from_container(exit.exit_code, exit.oom_killed),
                Err(err) if err.is_not_found() => {
                    let err = CoreError::ContainerGone {
                        task: task.id.clone(),
                        container: task.container_id().to_string(),
                    };
                    return ExitOutcome::failed(err.to_string());
                }
                Err(err) => {
                    tracing::warn!(task_id = %task.id, error = %err, retry_in = ?backoff, "waiting for the container failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(WAIT_RETRY_MAX);
                }
            }
        }
    }
}
