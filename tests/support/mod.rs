//! Shared helpers of the integration tests: cty-msgpack payloads as Nomad encodes them, gRPC
//! clients over a unix socket, and the in-process server harness.
#![allow(dead_code)]

pub mod broker_fixture;
pub mod canned;
pub mod engine;
pub mod gateway;
pub mod h2_upstream;
pub mod logmon;
pub mod openbao;
pub mod real;
pub mod tasks;
pub mod upstream;

use std::path::{Path, PathBuf};

use polydev::pb::hashicorp::nomad::plugins::base::proto::base_plugin_client::BasePluginClient;
use polydev::pb::hashicorp::nomad::plugins::base::proto::{
    NomadConfig, NomadDriverConfig, SetConfigRequest,
};
use polydev::pb::hashicorp::nomad::plugins::drivers::proto as nomad;
use polydev::pb::hashicorp::nomad::plugins::drivers::proto::driver_client::DriverClient;
use rmpv::Value;
use tonic::transport::Channel;

/// A cty object: every key present, sorted bytewise, nil for absent (go-cty's encoding).
pub fn cty_object(mut fields: Vec<(&str, Value)>) -> Value {
    fields.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).unwrap();
    out
}

/// `payload` (an encoded cty object) with its top-level `key` set to `value`.
pub fn with_field(payload: &[u8], key: &str, value: Value) -> Vec<u8> {
    let mut object = rmpv::decode::read_value(&mut &payload[..]).unwrap();
    let Value::Map(entries) = &mut object else {
        panic!("not an object");
    };
    entries.retain(|(k, _)| k.as_str() != Some(key));
    entries.push((Value::from(key), value));
    entries.sort_by(|a, b| a.0.as_str().cmp(&b.0.as_str()));
    encode(&object)
}

pub fn str_list(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::from(*s)).collect())
}

/// Options of a task's `config {}` block.
#[derive(Clone, Default)]
pub struct TaskOptions {
    pub provider: String,
    pub command: Option<String>,
    pub args: Vec<String>,
    pub user_id: Option<String>,
    pub work_dir: Option<String>,
}

impl TaskOptions {
    pub fn new(provider: &str, command: &str, args: &[&str]) -> Self {
        TaskOptions {
            provider: provider.into(),
            command: Some(command.into()),
            args: args.iter().map(|s| s.to_string()).collect(),
            user_id: None,
            work_dir: Some("/tmp".into()),
        }
    }

    pub fn msgpack(&self) -> Vec<u8> {
        let opt = |v: &Option<String>| v.as_deref().map(Value::from).unwrap_or(Value::Nil);
        encode(&cty_object(vec![
            (
                "args",
                Value::Array(self.args.iter().map(|a| Value::from(a.as_str())).collect()),
            ),
            ("command", opt(&self.command)),
            ("debug", Value::Nil),
            ("image", Value::Nil),
            ("labels", Value::Array(vec![])),
            ("provider", Value::from(self.provider.as_str())),
            ("user_id", opt(&self.user_id)),
            ("work_dir", opt(&self.work_dir)),
        ]))
    }
}

/// Warm pool settings of the test plugin config (applied to `openai`; the others are off).
#[derive(Clone, Debug)]
pub struct PoolOptions {
    pub target: u32,
    pub max: u32,
    pub max_idle_age: &'static str,
    /// The pool's `scale_down_after`.
    pub scale_down_after: &'static str,
    pub when_empty: &'static str,
    pub wait_timeout: &'static str,
    /// The plugin's `orphan_grace` (default when `None`).
    pub orphan_grace: Option<&'static str>,
    /// The pool's `refill_parallelism` (default when `None`).
    pub refill_parallelism: Option<u32>,
}

impl PoolOptions {
    pub fn target(target: u32) -> Self {
        PoolOptions {
            target,
            max: 32,
            max_idle_age: "1h",
            scale_down_after: "5m",
            when_empty: "cold",
            wait_timeout: "30s",
            orphan_grace: None,
            refill_parallelism: None,
        }
    }

    fn value(&self) -> Value {
        cty_object(vec![
            ("idle_cpus", Value::Nil),
            ("idle_memory", Value::Nil),
            ("max", Value::from(self.max)),
            ("max_idle_age", Value::from(self.max_idle_age)),
            (
                "refill_parallelism",
                self.refill_parallelism.map_or(Value::Nil, Value::from),
            ),
            ("scale_down_after", Value::from(self.scale_down_after)),
            ("target", Value::from(self.target)),
            ("wait_timeout", Value::from(self.wait_timeout)),
            ("when_empty", Value::from(self.when_empty)),
        ])
    }
}

/// How the test config's `openai` and `anthropic` providers get their credentials.
#[derive(Clone, Debug, Default)]
pub struct ProviderOptions {
    /// `broker` or `env`; `None` keeps the built-ins' default (broker).
    pub credential_mode: Option<&'static str>,
    /// The providers' `api_upstream` (a test's stand-in API) and its CA file.
    pub api_upstream: Option<String>,
    pub upstream_ca_file: Option<String>,
}

impl ProviderOptions {
    /// The key in the CLI's environment (what the tests of the key's way into a container use).
    pub fn env_mode() -> Self {
        ProviderOptions {
            credential_mode: Some("env"),
            ..Default::default()
        }
    }
}

/// Where a test's store key lives: outside `<data_dir>/credentials`, as the plugin requires, and
/// inside the test's own temporary directory, so it goes with it.
pub fn key_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("sealing/credentials.key")
}

/// The agent's `plugin "polydev" { config {} }` with every provider pointed at `image`, the
/// key in the CLI's environment, and the warm pool off.
pub fn plugin_config(image: &str, data_dir: &Path) -> Vec<u8> {
    plugin_config_with_pool(image, data_dir, &PoolOptions::target(0))
}

/// Like [`plugin_config`], with `pool` for provider `openai`.
pub fn plugin_config_with_pool(image: &str, data_dir: &Path, pool: &PoolOptions) -> Vec<u8> {
    plugin_config_for(image, data_dir, pool, &ProviderOptions::env_mode())
}

/// The test plugin config with `pool` for `openai` and `providers` for `openai` and
/// `anthropic`.
pub fn plugin_config_for(
    image: &str,
    data_dir: &Path,
    pool: &PoolOptions,
    providers: &ProviderOptions,
) -> Vec<u8> {
    let text = |v: Option<&str>| v.map(Value::from).unwrap_or(Value::Nil);
    let provider = |credentials: &[&str]| {
        cty_object(vec![
            ("api_upstream", text(providers.api_upstream.as_deref())),
            ("command", Value::Nil),
            ("credential_mode", text(providers.credential_mode)),
            ("credentials", str_list(credentials)),
            ("image", Value::from(image)),
            ("optional_credentials", Value::Nil),
            (
                "upstream_ca_file",
                text(providers.upstream_ca_file.as_deref()),
            ),
        ])
    };
    encode(&cty_object(vec![
        ("container_log", Value::Nil),
        ("credentials_from_env", Value::Boolean(true)),
        (
            "credentials_key_file",
            Value::from(key_file(data_dir).to_str().unwrap()),
        ),
        ("data_dir", Value::from(data_dir.to_str().unwrap())),
        ("disable_log_collection", Value::Nil),
        ("docker_endpoint", Value::Nil),
        (
            "orphan_grace",
            pool.orphan_grace.map(Value::from).unwrap_or(Value::Nil),
        ),
        (
            "pool",
            Value::Map(vec![
                (Value::from("anthropic"), PoolOptions::target(0).value()),
                (Value::from("google"), PoolOptions::target(0).value()),
                (Value::from("openai"), pool.value()),
            ]),
        ),
        (
            "provider",
            Value::Map(vec![
                (Value::from("anthropic"), provider(&["ANTHROPIC_API_KEY"])),
                (Value::from("openai"), provider(&["OPENAI_API_KEY"])),
            ]),
        ),
        ("security", Value::Nil),
    ]))
}

/// Connect gRPC clients to a unix socket.
pub async fn connect(socket: &Path) -> (BasePluginClient<Channel>, DriverClient<Channel>) {
    let uri = format!("unix://{}", socket.display());
    let channel = tonic::transport::Endpoint::from_shared(uri)
        .unwrap()
        .connect()
        .await
        .expect("connect to the plugin socket");
    (
        BasePluginClient::new(channel.clone()),
        DriverClient::new(channel),
    )
}

/// A TaskConfig as Nomad's client builds it.
pub fn task_config(id: &str, alloc_dir: Option<&Path>, options: &TaskOptions) -> nomad::TaskConfig {
    let mut parts = id.split('/');
    let alloc_id = parts.next().unwrap_or_default().to_string();
    let name = parts.next().unwrap_or("task").to_string();
    let (stdout_path, stderr_path) = match alloc_dir {
        Some(dir) => (
            dir.join(format!("alloc/logs/.{name}.stdout.fifo")),
            dir.join(format!("alloc/logs/.{name}.stderr.fifo")),
        ),
        None => (PathBuf::from("/dev/null"), PathBuf::from("/dev/null")),
    };
    nomad::TaskConfig {
        id: id.to_string(),
        name,
        alloc_id,
        job_name: "job".into(),
        namespace: "default".into(),
        msgpack_driver_config: options.msgpack(),
        env: [("NOMAD_TASK_NAME".to_string(), "task".to_string())].into(),
        resources: Some(nomad::Resources {
            allocated_resources: Some(nomad::AllocatedTaskResources {
                cpu: Some(nomad::AllocatedCpuResources { cpu_shares: 100 }),
                memory: Some(nomad::AllocatedMemoryResources {
                    memory_mb: 128,
                    memory_max_mb: 0,
                }),
                networks: vec![],
            }),
            linux_resources: None,
            ports: vec![],
        }),
        alloc_dir: alloc_dir
            .map(|d| d.to_str().unwrap().to_string())
            .unwrap_or_default(),
        stdout_path: stdout_path.to_str().unwrap().into(),
        stderr_path: stderr_path.to_str().unwrap().into(),
        ..Default::default()
    }
}

/// Give a task `mb` MB of memory, as its jobspec's `resources { memory = mb }` would.
pub fn set_memory_mb(task: &mut nomad::TaskConfig, mb: i64) {
    if let Some(memory) = task
        .resources
        .as_mut()
        .and_then(|r| r.allocated_resources.as_mut())
        .and_then(|a| a.memory.as_mut())
    {
        memory.memory_mb = mb;
    }
}

pub fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap()
}

/// SetConfig as Nomad sends it. `as_agent` adds the `nomad_config` that only the agent's
/// long-lived plugin instance gets (it starts polydev's background work, such as the pool).
pub fn set_config_request(msgpack_config: Vec<u8>, as_agent: bool) -> SetConfigRequest {
    SetConfigRequest {
        msgpack_config,
        nomad_config: as_agent.then_some(NomadConfig {
            driver: Some(NomadDriverConfig {
                client_max_port: 14512,
                client_min_port: 14000,
                topology: None,
            }),
        }),
        plugin_api_version: "0.1.0".into(),
    }
}

/// The plugin's TaskEvents stream, opened now (events published before are not replayed).
pub async fn task_events(
    driver: &DriverClient<Channel>,
) -> tonic::Streaming<nomad::DriverTaskEvent> {
    driver
        .clone()
        .task_events(nomad::TaskEventsRequest {})
        .await
        .expect("TaskEvents")
        .into_inner()
}

/// RecoverTask for `handle` as Nomad sends it after an agent restart: the stored handle no
/// longer carries the task's msgpack config.
pub fn recover_after_agent_restart(mut handle: nomad::TaskHandle) -> nomad::RecoverTaskRequest {
    if let Some(config) = handle.config.as_mut() {
        config.msgpack_driver_config.clear();
    }
    nomad::RecoverTaskRequest {
        task_id: String::new(),
        handle: Some(handle),
    }
}
