//! Which credentials a task gets: the resolution policy, and [`source_for`], which builds it from
//! the plugin config.
//!
//! The policy is an ordered list of [`CredentialStore`]s, asked in turn for the task's entry;
//! the first that has one answers, and for a task without a `user_id` the agent's environment
//! comes last:
//!
//! | task | asked, in order | off when |
//! |---|---|---|
//! | with a `user_id` | the stores: Vault's entry (task's namespace, user, provider), then the node store's — nothing else | no `vault {}` block / `credentials_from_store = false` |
//! | without a `user_id` | the node's shared key: the stores' shared entry (Vault's, then the store's, `polydev credentials set --shared`), then the agent's environment | no `vault {}` / `credentials_from_store = false` / `credentials_from_env = false` |
//!
//! A store is skipped only when it has no entry (what counts as one is the store's, see
//! [`CredentialStore::get`]); an entry that exists but lacks a required variable, or a store that
//! cannot answer (Vault unreachable), is the error: an outage never falls back to an older copy.
//! (A key deleted in Vault is no entry: a node's own copy of it answers again, which the README
//! and the CLI warn about.)
//!
//! Invariants:
//! - A task naming a user never falls back to the shared key, and never sees an entry of another
//!   namespace: a job in namespace B naming namespace A's user fails, because the entry looked up
//!   is `<B>/<user>/<provider>`, and a file copied there does not decrypt (its AAD names A).
//! - The store is read at every resolve, so `polydev credentials set`/`rm` take effect for the
//!   next StartTask without restarting the plugin; the key stays in memory (see `store`).
//! - Errors name namespace, user, provider and variable plus the command that fixes things, and
//!   never a value. Only "the store cannot answer now" is retryable. A user's missing key is
//!   to be registered in the cluster's store when there is one (every node reads it), else in
//!   this node's; a shared key in the store whose entry lacks it.

use std::sync::Arc;

use super::store::FileStore;
use super::{CredentialError, CredentialKey, CredentialSource, Credentials, EnvSource};
use crate::config::PluginConfig;
use crate::credential_model::{CredentialStore, EntryId, StoreError, StoreErrorKind, StoreScope};

/// The credential source of a plugin configuration. `environment` is the agent's (the plugin's)
/// environment; only the variables some configured provider declares are kept from it.
/// `cluster_store` is the store every node reads (the connected Vault), asked first, when the
/// config has a `vault {}` block.
pub fn source_for(
    config: &PluginConfig,
    environment: Vec<(String, String)>,
    cluster_store: Option<Arc<dyn CredentialStore>>,
) -> Arc<dyn CredentialSource> {
    let declared = |name: &str| {
        config.providers.values().any(|p| {
            p.credentials.iter().any(|v| v == name)
                || p.optional_credentials.iter().any(|v| v == name)
        })
    };
    let mut stores: Vec<Arc<dyn CredentialStore>> = Vec::new();
    if let Some(cluster_store) = cluster_store {
        stores.push(cluster_store);
    }
    if config.credentials_from_store {
        stores.push(Arc::new(FileStore::new(
            &config.data_dir,
            &config.credentials_key_file,
        )));
    }
    Arc::new(ScopedSource {
        stores,
        shared_env: config.credentials_from_env.then(|| {
            EnvSource::from_pairs(environment.into_iter().filter(|(name, _)| declared(name)))
        }),
    })
}

/// The stores in order (Vault, then the node's store, when on), then — for tasks without a
/// user — the agent's environment.
pub struct ScopedSource {
    /// Asked in this order; the first with an entry for the task's key answers.
    pub stores: Vec<Arc<dyn CredentialStore>>,
    /// The agent's environment: asked last, and only for tasks without a user (off: `None`).
    pub shared_env: Option<EnvSource>,
}

#[async_trait::async_trait]
impl CredentialSource for ScopedSource {
    async fn resolve(
        &self,
        key: &CredentialKey,
        required: &[String],
        optional: &[String],
    ) -> Result<Credentials, CredentialError> {
        let id = match &key.user_id {
            Some(user) => EntryId::new(&key.namespace, user, &key.provider),
            None => EntryId::shared(&key.provider),
        }
        .map_err(|err| CredentialError::Store {
            key: key.clone(),
            problem: err.to_string(),
        })?;
        let mut wanted: Vec<String> = required.to_vec();
        for variable in optional {
            if !wanted.contains(variable) {
                wanted.push(variable.clone());
            }
        }
        for store in &self.stores {
            let Some(found) = store
                .get(&id, &wanted)
                .await
                .map_err(|err| store_error(store.scope(), key, err))?
            else {
                continue;
            };
            return match required
                .iter()
                .find(|variable| !found.iter().any(|(name, _)| name == *variable))
            {
                None => Ok(found),
                Some(missing) => Err(self.not_registered(key, &id, missing, Some(store.as_ref()))),
            };
        }
        match (key.user_id.is_some(), &self.shared_env, required.first()) {
            (false, Some(shared), _) => shared.lookup(key, required, optional),
            (_, _, None) => Ok(Vec::new()),
            (false, None, Some(variable)) => Err(CredentialError::SharedDisabled {
                key: key.clone(),
                variable: variable.clone(),
            }),
            (true, _, Some(variable)) => Err(self.not_registered(key, &id, variable, None)),
        }
    }

    fn attributes(&self) -> Vec<(String, String)> {
        self.stores.iter().flat_map(|s| s.attributes()).collect()
    }
}

impl ScopedSource {
    /// The error for `variable` missing from `id`: `answered` is the store whose entry lacks
    /// it, `None` when no store has an entry. The operator is told where to register it — for
    /// a user's key the cluster's store if there is one, else this node's; for the shared key
    /// the store that answered.
    fn not_registered(
        &self,
        key: &CredentialKey,
        id: &EntryId,
        variable: &str,
        answered: Option<&dyn CredentialStore>,
    ) -> CredentialError {
        let cluster = self
            .stores
            .iter()
            .find(|s| s.scope() == StoreScope::Cluster)
            .map(|s| s.as_ref());
        let target = match (&key.user_id, answered) {
            (None, Some(store)) => Some(store),
            _ => cluster.or_else(|| self.stores.first().map(|s| s.as_ref())),
        };
        match target.map(|store| (store.scope(), store)) {
            Some((StoreScope::Cluster, store)) => CredentialError::NotInVault {
                key: key.clone(),
                variable: variable.to_string(),
                path: store.entry_location(id).into(),
            },
            Some((StoreScope::Node, _)) => CredentialError::NotRegistered {
                key: key.clone(),
                variable: variable.to_string(),
            },
            None => CredentialError::StoreDisabled {
                key: key.clone(),
                variable: variable.to_string(),
            },
        }
    }
}

/// A store's failure as the task's error: one variable or the whole entry unusable (register it
/// again), the store unable to answer now (retryable), or anything else it refused.
fn store_error(scope: StoreScope, key: &CredentialKey, err: StoreError) -> CredentialError {
    match err.kind() {
        StoreErrorKind::Undecryptable { variable, reason } => CredentialError::Corrupt {
            key: key.clone(),
            variable: variable.clone(),
            problem: format!("it does not decrypt: {reason}"),
        },
        StoreErrorKind::CorruptEntry => CredentialError::CorruptEntry {
            key: key.clone(),
            problem: err.to_string(),
        },
        StoreErrorKind::Unavailable => CredentialError::Unavailable(format!("{key}: {err}")),
        StoreErrorKind::InvalidName | StoreErrorKind::NotFound | StoreErrorKind::Failed => {
            match scope {
                StoreScope::Node => CredentialError::Store {
                    key: key.clone(),
                    problem: err.to_string(),
                },
                StoreScope::Cluster => CredentialError::Vault {
                    key: key.clone(),
                    problem: err.to_string(),
                },
            }
        }
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "policy_order_tests.rs"]
mod order_tests;
