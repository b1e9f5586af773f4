//! Where a task's provider credentials come from.
//!
//! A [`CredentialSource`] resolves the variables a provider needs for one
//! [`CredentialKey`] — (Nomad namespace, user id, provider) — at StartTask. Values are
//! [`SecretString`]s: they are handed to the launch spec and to the log redactor and nowhere
//! else; no `Debug`, error message or log line of this module ever contains one.
//!
//! Layout:
//! - [`policy`]: which source serves which task ([`source_for`], [`ScopedSource`]): an ordered
//!   list of [`CredentialStore`]s — Vault, then the node's store — asked for the task's entry; a
//!   task with a `user_id` gets that user's credentials of its own namespace from them, a task
//!   without one the node's shared key from them, else the agent's environment.
//! - [`env`](mod@env): [`EnvSource`], the agent's environment; [`NoSource`].
//! - [`store`]: [`FileStore`], the encrypted per-user store under `<data_dir>`, built from
//!   [`names`] (path-safe name rules), [`sealed`] (ChaCha20-Poly1305 with identity-bound AAD),
//!   [`entry`] (the `.cred` file format) and `crate::private_file` (0700/0600, owner, atomic
//!   writes); [`file_backend`]: the same store behind the [`CredentialStore`] trait.
//!
//! A [`CredentialSource`] is what a task's start asks (resolve a key's variables, by whatever
//! policy); a [`CredentialStore`] is one place entries are kept, read and written (by the policy
//! and by the operator CLI). The vocabulary ([`names`], [`EntryId`], [`CredentialKey`], the store
//! trait and its [`StoreError`]) lives in the leaf [`crate::credential_model`], so that `config`
//! and `vault` can use it without naming this module: `credentials` imports `config` and
//! `vault`, never the reverse.

pub mod entry;
pub mod env;
pub mod file_backend;
pub mod policy;
pub mod sealed;
pub mod store;

pub use crate::credential_model::names;
pub use crate::credential_model::{CredentialKey, EntryId};
pub use crate::credential_model::{CredentialStore, StoreError, StoreErrorKind, StoreScope};
pub use crate::private_file::PrivateFileError;
pub use env::{EnvSource, NoSource};
pub use policy::{ScopedSource, source_for};
pub use store::{FileStore, FileStoreError};

use secrecy::SecretString;

/// The operator command that registers `variable` for `key` (the value goes on stdin).
pub fn set_command(key: &CredentialKey, variable: &str) -> String {
    if key.user_id.is_none() {
        return format!(
            "polydev credentials set --shared --provider {} --variable {variable} (the value on \
             stdin)",
            key.provider
        );
    }
    format!(
        "polydev credentials set --namespace {} --user {} --provider {} --variable {variable} \
         (the value on stdin)",
        key.namespace,
        key.user_id.as_deref().unwrap_or("USER"),
        key.provider
    )
}

/// The operator command that removes the entry of `key`.
pub fn rm_command(key: &CredentialKey) -> String {
    format!(
        "polydev credentials rm --namespace {} --user {} --provider {}",
        key.namespace,
        key.user_id.as_deref().unwrap_or("USER"),
        key.provider
    )
}

/// Why credentials could not be resolved. Never carries a secret value. Only
/// [`CredentialError::Unavailable`] is worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "missing credential {variable} for {key}: a task without a user_id gets the node's \
         shared key, from the store's shared entry or else the Nomad agent's environment, and \
         neither has it; register it with `{fix}`, or give the task a user_id and register that \
         user's key with `polydev credentials set`",
        fix = set_command(.key, .variable)
    )]
    Missing {
        key: CredentialKey,
        variable: String,
    },
    #[error(
        "missing credential {variable} for {key}: the task sets no user_id and the node has no \
         shared key in the store (credentials_from_env = false, so the agent's environment is \
         not read); register one with `{fix}`, or give the task the user_id of a registered \
         user",
        fix = set_command(.key, .variable)
    )]
    SharedDisabled {
        key: CredentialKey,
        variable: String,
    },
    #[error(
        "no credential {variable} is registered for {key} (a job can only use credentials \
         registered for its own namespace): register it on this node with `{fix}`",
        fix = set_command(.key, .variable)
    )]
    NotRegistered {
        key: CredentialKey,
        variable: String,
    },
    #[error(
        "credential {variable} for {key} is not available: the plugin config has \
         credentials_from_store = false, so per-user credentials are off; set \
         credentials_from_store = true, or run the task without a user_id to use the node's \
         shared key"
    )]
    StoreDisabled {
        key: CredentialKey,
        variable: String,
    },
    #[error(
        "credential {variable} for {key} is unusable ({problem}); register it again with `{fix}`",
        fix = set_command(.key, .variable)
    )]
    Corrupt {
        key: CredentialKey,
        variable: String,
        problem: String,
    },
    #[error(
        "the credentials of {key} are unusable ({problem}); remove them with `{rm}`, then \
         register them again with `polydev credentials set`",
        rm = rm_command(.key)
    )]
    CorruptEntry { key: CredentialKey, problem: String },
    #[error("the credential store cannot serve {key}: {problem}")]
    Store { key: CredentialKey, problem: String },
    #[error("Vault cannot serve {key}: {problem}")]
    Vault { key: CredentialKey, problem: String },
    #[error(
        "no credential {variable} is registered for {key}: not in Vault at {path} (a job can \
         only use its own namespace's entries), nor in this node's store; write it with `bao kv \
         put {path} {variable}=-` (the value on stdin; `vault kv put` alike), or `polydev \
         credentials set --backend vault ...`"
    )]
    NotInVault {
        key: CredentialKey,
        variable: String,
        /// Boxed: keeps the error (and every `Result` carrying it) small.
        path: Box<str>,
    },
    #[error("credential source unavailable: {0}")]
    Unavailable(String),
}

/// Resolved credentials: variable name → value.
pub type Credentials = Vec<(String, SecretString)>;

/// A place credentials are looked up. Async: a source may ask a server (Vault) over the
/// network.
#[async_trait::async_trait]
pub trait CredentialSource: Send + Sync + 'static {
    /// Resolve every `required` variable (all must exist and be non-empty) and whichever
    /// `optional` ones exist for `key`.
    async fn resolve(
        &self,
        key: &CredentialKey,
        required: &[String],
        optional: &[String],
    ) -> Result<Credentials, CredentialError>;

    /// Fingerprint attributes describing the source's health (`driver.polydev.credentials.*`);
    /// none by default.
    fn attributes(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}
