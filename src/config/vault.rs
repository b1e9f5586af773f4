//! The plugin config's `vault {}` block: users' keys in Vault or OpenBao (KV v2), one store for
//! every client node.
//!
//! ```hcl
//! vault {
//!   address     = "https://vault.service.consul:8200"
//!   mount       = "secret"     # a KV v2 mount
//!   path_prefix = "polydev"    # entry: <mount>/data/<prefix>/<nomad namespace>/<user_id>/<provider>
//!   token_file  = "/etc/polydev/vault-token"
//!   # or: approle { role_id_file = "...", secret_id_file = "...", mount = "approle" }
//!   ca_file         = ""
//!   namespace       = ""       # Vault Enterprise / OpenBao namespace
//!   cache_ttl       = "30s"
//!   stale_if_error  = "5m"
//!   request_timeout = "10s"
//! }
//! ```
//!
//! Invariants of a decoded [`VaultConfig`]:
//! - `address` is `https://host[:port]`, or `http://` to a loopback address only (a local Vault
//!   Agent or a dev server), with no path: a token never crosses a network in clear text.
//! - `mount` and `path_prefix` are `/`-separated segments of `[A-Za-z0-9_.-]`, none `.` or `..`.
//! - Exactly one way to authenticate: `token_file` or `approle`; every file path is absolute.
//! - Durations are positive and bounded.

use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;
use super::cty::Obj;
use super::duration;
use super::hclspec::{Spec, attr, block, default, hcl_string, literal, object};

/// Default for `vault.mount`.
pub const DEFAULT_MOUNT: &str = "secret";
/// Default for `vault.path_prefix`.
pub const DEFAULT_PATH_PREFIX: &str = "polydev";
/// Default for `vault.cache_ttl`.
pub const DEFAULT_CACHE_TTL: &str = "30s";
/// Default for `vault.stale_if_error`.
pub const DEFAULT_STALE_IF_ERROR: &str = "5m";
/// Default for `vault.request_timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: &str = "10s";
/// Default for `vault.approle.mount`.
pub const DEFAULT_APPROLE_MOUNT: &str = "approle";

/// Where users' keys live in Vault, and how polydev logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultConfig {
    /// `https://host[:port]` (or `http://` to loopback), no trailing slash.
    pub address: String,
    pub mount: String,
    pub path_prefix: String,
    pub auth: VaultAuth,
    /// Extra CA certificates (PEM) to check `address` against, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Sent as `X-Vault-Namespace` when set.
    pub namespace: Option<String>,
    /// How long a read entry (or its absence) is served without asking Vault again.
    pub cache_ttl: Duration,
    /// How long past `cache_ttl` a cached entry is still served while Vault cannot answer.
    pub stale_if_error: Duration,
    /// Per request to Vault.
    pub request_timeout: Duration,
}

/// How polydev gets its Vault token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    /// A token read from this file (re-read when Vault stops accepting the one in memory).
    TokenFile(PathBuf),
    /// AppRole login with the role and secret ids read from these files.
    AppRole {
        mount: String,
        role_id_file: PathBuf,
        secret_id_file: PathBuf,
    },
}

/// The `vault {}` block's object.
pub fn vault_schema() -> Spec {
    fn with_default<'a>(name: &'a str, value: &str) -> (&'a str, Spec) {
        (
            name,
            default(attr(name, "string", false), literal(&hcl_string(value))),
        )
    }
    let approle = object([
        ("role_id_file", attr("role_id_file", "string", true)),
        ("secret_id_file", attr("secret_id_file", "string", true)),
        with_default("mount", DEFAULT_APPROLE_MOUNT),
    ]);
    object([
        ("address", attr("address", "string", true)),
        with_default("mount", DEFAULT_MOUNT),
        with_default("path_prefix", DEFAULT_PATH_PREFIX),
        with_default("token_file", ""),
        ("approle", block("approle", false, approle)),
        with_default("ca_file", ""),
        with_default("namespace", ""),
        with_default("cache_ttl", DEFAULT_CACHE_TTL),
        with_default("stale_if_error", DEFAULT_STALE_IF_ERROR),
        with_default("request_timeout", DEFAULT_REQUEST_TIMEOUT),
    ])
}

pub(crate) fn vault(obj: &Obj<'_>) -> Result<VaultConfig, ConfigError> {
    let address = match obj.string("address")? {
        Some(address) => address_of(&address, &obj.field("address"))?,
        None => {
            return Err(ConfigError::missing(
                obj.field("address"),
                "set address to the Vault or OpenBao server, such as \
                 \"https://vault.service.consul:8200\"",
            ));
        }
    };
    let optional = |key: &str| -> Result<Option<String>, ConfigError> {
        Ok(obj.string(key)?.filter(|s| !s.is_empty()))
    };
    let path = |key: &str, fallback: &str| -> Result<String, ConfigError> {
        let text = obj.string(key)?.unwrap_or_else(|| fallback.to_string());
        segments(&text, &obj.field(key), fallback)
    };
    let token_file = optional("token_file")?
        .map(|p| file(&p, &obj.field("token_file")))
        .transpose()?;
    let approle = match obj.object("approle")? {
        None => None,
        Some(o) => Some(approle(&o)?),
    };
    let auth = match (token_file, approle) {
        (Some(path), None) => VaultAuth::TokenFile(path),
        (None, Some(approle)) => approle,
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                obj.field("token_file"),
                "both token_file and an approle block are set",
                "keep one of them: token_file for a token you manage, approle to let polydev \
                 log in itself",
            ));
        }
        (None, None) => {
            return Err(ConfigError::missing(
                obj.field("token_file"),
                "set token_file to a file holding polydev's Vault token, or add an approle { \
                 role_id_file, secret_id_file } block",
            ));
        }
    };
    let bounded = |key: &str, fallback: &str, max_secs: u64| {
        duration::field(obj, key, fallback, Duration::from_secs(max_secs))
    };
    Ok(VaultConfig {
        address,
        mount: path("mount", DEFAULT_MOUNT)?,
        path_prefix: path("path_prefix", DEFAULT_PATH_PREFIX)?,
        auth,
        ca_file: optional("ca_file")?
            .map(|p| file(&p, &obj.field("ca_file")))
            .transpose()?,
        namespace: optional("namespace")?
            .map(|ns| segments(&ns, &obj.field("namespace"), "team-a"))
            .transpose()?,
        cache_ttl: bounded("cache_ttl", DEFAULT_CACHE_TTL, 3600)?,
        stale_if_error: bounded("stale_if_error", DEFAULT_STALE_IF_ERROR, 86_400)?,
        request_timeout: bounded("request_timeout", DEFAULT_REQUEST_TIMEOUT, 300)?,
    })
}

impl VaultConfig {
    /// The settings of the operator CLI's `--backend vault` (the same checks as the plugin
    /// block's; `field` names the option in errors). The cache is off: an operator reads what
    /// Vault has now.
    pub fn for_cli(
        address: &str,
        mount: &str,
        path_prefix: &str,
        token_file: &str,
        ca_file: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<VaultConfig, ConfigError> {
        Ok(VaultConfig {
            address: address_of(address, "--vault-address")?,
            mount: segments(mount, "--vault-mount", DEFAULT_MOUNT)?,
            path_prefix: segments(path_prefix, "--vault-prefix", DEFAULT_PATH_PREFIX)?,
            auth: VaultAuth::TokenFile(file(token_file, "--vault-token-file")?),
            ca_file: ca_file.map(|p| file(p, "--vault-ca-file")).transpose()?,
            namespace: namespace
                .map(|ns| segments(ns, "--vault-namespace", "team-a"))
                .transpose()?,
            cache_ttl: Duration::from_millis(1),
            stale_if_error: Duration::from_millis(1),
            request_timeout: duration::default(DEFAULT_REQUEST_TIMEOUT),
        })
    }
}

fn approle(obj: &Obj<'_>) -> Result<VaultAuth, ConfigError> {
    let required = |key: &str| -> Result<PathBuf, ConfigError> {
        match obj.string(key)?.filter(|s| !s.is_empty()) {
            Some(p) => file(&p, &obj.field(key)),
            None => Err(ConfigError::missing(
                obj.field(key),
                format!("set {key} to the absolute path of a root-only file holding it"),
            )),
        }
    };
    let mount = obj
        .string("mount")?
        .unwrap_or_else(|| DEFAULT_APPROLE_MOUNT.to_string());
    Ok(VaultAuth::AppRole {
        mount: segments(&mount, &obj.field("mount"), DEFAULT_APPROLE_MOUNT)?,
        role_id_file: required("role_id_file")?,
        secret_id_file: required("secret_id_file")?,
    })
}

/// `https://host[:port]`, or `http://` to loopback; a trailing `/` is dropped.
fn address_of(text: &str, field: &str) -> Result<String, ConfigError> {
    let fix = "write the server's origin, such as \"https://vault.service.consul:8200\" \
               (http:// only to 127.0.0.1, [::1] or localhost)";
    let trimmed = text.trim_end_matches('/');
    let uri: http::Uri = trimmed
        .parse()
        .map_err(|_| ConfigError::invalid(field, format!("{text:?} is not a URL"), fix))?;
    let host = uri.host().unwrap_or_default();
    let loopback = matches!(host, "localhost" | "[::1]" | "::1")
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    let scheme_ok = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => loopback,
        _ => false,
    };
    if !scheme_ok || host.is_empty() {
        return Err(ConfigError::invalid(
            field,
            format!("{text:?} is not https:// (or http:// to this host)"),
            fix,
        ));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(ConfigError::invalid(
            field,
            format!("{text:?} has a path"),
            fix,
        ));
    }
    Ok(trimmed.to_string())
}

/// `a/b/c` of `[A-Za-z0-9_.-]` segments, none `.` or `..`, no empty ones.
fn segments(text: &str, field: &str, example: &str) -> Result<String, ConfigError> {
    let ok = !text.is_empty()
        && text.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        });
    if ok {
        Ok(text.to_string())
    } else {
        Err(ConfigError::invalid(
            field,
            format!("{text:?} is not a Vault path"),
            format!(
                "write /-separated names of letters, digits, '_', '.' and '-', such as \
                 {example:?} (no leading or trailing '/')"
            ),
        ))
    }
}

fn file(text: &str, field: &str) -> Result<PathBuf, ConfigError> {
    if !text.starts_with('/') || text.contains('\0') {
        return Err(ConfigError::invalid(
            field,
            format!("{text:?} is not an absolute path"),
            "use an absolute path such as \"/etc/polydev/vault-token\"",
        ));
    }
    Ok(PathBuf::from(text))
}

#[cfg(test)]
mod tests {
    use super::super::cty::fixtures::{obj, s};
    use super::*;
    use rmpv::Value;

    fn decode(fields: Vec<(&str, Value)>) -> Result<VaultConfig, ConfigError> {
        let value = obj(fields);
        let root = Obj::new(&value, "vault", "vault.".into()).unwrap();
        vault(&root)
    }

    #[test]
    fn token_file_config_with_defaults() {
        let config = decode(vec![
            ("address", s("https://vault.example:8200/")),
            ("token_file", s("/etc/polydev/vault-token")),
        ])
        .unwrap();
        assert_eq!(config.address, "https://vault.example:8200");
        assert_eq!(config.mount, "secret");
        assert_eq!(config.path_prefix, "polydev");
        assert_eq!(
            config.auth,
            VaultAuth::TokenFile("/etc/polydev/vault-token".into())
        );
        assert_eq!(config.cache_ttl, Duration::from_secs(30));
        assert_eq!(config.namespace, None);
    }

    #[test]
    fn approle_and_loopback_http() {
        let approle = obj(vec![
            ("role_id_file", s("/etc/polydev/role-id")),
            ("secret_id_file", s("/etc/polydev/secret-id")),
        ]);
        let config = decode(vec![
            ("address", s("http://127.0.0.1:8200")),
            ("approle", approle),
            ("cache_ttl", s("1m30s")),
        ])
        .unwrap();
        assert!(matches!(config.auth, VaultAuth::AppRole { ref mount, .. } if mount == "approle"));
        assert_eq!(config.cache_ttl, Duration::from_secs(90));
    }

    #[test]
    fn bad_values_name_the_field_and_the_fix() {
        let token = ("token_file", s("/t"));
        let cases: Vec<(Vec<(&str, Value)>, &str)> = vec![
            (
                vec![("address", s("http://vault.example:8200")), token.clone()],
                "vault.address",
            ),
            (
                vec![("address", s("https://v:8200/v1")), token.clone()],
                "has a path",
            ),
            (vec![("address", s("https://v"))], "token_file"),
            (
                vec![
                    ("address", s("https://v")),
                    token.clone(),
                    ("path_prefix", s("../x")),
                ],
                "vault.path_prefix",
            ),
            (
                vec![("address", s("https://v")), ("token_file", s("rel"))],
                "absolute",
            ),
            (
                vec![("address", s("https://v")), token, ("cache_ttl", s("2h"))],
                "vault.cache_ttl",
            ),
        ];
        for (fields, expect) in cases {
            let err = decode(fields).unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
        }
    }
}
