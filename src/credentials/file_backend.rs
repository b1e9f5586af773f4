//! [`FileStore`] behind the [`CredentialStore`] trait, and its errors as [`StoreError`]s.
//!
//! The store itself stays synchronous (it only reads and writes local files); the trait's
//! methods call it directly. Its own error type, [`FileStoreError`], is what a [`StoreError`]
//! displays, unchanged; the kind classifies it for the lookup policy and the operator CLI.
//!
//! Invariant: an entry that holds none of the variables asked for is no entry
//! ([`CredentialStore::get`] answers `None`), so the next store or the agent's environment is
//! asked — the store is read variable by variable and cannot tell the two apart cheaply.

use secrecy::SecretString;

use super::store::{FileStore, FileStoreError};
use crate::credential_model::{
    CredentialStore, EntryId, Found, Listing, StoreError, StoreErrorKind, StoreScope,
};
use crate::private_file::PrivateFileError;

impl From<FileStoreError> for StoreError {
    fn from(err: FileStoreError) -> Self {
        let kind = match &err {
            FileStoreError::Name(_) => StoreErrorKind::InvalidName,
            FileStoreError::NotFound { .. } => StoreErrorKind::NotFound,
            FileStoreError::Corrupt { .. } => StoreErrorKind::CorruptEntry,
            FileStoreError::Undecryptable {
                variable, reason, ..
            } => StoreErrorKind::Undecryptable {
                variable: variable.clone(),
                reason: reason.to_string(),
            },
            FileStoreError::Io { .. } | FileStoreError::Private(PrivateFileError::Io { .. }) => {
                StoreErrorKind::Unavailable
            }
            FileStoreError::Private(_)
            | FileStoreError::NoKey { .. }
            | FileStoreError::KeyMoved { .. }
            | FileStoreError::BadKey { .. }
            | FileStoreError::BadValue(_) => StoreErrorKind::Failed,
        };
        StoreError::new(kind, err)
    }
}

#[async_trait::async_trait]
impl CredentialStore for FileStore {
    fn scope(&self) -> StoreScope {
        StoreScope::Node
    }

    fn entry_location(&self, id: &EntryId) -> String {
        self.entry_path(id).display().to_string()
    }

    async fn get(&self, id: &EntryId, variables: &[String]) -> Result<Option<Found>, StoreError> {
        let found = self.get_many(id, variables)?;
        Ok((!found.is_empty()).then_some(found))
    }

    async fn set(
        &self,
        id: &EntryId,
        variable: &str,
        value: &SecretString,
    ) -> Result<Option<String>, StoreError> {
        Ok(FileStore::set(self, id, variable, value)?)
    }

    async fn remove(
        &self,
        id: &EntryId,
        variable: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        Ok(FileStore::remove(self, id, variable)?)
    }

    async fn list(
        &self,
        namespace: Option<&str>,
        user: Option<&str>,
    ) -> Result<Vec<Listing>, StoreError> {
        Ok(FileStore::list(self, namespace, user)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn store() -> (tempfile::TempDir, FileStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("data"), dir.path().join("keys/store.key"));
        (dir, store)
    }

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        futures::executor::block_on(future)
    }

    #[test]
    fn through_the_trait_an_entry_without_the_variables_asked_is_none() {
        let (_dir, store) = store();
        let store: &dyn CredentialStore = &store;
        let id = EntryId::new("ns", "u", "openai").unwrap();
        let wanted = ["OPENAI_API_KEY".to_string()];
        assert!(block_on(store.get(&id, &wanted)).unwrap().is_none());
        block_on(store.set(&id, "OTHER", &SecretString::from("v1"))).unwrap();
        assert!(block_on(store.get(&id, &wanted)).unwrap().is_none());
        block_on(store.set(&id, "OPENAI_API_KEY", &SecretString::from("v2"))).unwrap();
        let found = block_on(store.get(&id, &wanted)).unwrap().unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "OPENAI_API_KEY");
        assert_eq!(found[0].1.expose_secret(), "v2");
        let listed = block_on(store.list(None, None)).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            listed[0].variables,
            Ok(vec!["OPENAI_API_KEY".to_string(), "OTHER".to_string()])
        );
        assert_eq!(store.scope(), StoreScope::Node);
        assert!(store.entry_location(&id).ends_with("/ns/u/openai.cred"));
    }

    #[test]
    fn errors_keep_their_message_and_get_their_kind() {
        let (_dir, store) = store();
        let store: &dyn CredentialStore = &store;
        let id = EntryId::new("ns", "u", "openai").unwrap();
        let gone = block_on(store.remove(&id, Some("OPENAI_API_KEY"))).unwrap_err();
        assert_eq!(gone.kind(), &StoreErrorKind::NotFound);
        assert_eq!(
            gone.to_string(),
            format!("nothing is stored for {id} under OPENAI_API_KEY")
        );
        assert!(gone.downcast_ref::<FileStoreError>().is_some());
        let bad = block_on(store.remove(&id, Some("not-a-variable"))).unwrap_err();
        assert_eq!(bad.kind(), &StoreErrorKind::InvalidName);
        let empty =
            block_on(store.set(&id, "OPENAI_API_KEY", &SecretString::from(""))).unwrap_err();
        assert_eq!(empty.kind(), &StoreErrorKind::Failed);
        assert_eq!(empty.to_string(), "the value is empty");
    }
}
