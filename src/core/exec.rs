//! ExecTask and ExecTaskStreaming: run a command inside a running task's container.
//!
//! The command runs as the task's user (`security.task_uid:task_gid`) with the container's
//! creation-time environment, which holds no credential: only the task's PID 1 received those
//! through the launch spec.

use std::time::Duration;

use futures::StreamExt;

use super::{Core, CoreError};
use crate::container_parts::task_user;
use crate::engine::{ExecOutput, ExecSession};

/// Output of a command run to completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i64,
}

impl Core {
    /// Start `argv` inside the task's container and stream its I/O.
    pub async fn exec_streaming(
        &self,
        id: &str,
        argv: Vec<String>,
        tty: bool,
    ) -> Result<ExecSession, CoreError> {
        let task = self.task(id)?;
        if task.container_has_stopped() {
            return Err(CoreError::NotRunning(id.to_string()));
        }
        Ok(self
            .engine
            .exec(
                task.container_id(),
                &task_user(&self.settings.config.security),
                argv,
                tty,
            )
            .await?)
    }

    /// Run `argv` to completion (script checks); output past `timeout` is abandoned.
    pub async fn exec_collect(
        &self,
        id: &str,
        argv: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecResult, CoreError> {
        let session = self.exec_streaming(id, argv, false).await?;
        let _ = session
            .input
            .send(crate::engine::ExecInput::CloseStdin)
            .await;
        let run = async move {
            let mut output = session.output;
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            while let Some(chunk) = output.next().await {
                match chunk? {
                    ExecOutput::Stdout(bytes) => stdout.extend_from_slice(&bytes),
                    ExecOutput::Stderr(bytes) => stderr.extend_from_slice(&bytes),
                }
            }
            let exit_code = session.exit_code.await?;
            Ok::<_, CoreError>(ExecResult {
                stdout,
                stderr,
                exit_code,
            })
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(CoreError::Runtime(crate::engine::EngineError::Unavailable(
                format!("command did not finish within {timeout:?}"),
            ))),
        }
    }
}
