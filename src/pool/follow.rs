//! The pool following the engine ([`crate::engine`]): an idle container that dies or is removed
//! behind polydev's back leaves the pool at once and is replaced; when the engine comes back
//! after an outage, the pool is made to match what the engine has, as at plugin start.
//!
//! Guarantees: after [`EngineNews::Back`] (or lost news) no idle entry names a container that
//! is not running, no stopped, unclaimed pool container is left in the engine, and every
//! refiller tries again at once instead of waiting out its backoff.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::{IdleContainer, WarmPool};
use crate::container_parts::{LABEL_MANAGED, LABEL_SLOT};
use crate::engine::watch::EngineNews;

impl WarmPool {
    /// Act on the engine's news until `shutdown`.
    pub async fn follow_engine(
        self: Arc<Self>,
        mut news: broadcast::Receiver<EngineNews>,
        shutdown: CancellationToken,
    ) {
        loop {
            let item = tokio::select! {
                _ = shutdown.cancelled() => return,
                item = news.recv() => item,
            };
            match item {
                Ok(EngineNews::Died { id }) | Ok(EngineNews::Destroyed { id }) => {
                    if let Some(idle) = self.forget_idle(&id) {
                        tracing::info!(container_id = %idle.id, "an idle warm container stopped; replacing it");
                        self.discard(idle);
                    }
                }
                Ok(EngineNews::Back) | Err(RecvError::Lagged(_)) => self.resync().await,
                Ok(EngineNews::Lost) => {}
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Take container `id` out of its pool's idle list (waking that pool's refiller).
    fn forget_idle(&self, id: &str) -> Option<IdleContainer> {
        self.pools.values().find_map(|pool| {
            let mut state = pool.state.lock();
            let position = state.idle.iter().position(|idle| idle.id == id)?;
            let idle = state.idle.remove(position);
            drop(state);
            pool.wake.notify_one();
            idle
        })
    }

    /// Make the pool match the engine: forget idle containers that do not run, remove stopped
    /// pool containers nobody claimed, and let every refiller try again now.
    pub async fn resync(&self) {
        // Only containers that were idle before the listing are judged by it: one that became
        // idle since then was `created` when listed, and is running now.
        let idle_before_listing: BTreeSet<String> = self
            .pools
            .values()
            .flat_map(|pool| {
                pool.state
                    .lock()
                    .idle
                    .iter()
                    .map(|idle| idle.id.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        let containers = match self.engine.list(LABEL_MANAGED, "true").await {
            Ok(containers) => containers,
            Err(err) => {
                tracing::warn!(error = %err, "cannot resync the warm pool with the engine yet");
                return;
            }
        };
        let running: BTreeSet<&str> = containers
            .iter()
            .filter(|c| self.owns(&c.labels) && c.state == "running")
            .map(|c| c.id.as_str())
            .collect();
        // The pool's own containers: idle, or still being made (a container between its create
        // and its start is `created`, and is not a leftover).
        let mut idle_ids = BTreeSet::new();
        let mut making_slots = BTreeSet::new();
        for pool in self.pools.values() {
            let stale: std::collections::VecDeque<IdleContainer> = {
                let mut state = pool.state.lock();
                let (keep, stale) = state.idle.drain(..).partition(|idle| {
                    running.contains(idle.id.as_str()) || !idle_before_listing.contains(&idle.id)
                });
                state.idle = keep;
                idle_ids.extend(state.idle.iter().map(|idle| idle.id.clone()));
                making_slots.extend(state.making.iter().cloned());
                stale
            };
            for idle in stale {
                tracing::info!(container_id = %idle.id, "an idle warm container did not survive the engine's outage; replacing it");
                self.discard(idle);
            }
        }
        for container in &containers {
            let Some(slot) = container.labels.get(LABEL_SLOT) else {
                continue;
            };
            let stopped = container.state != "running";
            if self.owns(&container.labels)
                && stopped
                && !idle_ids.contains(&container.id)
                && !making_slots.contains(slot)
                && !self.slots.is_claimed(slot)
            {
                self.discard(IdleContainer {
                    id: container.id.clone(),
                    slot: slot.clone(),
                    created_at: container.created_at,
                    pool_key: None,
                    cgroup_pid: None,
                    init_pid: None,
                });
            }
        }
        for pool in self.pools.values() {
            pool.retry_now.store(true, Ordering::SeqCst);
            pool.wake.notify_one();
        }
    }
}
