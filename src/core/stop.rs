//! StopTask, SignalTask and DestroyTask.
//!
//! Stop follows Nomad's contract (nomad-protocol.md §5.3): send the task's `kill_signal`
//! (SIGTERM when empty), wait up to the timeout Nomad passes, then SIGKILL. Stop and Destroy are
//! idempotent: unknown, exited or already-removed tasks are success.

use std::time::Duration;

use super::{Core, CoreError};
use crate::engine::EngineError;

/// How long Stop waits for the exit to be recorded after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(15);
/// How long a forced DestroyTask waits for the killed task's exit to be recorded.
const DESTROY_EXIT_GRACE: Duration = Duration::from_secs(5);

/// Signals a task may be sent, by their conventional names.
const SIGNALS: &[&str] = &[
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// Normalise a signal name (`hup`, `SIGHUP`, `HUP`) to `SIGHUP`, or reject it.
pub fn normalize_signal(name: &str) -> Result<String, CoreError> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    if SIGNALS.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(CoreError::InvalidSignal(name.to_string()))
    }
}

/// Signalling a container that has just ended or vanished is not an error for stop/destroy.
fn ignore_gone(result: Result<(), EngineError>) -> Result<(), CoreError> {
    match result {
        Ok(()) | Err(EngineError::NotRunning(_)) | Err(EngineError::NotFound { .. }) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

impl Core {
    /// Stop a task: `signal` (default SIGTERM), then SIGKILL after `timeout`.
    pub async fn stop_task(
        &self,
        id: &str,
        timeout: Duration,
        signal: &str,
    ) -> Result<(), CoreError> {
        let Some(task) = self.tasks.get(id) else {
            return Ok(());
        };
        if task.container_has_stopped() {
            return Ok(());
        }
        // A task being stopped gets no more API answers.
        task.mark_stop_requested();
        task.close_broker();
        let signal = if signal.is_empty() {
            "SIGTERM".to_string()
        } else {
            normalize_signal(signal)?
        };
        ignore_gone(self.engine.kill(task.container_id(), &signal).await)?;
        if tokio::time::timeout(timeout, task.wait_container_stopped())
            .await
            .is_ok()
        {
            return Ok(());
        }
        tracing::info!(task_id = %id, ?timeout, "task ignored {signal}; sending SIGKILL");
        self.publish(
            &task,
            format!("task did not exit within {timeout:?} of {signal}; sent SIGKILL"),
        );
        ignore_gone(self.engine.kill(task.container_id(), "SIGKILL").await)?;
        let _ = tokio::time::timeout(KILL_GRACE, task.wait_container_stopped()).await;
        Ok(())
    }

    /// Deliver a signal to the task's PID 1.
    pub async fn signal_task(&self, id: &str, signal: &str) -> Result<(), CoreError> {
        let task = self.task(id)?;
        let signal = normalize_signal(signal)?;
        task.mark_stop_requested();
        match self.engine.kill(task.container_id(), &signal).await {
            Ok(()) => Ok(()),
            Err(EngineError::NotRunning(_)) | Err(EngineError::NotFound { .. }) => {
                Err(CoreError::NotRunning(id.to_string()))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Forget a task and remove its container; with `force`, kill it first if it still runs.
    pub async fn destroy_task(&self, id: &str, force: bool) -> Result<(), CoreError> {
        let Some(task) = self.tasks.get(id) else {
            return Ok(());
        };
        if task.exit().is_none() {
            let running = match self.engine.inspect(task.container_id()).await {
                Ok(state) => state.running,
                Err(err) if err.is_not_found() => false,
                Err(err) => return Err(err.into()),
            };
            if running && !force {
                return Err(CoreError::StillRunning(id.to_string()));
            }
            task.mark_stop_requested();
            if running {
                ignore_gone(self.engine.kill(task.container_id(), "SIGKILL").await)?;
                let _ =
                    tokio::time::timeout(DESTROY_EXIT_GRACE, task.wait_container_stopped()).await;
            }
        }
        task.background.cancel();
        task.close_broker();
        // Any WaitTask still blocked on this task must return.
        task.publish_exit(super::ExitOutcome::failed(
            "task was destroyed before it exited",
        ));
        match self.engine.remove(task.container_id()).await {
            Ok(()) => {}
            Err(err) if err.is_not_found() => {}
            Err(err) => return Err(err.into()),
        }
        self.forwarder.discard(task.container_id()).await;
        task.release_pool_hold();
        self.tasks.remove(id);
        tracing::info!(task_id = %id, container_id = %task.container_id(), "task destroyed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_normalise() {
        assert_eq!(normalize_signal("hup").unwrap(), "SIGHUP");
        assert_eq!(normalize_signal("SIGUSR1").unwrap(), "SIGUSR1");
        assert_eq!(normalize_signal(" term ").unwrap(), "SIGTERM");
        assert!(normalize_signal("SIGNOPE").is_err());
        assert!(normalize_signal("").is_err());
        assert!(normalize_signal("9").is_err());
    }
}
