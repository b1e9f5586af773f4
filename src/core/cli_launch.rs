//! What each CLI is given at launch besides its argv: its credentials (placeholders in broker
//! mode, the values in env mode) under the names it reads them, the broker's address as its API
//! base URL (broker mode), and the settings the built-in CLIs need to work headless — and to
//! skip telemetry, update checks and plugin sync, which a broker-mode container could not reach
//! anyway. The facts about each built-in CLI come from its row of
//! [`crate::config::known_cli::KNOWN_CLIS`]; nothing here matches on a CLI's name.
//!
//! A jobspec can still override these settings (its own `-c` flags, env, a workspace settings
//! file); in broker mode that only breaks its own task, whose container reaches nothing else.
//! Invariants: only `secret_env` holds secrets, and only in env mode; a provider's key reaches
//! a built-in CLI under the variable that CLI reads it from, whatever the operator named it.

use secrecy::SecretString;

use crate::config::ProviderConfig;

/// The value every credential variable holds in a broker-mode container.
pub const PLACEHOLDER: &str = "polydev-brokered-no-key-here";

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
    let facts = provider.cli.map(|cli| cli.facts());
    let key_variable = provider.key_variable();
    // The name under which the CLI reads a credential variable.
    let read_as = |name: &str| match facts {
        Some(facts) => facts
            .reads_as(name, key_variable, broker.is_some())
            .to_string(),
        None => name.to_string(),
    };
    launch.required = provider.credentials.iter().map(|n| read_as(n)).collect();
    match broker {
        Some(address) => {
            for name in provider
                .credentials
                .iter()
                .chain(&provider.optional_credentials)
            {
                launch.set(&read_as(name), PLACEHOLDER);
            }
            let base = format!("http://127.0.0.1:{}", address.port);
            if let Some(route) = provider.route() {
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
        }
    }
    let Some(facts) = facts else {
        return launch;
    };
    let base = broker.map(|address| format!("http://127.0.0.1:{}", address.port));
    if let (Some(base), Some(variable)) = (&base, facts.base_url_env) {
        launch.set(variable, base);
    }
    for (name, value) in facts.headless_env {
        launch.set(name, value);
    }
    if let Some(settings) = &facts.settings {
        let content = (settings.content)(base.as_deref(), key_variable);
        launch.files.push((settings.path.to_string(), content));
    }
    launch
}

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

    /// `provider "<p>" { credentials = ["TEAM_KEY"] }`: each CLI still finds the key (its
    /// placeholder in broker mode, its value in env mode) where it reads it.
    #[test]
    fn a_renamed_key_reaches_each_cli_where_it_reads_it_in_both_modes() {
        let renamed = |name: &str| {
            let mut provider = (*builtin_providers()[name]).clone();
            provider.credentials[0] = "TEAM_KEY".into();
            provider
        };
        let secret = [("TEAM_KEY".to_string(), SecretString::from("sk-team"))];
        // (provider, where the CLI reads the key in broker mode, and in env mode)
        let cases = [
            ("openai", "TEAM_KEY", "OPENAI_API_KEY"),
            ("anthropic", "ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"),
            ("google", "GEMINI_API_KEY", "GEMINI_API_KEY"),
        ];
        for (name, brokered_as, env_as) in cases {
            let provider = renamed(name);
            let brokered = cli_launch(&provider, at(4010), &[]);
            assert_eq!(value(&brokered, brokered_as), Some(PLACEHOLDER), "{name}");
            assert_eq!(brokered.required, vec![brokered_as.to_string()], "{name}");
            if brokered_as != "TEAM_KEY" {
                assert_eq!(value(&brokered, "TEAM_KEY"), None, "{name}");
            }
            let env = cli_launch(&provider, None, &secret);
            let names: Vec<&str> = env.secret_env.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, vec![env_as], "{name}");
            assert_eq!(env.secret_env[0].1.expose_secret(), "sk-team");
            assert_eq!(env.required, vec![env_as.to_string()], "{name}");
        }
        // codex reads the renamed variable in broker mode because its settings name it.
        let codex = cli_launch(&renamed("openai"), at(4011), &[]);
        assert!(codex.files[0].1.contains("env_key = \"TEAM_KEY\""));
    }

    #[test]
    fn a_provider_of_the_operators_own_gets_its_variables_as_named_and_no_cli_settings() {
        let mut provider = (*builtin_providers()["openai"]).clone();
        provider.cli = None;
        provider.credentials = vec!["AIDER_KEY".into()];
        let launch = cli_launch(&provider, at(4012), &[]);
        assert_eq!(value(&launch, "AIDER_KEY"), Some(PLACEHOLDER));
        assert!(launch.files.is_empty());
        assert_eq!(launch.required, vec!["AIDER_KEY".to_string()]);
    }
}
