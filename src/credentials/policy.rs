//! Which credentials a task gets: the resolution policy, and [`source_for`], which builds it from
//! the plugin config.
//!
//! | task | sources, in order | off when |
//! |---|---|---|
//! | with a `user_id` | Vault's entry (task's namespace, user, provider), then the store's — nothing else | no `vault {}` block / `credentials_from_store = false` |
//! | without a `user_id` | the node's shared key: Vault's shared entry, the store's (`polydev credentials set --shared`), then the agent's environment | no `vault {}` / `credentials_from_store = false` / `credentials_from_env = false` |
//!
//! A source is skipped only when it has no entry; an entry that exists but lacks a required
//! variable, or a source that cannot answer (Vault unreachable), is the error: an outage never
//! falls back to an older copy. (A key deleted in Vault is no entry: a node's own copy of it
//! answers again, which the README and the CLI warn about.)
//!
//! Invariants:
//! - A task naming a user never falls back to the shared key, and never sees an entry of another
//!   namespace: a job in namespace B naming namespace A's user fails, because the entry looked up
//!   is `<B>/<user>/<provider>`, and a file copied there does not decrypt (its AAD names A).
//! - The store is read at every resolve, so `polydev credentials set`/`rm` take effect for the
//!   next StartTask without restarting the plugin; the key stays in memory (see `store`).
//! - Errors name namespace, user, provider and variable plus the command that fixes things, and
//!   never a value. Only I/O failures are retryable.

use std::sync::Arc;

use super::names::EntryId;
use super::private::PrivateFileError;
use super::store::{FileStore, StoreError};
use super::{CredentialError, CredentialKey, CredentialSource, Credentials, EnvSource};
use crate::config::PluginConfig;
use crate::vault::{VaultHealth, VaultStore};

/// The credential source of a plugin configuration. `environment` is the agent's (the plugin's)
/// environment; only the variables some configured provider declares are kept from it.
/// `vault` is the connected Vault store when the config has a `vault {}` block.
pub fn source_for(
    config: &PluginConfig,
    environment: Vec<(String, String)>,
    vault: Option<Arc<VaultStore>>,
) -> Arc<dyn CredentialSource> {
    let declared = |name: &str| {
        config.providers.values().any(|p| {
            p.credentials.iter().any(|v| v == name)
                || p.optional_credentials.iter().any(|v| v == name)
        })
    };
    Arc::new(ScopedSource {
        shared: config.credentials_from_env.then(|| {
            EnvSource::from_pairs(environment.into_iter().filter(|(name, _)| declared(name)))
        }),
        store: config
            .credentials_from_store
            .then(|| FileStore::new(&config.data_dir, &config.credentials_key_file)),
        vault,
    })
}

/// Vault, then the local store, then (for tasks without a user) the agent's environment; any of
/// them may be off.
pub struct ScopedSource {
    pub shared: Option<EnvSource>,
    pub store: Option<FileStore>,
    pub vault: Option<Arc<VaultStore>>,
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
        if let Some(vault) = &self.vault
            && let Some(found) = from_vault(vault, key, &id, required, optional).await?
        {
            return Ok(found);
        }
        if key.user_id.is_none() {
            // The node's shared key: the store's shared entry, then the agent's env.
            if let Some(store) = &self.store {
                let found = from_entry(store, key, &id, required, optional, true)?;
                if !found.is_empty() {
                    return Ok(found);
                }
            }
            return match (&self.shared, required.first()) {
                (Some(shared), _) => shared.lookup(key, required, optional),
                (None, Some(variable)) => Err(CredentialError::SharedDisabled {
                    key: key.clone(),
                    variable: variable.clone(),
                }),
                (None, None) => Ok(Vec::new()),
            };
        }
        match (&self.store, &self.vault, required.first()) {
            (Some(store), vault, _) => from_entry(store, key, &id, required, optional, false)
                .map_err(|err| match (err, vault) {
                    (CredentialError::NotRegistered { variable, .. }, Some(vault)) => {
                        not_in_vault(vault, key, &id, &variable)
                    }
                    (err, _) => err,
                }),
            (None, Some(vault), Some(variable)) => Err(not_in_vault(vault, key, &id, variable)),
            (None, None, Some(variable)) => Err(CredentialError::StoreDisabled {
                key: key.clone(),
                variable: variable.clone(),
            }),
            (None, _, None) => Ok(Vec::new()),
        }
    }

    fn attributes(&self) -> Vec<(String, String)> {
        let Some(vault) = &self.vault else {
            return Vec::new();
        };
        let value = match vault.health() {
            VaultHealth::Healthy => "healthy".to_string(),
            VaultHealth::Unhealthy(why) => format!("unhealthy: {why}"),
        };
        vec![("driver.polydev.credentials.vault".to_string(), value)]
    }
}

/// The entry of `id` in Vault: `None` when Vault has none (the next source is asked); an
/// entry missing a required variable is an error, as in the store.
async fn from_vault(
    vault: &VaultStore,
    key: &CredentialKey,
    id: &EntryId,
    required: &[String],
    optional: &[String],
) -> Result<Option<Credentials>, CredentialError> {
    let entry = match vault.read(id).await {
        Ok(Some(entry)) => entry,
        Ok(None) => return Ok(None),
        Err(err) if err.is_retryable() => {
            return Err(CredentialError::Unavailable(format!("{key}: {err}")));
        }
        Err(err) => {
            return Err(CredentialError::Vault {
                key: key.clone(),
                problem: err.to_string(),
            });
        }
    };
    if let Some(missing) = required.iter().find(|v| !entry.contains_key(*v)) {
        return Err(not_in_vault(vault, key, id, missing));
    }
    Ok(Some(
        required
            .iter()
            .chain(optional.iter().filter(|v| !required.contains(v)))
            .filter_map(|v| entry.get(v).map(|value| (v.clone(), value.clone())))
            .collect(),
    ))
}

fn not_in_vault(
    vault: &VaultStore,
    key: &CredentialKey,
    id: &EntryId,
    variable: &str,
) -> CredentialError {
    CredentialError::NotInVault {
        key: key.clone(),
        variable: variable.to_string(),
        path: vault.display_path(id).into(),
    }
}

/// The variables of entry `id`; with `absent_is_empty`, an entry holding none of them is an
/// empty answer (the caller falls back), otherwise a missing required one is the error.
fn from_entry(
    store: &FileStore,
    key: &CredentialKey,
    id: &EntryId,
    required: &[String],
    optional: &[String],
    absent_is_empty: bool,
) -> Result<Credentials, CredentialError> {
    let mut wanted: Vec<String> = required.to_vec();
    for variable in optional {
        if !wanted.contains(variable) {
            wanted.push(variable.clone());
        }
    }
    let found = store
        .get_many(id, &wanted)
        .map_err(|err| store_error(key, err))?;
    if absent_is_empty && found.is_empty() {
        return Ok(found);
    }
    if let Some(missing) = required
        .iter()
        .find(|variable| !found.iter().any(|(name, _)| name == *variable))
    {
        return Err(CredentialError::NotRegistered {
            key: key.clone(),
            variable: missing.clone(),
        });
    }
    Ok(found)
}

fn store_error(key: &CredentialKey, err: StoreError) -> CredentialError {
    match err {
        StoreError::Undecryptable {
            variable, reason, ..
        } => CredentialError::Corrupt {
            key: key.clone(),
            variable,
            problem: format!("it does not decrypt: {reason}"),
        },
        StoreError::Corrupt { .. } => CredentialError::CorruptEntry {
            key: key.clone(),
            problem: err.to_string(),
        },
        StoreError::Io { .. } | StoreError::Private(PrivateFileError::Io { .. }) => {
            CredentialError::Unavailable(format!("{key}: {err}"))
        }
        other => CredentialError::Store {
            key: key.clone(),
            problem: other.to_string(),
        },
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
