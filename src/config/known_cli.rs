//! Every fact polydev knows about the built-in CLIs, in one table ([`KNOWN_CLIS`]): the
//! provider that runs each, its command and default image, its default credentials, the
//! variable it reads its key from, where it reads its API's base URL, how its API takes the key
//! ([`ApiAuth`]), the upstream, and what it needs to run headless (switches in its environment,
//! a settings file under `$HOME`). The provider defaults ([`builtin_providers`]) and what each
//! CLI gets at launch (`core::cli_launch`) are both read from here; nothing else matches on a CLI.
//!
//! The facts per CLI (the versions pinned in `containers/versions.tsv`), each checked against
//! a recorder in a `--network none` container:
//! - codex ignores `OPENAI_BASE_URL`; it takes a model provider from `~/.codex/config.toml`
//!   (`name`, `base_url` ending in `/v1`, `env_key`, `wire_api = "responses"`) and sends
//!   `POST /v1/responses` with `Authorization: Bearer`. Without such a provider it reads
//!   `OPENAI_API_KEY`. `supports_websockets = false` keeps it on HTTP streaming: a provider that
//!   supports WebSockets gets `GET /v1/responses` with `Upgrade: websocket` first, which the
//!   broker does not relay (it drops hop-by-hop headers), and codex retries that for seconds.
//!   `[features] plugins = false` stops its calls to api.github.com and chatgpt.com,
//!   `[analytics] enabled = false` and `[otel]` its metrics. A refused connection is retried
//!   without end (what rides out a plugin restart).
//! - claude takes `ANTHROPIC_BASE_URL` and sends `POST /v1/messages?beta=true` with
//!   `x-api-key` (versions before 2.1.3xx sent a `HEAD /` first); it reads its key from
//!   **`ANTHROPIC_API_KEY`** only. `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1` stops
//!   everything else.
//! - gemini takes `GOOGLE_GEMINI_BASE_URL` once its auth type is chosen in its settings
//!   (`security.auth.selectedType = "gemini-api-key"`), which reads **`GEMINI_API_KEY`**: with
//!   `GOOGLE_API_KEY` also set it warns four times per run, so the provider's key reaches it as
//!   `GEMINI_API_KEY` only. Headless, it wants the workspace trusted and no relaunch (the
//!   relaunch also doubles its memory); `privacy.usageStatisticsEnabled = false` stops its one
//!   other call.
//!
//! Invariant: an operator may rename a built-in provider's key variable
//! (`provider "anthropic" { credentials = ["TEAM_KEY"] }`); the CLI still finds the key (or, in
//! broker mode, the placeholder) where it reads it ([`CliFacts::reads_as`]).
//!
//! Pure data and text: this module names nothing outside `config`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::provider::{ApiRoute, CredentialMode, ProviderConfig};

/// The built-in CLIs, whose broker setup polydev knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownCli {
    /// OpenAI Codex (`codex`): reads its provider and base URL from `~/.codex/config.toml`.
    Codex,
    /// Anthropic Claude Code (`claude`): `ANTHROPIC_BASE_URL`.
    ClaudeCode,
    /// Google Gemini CLI (`gemini`): `GOOGLE_GEMINI_BASE_URL`, auth type from its settings.
    GeminiCli,
}

impl KnownCli {
    /// This CLI's row of [`KNOWN_CLIS`].
    pub fn facts(self) -> &'static CliFacts {
        match self {
            KnownCli::Codex => &KNOWN_CLIS[0],
            KnownCli::ClaudeCode => &KNOWN_CLIS[1],
            KnownCli::GeminiCli => &KNOWN_CLIS[2],
        }
    }
}

/// Where a provider's API expects the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiAuth {
    /// `Authorization: Bearer <key>` (OpenAI).
    Bearer,
    /// `x-api-key: <key>` (Anthropic).
    XApiKey,
    /// `x-goog-api-key: <key>` (Google).
    XGoogApiKey,
    /// `?key=<key>` in the query string (older Google clients).
    QueryKey,
}

impl ApiAuth {
    /// Every way, in the order the config's error messages list them.
    pub const ALL: [ApiAuth; 4] = [
        ApiAuth::Bearer,
        ApiAuth::XApiKey,
        ApiAuth::XGoogApiKey,
        ApiAuth::QueryKey,
    ];

    /// The name `api_auth` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiAuth::Bearer => "bearer",
            ApiAuth::XApiKey => "x-api-key",
            ApiAuth::XGoogApiKey => "x-goog-api-key",
            ApiAuth::QueryKey => "query-key",
        }
    }

    /// The header that carries the key (lower case) and what its value puts before the key;
    /// `None` when the key goes in the query string.
    pub fn header(self) -> Option<(&'static str, &'static str)> {
        match self {
            ApiAuth::Bearer => Some(("authorization", "Bearer ")),
            ApiAuth::XApiKey => Some(("x-api-key", "")),
            ApiAuth::XGoogApiKey => Some(("x-goog-api-key", "")),
            ApiAuth::QueryKey => None,
        }
    }

    pub(super) fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|auth| auth.as_str() == text)
    }
}

/// Where a CLI reads its API key from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyVariable {
    /// Always this variable, whatever the provider calls its key.
    Fixed(&'static str),
    /// The variable its settings file names; polydev's settings name the provider's own key
    /// variable in broker mode, and without them (env mode) the CLI reads `otherwise`.
    NamedInSettings { otherwise: &'static str },
}

/// A file a CLI needs under `$HOME` to run headless (and, in broker mode, to reach the broker).
pub struct SettingsFile {
    /// Path relative to `$HOME`.
    pub path: &'static str,
    /// Its content for a CLI whose broker is at `broker` (`http://127.0.0.1:<port>`; `None`
    /// in env mode) and whose provider keeps its key in `key_variable`.
    pub content: fn(broker: Option<&str>, key_variable: Option<&str>) -> String,
}

/// Everything polydev knows about one built-in CLI.
pub struct CliFacts {
    pub cli: KnownCli,
    /// The built-in provider that runs it.
    pub provider: &'static str,
    /// Its command (`argv[0]`).
    pub command: &'static str,
    /// The image polydev's build script makes for it.
    pub image: &'static str,
    /// The provider's default credentials; the first is its key.
    pub credentials: &'static [&'static str],
    /// The provider's default optional credentials.
    pub optional_credentials: &'static [&'static str],
    /// Where the CLI reads its key.
    pub key_variable: KeyVariable,
    /// The variable it reads its API's base URL from (`None`: from its settings file).
    pub base_url_env: Option<&'static str>,
    /// The provider's API (`https://host`).
    pub upstream: &'static str,
    /// How that API takes the key.
    pub auth: ApiAuth,
    /// Variables that make it run headless and quiet (no telemetry, update checks, relaunch).
    pub headless_env: &'static [(&'static str, &'static str)],
    /// The settings file it needs, if any.
    pub settings: Option<SettingsFile>,
}

/// The built-in CLIs, in [`KnownCli`] order.
pub static KNOWN_CLIS: [CliFacts; 3] = [
    CliFacts {
        cli: KnownCli::Codex,
        provider: "openai",
        command: "codex",
        image: "polydev-openai-runtime:latest",
        credentials: &["OPENAI_API_KEY"],
        optional_credentials: &[],
        key_variable: KeyVariable::NamedInSettings {
            otherwise: "OPENAI_API_KEY",
        },
        base_url_env: None,
        upstream: "https://api.openai.com",
        auth: ApiAuth::Bearer,
        headless_env: &[],
        settings: Some(SettingsFile {
            path: ".codex/config.toml",
            content: codex_config,
        }),
    },
    CliFacts {
        cli: KnownCli::ClaudeCode,
        provider: "anthropic",
        command: "claude",
        image: "polydev-anthropic-runtime:latest",
        credentials: &["ANTHROPIC_API_KEY"],
        optional_credentials: &[],
        key_variable: KeyVariable::Fixed("ANTHROPIC_API_KEY"),
        base_url_env: Some("ANTHROPIC_BASE_URL"),
        upstream: "https://api.anthropic.com",
        auth: ApiAuth::XApiKey,
        headless_env: &[
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            ("DISABLE_AUTOUPDATER", "1"),
            ("DISABLE_TELEMETRY", "1"),
            ("DISABLE_ERROR_REPORTING", "1"),
        ],
        settings: None,
    },
    CliFacts {
        cli: KnownCli::GeminiCli,
        provider: "google",
        command: "gemini",
        image: "polydev-google-runtime:latest",
        credentials: &["GOOGLE_API_KEY"],
        optional_credentials: &["GOOGLE_PROJECT_ID"],
        key_variable: KeyVariable::Fixed("GEMINI_API_KEY"),
        base_url_env: Some("GOOGLE_GEMINI_BASE_URL"),
        upstream: "https://generativelanguage.googleapis.com",
        auth: ApiAuth::XGoogApiKey,
        headless_env: &[
            ("GEMINI_CLI_TRUST_WORKSPACE", "true"),
            ("GEMINI_CLI_NO_RELAUNCH", "true"),
        ],
        settings: Some(SettingsFile {
            path: ".gemini/settings.json",
            content: gemini_settings,
        }),
    },
];

impl CliFacts {
    /// The name under which this CLI must find the provider's variable `name`, for a provider
    /// whose key is in `key_variable`, in broker mode or not: the key goes where the CLI reads
    /// it, every other variable keeps its name.
    pub fn reads_as<'a>(
        &self,
        name: &'a str,
        key_variable: Option<&str>,
        brokered: bool,
    ) -> &'a str {
        if key_variable != Some(name) {
            return name;
        }
        match self.key_variable {
            KeyVariable::Fixed(variable) => variable,
            KeyVariable::NamedInSettings { .. } if brokered => name,
            KeyVariable::NamedInSettings { otherwise } => otherwise,
        }
    }

    /// The provider this CLI's row describes, as a node has it without configuration.
    fn provider_config(&self) -> ProviderConfig {
        let owned = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        ProviderConfig {
            image: self.image.to_owned(),
            command: self.command.to_owned(),
            credentials: owned(self.credentials),
            optional_credentials: owned(self.optional_credentials),
            credential_mode: CredentialMode::Broker(ApiRoute {
                upstream_origin: self.upstream.to_owned(),
                upstream_path: String::new(),
                ca_file: None,
                auth: self.auth,
                base_url_env: Vec::new(),
                base_url_path: String::new(),
                paths: Vec::new(),
            }),
            cli: Some(self.cli),
        }
    }
}

/// The providers every node knows without configuration, one per built-in CLI.
pub fn builtin_providers() -> BTreeMap<String, Arc<ProviderConfig>> {
    KNOWN_CLIS
        .iter()
        .map(|facts| (facts.provider.to_owned(), Arc::new(facts.provider_config())))
        .collect()
}

/// codex's settings: no plugin sync, analytics or metrics; in broker mode, a model provider
/// pointing at the broker, reading its key from the provider's key variable, over HTTP
/// streaming (never a WebSocket, which the broker does not relay), whose failed requests are
/// retried more patiently than by default.
fn codex_config(broker: Option<&str>, key_variable: Option<&str>) -> String {
    let mut config =
        String::from("# Written by polydev at launch.\ncheck_for_update_on_startup = false\n");
    if let Some(base) = broker {
        let key_variable = key_variable.unwrap_or(KNOWN_CLIS[0].credentials[0]);
        config = format!(
            "# Written by polydev: requests go to its credential broker inside this container.\n\
             model_provider = \"polydev\"\ncheck_for_update_on_startup = false\n\n\
             [model_providers.polydev]\nname = \"polydev credential broker\"\n\
             base_url = \"{base}/v1\"\nenv_key = \"{key_variable}\"\nwire_api = \"responses\"\n\
             request_max_retries = 10\nstream_max_retries = 10\nsupports_websockets = false\n"
        );
    }
    config.push_str(
        "\n[analytics]\nenabled = false\n\n[otel]\nexporter = \"none\"\n\
         trace_exporter = \"none\"\nmetrics_exporter = \"none\"\n\n[features]\nplugins = false\n",
    );
    config
}

/// gemini-cli's user settings: the API-key auth type, and no usage statistics, telemetry or
/// update checks (0.61's names; the older `disableAutoUpdate` warns).
fn gemini_settings(_broker: Option<&str>, _key_variable: Option<&str>) -> String {
    r#"{
  "security": { "auth": { "selectedType": "gemini-api-key" } },
  "privacy": { "usageStatisticsEnabled": false },
  "telemetry": { "enabled": false },
  "general": { "enableAutoUpdate": false, "enableAutoUpdateNotification": false }
}
"#
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_row_is_found_by_its_cli() {
        for facts in &KNOWN_CLIS {
            assert_eq!(facts.cli.facts().provider, facts.provider);
            assert!(!facts.credentials.is_empty(), "{}", facts.provider);
        }
    }

    #[test]
    fn a_renamed_key_is_read_where_each_cli_reads_it() {
        let cases = [
            // (cli, brokered, where the renamed key must be)
            (KnownCli::Codex, true, "TEAM_KEY"),
            (KnownCli::Codex, false, "OPENAI_API_KEY"),
            (KnownCli::ClaudeCode, true, "ANTHROPIC_API_KEY"),
            (KnownCli::ClaudeCode, false, "ANTHROPIC_API_KEY"),
            (KnownCli::GeminiCli, true, "GEMINI_API_KEY"),
            (KnownCli::GeminiCli, false, "GEMINI_API_KEY"),
        ];
        for (cli, brokered, want) in cases {
            let facts = cli.facts();
            assert_eq!(
                facts.reads_as("TEAM_KEY", Some("TEAM_KEY"), brokered),
                want,
                "{cli:?} brokered={brokered}"
            );
            assert_eq!(
                facts.reads_as("OTHER", Some("TEAM_KEY"), brokered),
                "OTHER",
                "only the key is renamed"
            );
        }
    }

    #[test]
    fn every_auth_parses_from_its_name_and_only_query_key_has_no_header() {
        for auth in ApiAuth::ALL {
            assert_eq!(ApiAuth::parse(auth.as_str()), Some(auth));
            assert_eq!(auth.header().is_none(), auth == ApiAuth::QueryKey);
        }
        assert_eq!(ApiAuth::parse("basic"), None);
    }
}
