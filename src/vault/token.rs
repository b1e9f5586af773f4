//! polydev's own Vault token: obtained (read from `token_file`, or an AppRole login), checked
//! with `lookup-self`, renewed before it expires, and obtained again when Vault stops taking it.
//!
//! Invariants:
//! - The token (and an AppRole secret id) lives in a [`SecretString`] here and in the
//!   `X-Vault-Token` header, nowhere else: not in an error, a log line or a file of polydev's.
//! - `token_file`, `role_id_file` and `secret_id_file` are read only if they are private to the
//!   user polydev runs as (opened with `O_NOFOLLOW`, owned by its euid, no permission for group
//!   or others), as the credential store's own files; otherwise the error names the file, the
//!   owner and mode found, and the `chown`/`chmod` that fixes them.
//! - A renewable token with a TTL is renewed at two thirds of its TTL; when renewal fails (the
//!   token reached its max TTL, or was revoked) a new one is obtained the same way as the first.
//!   A failed attempt is retried with a backoff from 1 s to 30 s, never in a tight loop.

use parking_lot::RwLock;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::VaultError;
use super::http::VaultHttp;
use crate::config::VaultAuth;
use crate::private_file as private;

/// What `lookup-self` or a login says of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenInfo {
    /// Time left; `None` for a token that never expires (a root token).
    pub ttl: Option<Duration>,
    pub renewable: bool,
}

/// The token in use and what Vault said of it.
struct Held {
    token: SecretString,
    info: TokenInfo,
}

/// What the renewal loop does next.
enum Next {
    Renew,
    Obtain,
    Check,
}

/// Holds the current token and keeps it valid.
pub struct TokenKeeper {
    http: Arc<VaultHttp>,
    auth: VaultAuth,
    held: RwLock<Option<Held>>,
    /// One login at a time: concurrent refusals share one new token (an AppRole secret id
    /// may allow few uses).
    login: tokio::sync::Mutex<()>,
    /// Woken when a new token is in place, so the renewal loop plans from it.
    changed: Arc<tokio::sync::Notify>,
}

impl TokenKeeper {
    pub fn new(http: Arc<VaultHttp>, auth: VaultAuth) -> Self {
        TokenKeeper {
            http,
            auth,
            held: RwLock::new(None),
            login: tokio::sync::Mutex::new(()),
            changed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// The current token, if one was obtained.
    pub fn current(&self) -> Option<SecretString> {
        self.held.read().as_ref().map(|held| held.token.clone())
    }

    fn info(&self) -> Option<TokenInfo> {
        self.held.read().as_ref().map(|held| held.info)
    }

    /// Obtain a new token (file or AppRole, checked with `lookup-self`) in place of `stale`
    /// (`None`: there is none yet) — unless another caller already replaced it meanwhile.
    pub async fn refresh(&self, stale: Option<&SecretString>) -> Result<(), VaultError> {
        let _one_login = self.login.lock().await;
        let now = self.current();
        let replaced = match (&now, stale) {
            (Some(now), Some(stale)) => now.expose_secret() != stale.expose_secret(),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if replaced {
            return Ok(());
        }
        let token = match &self.auth {
            VaultAuth::TokenFile(path) => read_secret_file(path, "vault.token_file")?,
            VaultAuth::AppRole {
                mount,
                role_id_file,
                secret_id_file,
            } => {
                let role_id = read_secret_file(role_id_file, "vault.approle.role_id_file")?;
                let secret_id = read_secret_file(secret_id_file, "vault.approle.secret_id_file")?;
                self.approle_login(mount, &role_id, &secret_id).await?
            }
        };
        let info = self.lookup(&token).await?;
        *self.held.write() = Some(Held { token, info });
        self.changed.notify_waiters();
        Ok(())
    }

    async fn approle_login(
        &self,
        mount: &str,
        role_id: &SecretString,
        secret_id: &SecretString,
    ) -> Result<SecretString, VaultError> {
        let body = json!({
            "role_id": role_id.expose_secret(),
            "secret_id": secret_id.expose_secret(),
        });
        let path = format!("auth/{mount}/login");
        let answer = self
            .http
            .call(Method::POST, &path, Some(&body), None)
            .await?;
        if !answer.status.is_success() {
            return Err(VaultError::Token {
                reason: format!(
                    "the AppRole login at auth/{mount} was refused ({}: {})",
                    answer.status.as_u16(),
                    answer.errors()
                ),
                fix: "check the role id and secret id files, that the secret id is not used up \
                      or expired, and vault.approle.mount"
                    .into(),
            });
        }
        answer
            .body
            .pointer("/auth/client_token")
            .and_then(|t| t.as_str())
            .map(|t| SecretString::from(t.to_string()))
            .ok_or_else(|| VaultError::Token {
                reason: format!("the AppRole login at auth/{mount} returned no token"),
                fix: "check that the mount is an AppRole auth method".into(),
            })
    }

    /// `lookup-self` with `token`: whether Vault takes it, and for how long.
    async fn lookup(&self, token: &SecretString) -> Result<TokenInfo, VaultError> {
        let answer = self
            .http
            .call(Method::GET, "auth/token/lookup-self", None, Some(token))
            .await?;
        match answer.status {
            status if status.is_success() => Ok(info_of(&answer.body, "/data")),
            StatusCode::FORBIDDEN => Err(VaultError::Token {
                reason: "Vault does not accept it (expired, revoked or wrong)".into(),
                fix: self.fix(),
            }),
            StatusCode::SERVICE_UNAVAILABLE => Err(VaultError::Sealed {
                address: self.http.address().to_string(),
            }),
            status => Err(VaultError::Status {
                path: "auth/token/lookup-self".into(),
                status: status.as_u16(),
                message: answer.errors(),
            }),
        }
    }

    /// Whether Vault still takes `token` (a refused read may be a missing policy or a dead
    /// token; this tells which).
    pub async fn is_valid(&self, token: &SecretString) -> Result<bool, VaultError> {
        match self.lookup(token).await {
            Ok(_) => Ok(true),
            Err(VaultError::Token { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Renew the current token; what Vault says of it afterwards.
    async fn renew(&self, token: &SecretString) -> Result<TokenInfo, VaultError> {
        let answer = self
            .http
            .call(
                Method::POST,
                "auth/token/renew-self",
                Some(&json!({})),
                Some(token),
            )
            .await?;
        if answer.status.is_success() {
            Ok(info_of(&answer.body, "/auth"))
        } else {
            Err(VaultError::Token {
                reason: format!(
                    "renewing it was refused ({}: {})",
                    answer.status.as_u16(),
                    answer.errors()
                ),
                fix: self.fix(),
            })
        }
    }

    fn fix(&self) -> String {
        match &self.auth {
            VaultAuth::TokenFile(path) => format!(
                "write a valid token into {} (it is read again when Vault refuses the one in use)",
                path.display()
            ),
            VaultAuth::AppRole { mount, .. } => format!(
                "check the AppRole role at auth/{mount} and its secret id; polydev logs in again \
                 by itself"
            ),
        }
    }

    /// Keep a token valid until `shutdown` or until the keeper is dropped: obtain one while
    /// there is none, renew a renewable one at 2/3 of its TTL, obtain a new one at 2/3 of the
    /// TTL once renewal stops extending it (its max TTL) or for a token that cannot be renewed.
    pub fn spawn_renewal(self: &Arc<Self>, shutdown: CancellationToken) {
        let keeper = Arc::downgrade(self);
        let changed = self.changed.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            let mut failed = false;
            loop {
                let Some(strong) = keeper.upgrade() else {
                    return;
                };
                let (wait, next) = match strong.info() {
                    None => (Duration::ZERO, Next::Obtain),
                    Some(TokenInfo { ttl: None, .. }) => (Duration::from_secs(300), Next::Check),
                    Some(TokenInfo {
                        ttl: Some(ttl),
                        renewable,
                    }) => (
                        (ttl * 2 / 3).max(Duration::from_millis(500)),
                        if renewable { Next::Renew } else { Next::Obtain },
                    ),
                };
                let wait = if failed { backoff } else { wait };
                drop(strong);
                let new_token = changed.notified();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = new_token => continue,
                    _ = tokio::time::sleep(wait) => {}
                }
                let Some(keeper) = keeper.upgrade() else {
                    return;
                };
                match keeper.step(next).await {
                    Ok(()) => {
                        failed = false;
                        backoff = Duration::from_secs(1);
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot renew or replace polydev's Vault token; retrying");
                        failed = true;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
    }

    async fn step(&self, next: Next) -> Result<(), VaultError> {
        let current = self.current();
        let Some(token) = current.as_ref() else {
            return self.refresh(None).await;
        };
        match next {
            Next::Obtain => self.refresh(Some(token)).await,
            Next::Check => match self.is_valid(token).await? {
                true => Ok(()),
                false => self.refresh(Some(token)).await,
            },
            Next::Renew => {
                let before = self.info().and_then(|info| info.ttl);
                let after = match self.renew(token).await {
                    Ok(info) => info,
                    Err(_) => return self.refresh(Some(token)).await,
                };
                // Renewal no longer extends the token (its max TTL is near): obtain a new one
                // before it expires instead of renewing again.
                let capped = match (after.ttl, before) {
                    (None, _) => return self.refresh(Some(token)).await,
                    (Some(after), Some(before)) => after < before,
                    (Some(_), None) => false,
                };
                let mut held = self.held.write();
                if let Some(held) = held
                    .as_mut()
                    .filter(|h| h.token.expose_secret() == token.expose_secret())
                {
                    held.info = TokenInfo {
                        ttl: after.ttl,
                        renewable: !capped,
                    };
                }
                Ok(())
            }
        }
    }
}

/// `ttl`/`renewable` from `lookup-self` (`/data`: `ttl`, `renewable`) or a login or renewal
/// (`/auth`: `lease_duration`, `renewable`).
fn info_of(body: &serde_json::Value, at: &str) -> TokenInfo {
    let section = body.pointer(at);
    let seconds = section
        .and_then(|s| s.get("ttl").or_else(|| s.get("lease_duration")))
        .and_then(|t| t.as_u64())
        .unwrap_or(0);
    TokenInfo {
        ttl: (seconds > 0).then(|| Duration::from_secs(seconds)),
        renewable: section
            .and_then(|s| s.get("renewable"))
            .and_then(|r| r.as_bool())
            .unwrap_or(false),
    }
}

/// Largest token or AppRole file read (Vault tokens are at most a few hundred bytes).
const SECRET_FILE_LIMIT: u64 = 64 * 1024;

/// A one-line secret from an operator's file (a trailing newline is dropped). The file must be
/// private to the user polydev runs as, like the credential store's files
/// ([`private::read_operator_secret`]): anyone else who can read it can act as polydev in Vault.
fn read_secret_file(
    path: &std::path::Path,
    what: &'static str,
) -> Result<SecretString, VaultError> {
    let bytes = private::read_operator_secret(path, SECRET_FILE_LIMIT)
        .map_err(|source| VaultError::PrivateFile { what, source })?;
    let text = String::from_utf8(bytes).map_err(|_| VaultError::File {
        what,
        path: path.display().to_string(),
        reason: "it is not UTF-8 text".into(),
    })?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() || value.contains(['\n', '\r']) {
        return Err(VaultError::File {
            what,
            path: path.display().to_string(),
            reason: "it must hold exactly one line".into(),
        });
    }
    Ok(SecretString::from(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ttl_and_renewable_are_read_from_either_shape() {
        let lookup = json!({"data": {"ttl": 90, "renewable": true}});
        assert_eq!(
            info_of(&lookup, "/data"),
            TokenInfo {
                ttl: Some(Duration::from_secs(90)),
                renewable: true
            }
        );
        let root = json!({"data": {"ttl": 0, "renewable": false}});
        assert_eq!(info_of(&root, "/data").ttl, None);
        let login = json!({"auth": {"lease_duration": 20, "renewable": true}});
        assert_eq!(info_of(&login, "/auth").ttl, Some(Duration::from_secs(20)));
    }

    #[test]
    fn secret_files_hold_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s.abc\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_secret_file(&path, "vault.token_file")
                .unwrap()
                .expose_secret(),
            "s.abc"
        );
        std::fs::write(&path, "a\nb\n").unwrap();
        let err = read_secret_file(&path, "vault.token_file").unwrap_err();
        assert!(err.to_string().contains("exactly one line"), "{err}");
        assert!(!err.to_string().contains("a\nb"));
    }

    #[test]
    fn secret_files_others_can_read_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault-token");
        std::fs::write(&path, "s.secret-token\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret_file(&path, "vault.token_file")
            .unwrap_err()
            .to_string();
        let path = path.display();
        assert!(
            err.starts_with(&format!(
                "vault.token_file: refusing to use {path}: it is owned by uid"
            )),
            "{err}"
        );
        assert!(err.contains("with mode 0644"), "{err}");
        assert!(
            err.ends_with(&format!(": {path} && chmod 0600 {path}")),
            "{err}"
        );
        assert!(!err.contains("s.secret-token"), "{err}");
    }
}
