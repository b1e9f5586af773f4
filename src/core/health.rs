//! The fingerprint probe: is the engine reachable, and which provider images does it have.
//!
//! Health follows Nomad's docker driver: *undetected* until the engine has answered once,
//! *unhealthy* when a previously reachable engine stops answering, *healthy* otherwise.

use std::collections::BTreeMap;

use super::Core;

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
    pub pools: BTreeMap<String, crate::pool::PoolStatus>,
}

impl Core {
    /// Probe the engine. `detected_before` is whether an earlier probe ever reached it.
    pub async fn probe_health(&self, detected_before: bool) -> Health {
        let version = match self.runtime.version().await {
            Ok(version) => version,
            Err(err) => {
                let state = if detected_before {
                    HealthState::Unhealthy
                } else {
                    HealthState::Undetected
                };
                return Health {
                    state,
                    description: format!("Docker is unreachable: {err}"),
                    docker_version: None,
                    images_present: BTreeMap::new(),
                    pools: self.pool_status(),
                };
            }
        };
        let mut images_present = BTreeMap::new();
        for (provider, settings) in &self.settings.config.providers {
            let present = matches!(self.runtime.image_id(&settings.image).await, Ok(Some(_)));
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

    fn pool_status(&self) -> BTreeMap<String, crate::pool::PoolStatus> {
        self.pool.as_ref().map(|p| p.status()).unwrap_or_default()
    }
}
