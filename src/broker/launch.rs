//! What a broker-mode CLI is given in place of its key: the broker's address as its API base
//! URL, a placeholder in every credential variable (so the CLI's own presence checks pass), and
//! the settings each built-in CLI needs to send its requests there — and to skip telemetry,
//! update checks and plugin sync, which could not get out anyway.
//!
//! The facts per CLI (pinned versions of `containers/build-images.sh`), checked against a
//! recorder:
//! - codex ignores `OPENAI_BASE_URL`; it takes a model provider from `~/.codex/config.toml`
//!   (`base_url` ending in `/v1`, `env_key`, `wire_api = "responses"`) and sends
//!   `POST /v1/responses` with `Authorization: Bearer`.
//! - claude takes `ANTHROPIC_BASE_URL` and sends `POST /v1/messages?beta=true` with
//!   `x-api-key`.
//! - gemini takes `GOOGLE_GEMINI_BASE_URL` but only once its auth type is chosen in its
//!   settings (`security.auth.selectedType = "gemini-api-key"`, which reads `GEMINI_API_KEY`);
//!   headless it also wants the workspace trusted and no relaunch.
//!
//! Invariant: nothing here is secret; it all goes into the plain part of the launch spec.

use crate::config::{KnownCli, ProviderConfig};

/// The value every credential variable holds in a broker-mode container.
pub const PLACEHOLDER: &str = "polydev-brokered-no-key-here";

/// A file the entrypoint writes before the CLI starts, relative to the home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchFile {
    pub path: String,
    pub content: String,
}

/// The launch additions of a broker-mode task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerLaunch {
    pub env: Vec<(String, String)>,
    pub files: Vec<LaunchFile>,
}

/// What `provider`'s CLI needs to reach the broker at `127.0.0.1:<port>` in its container;
/// `egress` adds the proxy settings of the allowlist.
pub fn broker_launch(provider: &ProviderConfig, port: u16, egress: bool) -> BrokerLaunch {
    let base = format!("http://127.0.0.1:{port}");
    let mut launch = BrokerLaunch::default();
    let mut set = |name: &str, value: &str| launch.env.push((name.to_string(), value.to_string()));
    for name in provider
        .credentials
        .iter()
        .chain(&provider.optional_credentials)
    {
        set(name, PLACEHOLDER);
    }
    if let Some(route) = provider.credential_mode.route() {
        for name in &route.base_url_env {
            set(name, &format!("{base}{}", route.base_url_path));
        }
    }
    if egress {
        let proxy = base.clone();
        for (name, value) in [
            ("HTTPS_PROXY", proxy.as_str()),
            ("https_proxy", proxy.as_str()),
            ("NO_PROXY", "127.0.0.1,localhost"),
            ("no_proxy", "127.0.0.1,localhost"),
        ] {
            set(name, value);
        }
    }
    let key_variable = provider
        .credentials
        .first()
        .map(String::as_str)
        .unwrap_or("OPENAI_API_KEY");
    match provider.cli {
        Some(KnownCli::Codex) => launch.files.push(LaunchFile {
            path: ".codex/config.toml".into(),
            content: codex_config(&base, key_variable),
        }),
        Some(KnownCli::ClaudeCode) => {
            set("ANTHROPIC_BASE_URL", &base);
            for switch in [
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
                "DISABLE_AUTOUPDATER",
                "DISABLE_TELEMETRY",
                "DISABLE_ERROR_REPORTING",
            ] {
                set(switch, "1");
            }
        }
        Some(KnownCli::GeminiCli) => {
            set("GOOGLE_GEMINI_BASE_URL", &base);
            set("GEMINI_API_KEY", PLACEHOLDER);
            set("GEMINI_CLI_TRUST_WORKSPACE", "true");
            set("GEMINI_CLI_NO_RELAUNCH", "true");
            launch.files.push(LaunchFile {
                path: ".gemini/settings.json".into(),
                content: GEMINI_SETTINGS.into(),
            });
        }
        None => {}
    }
    launch
}

/// codex's model provider pointing at the broker, with its retries raised so a request that
/// meets a plugin restart waits for RecoverTask instead of failing the turn.
fn codex_config(base: &str, key_variable: &str) -> String {
    format!(
        r#"# Written by polydev: requests go to polydev's credential broker inside this container.
model_provider = "polydev"
check_for_update_on_startup = false

[model_providers.polydev]
name = "polydev credential broker"
base_url = "{base}/v1"
env_key = "{key_variable}"
wire_api = "responses"
request_max_retries = 10
stream_max_retries = 10

[analytics]
enabled = false

[features]
plugins = false
"#
    )
}

/// gemini-cli's user settings: the API-key auth type (which reads `GEMINI_API_KEY`), and no
/// telemetry, usage statistics or update checks.
const GEMINI_SETTINGS: &str = r#"{
  "security": { "auth": { "selectedType": "gemini-api-key" } },
  "privacy": { "usageStatisticsEnabled": false },
  "telemetry": { "enabled": false },
  "general": { "disableAutoUpdate": true, "disableUpdateNag": true }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::provider::builtin_providers;

    fn value<'a>(launch: &'a BrokerLaunch, name: &str) -> Option<&'a str> {
        launch
            .env
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn every_credential_variable_holds_the_placeholder() {
        for (name, provider) in builtin_providers() {
            let launch = broker_launch(&provider, 4000, false);
            for variable in provider
                .credentials
                .iter()
                .chain(&provider.optional_credentials)
            {
                assert_eq!(
                    value(&launch, variable),
                    Some(PLACEHOLDER),
                    "{name} {variable}"
                );
            }
            assert_eq!(value(&launch, "HTTPS_PROXY"), None);
        }
    }

    #[test]
    fn each_cli_is_pointed_at_the_broker() {
        let providers = builtin_providers();
        let codex = broker_launch(&providers["openai"], 4001, false);
        assert_eq!(codex.files[0].path, ".codex/config.toml");
        assert!(
            codex.files[0]
                .content
                .contains("base_url = \"http://127.0.0.1:4001/v1\"")
        );
        assert!(
            codex.files[0]
                .content
                .contains("env_key = \"OPENAI_API_KEY\"")
        );
        let claude = broker_launch(&providers["anthropic"], 4002, false);
        assert_eq!(
            value(&claude, "ANTHROPIC_BASE_URL"),
            Some("http://127.0.0.1:4002")
        );
        let gemini = broker_launch(&providers["google"], 4003, true);
        assert_eq!(
            value(&gemini, "GOOGLE_GEMINI_BASE_URL"),
            Some("http://127.0.0.1:4003")
        );
        assert_eq!(value(&gemini, "GEMINI_API_KEY"), Some(PLACEHOLDER));
        assert!(gemini.files[0].content.contains("gemini-api-key"));
        assert_eq!(value(&gemini, "HTTPS_PROXY"), Some("http://127.0.0.1:4003"));
        assert_eq!(value(&gemini, "NO_PROXY"), Some("127.0.0.1,localhost"));
    }
}
