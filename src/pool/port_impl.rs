//! The pool's side of [`crate::pool_port`]: what the task lifecycle calls — claims, the count of
//! tasks per provider, task slots, status, and the start of the background work.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::WarmPool;
use super::slots::SlotRoot;
use crate::config::WhenEmpty;
use crate::engine::watch::EngineNews;
use crate::pool_port::{ClaimError, ColdStart, PoolStatus, WarmContainer, WarmPoolPort};

#[async_trait]
impl WarmPoolPort for WarmPool {
    fn spawn_background(
        self: Arc<Self>,
        news: broadcast::Receiver<EngineNews>,
        shutdown: CancellationToken,
    ) {
        if !self.any_enabled() {
            return;
        }
        let background = self.background.clone();
        background.spawn(async move {
            if let Err(err) = self.slots.prepare() {
                tracing::error!(error = %err, "the warm pool is off: its slot directory cannot be prepared");
                self.disable(&err.to_string());
                return;
            }
            if let Err(err) = self.reconcile().await {
                tracing::warn!(error = %err, "cannot reconcile the warm pool with Docker yet");
            }
            if shutdown.is_cancelled() {
                return;
            }
            self.spawn_refillers(&shutdown);
            self.follow_engine(news, shutdown).await;
        });
    }

    fn is_enabled(&self, provider: &str) -> bool {
        self.disabled_reason().is_none()
            && self
                .pools
                .get(provider)
                .is_some_and(|p| p.settings.target > 0)
    }

    async fn claim(
        &self,
        provider: &str,
        alloc_dir: Option<&str>,
        task_name: &str,
    ) -> Result<Option<WarmContainer>, ClaimError> {
        let taken = self.take_idle(provider);
        self.note_claim(provider, taken.is_some());
        let idle = match taken {
            Some(idle) => idle,
            None => match self.when_empty(provider) {
                WhenEmpty::Cold => match self.take_creation_in_flight(provider).await {
                    Some(idle) => idle,
                    None => return Ok(None),
                },
                WhenEmpty::Fail => {
                    return Err(ClaimError::Empty {
                        provider: provider.to_string(),
                    });
                }
                WhenEmpty::Wait(limit) => self.wait_idle(provider, limit).await?,
            },
        };
        let attached = match alloc_dir {
            Some(alloc_dir) => self.slots.attach(&idle.slot, alloc_dir, task_name),
            None => self.slots.mark_claimed(&idle.slot),
        };
        if let Err(err) = attached {
            self.discard(idle);
            self.task_released(provider);
            return Err(ClaimError::Slot(Box::new(err)));
        }
        let reached = match (alloc_dir, idle.init_pid) {
            (Some(_), Some(pid)) => SlotRoot::reached_container(pid),
            _ => true,
        };
        if !reached {
            tracing::warn!(container_id = %idle.id, "the task's directories did not reach an idle warm container (its slot no longer propagates); removing it and starting the task cold");
            self.discard(idle);
            self.task_released(provider);
            return Ok(None);
        }
        Ok(Some(WarmContainer {
            id: idle.id,
            slot: idle.slot,
            cgroup_pid: idle.cgroup_pid,
            init_pid: idle.init_pid,
        }))
    }

    fn cold_start(&self, provider: &str) -> ColdStart {
        let Some(pool) = self.pools.get(provider).filter(|p| p.settings.target > 0) else {
            return ColdStart::untracked();
        };
        pool.state.lock().cold_in_flight += 1;
        let pool = pool.clone();
        ColdStart::new(move || {
            let mut state = pool.state.lock();
            state.cold_in_flight = state.cold_in_flight.saturating_sub(1);
            drop(state);
            pool.wake.notify_one();
        })
    }

    fn task_started(&self, provider: &str) {
        if let Some(pool) = self.pools.get(provider) {
            pool.state.lock().in_use += 1;
        }
    }

    fn task_released(&self, provider: &str) {
        if let Some(pool) = self.pools.get(provider) {
            let mut state = pool.state.lock();
            state.in_use = state.in_use.saturating_sub(1);
            drop(state);
            pool.wake.notify_one();
        }
    }

    fn slot_is_claimed(&self, slot: &str) -> bool {
        self.slots.is_claimed(slot)
    }

    fn release_slot(&self, slot: &str) {
        self.slots.release(slot);
    }

    async fn stopped(&self) {
        self.background.close();
        self.background.wait().await;
    }

    fn status(&self) -> BTreeMap<String, PoolStatus> {
        self.pools
            .iter()
            .map(|(name, pool)| {
                let state = pool.state.lock();
                let status = PoolStatus {
                    idle: state.idle.len(),
                    target: pool.settings.target,
                    max: pool.settings.max,
                    desired: state.desired,
                    creating: state.creating,
                    in_use: state.in_use,
                    last_error: self.disabled_reason().or_else(|| state.last_error.clone()),
                    growth_limit: state.growth_limit.clone(),
                };
                (name.clone(), status)
            })
            .collect()
    }
}
