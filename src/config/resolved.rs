//! A task's provider, resolved once: the handle a decoded [`super::TaskConfig`] carries, so the
//! parts of a start (credentials, container, broker, launch, pool) ask it instead of looking the
//! provider up by name again.
//!
//! Invariants: a [`ResolvedProvider`] names a provider of the node's [`PluginConfig`] and shares
//! its settings (no copy of its credential names exists anywhere else); only
//! [`PluginConfig::provider`] makes one, so a name without settings cannot occur.

use std::sync::Arc;

use super::known_cli::CliFacts;
use super::plugin::PluginConfig;
use super::provider::{ApiRoute, ProviderConfig};
use crate::credential_model::CredentialKey;

/// A provider of the node, by name, with its settings shared with the plugin config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedProvider {
    name: String,
    settings: Arc<ProviderConfig>,
}

impl PluginConfig {
    /// The provider called `name`, if this node has it.
    pub fn provider(&self, name: &str) -> Option<ResolvedProvider> {
        self.providers
            .get_key_value(name)
            .map(|(name, settings)| ResolvedProvider {
                name: name.clone(),
                settings: settings.clone(),
            })
    }
}

impl ResolvedProvider {
    /// Its name, a key of [`PluginConfig::providers`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its settings.
    pub fn settings(&self) -> &ProviderConfig {
        &self.settings
    }

    /// Its image (what warm containers run).
    pub fn image(&self) -> &str {
        &self.settings.image
    }

    /// Credential variables the task must get.
    pub fn credentials(&self) -> &[String] {
        &self.settings.credentials
    }

    /// Credential variables the task gets when present.
    pub fn optional_credentials(&self) -> &[String] {
        &self.settings.optional_credentials
    }

    /// The variable holding its key (see [`ProviderConfig::key_variable`]).
    pub fn key_variable(&self) -> Option<&str> {
        self.settings.key_variable()
    }

    /// The broker route, in broker mode.
    pub fn route(&self) -> Option<&ApiRoute> {
        self.settings.route()
    }

    /// Whether its key stays with polydev's broker (and its containers have no network).
    pub fn is_brokered(&self) -> bool {
        self.route().is_some()
    }

    /// The facts of its built-in CLI (`None`: a provider of the operator's own).
    pub fn cli(&self) -> Option<&'static CliFacts> {
        self.settings.cli.map(|cli| cli.facts())
    }

    /// Whose credentials a task of this provider gets: its Nomad `namespace`, its `user_id`
    /// (none: the node's shared key) and this provider.
    pub fn credential_key(&self, namespace: &str, user_id: Option<&str>) -> CredentialKey {
        CredentialKey::new(namespace, user_id, &self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolved_provider_shares_the_nodes_settings() {
        let config = PluginConfig::default();
        let google = config.provider("google").unwrap();
        assert!(Arc::ptr_eq(&google.settings, &config.providers["google"]));
        assert_eq!(google.name(), "google");
        assert_eq!(google.key_variable(), Some("GOOGLE_API_KEY"));
        assert_eq!(google.optional_credentials(), ["GOOGLE_PROJECT_ID"]);
        assert!(google.is_brokered());
        assert_eq!(google.cli().map(|facts| facts.command), Some("gemini"));
        let key = google.credential_key("ns", Some("u1"));
        assert_eq!(
            (
                key.namespace.as_str(),
                key.user_id.as_deref(),
                key.provider.as_str()
            ),
            ("ns", Some("u1"), "google")
        );
        assert_eq!(config.provider("nope"), None);
    }
}
