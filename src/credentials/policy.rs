//! Which credentials a task gets: the resolution policy, and [`source_for`], which builds it from
//! the plugin config.
//!
//! | task | source | off when |
//! |---|---|---|
//! | with a `user_id` | the store entry (task's namespace, user, provider) — nothing else | `credentials_from_store = false` |
//! | without a `user_id` | the node's shared key: the store's shared entry (`polydev credentials set --shared`), else the agent's environment | `credentials_from_store = false` / `credentials_from_env = false` |
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

/// The credential source of a plugin configuration. `environment` is the agent's (the plugin's)
/// environment; only the variables some configured provider declares are kept from it.
pub fn source_for(
    config: &PluginConfig,
    environment: Vec<(String, String)>,
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
            .then(|| FileStore::new(&config.data_dir)),
    })
}

/// Per-user credentials from the store, the shared key from the environment; either may be off.
pub struct ScopedSource {
    pub shared: Option<EnvSource>,
    pub store: Option<FileStore>,
}

impl CredentialSource for ScopedSource {
    fn resolve(
        &self,
        key: &CredentialKey,
        required: &[String],
        optional: &[String],
    ) -> Result<Credentials, CredentialError> {
        let Some(user) = &key.user_id else {
            // The node's shared key: the store's shared entry first, then the agent's env.
            if let Some(store) = &self.store {
                let id = EntryId::shared(&key.provider).map_err(|err| CredentialError::Store {
                    key: key.clone(),
                    problem: err.to_string(),
                })?;
                let found = from_entry(store, key, &id, required, optional, true)?;
                if !found.is_empty() {
                    return Ok(found);
                }
            }
            return match (&self.shared, required.first()) {
                (Some(shared), _) => shared.resolve(key, required, optional),
                (None, Some(variable)) => Err(CredentialError::SharedDisabled {
                    key: key.clone(),
                    variable: variable.clone(),
                }),
                (None, None) => Ok(Vec::new()),
            };
        };
        match (&self.store, required.first()) {
            (Some(store), _) => from_store(store, key, user, required, optional),
            (None, Some(variable)) => Err(CredentialError::StoreDisabled {
                key: key.clone(),
                variable: variable.clone(),
            }),
            (None, None) => Ok(Vec::new()),
        }
    }
}

fn from_store(
    store: &FileStore,
    key: &CredentialKey,
    user: &str,
    required: &[String],
    optional: &[String],
) -> Result<Credentials, CredentialError> {
    let id = EntryId::new(&key.namespace, user, &key.provider).map_err(|err| {
        CredentialError::Store {
            key: key.clone(),
            problem: err.to_string(),
        }
    })?;
    from_entry(store, key, &id, required, optional, false)
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
