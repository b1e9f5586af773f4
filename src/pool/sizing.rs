//! How big a pool should be right now, and how many containers one refill pass may start.
//!
//! [`plan`] is pure: the refiller gives it the pool's settings, its counts, the demand estimate
//! ([`super::demand`]) and the node's available memory, and acts on the answer.
//!
//! - **desired** idle containers = the larger of `target` and the recent burst peak, cut to what
//!   `max` leaves beside the running tasks (`max - in_use`). The floor is `target`; the ceiling
//!   is `max` containers of the provider, idle and running together.
//! - **create**: enough to reach `desired` counting creations in flight, at most
//!   `refill_parallelism` at a time, and only as many as the node's memory takes: each new idle
//!   container needs its `idle_memory` in `MemAvailable` on top of [`MEMORY_SAFETY_MARGIN`] kept
//!   free for tasks.
//! - **shrink_to**: the pool keeps at least `max(desired, target)` idle containers; the refiller
//!   removes idle containers above that once they are older than `scale_down_after`, oldest
//!   first.
//! - **limits**: why the pool holds fewer than it wants (`max`, memory), for the fingerprint
//!   (`driver.polydev.pool.<provider>.growth_limit`). Growth never blocks a claim or a cold start:
//!   a pool held back just leaves tasks to start cold, as an empty pool does.

/// Memory kept free for tasks when the pool considers another idle container: room for one
/// task at the seed's 512 MB, so the pool never takes the last of the node's memory.
pub const MEMORY_SAFETY_MARGIN: u64 = 512 << 20;

/// One pool's settings, as sizing needs them.
#[derive(Debug, Clone, Copy)]
pub struct Sizing {
    pub target: usize,
    pub max: usize,
    pub refill_parallelism: usize,
    pub idle_memory_bytes: u64,
}

/// One pool's containers now.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub idle: usize,
    pub creating: usize,
    pub in_use: usize,
}

/// Why a pool holds fewer idle containers than it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrowthLimit {
    /// `max` leaves no room for what demand asks.
    Max {
        wanted: usize,
        max: usize,
        in_use: usize,
    },
    /// The node's available memory leaves no room for another idle container.
    Memory {
        available: u64,
        idle_memory: u64,
        margin: u64,
    },
}

impl GrowthLimit {
    /// A sentence for the operator, naming the setting to change.
    pub fn describe(&self, provider: &str) -> String {
        match self {
            GrowthLimit::Max {
                wanted,
                max,
                in_use,
            } => format!(
                "held at max: {wanted} idle containers wanted, but max = {max} leaves room for {} \
                 beside {in_use} running tasks; tasks beyond that start cold. Raise \
                 pool \"{provider}\" {{ max }} if the node can take more",
                max.saturating_sub(*in_use)
            ),
            GrowthLimit::Memory {
                available,
                idle_memory,
                margin,
            } => format!(
                "held by memory: the node has {} MiB available (MemAvailable), and another idle \
                 container needs its idle_memory of {} MiB plus {} MiB kept free for tasks; no \
                 idle container is added until memory frees up (tasks start cold meanwhile). \
                 Lower pool \"{provider}\" {{ idle_memory }} or add memory",
                available >> 20,
                idle_memory >> 20,
                margin >> 20
            ),
        }
    }
}

/// What one refill pass should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Idle containers the pool aims for now.
    pub desired: usize,
    /// Creations to start in this pass.
    pub create: usize,
    /// Idle containers older than `scale_down_after` above this count are removed.
    pub shrink_to: usize,
    pub limits: Vec<GrowthLimit>,
}

/// Plan a pass: see the module docs. `mem_available` is the node's `MemAvailable` in bytes, or
/// `None` when it cannot be read (then memory holds nothing back).
pub fn plan(sizing: Sizing, counts: Counts, peak: usize, mem_available: Option<u64>) -> Plan {
    let wanted = sizing.target.max(peak);
    let room = sizing.max.saturating_sub(counts.in_use);
    let desired = wanted.min(room);
    let mut limits = Vec::new();
    if wanted > room {
        limits.push(GrowthLimit::Max {
            wanted,
            max: sizing.max,
            in_use: counts.in_use,
        });
    }
    let missing = desired.saturating_sub(counts.idle + counts.creating);
    let lanes = sizing.refill_parallelism.saturating_sub(counts.creating);
    let mut create = missing.min(lanes);
    if let Some(available) = mem_available
        && missing > 0
    {
        let fit = available
            .saturating_sub(MEMORY_SAFETY_MARGIN)
            .checked_div(sizing.idle_memory_bytes)
            .unwrap_or(u64::MAX);
        if fit < missing as u64 {
            create = create.min(fit as usize);
            limits.push(GrowthLimit::Memory {
                available,
                idle_memory: sizing.idle_memory_bytes,
                margin: MEMORY_SAFETY_MARGIN,
            });
        }
    }
    Plan {
        desired,
        create,
        shrink_to: desired.max(sizing.target),
        limits,
    }
}

/// `MemAvailable` of `/proc/meminfo`'s text, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))?;
    let mut words = line.split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn sizing() -> Sizing {
        Sizing {
            target: 2,
            max: 32,
            refill_parallelism: 2,
            idle_memory_bytes: 256 * MIB,
        }
    }

    fn counts(idle: usize, creating: usize, in_use: usize) -> Counts {
        Counts {
            idle,
            creating,
            in_use,
        }
    }

    #[test]
    fn without_demand_the_pool_keeps_its_target() {
        let plan = plan(sizing(), counts(0, 0, 0), 0, None);
        assert_eq!((plan.desired, plan.create, plan.shrink_to), (2, 2, 2));
        assert!(plan.limits.is_empty());
        let full = super::plan(sizing(), counts(2, 0, 5), 1, None);
        assert_eq!((full.desired, full.create), (2, 0));
    }

    #[test]
    fn a_burst_grows_the_pool_two_creations_at_a_time() {
        let plan = plan(sizing(), counts(0, 0, 20), 20, None);
        assert_eq!(plan.desired, 12, "max 32 leaves 12 beside 20 tasks");
        assert_eq!(plan.create, 2, "refill_parallelism");
        assert_eq!(
            plan.limits,
            vec![GrowthLimit::Max {
                wanted: 20,
                max: 32,
                in_use: 20
            }]
        );
        let described = plan.limits[0].describe("openai");
        assert!(described.contains("max = 32"), "{described}");
        assert!(described.contains("pool \"openai\" { max }"), "{described}");
        // Once the tasks are gone the whole burst fits.
        let later = super::plan(sizing(), counts(12, 2, 0), 20, None);
        assert_eq!((later.desired, later.create), (20, 0), "both lanes busy");
        assert!(later.limits.is_empty());
    }

    #[test]
    fn the_target_stays_the_floor_when_shrinking() {
        let quiet = plan(sizing(), counts(20, 0, 0), 0, None);
        assert_eq!((quiet.desired, quiet.create, quiet.shrink_to), (2, 0, 2));
        // Tasks filling max cut desired, but scale-down never goes below target.
        let busy = plan(sizing(), counts(5, 0, 31), 0, None);
        assert_eq!((busy.desired, busy.shrink_to), (1, 2));
    }

    #[test]
    fn memory_holds_back_creations_and_says_so() {
        // 700 MiB available: 512 kept free leaves 188, less than one 256 MiB idle container.
        let short = plan(sizing(), counts(0, 0, 0), 10, Some(700 * MIB));
        assert_eq!((short.desired, short.create), (10, 0));
        let described = short.limits[0].describe("openai");
        for needed in [
            "700 MiB available",
            "idle_memory of 256 MiB",
            "512 MiB kept free",
        ] {
            assert!(described.contains(needed), "{described}");
        }
        // 900 MiB: one fits (512 + 256 <= 900 < 512 + 2 x 256), not the ten wanted.
        let one = plan(sizing(), counts(0, 0, 0), 10, Some(900 * MIB));
        assert_eq!(one.create, 1);
        assert!(matches!(one.limits[0], GrowthLimit::Memory { .. }));
        // Plenty: no limit.
        let plenty = plan(sizing(), counts(0, 0, 0), 10, Some(64 << 30));
        assert_eq!(plenty.create, 2);
        assert!(plenty.limits.is_empty());
        // Nothing to create: memory is not even looked at.
        let full = plan(sizing(), counts(2, 0, 0), 0, Some(0));
        assert!(full.limits.is_empty());
    }

    #[test]
    fn mem_available_is_read_from_meminfo() {
        let text =
            "MemTotal:       24684000 kB\nMemFree:  313000 kB\nMemAvailable:   23782400 kB\n";
        assert_eq!(mem_available(text), Some(23_782_400 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: lots kB\n"), None);
        assert_eq!(mem_available("MemAvailable: 5 MB\n"), None);
    }
}
