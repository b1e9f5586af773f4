//! The gRPC adapter: Nomad's `BasePlugin` and `Driver` services over the core.
//!
//! This layer only translates — protobuf in, domain call, protobuf out — plus the plugin-level
//! state Nomad drives: the configuration set by `SetConfig` (which creates the [`Core`]) and the
//! long-lived `Fingerprint` and `TaskEvents` streams.
//!
//! Invariants:
//! - `SetConfig` is idempotent: the same bytes again change nothing. Different bytes while tasks
//!   run are refused (Nomad never sends them within one plugin process).
//! - Long-lived streams never end on their own; they end when Nomad hangs up or the plugin shuts
//!   down (`shutdown` token).
//! - After the shutdown token is cancelled, [`PolydevDriver::stopped`] says when the background
//!   work that must not be cut short (the warm pool's creations under way) has wound down; the
//!   binary waits for it before it exits.

mod base;
mod convert;
mod exec;
mod service;
pub mod status;

use parking_lot::RwLock;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::config::PluginConfig;
use crate::core::{Core, CorePorts, CoreSettings, EventBus};
use crate::logs::forward::{InProcessForwarder, LogForwarder, ProcessForwarder};
use crate::pb::hashicorp::nomad::plugins::base::proto::base_plugin_server::BasePluginServer;
use crate::pb::hashicorp::nomad::plugins::drivers::proto::driver_server::DriverServer;
use crate::pool::WarmPool;
use crate::runtime::ContainerRuntime;

/// The name Nomad knows this driver by (`driver = "polydev"`); equals the binary's file name.
pub const PLUGIN_NAME: &str = "polydev";

/// Makes the container runtime for a configuration (Docker in production, a fake in tests).
pub type RuntimeFactory =
    Box<dyn Fn(&PluginConfig) -> Result<Arc<dyn ContainerRuntime>, String> + Send + Sync>;

/// Makes the log forwarder for a configuration and its runtime.
pub type ForwarderFactory =
    Box<dyn Fn(&PluginConfig, Arc<dyn ContainerRuntime>) -> Arc<dyn LogForwarder> + Send + Sync>;

/// How the driver reaches the outside world.
pub struct Wiring {
    pub runtime: RuntimeFactory,
    pub forwarder: ForwarderFactory,
    /// Environment the env credential source reads (the plugin's own, captured at startup).
    pub environment: Vec<(String, String)>,
    /// Node name for container labels.
    pub node: String,
    /// Bind brokers on the host's loopback (the fake runtime has no network namespaces).
    pub broker_on_host_loopback: bool,
}

impl Wiring {
    /// Production wiring: Docker at the configured endpoint, the process environment.
    pub fn production() -> Self {
        Wiring {
            runtime: Box::new(|config: &PluginConfig| {
                crate::docker::DockerRuntime::connect(&config.docker_endpoint.to_string())
                    .map(|docker| Arc::new(docker) as Arc<dyn ContainerRuntime>)
                    .map_err(|e| e.to_string())
            }),
            forwarder: Box::new(
                |config: &PluginConfig, runtime| match std::env::current_exe() {
                    Ok(executable) => Arc::new(ProcessForwarder::new(
                        executable,
                        config.docker_endpoint.to_string(),
                        log_state_dir(config),
                    )) as Arc<dyn LogForwarder>,
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot find this binary; log forwarding runs in the plugin and will not survive a plugin crash");
                        Arc::new(InProcessForwarder::new(runtime, log_state_dir(config)))
                    }
                },
            ),
            environment: std::env::vars().collect(),
            node: host_name(),
            broker_on_host_loopback: false,
        }
    }

    /// Wiring for tests: the given runtime, log pumps inside this process.
    pub fn in_process(
        runtime: Arc<dyn ContainerRuntime>,
        environment: Vec<(String, String)>,
    ) -> Self {
        let for_runtime = runtime.clone();
        Wiring {
            runtime: Box::new(move |_| Ok(for_runtime.clone())),
            forwarder: Box::new(|config: &PluginConfig, runtime| {
                Arc::new(InProcessForwarder::new(runtime, log_state_dir(config)))
            }),
            environment,
            node: host_name(),
            broker_on_host_loopback: true,
        }
    }
}

/// Where log cursors and forwarder files live: `<data_dir>/logs`.
pub fn log_state_dir(config: &PluginConfig) -> PathBuf {
    PathBuf::from(&config.data_dir).join("logs")
}

/// The BasePlugin + Driver service implementation. Cheap to clone.
#[derive(Clone)]
pub struct PolydevDriver {
    inner: Arc<Inner>,
}

struct Inner {
    wiring: Wiring,
    events: EventBus,
    shutdown: CancellationToken,
    configured: RwLock<Option<Configured>>,
}

struct Configured {
    msgpack: Vec<u8>,
    core: Arc<Core>,
}

impl PolydevDriver {
    pub fn new(wiring: Wiring, shutdown: CancellationToken) -> Self {
        PolydevDriver {
            inner: Arc::new(Inner {
                wiring,
                events: EventBus::default(),
                shutdown,
                configured: RwLock::new(None),
            }),
        }
    }

    /// The gRPC routes to serve: `BasePlugin` and `Driver`.
    pub fn routes(self) -> tonic::service::Routes {
        tonic::service::Routes::new(BasePluginServer::new(self.clone()))
            .add_service(DriverServer::new(self))
    }

    /// Resolves once the plugin's background work has wound down after the shutdown token was
    /// cancelled (at once when SetConfig never ran); see [`Core::stopped`]. The caller bounds
    /// the wait: go-plugin kills the process 2 s after Shutdown.
    pub async fn stopped(&self) {
        let core = self
            .inner
            .configured
            .read()
            .as_ref()
            .map(|c| c.core.clone());
        if let Some(core) = core {
            core.stopped().await;
        }
    }

    /// The core, once SetConfig has run.
    fn core(&self) -> Result<Arc<Core>, tonic::Status> {
        self.inner
            .configured
            .read()
            .as_ref()
            .map(|c| c.core.clone())
            .ok_or_else(status::not_configured)
    }

    /// Whether `msgpack` is the configuration already applied.
    fn is_current(&self, msgpack: &[u8]) -> bool {
        self.inner
            .configured
            .read()
            .as_ref()
            .is_some_and(|c| c.msgpack == msgpack)
    }

    /// Refuse a `security.task_uid`/`task_gid` that a host account or group has (see
    /// [`crate::task_user`]); the engine is asked only if one has.
    async fn check_task_user(&self, config: &PluginConfig) -> Result<(), tonic::Status> {
        let runtime =
            (self.inner.wiring.runtime)(config).map_err(tonic::Status::invalid_argument)?;
        match crate::task_user::check_on_host(&config.security, runtime.as_ref()).await {
            Ok(None) => Ok(()),
            Ok(Some(note)) => {
                tracing::warn!(%note, "task user shares its ids with a host account");
                Ok(())
            }
            Err(err) => Err(tonic::Status::invalid_argument(err.to_string())),
        }
    }

    /// Connect to the config's Vault, if it has a `vault {}` block: the token is obtained and
    /// checked now, so a bad one fails SetConfig with the reason.
    async fn connect_vault(
        &self,
        config: &PluginConfig,
    ) -> Result<Option<Arc<crate::vault::VaultStore>>, tonic::Status> {
        let Some(settings) = &config.vault else {
            return Ok(None);
        };
        crate::vault::VaultStore::connect(settings, self.inner.shutdown.child_token())
            .await
            .map(Some)
            .map_err(|e| tonic::Status::invalid_argument(format!("plugin config: vault: {e}")))
    }

    /// Apply a plugin configuration (SetConfig).
    fn configure(
        &self,
        msgpack: &[u8],
        config: PluginConfig,
        vault: Option<Arc<crate::vault::VaultStore>>,
    ) -> Result<(), tonic::Status> {
        let mut configured = self.inner.configured.write();
        if let Some(current) = configured.as_ref() {
            if current.msgpack == msgpack {
                return Ok(());
            }
            if !current.core.tasks().is_empty() {
                return Err(tonic::Status::failed_precondition(
                    "the plugin configuration cannot change while tasks run: restart the Nomad agent",
                ));
            }
        }
        let runtime =
            (self.inner.wiring.runtime)(&config).map_err(tonic::Status::invalid_argument)?;
        let credentials =
            crate::credentials::source_for(&config, self.inner.wiring.environment.clone(), vault);
        let forwarder = (self.inner.wiring.forwarder)(&config, runtime.clone());
        let broker = Broker::new(
            &config,
            credentials.clone(),
            self.inner.shutdown.child_token(),
        )
        .map_err(|e| tonic::Status::invalid_argument(format!("plugin config: {e}")))?;
        let broker = Arc::new(if self.inner.wiring.broker_on_host_loopback {
            broker.binding_on_host_loopback()
        } else {
            broker
        });
        let pool = WarmPool::new(runtime.clone(), &config, &self.inner.wiring.node);
        let settings = CoreSettings {
            node: self.inner.wiring.node.clone(),
            orphan_grace: config.orphan_grace,
            expires_after: None,
            config,
        };
        let ports = CorePorts {
            runtime,
            credentials,
            forwarder,
            broker,
        };
        let core = Core::new(
            ports,
            settings,
            Some(pool),
            self.inner.events.clone(),
            self.inner.shutdown.clone(),
        );
        *configured = Some(Configured {
            msgpack: msgpack.to_vec(),
            core,
        });
        Ok(())
    }
}

/// This machine's host name (for container labels), `unknown` if unreadable.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}
