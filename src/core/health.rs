//! The fingerprint probe: is the engine reachable, and which provider images does it have.
//!
//! Health: *healthy* while the engine answers, *unhealthy* whenever it does not — also at plugin
//! start, with the socket path and the fix, so an operator sees why in `nomad node status`
//! instead of a driver that is simply not there. Probes go on, so health recovers by itself
//! when the engine appears.

use std::collections::BTreeMap;

use super::Core;
use crate::pool_port::PoolStatus;

/// Nomad's three driver health states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    Undetected,
    Unhealthy,
    Healthy,
}

/// One fingerprint observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub state: HealthState,
    pub description: String,
    pub docker_version: Option<String>,
    /// Provider name → whether its image exists locally.
    pub images_present: BTreeMap<String, bool>,
    /// Provider name → its warm pool's state (empty outside the plugin).
    pub pools: BTreeMap<String, PoolStatus>,
}

impl Core {
    /// Probe the engine.
    pub async fn probe_health(&self) -> Health {
        let version = match self.engine.version().await {
            Ok(version) => version,
            Err(err) => {
                let endpoint = &self.settings.config.docker_endpoint;
                return Health {
                    state: HealthState::Unhealthy,
                    description: format!(
                        "cannot reach the Docker engine at {endpoint} ({err}): start it \
                         (systemctl start docker), or point the plugin's docker_endpoint at \
                         its socket"
                    ),
                    docker_version: None,
                    images_present: BTreeMap::new(),
                    pools: self.pool_status(),
                };
            }
        };
        let mut images_present = BTreeMap::new();
        for (provider, settings) in &self.settings.config.providers {
            let present = matches!(self.engine.image_id(&settings.image).await, Ok(Some(_)));
            images_present.insert(provider.clone(), present);
        }
        Health {
            state: HealthState::Healthy,
            description: "Healthy".to_string(),
            docker_version: Some(version),
            images_present,
            pools: self.pool_status(),
        }
    }

    fn pool_status(&self) -> BTreeMap<String, PoolStatus> {
        self.pool.as_ref().map(|p| p.status()).unwrap_or_default()
    }
}
