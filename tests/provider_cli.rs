//! The three real CLIs through the driver: StartTask over the real gRPC socket, real Docker, the
//! real provider images, the node's test key held by polydev's credential broker.
//! - `--version`: the CLI's version text arrives in the task's stdout FIFO and the key is
//!   nowhere in `docker inspect`.
//! - A real prompt, passed with the shipped jobspecs' `args` (`nomad/*.nomad.hcl`) and shaped
//!   like one of the CLI's own flags (`--yolo`): it reaches the model as the prompt's text, so a
//!   dispatched prompt cannot switch a CLI's behaviour. The CLI sends its request to
//!   the broker in its network-less container; the stand-in API (`support::upstream`, the real
//!   APIs are unreachable here) receives it with the real key in the provider's own header and
//!   no placeholder, and answers in the API's documented streaming format; that answer is the
//!   CLI's output in the stdout FIFO.
//! - A renamed key (`provider "openai" { credentials = ["TEAM_OPENAI_KEY"] }`, and the same for
//!   anthropic): the stock image runs, the CLI finds its placeholder where it reads its key, and
//!   the renamed variable's value reaches the API.
//!
//! The provider images are built by `containers/build-images.sh` (idempotent; the entrypoint
//! tests build them too).

mod support;

use std::path::Path;

use polydev::pb::hashicorp::nomad::plugins::drivers::proto as nomad;
use rmpv::Value;
use support::canned::{REPLY_TEXT, canned, jobspec_args};
use support::real::{AllocDir, Plugin, docker};
use support::tasks::{destroy, finish, test_key, unique_id, wait, wait_for_reported_idle};
use support::upstream::{Recorded, StandIn};
use support::{TaskOptions, cty_object, encode, task_config};

/// Build (or find up to date) the provider images once per test binary.
fn ensure_provider_images() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("containers/build-images.sh");
        let status = std::process::Command::new("bash")
            .arg(script)
            .args([
                "--provider",
                "openai",
                "--provider",
                "anthropic",
                "--provider",
                "google",
            ])
            .status()
            .expect("run containers/build-images.sh");
        assert!(status.success(), "building the provider images failed");
    });
}

/// Default provider images; a warm pool of one for `openai` only; `api` as every provider's
/// upstream when given.
/// The plugin config: every provider's API at `api`; with `renamed_key` = (provider, variable),
/// the operator has renamed that provider's key variable (`provider "openai" { credentials =
/// [...] }`).
fn config(data_dir: &Path, api: Option<&StandIn>, renamed_key: Option<(&str, &str)>) -> Vec<u8> {
    let provider = |name: &str| {
        let mut fields = match api {
            Some(api) => vec![
                ("api_upstream", Value::from(api.origin())),
                ("upstream_ca_file", Value::from(api.ca_path())),
            ],
            None => vec![],
        };
        if let Some((_, key)) = renamed_key.filter(|(provider, _)| *provider == name) {
            fields.insert(0, ("credentials", support::str_list(&[key])));
        }
        cty_object(fields)
    };
    let pool = |target: u32| {
        cty_object(vec![
            ("target", Value::from(target)),
            ("when_empty", Value::from("cold")),
        ])
    };
    encode(&cty_object(vec![
        (
            "credentials_key_file",
            Value::from(support::key_file(data_dir).to_str().unwrap()),
        ),
        ("data_dir", Value::from(data_dir.to_str().unwrap())),
        (
            "pool",
            Value::Map(vec![
                (Value::from("anthropic"), pool(0)),
                (Value::from("google"), pool(0)),
                (Value::from("openai"), pool(1)),
            ]),
        ),
        (
            "provider",
            Value::Map(
                ["anthropic", "google", "openai"]
                    .into_iter()
                    .map(|name| (Value::from(name), provider(name)))
                    .collect(),
            ),
        ),
    ]))
}

/// The key variable of a built-in provider.
fn key_variable(provider: &str) -> &'static str {
    match provider {
        "openai" => "OPENAI_API_KEY",
        "anthropic" => "ANTHROPIC_API_KEY",
        _ => "GOOGLE_API_KEY",
    }
}

/// What one CLI run produced.
struct CliRun {
    key: String,
    exit_code: i32,
    stdout: String,
    stderr: String,
}

async fn run_cli(provider: &str, command: &str, expect: &str) {
    let run = run_task(provider, command, &["--version"], None).await;
    assert_eq!(
        run.exit_code, 0,
        "stdout {:?} stderr {:?}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains(expect),
        "{command} --version printed {:?} (stderr {:?})",
        run.stdout,
        run.stderr
    );
}

/// Run `command args` as a task of `provider` (warm for openai) and wait for its end.
async fn run_task(provider: &str, command: &str, args: &[&str], api: Option<&StandIn>) -> CliRun {
    run_task_with_key(provider, command, args, api, None).await
}

/// [`run_task`], the key in the agent's environment under `renamed_key` (the provider's key
/// variable as the operator renamed it) if given.
async fn run_task_with_key(
    provider: &str,
    command: &str,
    args: &[&str],
    api: Option<&StandIn>,
    renamed_key: Option<&str>,
) -> CliRun {
    ensure_provider_images();
    let key = test_key();
    let data_dir = tempfile::tempdir().unwrap();
    let variable = renamed_key.unwrap_or(key_variable(provider));
    let plugin = Plugin::spawn(&[(variable, key.as_str())]);
    let (mut base, mut driver) = plugin.clients().await;
    let cleanup = Cleanup { plugin, data_dir };
    base.set_config(support::set_config_request(
        config(
            cleanup.data_dir.path(),
            api,
            renamed_key.map(|key| (provider, key)),
        ),
        true,
    ))
    .await
    .unwrap();
    if provider == "openai" {
        // Let the pool start its one warm container, so this run goes through a claim.
        wait_for_reported_idle(&driver, "openai", 1).await;
    }
    let alloc = AllocDir::new("cli");
    let (stdout, stderr) = alloc.start_readers();
    let id = unique_id("cli");
    let mut options = TaskOptions::new(provider, command, args);
    options.work_dir = Some("/local".into());
    let mut task = task_config(&id, Some(alloc.root.path()), &options);
    task.name = "cli".into();
    // The Node CLIs need more than the test default of 128 MB (the jobspecs in nomad/ use 512).
    support::set_memory_mb(&mut task, 512);
    let handle = driver
        .start_task(nomad::StartTaskRequest { task: Some(task) })
        .await
        .expect("StartTask")
        .into_inner()
        .handle
        .unwrap();
    let container = polydev::core::DriverState::decode(&handle.driver_state)
        .unwrap()
        .container_id;
    let inspect = docker(&["inspect", &container]);
    assert!(inspect.contains(&container));
    if provider == "openai" {
        let name = docker(&["inspect", "-f", "{{.Name}}", &container]);
        assert!(
            name.contains("polydev-pool-openai-"),
            "expected a warm claim, got {name}"
        );
    }
    assert!(!inspect.contains(&key), "the key is in docker inspect");
    let result = wait(&mut driver, &id).await;
    let stdout = String::from_utf8_lossy(&finish(stdout).await).into_owned();
    let stderr = String::from_utf8_lossy(&finish(stderr).await).into_owned();
    destroy(&mut driver, &id, &container).await;
    CliRun {
        key,
        exit_code: result.result.unwrap().exit_code,
        stdout,
        stderr,
    }
}

/// A real prompt through the broker: checks what reached the API and what the CLI printed.
async fn prompt(
    provider: &str,
    command: &str,
    args: &[&str],
    model_path: &str,
    auth: &str,
) -> Vec<Recorded> {
    prompt_with_key(provider, command, args, model_path, auth, None).await
}

/// [`prompt`], with the provider's key variable renamed to `renamed_key` if given.
async fn prompt_with_key(
    provider: &str,
    command: &str,
    args: &[&str],
    model_path: &str,
    auth: &str,
    renamed_key: Option<&str>,
) -> Vec<Recorded> {
    let api = StandIn::start(canned).await;
    let run = run_task_with_key(provider, command, args, Some(&api), renamed_key).await;
    let requests = api.requests();
    let model_requests: Vec<&Recorded> = requests
        .iter()
        .filter(|r| r.path.starts_with(model_path) || r.path.contains(model_path))
        .collect();
    assert!(
        !model_requests.is_empty(),
        "{command} sent no model request; the API got {requests:?}; stdout {:?} stderr {:?}",
        run.stdout,
        run.stderr
    );
    let expected_auth = if auth == "authorization" {
        format!("Bearer {}", run.key)
    } else {
        run.key.clone()
    };
    for request in &requests {
        assert_eq!(
            request.header(auth),
            Some(expected_auth.as_str()),
            "{request:?}"
        );
        assert!(
            !request
                .text()
                .contains(polydev::core::cli_launch::PLACEHOLDER),
            "the placeholder reached the API: {request:?}"
        );
        // A WebSocket handshake (the broker drops its hop-by-hop `Upgrade`, not the rest) means
        // the CLI tried a transport the broker cannot relay.
        assert!(
            request.header("sec-websocket-key").is_none() && request.header("upgrade").is_none(),
            "{command} tried a WebSocket: {request:?}"
        );
    }
    for request in &model_requests {
        assert_eq!(request.method, "POST", "{command}: {request:?}");
    }
    assert_eq!(
        run.exit_code, 0,
        "stdout {:?} stderr {:?}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains(REPLY_TEXT),
        "{command} printed {:?} (stderr {:?}); the API got {requests:?}",
        run.stdout,
        run.stderr
    );
    assert!(!run.stdout.contains(&run.key) && !run.stderr.contains(&run.key));
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    eprintln!("{command}: the API got {paths:?}; stdout {:?}", run.stdout);
    requests
}

/// Whatever happens in the test: stop the plugin, remove its containers, unmount its slots.
struct Cleanup {
    plugin: Plugin,
    data_dir: tempfile::TempDir,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.plugin.kill9();
        support::tasks::remove_containers_of(&self.data_dir.path().to_string_lossy());
        let slots = self.data_dir.path().join("slots");
        let _ = std::process::Command::new("umount")
            .arg("-R")
            .arg("-l")
            .arg(slots)
            .output();
    }
}

/// The CLI version `containers/versions.tsv` pins for `provider` (the images are built from it).
fn pinned_version(provider: &str) -> String {
    let table = Path::new(env!("CARGO_MANIFEST_DIR")).join("containers/versions.tsv");
    let text = std::fs::read_to_string(&table).unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.split('\t').collect::<Vec<_>>())
        .find(|columns| columns.first() == Some(&provider))
        .and_then(|columns| columns.get(2).map(|v| v.to_string()))
        .unwrap_or_else(|| panic!("{} has no row for {provider}", table.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_runs_through_the_driver_from_a_warm_container() {
    let version = pinned_version("openai");
    run_cli("openai", "codex", &format!("codex-cli {version}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_runs_through_the_driver() {
    let version = pinned_version("anthropic");
    run_cli("anthropic", "claude", &format!("{version} (Claude Code)")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_runs_through_the_driver() {
    run_cli("google", "gemini", &pinned_version("google")).await;
}

/// A dispatched prompt that looks like one of the CLI's own flags goes through the shipped
/// jobspec's args: it must reach the model as the prompt, not switch the CLI's behaviour.
async fn jobspec_prompt(
    file: &str,
    provider: &str,
    command: &str,
    flag: &str,
    model_path: &str,
    auth: &str,
) {
    let args = jobspec_args(file, flag);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let requests = prompt(provider, command, &args, model_path, auth).await;
    assert!(
        requests
            .iter()
            .filter(|r| r.path.contains(model_path))
            .any(|r| String::from_utf8_lossy(&r.body).contains(flag)),
        "the prompt {flag:?} never reached the model as text: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_answers_a_prompt_through_the_broker_from_a_warm_container() {
    let flag = "--dangerously-bypass-approvals-and-sandbox";
    jobspec_prompt(
        "codex.nomad.hcl",
        "openai",
        "codex",
        flag,
        "/v1/responses",
        "authorization",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_key_reaches_the_api_from_the_stock_codex_image() {
    // `provider "openai" { credentials = ["TEAM_OPENAI_KEY"] }`: the stock image must not ask for
    // OPENAI_API_KEY, and codex must send the renamed key's value through the broker.
    let args = jobspec_args("codex.nomad.hcl", "Say hi, with a renamed key.");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let requests = prompt_with_key(
        "openai",
        "codex",
        &args,
        "/v1/responses",
        "authorization",
        Some("TEAM_OPENAI_KEY"),
    )
    .await;
    assert!(!requests.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_key_reaches_the_api_from_the_stock_claude_image() {
    // `provider "anthropic" { credentials = ["TEAM_ANTHROPIC_KEY"] }`: claude reads its key only
    // from ANTHROPIC_API_KEY, so the placeholder must be there for it to send a request at all,
    // and the broker must present the renamed variable's value.
    let args = jobspec_args("claude.nomad.hcl", "Say hi, with a renamed key.");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let requests = prompt_with_key(
        "anthropic",
        "claude",
        &args,
        "/v1/messages",
        "x-api-key",
        Some("TEAM_ANTHROPIC_KEY"),
    )
    .await;
    assert!(!requests.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_answers_a_prompt_through_the_broker() {
    let flag = "--dangerously-skip-permissions";
    jobspec_prompt(
        "claude.nomad.hcl",
        "anthropic",
        "claude",
        flag,
        "/v1/messages",
        "x-api-key",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_answers_a_prompt_through_the_broker() {
    let flag = "--yolo";
    jobspec_prompt(
        "gemini.nomad.hcl",
        "google",
        "gemini",
        flag,
        ":streamGenerateContent",
        "x-goog-api-key",
    )
    .await;
}
