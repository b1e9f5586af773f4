//! The three CLIs as the benchmark runs them: which provider, command, shipped jobspec and
//! images, and how the baseline (`docker run` of the original recipe, key in its environment,
//! host network) is pointed at the stand-in API.

use std::path::Path;

use anyhow::{Context, Result};
use polydev::config::KnownCli;
use polydev::config::provider::builtin_providers;
use polydev::core::cli_launch::cli_launch;
use secrecy::SecretString;

pub struct Cli {
    pub provider: &'static str,
    pub command: &'static str,
    pub jobspec: &'static str,
    /// The variable the plugin reads the node's key from, and the baseline sets.
    pub key_variable: &'static str,
}

pub const CLIS: [Cli; 3] = [
    Cli {
        provider: "openai",
        command: "codex",
        jobspec: "codex.nomad.hcl",
        key_variable: "OPENAI_API_KEY",
    },
    Cli {
        provider: "anthropic",
        command: "claude",
        jobspec: "claude.nomad.hcl",
        key_variable: "ANTHROPIC_API_KEY",
    },
    Cli {
        provider: "google",
        command: "gemini",
        jobspec: "gemini.nomad.hcl",
        key_variable: "GOOGLE_API_KEY",
    },
];

/// The prompt every run sends (what a user would dispatch).
pub const PROMPT: &str = "Say hello in one short sentence.";

/// Where the baseline container finds the stand-in's CA and its home.
pub const BASELINE_CA: &str = "/etc/polydev-bench/stand-in-ca.pem";
pub const BASELINE_HOME: &str = "/home/bench";

impl Cli {
    pub fn image(&self) -> String {
        format!("polydev-{}-runtime:latest", self.provider)
    }

    pub fn baseline_image(&self) -> String {
        format!("polydev-{}-baseline:latest", self.provider)
    }

    pub fn args(&self) -> Vec<String> {
        crate::support::canned::jobspec_args(self.jobspec, PROMPT)
    }

    /// The baseline's environment, and the files it needs in its home (written into `home`):
    /// the key, the stand-in as the API, trust in the stand-in's CA, and the same switches that
    /// turn off telemetry and update checks as polydev's launch gives the CLI (so the ratio
    /// compares runtimes, pools and a warmed-up CLI, not background traffic).
    pub fn baseline_env(&self, key: &str, origin: &str, home: &Path) -> Result<Vec<String>> {
        let providers = builtin_providers();
        let provider = providers
            .get(self.provider)
            .with_context(|| format!("{} is not a built-in provider", self.provider))?;
        let launch = cli_launch(
            provider,
            None,
            &[(
                self.key_variable.to_string(),
                SecretString::from(key.to_string()),
            )],
        );
        let mut env: Vec<String> = launch
            .env
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        for (name, value) in &launch.secret_env {
            use secrecy::ExposeSecret;
            env.push(format!("{name}={}", value.expose_secret()));
        }
        for (path, content) in &launch.files {
            write_file(&home.join(path), content)?;
        }
        env.push(format!("HOME={BASELINE_HOME}"));
        env.push(format!("NODE_EXTRA_CA_CERTS={BASELINE_CA}"));
        env.push(format!("SSL_CERT_FILE={BASELINE_CA}"));
        if provider.cli == Some(KnownCli::Codex) {
            // The docker-driver way: a model provider of one's own in config.toml.
            let config = format!(
                "model_provider = \"bench\"\ncheck_for_update_on_startup = false\n\n\
                 [model_providers.bench]\nname = \"stand-in\"\nbase_url = \"{origin}/v1\"\n\
                 env_key = \"{}\"\nwire_api = \"responses\"\n\n\
                 [analytics]\nenabled = false\n\n[features]\nplugins = false\n",
                self.key_variable
            );
            write_file(&home.join(".codex/config.toml"), &config)?;
            env.push(format!("CODEX_CA_CERTIFICATE={BASELINE_CA}"));
        } else if let Some(variable) = provider.cli.and_then(|cli| cli.facts().base_url_env) {
            env.push(format!("{variable}={origin}"));
        }
        Ok(env)
    }
}

fn write_file(path: &Path, content: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let parent = path.parent().context("a file without a directory")?;
    std::fs::create_dir_all(parent)?;
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o777))?;
    std::fs::write(path, content).with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}
