//! The three real CLIs through the driver: StartTask over the real gRPC socket, real Docker, the
//! real provider images, a test key injected by polydev; the CLI's version text arrives in the
//! task's stdout FIFO and the key is nowhere in `docker inspect`.
//!
//! The provider images are built by `containers/build-images.sh` (idempotent; the entrypoint
//! tests build them too).

mod support;

use std::path::Path;

use polydev::pb::hashicorp::nomad::plugins::drivers::proto as nomad;
use rmpv::Value;
use support::real::{AllocDir, Plugin, docker};
use support::tasks::{destroy, finish, test_key, unique_id, wait, wait_for_reported_idle};
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

/// Default provider images; a warm pool of one for `openai` only.
fn config(data_dir: &Path) -> Vec<u8> {
    let pool = |target: u32| {
        cty_object(vec![
            ("target", Value::from(target)),
            ("when_empty", Value::from("cold")),
        ])
    };
    encode(&cty_object(vec![
        ("data_dir", Value::from(data_dir.to_str().unwrap())),
        (
            "pool",
            Value::Map(vec![
                (Value::from("anthropic"), pool(0)),
                (Value::from("google"), pool(0)),
                (Value::from("openai"), pool(1)),
            ]),
        ),
    ]))
}

async fn run_cli(provider: &str, command: &str, expect: &str) {
    ensure_provider_images();
    let key = test_key();
    let data_dir = tempfile::tempdir().unwrap();
    let variable = match provider {
        "openai" => "OPENAI_API_KEY",
        "anthropic" => "ANTHROPIC_API_KEY",
        _ => "GOOGLE_API_KEY",
    };
    let plugin = Plugin::spawn(&[(variable, key.as_str())]);
    let (mut base, mut driver) = plugin.clients().await;
    let cleanup = Cleanup { plugin, data_dir };
    base.set_config(support::set_config_request(
        config(cleanup.data_dir.path()),
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
    let mut options = TaskOptions::new(provider, command, &["--version"]);
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
    assert_eq!(
        result.result.unwrap().exit_code,
        0,
        "stdout {stdout:?} stderr {stderr:?}"
    );
    assert!(
        stdout.contains(expect),
        "{command} --version printed {stdout:?} (stderr {stderr:?})"
    );
    destroy(&mut driver, &id, &container).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_runs_through_the_driver_from_a_warm_container() {
    run_cli("openai", "codex", "codex-cli 0.171.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_runs_through_the_driver() {
    run_cli("anthropic", "claude", "2.1.100 (Claude Code)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_runs_through_the_driver() {
    run_cli("google", "gemini", "0.61.0").await;
}
