//! Tests of the policy as an ordered list of stores: an in-memory cluster store (Vault's shape:
//! an entry exists as a whole) ahead of a real node store in a temp dir, so the order, the
//! stop-at-an-entry rule and the outage rule are checked without a Vault server
//! (`tests/vault_store.rs` runs them against OpenBao).

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use secrecy::{ExposeSecret, SecretString};

use super::*;
use crate::credential_model::{Found, Listing};

const CLUSTER_KEY: &str = "sk-cluster-0123456789";
const NODE_KEY: &str = "sk-node-0123456789";
const ENV_KEY: &str = "sk-env-0123456789";

/// A cluster store held in memory, or one that fails every read with `failure`.
#[derive(Default)]
struct MemoryCluster {
    entries: Mutex<BTreeMap<EntryId, BTreeMap<String, SecretString>>>,
    failure: Option<StoreErrorKind>,
    reads: AtomicUsize,
}

impl MemoryCluster {
    fn put(&self, id: &EntryId, variable: &str, value: &str) {
        self.entries
            .lock()
            .entry(id.clone())
            .or_default()
            .insert(variable.to_string(), SecretString::from(value));
    }
}

#[async_trait::async_trait]
impl CredentialStore for MemoryCluster {
    fn scope(&self) -> StoreScope {
        StoreScope::Cluster
    }

    fn entry_location(&self, id: &EntryId) -> String {
        format!("memory/{}/{}/{}", id.namespace(), id.user(), id.provider())
    }

    async fn get(&self, id: &EntryId, variables: &[String]) -> Result<Option<Found>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if let Some(kind) = &self.failure {
            return Err(StoreError::new(
                kind.clone(),
                std::io::Error::other("the memory store is down"),
            ));
        }
        let entries = self.entries.lock();
        Ok(entries.get(id).map(|entry| {
            variables
                .iter()
                .filter_map(|v| entry.get(v).map(|value| (v.clone(), value.clone())))
                .collect()
        }))
    }

    async fn set(
        &self,
        id: &EntryId,
        variable: &str,
        value: &SecretString,
    ) -> Result<Option<String>, StoreError> {
        self.put(id, variable, value.expose_secret());
        Ok(None)
    }

    async fn remove(
        &self,
        id: &EntryId,
        variable: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let mut entries = self.entries.lock();
        let removed = match (entries.get_mut(id), variable) {
            (Some(entry), Some(v)) => entry.remove(v).map(|_| vec![v.to_string()]),
            (Some(_), None) => entries.remove(id).map(|e| e.into_keys().collect()),
            (None, _) => None,
        };
        removed.ok_or_else(|| {
            StoreError::new(StoreErrorKind::NotFound, std::io::Error::other("no entry"))
        })
    }

    async fn list(
        &self,
        _namespace: Option<&str>,
        _user: Option<&str>,
    ) -> Result<Vec<Listing>, StoreError> {
        let entries = self.entries.lock();
        Ok(entries
            .iter()
            .map(|(id, entry)| Listing {
                id: id.clone(),
                updated: None,
                variables: Ok(entry.keys().cloned().collect()),
            })
            .collect())
    }

    fn attributes(&self) -> Vec<(String, String)> {
        vec![("driver.polydev.credentials.memory".into(), "healthy".into())]
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    cluster: Arc<MemoryCluster>,
    node: Arc<FileStore>,
}

fn setup(failure: Option<StoreErrorKind>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(FileStore::new(
        dir.path().join("data"),
        dir.path().join("keys/credentials.key"),
    ));
    let cluster = Arc::new(MemoryCluster {
        failure,
        ..MemoryCluster::default()
    });
    Setup {
        _dir: dir,
        cluster,
        node,
    }
}

impl Setup {
    fn source(&self, with_env: bool) -> ScopedSource {
        ScopedSource {
            stores: vec![self.cluster.clone(), self.node.clone()],
            shared_env: with_env.then(|| {
                EnvSource::from_pairs([("OPENAI_API_KEY".to_string(), ENV_KEY.to_string())])
            }),
        }
    }

    fn on_node(&self, id: &EntryId, variable: &str, value: &str) {
        self.node
            .set(id, variable, &SecretString::from(value))
            .unwrap();
    }
}

fn user(name: &str) -> (CredentialKey, EntryId) {
    let key = CredentialKey {
        namespace: "ns-a".into(),
        user_id: Some(name.into()),
        provider: "openai".into(),
    };
    (key, EntryId::new("ns-a", name, "openai").unwrap())
}

fn shared() -> (CredentialKey, EntryId) {
    let key = CredentialKey {
        namespace: "ns-a".into(),
        user_id: None,
        provider: "openai".into(),
    };
    (key, EntryId::shared("openai").unwrap())
}

fn openai(source: &ScopedSource, key: &CredentialKey) -> Result<String, CredentialError> {
    let found = futures::executor::block_on(source.resolve(
        key,
        &["OPENAI_API_KEY".to_string()],
        &["OPENAI_ORG".to_string()],
    ))?;
    assert_eq!(found.len(), 1, "only the required variable exists");
    Ok(found[0].1.expose_secret().to_string())
}

#[test]
fn the_first_store_with_an_entry_answers() {
    let s = setup(None);
    let source = s.source(true);
    let (both, both_id) = user("both");
    s.cluster.put(&both_id, "OPENAI_API_KEY", CLUSTER_KEY);
    s.on_node(&both_id, "OPENAI_API_KEY", NODE_KEY);
    assert_eq!(openai(&source, &both).unwrap(), CLUSTER_KEY);
    let (node_only, node_id) = user("node-only");
    s.on_node(&node_id, "OPENAI_API_KEY", NODE_KEY);
    assert_eq!(openai(&source, &node_only).unwrap(), NODE_KEY);
    // The shared key: the stores' entries first, the environment last.
    let (shared, shared_id) = shared();
    assert_eq!(openai(&source, &shared).unwrap(), ENV_KEY);
    s.on_node(&shared_id, "OPENAI_API_KEY", NODE_KEY);
    assert_eq!(openai(&source, &shared).unwrap(), NODE_KEY);
    s.cluster.put(&shared_id, "OPENAI_API_KEY", CLUSTER_KEY);
    assert_eq!(openai(&source, &shared).unwrap(), CLUSTER_KEY);
    assert_eq!(
        source.attributes(),
        vec![(
            "driver.polydev.credentials.memory".to_string(),
            "healthy".to_string()
        )]
    );
}

#[test]
fn a_cluster_entry_lacking_the_variable_stops_the_lookup_and_names_where_to_write_it() {
    let s = setup(None);
    let source = s.source(true);
    let (key, id) = user("user1");
    s.cluster.put(&id, "OTHER_VARIABLE", "x");
    s.on_node(&id, "OPENAI_API_KEY", NODE_KEY);
    let err = openai(&source, &key).unwrap_err();
    assert!(
        matches!(&err, CredentialError::NotInVault { path, .. } if &**path == "memory/ns-a/user1/openai"),
        "{err}"
    );
    // A user nobody registered anywhere is told to write the cluster's store too.
    let (nobody, _) = user("nobody");
    let err = openai(&source, &nobody).unwrap_err();
    assert!(
        matches!(&err, CredentialError::NotInVault { path, .. } if &**path == "memory/ns-a/nobody/openai"),
        "{err}"
    );
    assert!(!err.to_string().contains(NODE_KEY));
}

#[test]
fn the_shared_key_is_to_be_registered_where_the_entry_lacking_it_is() {
    let s = setup(None);
    let (key, id) = shared();
    s.on_node(&id, "OPENAI_ORG", "org-1");
    let err = openai(&s.source(true), &key).unwrap_err();
    assert!(
        matches!(err, CredentialError::NotRegistered { .. }),
        "{err}"
    );
    s.cluster.put(&id, "OTHER_VARIABLE", "x");
    let err = openai(&s.source(true), &key).unwrap_err();
    assert!(matches!(err, CredentialError::NotInVault { .. }), "{err}");
    // No entry anywhere and the environment off.
    let other = CredentialKey {
        provider: "anthropic".into(),
        ..key.clone()
    };
    let err = futures::executor::block_on(s.source(false).resolve(
        &other,
        &["ANTHROPIC_API_KEY".to_string()],
        &[],
    ))
    .unwrap_err();
    assert!(
        matches!(err, CredentialError::SharedDisabled { .. }),
        "{err}"
    );
}

#[test]
fn a_store_that_cannot_answer_is_retryable_and_never_falls_back() {
    let s = setup(Some(StoreErrorKind::Unavailable));
    let (key, id) = user("user1");
    s.on_node(&id, "OPENAI_API_KEY", NODE_KEY);
    let err = openai(&s.source(true), &key).unwrap_err();
    let CredentialError::Unavailable(why) = &err else {
        panic!("{err:?}");
    };
    assert!(why.contains(r#"user "user1""#), "{why}");
    assert!(why.contains("the memory store is down"), "{why}");
    assert_eq!(s.cluster.reads.load(Ordering::SeqCst), 1);
    // The shared key alike: neither the node's copy nor the environment answers instead.
    let (shared, shared_id) = shared();
    s.on_node(&shared_id, "OPENAI_API_KEY", NODE_KEY);
    let err = openai(&s.source(true), &shared).unwrap_err();
    assert!(matches!(err, CredentialError::Unavailable(_)), "{err:?}");
}

#[test]
fn a_cluster_stores_refusal_is_its_own_non_retryable_error() {
    let s = setup(Some(StoreErrorKind::Failed));
    let (key, id) = user("user1");
    s.on_node(&id, "OPENAI_API_KEY", NODE_KEY);
    let err = openai(&s.source(true), &key).unwrap_err();
    assert!(matches!(err, CredentialError::Vault { .. }), "{err:?}");
    assert!(
        err.to_string().ends_with("the memory store is down"),
        "{err}"
    );
}
