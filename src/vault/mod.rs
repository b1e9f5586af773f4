//! Users' provider keys from Vault or OpenBao (KV v2): one secret store for every client node,
//! so one write reaches every node and one deletion stops every running task.
//!
//! An entry is the KV v2 secret `<mount>/data/<path_prefix>/<nomad namespace>/<user_id>/<provider>`
//! whose keys are the provider's variable names (`OPENAI_API_KEY`, …); the node's shared key
//! (tasks without a user) is `<path_prefix>/_shared/_node/<provider>`, names no namespace or user
//! can take ([`crate::credential_model::EntryId`] builds both). The plugin's token needs only `read`
//! on `<mount>/data/<path_prefix>/*`.
//!
//! Layout: [`http`] (the HTTPS client), [`token`] (obtain, check, renew, obtain again), [`kv`]
//! ([`VaultStore`]: cached reads for the plugin, writes and listings for the operator CLI),
//! [`backend`] (the store behind [`crate::credential_model::CredentialStore`], the trait the
//! lookup policy and the operator CLI use).
//!
//! Of the crate, this module names only the leaf [`crate::credential_model`] (entry names),
//! `config` (its settings), `tls` and `private_file`; never `credentials`, which builds its
//! lookup policy from this store.
//!
//! Why a thin client of our own instead of a Vault crate: polydev needs five endpoints
//! (`lookup-self`, `renew-self`, AppRole login, KV v2 data and metadata, `sys/health`), and
//! already carries hyper, rustls and serde_json for its broker; `vaultrs` would add reqwest and
//! a second TLS and HTTP stack to the binary for them.
//!
//! Invariants:
//! - A key from Vault is a [`secrecy::SecretString`] from the moment its answer is parsed; no
//!   error, log line or file holds a key or a token. Errors name the address, the path and the
//!   fix.
//! - Reads are cached per entry for `cache_ttl` (an absent entry too, so a deletion reaches
//!   running tasks within `cache_ttl`). While Vault cannot answer, an entry read within
//!   `cache_ttl + stale_if_error` is served from the cache; after that the error is returned.
//! - Only "Vault cannot answer now" (unreachable, sealed, 429, 5xx) is retryable; a missing
//!   entry and a permission error are not.

pub mod backend;
pub mod http;
pub mod kv;
pub mod token;

pub use kv::{VaultEntry, VaultHealth, VaultStore};

/// Why Vault could not serve polydev. Never holds a key, a token or a secret id.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "cannot reach Vault at {address}: {reason}; check that it runs, and vault.address and \
         vault.ca_file"
    )]
    Unreachable { address: String, reason: String },
    #[error(
        "Vault at {address} is sealed or has no active node; unseal it (`bao operator unseal` / \
         `vault operator unseal`)"
    )]
    Sealed { address: String },
    #[error(
        "Vault denied {capability} on {path}: polydev's token needs a policy with `path \
         \"{policy_path}\" {{ capabilities = [\"{capability}\"] }}`"
    )]
    Denied {
        path: String,
        capability: &'static str,
        policy_path: String,
    },
    #[error("polydev's Vault token is unusable: {reason}; {fix}")]
    Token { reason: String, fix: String },
    #[error("Vault answered {status} for {path}: {message}")]
    Status {
        path: String,
        status: u16,
        message: String,
    },
    #[error("the Vault entry {path} is malformed: {problem}; write it again with `{fix}`")]
    Malformed {
        path: String,
        problem: String,
        fix: String,
    },
    #[error("{what}: {source}")]
    PrivateFile {
        what: &'static str,
        source: crate::private_file::PrivateFileError,
    },
    #[error("cannot read {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("cannot set up the Vault client: {0}")]
    Setup(String),
    #[error("Vault has no {what} at {path}")]
    NothingToRemove { what: String, path: String },
}

impl VaultError {
    /// Whether asking again later can succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            VaultError::Unreachable { .. } | VaultError::Sealed { .. } => true,
            VaultError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}
