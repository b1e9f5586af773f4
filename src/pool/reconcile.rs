//! Reconciling the pool with what Docker has, when the plugin starts.
//!
//! A plugin that was killed leaves idle containers, half-made ones, and task containers behind.
//! At start, every container carrying polydev's labels for this node is sorted out:
//! - an idle pool container (its slot exists and is not claimed) that is running, younger than
//!   `max_idle_age` and made for the current pool key is **adopted** into the pool;
//! - any other unclaimed pool container is **removed**, with its slot;
//! - task containers (claimed slots, and cold-started containers) are **left** for RecoverTask;
//!   the orphan sweep (`core::orphans`) removes those Nomad never claims back;
//! - slot directories no container uses are deleted.

use std::collections::BTreeSet;
use std::time::SystemTime;

use super::{IdleContainer, WarmPool};
use crate::container_parts::{LABEL_MANAGED, LABEL_POOL_KEY, LABEL_PROVIDER, LABEL_SLOT};

/// What reconciliation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub adopted: usize,
    pub removed: usize,
    pub left_for_recovery: usize,
}

impl WarmPool {
    /// Adopt, remove or leave every polydev container of this node (see the module docs).
    pub async fn reconcile(&self) -> Result<ReconcileReport, crate::engine::EngineError> {
        let containers = self.engine.list(LABEL_MANAGED, "true").await?;
        let mut report = ReconcileReport::default();
        let mut slots_in_use = BTreeSet::new();
        for container in containers {
            if !self.owns(&container.labels) {
                continue;
            }
            let Some(slot) = container.labels.get(LABEL_SLOT).cloned() else {
                report.left_for_recovery += 1;
                continue;
            };
            if self.slots.is_claimed(&slot) {
                slots_in_use.insert(slot);
                report.left_for_recovery += 1;
                continue;
            }
            let provider = container
                .labels
                .get(LABEL_PROVIDER)
                .cloned()
                .unwrap_or_default();
            // The key is checked by the refiller's first pass, which retires outdated ones.
            let adoptable = self
                .pools
                .get(&provider)
                .filter(|pool| pool.settings.target > 0);
            let fresh = adoptable.is_some_and(|pool| {
                container.state == "running"
                    && self.slots.exists(&slot)
                    && SystemTime::now()
                        .duration_since(container.created_at)
                        .map(|age| age < pool.settings.max_idle_age)
                        .unwrap_or(false)
            });
            match adoptable {
                Some(pool) if fresh => {
                    slots_in_use.insert(slot.clone());
                    // Where its limits live (a failed lookup only makes its claim slower).
                    let (cgroup_pid, init_pid) = match self.engine.inspect(&container.id).await {
                        Ok(state) => (state.cgroup_pid, state.init_pid),
                        Err(_) => (None, None),
                    };
                    pool.state.lock().idle.push_back(IdleContainer {
                        id: container.id.clone(),
                        slot,
                        created_at: container.created_at,
                        pool_key: container.labels.get(LABEL_POOL_KEY).cloned(),
                        cgroup_pid,
                        init_pid,
                    });
                    report.adopted += 1;
                }
                _ => {
                    if let Err(err) = self.engine.remove(&container.id).await
                        && !err.is_not_found()
                    {
                        tracing::warn!(container_id = %container.id, error = %err, "cannot remove a stale warm container");
                    }
                    self.slots.release(&slot);
                    report.removed += 1;
                }
            }
        }
        for slot in self.slots.list() {
            if !slots_in_use.contains(&slot) {
                self.slots.release(&slot);
            }
        }
        tracing::info!(
            adopted = report.adopted,
            removed = report.removed,
            left = report.left_for_recovery,
            "warm pool reconciled"
        );
        Ok(report)
    }
}
