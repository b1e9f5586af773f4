//! The vocabulary of stored credentials, shared by every module that handles them: the name
//! rules ([`names`]), what an entry is called ([`EntryId`], [`CredentialKey`]), and the
//! [`CredentialStore`] trait with its [`StoreError`] — what the node's encrypted store
//! (`credentials::FileStore`) and Vault (`vault::VaultStore`) both are.
//!
//! Why a module of its own at the crate's top, and not `credentials::model`: `config` checks
//! task and plugin names with these rules and `vault` addresses its entries with them, while
//! `credentials` builds its lookup policy from `config` and `vault`. Under `credentials` the
//! vocabulary would make `config` and `vault` depend on the module that depends on them. Here
//! it is a leaf: it names nothing else of the crate (only std and external crates), so
//! `config → credential_model ← vault` and `credentials → {config, vault, credential_model}`,
//! with no cycle.
//!
//! Invariants:
//! - Every name that reaches a store went through [`names::check`] (an [`EntryId`] cannot be
//!   built otherwise).
//! - Nothing here holds a value except as a [`SecretString`]; a [`StoreError`] never carries
//!   one.

pub mod names;

use std::fmt;

use secrecy::SecretString;

pub use names::{EntryId, NameError, NameKind};

/// Who a credential is for: the task's Nomad namespace, its `user_id` (none: the node's shared
/// key) and its provider.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CredentialKey {
    pub namespace: String,
    pub user_id: Option<String>,
    pub provider: String,
}

impl CredentialKey {
    /// The key of a task in Nomad namespace `namespace`, for `user_id` (none: the node's shared
    /// key), of provider `provider`.
    pub fn new(namespace: &str, user_id: Option<&str>, provider: &str) -> Self {
        CredentialKey {
            namespace: namespace.to_string(),
            user_id: user_id.map(str::to_string),
            provider: provider.to_string(),
        }
    }
}

impl fmt::Display for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "namespace {:?}, user {:?}, provider {:?}",
            self.namespace,
            self.user_id.as_deref().unwrap_or("(none)"),
            self.provider
        )
    }
}

/// Variables found in one entry, name → value, in the order they were asked for.
pub type Found = Vec<(String, SecretString)>;

/// One entry as a listing shows it: names only, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub id: EntryId,
    /// When the entry was last written.
    pub updated: Option<std::time::SystemTime>,
    /// The variable names stored, or why the entry could not be read.
    pub variables: Result<Vec<String>, String>,
}

/// Whose entries a store holds. It decides what the lookup policy and the operator CLI tell an
/// operator about an entry that is not there (where and how to register it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreScope {
    /// This node's own store: `polydev credentials set` on each node.
    Node,
    /// A secret store every client node reads (Vault / OpenBao): one write reaches them all.
    Cluster,
}

/// What kind of failure a [`StoreError`] is: what its reader can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// A name (namespace, user, provider or variable) breaks its rule: the caller's input is
    /// wrong.
    InvalidName,
    /// There is nothing to remove.
    NotFound,
    /// The entry exists but cannot be used as a whole (it does not parse); it must be removed
    /// or written again.
    CorruptEntry,
    /// One variable of the entry does not decrypt (`reason` says why); it must be written again.
    Undecryptable { variable: String, reason: String },
    /// The store cannot answer now (I/O, unreachable, sealed, overloaded): asking again later
    /// can succeed without anyone changing anything.
    Unavailable,
    /// Anything else the store refused or failed at; changing something is needed.
    Failed,
}

/// Why a [`CredentialStore`] could not do something: a [`StoreErrorKind`] to act on, and the
/// store's own typed error, whose message is this error's message unchanged. Never carries a
/// value or key material (the stores' errors never do).
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl StoreError {
    pub fn new(
        kind: StoreErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        StoreError {
            kind,
            source: source.into(),
        }
    }

    pub fn kind(&self) -> &StoreErrorKind {
        &self.kind
    }

    /// The store's own error, if it is an `E` (e.g. `credentials::FileStoreError`,
    /// `vault::VaultError`).
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.source.downcast_ref::<E>()
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl std::error::Error for StoreError {
    /// Transparent: the store's error is this error, so its cause is this error's cause.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

impl From<NameError> for StoreError {
    fn from(err: NameError) -> Self {
        StoreError::new(StoreErrorKind::InvalidName, err)
    }
}

/// A place entries are kept: one entry per [`EntryId`], holding named variables. Both the
/// plugin's lookup policy (an ordered list of stores) and the operator CLI (`polydev
/// credentials set|list|rm`, `--backend`) use stores only through this trait.
///
/// Async: a store may ask a server over the network.
#[async_trait::async_trait]
pub trait CredentialStore: Send + Sync + 'static {
    /// Whose entries this store holds.
    fn scope(&self) -> StoreScope;

    /// Where the entry of `id` is, as an operator would name it (a file path; `Vault at
    /// secret/polydev/…`).
    fn entry_location(&self, id: &EntryId) -> String;

    /// The values of those `variables` the entry of `id` holds, in the order asked. `None`: the
    /// store has no entry for `id` (the next store is asked). What counts as an entry is the
    /// store's: a Vault secret exists or not as a whole; the node's store, read variable by
    /// variable, has none for `id` when it holds none of `variables`.
    async fn get(&self, id: &EntryId, variables: &[String]) -> Result<Option<Found>, StoreError>;

    /// Store `value` as `variable` of `id`, keeping the entry's other variables. `Some(problem)`:
    /// the entry was unreadable and has been replaced by one holding only `variable`.
    async fn set(
        &self,
        id: &EntryId,
        variable: &str,
        value: &SecretString,
    ) -> Result<Option<String>, StoreError>;

    /// Remove `variable` of `id`, or with `None` the whole entry; returns the variable names
    /// removed. Nothing to remove is a [`StoreErrorKind::NotFound`] error.
    async fn remove(&self, id: &EntryId, variable: Option<&str>)
    -> Result<Vec<String>, StoreError>;

    /// Every entry (optionally of one namespace and/or user), with its variable names.
    async fn list(
        &self,
        namespace: Option<&str>,
        user: Option<&str>,
    ) -> Result<Vec<Listing>, StoreError>;

    /// Fingerprint attributes describing the store's health (`driver.polydev.credentials.*`);
    /// none by default.
    fn attributes(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer message")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_store_error_reads_as_the_stores_own_error() {
        let err = StoreError::new(
            StoreErrorKind::Unavailable,
            Outer(std::io::Error::other("inner")),
        );
        assert_eq!(err.to_string(), "outer message");
        assert_eq!(
            std::error::Error::source(&err).map(|s| s.to_string()),
            Some("inner".to_string())
        );
        assert!(err.downcast_ref::<Outer>().is_some());
        assert!(err.downcast_ref::<std::io::Error>().is_none());
        assert_eq!(err.kind(), &StoreErrorKind::Unavailable);
    }

    #[test]
    fn a_bad_name_is_an_invalid_name_error_with_the_rule() {
        let err: StoreError = names::check(NameKind::Variable, "a-b").unwrap_err().into();
        assert_eq!(err.kind(), &StoreErrorKind::InvalidName);
        assert!(err.to_string().starts_with("invalid variable"), "{err}");
    }
}
