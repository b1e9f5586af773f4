//! The warm pool: per provider, idle containers started ahead of time so StartTask only has to
//! claim one, raise its limits, hand over the task's directories and send the launch spec.
//!
//! An idle container is exactly what a cold start creates, minus the task: the provider's image,
//! the task user (`security.task_uid:task_gid`), the hardened settings, small idle limits (`idle_cpus`, `idle_memory`), stdin open,
//! `WARM_POOL=true` (its entrypoint waits for a launch spec forever at ~0 % CPU), no credential
//! and no user id — plus three empty slot binds (see [`slots`]) through which it receives the
//! task's directories when claimed.
//!
//! Guarantees:
//! - Claims are first-come and atomic: an idle container is popped under a lock, so two
//!   StartTasks never get the same one (`pool::claim`). Containers are one-shot: a claimed container
//!   is never returned to the pool.
//! - Every claim wakes the refiller; refill failures back off (1 s doubling to 60 s) and are
//!   reported in [`crate::pool_port::PoolStatus::last_error`], never retried in a hot loop.
//! - The task lifecycle reaches the pool only through [`crate::pool_port::WarmPoolPort`]
//!   (implemented in `port`); the pool never names `core`.
//! - Idle containers older than `max_idle_age`, of another image, or made with other settings
//!   (the *pool key*) are replaced; see [`reconcile`] for what happens at plugin start.
//! - The pool never holds more than `max` containers of a provider (idle + running tasks).
//! - `target` is a floor, not a fixed size: the pool grows towards the recent burst of claims
//!   ([`demand`]) while `max` and the node's memory allow ([`sizing`]), and idle containers above
//!   what it wants are removed once older than `scale_down_after`, oldest first. Growth is the
//!   refiller's business alone: a claim never fails because of it, and waits at most for a
//!   creation already under way ([`CREATION_WAIT_MAX`]) before it starts cold.
//! - Refills do not compete with a burst's cold starts: while a cold start of the provider makes
//!   its container ([`crate::pool_port::ColdStart`]) the refiller starts no creation (see
//!   `pool::refill`).
//! - Shutdown leaves nothing half-made: a creation under way when the plugin is told to stop
//!   removes the container it created and did not start; idle containers already running stay
//!   for the next plugin process to adopt (see `pool::refill` for why, and
//!   [`crate::pool_port::WarmPoolPort::stopped`]).

mod claim;
pub mod demand;
mod follow;
#[cfg(test)]
mod growth_tests;
mod port_impl;
pub mod reconcile;
mod refill;
#[cfg(test)]
mod resync_tests;
#[cfg(test)]
mod shutdown_tests;
pub mod sizing;
pub mod slots;
pub mod status_file;

pub use claim::CREATION_WAIT_MAX;

use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::config::{PluginConfig, PoolConfig, WhenEmpty};
use crate::container_parts::{
    LABEL_POOL_KEY, LABEL_SLOT, belongs_to, managed_labels, network_mode_for, security_options,
    task_user,
};
use crate::engine::{ContainerEngine, ContainerSpec, ResourceLimits, SecurityOptions};
use demand::DemandWindow;
use slots::SlotRoot;

/// Where the pool reads the node's memory from: the text of `/proc/meminfo`, or an error when it
/// cannot be read (then memory holds no growth back). Tests inject their own.
pub type MeminfoSource = Arc<dyn Fn() -> std::io::Result<String> + Send + Sync>;

/// The node's `/proc/meminfo`.
pub fn proc_meminfo() -> MeminfoSource {
    Arc::new(|| std::fs::read_to_string("/proc/meminfo"))
}

/// An idle, started container waiting for a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleContainer {
    pub id: String,
    pub slot: String,
    pub created_at: SystemTime,
    /// The pool key it was made for (`None`: unknown, replace it).
    pub pool_key: Option<String>,
    /// Where its limits live on the host (see [`crate::engine::ContainerState::cgroup_pid`]),
    /// so a claim can raise them without the engine's slower path.
    pub cgroup_pid: Option<u32>,
    /// Its init process on the host (the credential broker binds in its network namespace).
    pub init_pid: Option<u32>,
}

/// One provider's pool.
struct ProviderPool {
    provider: String,
    image: String,
    settings: PoolConfig,
    /// Docker network mode of its containers (none for broker-mode providers).
    network_mode: Option<String>,
    state: Mutex<PoolState>,
    /// Signalled when an idle container is added (for `when_empty = "wait"`).
    idle_added: Notify,
    /// Signalled when the refiller should look again (claims, releases).
    wake: Notify,
    /// Set when the engine came back: the refiller forgets its backoff and tries at once.
    retry_now: std::sync::atomic::AtomicBool,
}

struct PoolState {
    idle: VecDeque<IdleContainer>,
    creating: usize,
    /// Slots of the creations under way, from before their create call until their container
    /// is in `idle` (moved there under the same lock) or undone: what the resync after an
    /// engine outage must not take for a leftover (see [`MakingMark`]).
    ///
    /// [`MakingMark`]: refill::MakingMark
    making: BTreeSet<String>,
    in_use: usize,
    last_error: Option<String>,
    /// Pool key of the current image and settings; `None` until the image was found.
    key: Option<String>,
    /// Recent claims, for the demand estimate.
    demand: DemandWindow,
    /// Idle containers the pool aims for, as of the refiller's last pass.
    desired: usize,
    /// Why the pool holds fewer than `desired` (max, memory), as of the last pass.
    growth_limit: Option<String>,
    /// Cold starts of this provider making their containers now (see [`ColdStart`]).
    ///
    /// [`ColdStart`]: crate::pool_port::ColdStart
    cold_in_flight: usize,
    /// Since when the refiller has been holding new creations back for cold starts.
    yielding_since: Option<Instant>,
    /// Claims waiting for a creation already under way (each waits for a different one).
    promised: usize,
}

impl PoolState {
    fn new(settings: &PoolConfig) -> Self {
        PoolState {
            idle: VecDeque::new(),
            creating: 0,
            making: BTreeSet::new(),
            in_use: 0,
            last_error: None,
            key: None,
            demand: DemandWindow::new(settings.scale_down_after, demand::COUNT_CAP),
            desired: settings.target as usize,
            growth_limit: None,
            cold_in_flight: 0,
            yielding_since: None,
            promised: 0,
        }
    }
}

/// All providers' pools.
pub struct WarmPool {
    engine: Arc<dyn ContainerEngine>,
    slots: SlotRoot,
    node: String,
    data_dir: String,
    /// `uid:gid` of the containers.
    user: String,
    security: SecurityOptions,
    log_max_size: String,
    log_max_files: u32,
    pools: BTreeMap<String, Arc<ProviderPool>>,
    /// Set when the pool cannot work on this host at all (e.g. slots cannot be mounted).
    disabled: Mutex<Option<String>>,
    /// The node's memory, checked before each idle container is created.
    meminfo: MeminfoSource,
    /// How long a claim waits for a creation under way, in ms ([`CREATION_WAIT_MAX`]).
    creation_wait_ms: std::sync::atomic::AtomicU64,
    /// The pool's background work (refillers, their creations, removals): what
    /// [`crate::pool_port::WarmPoolPort::stopped`] waits for at shutdown.
    background: TaskTracker,
}

impl WarmPool {
    pub fn new(engine: Arc<dyn ContainerEngine>, config: &PluginConfig, node: &str) -> Arc<Self> {
        Self::with_meminfo(engine, config, node, proc_meminfo())
    }

    /// [`WarmPool::new`] reading the node's memory from `meminfo`.
    pub fn with_meminfo(
        engine: Arc<dyn ContainerEngine>,
        config: &PluginConfig,
        node: &str,
        meminfo: MeminfoSource,
    ) -> Arc<Self> {
        let pools = config
            .providers
            .iter()
            .map(|(name, provider)| {
                let settings = config.pools.get(name).cloned().unwrap_or_default();
                let state = Mutex::new(PoolState::new(&settings));
                let pool = ProviderPool {
                    provider: name.clone(),
                    image: provider.image.clone(),
                    settings,
                    network_mode: network_mode_for(&config.security, provider),
                    state,
                    idle_added: Notify::new(),
                    wake: Notify::new(),
                    retry_now: std::sync::atomic::AtomicBool::new(false),
                };
                (name.clone(), Arc::new(pool))
            })
            .collect();
        let security = &config.security;
        Arc::new(WarmPool {
            engine,
            slots: SlotRoot::new(&config.data_dir),
            node: node.to_string(),
            data_dir: config.data_dir.to_string_lossy().into_owned(),
            user: task_user(security),
            security: security_options(security),
            log_max_size: config.container_log.max_size.clone(),
            log_max_files: config.container_log.max_files,
            pools,
            disabled: Mutex::new(None),
            meminfo,
            creation_wait_ms: std::sync::atomic::AtomicU64::new(
                CREATION_WAIT_MAX.as_millis() as u64
            ),
            background: TaskTracker::new(),
        })
    }

    #[cfg(test)]
    pub fn slots(&self) -> &SlotRoot {
        &self.slots
    }

    /// Whether a container with these labels belongs to this plugin instance.
    pub fn owns(&self, labels: &BTreeMap<String, String>) -> bool {
        belongs_to(labels, &self.node, &self.data_dir)
    }

    /// Whether any provider keeps warm containers.
    pub fn any_enabled(&self) -> bool {
        self.pools.values().any(|p| p.settings.target > 0)
    }

    /// Turn every pool off (every task then starts cold), reporting why.
    pub fn disable(&self, reason: &str) {
        *self.disabled.lock() = Some(reason.to_string());
    }

    fn disabled_reason(&self) -> Option<String> {
        self.disabled.lock().clone()
    }

    /// The empty-pool policy of `provider`.
    pub fn when_empty(&self, provider: &str) -> WhenEmpty {
        self.pools
            .get(provider)
            .map(|p| p.settings.when_empty)
            .unwrap_or(WhenEmpty::Cold)
    }

    /// The node's `MemAvailable` in bytes, `None` when it cannot be read.
    fn mem_available(&self) -> Option<u64> {
        match (self.meminfo)() {
            Ok(text) => sizing::mem_available(&text),
            Err(err) => {
                tracing::debug!(error = %err, "cannot read the node's memory; the pool's growth is not held back by it");
                None
            }
        }
    }

    /// The spec of a new idle container of `pool` in `slot`.
    fn idle_spec(
        &self,
        pool: &ProviderPool,
        key: &str,
        slot: &str,
    ) -> Result<ContainerSpec, slots::SlotError> {
        let mounts = self.slots.create(slot)?;
        let mut labels = managed_labels(&pool.provider, &self.node, &self.data_dir);
        labels.insert(LABEL_SLOT.to_string(), slot.to_string());
        labels.insert(LABEL_POOL_KEY.to_string(), key.to_string());
        Ok(ContainerSpec {
            name: format!("polydev-pool-{}-{slot}", pool.provider),
            image: pool.image.clone(),
            user: self.user.clone(),
            env: vec!["WARM_POOL=true".to_string()],
            labels,
            limits: ResourceLimits {
                memory_bytes: pool.settings.idle_memory_bytes,
                nano_cpus: pool.settings.idle_nano_cpus,
                ..Default::default()
            },
            mounts,
            security: self.security.clone(),
            work_dir: None,
            network_mode: pool.network_mode.clone(),
            log_max_size: self.log_max_size.clone(),
            log_max_files: self.log_max_files,
        })
    }

    /// The pool key: what an idle container must match to be adopted after a restart.
    fn key_for(&self, pool: &ProviderPool, image_id: &str) -> String {
        let security = &self.security;
        pool_key(&[
            ("image", image_id),
            ("provider", &pool.provider),
            ("node", &self.node),
            ("user", &self.user),
            ("idle_nano_cpus", &pool.settings.idle_nano_cpus.to_string()),
            (
                "idle_memory_bytes",
                &pool.settings.idle_memory_bytes.to_string(),
            ),
            ("cap_drop_all", &security.cap_drop_all.to_string()),
            ("no_new_privileges", &security.no_new_privileges.to_string()),
            ("pids_limit", &security.pids_limit.to_string()),
            ("read_only_rootfs", &security.read_only_rootfs.to_string()),
            ("oci_runtime", security.oci_runtime.as_deref().unwrap_or("")),
            ("network_mode", pool.network_mode.as_deref().unwrap_or("")),
            ("log_max_size", &self.log_max_size),
            ("log_max_files", &self.log_max_files.to_string()),
            ("slots", &self.slots.path("").to_string_lossy()),
        ])
    }
}

/// 64-bit FNV-1a over `name=value` lines, as 16 hex digits: the same fields always give the
/// same key, whatever Rust release built the plugin (std's `DefaultHasher` promises no such
/// thing, and a changed key throws every idle container away).
fn pool_key(fields: &[(&str, &str)]) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for (name, value) in fields {
        for byte in name
            .bytes()
            .chain([b'='])
            .chain(value.bytes())
            .chain([b'\n'])
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    format!("{hash:016x}")
}

/// A new random slot id (16 hex digits).
pub fn new_slot_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_key_is_stable_across_builds() {
        // A golden value: it changes only if the fields or their encoding change, never with
        // the toolchain.
        let key = pool_key(&[
            ("image", "sha256:abc"),
            ("provider", "openai"),
            ("pids_limit", "512"),
        ]);
        assert_eq!(
            key, "50c8691e64992f0d",
            "FNV-1a 64 of the three lines, computed independently"
        );
        assert_eq!(pool_key(&[]), "cbf29ce484222325");
        assert_ne!(
            pool_key(&[("a", "bc")]),
            pool_key(&[("ab", "c")]),
            "field boundaries count"
        );
    }

    #[test]
    fn idle_containers_made_for_another_task_user_are_not_adopted() {
        let engine: Arc<dyn ContainerEngine> = Arc::new(crate::engine::fake::FakeEngine::new());
        let key = |uid: u32, gid: u32| {
            let mut config = PluginConfig::default();
            config.security.task_uid = uid;
            config.security.task_gid = gid;
            let pool = WarmPool::new(engine.clone(), &config, "node-1");
            pool.key_for(&pool.pools["openai"], "sha256:abc")
        };
        let default = key(2_100_000_000, 2_100_000_000);
        assert_eq!(default, key(2_100_000_000, 2_100_000_000));
        assert_ne!(default, key(2_100_000_001, 2_100_000_000));
        assert_ne!(default, key(2_100_000_000, 2_100_000_001));
    }
}
