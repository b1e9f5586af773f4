//! Task-level helpers for the real-Docker tests: a configured plugin process, starting a task
//! with logmon-like FIFO readers, waiting, destroying, and guards that leave nothing behind.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use polydev::pb::hashicorp::nomad::plugins::drivers::proto::{
    self as nomad, driver_client::DriverClient,
};
use tonic::transport::Channel;

use super::real::{
    AllocDir, FifoReader, Plugin, TEST_IMAGE, container_exists, docker, ensure_test_image,
};
use super::{PoolOptions, TaskOptions, plugin_config_with_pool, task_config};

/// Idle warm containers of `provider` as the plugin reports them to Nomad: the first message
/// of a new Fingerprint stream is a fresh probe (the debounce only smooths later messages).
pub async fn reported_idle(driver: &DriverClient<Channel>, provider: &str) -> Option<i64> {
    use futures::StreamExt;
    use polydev::pb::hashicorp::nomad::plugins::shared::structs::attribute::Value;
    let mut fingerprints = driver
        .clone()
        .fingerprint(nomad::FingerprintRequest {})
        .await
        .ok()?
        .into_inner();
    let first = fingerprints.next().await?.ok()?;
    let key = format!("driver.polydev.pool.{provider}.idle");
    match first.attributes.get(&key)?.value {
        Some(Value::IntVal(idle)) => Some(idle),
        _ => None,
    }
}

/// Wait (up to a minute) until the plugin reports `count` idle warm containers of `provider`.
pub async fn wait_for_reported_idle(driver: &DriverClient<Channel>, provider: &str, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while reported_idle(driver, provider).await != Some(count) {
        assert!(
            Instant::now() < deadline,
            "the {provider} pool never reported {count} idle containers"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A credential value unique to this test run, so a search for it cannot hit anything else.
pub fn test_key() -> String {
    format!(
        "sk-polydev-test-{}-{:x}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ 0x5eed_5eed
    )
}

pub struct Setup {
    pub plugin: Plugin,
    pub driver: DriverClient<Channel>,
    pub data_dir: tempfile::TempDir,
    pub key: String,
}

pub async fn setup() -> Setup {
    setup_with_pool(&PoolOptions::target(0)).await
}

/// A plugin configured as Nomad's long-lived instance (with `nomad_config`, so its background
/// work — the warm pool of provider `openai` — starts).
pub async fn setup_with_pool(pool: &PoolOptions) -> Setup {
    setup_with_pool_in(pool, &std::env::temp_dir()).await
}

/// [`setup_with_pool`] with the plugin's data dir inside `parent` (a mount of the test's choice).
pub async fn setup_with_pool_in(pool: &PoolOptions, parent: &std::path::Path) -> Setup {
    ensure_test_image();
    let key = test_key();
    let data_dir = tempfile::tempdir_in(parent).unwrap();
    let plugin = Plugin::spawn(&[("OPENAI_API_KEY", key.as_str()), ("POLYDEV_LOG", "debug")]);
    let (mut base, driver) = plugin.clients().await;
    configure_with_pool(&mut base, data_dir.path(), pool).await;
    Setup {
        plugin,
        driver,
        data_dir,
        key,
    }
}

impl Drop for Setup {
    /// Leave nothing behind: this plugin's containers (idle pool ones included) and the slots
    /// mount under its data dir.
    fn drop(&mut self) {
        self.plugin.kill9();
        let dir = self.data_dir.path().to_string_lossy().into_owned();
        // A create the plugin had in flight when killed still completes in dockerd: sweep until
        // nothing is left (briefly).
        for _ in 0..10 {
            remove_containers_of(&dir);
            std::thread::sleep(Duration::from_millis(200));
            if containers_of(self.data_dir.path()).is_empty() {
                break;
            }
        }
        let slots = self.data_dir.path().join("slots");
        let _ = std::process::Command::new("umount")
            .arg("-R")
            .arg("-l")
            .arg(&slots)
            .output();
    }
}

/// Remove every container a plugin with this data dir made.
pub fn remove_containers_of(data_dir: &str) {
    let filter = format!("label=io.polydev.data-dir={data_dir}");
    let ids = docker(&["ps", "-aq", "--filter", &filter]);
    for id in ids.split_whitespace() {
        let _ = docker(&["rm", "-f", id]);
    }
}

/// Ids of this plugin's containers, by pool role: (idle pool containers, all containers).
pub fn containers_of(data_dir: &std::path::Path) -> Vec<(String, String)> {
    let filter = format!("label=io.polydev.data-dir={}", data_dir.to_string_lossy());
    docker(&[
        "ps",
        "-a",
        "--format",
        "{{.ID}} {{.Names}}",
        "--no-trunc",
        "--filter",
        &filter,
    ])
    .lines()
    .filter_map(|line| line.split_once(' '))
    .map(|(id, name)| (id.to_string(), name.to_string()))
    .collect()
}

impl Setup {
    /// What the per-task log forwarders wrote about themselves (for failure messages).
    pub fn forwarder_logs(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.data_dir.path().join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.path().to_string_lossy().ends_with(".forwarder.log") {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }
}

pub async fn configure(
    base: &mut polydev::pb::hashicorp::nomad::plugins::base::proto::base_plugin_client::BasePluginClient<Channel>,
    data_dir: &std::path::Path,
) {
    configure_with_pool(base, data_dir, &PoolOptions::target(0)).await;
}

pub async fn configure_with_pool(
    base: &mut polydev::pb::hashicorp::nomad::plugins::base::proto::base_plugin_client::BasePluginClient<Channel>,
    data_dir: &std::path::Path,
    pool: &PoolOptions,
) {
    base.set_config(super::set_config_request(
        plugin_config_with_pool(TEST_IMAGE, data_dir, pool),
        true,
    ))
    .await
    .expect("SetConfig");
}

pub fn script(body: &str) -> TaskOptions {
    let mut options = TaskOptions::new("openai", "sh", &["-c", body]);
    options.work_dir = Some("/local".into());
    options
}

pub fn unique_id(task: &str) -> String {
    format!(
        "{:08x}-{}/{task}/{:08x}",
        std::process::id(),
        rand_suffix(),
        rand_suffix()
    )
}

pub fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(Instant::now().elapsed().as_nanos() as u64);
    hasher.finish() as u32
}

pub struct Started {
    pub id: String,
    /// Kept so the alloc dir lives as long as the task.
    pub _alloc: AllocDir,
    pub handle: nomad::TaskHandle,
    pub container: String,
    pub stdout: FifoReader,
    pub stderr: FifoReader,
    pub _guard: ContainerGuard,
}

/// Removes a task's container when the test ends, so a failing test leaks nothing.
pub struct ContainerGuard(String);

impl ContainerGuard {
    pub fn new(container: &str) -> ContainerGuard {
        ContainerGuard(container.to_string())
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

pub async fn start(
    driver: &mut DriverClient<Channel>,
    task: &str,
    options: TaskOptions,
    memory_mb: i64,
) -> Started {
    try_start(driver, task, options, memory_mb)
        .await
        .expect("StartTask")
}

/// StartTask that reports a refusal instead of failing the test.
pub async fn try_start(
    driver: &mut DriverClient<Channel>,
    task: &str,
    options: TaskOptions,
    memory_mb: i64,
) -> Result<Started, tonic::Status> {
    let id = unique_id(task);
    let alloc = AllocDir::new(task);
    let (stdout, stderr) = alloc.start_readers();
    let mut config = task_config(&id, Some(alloc.root.path()), &options);
    config.name = task.to_string();
    super::set_memory_mb(&mut config, memory_mb);
    let handle = driver
        .start_task(nomad::StartTaskRequest { task: Some(config) })
        .await?
        .into_inner()
        .handle
        .unwrap();
    let state = polydev::core::DriverState::decode(&handle.driver_state).unwrap();
    Ok(Started {
        id,
        _alloc: alloc,
        handle,
        _guard: ContainerGuard(state.container_id.clone()),
        container: state.container_id,
        stdout,
        stderr,
    })
}

pub async fn wait(driver: &mut DriverClient<Channel>, id: &str) -> nomad::WaitTaskResponse {
    driver
        .wait_task(nomad::WaitTaskRequest { task_id: id.into() })
        .await
        .expect("WaitTask")
        .into_inner()
}

pub async fn finish(reader: FifoReader) -> Vec<u8> {
    tokio::time::timeout(
        Duration::from_secs(300),
        tokio::task::spawn_blocking(move || reader.finish()),
    )
    .await
    .expect("the FIFO was closed at task end")
    .unwrap()
}

pub async fn destroy(driver: &mut DriverClient<Channel>, id: &str, container: &str) {
    driver
        .destroy_task(nomad::DestroyTaskRequest {
            task_id: id.to_string(),
            force: true,
        })
        .await
        .expect("DestroyTask");
    assert!(
        !container_exists(container),
        "DestroyTask left container {container}"
    );
}
