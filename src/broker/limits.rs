//! The broker's share of the plugin's file descriptors: no task can take what another needs.
//!
//! Every broker connection costs descriptors in the plugin process, and one process has one
//! descriptor table for all tasks. Left alone, one task that opens connections (or CONNECT
//! tunnels) as fast as it can exhausts that table and every other task's broker then fails
//! with "Too many open files". Two bounds close that:
//!
//! - Per task: a task holds at most `max_connections` connections, a tunnel included for as
//!   long as it lasts (see `super::accept_loop`).
//! - Per plugin: each lease *reserves* the descriptors its task could use at most
//!   ([`descriptors_per_task`]) out of a [`DescriptorBudget`] sized from the process's
//!   `RLIMIT_NOFILE`, when it opens. A lease that does not fit is refused (StartTask fails
//!   with the numbers and the fix) instead of being admitted and starving the others later.
//!
//! Why a reservation rather than a shared pool with a per-plugin cap: a shared cap still lets
//! one task take all of it, and a check of `max_connections` × "the most tasks there could be"
//! needs a bound on tasks that the plugin does not have (cold starts are not limited by the
//! pool). Reserving the worst case of each admitted task makes exhaustion impossible by
//! construction, costs nothing per request, and fails loudly and early when the node is
//! configured beyond its descriptor limit. The cost is that reservations are worst cases: with
//! the default `max_connections = 64` a task reserves [`descriptors_per_task`]`(64)` = 200
//! descriptors, so a 65 536 limit admits 322 broker tasks at once and a 1 024 limit only 3 —
//! which is why the plugin raises its soft limit to the hard one at start
//! ([`raise_descriptor_limit`]).
//!
//! The estimate per connection is 3 descriptors: the client's socket, the socket to the API or
//! to an egress destination, and one idle pooled API connection the task's upstream client may
//! keep (its idle pool is capped at `max_connections`). Per task 8 more cover its listener and
//! what the rest of the plugin spends on it (engine connections for wait, stats and exec, a
//! pidfd, a namespace file while binding). [`reserved_for_the_plugin`] keeps a share for
//! everything else (gRPC, the store, Vault, the runtime's own).

use parking_lot::Mutex;
use std::sync::Arc;

/// Descriptors a connection of a task may cost at most: client socket, upstream socket, one
/// idle pooled upstream connection.
pub const DESCRIPTORS_PER_CONNECTION: usize = 3;
/// Descriptors of a task besides its connections: its listener, and the plugin's engine
/// connections, pidfd and namespace file for it.
pub const DESCRIPTORS_PER_TASK: usize = 8;

/// The most descriptors one task's broker can cost.
pub fn descriptors_per_task(max_connections: usize) -> usize {
    DESCRIPTORS_PER_TASK + DESCRIPTORS_PER_CONNECTION * max_connections
}

/// Descriptors kept for the rest of the plugin when the process may open `limit`: a quarter,
/// at least 64 and at most 1024.
pub fn reserved_for_the_plugin(limit: usize) -> usize {
    (limit / 4).clamp(64, 1024)
}

/// A lease did not fit in the budget.
#[derive(Debug, thiserror::Error)]
#[error(
    "the credential broker's descriptor budget is used up: {in_use} of {capacity} descriptors \
     are reserved by running tasks and this task needs {wanted} (broker {{ max_connections }} = \
     {max_connections}: {per_connection} per connection plus {per_task}); the plugin may open \
     {limit} files. Raise the Nomad agent's descriptor limit (systemd LimitNOFILE) or lower \
     broker {{ max_connections }}; the task can start once others end"
)]
pub struct BudgetExhausted {
    pub in_use: usize,
    pub capacity: usize,
    pub wanted: usize,
    pub max_connections: usize,
    pub limit: usize,
    pub per_connection: usize,
    pub per_task: usize,
}

/// The descriptors the brokers of one process may reserve.
#[derive(Debug)]
pub struct DescriptorBudget {
    /// The process's soft `RLIMIT_NOFILE` the budget was sized from.
    limit: usize,
    capacity: usize,
    in_use: Mutex<usize>,
}

impl DescriptorBudget {
    /// A budget for a process that may open `limit` descriptors.
    pub fn for_limit(limit: usize) -> Self {
        DescriptorBudget {
            limit,
            capacity: limit.saturating_sub(reserved_for_the_plugin(limit)),
            in_use: Mutex::new(0),
        }
    }

    /// A budget sized from this process's soft `RLIMIT_NOFILE` now.
    pub fn from_process_limit() -> Self {
        Self::for_limit(current_descriptor_limit())
    }

    /// Descriptors the brokers may reserve in total.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Descriptors reserved now.
    pub fn in_use(&self) -> usize {
        *self.in_use.lock()
    }

    /// Reserve what a task with `max_connections` may cost; released when the reservation
    /// drops.
    pub fn reserve(
        self: &Arc<Self>,
        max_connections: usize,
    ) -> Result<Reservation, BudgetExhausted> {
        let wanted = descriptors_per_task(max_connections);
        let mut in_use = self.in_use.lock();
        if in_use.saturating_add(wanted) > self.capacity {
            return Err(BudgetExhausted {
                in_use: *in_use,
                capacity: self.capacity,
                wanted,
                max_connections,
                limit: self.limit,
                per_connection: DESCRIPTORS_PER_CONNECTION,
                per_task: DESCRIPTORS_PER_TASK,
            });
        }
        *in_use += wanted;
        Ok(Reservation {
            budget: self.clone(),
            amount: wanted,
        })
    }
}

/// Descriptors held for one task's broker until dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<DescriptorBudget>,
    amount: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut in_use = self.budget.in_use.lock();
        *in_use = in_use.saturating_sub(self.amount);
    }
}

/// This process's soft `RLIMIT_NOFILE` (1024, the usual default, if it cannot be read).
pub fn current_descriptor_limit() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
        .unwrap_or(1024)
}

/// What [`raise_descriptor_limit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitRaised {
    pub before: u64,
    pub after: u64,
    pub hard: u64,
}

/// Raise this process's soft `RLIMIT_NOFILE` to its hard limit (no privilege needed), so the
/// brokers' budget is as large as the operator allows. Where the hard limit is unlimited, the
/// kernel's `fs.nr_open` is the most a process may have.
pub fn raise_descriptor_limit() -> Result<LimitRaised, nix::Error> {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
    let (before, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let target = if hard == RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(before)
    } else {
        hard
    };
    if target > before {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
    }
    let (after, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(LimitRaised {
        before,
        after,
        hard,
    })
}

/// [`raise_descriptor_limit`], logging what it set (or why it could not).
pub fn raise_descriptor_limit_logged() {
    match raise_descriptor_limit() {
        Ok(LimitRaised {
            before,
            after,
            hard,
        }) => tracing::info!(
            before,
            after,
            hard,
            "open file limit (RLIMIT_NOFILE) raised from {before} to {after} (hard limit {hard})"
        ),
        Err(err) => tracing::warn!(
            error = %err,
            "cannot raise the open file limit (RLIMIT_NOFILE); the credential broker admits \
             fewer tasks"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_reserves_its_worst_case_and_gives_it_back() {
        let budget = Arc::new(DescriptorBudget::for_limit(1024));
        assert_eq!(budget.capacity(), 1024 - 256);
        let per_task = descriptors_per_task(64);
        assert_eq!(per_task, 8 + 3 * 64);
        let first = budget.reserve(64).unwrap();
        let second = budget.reserve(64).unwrap();
        let third = budget.reserve(64).unwrap();
        assert_eq!(budget.in_use(), 3 * per_task);
        let refused = budget.reserve(64).unwrap_err();
        let message = refused.to_string();
        for needed in [
            "600 of 768",
            "needs 200",
            "max_connections } = 64",
            "may open 1024",
            "LimitNOFILE",
        ] {
            assert!(message.contains(needed), "{needed}: {message}");
        }
        // A smaller task still fits in what is left.
        let small = budget.reserve(50).unwrap();
        drop((first, small));
        assert_eq!(budget.in_use(), 2 * per_task);
        let again = budget.reserve(64).unwrap();
        drop((second, third, again));
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn the_plugin_keeps_a_share_for_itself() {
        assert_eq!(reserved_for_the_plugin(100), 64);
        assert_eq!(reserved_for_the_plugin(1024), 256);
        assert_eq!(reserved_for_the_plugin(65536), 1024);
        assert_eq!(DescriptorBudget::for_limit(10).capacity(), 0);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let raised = raise_descriptor_limit().unwrap();
        assert!(raised.after >= raised.before, "{raised:?}");
        if raised.hard != nix::sys::resource::RLIM_INFINITY {
            assert_eq!(raised.after, raised.hard, "{raised:?}");
        }
        assert_eq!(current_descriptor_limit() as u64, raised.after);
    }
}
