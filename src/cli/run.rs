//! `polydev run`: one task through the same core the plugin uses — same container settings,
//! launch spec, credentials (from this shell's environment, held by this process's credential
//! broker), log pump — with its output on this process's own stdout and stderr.
//!
//! Invariants:
//! - Output goes through the inherited descriptors 1 and 2 (`/dev/fd/1`, `/dev/fd/2` to the log
//!   sinks), so files, pipes, sockets and terminals all get it in order.
//! - SIGTERM, SIGHUP and SIGINT stop the task as StopTask does (SIGTERM, then SIGKILL after
//!   `--kill-timeout`), remove its container and exit 128 + the signal. `--timeout` does the same
//!   (exit 124).
//! - A `kill -9` of this process cannot stop the container, so it carries an expiry label of
//!   `--timeout` from now: any later `polydev run` and the plugin's orphan sweep on this node
//!   remove it once that has passed.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::args::{Command, Opt, Outcome};
use crate::assembly::Wiring;
use crate::config::{self, DockerEndpoint, PluginConfig, RawProvider, RawTaskConfig};
use crate::core::{Core, LogPaths, TaskSpec};
use crate::engine::ResourceLimits;

/// Largest `--memory`, in MB (16 TiB, as for Nomad's tasks).
const MAX_MEMORY_MB: i64 = 1 << 24;
/// Bounds of `--kill-timeout` and `--timeout`.
const MAX_KILL_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);

pub const COMMAND: Command = Command {
    name: "run",
    summary:
        "Run one task exactly as the Nomad driver would and stream its output here; exits with \
the task's exit code. The provider's key comes from this shell's environment (e.g.
OPENAI_API_KEY) and stays in this process: in broker mode (the default) the CLI reaches its
API through polydev's credential broker, so this needs root.",
    options: &[
        Opt::Value {
            name: "provider",
            value: "P",
            help: "openai, anthropic or google (required)",
        },
        Opt::Value {
            name: "user",
            value: "ID",
            help: "user id passed to the task as USER_ID",
        },
        Opt::Value {
            name: "image",
            value: "IMAGE",
            help: "image to use instead of the provider's",
        },
        Opt::Value {
            name: "work-dir",
            value: "DIR",
            help: "working directory in the container (default /tmp)",
        },
        Opt::Value {
            name: "memory",
            value: "MB",
            help: "memory limit (default 512; 6 to 16777216)",
        },
        Opt::Value {
            name: "docker-endpoint",
            value: "E",
            help: "Docker socket (default unix:///var/run/docker.sock)",
        },
        Opt::Value {
            name: "credential-mode",
            value: "M",
            help: "broker (the key stays here, the container has no network)\nor env (the key is in the CLI's environment)",
        },
        Opt::Value {
            name: "api-upstream",
            value: "URL",
            help: "the provider's API (default: its public https:// API)",
        },
        Opt::Value {
            name: "upstream-ca-file",
            value: "F",
            help: "extra CA certificates (PEM) for the API's TLS",
        },
        Opt::Value {
            name: "kill-timeout",
            value: "D",
            help: "after SIGTERM, wait this long before SIGKILL (default 10s)",
        },
        Opt::Value {
            name: "timeout",
            value: "D",
            help: "stop the task after this long (default 24h; exit 124); also\nhow long its container outlives a kill -9 of this process",
        },
        Opt::Flag {
            name: "debug",
            help: "the container's entrypoint prints what it launches",
        },
    ],
    operands: Some("COMMAND [ARGS...]"),
    notes: "Example: polydev run --provider openai -- codex exec --skip-git-repo-check -- \"Say hi\"",
};

/// Parsed `polydev run` arguments.
#[derive(Debug, PartialEq)]
struct RunOptions {
    provider: String,
    user: Option<String>,
    image: Option<String>,
    work_dir: String,
    memory_mb: i64,
    docker_endpoint: Option<String>,
    debug: bool,
    credential_mode: Option<String>,
    api_upstream: Option<String>,
    upstream_ca_file: Option<String>,
    kill_timeout: Duration,
    timeout: Duration,
    argv: Vec<String>,
}

impl RunOptions {
    fn parse(args: &[String]) -> Result<Option<Self>, String> {
        let parsed = match super::args::parse(&COMMAND, args)? {
            Outcome::Help(text) => {
                super::print_out(&text);
                return Ok(None);
            }
            Outcome::Run(parsed) => parsed,
        };
        let text = |name: &str| parsed.get(name).map(str::to_string);
        let memory_mb = match parsed.get("memory") {
            None => 512,
            Some(value) => value
                .parse::<i64>()
                .ok()
                .filter(|mb| (6..=MAX_MEMORY_MB).contains(mb))
                .ok_or_else(|| {
                    format!("--memory takes a whole number of MB from 6 to {MAX_MEMORY_MB}, not {value:?}")
                })?,
        };
        let duration = |name: &str, default: &str, max: Duration| {
            let value = parsed.get(name).unwrap_or(default);
            config::duration::checked(value, max).ok_or_else(|| {
                format!(
                    "--{name} takes a duration up to {} such as \"90s\" or \"1h30m\", not {value:?}",
                    humantime::format_duration(max)
                )
            })
        };
        let provider =
            text("provider").ok_or("--provider is required (openai, anthropic or google)")?;
        if parsed.operands.is_empty() {
            return Err("give the command to run after `--`, e.g. `-- codex --version`".into());
        }
        Ok(Some(RunOptions {
            provider,
            user: text("user"),
            image: text("image"),
            work_dir: text("work-dir").unwrap_or_else(|| "/tmp".into()),
            memory_mb,
            docker_endpoint: text("docker-endpoint"),
            debug: parsed.flag("debug"),
            credential_mode: text("credential-mode"),
            api_upstream: text("api-upstream"),
            upstream_ca_file: text("upstream-ca-file"),
            kill_timeout: duration("kill-timeout", "10s", MAX_KILL_TIMEOUT)?,
            timeout: duration("timeout", "24h", MAX_TIMEOUT)?,
            argv: parsed.operands,
        }))
    }

    /// The plugin configuration this run uses: the defaults, plus the overrides given, checked
    /// as the plugin config's decoder checks them.
    fn plugin_config(&self) -> Result<PluginConfig, String> {
        let mut plugin = PluginConfig::default();
        let block = RawProvider {
            credential_mode: self.credential_mode.clone(),
            api_upstream: self.api_upstream.clone(),
            upstream_ca_file: self.upstream_ca_file.clone(),
            ..RawProvider::default()
        };
        if block != RawProvider::default() {
            config::set_provider(&mut plugin.providers, &self.provider, &block)
                .map_err(|e| e.to_string())?;
        }
        if let Some(endpoint) = &self.docker_endpoint {
            plugin.docker_endpoint = DockerEndpoint::parse(endpoint).map_err(|e| e.to_string())?;
        }
        plugin.security.allow_image_override = self.image.is_some();
        Ok(plugin)
    }

    /// The task's `config {}` block, validated by the same checks as a jobspec's.
    fn task_config(&self, plugin: &PluginConfig) -> Result<config::TaskConfig, String> {
        RawTaskConfig {
            provider: Some(self.provider.clone()),
            user_id: self.user.clone(),
            command: Some(self.argv[0].clone()),
            args: self.argv[1..].to_vec(),
            work_dir: Some(self.work_dir.clone()),
            image: self.image.clone(),
            labels: Vec::new(),
            debug: self.debug,
        }
        .resolve(plugin)
        .map_err(|e| e.to_string())
    }
}

/// `polydev run ARGS`; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let options = match RunOptions::parse(args) {
        Ok(Some(options)) => options,
        Ok(None) => return 0,
        Err(message) => return super::usage_error(&COMMAND, &message),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            super::print_err(&format!("polydev run: cannot start the async runtime: {e}"));
            return 1;
        }
    };
    match runtime.block_on(run_task(options)) {
        Ok(code) => code,
        Err(message) => {
            super::print_err(&format!("polydev run: {message}"));
            1
        }
    }
}

/// How the wait for the task ended.
enum Ending {
    Exited(crate::core::ExitOutcome),
    Signal(i32),
    TimedOut,
}

async fn run_task(options: RunOptions) -> Result<i32, String> {
    let plugin = options.plugin_config()?;
    let task_config = options.task_config(&plugin)?;
    let wiring = Wiring::operator_run();
    if let Some(note) = wiring
        .check_task_user(&plugin)
        .await
        .map_err(|e| e.to_string())?
    {
        super::print_err(&format!("polydev run: note: {note}"));
    }
    let state_dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let shutdown = CancellationToken::new();
    let core = wiring
        .operator_core(plugin, state_dir.path(), options.timeout, &shutdown)
        .map_err(|e| e.to_string())?;
    // Containers of earlier runs that were killed and are past their expiry.
    core.sweep_expired().await;
    let suffix: String = format!("{:08x}", std::process::id());
    let task = TaskSpec {
        id: format!("cli/run/{suffix}"),
        name: "run".into(),
        alloc_id: format!("cli-{suffix}"),
        job_name: "polydev-run".into(),
        namespace: "default".into(),
        env: BTreeMap::new(),
        limits: ResourceLimits {
            memory_bytes: options.memory_mb << 20,
            ..Default::default()
        },
        alloc_dir: None,
        logs: Some(LogPaths {
            stdout: "/dev/fd/1".into(),
            stderr: "/dev/fd/2".into(),
        }),
        config: task_config,
    };
    let id = task.id.clone();
    let (mut term, mut hup, mut int) = (
        signal(SignalKind::terminate()).map_err(|e| e.to_string())?,
        signal(SignalKind::hangup()).map_err(|e| e.to_string())?,
        signal(SignalKind::interrupt()).map_err(|e| e.to_string())?,
    );
    core.start_task(task).await.map_err(|e| e.to_string())?;
    let ending = tokio::select! {
        outcome = core.wait_task(&id) => Ending::Exited(outcome.map_err(|e| e.to_string())?),
        _ = term.recv() => Ending::Signal(libc::SIGTERM),
        _ = hup.recv() => Ending::Signal(libc::SIGHUP),
        _ = int.recv() => Ending::Signal(libc::SIGINT),
        _ = tokio::time::sleep(options.timeout) => Ending::TimedOut,
    };
    let code = match ending {
        Ending::Exited(outcome) => {
            if outcome.oom_killed {
                super::print_err(&format!(
                    "polydev run: the task was killed for using more than {} MB",
                    options.memory_mb
                ));
            }
            if outcome.exit_code < 0 {
                1
            } else {
                outcome.exit_code
            }
        }
        Ending::Signal(number) => {
            super::print_err(&format!(
                "polydev run: stopping the task (signal {number}; SIGKILL after {})",
                humantime::format_duration(options.kill_timeout)
            ));
            stop(&core, &id, options.kill_timeout).await?;
            128 + number
        }
        Ending::TimedOut => {
            super::print_err(&format!(
                "polydev run: the task ran longer than --timeout {}; stopping it",
                humantime::format_duration(options.timeout)
            ));
            stop(&core, &id, options.kill_timeout).await?;
            124
        }
    };
    core.destroy_task(&id, true)
        .await
        .map_err(|e| e.to_string())?;
    shutdown.cancel();
    Ok(code)
}

async fn stop(core: &Core, id: &str, kill_timeout: Duration) -> Result<(), String> {
    core.stop_task(id, kill_timeout, "SIGTERM")
        .await
        .map_err(|e| e.to_string())?;
    core.wait_task(id).await.map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    fn parse(text: &str) -> Result<RunOptions, String> {
        RunOptions::parse(&args(text)).map(|o| o.expect("not --help"))
    }

    #[test]
    fn parses_run_options_in_both_forms() {
        let options =
            parse("--provider openai --user=u1 --memory 256 --timeout=1h30m -- codex --version")
                .unwrap();
        assert_eq!(options.provider, "openai");
        assert_eq!(options.user.as_deref(), Some("u1"));
        assert_eq!(options.memory_mb, 256);
        assert_eq!(options.timeout, Duration::from_secs(5400));
        assert_eq!(options.argv, args("codex --version"));
    }

    #[test]
    fn rejects_bad_run_options_with_a_fix() {
        let err = |text| parse(text).unwrap_err();
        assert!(err("-- codex").contains("--provider"));
        assert!(err("--provider openai").contains("after `--`"));
        assert!(err("--provider openai --memory lots -- x").contains("--memory"));
        // 2^43 MB would overflow into "unlimited" in bytes.
        assert!(err("--provider openai --memory 8796093022208 -- x").contains("16777216"));
        assert!(err("--provider openai --timeout 0s -- x").contains("--timeout"));
        assert!(err("--provider openai --bogus -- x").contains("--bogus"));
    }

    /// What `polydev run` built before it had typed constructors: the same options as the
    /// msgpack Nomad would send, through the decoders.
    fn decoded(options: &RunOptions) -> Result<(PluginConfig, config::TaskConfig), String> {
        use rmpv::Value;
        let text = |v: &Option<String>| v.as_deref().map(Value::from).unwrap_or(Value::Nil);
        let encode = |value: Value| {
            let mut bytes = Vec::new();
            rmpv::encode::write_value(&mut bytes, &value).unwrap();
            bytes
        };
        let mut fields = vec![];
        if let Some(endpoint) = &options.docker_endpoint {
            fields.push((
                Value::from("docker_endpoint"),
                Value::from(endpoint.as_str()),
            ));
        }
        let provider_fields: Vec<(Value, Value)> = [
            ("credential_mode", &options.credential_mode),
            ("api_upstream", &options.api_upstream),
            ("upstream_ca_file", &options.upstream_ca_file),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_deref().map(|v| (Value::from(key), Value::from(v))))
        .collect();
        if !provider_fields.is_empty() {
            let block = Value::Map(provider_fields);
            let blocks = Value::Map(vec![(Value::from(options.provider.as_str()), block)]);
            fields.push((Value::from("provider"), blocks));
        }
        if options.image.is_some() {
            let allow = vec![(Value::from("allow_image_override"), Value::Boolean(true))];
            fields.push((Value::from("security"), Value::Map(allow)));
        }
        let plugin =
            config::decode_plugin_config(&encode(Value::Map(fields))).map_err(|e| e.to_string())?;
        let args = options.argv[1..].iter().map(|a| Value::from(a.as_str()));
        let task = Value::Map(vec![
            (Value::from("args"), Value::Array(args.collect())),
            (
                Value::from("command"),
                Value::from(options.argv[0].as_str()),
            ),
            (Value::from("debug"), Value::Boolean(options.debug)),
            (Value::from("image"), text(&options.image)),
            (Value::from("labels"), Value::Nil),
            (
                Value::from("provider"),
                Value::from(options.provider.as_str()),
            ),
            (Value::from("user_id"), text(&options.user)),
            (
                Value::from("work_dir"),
                Value::from(options.work_dir.as_str()),
            ),
        ]);
        let task = config::decode_task_config(&encode(task), &plugin).map_err(|e| e.to_string())?;
        Ok((plugin, task))
    }

    fn typed(options: &RunOptions) -> Result<(PluginConfig, config::TaskConfig), String> {
        let plugin = options.plugin_config()?;
        let task = options.task_config(&plugin)?;
        Ok((plugin, task))
    }

    #[test]
    fn typed_configs_are_what_the_decoders_make_of_the_same_options() {
        for line in [
            "--provider openai -- codex --version",
            "--provider anthropic --user u1 --debug --work-dir /src -- claude -p hi",
            "--provider google --image mine:1 -- gemini",
            "--provider openai --credential-mode env -- codex",
            "--provider openai --api-upstream https://gw.internal/openai --upstream-ca-file /ca.pem -- codex",
            "--provider anthropic --docker-endpoint unix:///run/docker.sock -- claude",
            // Each refused, with the decoder's words.
            "--provider opnai -- codex",
            "--provider aider --credential-mode env -- aider",
            "--provider openai --credential-mode sometimes -- codex",
            "--provider openai --api-upstream http://api.openai.com -- codex",
            "--provider openai --credential-mode env --api-upstream https://x -- codex",
            "--provider openai --upstream-ca-file ca.pem -- codex",
            "--provider openai --docker-endpoint tcp://1.2.3.4:2375 -- codex",
            "--provider openai --work-dir relative -- codex",
            "--provider openai --user ../x -- codex",
            "--provider openai --image a\u{7f}b -- codex",
        ] {
            let options = parse(line).unwrap();
            assert_eq!(typed(&options), decoded(&options), "{line}");
        }
    }

    #[test]
    fn help_is_not_an_error() {
        assert_eq!(RunOptions::parse(&args("--help")), Ok(None));
    }
}
