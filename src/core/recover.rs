//! RecoverTask: re-attach a task started by an earlier plugin process.
//!
//! Works from `driver_state` alone — after an agent restart Nomad hands back no task config. The
//! waiter is re-armed (it returns at once if the container already ended) and the log pump resumes
//! from its persisted cursor, so no output is lost or repeated. A running broker-mode task gets
//! its credential broker back on the port it had (its CLI was given that address); if that
//! fails — or the node's config no longer has the task's provider — RecoverTask fails and Nomad
//! restarts the task, which could not reach its API. The provider is resolved by name once,
//! and only for that: a task that needs no broker is recovered from its handle alone.
//!
//! A task still running from a release that gave it a writable `/alloc/logs` (its handle says
//! nothing of `alloc_logs_read_only`) is not adopted: it could swap its log FIFO for a symlink
//! and have root processes read or write host files at its restart. Its container is removed and
//! RecoverTask fails, so Nomad starts the task again in a container made by this release.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::registry::TaskEntry;
use super::task::DriverState;
use super::{Core, CoreError};
use crate::broker::{BindError, BrokerError, BrokeredTask, ListenerSite};
use crate::credentials::CredentialKey;
use crate::pool_port::PoolHold;

/// Identity of the task being recovered, from Nomad's stored handle.
pub struct RecoverRequest {
    pub task_id: String,
    pub task_name: String,
    pub alloc_id: String,
    pub driver_state: Vec<u8>,
}

impl Core {
    /// Re-attach to a running (or finished) task container.
    pub async fn recover_task(self: &Arc<Self>, request: RecoverRequest) -> Result<(), CoreError> {
        if self.tasks.contains(&request.task_id) {
            return Ok(());
        }
        let state = DriverState::decode(&request.driver_state)
            .map_err(|e| CoreError::BadDriverState(e.to_string()))?;
        let container = match self.engine.inspect(&state.container_id).await {
            Ok(container) => container,
            Err(err) if err.is_not_found() => {
                return Err(CoreError::ContainerGone {
                    task: request.task_id,
                    container: state.container_id,
                });
            }
            Err(err) => return Err(err.into()),
        };
        if container.running && state.logs.is_some() && state.alloc_logs_read_only.is_none() {
            self.discard_container(&state.container_id).await;
            return Err(CoreError::WritableLogsDir {
                task: request.task_id,
                container: state.container_id,
            });
        }
        let key = CredentialKey::new(&state.namespace, state.user_id.as_deref(), &state.provider);
        let secrets = self.redaction_secrets(&state, &key).await;
        let broker_at = state
            .broker_port
            .zip(container.init_pid.filter(|_| container.running));
        let started_at = UNIX_EPOCH
            + Duration::from_nanos(u64::try_from(state.started_at_unix_nanos).unwrap_or(0));
        let container_id = state.container_id.clone();
        let state_provider = state.provider.clone();
        let entry = TaskEntry::new(
            request.task_id.clone(),
            request.task_name,
            request.alloc_id,
            state,
            started_at.max(UNIX_EPOCH),
            &self.shutdown,
        );
        let provider = state_provider;
        match self.tasks.insert(entry) {
            Ok(entry) => {
                if let Some((port, pid)) = broker_at {
                    let site = ListenerSite::Container {
                        pid,
                        container_id: container_id.clone(),
                    };
                    let brokered = match self.settings.config.provider(&provider) {
                        Some(resolved) => BrokeredTask::new(&request.task_id, key, &resolved),
                        None => Err(BrokerError::ProviderGone(provider.clone())),
                    };
                    let opened = match brokered {
                        Ok(brokered) => self.broker.open(brokered, site, port).await,
                        Err(err) => Err(err),
                    };
                    match opened {
                        Ok(lease) => entry.set_broker(lease),
                        // It exited meanwhile: it needs no broker, its supervisor reports the exit.
                        Err(BrokerError::Bind(BindError::NotTheContainer { .. })) => {}
                        Err(err) => {
                            self.tasks.remove(&request.task_id);
                            return Err(err.into());
                        }
                    }
                }
                let hold = self.pool.clone().map(|pool| {
                    PoolHold::of_task(
                        pool,
                        &provider,
                        entry.state.slot.as_deref(),
                        self.shutdown.clone(),
                    )
                });
                entry.set_pool_hold(hold);
                self.spawn_supervisor(entry, secrets)
            }
            // A concurrent RecoverTask got there first; that one supervises the task.
            Err(_) => return Ok(()),
        }
        tracing::info!(task_id = %request.task_id, container_id = %container_id, "task recovered");
        Ok(())
    }

    /// The values to redact from a recovered task's output: looked up again from the credential
    /// source, since no secret is ever persisted. A lookup failure only loses redaction.
    async fn redaction_secrets(
        &self,
        state: &DriverState,
        key: &CredentialKey,
    ) -> Vec<secrecy::SecretString> {
        if state.redacted_variables.is_empty() {
            return Vec::new();
        }
        match self
            .credentials
            .resolve(key, &[], &state.redacted_variables)
            .await
        {
            Ok(found) => found.into_iter().map(|(_, value)| value).collect(),
            Err(err) => {
                tracing::warn!(error = %err, "cannot look up credentials to redact a recovered task's output");
                Vec::new()
            }
        }
    }
}
