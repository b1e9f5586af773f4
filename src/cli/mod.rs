//! The operator CLI: what the binary does when Nomad did not start it as a plugin.
//!
//! - `polydev run --provider P [options] -- CMD ARGS…` runs one task through the same core the
//!   plugin uses (same container settings, launch spec, credentials and log pump), streams its
//!   output to this terminal and exits with the task's exit code.
//! - `polydev credentials set|list|rm` manages the encrypted per-user credential store
//!   ([`credentials`]).
//! - `polydev version` prints the version.
//! - `polydev help` explains both modes.

mod credentials;
mod pool;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rmpv::Value;
use tokio_util::sync::CancellationToken;

use crate::config::{self, PluginConfig};
use crate::core::{Core, CorePorts, CoreSettings, EventBus, LogPaths, TaskSpec};
use crate::credentials::EnvSource;
use crate::docker::DockerRuntime;
use crate::logs::forward::InProcessForwarder;
use crate::runtime::{ContainerRuntime, ResourceLimits};

const HELP: &str = "\
polydev — a HashiCorp Nomad task driver that runs LLM coding CLIs (Codex, Claude Code,
Gemini CLI) in one-shot, non-root Docker containers, injecting each user's credentials.

Two modes:
  As a Nomad plugin: put this binary in the agent's plugin_dir and add a
  `plugin \"polydev\" { config { ... } }` block; Nomad starts it (with
  NOMAD_PLUGIN_MAGIC_COOKIE set) and talks to it over gRPC. Jobs use
  `driver = \"polydev\"`.

  As an operator tool (this mode):
    polydev run --provider PROVIDER [OPTIONS] -- COMMAND [ARGS...]
        Run one task exactly as the driver would and stream its output here;
        exits with the task's exit code. Credentials come from this shell's
        environment (e.g. OPENAI_API_KEY) and stay in this process: the CLI
        reaches its API through polydev's credential broker (needs root).
        --provider P          openai | anthropic | google (required)
        --user ID             user id passed to the task as USER_ID
        --image IMAGE         image to use instead of the provider's default
        --work-dir DIR        working directory in the container (default /tmp)
        --memory MB           memory limit (default 512)
        --docker-endpoint E   Docker socket (default unix:///var/run/docker.sock)
        --debug               the container entrypoint prints what it launches
        --credential-mode M   broker (default for the built-in providers: the key
                              stays in this process, the container has no network)
                              or env (the key is in the CLI's environment)
        --api-upstream URL    the provider's API (default: its public https:// API)
        --upstream-ca-file F  extra CA certificates (PEM) for the API's TLS
    polydev pool status [--data-dir DIR] [--docker-endpoint E]
                              idle warm containers and running tasks per provider
    polydev credentials set|list|rm [OPTIONS]
        Manage the per-user credentials the plugin injects into tasks that set a
        user_id, encrypted under the plugin's data_dir (run it as the plugin's
        user). The value of `set` is read from stdin, never from the command line:
          printf %s \"$KEY\" | polydev credentials set --namespace NS --user ID --provider P
        `polydev credentials help` lists every option.
    polydev version           print the version
    polydev help              this text
";

/// Run the CLI with `args` (without the program name); returns the process exit code.
pub fn main(args: Vec<String>) -> i32 {
    match args.first().map(String::as_str) {
        None | Some("help" | "--help" | "-h") => {
            print!("{HELP}");
            if args.is_empty() { 2 } else { 0 }
        }
        Some("version" | "--version" | "-V") => {
            println!(
                "polydev {} (Nomad driver API 0.1.0)",
                env!("CARGO_PKG_VERSION")
            );
            0
        }
        Some("pool") => pool::main(&args[1..]),
        Some("credentials") => credentials::main(&args[1..]),
        Some("run") => match RunOptions::parse(&args[1..]) {
            Ok(options) => run(options),
            Err(message) => {
                eprintln!("polydev run: {message}\nRun `polydev help` for usage.");
                2
            }
        },
        Some(other) => {
            eprintln!("polydev: unknown command {other:?}\nRun `polydev help` for usage.");
            2
        }
    }
}

/// Parsed `polydev run` arguments.
#[derive(Debug, Default, PartialEq)]
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
    argv: Vec<String>,
}

impl RunOptions {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = RunOptions {
            work_dir: "/tmp".into(),
            memory_mb: 512,
            ..Default::default()
        };
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let mut value = |name: &str| {
                iter.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--" => {
                    options.argv = iter.cloned().collect();
                    break;
                }
                "--provider" => options.provider = value("--provider")?,
                "--user" => options.user = Some(value("--user")?),
                "--image" => options.image = Some(value("--image")?),
                "--work-dir" => options.work_dir = value("--work-dir")?,
                "--docker-endpoint" => options.docker_endpoint = Some(value("--docker-endpoint")?),
                "--credential-mode" => options.credential_mode = Some(value("--credential-mode")?),
                "--api-upstream" => options.api_upstream = Some(value("--api-upstream")?),
                "--upstream-ca-file" => {
                    options.upstream_ca_file = Some(value("--upstream-ca-file")?)
                }
                "--memory" => {
                    let text = value("--memory")?;
                    options.memory_mb =
                        text.parse().ok().filter(|mb| *mb >= 6).ok_or_else(|| {
                            format!(
                                "--memory takes a whole number of MB (at least 6), not {text:?}"
                            )
                        })?;
                }
                "--debug" => options.debug = true,
                other => {
                    return Err(format!(
                        "unknown option {other:?}; put the command after `--`"
                    ));
                }
            }
        }
        if options.provider.is_empty() {
            return Err("--provider is required (openai, anthropic or google)".into());
        }
        if options.argv.is_empty() {
            return Err("give the command to run after `--`, e.g. `-- codex --version`".into());
        }
        Ok(options)
    }

    /// The plugin configuration this run uses: the defaults, plus the overrides given.
    fn plugin_config(&self) -> Result<PluginConfig, String> {
        let mut fields = vec![];
        if let Some(endpoint) = &self.docker_endpoint {
            fields.push((
                Value::from("docker_endpoint"),
                Value::from(endpoint.as_str()),
            ));
        }
        let provider_fields: Vec<(Value, Value)> = [
            ("credential_mode", &self.credential_mode),
            ("api_upstream", &self.api_upstream),
            ("upstream_ca_file", &self.upstream_ca_file),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_deref().map(|v| (Value::from(key), Value::from(v))))
        .collect();
        if !provider_fields.is_empty() {
            fields.push((
                Value::from("provider"),
                Value::Map(vec![(
                    Value::from(self.provider.as_str()),
                    Value::Map(provider_fields),
                )]),
            ));
        }
        if self.image.is_some() {
            fields.push((
                Value::from("security"),
                Value::Map(vec![(
                    Value::from("allow_image_override"),
                    Value::Boolean(true),
                )]),
            ));
        }
        config::decode_plugin_config(&encode(Value::Map(fields))).map_err(|e| e.to_string())
    }

    /// The task's `config {}` block, validated by the same decoder as a jobspec's.
    fn task_config(&self, plugin: &PluginConfig) -> Result<config::TaskConfig, String> {
        let text = |v: &Option<String>| v.as_deref().map(Value::from).unwrap_or(Value::Nil);
        let object = Value::Map(vec![
            (
                Value::from("args"),
                Value::Array(
                    self.argv[1..]
                        .iter()
                        .map(|a| Value::from(a.as_str()))
                        .collect(),
                ),
            ),
            (Value::from("command"), Value::from(self.argv[0].as_str())),
            (Value::from("debug"), Value::Boolean(self.debug)),
            (Value::from("image"), text(&self.image)),
            (Value::from("labels"), Value::Nil),
            (Value::from("provider"), Value::from(self.provider.as_str())),
            (Value::from("user_id"), text(&self.user)),
            (Value::from("work_dir"), Value::from(self.work_dir.as_str())),
        ]);
        config::decode_task_config(&encode(object), plugin).map_err(|e| e.to_string())
    }
}

fn encode(value: Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &value).expect("writing to a Vec cannot fail");
    bytes
}

fn run(options: RunOptions) -> i32 {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("polydev run: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(run_task(options)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("polydev run: {message}");
            1
        }
    }
}

async fn run_task(options: RunOptions) -> Result<i32, String> {
    let plugin = options.plugin_config()?;
    let task_config = options.task_config(&plugin)?;
    let docker: Arc<dyn ContainerRuntime> = Arc::new(
        DockerRuntime::connect(&plugin.docker_endpoint.to_string()).map_err(|e| e.to_string())?,
    );
    let state_dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let shutdown = CancellationToken::new();
    let credentials: Arc<dyn crate::credentials::CredentialSource> =
        Arc::new(EnvSource::from_process_env());
    let broker = crate::broker::Broker::new(&plugin, credentials.clone(), shutdown.child_token())
        .map_err(|e| e.to_string())?;
    let ports = CorePorts {
        runtime: docker.clone(),
        credentials,
        forwarder: Arc::new(InProcessForwarder::new(
            docker,
            state_dir.path().to_path_buf(),
        )),
        broker: Arc::new(broker),
    };
    let core = Core::new(
        ports,
        CoreSettings {
            config: plugin,
            node: crate::driver::host_name(),
            orphan_grace: Duration::from_secs(600),
        },
        None,
        EventBus::default(),
        shutdown.clone(),
    );
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
            stdout: "/dev/stdout".into(),
            stderr: "/dev/stderr".into(),
        }),
        config: task_config,
    };
    let id = task.id.clone();
    core.start_task(task).await.map_err(|e| e.to_string())?;
    let outcome = tokio::select! {
        outcome = core.wait_task(&id) => outcome.map_err(|e| e.to_string())?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("polydev run: interrupted; stopping the task");
            core.stop_task(&id, Duration::from_secs(10), "SIGTERM").await.map_err(|e| e.to_string())?;
            core.wait_task(&id).await.map_err(|e| e.to_string())?
        }
    };
    core.destroy_task(&id, true)
        .await
        .map_err(|e| e.to_string())?;
    shutdown.cancel();
    if outcome.oom_killed {
        eprintln!(
            "polydev run: the task was killed for using more than {} MB",
            options.memory_mb
        );
    }
    Ok(if outcome.exit_code < 0 {
        1
    } else {
        outcome.exit_code
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_run_options() {
        let options = RunOptions::parse(&args(
            "--provider openai --user u1 --memory 256 -- codex --version",
        ))
        .unwrap();
        assert_eq!(options.provider, "openai");
        assert_eq!(options.user.as_deref(), Some("u1"));
        assert_eq!(options.memory_mb, 256);
        assert_eq!(options.argv, args("codex --version"));
    }

    #[test]
    fn rejects_bad_run_options_with_a_fix() {
        assert!(
            RunOptions::parse(&args("-- codex"))
                .unwrap_err()
                .contains("--provider")
        );
        assert!(
            RunOptions::parse(&args("--provider openai"))
                .unwrap_err()
                .contains("after `--`")
        );
        assert!(
            RunOptions::parse(&args("--provider openai --memory lots -- x"))
                .unwrap_err()
                .contains("--memory")
        );
        assert!(
            RunOptions::parse(&args("--provider openai --bogus -- x"))
                .unwrap_err()
                .contains("--bogus")
        );
    }

    #[test]
    fn unknown_commands_exit_2() {
        assert_eq!(main(args("frobnicate")), 2);
        assert_eq!(main(args("version")), 0);
    }
}
