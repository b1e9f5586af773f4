//! The agent's `plugin "polydev" { config { ... } }` block: its schema and its decoder.
//!
//! ```hcl
//! plugin "polydev" {
//!   config {
//!     docker_endpoint = "unix:///var/run/docker.sock"
//!     data_dir        = "/var/lib/polydev"
//!     provider "openai" { image = "registry.local/codex:1.2" }   # overrides only image
//!     provider "aider"  { image = "aider:latest", command = "aider", credentials = ["OPENAI_API_KEY"] }
//!     security { pids_limit = 256, runtime = "runsc", network_mode = "none", task_uid = 2100000000 }
//!     container_log { max_size = "10m", max_files = 2 }
//!   }
//! }
//! ```
//!
//! Invariants of a decoded [`PluginConfig`]:
//! - `providers` always holds the built-ins `openai`, `anthropic` and `google`; a block for one
//!   of them overrides only the fields it sets. Other names match `^[a-z][a-z0-9_-]{0,31}$` and
//!   set `image` and `command`.
//! - Every credential name matches `^[A-Z_][A-Z0-9_]*$` and appears at most once per provider,
//!   in either the required or the optional list.
//! - Paths are absolute; `pids_limit` and `max_files` are at least 1; `max_size` is a Docker size.
//! - `task_uid` and `task_gid` are from 1 to 2^31 - 1 (never root). Whether a host account has
//!   them is not a decoding question: the `task_user` module checks that when the plugin starts.
//! - Empty bytes decode to [`PluginConfig::default`], as does a payload holding only defaults.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::ConfigError;
use super::broker::{BrokerConfig, EgressRule, broker, broker_schema, egress, egress_schema};
use super::cty::{self, Obj};
use super::duration;
use super::hclspec::{Spec, attr, block, block_map, default, hcl_string, literal, object};
use super::pool::{PoolConfig, pool_schema, pools};
use super::provider::{ProviderConfig, builtin_providers, provider_schema};
use super::provider_block::providers;
use super::vault::{VaultConfig, vault, vault_schema};

const WHAT: &str = "plugin config";

/// Default for `docker_endpoint`.
pub const DEFAULT_DOCKER_ENDPOINT: &str = "unix:///var/run/docker.sock";
/// Default for `data_dir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/polydev";
/// Default for `credentials_key_file`: outside `data_dir`, apart from the entries it seals.
pub const DEFAULT_CREDENTIALS_KEY_FILE: &str = "/etc/polydev/credentials.key";
/// Default for `security.pids_limit`.
pub const DEFAULT_PIDS_LIMIT: i64 = 512;
/// Largest `security.pids_limit` (Linux's `pid_max` ceiling).
const MAX_PIDS_LIMIT: i64 = 4_194_304;
/// Default for `security.task_uid` and `security.task_gid`: the uid and gid task containers run
/// as. It lies in systemd's unused range 1879048192-2147352575 (UIDS-GIDS.md), so it is no
/// regular (1000-60000), system, dynamic-service or nspawn-container id; above SSSD's default
/// ID-mapping ceiling (2000200000) and shadow's default subordinate ids (100000-600100000); below
/// 2^31, which tools that read ids as signed 32-bit numbers mishandle.
pub const DEFAULT_TASK_ID: u32 = 2_100_000_000;
/// The largest task uid or gid (2^31 - 1).
const MAX_TASK_ID: i64 = i32::MAX as i64;
/// Default for `container_log.max_size`.
pub const DEFAULT_LOG_MAX_SIZE: &str = "100m";
/// Default for `container_log.max_files`.
pub const DEFAULT_LOG_MAX_FILES: u32 = 3;
/// How long a task container no task claims back survives a restart.
pub const DEFAULT_ORPHAN_GRACE: &str = "10m";
/// The longest `orphan_grace`.
const MAX_ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// Largest `cold_start_parallelism`.
const MAX_COLD_START_PARALLELISM: i64 = 256;

/// The decoded, validated plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// Where the Docker engine listens.
    pub docker_endpoint: DockerEndpoint,
    /// polydev's own state directory (log cursors and the like).
    pub data_dir: PathBuf,
    /// Every provider this node can run, keyed by name; always includes the built-ins. Tasks
    /// share these settings ([`PluginConfig::provider`]).
    pub providers: BTreeMap<String, std::sync::Arc<ProviderConfig>>,
    /// Container hardening applied to every task container.
    pub security: SecurityConfig,
    /// Log rotation of task containers (Docker `local` log driver).
    pub container_log: ContainerLogConfig,
    /// Nomad's `disable_log_collection`: no FIFOs exist, so logs are not pumped.
    pub disable_log_collection: bool,
    /// Read each provider's credential variables from the plugin's own environment.
    pub credentials_from_env: bool,
    /// Read per-user credentials from the encrypted store in `<data_dir>/credentials`.
    pub credentials_from_store: bool,
    /// The store's sealing key: never inside `<data_dir>/credentials`, beside what it seals.
    pub credentials_key_file: PathBuf,
    /// Warm pool settings, one per provider.
    pub pools: BTreeMap<String, PoolConfig>,
    /// Task containers no task claims back (after a restart) are removed after this long.
    pub orphan_grace: std::time::Duration,
    /// Cold starts that create and start their containers at once; 0: four per CPU
    /// ([`PluginConfig::cold_starts_at_once`]).
    pub cold_start_parallelism: u32,
    /// Limits of the per-task credential broker.
    pub broker: BrokerConfig,
    /// Destinations a broker-mode task may reach besides its provider's API (CONNECT proxy).
    pub egress: Vec<EgressRule>,
    /// Users' keys in Vault / OpenBao, consulted before the local store; `None`: not used.
    pub vault: Option<VaultConfig>,
}

/// A Docker engine endpoint. Only unix sockets for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerEndpoint {
    /// `unix://<absolute path>`.
    Unix(PathBuf),
}

impl DockerEndpoint {
    /// `docker_endpoint` as the decoder checks it (`polydev run --docker-endpoint`).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        docker_endpoint(text, &format!("{WHAT}: docker_endpoint"))
    }

    /// The socket path of a unix endpoint.
    pub fn socket_path(&self) -> &Path {
        match self {
            Self::Unix(path) => path,
        }
    }
}

impl fmt::Display for DockerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// Hardening settings for task containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    /// Docker `PidsLimit`; at least 1.
    pub pids_limit: i64,
    /// Mount the container's root filesystem read-only.
    pub read_only_rootfs: bool,
    /// OCI runtime (e.g. `runsc`); `None` = the engine's default.
    pub runtime: Option<String>,
    /// Whether a task may set `image` to run another image than its provider's.
    pub allow_image_override: bool,
    /// Docker network mode; `None` = Docker's default bridge.
    pub network_mode: Option<NetworkMode>,
    /// uid every task container's processes run as; never 0, never a host account's.
    pub task_uid: u32,
    /// gid every task container's processes run as; never 0, never a host group's.
    pub task_gid: u32,
}

/// The Docker network modes polydev allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// Docker's default bridge network, named explicitly.
    Bridge,
    /// No network at all.
    None,
    /// The host's network namespace.
    Host,
}

impl NetworkMode {
    /// The name Docker uses (`HostConfig.NetworkMode`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::None => "none",
            Self::Host => "host",
        }
    }
}

/// Rotation of the Docker `local` log driver for task containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLogConfig {
    /// Docker size text, e.g. `100m` (`^[0-9]+[kmg]?$`, positive).
    pub max_size: String,
    /// Number of files kept; at least 1.
    pub max_files: u32,
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self {
            docker_endpoint: DockerEndpoint::Unix(PathBuf::from("/var/run/docker.sock")),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            providers: builtin_providers(),
            security: SecurityConfig::default(),
            container_log: ContainerLogConfig::default(),
            disable_log_collection: false,
            credentials_from_env: true,
            credentials_from_store: true,
            credentials_key_file: PathBuf::from(DEFAULT_CREDENTIALS_KEY_FILE),
            orphan_grace: duration::default(DEFAULT_ORPHAN_GRACE),
            cold_start_parallelism: 0,
            pools: builtin_providers()
                .into_keys()
                .map(|name| (name, PoolConfig::default()))
                .collect(),
            broker: BrokerConfig::default(),
            egress: Vec::new(),
            vault: None,
        }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            pids_limit: DEFAULT_PIDS_LIMIT,
            read_only_rootfs: false,
            runtime: None,
            allow_image_override: false,
            network_mode: None,
            task_uid: DEFAULT_TASK_ID,
            task_gid: DEFAULT_TASK_ID,
        }
    }
}

impl Default for ContainerLogConfig {
    fn default() -> Self {
        Self {
            max_size: DEFAULT_LOG_MAX_SIZE.to_owned(),
            max_files: DEFAULT_LOG_MAX_FILES,
        }
    }
}

/// The hclspec of the plugin's `config {}` block, returned by `BasePlugin.ConfigSchema`.
pub fn plugin_config_schema() -> Spec {
    fn with_default<'a>(name: &'a str, ty: &str, value: String) -> (&'a str, Spec) {
        (name, default(attr(name, ty, false), literal(&value)))
    }
    let security = object([
        with_default("pids_limit", "number", DEFAULT_PIDS_LIMIT.to_string()),
        with_default("read_only_rootfs", "bool", "false".into()),
        with_default("runtime", "string", hcl_string("")),
        with_default("allow_image_override", "bool", "false".into()),
        with_default("network_mode", "string", hcl_string("")),
        with_default("task_uid", "number", DEFAULT_TASK_ID.to_string()),
        with_default("task_gid", "number", DEFAULT_TASK_ID.to_string()),
    ]);
    let container_log = object([
        with_default("max_size", "string", hcl_string(DEFAULT_LOG_MAX_SIZE)),
        with_default("max_files", "number", DEFAULT_LOG_MAX_FILES.to_string()),
    ]);
    object([
        with_default(
            "docker_endpoint",
            "string",
            hcl_string(DEFAULT_DOCKER_ENDPOINT),
        ),
        with_default("data_dir", "string", hcl_string(DEFAULT_DATA_DIR)),
        (
            "provider",
            block_map("provider", &["name"], provider_schema()),
        ),
        ("security", block("security", false, security)),
        (
            "container_log",
            block("container_log", false, container_log),
        ),
        with_default("disable_log_collection", "bool", "false".into()),
        with_default("credentials_from_env", "bool", "true".into()),
        with_default("credentials_from_store", "bool", "true".into()),
        with_default(
            "credentials_key_file",
            "string",
            hcl_string(DEFAULT_CREDENTIALS_KEY_FILE),
        ),
        with_default("orphan_grace", "string", hcl_string(DEFAULT_ORPHAN_GRACE)),
        with_default("cold_start_parallelism", "number", "0".into()),
        ("pool", block_map("pool", &["provider"], pool_schema())),
        ("broker", block("broker", false, broker_schema())),
        ("egress", block("egress", false, egress_schema())),
        ("vault", block("vault", false, vault_schema())),
    ])
}

/// Decodes `SetConfigRequest.msgpack_config`. Empty bytes (or a null object) give the defaults.
/// Pure: the same bytes always give the same result.
pub fn decode_plugin_config(msgpack: &[u8]) -> Result<PluginConfig, ConfigError> {
    if msgpack.is_empty() {
        return Ok(PluginConfig::default());
    }
    let value = cty::parse(msgpack, WHAT)?;
    if value.is_nil() {
        return Ok(PluginConfig::default());
    }
    let root = Obj::new(&value, WHAT, format!("{WHAT}: "))?;
    let defaults = PluginConfig::default();
    let providers = providers(&root)?;
    let pools = pools(&root, WHAT, providers.keys().cloned())?;
    let data_dir = match root.string("data_dir")? {
        None => defaults.data_dir,
        Some(s) => data_dir(&s, &root.field("data_dir"))?,
    };
    let credentials_key_file = match root.string("credentials_key_file")? {
        None => defaults.credentials_key_file,
        Some(s) => credentials_key_file(&s, &data_dir, &root.field("credentials_key_file"))?,
    };
    Ok(PluginConfig {
        docker_endpoint: match root.string("docker_endpoint")? {
            None => defaults.docker_endpoint,
            Some(s) => docker_endpoint(&s, &root.field("docker_endpoint"))?,
        },
        data_dir,
        credentials_key_file,
        providers,
        pools,
        security: match root.object("security")? {
            None => defaults.security,
            Some(o) => security(&o)?,
        },
        container_log: match root.object("container_log")? {
            None => defaults.container_log,
            Some(o) => container_log(&o)?,
        },
        disable_log_collection: root
            .bool("disable_log_collection")?
            .unwrap_or(defaults.disable_log_collection),
        credentials_from_env: root
            .bool("credentials_from_env")?
            .unwrap_or(defaults.credentials_from_env),
        credentials_from_store: root
            .bool("credentials_from_store")?
            .unwrap_or(defaults.credentials_from_store),
        orphan_grace: duration::field(
            &root,
            "orphan_grace",
            DEFAULT_ORPHAN_GRACE,
            MAX_ORPHAN_GRACE,
        )?,
        cold_start_parallelism: cold_start_parallelism(&root)?,
        broker: match root.object("broker")? {
            None => defaults.broker,
            Some(o) => broker(&o)?,
        },
        egress: match root.object("egress")? {
            None => defaults.egress,
            Some(o) => egress(&o)?,
        },
        vault: root.object("vault")?.map(|o| vault(&o)).transpose()?,
    })
}

fn cold_start_parallelism(root: &Obj<'_>) -> Result<u32, ConfigError> {
    let Some(n) = root.integer("cold_start_parallelism")? else {
        return Ok(0);
    };
    u32::try_from(n)
        .ok()
        .filter(|n| i64::from(*n) <= MAX_COLD_START_PARALLELISM)
        .ok_or_else(|| {
            ConfigError::invalid(
                root.field("cold_start_parallelism"),
                format!("{n} is out of range"),
                format!(
                    "use 0 (four per CPU) or a whole number up to \
                     {MAX_COLD_START_PARALLELISM}, such as 4"
                ),
            )
        })
}

impl PluginConfig {
    /// How many cold starts may create and start their containers at once: the setting, or
    /// four per CPU this process may use. The engine's container starts are mostly CPU work, so
    /// a burst that starts all at once has each take about as long as the whole burst; a few at
    /// a time, each finishes sooner and the last no later. Not fewer: part of a start waits on
    /// the kernel (namespaces, mounts), and that overlaps (measured on 2 cores: 8 at a time beat
    /// 4 and 64 on both p50 and p90; see the README's warm pool behaviour).
    pub fn cold_starts_at_once(&self) -> usize {
        match self.cold_start_parallelism {
            0 => std::thread::available_parallelism().map_or(4, |cpus| cpus.get() * 4),
            n => n as usize,
        }
    }
}

fn docker_endpoint(s: &str, field: &str) -> Result<DockerEndpoint, ConfigError> {
    let fix = format!(
        "use a unix socket URL such as {DEFAULT_DOCKER_ENDPOINT:?} (tcp:// and other schemes are \
         not supported yet)"
    );
    let Some(path) = s.strip_prefix("unix://") else {
        return Err(ConfigError::invalid(
            field,
            format!("{s:?} is not a unix:// endpoint"),
            fix,
        ));
    };
    if !path.starts_with('/') || path.contains('\0') {
        return Err(ConfigError::invalid(
            field,
            format!("{s:?} does not name an absolute socket path"),
            fix,
        ));
    }
    Ok(DockerEndpoint::Unix(PathBuf::from(path)))
}

fn data_dir(s: &str, field: &str) -> Result<PathBuf, ConfigError> {
    if !s.starts_with('/') || s.contains('\0') {
        return Err(ConfigError::invalid(
            field,
            format!("{s:?} is not an absolute path"),
            format!("use an absolute directory such as {DEFAULT_DATA_DIR:?}"),
        ));
    }
    Ok(PathBuf::from(s))
}

/// An absolute file path that is neither inside `<data_dir>/credentials`, where the entries it
/// seals live, nor directly in `<data_dir>` (where releases before this option kept it): a copy
/// or a disclosure of those must not carry the key with the entries.
pub fn credentials_key_file(s: &str, data_dir: &Path, field: &str) -> Result<PathBuf, ConfigError> {
    let fix = format!("use an absolute file path such as {DEFAULT_CREDENTIALS_KEY_FILE:?}");
    if !s.starts_with('/') || s.contains('\0') || s.ends_with('/') {
        return Err(ConfigError::invalid(
            field,
            format!("{s:?} is not an absolute file path"),
            fix,
        ));
    }
    let path = PathBuf::from(s);
    let entries = data_dir.join("credentials");
    let beside = path.starts_with(&entries) || path.parent() == Some(data_dir);
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
        || beside
    {
        return Err(ConfigError::invalid(
            field,
            format!(
                "{s:?} would put the key beside the entries it seals (in {} or directly in {}) \
                 or uses \"..\"",
                entries.display(),
                data_dir.display()
            ),
            fix,
        ));
    }
    Ok(path)
}

/// `^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`, the shape of Docker runtime names.
fn is_runtime_name(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=64).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn security(obj: &Obj<'_>) -> Result<SecurityConfig, ConfigError> {
    let d = SecurityConfig::default();
    let pids_limit = obj.integer("pids_limit")?.unwrap_or(d.pids_limit);
    if !(1..=MAX_PIDS_LIMIT).contains(&pids_limit) {
        return Err(ConfigError::invalid(
            obj.field("pids_limit"),
            format!("{pids_limit} is not a usable process limit"),
            format!(
                "set a limit from 1 to {MAX_PIDS_LIMIT}, such as {DEFAULT_PIDS_LIMIT} (the \
                 default); polydev always limits the processes of task containers"
            ),
        ));
    }
    let runtime = match obj.string("runtime")?.as_deref() {
        None | Some("") => None,
        Some(r) if is_runtime_name(r) => Some(r.to_owned()),
        Some(r) => {
            return Err(ConfigError::invalid(
                obj.field("runtime"),
                format!("{r:?} is not a runtime name"),
                "use the name of a runtime registered with Docker, such as \"runsc\" or \"runc\", \
                 or \"\" for the engine's default",
            ));
        }
    };
    let network_mode = match obj.string("network_mode")?.as_deref() {
        None | Some("") => None,
        Some("bridge") => Some(NetworkMode::Bridge),
        Some("none") => Some(NetworkMode::None),
        Some("host") => Some(NetworkMode::Host),
        Some(m) => {
            return Err(ConfigError::invalid(
                obj.field("network_mode"),
                format!("{m:?} is not a supported network mode"),
                "use one of: bridge, none, host, or \"\" for Docker's default bridge",
            ));
        }
    };
    Ok(SecurityConfig {
        pids_limit,
        read_only_rootfs: obj.bool("read_only_rootfs")?.unwrap_or(d.read_only_rootfs),
        runtime,
        allow_image_override: obj
            .bool("allow_image_override")?
            .unwrap_or(d.allow_image_override),
        network_mode,
        task_uid: task_id(obj, "task_uid", "uid")?,
        task_gid: task_id(obj, "task_gid", "gid")?,
    })
}

/// `security.task_uid` or `security.task_gid`: from 1 to 2^31 - 1.
fn task_id(obj: &Obj<'_>, key: &str, kind: &str) -> Result<u32, ConfigError> {
    let Some(id) = obj.integer(key)? else {
        return Ok(DEFAULT_TASK_ID);
    };
    let problem = match u32::try_from(id) {
        Ok(0) => format!("0 is root's {kind}: tasks never run as root"),
        Ok(id) if i64::from(id) <= MAX_TASK_ID => return Ok(id),
        _ => format!("{id} is not a usable {kind}"),
    };
    Err(ConfigError::invalid(
        obj.field(key),
        problem,
        format!(
            "set a {kind} from 1 to {MAX_TASK_ID} that no host account or group has, such as \
             {DEFAULT_TASK_ID} (the default)"
        ),
    ))
}

/// `^[0-9]+[kmg]?$` with a positive number.
fn is_docker_size(s: &str) -> bool {
    let digits = s.strip_suffix(['k', 'm', 'g']).unwrap_or(s);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.bytes().any(|b| b != b'0')
}

fn container_log(obj: &Obj<'_>) -> Result<ContainerLogConfig, ConfigError> {
    let d = ContainerLogConfig::default();
    let max_size = obj.string("max_size")?.unwrap_or(d.max_size);
    if !is_docker_size(&max_size) {
        return Err(ConfigError::invalid(
            obj.field("max_size"),
            format!("{max_size:?} is not a Docker log size"),
            format!(
                "write a positive number with an optional k, m or g suffix, such as \
                 {DEFAULT_LOG_MAX_SIZE:?}"
            ),
        ));
    }
    let max_files = match obj.integer("max_files")? {
        None => d.max_files,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ConfigError::invalid(
                    obj.field("max_files"),
                    format!("{n} is not a usable number of log files"),
                    format!("keep at least 1 file (at most 1000), such as {DEFAULT_LOG_MAX_FILES}"),
                )
            })?,
    };
    Ok(ContainerLogConfig {
        max_size,
        max_files,
    })
}

#[cfg(test)]
mod tests;
