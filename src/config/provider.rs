//! `provider "<name>" { … }` blocks of the plugin config: which image runs a CLI, what it
//! launches, which credentials it needs, and how it gets them — through polydev's credential
//! broker (the default for the built-ins) or in its environment.
//!
//! ```hcl
//! provider "openai" { api_upstream = "https://llm-gateway.internal/openai", upstream_ca_file = "/etc/polydev/ca.pem" }
//! provider "aider"  {
//!   image = "aider:latest", command = "aider", credentials = ["OPENAI_API_KEY"]
//!   credential_mode = "broker", api_upstream = "https://api.openai.com", api_auth = "bearer"
//!   base_url_env = ["OPENAI_API_BASE"], base_url_path = "/v1"
//! }
//! provider "legacy" { image = "legacy:1", command = "legacy", credentials = ["LEGACY_KEY"] }  # env mode
//! ```
//!
//! Invariants of a decoded [`ProviderConfig`]:
//! - The built-ins `openai`, `anthropic` and `google` always exist; a block for one of them
//!   overrides only the fields it sets. Other names match `^[a-z][a-z0-9_-]{0,31}$` and set
//!   `image` and `command`.
//! - Credential names match `^[A-Z_][A-Z0-9_]*$`, each at most once per provider.
//! - A broker-mode provider has at least one credential (the first is the key the broker
//!   presents), an `https://` upstream without query or user info, and an absolute CA path.
//!   Custom providers are in env mode unless they choose broker mode, and then must say how the
//!   key is presented (`api_auth`) and where the CLI reads its base URL (`base_url_env`).

use std::path::PathBuf;

use super::ConfigError;
use super::hclspec::{Spec, attr, object};
pub use super::known_cli::{ApiAuth, KnownCli, builtin_providers};
use super::provider_block::{RawProvider, field};

/// One coding CLI: which image runs it, what to launch, which credentials it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// Image reference of the provider's runtime container.
    pub image: String,
    /// The CLI launched by default (`argv[0]`).
    pub command: String,
    /// Environment variables that must be injected; the task fails without them.
    pub credentials: Vec<String>,
    /// Environment variables injected when available.
    pub optional_credentials: Vec<String>,
    /// How the CLI gets its credentials.
    pub credential_mode: CredentialMode,
    /// The built-in CLI this provider runs (`None` for providers of the operator's own), which
    /// says what else the CLI needs at launch (its row of [`super::known_cli::KNOWN_CLIS`]).
    pub cli: Option<KnownCli>,
}

impl ProviderConfig {
    /// The variable holding the provider's key: its first credential (a broker-mode provider
    /// always has one; an env-mode provider of the operator's own may have none).
    pub fn key_variable(&self) -> Option<&str> {
        self.credentials.first().map(String::as_str)
    }

    /// The broker route, in broker mode.
    pub fn route(&self) -> Option<&ApiRoute> {
        self.credential_mode.route()
    }
}

/// How a provider's CLI gets its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialMode {
    /// The key stays with polydev: the container gets a placeholder, a base URL pointing at
    /// polydev's broker inside the container, and no network.
    Broker(ApiRoute),
    /// The key is put into the CLI's environment (weaker: any command the agent runs can read
    /// it, and the container has a network).
    Env,
}

impl CredentialMode {
    /// The broker route, in broker mode.
    pub fn route(&self) -> Option<&ApiRoute> {
        match self {
            CredentialMode::Broker(route) => Some(route),
            CredentialMode::Env => None,
        }
    }
}

/// Where a broker-mode provider's requests go and how its key is presented there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRoute {
    /// `https://host[:port]`, the provider's API.
    pub upstream_origin: String,
    /// Path prefix of the upstream (`""` or `/…` without a trailing slash), put before every
    /// request's path.
    pub upstream_path: String,
    /// Extra CA certificates (PEM) trusted for the upstream besides the system's.
    pub ca_file: Option<PathBuf>,
    pub auth: ApiAuth,
    /// Environment variables the CLI reads its base URL from.
    pub base_url_env: Vec<String>,
    /// Path appended to the broker's address in those variables (e.g. `/v1`).
    pub base_url_path: String,
    /// Path prefixes the broker forwards (`api_paths`); empty: every path.
    pub paths: Vec<String>,
}

/// The object inside a `provider "<name>" {}` block (no defaults here: a built-in's own
/// values fill what a block leaves out).
pub fn provider_schema() -> Spec {
    object([
        ("image", attr("image", "string", false)),
        ("command", attr("command", "string", false)),
        ("credentials", attr("credentials", "list(string)", false)),
        (
            "optional_credentials",
            attr("optional_credentials", "list(string)", false),
        ),
        ("credential_mode", attr("credential_mode", "string", false)),
        ("api_upstream", attr("api_upstream", "string", false)),
        (
            "upstream_ca_file",
            attr("upstream_ca_file", "string", false),
        ),
        ("api_auth", attr("api_auth", "string", false)),
        ("base_url_env", attr("base_url_env", "list(string)", false)),
        ("base_url_path", attr("base_url_path", "string", false)),
        ("api_paths", attr("api_paths", "list(string)", false)),
    ])
}

pub(super) fn provider(
    name: &str,
    builtin: Option<&ProviderConfig>,
    raw: &RawProvider,
    at: &str,
) -> Result<ProviderConfig, ConfigError> {
    let image = raw.image.clone();
    let command = raw.command.clone();
    let credentials = raw.credentials.clone();
    let optional = raw.optional_credentials.clone();
    let mut merged = match builtin {
        Some(builtin) => ProviderConfig {
            image: image.unwrap_or_else(|| builtin.image.clone()),
            command: command.unwrap_or_else(|| builtin.command.clone()),
            credentials: credentials.unwrap_or_else(|| builtin.credentials.clone()),
            optional_credentials: optional.unwrap_or_else(|| builtin.optional_credentials.clone()),
            ..builtin.clone()
        },
        None => {
            let required = |v: Option<String>, key: &str| {
                v.ok_or_else(|| {
                    ConfigError::missing(
                        field(at, key),
                        format!(
                            "a provider that is not built in (openai, anthropic, google) must \
                             set both image and command, e.g. provider {name:?} {{ image = \
                             \"my-cli:1.0\", command = \"my-cli\" }}"
                        ),
                    )
                })
            };
            ProviderConfig {
                image: required(image, "image")?,
                command: required(command, "command")?,
                credentials: credentials.unwrap_or_default(),
                optional_credentials: optional.unwrap_or_default(),
                credential_mode: CredentialMode::Env,
                cli: None,
            }
        }
    };
    merged.credential_mode = credential_mode(&merged, raw, at)?;
    check_provider(&merged, at)?;
    Ok(merged)
}

/// The mode a block asks for, on top of the built-in's (or env mode for custom providers).
fn credential_mode(
    current: &ProviderConfig,
    raw: &RawProvider,
    at: &str,
) -> Result<CredentialMode, ConfigError> {
    let broker_keys = [
        "api_upstream",
        "upstream_ca_file",
        "api_auth",
        "base_url_env",
        "base_url_path",
        "api_paths",
    ];
    let wants_broker = match raw.credential_mode.as_deref() {
        None => matches!(current.credential_mode, CredentialMode::Broker(_)),
        Some("broker") => true,
        Some("env") => false,
        Some(other) => {
            return Err(ConfigError::invalid(
                field(at, "credential_mode"),
                format!("{other:?} is not a credential mode"),
                "use \"broker\" (the key stays with polydev, the container has no network) or \
                 \"env\" (the key is in the CLI's environment; weaker)",
            ));
        }
    };
    if !wants_broker {
        for key in broker_keys {
            if raw.sets(key) {
                return Err(ConfigError::invalid(
                    field(at, key),
                    "is a broker setting, and this provider is in env mode",
                    "remove it, or set credential_mode = \"broker\"",
                ));
            }
        }
        return Ok(CredentialMode::Env);
    }
    let inherited = current.credential_mode.route().cloned();
    let custom = inherited.is_none();
    let need = |key: &str, example: &str| {
        ConfigError::missing(
            field(at, key),
            format!(
                "a provider of your own in broker mode must say {example}; or use \
                 credential_mode = \"env\""
            ),
        )
    };
    let (upstream_origin, upstream_path) = match raw.api_upstream.clone() {
        Some(url) => parse_upstream(&url, &field(at, "api_upstream"))?,
        None => match &inherited {
            Some(route) => (route.upstream_origin.clone(), route.upstream_path.clone()),
            None => {
                return Err(need(
                    "api_upstream",
                    "where its API is, e.g. api_upstream = \"https://api.openai.com\"",
                ));
            }
        },
    };
    let auth = match raw.api_auth.clone() {
        Some(text) => ApiAuth::parse(&text).ok_or_else(|| {
            ConfigError::invalid(
                field(at, "api_auth"),
                format!("{text:?} is not a way to present a key"),
                "use \"bearer\", \"x-api-key\", \"x-goog-api-key\" or \"query-key\"",
            )
        })?,
        None => match &inherited {
            Some(route) => route.auth,
            None => {
                return Err(need(
                    "api_auth",
                    "how its API takes the key, e.g. api_auth = \"bearer\"",
                ));
            }
        },
    };
    let base_url_env = match raw.base_url_env.clone() {
        Some(names) => names,
        None => inherited
            .as_ref()
            .map(|r| r.base_url_env.clone())
            .unwrap_or_default(),
    };
    if custom && base_url_env.is_empty() {
        return Err(need(
            "base_url_env",
            "which variables the CLI reads its API address from, e.g. base_url_env = \
             [\"OPENAI_BASE_URL\"]",
        ));
    }
    for (i, name) in base_url_env.iter().enumerate() {
        if !is_env_name(name) {
            return Err(ConfigError::invalid(
                format!("{}[{i}]", field(at, "base_url_env")),
                format!("{name:?} is not an environment variable name"),
                "use upper-case letters, digits and '_', e.g. \"OPENAI_BASE_URL\"",
            ));
        }
    }
    let base_url_path = match raw.base_url_path.clone() {
        Some(path) => clean_path(&path).ok_or_else(|| {
            ConfigError::invalid(
                field(at, "base_url_path"),
                format!("{path:?} is not a URL path"),
                "use \"\" or a path such as \"/v1\" (letters, digits, '/', '-', '_', '.')",
            )
        })?,
        None => inherited
            .as_ref()
            .map(|r| r.base_url_path.clone())
            .unwrap_or_default(),
    };
    let ca_file = match raw.upstream_ca_file.as_deref() {
        None => inherited.as_ref().and_then(|r| r.ca_file.clone()),
        Some("") => None,
        Some(path) if path.starts_with('/') && !path.contains('\0') => Some(PathBuf::from(path)),
        Some(path) => {
            return Err(ConfigError::invalid(
                field(at, "upstream_ca_file"),
                format!("{path:?} is not an absolute path"),
                "name a PEM file of CA certificates by its absolute path, or \"\" for the \
                 system's roots only",
            ));
        }
    };
    let paths = match raw.api_paths.clone() {
        Some(paths) => paths,
        None => inherited
            .as_ref()
            .map(|r| r.paths.clone())
            .unwrap_or_default(),
    };
    for (i, path) in paths.iter().enumerate() {
        let field = || format!("{}[{i}]", field(at, "api_paths"));
        if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::invalid(
                field(),
                format!("{path:?} is not a path prefix"),
                "write prefixes of the API's paths, such as \"/v1/messages\"",
            ));
        }
        // Requests are matched in their plain form, so a prefix in any other form never matches.
        match crate::request_path::normalise(path) {
            Ok(plain) if plain == *path => {}
            Ok(plain) => {
                return Err(ConfigError::invalid(
                    field(),
                    format!("{path:?} is not in plain form"),
                    format!("write it as {plain:?}"),
                ));
            }
            Err(why) => {
                return Err(ConfigError::invalid(
                    field(),
                    format!("{path:?} can never match a request: {why}"),
                    "write prefixes of the API's paths, such as \"/v1/messages\"",
                ));
            }
        }
    }
    if current.credentials.is_empty() {
        return Err(ConfigError::missing(
            field(at, "credentials"),
            "a provider in broker mode needs the name of its key variable in credentials (the \
             first one is the key the broker presents), e.g. credentials = [\"OPENAI_API_KEY\"]",
        ));
    }
    Ok(CredentialMode::Broker(ApiRoute {
        upstream_origin,
        upstream_path,
        ca_file,
        auth,
        base_url_env,
        base_url_path,
        paths,
    }))
}

/// Split `https://host[:port][/prefix]` into origin and path prefix, refusing anything else.
fn parse_upstream(url: &str, field: &str) -> Result<(String, String), ConfigError> {
    let fix = "write the API's https:// address, such as \"https://api.openai.com\" (an optional \
               path prefix is kept; no query, user or password)";
    let bad = |why: &str| ConfigError::invalid(field, format!("{url:?} {why}"), fix);
    let uri: http::Uri = url.parse().map_err(|_| bad("is not a URL"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") => {
            return Err(bad(
                "is plain http, which would send the key in clear text to the network",
            ));
        }
        _ => return Err(bad("is not an https:// URL")),
    }
    let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(bad("carries user information"));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(bad("has a query or fragment"));
    }
    let path = clean_path(uri.path()).ok_or_else(|| bad("has an unusable path"))?;
    Ok((format!("https://{authority}"), path))
}

/// `""` or `/segment/…` without a trailing slash, from a conservative alphabet.
fn clean_path(path: &str) -> Option<String> {
    let trimmed = path.trim_end_matches('/');
    let ok = trimmed.is_empty()
        || (trimmed.starts_with('/')
            && !trimmed.contains("//")
            && !trimmed.split('/').any(|s| s == ".." || s == ".")
            && trimmed
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.')));
    ok.then(|| trimmed.to_string())
}

/// `^[A-Z_][A-Z0-9_]*$`
pub(crate) fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_uppercase() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// An image reference or a command: non-empty, no whitespace or control characters.
pub(crate) fn is_single_word(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn check_provider(p: &ProviderConfig, at: &str) -> Result<(), ConfigError> {
    if !is_single_word(&p.image) {
        return Err(ConfigError::invalid(
            field(at, "image"),
            format!("{:?} is not an image reference", p.image),
            "use a reference without spaces such as \"registry.local/codex:1.2\"",
        ));
    }
    if !is_single_word(&p.command) {
        return Err(ConfigError::invalid(
            field(at, "command"),
            format!("{:?} is not a single program name or path", p.command),
            "name only the program (e.g. \"codex\" or \"/usr/local/bin/codex\"); tasks pass \
             arguments with args",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (key, names) in [
        ("credentials", &p.credentials),
        ("optional_credentials", &p.optional_credentials),
    ] {
        for (i, name) in names.iter().enumerate() {
            let field = format!("{}[{i}]", field(at, key));
            if !is_env_name(name) {
                return Err(ConfigError::invalid(
                    field,
                    format!("{name:?} is not an environment variable name"),
                    "use upper-case letters, digits and '_', not starting with a digit, e.g. \
                     \"OPENAI_API_KEY\"",
                ));
            }
            if !seen.insert(name.as_str()) {
                return Err(ConfigError::invalid(
                    field,
                    format!("{name:?} is listed more than once"),
                    "list each variable once, in either credentials or optional_credentials",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "provider_tests.rs"]
mod tests;
