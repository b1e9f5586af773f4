//! What each CLI is given at launch besides its argv: its credential (a placeholder in broker
//! mode, the value in env mode), the broker's address as its API base URL (broker mode), and
//! the settings the built-in CLIs need to work headless — and to skip telemetry, update checks
//! and plugin sync, which a broker-mode container could not reach anyway.
//!
//! The facts per CLI (the versions pinned in `containers/versions.tsv`), each checked
//! against a recorder in a `--network none` container:
//! - codex ignores `OPENAI_BASE_URL`; it takes a model provider from `~/.codex/config.toml`
//!   (`name`, `base_url` ending in `/v1`, `env_key`, `wire_api = "responses"`) and sends
//!   `POST /v1/responses` with `Authorization: Bearer`. `supports_websockets = false` keeps it on
//!   HTTP streaming: a provider that supports WebSockets gets `GET /v1/responses` with
//!   `Upgrade: websocket` first, which the broker does not relay (it drops hop-by-hop headers),
//!   and codex retries that for seconds. `[features] plugins = false` stops its calls to
//!   api.github.com and chatgpt.com, `[analytics] enabled = false` and `[otel]` its metrics. A
//!   refused connection is retried without end (what rides out a plugin restart).
//! - claude takes `ANTHROPIC_BASE_URL` and sends `POST /v1/messages?beta=true` with
//!   `x-api-key` (versions before 2.1.3xx sent a `HEAD /` first);
//!   `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1` stops everything else.
//! - gemini takes `GOOGLE_GEMINI_BASE_URL` once its auth type is chosen in its settings
//!   (`security.auth.selectedType = "gemini-api-key"`), which reads **`GEMINI_API_KEY`**: with
//!   `GOOGLE_API_KEY` also set it warns four times per run, so the provider's `GOOGLE_API_KEY`
//!   reaches it as `GEMINI_API_KEY` only. Headless, it wants the workspace trusted and no
//!   relaunch (the relaunch also doubles its memory); `privacy.usageStatisticsEnabled = false`
//!   stops its one other call.
//!
//! A jobspec can still override these settings (its own `-c` flags, env, a workspace settings
//! file); in broker mode that only breaks its own task, whose container reaches nothing else.
//! Invariant: only `secret_env` holds secrets, and only in env mode.

use secrecy::SecretString;

use crate::config::{KnownCli, ProviderConfig};

/// The value every credential variable holds in a broker-mode container.
pub const PLACEHOLDER: &str = "polydev-brokered-no-key-here";

/// The variable gemini-cli reads its key from.
const GEMINI_KEY: &str = "GEMINI_API_KEY";

/// Where a broker-mode CLI finds the broker: `127.0.0.1:<port>` in its container.
#[derive(Debug, Clone, Copy)]
pub struct BrokerAddress {
    pub port: u16,
    /// The egress allowlist is on: the CLI gets the proxy settings.
    pub egress: bool,
}

/// A CLI's launch additions.
#[derive(Default)]
pub struct CliLaunch {
    pub env: Vec<(String, String)>,
    /// Credentials by the name the CLI reads them (env mode only).
    pub secret_env: Vec<(String, SecretString)>,
    /// Files written under `$HOME` before the exec: (path, content).
    pub files: Vec<(String, String)>,
    /// Variables the entrypoint must find non-empty.
    pub required: Vec<String>,
}

impl CliLaunch {
    fn set(&mut self, name: &str, value: &str) {
        self.env.push((name.to_string(), value.to_string()));
    }
}

/// The launch additions of `provider`'s CLI: brokered at `broker`, or in env mode with the
/// resolved `credentials`.
pub fn cli_launch(
    provider: &ProviderConfig,
    broker: Option<BrokerAddress>,
    credentials: &[(String, SecretString)],
) -> CliLaunch {
    let mut launch = CliLaunch::default();
    let gemini = provider.cli == Some(KnownCli::GeminiCli);
    let key_variable = provider.credentials.first().map(String::as_str);
    // The name under which the CLI reads a credential variable.
    let read_as = |name: &str| match (gemini, key_variable) {
        (true, Some(key)) if key == name => GEMINI_KEY.to_string(),
        _ => name.to_string(),
    };
    match broker {
        Some(address) => {
            for name in provider
                .credentials
                .iter()
                .chain(&provider.optional_credentials)
            {
                launch.set(&read_as(name), PLACEHOLDER);
            }
            launch.required = provider.credentials.iter().map(|n| read_as(n)).collect();
            let base = format!("http://127.0.0.1:{}", address.port);
            if let Some(route) = provider.credential_mode.route() {
                for name in &route.base_url_env {
                    launch.set(name, &format!("{base}{}", route.base_url_path));
                }
            }
            if address.egress {
                for name in ["HTTPS_PROXY", "https_proxy"] {
                    launch.set(name, &base);
                }
                for name in ["NO_PROXY", "no_proxy"] {
                    launch.set(name, "127.0.0.1,localhost");
                }
            }
        }
        None => {
            launch.secret_env = credentials
                .iter()
                .map(|(name, value)| (read_as(name), value.clone()))
                .collect();
            launch.required = provider.credentials.iter().map(|n| read_as(n)).collect();
        }
    }
    let base = broker.map(|address| format!("http://127.0.0.1:{}", address.port));
    match provider.cli {
        Some(KnownCli::Codex) => launch.files.push((
            ".codex/config.toml".into(),
            codex_config(base.as_deref(), key_variable.unwrap_or("OPENAI_API_KEY")),
        )),
        Some(KnownCli::ClaudeCode) => {
            if let Some(base) = &base {
                launch.set("ANTHROPIC_BASE_URL", base);
            }
            for switch in [
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
                "DISABLE_AUTOUPDATER",
                "DISABLE_TELEMETRY",
                "DISABLE_ERROR_REPORTING",
            ] {
                launch.set(switch, "1");
            }
        }
        Some(KnownCli::GeminiCli) => {
            if let Some(base) = &base {
                launch.set("GOOGLE_GEMINI_BASE_URL", base);
            }
            launch.set("GEMINI_CLI_TRUST_WORKSPACE", "true");
            launch.set("GEMINI_CLI_NO_RELAUNCH", "true");
            launch
                .files
                .push((".gemini/settings.json".into(), GEMINI_SETTINGS.into()));
        }
        None => {}
    }
    launch
}

/// codex's settings: no plugin sync, analytics or metrics; in broker mode, a model provider
/// pointing at the broker, over HTTP streaming (never a WebSocket, which the broker does not
/// relay), whose failed requests are retried more patiently than by default.
fn codex_config(broker: Option<&str>, key_variable: &str) -> String {
    let mut config =
        String::from("# Written by polydev at launch.\ncheck_for_update_on_startup = false\n");
    if let Some(base) = broker {
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
const GEMINI_SETTINGS: &str = r#"{
  "security": { "auth": { "selectedType": "gemini-api-key" } },
  "privacy": { "usageStatisticsEnabled": false },
  "telemetry": { "enabled": false },
  "general": { "enableAutoUpdate": false, "enableAutoUpdateNotification": false }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::provider::builtin_providers;
    use secrecy::ExposeSecret;

    fn value<'a>(launch: &'a CliLaunch, name: &str) -> Option<&'a str> {
        launch
            .env
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn at(port: u16) -> Option<BrokerAddress> {
        Some(BrokerAddress {
            port,
            egress: false,
        })
    }

    #[test]
    fn broker_mode_gives_placeholders_and_no_secret() {
        for (name, provider) in builtin_providers() {
            let launch = cli_launch(&provider, at(4000), &[]);
            assert!(launch.secret_env.is_empty(), "{name}");
            assert!(!launch.required.is_empty(), "{name}");
            for variable in &launch.required {
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
        let codex = cli_launch(&providers["openai"], at(4001), &[]);
        assert_eq!(codex.files[0].0, ".codex/config.toml");
        assert!(
            codex.files[0]
                .1
                .contains("base_url = \"http://127.0.0.1:4001/v1\"")
        );
        assert!(codex.files[0].1.contains("env_key = \"OPENAI_API_KEY\""));
        assert!(codex.files[0].1.contains("supports_websockets = false"));
        let claude = cli_launch(&providers["anthropic"], at(4002), &[]);
        assert_eq!(
            value(&claude, "ANTHROPIC_BASE_URL"),
            Some("http://127.0.0.1:4002")
        );
        let egress = Some(BrokerAddress {
            port: 4003,
            egress: true,
        });
        let gemini = cli_launch(&providers["google"], egress, &[]);
        assert_eq!(
            value(&gemini, "GOOGLE_GEMINI_BASE_URL"),
            Some("http://127.0.0.1:4003")
        );
        assert_eq!(value(&gemini, "GEMINI_API_KEY"), Some(PLACEHOLDER));
        assert_eq!(
            value(&gemini, "GOOGLE_API_KEY"),
            None,
            "gemini warns when both are set"
        );
        assert_eq!(gemini.required, vec!["GEMINI_API_KEY".to_string()]);
        assert!(gemini.files[0].1.contains("gemini-api-key"));
        assert_eq!(value(&gemini, "HTTPS_PROXY"), Some("http://127.0.0.1:4003"));
        assert_eq!(value(&gemini, "NO_PROXY"), Some("127.0.0.1,localhost"));
    }

    #[test]
    fn env_mode_passes_the_values_by_the_name_each_cli_reads() {
        let providers = builtin_providers();
        let key = |name: &str| (name.to_string(), SecretString::from("sk-value"));
        let gemini = cli_launch(
            &providers["google"],
            None,
            &[key("GOOGLE_API_KEY"), key("GOOGLE_PROJECT_ID")],
        );
        let names: Vec<&str> = gemini.secret_env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["GEMINI_API_KEY", "GOOGLE_PROJECT_ID"]);
        assert_eq!(gemini.secret_env[0].1.expose_secret(), "sk-value");
        assert_eq!(value(&gemini, "GOOGLE_GEMINI_BASE_URL"), None);
        let codex = cli_launch(&providers["openai"], None, &[key("OPENAI_API_KEY")]);
        assert!(!codex.files[0].1.contains("model_provider"));
        assert!(codex.files[0].1.contains("plugins = false"));
        assert!(codex.env.iter().all(|(_, v)| v != PLACEHOLDER));
    }
}
