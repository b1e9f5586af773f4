//! The gRPC adapter: Nomad's `BasePlugin` and `Driver` services over the core.
//!
//! This layer only translates — protobuf in, domain call, protobuf out — plus the plugin-level
//! state Nomad drives: the configuration set by `SetConfig` (which asks the composition root,
//! [`crate::assembly`], for the [`Core`]) and the long-lived `Fingerprint` and `TaskEvents`
//! streams. It never builds a part itself: which engine, credential stores, log forwarder and
//! broker the core gets is decided by the [`Wiring`] it is given.
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
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::assembly::{VaultConnection, Wiring};
use crate::config::PluginConfig;
use crate::core::{Core, EventBus};
use crate::pb::hashicorp::nomad::plugins::base::proto::base_plugin_server::BasePluginServer;
use crate::pb::hashicorp::nomad::plugins::drivers::proto::driver_server::DriverServer;

/// The name Nomad knows this driver by (`driver = "polydev"`); equals the binary's file name.
pub const PLUGIN_NAME: &str = "polydev";

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
    /// [`Wiring::check_task_user`]); a harmless overlap is logged.
    async fn check_task_user(&self, config: &PluginConfig) -> Result<(), tonic::Status> {
        let note = self
            .inner
            .wiring
            .check_task_user(config)
            .await
            .map_err(|e| status::from_assembly(&e))?;
        if let Some(note) = note {
            tracing::warn!(%note, "task user shares its ids with a host account");
        }
        Ok(())
    }

    /// Connect to the config's Vault, if it has a `vault {}` block: the token is obtained and
    /// checked now, so a bad one fails SetConfig with the reason.
    async fn connect_vault(
        &self,
        config: &PluginConfig,
    ) -> Result<Option<VaultConnection>, tonic::Status> {
        self.inner
            .wiring
            .connect_vault(config, self.inner.shutdown.child_token())
            .await
            .map_err(|e| status::from_assembly(&e))
    }

    /// Apply a plugin configuration (SetConfig).
    fn configure(
        &self,
        msgpack: &[u8],
        config: PluginConfig,
        vault: Option<VaultConnection>,
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
        let core = self
            .inner
            .wiring
            .plugin_core(
                config,
                vault,
                self.inner.events.clone(),
                &self.inner.shutdown,
            )
            .map_err(|e| status::from_assembly(&e))?;
        *configured = Some(Configured {
            msgpack: msgpack.to_vec(),
            core,
        });
        Ok(())
    }
}
