//! Task events for Nomad's `TaskEvents` stream ("claimed warm container", "pool empty: cold
//! start", failures of background work).
//!
//! Invariant: publishing never blocks and never fails; a subscriber that falls behind loses the
//! oldest events (they are informational), never the stream.

use std::collections::BTreeMap;
use std::time::SystemTime;

use tokio::sync::broadcast;

/// Capacity of the broadcast ring; slow subscribers skip older events past this.
const EVENT_BUFFER: usize = 256;

/// One event about one task, routed by Nomad through `(alloc_id, task_name)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    pub task_id: String,
    pub alloc_id: String,
    pub task_name: String,
    pub timestamp: SystemTime,
    pub message: String,
    pub annotations: BTreeMap<String, String>,
}

/// Fan-out of task events to every open `TaskEvents` stream.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<TaskEvent>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            sender: broadcast::Sender::new(EVENT_BUFFER),
        }
    }
}

impl EventBus {
    /// Publish an event; dropped silently when nobody listens.
    pub fn publish(&self, event: TaskEvent) {
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<TaskEvent> {
        self.sender.subscribe()
    }
}
