//! StartTask: resolve credentials, get a started container, hand over the launch spec.
//!
//! Order matters: everything that can fail without side effects (duplicate id, credentials) is
//! checked before a container exists; once one exists, any failure removes it again.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use secrecy::SecretString;

use super::container::task_container;
use super::launch::LaunchSpec;
use super::store::TaskEntry;
use super::task::{DriverState, TaskSpec};
use super::{Core, CoreError};
use crate::credentials::CredentialKey;
use crate::runtime::RuntimeError;

/// What StartTask hands back to Nomad.
#[derive(Debug, Clone)]
pub struct StartedTask {
    pub container_id: String,
    pub driver_state: DriverState,
}

impl Core {
    /// Start `task` as PID 1 of a fresh container; returns once the command has been handed over.
    pub async fn start_task(self: &Arc<Self>, task: TaskSpec) -> Result<StartedTask, CoreError> {
        if self.tasks.contains(&task.id) {
            return Err(CoreError::DuplicateTask(task.id));
        }
        let key = CredentialKey {
            namespace: task.namespace.clone(),
            user_id: task.config.user_id.clone(),
            provider: task.config.provider.clone(),
        };
        let credentials = self.credentials.resolve(
            &key,
            &task.config.credentials,
            &task.config.optional_credentials,
        )?;

        let container_id = self.create_started_container(&task).await?;
        let launch = launch_spec(&task, credentials.clone());
        if let Err(err) = self
            .runtime
            .send_launch_spec(&container_id, &launch.encode())
            .await
        {
            self.discard_container(&container_id).await;
            return Err(err.into());
        }

        let started_at = SystemTime::now();
        let driver_state = DriverState {
            container_id: container_id.clone(),
            provider: task.config.provider.clone(),
            namespace: task.namespace.clone(),
            user_id: task.config.user_id.clone(),
            started_at_unix_nanos: unix_nanos(started_at),
            logs: task.logs.clone(),
            redacted_variables: credentials.iter().map(|(name, _)| name.clone()).collect(),
        };
        let entry = TaskEntry::new(
            task.id.clone(),
            task.name.clone(),
            task.alloc_id.clone(),
            driver_state.clone(),
            started_at,
            &self.shutdown,
        );
        let entry = match self.tasks.insert(entry) {
            Ok(entry) => entry,
            Err(_) => {
                // A concurrent StartTask with the same id won the race.
                self.discard_container(&container_id).await;
                return Err(CoreError::DuplicateTask(task.id));
            }
        };
        let secrets = credentials.into_iter().map(|(_, value)| value).collect();
        self.spawn_supervisor(entry, secrets);
        tracing::info!(task_id = %task.id, container_id = %container_id, provider = %task.config.provider, "task started");
        Ok(StartedTask {
            container_id,
            driver_state,
        })
    }

    /// Create and start the task's container (cold start). The warm pool slots in here.
    async fn create_started_container(&self, task: &TaskSpec) -> Result<String, CoreError> {
        let spec = task_container(task, &self.settings.config, &self.settings.node);
        let container_id = self.runtime.create(&spec).await.map_err(|err| match err {
            RuntimeError::NotFound { kind: "image", .. } => CoreError::ImageMissing {
                image: spec.image.clone(),
                provider: task.config.provider.clone(),
            },
            other => other.into(),
        })?;
        if let Err(err) = self.runtime.start(&container_id).await {
            self.discard_container(&container_id).await;
            return Err(err.into());
        }
        Ok(container_id)
    }

    /// Best-effort removal of a container that will never run a task.
    pub(super) async fn discard_container(&self, container_id: &str) {
        if let Err(err) = self.runtime.remove(container_id).await
            && !err.is_not_found()
        {
            tracing::warn!(container_id, error = %err, "could not remove container");
        }
    }
}

/// The launch spec of `task`: Nomad's env, polydev's own variables, then the credentials.
fn launch_spec(task: &TaskSpec, credentials: Vec<(String, SecretString)>) -> LaunchSpec {
    let mut env: Vec<(String, String)> = task
        .env
        .iter()
        .filter(|(name, _)| super::launch::is_valid_env_name(name))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.push(("PROVIDER".into(), task.config.provider.clone()));
    if let Some(user) = &task.config.user_id {
        env.push(("USER_ID".into(), user.clone()));
    }
    if task.config.debug {
        env.push(("DEBUG".into(), "true".into()));
    }
    LaunchSpec {
        argv: task.config.argv.clone(),
        env,
        work_dir: Some(task.config.work_dir.clone()),
        required: task.config.credentials.clone(),
        secret_env: credentials,
    }
}

pub(super) fn unix_nanos(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
