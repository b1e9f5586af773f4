//! The task lifecycle, independent of gRPC and of Docker.
//!
//! A task is one one-shot container whose PID 1 is the task's command (design.md §3). [`Core`]
//! owns the tasks this plugin process knows and implements each Nomad verb in its own file:
//! `start` (create, start, hand over the launch spec), `supervise` (wait for the exit, pump the
//! logs), `stop` (signal, escalate to SIGKILL; also SignalTask and DestroyTask), `recover`,
//! `orphans` (task containers no task claimed back), `stats`, `exec`, and `health` (fingerprint
//! probe). Beside them: `task` and `registry` (the tasks this process knows), `launch` (the launch
//! spec's wire format), `cli_launch` (what each CLI is given at launch), `container` (a task's
//! container spec) and `events` (TaskEvents).
//!
//! Guarantees:
//! - StartTask either returns a running task or leaves no container behind.
//! - Stop, Destroy on unknown or exited tasks succeed (Nomad retries them and compares errors by
//!   identity, which never matches for external plugins).
//! - Plugin shutdown (the root token) detaches every task's background work; containers keep
//!   running and RecoverTask re-attaches them in the next plugin process.
//! - A broker-mode task's container never receives its key: the launch spec carries a
//!   placeholder and the broker's in-container address, and the broker looks the key up per
//!   request. An env-mode task's key goes into the launch spec and nowhere else.
//! - No credential is kept after the launch spec is sent, except as redaction patterns for the
//!   task's log pump.

pub mod cli_launch;
mod container;
mod events;
mod exec;
mod health;
mod launch;
mod orphans;
mod recover;
mod registry;
mod start;
mod stats;
mod stop;
mod supervise;
mod task;

pub use events::{EventBus, TaskEvent};
pub use exec::ExecResult;
pub use health::{Health, HealthState};
pub use launch::{LaunchSpec, is_valid_env_name};
pub use recover::RecoverRequest;
pub use registry::{TaskEntry, TaskRegistry};
pub use start::StartedTask;
pub use stats::{CpuUsage, MemoryUsage, TaskUsage};
pub use task::{DriverState, ExitOutcome, HANDLE_VERSION, LogPaths, TaskSpec};

use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use crate::broker::{BindError, Broker, BrokerError};
use crate::config::PluginConfig;
use crate::container_parts::LABEL_DATA_DIR;
use crate::credentials::{CredentialError, CredentialSource};
use crate::engine::watch::EngineWatch;
use crate::engine::{ContainerEngine, EngineError};
use crate::logs::forward::LogForwarder;
use crate::pool_port::{ClaimError, WarmPoolPort};

/// What can go wrong in a lifecycle verb. Messages say what was wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("task {0} is not known to this plugin")]
    UnknownTask(String),
    #[error("task {0} was already started by this plugin")]
    DuplicateTask(String),
    #[error("task {0} is still running: stop it first, or destroy it with force")]
    StillRunning(String),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error(
        "image {image} of provider {provider:?} is not present on this node: build it with \
         containers/build-images.sh, or point provider \"{provider}\" {{ image = ... }} in the \
         plugin config at an image that exists"
    )]
    ImageMissing { image: String, provider: String },
    #[error("invalid signal {0:?}: use a signal name such as SIGTERM, SIGHUP or SIGUSR1")]
    InvalidSignal(String),
    #[error("the task's driver state is unreadable ({0}); the task cannot be recovered")]
    BadDriverState(String),
    #[error("container {container} of task {task} no longer exists")]
    ContainerGone { task: String, container: String },
    #[error("task {0} is not running")]
    NotRunning(String),
    #[error(
        "task {task} was started by an earlier polydev that left its /alloc/logs writable; its \
         container {container} was removed and Nomad restarts the task in a new one"
    )]
    WritableLogsDir { task: String, container: String },
    #[error("the task's directories cannot be given to its container: {0}")]
    TaskDirs(#[from] crate::safe_open::UnsafePath),
    #[error("container engine: {0}")]
    Runtime(#[from] EngineError),
    #[error(transparent)]
    Pool(#[from] ClaimError),
    #[error("credential broker: {0}")]
    Broker(#[from] BrokerError),
    #[error(
        "container {container} stopped before the task could start in it (the engine stopped \
         or removed it); Nomad retries the task"
    )]
    StoppedBeforeStart { container: String },
}

impl CoreError {
    /// Whether Nomad should retry the same request (engine down or overloaded).
    pub fn is_retryable(&self) -> bool {
        match self {
            CoreError::Runtime(e) => e.is_retryable(),
            CoreError::Credentials(CredentialError::Unavailable(_)) => true,
            CoreError::Pool(err) => err.is_retryable(),
            CoreError::StoppedBeforeStart { .. } => true,
            _ => false,
        }
    }

    /// Whether the container stopped or vanished under us (a warm claim may try another).
    fn is_container_gone(&self) -> bool {
        match self {
            CoreError::Runtime(err) => {
                err.is_not_found() || matches!(err, EngineError::NotRunning(_))
            }
            CoreError::Broker(BrokerError::Bind(BindError::NotTheContainer { .. })) => true,
            _ => false,
        }
    }
}

/// Static settings of a [`Core`].
pub struct CoreSettings {
    pub config: PluginConfig,
    /// Name of this node in container labels (Nomad node id, else the host name).
    pub node: String,
    /// Tasks' containers that no task claims back for this long are removed.
    pub orphan_grace: std::time::Duration,
    /// Give task containers an expiry ([`crate::container_parts::LABEL_EXPIRES_AT`]) this long after their creation,
    /// after which any polydev sweep removes them (`polydev run`: a bound that survives its
    /// `kill -9`); `None` for Nomad's tasks, whose life Nomad decides.
    pub expires_after: Option<std::time::Duration>,
}

/// What the core reaches the outside world through.
pub struct CorePorts {
    pub engine: Arc<dyn ContainerEngine>,
    pub credentials: Arc<dyn CredentialSource>,
    pub forwarder: Arc<dyn LogForwarder>,
    /// Serves broker-mode tasks' API requests with their keys.
    pub broker: Arc<Broker>,
}

/// The lifecycle engine behind the Driver service and the operator CLI.
pub struct Core {
    engine: Arc<dyn ContainerEngine>,
    credentials: Arc<dyn CredentialSource>,
    forwarder: Arc<dyn LogForwarder>,
    /// Serves broker-mode tasks' API requests with their keys.
    broker: Arc<Broker>,
    settings: CoreSettings,
    /// `None` outside the plugin (the operator CLI starts every task cold).
    pool: Option<Arc<dyn WarmPoolPort>>,
    background_started: std::sync::atomic::AtomicBool,
    /// Follows the engine once the background work started (plugin only).
    engine_watch: std::sync::OnceLock<Arc<EngineWatch>>,
    tasks: TaskRegistry,
    events: EventBus,
    shutdown: CancellationToken,
    /// Cold starts creating and starting their containers now, at most
    /// [`PluginConfig::cold_starts_at_once`]; the others queue in arrival order.
    cold_starts: tokio::sync::Semaphore,
}

impl Core {
    pub fn new(
        ports: CorePorts,
        settings: CoreSettings,
        pool: Option<Arc<dyn WarmPoolPort>>,
        events: EventBus,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let CorePorts {
            engine,
            credentials,
            forwarder,
            broker,
        } = ports;
        let cold_starts = tokio::sync::Semaphore::new(settings.config.cold_starts_at_once());
        Arc::new(Core {
            cold_starts,
            engine,
            credentials,
            forwarder,
            broker,
            settings,
            pool,
            background_started: std::sync::atomic::AtomicBool::new(false),
            engine_watch: std::sync::OnceLock::new(),
            tasks: TaskRegistry::default(),
            events,
            shutdown,
        })
    }

    pub fn config(&self) -> &PluginConfig {
        &self.settings.config
    }

    /// The credential sources' own fingerprint attributes (Vault's health).
    pub fn credential_attributes(&self) -> Vec<(String, String)> {
        self.credentials.attributes()
    }

    pub fn tasks(&self) -> &TaskRegistry {
        &self.tasks
    }

    fn task(&self, id: &str) -> Result<Arc<TaskEntry>, CoreError> {
        self.tasks
            .get(id)
            .ok_or_else(|| CoreError::UnknownTask(id.to_string()))
    }

    fn publish(&self, task: &TaskEntry, message: impl Into<String>) {
        self.publish_for(&task.id, &task.alloc_id, &task.name, message);
    }

    fn publish_for(
        &self,
        task_id: &str,
        alloc_id: &str,
        task_name: &str,
        message: impl Into<String>,
    ) {
        self.events.publish(TaskEvent {
            task_id: task_id.to_string(),
            alloc_id: alloc_id.to_string(),
            task_name: task_name.to_string(),
            timestamp: SystemTime::now(),
            message: message.into(),
            annotations: Default::default(),
        });
    }

    /// Start the plugin's background work once: follow the engine's events, prepare the warm
    /// pool's slots, reconcile the pool with Docker, start the refillers, keep the pool in step
    /// with the engine, and the orphan sweep. Called by the long-lived
    /// plugin instance only (Nomad's validation launch must not touch containers).
    pub fn start_background(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.background_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let data_dir = self.settings.config.data_dir.to_string_lossy().into_owned();
        let watch = EngineWatch::spawn(
            self.engine.clone(),
            LABEL_DATA_DIR,
            &data_dir,
            self.shutdown.clone(),
        );
        let _ = self.engine_watch.set(watch.clone());
        if let Some(pool) = self.pool.clone() {
            // Subscribed before the pool's reconcile, so no death after it goes unseen.
            pool.spawn_background(watch.subscribe(), self.shutdown.clone());
        }
        self.spawn_orphan_sweep();
    }

    /// Resolves once the background work that must not be cut short has wound down after the
    /// shutdown token was cancelled: the warm pool's creations under way (see
    /// [`WarmPoolPort::stopped`]). Tasks keep running. Call it only after cancelling.
    pub async fn stopped(&self) {
        if let Some(pool) = &self.pool {
            pool.stopped().await;
        }
    }

    /// What InspectTask reports.
    pub fn inspect_task(&self, id: &str) -> Result<TaskView, CoreError> {
        let task = self.task(id)?;
        let exit = task.exit();
        Ok(TaskView {
            id: task.id.clone(),
            name: task.name.clone(),
            container_id: task.container_id().to_string(),
            started_at: task.started_at,
            completed_at: exit.as_ref().map(|(_, at)| *at),
            exit: exit.map(|(outcome, _)| outcome),
        })
    }

    /// Wait for a task's exit (returns at once if it has exited).
    pub async fn wait_task(&self, id: &str) -> Result<ExitOutcome, CoreError> {
        let task = self.task(id)?;
        Ok(task.wait_exit().await.0)
    }
}

/// A task as InspectTask shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub id: String,
    pub name: String,
    pub container_id: String,
    pub started_at: SystemTime,
    pub completed_at: Option<SystemTime>,
    pub exit: Option<ExitOutcome>,
}
