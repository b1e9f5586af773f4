//! The registry of tasks this plugin process knows, keyed by Nomad's task id.
//!
//! Invariants:
//! - An id is inserted once (StartTask or RecoverTask) and removed only by DestroyTask.
//! - A task's exit is published exactly once through a `watch` channel, so any number of WaitTask
//!   calls — before, during or after the exit, concurrently — see the same [`ExitOutcome`].
//! - The lock is never held across an `.await`.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::task::{DriverState, ExitOutcome};
use crate::broker::BrokerLease;
use crate::pool_port::PoolHold;

/// One known task.
pub struct TaskEntry {
    pub id: String,
    pub name: String,
    pub alloc_id: String,
    pub state: DriverState,
    pub started_at: SystemTime,
    /// Cancels this task's background work (waiter, log pump) without touching the container.
    pub background: CancellationToken,
    /// The task's credential broker while it serves (broker-mode providers).
    broker: Mutex<Option<BrokerLease>>,
    /// The task's count in its pool and its slot, given back when the task is destroyed.
    pool_hold: Mutex<Option<PoolHold>>,
    /// Nomad asked for the task to stop or be signalled (StopTask, SignalTask, DestroyTask):
    /// a death by signal is then not the engine's doing.
    stop_requested: std::sync::atomic::AtomicBool,
    /// Set when the container has stopped (the exit may still wait for the log pump).
    container_stopped: watch::Sender<bool>,
    exit: watch::Sender<Option<(ExitOutcome, SystemTime)>>,
}

impl TaskEntry {
    pub fn new(
        id: String,
        name: String,
        alloc_id: String,
        state: DriverState,
        started_at: SystemTime,
        parent: &CancellationToken,
    ) -> Self {
        TaskEntry {
            id,
            name,
            alloc_id,
            state,
            started_at,
            background: parent.child_token(),
            broker: Mutex::new(None),
            pool_hold: Mutex::new(None),
            stop_requested: std::sync::atomic::AtomicBool::new(false),
            container_stopped: watch::Sender::new(false),
            exit: watch::Sender::new(None),
        }
    }

    pub fn container_id(&self) -> &str {
        &self.state.container_id
    }

    /// Keep the task's broker lease (it serves until [`TaskEntry::close_broker`] or drop).
    pub fn set_broker(&self, lease: BrokerLease) {
        *self.broker.lock() = Some(lease);
    }

    /// Keep the task's hold on its pool (released by [`TaskEntry::release_pool_hold`] or drop).
    pub fn set_pool_hold(&self, hold: Option<PoolHold>) {
        *self.pool_hold.lock() = hold;
    }

    /// Give the task's count and slot back to its pool (destroy); idempotent.
    pub fn release_pool_hold(&self) {
        let hold = self.pool_hold.lock().take();
        drop(hold);
    }

    /// Stop the task's credential broker (stop, exit, destroy); idempotent.
    pub fn close_broker(&self) {
        if let Some(lease) = self.broker.lock().take() {
            lease.close();
        }
    }

    /// Nomad asked to stop or signal the task.
    pub fn mark_stop_requested(&self) {
        self.stop_requested
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn stop_requested(&self) -> bool {
        self.stop_requested
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Record that the container has stopped (before its output is fully forwarded).
    pub fn mark_container_stopped(&self) {
        self.container_stopped.send_replace(true);
    }

    pub fn container_has_stopped(&self) -> bool {
        *self.container_stopped.borrow()
    }

    /// Wait until the container has stopped — what StopTask's timeout is about.
    pub async fn wait_container_stopped(&self) {
        let mut rx = self.container_stopped.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we borrow `self`.
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// Record the exit; later calls are ignored (the first observation wins).
    pub fn publish_exit(&self, outcome: ExitOutcome) {
        self.mark_container_stopped();
        self.exit.send_if_modified(|slot| {
            if slot.is_some() {
                return false;
            }
            *slot = Some((outcome, SystemTime::now()));
            true
        });
    }

    /// The exit and when it was observed, if the task has ended.
    pub fn exit(&self) -> Option<(ExitOutcome, SystemTime)> {
        self.exit.borrow().clone()
    }

    /// Wait until the task has ended.
    pub async fn wait_exit(&self) -> (ExitOutcome, SystemTime) {
        let mut rx = self.exit.subscribe();
        loop {
            if let Some(exit) = rx.borrow_and_update().clone() {
                return exit;
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self`, so this cannot happen while we borrow `self`.
                unreachable!("exit sender dropped while its entry is alive");
            }
        }
    }
}

/// Thread-safe map of task id → entry.
#[derive(Default, Clone)]
pub struct TaskRegistry {
    inner: Arc<Mutex<HashMap<String, Arc<TaskEntry>>>>,
}

impl TaskRegistry {
    /// Insert a new entry; returns the existing one instead if the id is already known.
    pub fn insert(&self, entry: TaskEntry) -> Result<Arc<TaskEntry>, Arc<TaskEntry>> {
        let mut map = self.inner.lock();
        if let Some(existing) = map.get(&entry.id) {
            return Err(existing.clone());
        }
        let entry = Arc::new(entry);
        map.insert(entry.id.clone(), entry.clone());
        Ok(entry)
    }

    pub fn get(&self, id: &str) -> Option<Arc<TaskEntry>> {
        self.inner.lock().get(id).cloned()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.inner.lock().contains_key(id)
    }

    pub fn remove(&self, id: &str) -> Option<Arc<TaskEntry>> {
        self.inner.lock().remove(id)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Container ids of every known task.
    pub fn container_ids(&self) -> Vec<String> {
        self.inner
            .lock()
            .values()
            .map(|e| e.container_id().to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, root: &CancellationToken) -> TaskEntry {
        TaskEntry::new(
            id.into(),
            "t".into(),
            "a".into(),
            DriverState {
                container_id: format!("c-{id}"),
                provider: "openai".into(),
                namespace: "default".into(),
                user_id: None,
                started_at_unix_nanos: 0,
                logs: None,
                redacted_variables: vec![],
                slot: None,
                broker_port: None,
                alloc_logs_read_only: Some(false),
            },
            SystemTime::now(),
            root,
        )
    }

    #[tokio::test]
    async fn waiters_before_and_after_exit_see_the_first_outcome() {
        let root = CancellationToken::new();
        let registry = TaskRegistry::default();
        let task = registry.insert(entry("a/t/1", &root)).ok().unwrap();
        assert!(registry.insert(entry("a/t/1", &root)).is_err());
        let early = {
            let task = task.clone();
            tokio::spawn(async move { task.wait_exit().await.0 })
        };
        task.publish_exit(ExitOutcome::from_container(3, false));
        task.publish_exit(ExitOutcome::from_container(0, false));
        assert_eq!(early.await.unwrap().exit_code, 3);
        assert_eq!(task.wait_exit().await.0.exit_code, 3);
        assert_eq!(registry.container_ids(), vec!["c-a/t/1".to_string()]);
        assert!(registry.remove("a/t/1").is_some());
        assert!(registry.is_empty());
    }
}
