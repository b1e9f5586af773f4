//! The orphan sweep: task containers that no task of this plugin claims are removed after a grace
//! period.
//!
//! After a plugin or agent restart, Nomad calls RecoverTask for the tasks it still knows; a task
//! container it never asks about (its allocation was stopped while the agent was down, or the
//! client state was lost) would otherwise run and hold resources forever. Every
//! [`SWEEP_PERIOD`], containers of this node carrying polydev's labels that are task containers
//! (a cold-started container, or a pool container whose slot is claimed) and belong to no known
//! task are noted; one still unclaimed after `orphan_grace` is removed with its slot and log
//! forwarder files. Idle pool containers are the pool's business, not the sweep's.
//!
//! Containers of this node whose [`LABEL_EXPIRES_AT`] has passed are removed whichever
//! polydev made them: a `polydev run` that was `kill -9`ed leaves its container behind with one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Core;
use crate::container_parts::{LABEL_EXPIRES_AT, LABEL_MANAGED, LABEL_NODE, LABEL_SLOT, belongs_to};

/// How often the sweep looks (more often when the grace period is shorter).
const SWEEP_PERIOD: Duration = Duration::from_secs(30);

impl Core {
    pub(super) fn spawn_orphan_sweep(self: &Arc<Self>) {
        let core = self.clone();
        tokio::spawn(async move {
            let mut first_seen: HashMap<String, Instant> = HashMap::new();
            let period = SWEEP_PERIOD.min(core.settings.orphan_grace);
            loop {
                tokio::select! {
                    _ = core.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(period) => {}
                }
                core.sweep_orphans(&mut first_seen).await;
            }
        });
    }

    /// Remove expired containers of this node now (what `polydev run` does at its start).
    pub async fn sweep_expired(&self) {
        self.sweep_orphans(&mut HashMap::new()).await;
    }

    /// One pass of the sweep; `first_seen` remembers when each orphan was first noticed.
    pub(super) async fn sweep_orphans(&self, first_seen: &mut HashMap<String, Instant>) {
        let Ok(containers) = self.engine.list(LABEL_MANAGED, "true").await else {
            return;
        };
        let known: std::collections::HashSet<String> =
            self.tasks.container_ids().into_iter().collect();
        let mut orphans = Vec::new();
        let now_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        for container in containers {
            let expired = container.labels.get(LABEL_NODE) == Some(&self.settings.node)
                && container
                    .labels
                    .get(LABEL_EXPIRES_AT)
                    .and_then(|at| at.parse::<u64>().ok())
                    .is_some_and(|at| at <= now_secs);
            if expired && !known.contains(&container.id) {
                tracing::warn!(container_id = %container.id, "removing a container past its expiry (a polydev run that was killed)");
                let _ = self.engine.remove(&container.id).await;
                continue;
            }
            let ours = belongs_to(
                &container.labels,
                &self.settings.node,
                &self.settings.config.data_dir.to_string_lossy(),
            );
            if !ours || known.contains(&container.id) {
                continue;
            }
            let slot = container.labels.get(LABEL_SLOT).cloned();
            let is_task = match (&slot, &self.pool) {
                (Some(slot), Some(pool)) => pool.slot_is_claimed(slot),
                (Some(_), None) => false,
                (None, _) => true,
            };
            if is_task {
                orphans.push((container.id, slot));
            }
        }
        let now = Instant::now();
        first_seen.retain(|id, _| orphans.iter().any(|(o, _)| o == id));
        for (id, slot) in orphans {
            let since = *first_seen.entry(id.clone()).or_insert(now);
            if now.duration_since(since) < self.settings.orphan_grace {
                continue;
            }
            tracing::warn!(container_id = %id, "removing a task container no task claimed back");
            if let Err(err) = self.engine.remove(&id).await
                && !err.is_not_found()
            {
                tracing::warn!(container_id = %id, error = %err, "cannot remove an orphaned container");
                continue;
            }
            self.forwarder.discard(&id).await;
            if let (Some(pool), Some(slot)) = (&self.pool, &slot) {
                pool.release_slot(slot);
            }
            first_seen.remove(&id);
        }
    }
}
