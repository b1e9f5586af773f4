//! `--backend vault`: `polydev credentials set|list|rm` against the cluster's Vault or OpenBao
//! (KV v2) instead of this node's store, with the same entry layout the plugin reads.
//!
//! The server and token come from the options, else the Vault CLI's own environment
//! (`VAULT_ADDR`/`BAO_ADDR`, `VAULT_CACERT`/`BAO_CACERT`, `VAULT_NAMESPACE`/`BAO_NAMESPACE`), and
//! the token from `--vault-token-file`, else `~/.vault-token` (where `vault login` and `bao
//! login` keep it). The operator's token needs create/update/read/delete/list on the entries —
//! more than the plugin's read-only one.
//!
//! What `set`, `list` and `rm` do is the same for both backends (the parent module, through
//! [`CredentialStore`]); this module only connects to Vault, and warns when a key written to
//! Vault has an older copy on this node.

use std::io::Write;

use super::super::args::Opt;
use super::{Failure, Options};
use crate::config::VaultConfig;
use crate::config::vault::{DEFAULT_MOUNT, DEFAULT_PATH_PREFIX};
use crate::credential_model::{CredentialStore, EntryId};

pub const BACKEND: Opt = Opt::Value {
    name: "backend",
    value: "B",
    help: "file (this node's store, the default) or vault (the cluster's\nVault / OpenBao)",
};
pub const ADDRESS: Opt = Opt::Value {
    name: "vault-address",
    value: "URL",
    help: "with --backend vault: the server (default $VAULT_ADDR or $BAO_ADDR)",
};
pub const TOKEN_FILE: Opt = Opt::Value {
    name: "vault-token-file",
    value: "F",
    help: "the operator's token (default ~/.vault-token, as `bao login` writes)",
};
pub const MOUNT: Opt = Opt::Value {
    name: "vault-mount",
    value: "M",
    help: "the KV v2 mount (default secret)",
};
pub const PREFIX: Opt = Opt::Value {
    name: "vault-prefix",
    value: "P",
    help: "the plugin's vault.path_prefix (default polydev)",
};
pub const CA_FILE: Opt = Opt::Value {
    name: "vault-ca-file",
    value: "F",
    help: "CA certificates for the server (default $VAULT_CACERT or $BAO_CACERT)",
};
pub const NAMESPACE: Opt = Opt::Value {
    name: "vault-namespace",
    value: "NS",
    help: "Vault Enterprise / OpenBao namespace (default $VAULT_NAMESPACE)",
};

/// The Vault options of one command line.
#[derive(Debug, Default, PartialEq)]
pub struct VaultOptions {
    pub address: Option<String>,
    pub token_file: Option<String>,
    pub mount: Option<String>,
    pub prefix: Option<String>,
    pub ca_file: Option<String>,
    pub namespace: Option<String>,
}

fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

impl VaultOptions {
    fn config(&self) -> Result<VaultConfig, Failure> {
        let address = self
            .address
            .clone()
            .or_else(|| env(&["VAULT_ADDR", "BAO_ADDR"]))
            .ok_or_else(|| {
                Failure::Usage(
                    "--backend vault needs the server: pass --vault-address or set VAULT_ADDR"
                        .into(),
                )
            })?;
        let token_file = match &self.token_file {
            Some(file) => file.clone(),
            None => {
                let home = env(&["HOME"]).ok_or_else(|| {
                    Failure::Usage("no HOME for ~/.vault-token: pass --vault-token-file".into())
                })?;
                format!("{home}/.vault-token")
            }
        };
        let ca_file = self
            .ca_file
            .clone()
            .or_else(|| env(&["VAULT_CACERT", "BAO_CACERT"]));
        let namespace = self
            .namespace
            .clone()
            .or_else(|| env(&["VAULT_NAMESPACE", "BAO_NAMESPACE"]));
        VaultConfig::for_cli(
            &address,
            self.mount.as_deref().unwrap_or(DEFAULT_MOUNT),
            self.prefix.as_deref().unwrap_or(DEFAULT_PATH_PREFIX),
            &token_file,
            ca_file.as_deref(),
            namespace.as_deref(),
        )
        .map_err(|e| Failure::Usage(e.to_string()))
    }
}

/// Run `work` against the configured Vault on a runtime of its own.
pub(super) fn with_store<T>(
    options: &Options,
    work: impl AsyncFnOnce(&dyn CredentialStore) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let config = options.vault.config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let store = crate::assembly::connect_cluster_store(&config, shutdown.clone())
            .await
            .map_err(|e| Failure::Failed(e.to_string()))?;
        let outcome = work(&*store).await;
        shutdown.cancel();
        outcome
    })
}

/// After `variable` of `id` went to Vault: warn when this node's store holds it too. Vault is
/// asked first, but the node's own copy answers again once the Vault entry is gone.
pub(super) fn note_node_copy(
    options: &Options,
    id: &EntryId,
    variable: &str,
    stderr: &mut dyn Write,
) {
    let Ok(store) = options.store() else { return };
    let local =
        futures::executor::block_on(CredentialStore::get(&store, id, &[variable.to_string()]));
    if matches!(local, Ok(Some(_))) {
        let _ = writeln!(
            stderr,
            "polydev credentials set: note: this node's store also holds {variable} for {id}; \
             it would serve again if the Vault entry were deleted: remove it with `polydev \
             credentials rm` (without --backend) on each node"
        );
    }
}
