//! The refiller: one background loop per enabled pool.
//!
//! Each pass: look up the image (a rebuilt image changes the pool key, and idle containers of the
//! old key are replaced), retire idle containers older than `max_idle_age`, size the pool
//! ([`super::sizing::plan`] over the demand estimate and the node's memory), remove idle
//! containers above that size that are older than `scale_down_after` (oldest first), then start
//! up to `refill_parallelism` creations towards it, never above `max` containers of the provider.
//! While cold starts of the provider are making their containers, a pass starts no creation (for
//! at most 10 s in a row): under a burst, refills would only compete with them for the engine.
//! A pass runs on every claim or release, when a creation or cold start ends, and every few
//! seconds; the image is looked up at most every few seconds.
//! Failures are recorded in the pool status and delay the next creation (1 s doubling to 60 s).
//!
//! Shutdown (issue 15). When the plugin is told to stop (`GRPCController/Shutdown`, SIGTERM) the
//! refiller starts nothing more and waits for the creations under way instead of dropping them:
//! a creation stops at its next step and undoes what it made. Dropping one in the middle of its
//! Docker call does not stop Docker: dockerd completes a create (or a start) whose caller has
//! hung up, so the container would appear after the plugin exited, in state `created`, with no
//! one left to remove it. So:
//! - a creation that has not called Docker yet makes nothing;
//! - a container created but not started when the stop came is removed, with its slot (a start
//!   already sent is waited for);
//! - a container whose start returned is a whole idle container: running, its slot in place,
//!   labelled with its pool key. It stays, and the next plugin process adopts it
//!   ([`super::reconcile`]), so an agent restart does not cost the node its warm pool.
//!
//! The plugin process waits for this ([`crate::pool_port::WarmPoolPort::stopped`]) within
//! go-plugin's 2 s grace after Shutdown; what a SIGKILL still cuts short, the next plugin's
//! reconcile removes.
//!
//! Why not hold the refill back until Nomad's first Fingerprint instead: the long-lived instance
//! is the one that gets `nomad_config` in SetConfig (Nomad's validation launch, which does not,
//! never starts the pool at all; see `driver::base`), and an operator expects its pool to fill as
//! soon as the agent configured the driver, so tasks placed right after an agent start find warm
//! containers. Nor would a later start fix the leak: an agent stopped or restarted while the
//! pool refills after a burst of claims — the common case — is the same stop in the middle of
//! creations. Finishing or undoing each creation on the way out covers both.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::sizing::{self, Counts, Sizing};
use super::slots::SlotError;
use super::status_file;
use super::{IdleContainer, ProviderPool, WarmPool, new_slot_id};
use crate::engine::EngineError;

const PASS_PERIOD: Duration = Duration::from_secs(5);
/// Longest the refiller holds new creations back for cold starts in a row: under a load that
/// never stops starting cold, the pool still refills (and grows) after this.
const YIELD_MAX: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// What a refiller last wrote to its status file, and when.
struct PublishedStatus {
    desired: usize,
    growth_limit: Option<String>,
    at: std::time::Instant,
}

/// Why a refill pass or one creation failed; shown in the pool status (`last_error`).
#[derive(Debug, thiserror::Error)]
enum RefillError {
    #[error("cannot inspect image {image}: {source}")]
    InspectImage { image: String, source: EngineError },
    #[error("image {image} is not present on this node: build it with containers/build-images.sh")]
    ImageMissing { image: String },
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error("creating a warm container: {0}")]
    Create(#[source] EngineError),
    #[error("starting a warm container: {0}")]
    Start(#[source] EngineError),
    #[error("a warm container did not stay up: {0}")]
    InspectAfterStart(#[source] EngineError),
    #[error("a warm container did not stay up: it exited")]
    Exited,
    #[error("the plugin is shutting down: the warm container was not made")]
    ShuttingDown,
}

impl WarmPool {
    /// Start one refiller per enabled pool; they stop when `shutdown` is cancelled, once their
    /// creations under way have finished or been undone (idle containers stay, and the next
    /// plugin process adopts them; see the module docs).
    pub fn spawn_refillers(self: &Arc<Self>, shutdown: &CancellationToken) {
        for pool in self.pools.values().filter(|p| p.settings.target > 0) {
            self.background
                .spawn(self.clone().refill_loop(pool.clone(), shutdown.clone()));
        }
    }

    async fn refill_loop(self: Arc<Self>, pool: Arc<ProviderPool>, shutdown: CancellationToken) {
        let mut creations: JoinSet<Result<IdleContainer, RefillError>> = JoinSet::new();
        let mut backoff = BACKOFF_MIN;
        let mut not_before = tokio::time::Instant::now();
        let mut published = None;
        // The pool key and when it was looked up: a claim wakes the refiller, and a burst of them
        // should not each cost the engine an image inspect.
        let mut key_checked: Option<(tokio::time::Instant, String)> = None;
        loop {
            if shutdown.is_cancelled() {
                Self::wind_down(&pool, creations).await;
                return;
            }
            if pool
                .retry_now
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                backoff = BACKOFF_MIN;
                not_before = tokio::time::Instant::now();
                key_checked = None;
            }
            if tokio::time::Instant::now() >= not_before {
                let key = match &key_checked {
                    Some((at, key)) if at.elapsed() < PASS_PERIOD => Ok(key.clone()),
                    _ => {
                        let fresh = self.refresh_key(&pool).await;
                        key_checked = fresh
                            .as_ref()
                            .ok()
                            .map(|key| (tokio::time::Instant::now(), key.clone()));
                        fresh
                    }
                };
                match key {
                    Ok(key) => {
                        self.retire_stale(&pool, &key);
                        let shrink_to =
                            self.size_and_refill(&pool, &key, &mut creations, &shutdown);
                        self.scale_down(&pool, shrink_to);
                        self.publish_status(&pool, &mut published);
                    }
                    Err(err) => {
                        pool.state.lock().last_error = Some(err.to_string());
                        not_before = tokio::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    Self::wind_down(&pool, creations).await;
                    return;
                }
                _ = pool.wake.notified() => {}
                _ = tokio::time::sleep(PASS_PERIOD) => {}
                Some(done) = creations.join_next(), if !creations.is_empty() => {
                    let mut state = pool.state.lock();
                    state.creating = state.creating.saturating_sub(1);
                    match done {
                        Ok(Ok(idle)) => {
                            state.making.remove(&idle.slot);
                            state.idle.push_back(idle);
                            state.last_error = None;
                            backoff = BACKOFF_MIN;
                            drop(state);
                            pool.idle_added.notify_waiters();
                        }
                        Ok(Err(err)) => {
                            tracing::warn!(provider = %pool.provider, error = %err, retry_in = ?backoff, "warm pool refill failed");
                            state.last_error = Some(err.to_string());
                            not_before = tokio::time::Instant::now() + backoff;
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                            drop(state);
                            // Claims waiting for this creation start cold instead.
                            pool.idle_added.notify_waiters();
                        }
                        Err(join_error) => {
                            state.last_error = Some(format!("refill task failed: {join_error}"));
                            drop(state);
                            pool.idle_added.notify_waiters();
                        }
                    }
                }
            }
        }
    }

    /// At shutdown: wait for every creation under way to end (each one undoes what it made,
    /// see the module docs); the idle containers they finished stay running for the next
    /// plugin process.
    async fn wind_down(
        pool: &ProviderPool,
        mut creations: JoinSet<Result<IdleContainer, RefillError>>,
    ) {
        if creations.is_empty() {
            return;
        }
        tracing::info!(provider = %pool.provider, under_way = creations.len(), "shutting down: finishing or undoing the warm containers being made");
        let mut left_idle = 0;
        while let Some(done) = creations.join_next().await {
            match done {
                Ok(Ok(idle)) => {
                    pool.state.lock().making.remove(&idle.slot);
                    tracing::debug!(provider = %pool.provider, container_id = %idle.id, "a warm container finished at shutdown stays for the next plugin process");
                    left_idle += 1;
                }
                Ok(Err(RefillError::ShuttingDown)) => {}
                Ok(Err(err)) => {
                    tracing::debug!(provider = %pool.provider, error = %err, "a warm container being made at shutdown failed")
                }
                Err(join_error) => {
                    tracing::warn!(provider = %pool.provider, error = %join_error, "a warm container's creation ended abnormally at shutdown; the next plugin process removes what it left")
                }
            }
        }
        tracing::info!(provider = %pool.provider, left_idle, "warm pool creations wound down");
    }

    /// The pool key for the image as it is now; stores it in the pool state.
    async fn refresh_key(&self, pool: &ProviderPool) -> Result<String, RefillError> {
        let image_id = self
            .engine
            .image_id(&pool.image)
            .await
            .map_err(|source| RefillError::InspectImage {
                image: pool.image.clone(),
                source,
            })?
            .ok_or_else(|| RefillError::ImageMissing {
                image: pool.image.clone(),
            })?;
        let key = self.key_for(pool, &image_id);
        pool.state.lock().key = Some(key.clone());
        Ok(key)
    }

    /// Remove idle containers that are too old or were made for another key.
    fn retire_stale(&self, pool: &ProviderPool, key: &str) {
        let max_age = pool.settings.max_idle_age;
        let now = SystemTime::now();
        let stale: Vec<IdleContainer> = {
            let mut state = pool.state.lock();
            let (keep, stale): (Vec<_>, Vec<_>) = state.idle.drain(..).partition(|idle| {
                let young = now
                    .duration_since(idle.created_at)
                    .map(|age| age < max_age)
                    .unwrap_or(true);
                young && idle.pool_key.as_deref() == Some(key)
            });
            state.idle = keep.into();
            stale
        };
        for idle in stale {
            tracing::info!(provider = %pool.provider, container_id = %idle.id, "retiring an idle container (too old or outdated)");
            self.discard(idle);
        }
    }

    /// Size the pool (recording its desired size and what holds it back) and start the
    /// creations this pass may; returns the count of idle containers scale-down keeps.
    fn size_and_refill(
        self: &Arc<Self>,
        pool: &Arc<ProviderPool>,
        key: &str,
        creations: &mut JoinSet<Result<IdleContainer, RefillError>>,
        shutdown: &CancellationToken,
    ) -> usize {
        let settings = &pool.settings;
        let sizing = Sizing {
            target: settings.target as usize,
            max: settings.max as usize,
            refill_parallelism: settings.refill_parallelism as usize,
            idle_memory_bytes: u64::try_from(settings.idle_memory_bytes).unwrap_or(0),
        };
        let mem_available = self.mem_available();
        let mut state = pool.state.lock();
        let counts = Counts {
            idle: state.idle.len(),
            creating: state.creating,
            in_use: state.in_use,
        };
        let peak = state.demand.peak(std::time::Instant::now());
        let plan = sizing::plan(sizing, counts, peak, mem_available);
        let create = if self.yields_to_cold_starts(&mut state) {
            0
        } else {
            plan.create
        };
        let growth_limit = (!plan.limits.is_empty()).then(|| {
            plan.limits
                .iter()
                .map(|limit| limit.describe(&pool.provider))
                .collect::<Vec<_>>()
                .join("; ")
        });
        if growth_limit.is_some() && growth_limit != state.growth_limit {
            tracing::info!(provider = %pool.provider, desired = plan.desired, limit = growth_limit.as_deref().unwrap_or_default(), "the warm pool is held back");
        }
        if plan.desired != state.desired {
            tracing::debug!(provider = %pool.provider, from = state.desired, to = plan.desired, peak, "warm pool size");
        }
        state.desired = plan.desired;
        state.growth_limit = growth_limit;
        state.creating += create;
        drop(state);
        for _ in 0..create {
            let this = self.clone();
            let pool = pool.clone();
            let key = key.to_string();
            let shutdown = shutdown.clone();
            creations.spawn(async move { this.create_idle(&pool, &key, &shutdown).await });
        }
        plan.shrink_to
    }

    /// Write the pool's desired size for `polydev pool status` when it changed, or when the
    /// last write is [`status_file::REWRITE_EVERY`] old.
    fn publish_status(&self, pool: &ProviderPool, last: &mut Option<PublishedStatus>) {
        let (desired, growth_limit) = {
            let state = pool.state.lock();
            (state.desired, state.growth_limit.clone())
        };
        let unchanged = last.as_ref().is_some_and(|last| {
            last.desired == desired
                && last.growth_limit == growth_limit
                && last.at.elapsed() < status_file::REWRITE_EVERY
        });
        if unchanged {
            return;
        }
        let status = status_file::WrittenStatus {
            desired,
            target: pool.settings.target,
            max: pool.settings.max,
            growth_limit: growth_limit.clone(),
            written_unix_secs: status_file::now_unix_secs(),
        };
        if let Err(err) = status_file::write(Path::new(&self.data_dir), &pool.provider, &status) {
            tracing::warn!(provider = %pool.provider, error = %err, "cannot write the pool's status for polydev pool status");
        }
        *last = Some(PublishedStatus {
            desired,
            growth_limit,
            at: std::time::Instant::now(),
        });
    }

    /// Whether this pass starts no creation because cold starts are making their containers:
    /// they would compete for the engine and the CPU with the burst they belong to. Holds for at
    /// most [`YIELD_MAX`] in a row.
    fn yields_to_cold_starts(&self, state: &mut super::PoolState) -> bool {
        if state.cold_in_flight == 0 {
            state.yielding_since = None;
            return false;
        }
        let since = *state
            .yielding_since
            .get_or_insert_with(std::time::Instant::now);
        since.elapsed() < YIELD_MAX
    }

    /// Remove idle containers beyond `keep` that are older than `scale_down_after`, oldest
    /// first (younger ones wait for a later pass).
    fn scale_down(&self, pool: &ProviderPool, keep: usize) {
        let now = SystemTime::now();
        let after = pool.settings.scale_down_after;
        let removed: Vec<IdleContainer> = {
            let mut state = pool.state.lock();
            let excess = state.idle.len().saturating_sub(keep);
            if excess == 0 {
                return;
            }
            let mut old: Vec<(SystemTime, String)> = state
                .idle
                .iter()
                .filter(|idle| {
                    now.duration_since(idle.created_at)
                        .is_ok_and(|age| age >= after)
                })
                .map(|idle| (idle.created_at, idle.id.clone()))
                .collect();
            old.sort();
            old.truncate(excess);
            let (removed, kept): (Vec<_>, Vec<_>) = state
                .idle
                .drain(..)
                .partition(|idle| old.iter().any(|(_, id)| *id == idle.id));
            state.idle = kept.into();
            removed
        };
        for idle in removed {
            tracing::info!(provider = %pool.provider, container_id = %idle.id, "scaling the warm pool down: removing an idle container demand no longer asks for");
            self.discard(idle);
        }
    }

    /// Create and start one idle container; on failure, leave nothing behind. Once `shutdown`
    /// is cancelled it makes nothing more: a container created but not yet started is removed
    /// (a Docker call under way is always waited for, never dropped: see the module docs).
    async fn create_idle(
        &self,
        pool: &ProviderPool,
        key: &str,
        shutdown: &CancellationToken,
    ) -> Result<IdleContainer, RefillError> {
        if shutdown.is_cancelled() {
            return Err(RefillError::ShuttingDown);
        }
        let began = std::time::Instant::now();
        let slot = new_slot_id();
        let mark = MakingMark::new(pool, &slot);
        let spec = self.idle_spec(pool, key, &slot)?;
        let id = match self.engine.create(&spec).await {
            Ok(id) => id,
            Err(err) => {
                self.slots.release(&slot);
                return Err(RefillError::Create(err));
            }
        };
        if shutdown.is_cancelled() {
            if let Err(err) = self.engine.remove(&id).await
                && !err.is_not_found()
            {
                tracing::warn!(container_id = %id, error = %err, "cannot remove a warm container created at shutdown; the next plugin process removes it");
            }
            self.slots.release(&slot);
            return Err(RefillError::ShuttingDown);
        }
        if let Err(err) = self.engine.start(&id).await {
            let _ = self.engine.remove(&id).await;
            self.slots.release(&slot);
            return Err(RefillError::Start(err));
        }
        // Learn where its limits live now, off the claim's path (a container that died at
        // once is treated like a failed start).
        let (cgroup_pid, init_pid) = match self.engine.inspect(&id).await {
            Ok(state) if state.running => (state.cgroup_pid, state.init_pid),
            outcome => {
                let _ = self.engine.remove(&id).await;
                self.slots.release(&slot);
                return Err(
                    outcome.map_or_else(RefillError::InspectAfterStart, |_| RefillError::Exited)
                );
            }
        };
        tracing::debug!(provider = %pool.provider, container_id = %id, took_ms = began.elapsed().as_secs_f64() * 1e3, "warm container ready");
        mark.hand_over();
        Ok(IdleContainer {
            id,
            slot,
            created_at: SystemTime::now(),
            pool_key: Some(key.to_string()),
            cgroup_pid,
            init_pid,
        })
    }

    /// Remove an idle container that will never run a task (in the background).
    pub fn discard(&self, idle: IdleContainer) {
        let engine = self.engine.clone();
        let slots = self.slots.clone();
        self.background.spawn(async move {
            if let Err(err) = engine.remove(&idle.id).await
                && !err.is_not_found()
            {
                tracing::warn!(container_id = %idle.id, error = %err, "cannot remove a warm container");
            }
            slots.release(&idle.slot);
        });
    }
}

/// A creation's slot in its pool's `making` set, from before the create call until the
/// container is in `idle`. Every way out of a failed creation drops the mark, which takes the
/// slot out again; a finished creation hands it over ([`MakingMark::hand_over`]) and the
/// refiller takes the slot out when it moves the container into `idle`, under the same lock. So
/// at any moment each of the pool's containers is in `idle` or in `making`, and the resync
/// after an engine outage ([`WarmPool::resync`]) removes neither.
pub(super) struct MakingMark<'a> {
    pool: &'a ProviderPool,
    slot: String,
    handed_over: bool,
}

impl<'a> MakingMark<'a> {
    fn new(pool: &'a ProviderPool, slot: &str) -> Self {
        pool.state.lock().making.insert(slot.to_string());
        MakingMark {
            pool,
            slot: slot.to_string(),
            handed_over: false,
        }
    }

    /// The creation finished: whoever moves the container into `idle` clears the mark.
    fn hand_over(mut self) {
        self.handed_over = true;
    }
}

impl Drop for MakingMark<'_> {
    fn drop(&mut self) {
        if !self.handed_over {
            self.pool.state.lock().making.remove(&self.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refill_errors_read_as_before_in_the_pool_status() {
        let missing = RefillError::ImageMissing {
            image: "polydev/openai:1".into(),
        };
        assert_eq!(
            missing.to_string(),
            "image polydev/openai:1 is not present on this node: build it with \
             containers/build-images.sh"
        );
        let create = RefillError::Create(EngineError::Unavailable("socket gone".into()));
        assert!(
            create
                .to_string()
                .starts_with("creating a warm container: "),
            "{create}"
        );
        assert_eq!(
            RefillError::Exited.to_string(),
            "a warm container did not stay up: it exited"
        );
    }
}
