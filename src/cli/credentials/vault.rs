//! `--backend vault`: `polydev credentials set|list|rm` against the cluster's Vault or OpenBao
//! (KV v2) instead of this node's store, with the same entry layout the plugin reads.
//!
//! The server and token come from the options, else the Vault CLI's own environment
//! (`VAULT_ADDR`/`BAO_ADDR`, `VAULT_CACERT`/`BAO_CACERT`, `VAULT_NAMESPACE`/`BAO_NAMESPACE`), and
//! the token from `--vault-token-file`, else `~/.vault-token` (where `vault login` and `bao
//! login` keep it). The operator's token needs create/update/read/delete/list on the entries —
//! more than the plugin's read-only one.

use std::io::Write;

use secrecy::SecretString;

use super::super::args::Opt;
use super::{Failure, Options};
use crate::config::VaultConfig;
use crate::config::vault::{DEFAULT_MOUNT, DEFAULT_PATH_PREFIX};
use crate::credentials::EntryId;
use crate::vault::VaultStore;

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
fn with_store<T>(
    options: &Options,
    work: impl AsyncFnOnce(&VaultStore) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let config = options.vault.config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let store = VaultStore::connect(&config, shutdown.clone())
            .await
            .map_err(|e| Failure::Failed(e.to_string()))?;
        let outcome = work(&store).await;
        shutdown.cancel();
        outcome
    })
}

pub fn set(
    options: &Options,
    id: &EntryId,
    variable: &str,
    value: &SecretString,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<i32, Failure> {
    let path = with_store(options, async |store| {
        store
            .set(id, variable, value)
            .await
            .map_err(|e| Failure::Failed(e.to_string()))?;
        Ok(store.display_path(id))
    })?;
    let _ = writeln!(stdout, "stored {variable} for {id} in Vault at {path}");
    // Vault is asked first, but a node's own copy answers again once the Vault entry is gone.
    let local = options
        .store()
        .ok()
        .and_then(|store| store.get_many(id, &[variable.to_string()]).ok());
    if local.is_some_and(|found| !found.is_empty()) {
        let _ = writeln!(
            stderr,
            "polydev credentials set: note: this node's store also holds {variable} for {id}; \
             it would serve again if the Vault entry were deleted: remove it with `polydev \
             credentials rm` (without --backend) on each node"
        );
    }
    Ok(0)
}

pub fn rm(options: &Options, id: &EntryId, stdout: &mut dyn Write) -> Result<i32, Failure> {
    let (removed, path) = with_store(options, async |store| {
        let removed = store
            .remove(id, options.variable.as_deref())
            .await
            .map_err(|e| Failure::Failed(e.to_string()))?;
        Ok((removed, store.display_path(id)))
    })?;
    if removed.is_empty() {
        return Err(Failure::Failed(format!(
            "Vault has no {} at {path}",
            options.variable.as_deref().unwrap_or("entry")
        )));
    }
    let _ = writeln!(
        stdout,
        "removed {} of {id} from Vault at {path}",
        removed.join(", ")
    );
    Ok(0)
}

pub fn list(options: &Options) -> Result<Vec<crate::credential_model::Listing>, Failure> {
    with_store(options, async |store| {
        let listed = store
            .list(options.namespace.as_deref(), options.user.as_deref())
            .await
            .map_err(|e| Failure::Failed(e.to_string()))?;
        Ok(listed
            .into_iter()
            .map(
                |(id, updated, variables)| crate::credential_model::Listing {
                    id,
                    updated,
                    variables: Ok(variables),
                },
            )
            .collect())
    })
}
