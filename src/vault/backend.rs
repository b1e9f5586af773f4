//! [`VaultStore`] behind the [`CredentialStore`] trait, and [`VaultError`]s as [`StoreError`]s.
//!
//! Reads go through the store's cache (see the module above); writes, removals and listings go
//! to Vault. A [`StoreError`] displays the [`VaultError`] unchanged; only the errors
//! [`VaultError::is_retryable`] calls retryable are [`StoreErrorKind::Unavailable`].
//!
//! Invariant: an entry that exists answers [`CredentialStore::get`] even when it holds none of
//! the variables asked for (a Vault secret exists as a whole): the lookup then stops at it and
//! names what it lacks, instead of falling back to an older copy elsewhere.

use secrecy::SecretString;

use super::{VaultError, VaultHealth, VaultStore};
use crate::credential_model::{
    CredentialStore, EntryId, Found, Listing, StoreError, StoreErrorKind, StoreScope,
};

/// The fingerprint attribute of Vault's health.
pub const HEALTH_ATTRIBUTE: &str = "driver.polydev.credentials.vault";

impl From<VaultError> for StoreError {
    fn from(err: VaultError) -> Self {
        let kind = match &err {
            err if err.is_retryable() => StoreErrorKind::Unavailable,
            VaultError::NothingToRemove { .. } => StoreErrorKind::NotFound,
            _ => StoreErrorKind::Failed,
        };
        StoreError::new(kind, err)
    }
}

#[async_trait::async_trait]
impl CredentialStore for VaultStore {
    fn scope(&self) -> StoreScope {
        StoreScope::Cluster
    }

    fn entry_location(&self, id: &EntryId) -> String {
        self.display_path(id)
    }

    async fn get(&self, id: &EntryId, variables: &[String]) -> Result<Option<Found>, StoreError> {
        let Some(entry) = self.read(id).await? else {
            return Ok(None);
        };
        Ok(Some(
            variables
                .iter()
                .filter_map(|v| entry.get(v).map(|value| (v.clone(), value.clone())))
                .collect(),
        ))
    }

    async fn set(
        &self,
        id: &EntryId,
        variable: &str,
        value: &SecretString,
    ) -> Result<Option<String>, StoreError> {
        VaultStore::set(self, id, variable, value).await?;
        Ok(None)
    }

    async fn remove(
        &self,
        id: &EntryId,
        variable: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let removed = VaultStore::remove(self, id, variable).await?;
        if removed.is_empty() {
            return Err(VaultError::NothingToRemove {
                what: variable.unwrap_or("entry").to_string(),
                path: self.display_path(id),
            }
            .into());
        }
        Ok(removed)
    }

    async fn list(
        &self,
        namespace: Option<&str>,
        user: Option<&str>,
    ) -> Result<Vec<Listing>, StoreError> {
        Ok(VaultStore::list(self, namespace, user)
            .await?
            .into_iter()
            .map(|(id, updated, variables)| Listing {
                id,
                updated,
                variables: Ok(variables),
            })
            .collect())
    }

    fn attributes(&self) -> Vec<(String, String)> {
        let value = match self.health() {
            VaultHealth::Healthy => "healthy".to_string(),
            VaultHealth::Unhealthy(why) => format!("unhealthy: {why}"),
        };
        vec![(HEALTH_ATTRIBUTE.to_string(), value)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_vault_may_answer_later_is_unavailable() {
        let down: StoreError = VaultError::Sealed {
            address: "https://vault:8200".into(),
        }
        .into();
        assert_eq!(down.kind(), &StoreErrorKind::Unavailable);
        assert!(down.to_string().contains("is sealed"), "{down}");
        let busy: StoreError = VaultError::Status {
            path: "p".into(),
            status: 503,
            message: String::new(),
        }
        .into();
        assert_eq!(busy.kind(), &StoreErrorKind::Unavailable);
        let denied: StoreError = VaultError::Denied {
            path: "secret/polydev/ns/u/openai".into(),
            capability: "read",
            policy_path: "secret/data/polydev/*".into(),
        }
        .into();
        assert_eq!(denied.kind(), &StoreErrorKind::Failed);
        assert!(denied.downcast_ref::<VaultError>().is_some());
        let nothing: StoreError = VaultError::NothingToRemove {
            what: "entry".into(),
            path: "secret/polydev/ns/u/openai".into(),
        }
        .into();
        assert_eq!(nothing.kind(), &StoreErrorKind::NotFound);
        assert_eq!(
            nothing.to_string(),
            "Vault has no entry at secret/polydev/ns/u/openai"
        );
    }
}
