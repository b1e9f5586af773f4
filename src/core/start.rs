//! StartTask: resolve credentials, get a started container, open its credential broker (broker
//! mode), hand over the launch spec.
//!
//! Order matters: everything that can fail without side effects (duplicate id, credentials) is
//! checked before a container exists; once one exists, any failure removes it again. The
//! broker listens before the spec goes in, so it serves from the CLI's first instruction.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use secrecy::SecretString;

use super::cli_launch::{BrokerAddress, cli_launch};
use super::container::{check_alloc_dirs, task_container};
use super::launch::LaunchSpec;
use super::registry::TaskEntry;
use super::task::{DriverState, TaskSpec};
use super::{Core, CoreError};
use crate::broker::{BrokerLease, BrokeredTask, ListenerSite};
use crate::credentials::CredentialKey;
use crate::engine::EngineError;
use crate::pool_port::PoolHold;

/// What StartTask hands back to Nomad.
#[derive(Debug, Clone)]
pub struct StartedTask {
    pub container_id: String,
    pub driver_state: DriverState,
}

/// A warm container taken for a task: the slot holding the task's directories, and where its
/// limits live when the pool knows it.
struct WarmClaim {
    slot: String,
    cgroup_pid: Option<u32>,
    init_pid: Option<u32>,
    /// Gives the claim's count and slot back if it does not become a task.
    hold: PoolHold,
}

/// How many warm containers one StartTask tries when claimed ones turn out to be dead.
const CLAIM_ATTEMPTS: u32 = 3;

/// Where one StartTask's time went, logged at debug level (`start timings`) for measuring
/// bursts; the last attempt's figures when a claimed container had to be replaced.
#[derive(Debug, Default)]
struct StartTimings {
    credentials: Duration,
    claim: Duration,
    /// Waiting for a cold-start slot (`cold_start_parallelism`).
    queued: Duration,
    create: Duration,
    start: Duration,
    broker: Duration,
    spec: Duration,
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Core {
    /// Start `task` as PID 1 of a fresh container; returns once the command has been handed over.
    pub async fn start_task(self: &Arc<Self>, task: TaskSpec) -> Result<StartedTask, CoreError> {
        if self.tasks.contains(&task.id) {
            return Err(CoreError::DuplicateTask(task.id));
        }
        let began = Instant::now();
        let mut timings = StartTimings::default();
        let provider = &task.config.provider;
        let key = provider.credential_key(&task.namespace, task.config.user_id.as_deref());
        let credentials = self
            .credentials
            .resolve(
                &key,
                provider.credentials(),
                provider.optional_credentials(),
            )
            .await?;
        timings.credentials = began.elapsed();

        let mut attempts_left = CLAIM_ATTEMPTS;
        let (container_id, warm, lease) = loop {
            let (container_id, warm) = self.acquire_container(&task, &mut timings).await?;
            match self
                .hand_over(
                    &task,
                    &container_id,
                    warm.as_ref(),
                    &key,
                    &credentials,
                    &mut timings,
                )
                .await
            {
                Ok(lease) => break (container_id, warm, lease),
                Err(err) => {
                    self.discard_container(&container_id).await;
                    let was_warm = warm.is_some();
                    drop(warm);
                    attempts_left -= 1;
                    if was_warm && err.is_container_gone() && attempts_left > 0 {
                        tracing::warn!(container_id = %container_id, "a warm container was gone when claimed; trying another");
                        continue;
                    }
                    if err.is_container_gone() {
                        return Err(CoreError::StoppedBeforeStart {
                            container: container_id,
                        });
                    }
                    return Err(err);
                }
            }
        };

        let slot = warm.as_ref().map(|claim| claim.slot.clone());
        let started_at = SystemTime::now();
        let driver_state = DriverState {
            container_id: container_id.clone(),
            provider: task.config.provider.name().to_string(),
            namespace: task.namespace.clone(),
            user_id: task.config.user_id.clone(),
            started_at_unix_nanos: unix_nanos(started_at),
            logs: task.logs.clone(),
            redacted_variables: credentials.iter().map(|(name, _)| name.clone()).collect(),
            slot: slot.clone(),
            broker_port: lease.as_ref().map(BrokerLease::port),
            alloc_logs_read_only: Some(task.alloc_dir.is_some()),
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
            Ok(entry) => {
                if let Some(lease) = lease {
                    entry.set_broker(lease);
                }
                entry
            }
            Err(_) => {
                // A concurrent StartTask with the same id won the race (the claim, if any, is
                // given back as it drops).
                self.discard_container(&container_id).await;
                return Err(CoreError::DuplicateTask(task.id));
            }
        };
        // Warm containers were counted when they were taken from the pool.
        let hold = match warm {
            Some(claim) => Some(claim.hold),
            None => self.pool.clone().map(|pool| {
                PoolHold::of_task(
                    pool,
                    task.config.provider.name(),
                    None,
                    self.shutdown.clone(),
                )
            }),
        };
        entry.set_pool_hold(hold);
        let secrets = credentials.into_iter().map(|(_, value)| value).collect();
        self.spawn_supervisor(entry, secrets);
        tracing::debug!(
            task_id = %task.id,
            warm = slot.is_some(),
            total_ms = millis(began.elapsed()),
            credentials_ms = millis(timings.credentials),
            claim_ms = millis(timings.claim),
            queued_ms = millis(timings.queued),
            create_ms = millis(timings.create),
            start_ms = millis(timings.start),
            broker_ms = millis(timings.broker),
            spec_ms = millis(timings.spec),
            "start timings"
        );
        tracing::info!(task_id = %task.id, container_id = %container_id, provider = %task.config.provider.name(), "task started");
        Ok(StartedTask {
            container_id,
            driver_state,
        })
    }

    /// Open the task's broker (broker mode) serving the key of `key`, then send the launch
    /// spec — raising a warm container's idle limits meanwhile. Returns the broker's lease.
    async fn hand_over(
        &self,
        task: &TaskSpec,
        container_id: &str,
        warm: Option<&WarmClaim>,
        key: &CredentialKey,
        credentials: &[(String, SecretString)],
        timings: &mut StartTimings,
    ) -> Result<Option<BrokerLease>, CoreError> {
        let handed_at = SystemTime::now();
        let broker_began = Instant::now();
        let lease = if task.config.provider.is_brokered() {
            let init_pid = warm.and_then(|w| w.init_pid);
            Some(
                self.open_broker(task, key.clone(), container_id, init_pid)
                    .await?,
            )
        } else {
            None
        };
        timings.broker = broker_began.elapsed();
        let spec_began = Instant::now();
        let address = lease.as_ref().map(|lease| BrokerAddress {
            port: lease.port(),
            egress: self.broker.egress_enabled(),
        });
        let launch = launch_spec(task, credentials, address).encode();
        let handed = match warm {
            // A warm container still has its idle limits: raise them while the spec goes in
            // (both finish before StartTask returns; the CLI cannot outgrow idle limits in the
            // few ms in between). A task quick enough to have exited before the update landed
            // needs no limits any more.
            Some(claim) => match tokio::join!(
                self.engine.send_launch_spec(container_id, &launch),
                self.engine
                    .update_limits(container_id, claim.cgroup_pid, &task.limits),
            ) {
                (Err(err), _) => Err(err.into()),
                (Ok(()), Ok(())) => Ok(lease),
                (Ok(()), Err(err)) => Ok(self
                    .exited_meanwhile(container_id, handed_at, err)
                    .await
                    .map(|()| lease)?),
            },
            None => {
                self.engine.send_launch_spec(container_id, &launch).await?;
                Ok(lease)
            }
        };
        timings.spec = spec_began.elapsed();
        handed
    }

    /// Bind the task's broker in its container's network namespace (any free port).
    async fn open_broker(
        &self,
        task: &TaskSpec,
        key: CredentialKey,
        container_id: &str,
        init_pid: Option<u32>,
    ) -> Result<BrokerLease, CoreError> {
        let pid = match init_pid {
            Some(pid) => pid,
            None => self
                .engine
                .inspect(container_id)
                .await?
                .init_pid
                .ok_or_else(|| EngineError::NotRunning(container_id.to_string()))?,
        };
        let site = ListenerSite::Container {
            pid,
            container_id: container_id.to_string(),
        };
        let brokered = BrokeredTask::new(&task.id, key, &task.config.provider)?;
        let lease = self.broker.open(brokered, site, 0).await?;
        tracing::debug!(task_id = %task.id, port = lease.port(), "credential broker listening in the container");
        Ok(lease)
    }

    /// A started container waiting for this task's launch spec: a claimed warm one when the
    /// provider's pool has one, else per the pool's `when_empty` policy, else a cold start.
    /// Returns the container id and, for warm containers, what the claim needs to finish.
    async fn acquire_container(
        &self,
        task: &TaskSpec,
        timings: &mut StartTimings,
    ) -> Result<(String, Option<WarmClaim>), CoreError> {
        let provider = task.config.provider.name();
        let Some(pool) = self
            .pool
            .as_ref()
            .filter(|p| p.is_enabled(provider) && self.warm_eligible(task))
        else {
            // The pool holds its refills back while this container is made (see pool_port).
            let _cold = self.pool.as_ref().map(|pool| pool.cold_start(provider));
            return Ok((self.create_started_container(task, timings).await?, None));
        };
        let claim_began = Instant::now();
        let warm = pool
            .claim(provider, task.alloc_dir.as_deref(), &task.name)
            .await?;
        timings.claim = claim_began.elapsed();
        if let Some(warm) = warm {
            let short: String = warm.id.chars().take(12).collect();
            let message = format!("claimed warm container {short}");
            self.publish_for(&task.id, &task.alloc_id, &task.name, message);
            let hold =
                PoolHold::of_claim(pool.clone(), provider, &warm.slot, self.shutdown.clone());
            let claim = WarmClaim {
                slot: warm.slot,
                cgroup_pid: warm.cgroup_pid,
                init_pid: warm.init_pid,
                hold,
            };
            return Ok((warm.id, Some(claim)));
        }
        self.publish_for(
            &task.id,
            &task.alloc_id,
            &task.name,
            "pool empty: cold start",
        );
        let _cold = pool.cold_start(provider);
        Ok((self.create_started_container(task, timings).await?, None))
    }

    /// The limits update failed after the spec went in: fine if the task has already exited
    /// (Docker words that race in several ways), an error otherwise.
    async fn exited_meanwhile(
        &self,
        container_id: &str,
        handed_at: SystemTime,
        err: EngineError,
    ) -> Result<(), EngineError> {
        match self.engine.inspect(container_id).await {
            // It stopped before the spec went in: it was dead when claimed, not the task.
            Ok(state) if state.finished_at.is_some_and(|at| at < handed_at) => {
                Err(EngineError::NotRunning(container_id.to_string()))
            }
            Ok(state) if !state.running => Ok(()),
            _ => Err(err),
        }
    }

    /// Tasks that set their own labels or image need a container made for them.
    fn warm_eligible(&self, task: &TaskSpec) -> bool {
        task.config.labels.is_empty() && task.config.provider.image() == task.config.image
    }

    /// Create and start the task's container (cold start).
    async fn create_started_container(
        &self,
        task: &TaskSpec,
        timings: &mut StartTimings,
    ) -> Result<String, CoreError> {
        check_alloc_dirs(task)?;
        let queued_began = Instant::now();
        if self.cold_starts.available_permits() == 0 {
            let at_once = self.settings.config.cold_starts_at_once();
            let message = format!(
                "waiting to start: {at_once} cold starts are creating their containers (cold_start_parallelism)"
            );
            self.publish_for(&task.id, &task.alloc_id, &task.name, message);
        }
        // Held until the container runs; the semaphore is never closed.
        let _turn = self.cold_starts.acquire().await.ok();
        timings.queued = queued_began.elapsed();
        let create_began = Instant::now();
        let spec = task_container(
            task,
            &self.settings.config,
            &self.settings.node,
            self.settings.expires_after,
        );
        let container_id = self.engine.create(&spec).await.map_err(|err| match err {
            EngineError::NotFound { kind: "image", .. } => CoreError::ImageMissing {
                image: spec.image.clone(),
                provider: task.config.provider.name().to_string(),
            },
            other => other.into(),
        })?;
        timings.create = create_began.elapsed();
        let start_began = Instant::now();
        if let Err(err) = self.engine.start(&container_id).await {
            self.discard_container(&container_id).await;
            return Err(err.into());
        }
        timings.start = start_began.elapsed();
        Ok(container_id)
    }

    /// Best-effort removal of a container that will never run a task.
    pub(super) async fn discard_container(&self, container_id: &str) {
        if let Err(err) = self.engine.remove(container_id).await
            && !err.is_not_found()
        {
            tracing::warn!(container_id, error = %err, "could not remove container");
        }
    }
}

/// The launch spec of `task`: Nomad's env, polydev's own variables, then what its CLI needs
/// (see [`super::cli_launch`]): in broker mode placeholders and the broker's address, in env mode the
/// credentials.
fn launch_spec(
    task: &TaskSpec,
    credentials: &[(String, SecretString)],
    broker: Option<BrokerAddress>,
) -> LaunchSpec {
    let mut env: Vec<(String, String)> = task
        .env
        .iter()
        .filter(|(name, _)| super::launch::is_valid_env_name(name))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.push(("PROVIDER".into(), task.config.provider.name().to_string()));
    if let Some(user) = &task.config.user_id {
        env.push(("USER_ID".into(), user.clone()));
    }
    if task.config.debug {
        env.push(("DEBUG".into(), "true".into()));
    }
    let cli = cli_launch(task.config.provider.settings(), broker, credentials);
    env.extend(cli.env);
    LaunchSpec {
        argv: task.config.argv.clone(),
        env,
        work_dir: Some(task.config.work_dir.clone()),
        required: cli.required,
        secret_env: cli.secret_env,
        files: cli.files,
    }
}

pub(super) fn unix_nanos(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
