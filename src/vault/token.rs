//! polydev's own Vault token: obtained (read from `token_file`, or an AppRole login), checked
//! with `lookup-self`, renewed before it expires, and obtained again when Vault stops taking it.
//!
//! Invariants:
//! - The token (and an AppRole secret id) lives in a [`SecretString`] here and in the
//!   `X-Vault-Token` header, nowhere else: not in an error, a log line or a file of polydev's.
//! - A renewable token with a TTL is renewed at two thirds of its TTL; when renewal fails (the
//!   token reached its max TTL, or was revoked) a new one is obtained the same way as the first.
//!   A failed attempt is retried with a backoff from 1 s to 30 s, never in a tight loop.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::VaultError;
use super::http::VaultHttp;
use crate::config::VaultAuth;

/// What `lookup-self` or a login says of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenInfo {
    /// Time left; `None` for a token that never expires (a root token).
    pub ttl: Option<Duration>,
    pub renewable: bool,
}

/// Holds the current token and keeps it valid.
pub struct TokenKeeper {
    http: Arc<VaultHttp>,
    auth: VaultAuth,
    token: RwLock<Option<SecretString>>,
}

impl TokenKeeper {
    pub fn new(http: Arc<VaultHttp>, auth: VaultAuth) -> Self {
        TokenKeeper {
            http,
            auth,
            token: RwLock::new(None),
        }
    }

    /// The current token, if one was obtained.
    pub fn current(&self) -> Option<SecretString> {
        self.token.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Obtain a token (file or AppRole) and check it with `lookup-self`.
    pub async fn obtain(&self) -> Result<TokenInfo, VaultError> {
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
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = Some(token);
        Ok(info)
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

    /// Whether the current token is still good (a failed read may be a missing policy or a
    /// dead token; this tells which).
    pub async fn still_valid(&self) -> Result<bool, VaultError> {
        let Some(token) = self.current() else {
            return Ok(false);
        };
        match self.lookup(&token).await {
            Ok(_) => Ok(true),
            Err(VaultError::Token { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Renew the current token; its new TTL.
    async fn renew(&self) -> Result<TokenInfo, VaultError> {
        let token = self.current().ok_or_else(|| VaultError::Token {
            reason: "there is no token to renew".into(),
            fix: self.fix(),
        })?;
        let answer = self
            .http
            .call(
                Method::POST,
                "auth/token/renew-self",
                Some(&json!({})),
                Some(&token),
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

    /// Keep the token valid until `shutdown`: renew at 2/3 of its TTL, obtain a new one when
    /// renewal fails.
    pub fn spawn_renewal(self: &Arc<Self>, mut info: TokenInfo, shutdown: CancellationToken) {
        let keeper = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                let wait = match info.ttl {
                    Some(ttl) => (ttl * 2 / 3).max(Duration::from_millis(500)),
                    // A token without expiry: look again now and then, in case it is revoked
                    // and a new one must be read.
                    None => Duration::from_secs(300),
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                let Some(keeper) = keeper.upgrade() else {
                    return;
                };
                let renewed = if info.renewable && info.ttl.is_some() {
                    keeper.renew().await
                } else {
                    keeper.still_valid().await.and_then(|valid| {
                        if valid {
                            Ok(info)
                        } else {
                            Err(VaultError::Token {
                                reason: "it is no longer valid".into(),
                                fix: keeper.fix(),
                            })
                        }
                    })
                };
                let next = match renewed {
                    Ok(next) => Ok(next),
                    Err(_) => keeper.obtain().await,
                };
                match next {
                    Ok(next) => {
                        info = next;
                        backoff = Duration::from_secs(1);
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot renew or replace polydev's Vault token; retrying");
                        info = TokenInfo {
                            ttl: Some(backoff * 3 / 2),
                            renewable: false,
                        };
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
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

/// A one-line secret from an operator's file (a trailing newline is dropped).
fn read_secret_file(
    path: &std::path::Path,
    what: &'static str,
) -> Result<SecretString, VaultError> {
    let text = std::fs::read_to_string(path).map_err(|e| VaultError::File {
        what,
        path: path.display().to_string(),
        reason: e.to_string(),
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
}
