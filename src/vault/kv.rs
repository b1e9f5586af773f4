//! [`VaultStore`]: entries in a KV v2 mount, read through a per-entry cache for the plugin, and
//! written, removed and listed for the operator CLI.
//!
//! See the module above for the path layout and the cache's rules. A read that Vault refuses
//! with 403 is told apart by `lookup-self`: a token Vault no longer takes is obtained again and
//! the read repeated once; a token that is fine lacks the `read` capability, which is the
//! error.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
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
use crate::credentials::EntryId;
use crate::credentials::names::{self, NameKind};

/// Entries kept in the cache at most (old ones are dropped first).
const MAX_CACHED: usize = 10_000;
/// How often `sys/health` is asked.
const HEALTH_PERIOD: Duration = Duration::from_secs(5);

/// One entry's variables.
pub type VaultEntry = BTreeMap<String, SecretString>;

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
    /// then reports itself unhealthy and obtains the token in the background.
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
        match token.obtain().await {
            Ok(info) => token.spawn_renewal(info, shutdown.clone()),
            Err(err) if err.is_retryable() => {
                store.set_health(Err(&err));
                let retry = token.clone();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    let mut backoff = Duration::from_secs(1);
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        if let Ok(info) = retry.obtain().await {
                            retry.spawn_renewal(info, stop);
                            return;
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                });
            }
            Err(err) => return Err(err),
        }
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
        self.health
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(path)
            .filter(|c| now.saturating_duration_since(c.at) < within)
            .map(|c| c.entry.clone())
    }

    fn remember(&self, path: String, entry: Option<VaultEntry>, at: Instant) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
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
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path);
    }

    fn set_health(&self, outcome: Result<(), &VaultError>) {
        let health = match outcome {
            Ok(()) => VaultHealth::Healthy,
            Err(err) => VaultHealth::Unhealthy(err.to_string()),
        };
        *self.health.write().unwrap_or_else(|e| e.into_inner()) = health;
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
            _ => Err(VaultError::Sealed {
                address: self.http.address().to_string(),
            }),
        }
    }

    /// `call` with the current token; a 403 from a token Vault no longer takes obtains a new
    /// token and repeats the call once.
    async fn authorised(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, VaultError> {
        for attempt in 0..2 {
            let token = self.token.current().ok_or_else(|| VaultError::Token {
                reason: "none was obtained yet (Vault could not be reached at start)".into(),
                fix: "start or unseal Vault; polydev keeps trying".into(),
            })?;
            let answer = self
                .http
                .call(method.clone(), path, body, Some(&token))
                .await?;
            if answer.status == StatusCode::FORBIDDEN
                && attempt == 0
                && !self.token.still_valid().await?
            {
                self.token.obtain().await?;
                continue;
            }
            return Ok(answer);
        }
        unreachable!("the loop returns on its second pass")
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

    /// The entry as Vault has it now, with its version (0: none), bypassing the cache.
    async fn fetch_versioned(&self, id: &EntryId) -> Result<(Option<VaultEntry>, u64), VaultError> {
        let data = format!("{}/data/{}", self.config.mount, self.entry_path(id));
        let answer = self.authorised(Method::GET, &data, None).await?;
        match answer.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                // A deleted latest version is a 404 that still names its version.
                let version = answer
                    .body
                    .pointer("/data/metadata/version")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                return Ok((None, version));
            }
            _ => return Err(self.status_error(&answer, self.display_path(id), "read")),
        }
        let version = answer
            .body
            .pointer("/data/metadata/version")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        let Some(fields) = answer
            .body
            .pointer("/data/data")
            .and_then(|d| d.as_object())
        else {
            return Ok((None, version));
        };
        let mut entry = VaultEntry::new();
        for (name, value) in fields {
            let Some(text) = value.as_str() else {
                return Err(VaultError::Malformed {
                    path: self.display_path(id),
                    problem: format!("the value of {name} is not a string"),
                    fix: format!("polydev credentials set --backend vault … --variable {name}"),
                });
            };
            if names::check(NameKind::Variable, name).is_ok() {
                entry.insert(name.clone(), SecretString::from(text.to_string()));
            }
        }
        Ok((Some(entry), version))
    }

    async fn fetch(&self, id: &EntryId) -> Result<Option<VaultEntry>, VaultError> {
        Ok(self.fetch_versioned(id).await?.0)
    }

    /// Store `value` as `variable` of `id`, keeping the entry's other variables (a check-and-set
    /// write: a concurrent change makes this fail rather than be lost).
    pub async fn set(
        &self,
        id: &EntryId,
        variable: &str,
        value: &SecretString,
    ) -> Result<(), VaultError> {
        let (entry, version) = self.fetch_versioned(id).await?;
        let mut data = serde_json::Map::new();
        for (name, old) in entry.unwrap_or_default() {
            data.insert(name, json!(old.expose_secret()));
        }
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
        let (entry, version) = self.fetch_versioned(id).await?;
        let Some(entry) = entry else {
            return Ok(Vec::new());
        };
        let removed: Vec<String> = match variable {
            Some(v) if entry.contains_key(v) => vec![v.to_string()],
            Some(_) => return Ok(Vec::new()),
            None => entry.keys().cloned().collect(),
        };
        let rest: serde_json::Map<String, serde_json::Value> = entry
            .iter()
            .filter(|(name, _)| !removed.contains(name))
            .map(|(name, value)| (name.clone(), json!(value.expose_secret())))
            .collect();
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
                    let (entry, _) = self.fetch_versioned(&id).await?;
                    let Some(entry) = entry else { continue };
                    let updated = self.updated(&id).await?;
                    out.push((id, updated, entry.into_keys().collect()));
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
