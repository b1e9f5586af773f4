//! Claims: taking an idle container for a task, first come, first served.
//!
//! Guarantees:
//! - An idle container is popped under the pool's lock, so two claims never get the same one; one
//!   whose init process is gone is discarded and the next one taken.
//! - Every claim is recorded for the demand estimate ([`super::demand`]) and wakes the refiller.
//! - A claim that finds the pool empty waits only for a creation already under way that no other
//!   claim waits for, and for at most [`CREATION_WAIT_MAX`]; then it starts cold. Under
//!   `when_empty = "wait"` it waits up to `wait_timeout` for the refill.

use std::time::{Duration, Instant};

use super::{IdleContainer, ProviderPool, WarmPool};
use crate::pool_port::ClaimError;

/// How long a claim that found the pool empty waits for a creation already under way before it
/// starts cold after all (a creation takes a few hundred ms, seconds under a burst).
pub const CREATION_WAIT_MAX: Duration = Duration::from_secs(5);

/// A claim's hold on a creation under way, released when the claim is done with it (also when
/// the claim is cancelled).
struct Promise<'a>(&'a ProviderPool);

impl Drop for Promise<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.promised = state.promised.saturating_sub(1);
    }
}

impl WarmPool {
    /// Pop an idle container of `provider` (first come, first served), waking the refiller.
    /// One whose init process is gone (a local check, no engine call) is discarded and the
    /// next one taken: a claim never gets a container known not to run. The container counts
    /// as in use from here on: call [`WarmPoolPort::task_released`] if the claim fails.
    ///
    /// [`WarmPoolPort::task_released`]: crate::pool_port::WarmPoolPort::task_released
    pub fn take_idle(&self, provider: &str) -> Option<IdleContainer> {
        let pool = self.pools.get(provider)?;
        let taken = loop {
            let Some(idle) = pool.state.lock().idle.pop_front() else {
                break None;
            };
            let dead = idle
                .init_pid
                .and_then(|pid| self.engine.still_running(&idle.id, pid))
                == Some(false);
            if dead {
                tracing::info!(container_id = %idle.id, "an idle warm container had stopped; taking another");
                self.discard(idle);
                continue;
            }
            pool.state.lock().in_use += 1;
            break Some(idle);
        };
        pool.wake.notify_one();
        taken
    }

    /// A claim for `provider` was served warm (`warm`) or not: it counts towards the demand
    /// estimate, as one that ran the pool dry when it was cold or left no idle container.
    pub(super) fn note_claim(&self, provider: &str, warm: bool) {
        if let Some(pool) = self.pools.get(provider) {
            let mut state = pool.state.lock();
            let ran_dry = !warm || state.idle.is_empty();
            state.demand.record(Instant::now(), ran_dry);
            drop(state);
            // The claim woke the refiller already; this pass sees the new estimate.
            pool.wake.notify_one();
        }
    }

    /// For a claim that found the pool empty: if a creation is under way that no other claim
    /// waits for, wait for it (up to [`CREATION_WAIT_MAX`]) instead of starting a container of
    /// its own; `None` when there is none to wait for, it failed, or it took too long (the claim
    /// then starts cold). Under a burst this saves the engine one container per creation in
    /// flight, and the one under way is ready sooner than a new one would be.
    pub async fn take_creation_in_flight(&self, provider: &str) -> Option<IdleContainer> {
        let pool = self.pools.get(provider)?;
        {
            let mut state = pool.state.lock();
            if state.creating <= state.promised {
                return None;
            }
            state.promised += 1;
        }
        let _promise = Promise(pool);
        let wait = self
            .creation_wait_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
        loop {
            let added = pool.idle_added.notified();
            if let Some(idle) = self.take_idle(provider) {
                return Some(idle);
            }
            {
                let state = pool.state.lock();
                // Fewer creations left than claims counting on them: this one gives up.
                if state.creating < state.promised {
                    return None;
                }
            }
            if tokio::time::timeout_at(deadline, added).await.is_err() {
                return None;
            }
        }
    }

    #[cfg(test)]
    /// Change how long a claim waits for a creation under way (tests use a short one).
    pub fn set_creation_wait(&self, wait: Duration) {
        let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self.creation_wait_ms
            .store(millis, std::sync::atomic::Ordering::Relaxed);
    }

    /// Wait up to `limit` for an idle container of `provider`.
    pub async fn wait_idle(
        &self,
        provider: &str,
        limit: Duration,
    ) -> Result<IdleContainer, ClaimError> {
        let Some(pool) = self.pools.get(provider) else {
            return Err(ClaimError::Empty {
                provider: provider.to_string(),
            });
        };
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let added = pool.idle_added.notified();
            if let Some(idle) = self.take_idle(provider) {
                return Ok(idle);
            }
            if tokio::time::timeout_at(deadline, added).await.is_err() {
                return Err(ClaimError::WaitTimedOut {
                    provider: provider.to_string(),
                    waited: limit,
                });
            }
        }
    }
}
