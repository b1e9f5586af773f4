//! [`VaultStore`]: entries in a KV v2 mount, read through a per-entry cache for the plugin, and
//! written, removed and listed for the operator CLI.
//!
//! See the module above for the path layout and the cache's rules. A read that Vault refuses
//! with 403 is told apart by `lookup-self`: a token Vault no longer takes is obtained again and
//! the read repeated once; a token that is fine lacks the `read` capability, which is the
//! error.

use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::VaultError;
use super::http::{Answer, VaultHttp};
use super::token::TokenKeeper;
use crate::config::VaultConfig;
use crate::credential_model::EntryId;
use crate::credential_model::names::{self, NameKind};

/// Entries kept in the cache at most (old ones are dropped first).
const MAX_CACHED: usize = 10_000;
/// How often `sys/health` is asked.
const HEALTH_PERIOD: Duration = Duration::from_secs(5);

/// One entry's variables.
pub type VaultEntry = BTreeMap<String, SecretString>;

/// An entry's fields exactly as Vault has them (for writes that must keep them all).
type RawEntry = serde_json::Map<String, serde_json::Value>;

/// Whether Vault answers, for the fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultHealth {
    Healthy,
    Unhealthy(String),
}

struct Cached {
    at: Instant,
    entry: Option<VaultEntry>,
}

/// A KV v2 mount holding users' keys.
pub struct VaultStore {
    config: VaultConfig,
    http: Arc<VaultHttp>,
    token: Arc<TokenKeeper>,
    cache: Mutex<HashMap<String, Cached>>,
    health: RwLock<VaultHealth>,
}

impl VaultStore {
    /// Set up the client and obtain and check the token. A token Vault refuses (or an
    /// unreadable token file) is an error; a Vault that cannot answer yet is not: the store
    /// then reports itself unhealthy until reads or the renewal loop obtain the token.
    pub async fn connect(
        config: &VaultConfig,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, VaultError> {
        let http = Arc::new(VaultHttp::new(config)?);
        let token = Arc::new(TokenKeeper::new(http.clone(), config.auth.clone()));
        let store = Arc::new(VaultStore {
            config: config.clone(),
            http,
            token: token.clone(),
            cache: Mutex::new(HashMap::new()),
            health: RwLock::new(VaultHealth::Healthy),
        });
        match token.refresh(None).await {
            Ok(()) => {}
            // Reads obtain it on demand (and answer with Vault's own error meanwhile); the
            // renewal loop keeps trying too.
            Err(err) if err.is_retryable() => {
                tracing::warn!(error = %err, "Vault cannot answer yet; polydev keeps trying");
                store.set_health(Err(&err));
            }
            Err(err) => return Err(err),
        }
        token.spawn_renewal(shutdown.clone());
        store.spawn_health_probe(shutdown);
        Ok(store)
    }

    /// `<path_prefix>/<namespace>/<user>/<provider>`, under `<mount>/data/`.
    pub fn entry_path(&self, id: &EntryId) -> String {
        format!(
            "{}/{}/{}/{}",
            self.config.path_prefix,
            id.namespace(),
            id.user(),
            id.provider()
        )
    }

    /// Where the entry is, as an operator would name it (`secret/polydev/default/u/openai`).
    pub fn display_path(&self, id: &EntryId) -> String {
        format!("{}/{}", self.config.mount, self.entry_path(id))
    }

    /// The policy path the plugin's token must be able to read.
    pub fn policy_path(&self) -> String {
        format!("{}/data/{}/*", self.config.mount, self.config.path_prefix)
    }

    pub fn health(&self) -> VaultHealth {
        self.health.read().clone()
    }

    /// The entry of `id` (`None`: there is none), through the cache.
    pub async fn read(&self, id: &EntryId) -> Result<Option<VaultEntry>, VaultError> {
        let path = self.entry_path(id);
        let now = Instant::now();
        if let Some(hit) = self.cached(&path, now, self.config.cache_ttl) {
            return Ok(hit);
        }
        match self.fetch(id).await {
            Ok(entry) => {
                self.set_health(Ok(()));
                self.remember(path, entry.clone(), now);
                Ok(entry)
            }
            Err(err) if err.is_retryable() => {
                self.set_health(Err(&err));
                let bound = self.config.cache_ttl + self.config.stale_if_error;
                match self.cached(&path, now, bound) {
                    Some(stale) => {
                        tracing::warn!(path = %self.display_path(id), error = %err, "Vault cannot answer; serving the cached entry");
                        Ok(stale)
                    }
                    None => Err(err),
                }
            }
            Err(err) => {
                self.forget(&path);
                Err(err)
            }
        }
    }

    fn cached(&self, path: &str, now: Instant, within: Duration) -> Option<Option<VaultEntry>> {
        let cache = self.cache.lock();
        cache
            .get(path)
            .filter(|c| now.saturating_duration_since(c.at) < within)
            .map(|c| c.entry.clone())
    }

    fn remember(&self, path: String, entry: Option<VaultEntry>, at: Instant) {
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED && !cache.contains_key(&path) {
            let bound = self.config.cache_ttl + self.config.stale_if_error;
            cache.retain(|_, c| at.saturating_duration_since(c.at) < bound);
            if cache.len() >= MAX_CACHED
                && let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, c)| c.at)
                    .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(path, Cached { at, entry });
    }

    fn forget(&self, path: &str) {
        self.cache.lock().remove(path);
    }

    fn set_health(&self, outcome: Result<(), &VaultError>) {
        let health = match outcome {
            Ok(()) => VaultHealth::Healthy,
            Err(err) => VaultHealth::Unhealthy(err.to_string()),
        };
        *self.health.write() = health;
    }

    fn spawn_health_probe(self: &Arc<Self>, shutdown: CancellationToken) {
        let store = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(HEALTH_PERIOD) => {}
                }
                let Some(store) = store.upgrade() else { return };
                let outcome = store.probe().await;
                store.set_health(outcome.as_ref().map(|_| ()));
            }
        });
    }

    /// `sys/health`: active or standby is healthy; sealed or uninitialised is not.
    async fn probe(&self) -> Result<(), VaultError> {
        let answer = self
            .http
            .call(Method::GET, "sys/health?standbyok=true", None, None)
            .await?;
        match answer.status.as_u16() {
            200 | 429 | 472 | 473 => Ok(()),
            503 => Err(VaultError::Sealed {
                address: self.http.address().to_string(),
            }),
            501 => Err(VaultError::Status {
                path: "sys/health".into(),
                status: 501,
                message: "Vault is not initialised (`bao operator init`)".into(),
            }),
            status => Err(VaultError::Status {
                path: "sys/health".into(),
                status,
                message: answer.errors(),
            }),
        }
    }

    /// `call` with the current token (obtained first if there is none yet, so Vault's own
    /// error is the answer). A 403 for a token Vault no longer takes obtains a new one and
    /// repeats the call once.
    async fn authorised(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, VaultError> {
        let mut refreshed = false;
        loop {
            let Some(token) = self.token.current() else {
                self.token.refresh(None).await?;
                refreshed = true;
                continue;
            };
            let answer = self
                .http
                .call(method.clone(), path, body, Some(&token))
                .await?;
            if answer.status != StatusCode::FORBIDDEN || refreshed {
                return Ok(answer);
            }
            // Refused: by policy (the answer stands), or for a token that died meanwhile.
            let replaced = self
                .token
                .current()
                .is_some_and(|now| now.expose_secret() != token.expose_secret());
            if !replaced && self.token.is_valid(&token).await? {
                return Ok(answer);
            }
            self.token.refresh(Some(&token)).await?;
            refreshed = true;
        }
    }

    fn status_error(&self, answer: &Answer, path: String, capability: &'static str) -> VaultError {
        match answer.status {
            StatusCode::FORBIDDEN => VaultError::Denied {
                path,
                capability,
                policy_path: self.policy_path(),
            },
            StatusCode::SERVICE_UNAVAILABLE => VaultError::Sealed {
                address: self.http.address().to_string(),
            },
            status => VaultError::Status {
                path,
                status: status.as_u16(),
                message: answer.errors(),
            },
        }
    }

    /// The entry's fields as Vault has them now (all of them, also ones polydev does not use),
    /// with its version (0: none), bypassing the cache.
    async fn fetch_raw(&self, id: &EntryId) -> Result<(Option<RawEntry>, u64), VaultError> {
        let data = format!("{}/data/{}", self.config.mount, self.entry_path(id));
        let mut answer = self.authorised(Method::GET, &data, None).await?;
        let version = answer
            .body
            .pointer("/data/metadata/version")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        match answer.status {
            StatusCode::OK => {}
            // No entry: a 404 without error text (a deleted latest version still names its
            // version). One with text ("no handler for route") means a wrong mount.
            StatusCode::NOT_FOUND if answer.errors().is_empty() => return Ok((None, version)),
            StatusCode::NOT_FOUND => {
                return Err(VaultError::Status {
                    path: self.display_path(id),
                    status: 404,
                    message: format!(
                        "{}; is vault.mount {:?} a KV version 2 mount?",
                        answer.errors(),
                        self.config.mount
                    ),
                });
            }
            _ => return Err(self.status_error(&answer, self.display_path(id), "read")),
        }
        match answer
            .body
            .pointer_mut("/data/data")
            .map(serde_json::Value::take)
        {
            Some(serde_json::Value::Object(fields)) => Ok((Some(fields), version)),
            _ => Err(VaultError::Malformed {
                path: self.display_path(id),
                problem: "the answer has no data.data object (is this a KV version 2 mount?)"
                    .into(),
                fix: self.put_command(id),
            }),
        }
    }

    /// The entry's variables polydev can use: string values under valid variable names.
    async fn fetch(&self, id: &EntryId) -> Result<Option<VaultEntry>, VaultError> {
        let Some(fields) = self.fetch_raw(id).await?.0 else {
            return Ok(None);
        };
        let mut entry = VaultEntry::new();
        for (name, value) in fields {
            if names::check(NameKind::Variable, &name).is_err() {
                continue;
            }
            let serde_json::Value::String(text) = value else {
                return Err(VaultError::Malformed {
                    path: self.display_path(id),
                    problem: format!("the value of {name} is not a string"),
                    fix: self.put_command(id),
                });
            };
            entry.insert(name, SecretString::from(text));
        }
        Ok(Some(entry))
    }

    /// The Vault CLI command that writes the entry again (the value on stdin).
    fn put_command(&self, id: &EntryId) -> String {
        format!(
            "printf %s \"$KEY\" | bao kv put -mount={} {} VARIABLE=-",
            self.config.mount,
            self.entry_path(id)
        )
    }

    /// Store `value` as `variable` of `id`, keeping the entry's other variables (a check-and-set
    /// write: a concurrent change makes this fail rather than be lost).
    pub async fn set(
        &self,
        id: &EntryId,
        variable: &str,
        value: &SecretString,
    ) -> Result<(), VaultError> {
        let (entry, version) = self.fetch_raw(id).await?;
        let mut data = entry.unwrap_or_default();
        data.insert(variable.to_string(), json!(value.expose_secret()));
        let body = json!({ "data": data, "options": { "cas": version } });
        let path = format!("{}/data/{}", self.config.mount, self.entry_path(id));
        let answer = self.authorised(Method::POST, &path, Some(&body)).await?;
        if !answer.status.is_success() {
            return Err(self.status_error(&answer, self.display_path(id), "update"));
        }
        self.forget(&self.entry_path(id));
        Ok(())
    }

    /// Remove `variable` of `id` (other variables stay), or with `None` the entry and all its
    /// versions. Returns the variables removed; empty when there was nothing to remove.
    pub async fn remove(
        &self,
        id: &EntryId,
        variable: Option<&str>,
    ) -> Result<Vec<String>, VaultError> {
        let (entry, version) = self.fetch_raw(id).await?;
        let Some(mut rest) = entry else {
            return Ok(Vec::new());
        };
        let removed: Vec<String> = match variable {
            Some(v) if rest.contains_key(v) => vec![v.to_string()],
            Some(_) => return Ok(Vec::new()),
            None => std::mem::take(&mut rest)
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
        };
        for name in &removed {
            rest.remove(name);
        }
        let answer = if rest.is_empty() {
            let path = format!("{}/metadata/{}", self.config.mount, self.entry_path(id));
            self.authorised(Method::DELETE, &path, None).await?
        } else {
            let path = format!("{}/data/{}", self.config.mount, self.entry_path(id));
            let body = json!({ "data": rest, "options": { "cas": version } });
            self.authorised(Method::POST, &path, Some(&body)).await?
        };
        if !answer.status.is_success() {
            return Err(self.status_error(&answer, self.display_path(id), "delete"));
        }
        self.forget(&self.entry_path(id));
        Ok(removed)
    }

    /// Every entry under the prefix (narrowed to a namespace and a user), with its variable
    /// names and when it was last written.
    pub async fn list(
        &self,
        namespace: Option<&str>,
        user: Option<&str>,
    ) -> Result<Vec<(EntryId, Option<SystemTime>, Vec<String>)>, VaultError> {
        let mut out = Vec::new();
        let namespaces = match namespace {
            Some(ns) => vec![ns.to_string()],
            None => self.keys(&self.config.path_prefix).await?,
        };
        for ns in namespaces {
            let users = match user {
                Some(u) => vec![u.to_string()],
                None => {
                    self.keys(&format!("{}/{ns}", self.config.path_prefix))
                        .await?
                }
            };
            for u in users {
                let prefix = format!("{}/{ns}/{u}", self.config.path_prefix);
                for provider in self.keys(&prefix).await? {
                    let id = if ns == names::SHARED_NAMESPACE && u == names::SHARED_USER {
                        EntryId::shared(&provider)
                    } else {
                        EntryId::new(&ns, &u, &provider)
                    };
                    // Names polydev would never write are someone else's business.
                    let Ok(id) = id else { continue };
                    let Some(entry) = self.fetch_raw(&id).await?.0 else {
                        continue;
                    };
                    let updated = self.updated(&id).await?;
                    out.push((id, updated, entry.into_iter().map(|(k, _)| k).collect()));
                }
            }
        }
        Ok(out)
    }

    /// The names one level under `path` (directories without their trailing `/`).
    async fn keys(&self, path: &str) -> Result<Vec<String>, VaultError> {
        let list = format!("{}/metadata/{path}?list=true", self.config.mount);
        let answer = self.authorised(Method::GET, &list, None).await?;
        match answer.status {
            StatusCode::OK => Ok(answer
                .body
                .pointer("/data/keys")
                .and_then(|k| k.as_array())
                .map(|keys| {
                    keys.iter()
                        .filter_map(|k| k.as_str())
                        .map(|k| k.trim_end_matches('/').to_string())
                        .collect()
                })
                .unwrap_or_default()),
            StatusCode::NOT_FOUND => Ok(Vec::new()),
            _ => Err(self.status_error(
                &answer,
                format!("{}/metadata/{path}", self.config.mount),
                "list",
            )),
        }
    }

    async fn updated(&self, id: &EntryId) -> Result<Option<SystemTime>, VaultError> {
        let path = format!("{}/metadata/{}", self.config.mount, self.entry_path(id));
        let answer = self.authorised(Method::GET, &path, None).await?;
        if !answer.status.is_success() {
            return Ok(None);
        }
        Ok(answer
            .body
            .pointer("/data/updated_time")
            .and_then(|t| t.as_str())
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(SystemTime::from))
    }
}
