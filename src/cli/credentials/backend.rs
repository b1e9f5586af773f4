//! `--backend`: which [`CredentialStore`] a `polydev credentials` command works on — this
//! node's store (`file`, the default) or the cluster's Vault ([`super::vault`]) — and how the
//! commands report a store's answers. `set`, `list` and `rm` are written once, against the trait.

use super::{Failure, Options, vault};
use crate::credential_model::{CredentialStore, EntryId, StoreError, StoreErrorKind, StoreScope};

/// Run `work` against the store `--backend` names: this node's store, or the cluster's Vault
/// (connected first).
pub(super) fn with_backend<T>(
    options: &Options,
    work: impl AsyncFnOnce(&dyn CredentialStore) -> Result<T, Failure>,
) -> Result<T, Failure> {
    if options.in_vault {
        return vault::with_store(options, work);
    }
    let store = options.store()?;
    // The node's store only reads and writes local files: nothing to drive but the call.
    futures::executor::block_on(work(&store))
}

/// A store's refusal: a name breaking its rule is a usage error, anything else a failure.
pub(super) fn failure(err: StoreError) -> Failure {
    match err.kind() {
        StoreErrorKind::InvalidName => Failure::Usage(err.to_string()),
        _ => Failure::Failed(err.to_string()),
    }
}

/// Where the entry of `id` is in `store`, as `set` and `rm` report it.
pub(super) fn place(store: &dyn CredentialStore, id: &EntryId) -> String {
    match store.scope() {
        StoreScope::Node => store.entry_location(id),
        StoreScope::Cluster => format!("Vault at {}", store.entry_location(id)),
    }
}
