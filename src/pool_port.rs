//! The warm pool as the task lifecycle sees it: the port [`crate::core`] reaches the pool
//! through, implemented by [`crate::pool::WarmPool`] and wired in where the `Core` is built
//! (`assembly`; the operator CLI has no pool).
//!
//! `core` names only this trait and its types, never the pool's, and the pool never names
//! `core`: the pool is free to keep, refill and reconcile its containers as it likes.
//!
//! Contract:
//! - [`WarmPoolPort::claim`] hands an idle container to exactly one caller. From then on it
//!   counts as in use; the caller wraps it in a [`PoolHold`], whose drop gives the count and the
//!   slot back when the claim does not become a task, or when the task is destroyed.
//! - A failed claim leaves nothing behind: the container taken is discarded and its count
//!   released before the error is returned.
//! - Only a claim under `when_empty = "wait"` waits for the pool to refill. Under the default
//!   `"cold"` a claim that finds the pool empty may take a container whose creation is already
//!   under way (never one it would have to start), and gives up on it after a few seconds; every
//!   other call returns at once.
//! - A cold start of a pool-enabled provider holds a [`ColdStart`] from [`WarmPoolPort::cold_start`]
//!   while it creates and starts its container: the pool starts no new idle container meanwhile,
//!   so refills do not compete with the burst's cold starts for the engine. Dropping it (also when
//!   the StartTask is cancelled) ends it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::engine::watch::EngineNews;

/// What the task lifecycle needs from the warm pool.
#[async_trait]
pub trait WarmPoolPort: Send + Sync {
    /// Start the pool's background work if any provider keeps warm containers: prepare the
    /// slots, reconcile with the engine, refill, and follow `news` (subscribed by the caller
    /// before this call, so no container death after the reconcile goes unseen) until
    /// `shutdown`.
    fn spawn_background(
        self: Arc<Self>,
        news: broadcast::Receiver<EngineNews>,
        shutdown: CancellationToken,
    );

    /// Whether `provider` keeps warm containers (and the pool works on this host).
    fn is_enabled(&self, provider: &str) -> bool;

    /// Take an idle container of `provider` for a task, per the pool's `when_empty` policy, and
    /// hand it the task's directories: with `alloc_dir`, Nomad's `<alloc_dir>/alloc` and
    /// `<alloc_dir>/<task_name>/{local,secrets}` are mounted into its slot; without (outside
    /// Nomad), the slot is only marked claimed. `Ok(None)`: the pool is empty and
    /// `when_empty = "cold"`, start the task cold.
    async fn claim(
        &self,
        provider: &str,
        alloc_dir: Option<&str>,
        task_name: &str,
    ) -> Result<Option<WarmContainer>, ClaimError>;

    /// A cold start of `provider` is making its container: hold the answer until the container
    /// has been created and started (or failed to be).
    fn cold_start(&self, provider: &str) -> ColdStart;

    /// A task of `provider` started cold or was recovered: it counts towards the pool's `max`.
    fn task_started(&self, provider: &str);

    /// A task of `provider` (or a claim that did not become one) is gone: room for the refiller.
    fn task_released(&self, provider: &str);

    /// Whether `slot` belongs to a task (a claimed pool container), not to an idle container.
    fn slot_is_claimed(&self, slot: &str) -> bool;

    /// Unmount and delete a task's slot.
    fn release_slot(&self, slot: &str);

    /// Every provider's pool state.
    fn status(&self) -> BTreeMap<String, PoolStatus>;

    /// Resolves once the pool's background work has wound down after the `shutdown` token of
    /// [`WarmPoolPort::spawn_background`] was cancelled: creations under way have removed what
    /// they created and did not start, and removals under way are done. Idle containers already
    /// running are left for the next plugin process to adopt. Call it only after cancelling
    /// `shutdown` (until then it does not resolve), and bound the wait: an engine call can hang.
    async fn stopped(&self);
}

/// A cold start in progress, as far as the pool is concerned; it ends when dropped.
#[must_use = "the cold start ends when this is dropped"]
pub struct ColdStart {
    on_end: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl ColdStart {
    /// Runs `on_end` once, when dropped.
    pub fn new(on_end: impl FnOnce() + Send + Sync + 'static) -> Self {
        ColdStart {
            on_end: Some(Box::new(on_end)),
        }
    }

    /// One the pool does not track (its provider keeps no warm containers).
    pub fn untracked() -> Self {
        ColdStart { on_end: None }
    }
}

impl Drop for ColdStart {
    fn drop(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end();
        }
    }
}

impl std::fmt::Debug for ColdStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColdStart")
            .field("tracked", &self.on_end.is_some())
            .finish()
    }
}

/// A task's hold on its provider's pool: it counts towards the pool's `max` and, for a task in
/// a claimed warm container, owns that container's slot. Dropping it gives both back, so the task
/// entry that holds it releases them however the task ends, and a claim that never became a task
/// releases them on every error path.
///
/// Except while the plugin shuts down (`plugin_shutdown` cancelled): the task entries that go
/// then take their holds with them, but their tasks live on, and the next plugin process recovers
/// them with their slots. A hold dropped then gives nothing back.
#[must_use = "the task's count and slot are given back when this is dropped"]
pub struct PoolHold {
    pool: Arc<dyn WarmPoolPort>,
    provider: String,
    slot: Option<String>,
    plugin_shutdown: CancellationToken,
}

impl PoolHold {
    /// The hold of a claim: [`WarmPoolPort::claim`] already counted the container as in use.
    pub fn of_claim(
        pool: Arc<dyn WarmPoolPort>,
        provider: &str,
        slot: &str,
        plugin_shutdown: CancellationToken,
    ) -> Self {
        PoolHold {
            pool,
            provider: provider.to_string(),
            slot: Some(slot.to_string()),
            plugin_shutdown,
        }
    }

    /// A task that started cold or was recovered (with its slot, if it runs in a pool
    /// container): counted from now on.
    pub fn of_task(
        pool: Arc<dyn WarmPoolPort>,
        provider: &str,
        slot: Option<&str>,
        plugin_shutdown: CancellationToken,
    ) -> Self {
        pool.task_started(provider);
        PoolHold {
            pool,
            provider: provider.to_string(),
            slot: slot.map(str::to_string),
            plugin_shutdown,
        }
    }
}

impl Drop for PoolHold {
    fn drop(&mut self) {
        if self.plugin_shutdown.is_cancelled() {
            return;
        }
        if let Some(slot) = &self.slot {
            self.pool.release_slot(slot);
        }
        self.pool.task_released(&self.provider);
    }
}

impl std::fmt::Debug for PoolHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolHold")
            .field("provider", &self.provider)
            .field("slot", &self.slot)
            .finish()
    }
}

/// A claimed warm container: started, waiting for its task's launch spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmContainer {
    pub id: String,
    /// The slot holding the task's directories.
    pub slot: String,
    /// Where its limits live on the host (see [`crate::engine::ContainerState::cgroup_pid`]),
    /// when the pool knows it.
    pub cgroup_pid: Option<u32>,
    /// Its init process on the host (the credential broker binds in its network namespace).
    pub init_pid: Option<u32>,
}

/// A pool's state, for the fingerprint and `polydev pool status`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolStatus {
    pub idle: usize,
    /// The floor of idle containers.
    pub target: u32,
    /// The ceiling on the provider's containers, idle and running tasks together.
    pub max: u32,
    /// Idle containers the pool aims for now: `target`, or more after a burst of claims.
    pub desired: usize,
    pub creating: usize,
    pub in_use: usize,
    /// Why the pool cannot refill (image missing, engine errors), `None` when it can.
    pub last_error: Option<String>,
    /// Why the pool holds fewer than `desired` idle containers (`max`, the node's memory).
    pub growth_limit: Option<String>,
}

/// Why a claim gave no container.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "the warm pool of provider {provider:?} is empty and when_empty = \"fail\": retry later, \
         or raise pool \"{provider}\" {{ target = ... }}"
    )]
    Empty { provider: String },
    #[error(
        "no warm container of provider {provider:?} became free within {waited:?} \
         (when_empty = \"wait\"): raise the pool's target or wait_timeout"
    )]
    WaitTimedOut { provider: String, waited: Duration },
    /// The container's slot would not take the task's directories (the pool's slot error).
    #[error(transparent)]
    Slot(Box<dyn std::error::Error + Send + Sync>),
}

impl ClaimError {
    /// Whether Nomad should retry: an empty pool fills again, a broken slot does not mend.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ClaimError::Slot(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_pool_is_worth_a_retry_and_says_how_to_avoid_it() {
        let empty = ClaimError::Empty {
            provider: "openai".into(),
        };
        assert!(empty.is_retryable());
        assert!(
            empty
                .to_string()
                .contains("pool \"openai\" { target = ... }"),
            "{empty}"
        );
        let slot = ClaimError::Slot(Box::new(std::io::Error::other("mount refused")));
        assert!(!slot.is_retryable());
        assert_eq!(
            slot.to_string(),
            "mount refused",
            "the slot error speaks for itself"
        );
    }

    #[test]
    fn a_cold_start_ends_once_when_dropped() {
        let ended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = ended.clone();
        let cold = ColdStart::new(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        assert_eq!(ended.load(std::sync::atomic::Ordering::SeqCst), 0);
        drop(cold);
        assert_eq!(ended.load(std::sync::atomic::Ordering::SeqCst), 1);
        drop(ColdStart::untracked());
    }
}
