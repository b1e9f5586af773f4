//! The composition root: the one place where polydev's parts are put together.
//!
//! From a [`PluginConfig`] (plus what the process was started with — its environment, its
//! shutdown token, and the knobs tests turn) this module builds what [`Core`] needs: the
//! container engine, the credential source and its stores, the log forwarder, the credential
//! broker and the warm pool. The plugin's `SetConfig` ([`crate::driver`]), `polydev run`
//! ([`crate::cli`]) and the `forward-logs` process all ask it, so each is wired one way only.
//!
//! It is the only module of the library that names the Docker adapter ([`crate::docker`]), the
//! Vault connection ([`VaultStore`]), the process log forwarder ([`ProcessForwarder`]) and the
//! credential policy ([`crate::credentials::source_for`]). Why: those are the choices that differ
//! between production, the operator CLI and the tests (a real engine or the fake, a forwarder
//! process or an in-process pump, the agent's environment or the shell's), and each of them
//! drags in a heavy dependency (bollard, an HTTPS client). Kept here, the layers stay what
//! `lib.rs` says: `driver` translates gRPC, `core` runs tasks, `logs` pumps output, and none of
//! them knows which engine or which secret store is on the other side of its trait.
//!
//! Invariants:
//! - One way to wire each use: [`Wiring::production`] (the plugin), [`Wiring::in_process`]
//!   (tests over the fake engine), [`Wiring::operator_run`] (`polydev run`). What differs
//!   between them is stated in the fields of [`Wiring`], nowhere else.
//! - Building parts starts no background work: [`Core::start_background`] does, when the driver
//!   asks for it.
//! - Errors keep the words of the part that failed; [`AssemblyError`] only says which part.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, BrokerError};
use crate::config::{PluginConfig, VaultConfig};
use crate::core::{Core, CorePorts, CoreSettings, EventBus};
use crate::credential_model::CredentialStore;
use crate::credentials::{CredentialSource, EnvSource};
use crate::docker::DockerEngine;
use crate::engine::{ContainerEngine, EngineError};
use crate::logs::forward::{InProcessForwarder, LogForwarder, ProcessForwarder};
use crate::pool::WarmPool;
use crate::task_user::TaskUserError;
use crate::vault::{VaultError, VaultStore};

/// How long `polydev run` leaves a task container that no task claims before its sweep removes
/// it (the plugin takes `orphan_grace` from its config).
const OPERATOR_ORPHAN_GRACE: Duration = Duration::from_secs(600);

/// Why the parts could not be built. Each variant carries the failing part's own error, whose
/// text is shown as it is; the driver adds the "plugin config" context where it belongs.
#[derive(Debug, thiserror::Error)]
pub enum AssemblyError {
    /// The container engine at the configured endpoint cannot be used.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The task user's ids are a host account's, or cannot be checked.
    #[error(transparent)]
    TaskUser(#[from] TaskUserError),
    /// The `vault {}` block's server refused the token, or cannot be reached.
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
    /// The broker's upstreams (their URLs, CA files) cannot be set up.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Where the container engine comes from.
enum EngineSource {
    /// Docker at the configuration's `docker_endpoint`.
    Docker,
    /// The given engine whatever the configuration says (the fake in tests).
    Given(Arc<dyn ContainerEngine>),
}

/// Who runs each task's log pump.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LogForwarding {
    /// A `polydev forward-logs` process per task, which outlives the plugin.
    OwnProcess,
    /// A task of this process.
    InProcess,
}

/// Where a task's credentials come from.
enum CredentialOrigin {
    /// The configuration's policy (Vault, the node's store, then `environment` for the shared
    /// key); `environment` is the agent's, captured at startup.
    Policy { environment: Vec<(String, String)> },
    /// This process's own environment and nothing else (`polydev run`: the operator's shell).
    ShellEnvironment,
}

/// How the parts reach the outside world: the engine, the log forwarder, where credentials come
/// from, the node's name, and where brokers listen.
pub struct Wiring {
    engine: EngineSource,
    log_forwarding: LogForwarding,
    credentials: CredentialOrigin,
    /// Node name for container labels.
    node: String,
    /// Bind brokers on the host's loopback (the fake engine has no network namespaces).
    broker_on_host_loopback: bool,
}

impl Wiring {
    /// The plugin as Nomad runs it: Docker at the configured endpoint, a forwarder process per
    /// task, the configured credential policy over this process's environment.
    pub fn production() -> Self {
        Wiring {
            engine: EngineSource::Docker,
            log_forwarding: LogForwarding::OwnProcess,
            credentials: CredentialOrigin::Policy {
                environment: std::env::vars().collect(),
            },
            node: host_name(),
            broker_on_host_loopback: false,
        }
    }

    /// Tests: the given engine, log pumps inside this process, the configured credential policy
    /// over `environment`, brokers on the host's loopback.
    pub fn in_process(
        engine: Arc<dyn ContainerEngine>,
        environment: Vec<(String, String)>,
    ) -> Self {
        Wiring {
            engine: EngineSource::Given(engine),
            log_forwarding: LogForwarding::InProcess,
            credentials: CredentialOrigin::Policy { environment },
            node: host_name(),
            broker_on_host_loopback: true,
        }
    }

    /// `polydev run`: Docker at the configured endpoint, the log pump inside this process, and
    /// the key from this shell's environment only.
    pub fn operator_run() -> Self {
        Wiring {
            engine: EngineSource::Docker,
            log_forwarding: LogForwarding::InProcess,
            credentials: CredentialOrigin::ShellEnvironment,
            node: host_name(),
            broker_on_host_loopback: false,
        }
    }

    /// The container engine for `config`.
    fn engine(&self, config: &PluginConfig) -> Result<Arc<dyn ContainerEngine>, AssemblyError> {
        match &self.engine {
            EngineSource::Docker => Ok(connect_docker(&config.docker_endpoint.to_string())?),
            EngineSource::Given(engine) => Ok(engine.clone()),
        }
    }

    /// Refuse a `security.task_uid`/`task_gid` that a host account or group has (see
    /// [`crate::task_user`]); the engine is asked only if one has. `Ok(Some(note))`: the ids are
    /// shared, and the engine makes that harmless; the note says so.
    pub async fn check_task_user(
        &self,
        config: &PluginConfig,
    ) -> Result<Option<String>, AssemblyError> {
        let engine = self.engine(config)?;
        Ok(crate::task_user::check_on_host(&config.security, engine.as_ref()).await?)
    }

    /// Connect to the config's Vault, if it has a `vault {}` block: the token is obtained and
    /// checked now, so a bad one fails with the reason. The connection ends with `shutdown`.
    pub async fn connect_vault(
        &self,
        config: &PluginConfig,
        shutdown: CancellationToken,
    ) -> Result<Option<VaultConnection>, AssemblyError> {
        let Some(settings) = &config.vault else {
            return Ok(None);
        };
        let store = VaultStore::connect(settings, shutdown).await?;
        Ok(Some(VaultConnection(store)))
    }

    /// The plugin's core for `config`, with its warm pool: what `SetConfig` applies. `vault` is
    /// the connection [`Wiring::connect_vault`] made (`None`: no `vault {}` block, or Nomad's
    /// validation launch, which must not log in). Brokers and Vault end with `shutdown`.
    pub fn plugin_core(
        &self,
        config: PluginConfig,
        vault: Option<VaultConnection>,
        events: EventBus,
        shutdown: &CancellationToken,
    ) -> Result<Arc<Core>, AssemblyError> {
        let cluster_store = vault.map(|v| v.0 as Arc<dyn CredentialStore>);
        let ports = self.ports(&config, cluster_store, &log_state_dir(&config), shutdown)?;
        let pool = WarmPool::new(ports.engine.clone(), &config, &self.node);
        let settings = CoreSettings {
            node: self.node.clone(),
            orphan_grace: config.orphan_grace,
            expires_after: None,
            config,
        };
        Ok(Core::new(
            ports,
            settings,
            Some(pool),
            events,
            shutdown.clone(),
        ))
    }

    /// The core `polydev run` runs its one task with: no warm pool, log cursors under
    /// `log_state_dir` (the caller's, removed after the run), and task containers that expire
    /// `expires_after` from their creation, so a `kill -9` of the CLI cannot leave one for good.
    pub fn operator_core(
        &self,
        config: PluginConfig,
        log_state_dir: &Path,
        expires_after: Duration,
        shutdown: &CancellationToken,
    ) -> Result<Arc<Core>, AssemblyError> {
        let ports = self.ports(&config, None, log_state_dir, shutdown)?;
        let settings = CoreSettings {
            config,
            node: self.node.clone(),
            orphan_grace: OPERATOR_ORPHAN_GRACE,
            expires_after: Some(expires_after),
        };
        Ok(Core::new(
            ports,
            settings,
            None,
            EventBus::default(),
            shutdown.clone(),
        ))
    }

    /// The engine, credentials, log forwarder and broker for `config`.
    fn ports(
        &self,
        config: &PluginConfig,
        cluster_store: Option<Arc<dyn CredentialStore>>,
        log_state_dir: &Path,
        shutdown: &CancellationToken,
    ) -> Result<CorePorts, AssemblyError> {
        let engine = self.engine(config)?;
        let credentials: Arc<dyn CredentialSource> = match &self.credentials {
            CredentialOrigin::Policy { environment } => {
                crate::credentials::source_for(config, environment.clone(), cluster_store)
            }
            CredentialOrigin::ShellEnvironment => Arc::new(EnvSource::from_process_env()),
        };
        let forwarder = self.forwarder(config, engine.clone(), log_state_dir);
        let broker = Broker::new(config, credentials.clone(), shutdown.child_token())?;
        let broker = if self.broker_on_host_loopback {
            broker.binding_on_host_loopback()
        } else {
            broker
        };
        Ok(CorePorts {
            engine,
            credentials,
            forwarder,
            broker: Arc::new(broker),
        })
    }

    /// The log forwarder: a process per task when this binary can be found again, else (with a
    /// warning) a pump inside this process.
    fn forwarder(
        &self,
        config: &PluginConfig,
        engine: Arc<dyn ContainerEngine>,
        state_dir: &Path,
    ) -> Arc<dyn LogForwarder> {
        if self.log_forwarding == LogForwarding::OwnProcess {
            match std::env::current_exe() {
                Ok(executable) => {
                    return Arc::new(ProcessForwarder::new(
                        executable,
                        config.docker_endpoint.to_string(),
                        state_dir.to_path_buf(),
                    ));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot find this binary; log forwarding runs in the plugin and will not survive a plugin crash");
                }
            }
        }
        Arc::new(InProcessForwarder::new(engine, state_dir.to_path_buf()))
    }
}

/// A connected Vault (or OpenBao), ready to be a credential store of the plugin's core. Opaque:
/// only this module knows what is inside.
pub struct VaultConnection(Arc<VaultStore>);

/// Docker at `endpoint` (`unix://…`, `tcp://…`), as the container engine. Connecting asks
/// nothing of Docker yet: the first call does.
pub fn connect_docker(endpoint: &str) -> Result<Arc<dyn ContainerEngine>, EngineError> {
    Ok(Arc::new(DockerEngine::connect(endpoint)?))
}

/// The cluster's Vault or OpenBao at `config`, as a credential store (`polydev credentials
/// --backend vault`). The token is obtained and checked now; the connection ends with
/// `shutdown`.
pub async fn connect_cluster_store(
    config: &VaultConfig,
    shutdown: CancellationToken,
) -> Result<Arc<dyn CredentialStore>, VaultError> {
    Ok(VaultStore::connect(config, shutdown).await?)
}

/// The `forward-logs` process the plugin starts per task (see [`crate::logs::forward`]), with
/// Docker as the engine it reads the container's output from. Returns the exit code.
pub fn forward_logs_main(args: &[String]) -> i32 {
    crate::logs::forward::forwarder_main(args, connect_docker)
}

/// Where log cursors and forwarder files live: `<data_dir>/logs`.
fn log_state_dir(config: &PluginConfig) -> PathBuf {
    PathBuf::from(&config.data_dir).join("logs")
}

/// This machine's host name (for container labels), `unknown` if unreadable.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests;
