//! TaskStats: container resource usage in Nomad's terms, one sample per collection interval.
//!
//! The figures follow Nomad's docker driver: CPU percent is the container's share of all host CPU
//! time between two samples, scaled by the online CPUs; ticks convert that percent into MHz of the
//! node's total compute; memory reads cgroup v1 (`rss`, `cache`, `swap`, `max_usage`) or v2
//! (`anon`, `file`) keys. A field is `Some` exactly when it was measured, which becomes Nomad's
//! `measured_fields`.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::stream::BoxStream;

use super::registry::TaskEntry;
use super::{Core, CoreError};
use crate::engine::{EngineError, StatsSample};

/// CPU usage between two samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuUsage {
    pub percent: Option<f64>,
    pub system_mode: Option<f64>,
    pub user_mode: Option<f64>,
    pub total_ticks: Option<f64>,
    pub throttled_periods: Option<u64>,
    pub throttled_time: Option<u64>,
}

/// Memory usage at a sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryUsage {
    pub rss: Option<u64>,
    pub cache: Option<u64>,
    pub swap: Option<u64>,
    pub usage: Option<u64>,
    pub max_usage: Option<u64>,
}

/// One TaskStats sample.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskUsage {
    pub timestamp: SystemTime,
    pub cpu: CpuUsage,
    pub memory: MemoryUsage,
}

/// Turn a sample (and the one before it, if any) into usage figures.
pub fn usage(current: &StatsSample, previous: Option<&StatsSample>, total_mhz: f64) -> TaskUsage {
    let cores = f64::from(current.online_cpus.max(1));
    let share = |now: u64, before: u64, system_now: u64, system_before: u64| -> f64 {
        let delta = now.saturating_sub(before) as f64;
        let system_delta = system_now.saturating_sub(system_before) as f64;
        if delta <= 0.0 || system_delta <= 0.0 {
            0.0
        } else {
            delta / system_delta * cores * 100.0
        }
    };
    let (percent, user_mode, system_mode) = match previous {
        Some(prev) => {
            let sys = (current.system_cpu_ns, prev.system_cpu_ns);
            (
                share(current.cpu_total_ns, prev.cpu_total_ns, sys.0, sys.1),
                share(current.cpu_user_ns, prev.cpu_user_ns, sys.0, sys.1),
                share(current.cpu_kernel_ns, prev.cpu_kernel_ns, sys.0, sys.1),
            )
        }
        None => (0.0, 0.0, 0.0),
    };
    let stat = |key: &str| current.memory_stats.get(key).copied();
    let cgroup_v1 = current.memory_stats.contains_key("rss");
    let memory = if cgroup_v1 {
        MemoryUsage {
            rss: stat("rss"),
            cache: stat("cache"),
            swap: stat("swap"),
            usage: Some(current.memory_usage),
            max_usage: current.memory_max_usage,
        }
    } else {
        MemoryUsage {
            rss: stat("anon"),
            cache: stat("file"),
            swap: None,
            usage: Some(current.memory_usage),
            max_usage: current.memory_max_usage,
        }
    };
    TaskUsage {
        timestamp: SystemTime::now(),
        cpu: CpuUsage {
            percent: Some(percent),
            system_mode: Some(system_mode),
            user_mode: Some(user_mode),
            total_ticks: (total_mhz > 0.0).then(|| percent / 100.0 * total_mhz / cores),
            throttled_periods: Some(current.throttled_periods),
            throttled_time: Some(current.throttled_time_ns),
        },
        memory,
    }
}

/// Sum of all cores' MHz from `/proc/cpuinfo` (0 when unknown), as Nomad's CPU fingerprint does.
pub fn host_total_mhz() -> f64 {
    static TOTAL: OnceLock<f64> = OnceLock::new();
    *TOTAL.get_or_init(|| {
        std::fs::read_to_string("/proc/cpuinfo")
            .map(|text| parse_cpuinfo_mhz(&text))
            .unwrap_or(0.0)
    })
}

fn parse_cpuinfo_mhz(text: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with("cpu MHz"))
        .filter_map(|line| line.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum()
}

impl Core {
    /// Samples of a task's usage every `interval`, ending when the task exits — cleanly, as
    /// Nomad's stats hook expects (an error would be logged at ERROR at every task end); a task
    /// that has exited already gets a stream that ends at once.
    pub fn stats_stream(
        self: &Arc<Self>,
        id: &str,
        interval: Duration,
    ) -> Result<BoxStream<'static, TaskUsage>, CoreError> {
        let task = self.task(id)?;
        if task.container_has_stopped() {
            return Ok(futures::stream::empty().boxed());
        }
        let interval = interval.max(Duration::from_millis(100));
        let state = (self.clone(), task, None::<StatsSample>, true);
        Ok(
            futures::stream::unfold(state, move |(core, task, previous, first)| async move {
                if !first {
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = task.wait_container_stopped() => return None,
                    }
                }
                let sample = core.sample(&task).await?;
                let usage = usage(&sample, previous.as_ref(), host_total_mhz());
                Some((usage, (core, task, Some(sample), false)))
            })
            .boxed(),
        )
    }

    /// One stats sample; `None` once the container is gone or stopped.
    async fn sample(&self, task: &TaskEntry) -> Option<StatsSample> {
        let mut backoff = Duration::from_millis(100);
        loop {
            if task.container_has_stopped() {
                return None;
            }
            match self.engine.stats(task.container_id()).await {
                Ok(sample) => return Some(sample),
                Err(EngineError::NotRunning(_)) | Err(EngineError::NotFound { .. }) => {
                    return None;
                }
                Err(err) => {
                    tracing::debug!(task_id = %task.id, error = %err, "stats sample failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn sample(total: u64, system: u64) -> StatsSample {
        StatsSample {
            cpu_total_ns: total,
            cpu_user_ns: total / 2,
            cpu_kernel_ns: total / 4,
            system_cpu_ns: system,
            online_cpus: 2,
            memory_usage: 100,
            memory_max_usage: Some(150),
            memory_stats: BTreeMap::from([
                ("rss".to_string(), 60),
                ("cache".to_string(), 30),
                ("swap".to_string(), 0),
            ]),
            ..Default::default()
        }
    }

    #[test]
    fn cpu_percent_matches_docker_formula() {
        // 0.5 s of container CPU over 2 s of host time on 2 cores: 50 % of one core.
        let usage = usage(
            &sample(1_500_000_000, 4_000_000_000),
            Some(&sample(1_000_000_000, 2_000_000_000)),
            4000.0,
        );
        assert!((usage.cpu.percent.unwrap() - 50.0).abs() < 1e-9);
        assert!((usage.cpu.total_ticks.unwrap() - 1000.0).abs() < 1e-9);
        assert_eq!(usage.memory.rss, Some(60));
        assert_eq!(usage.memory.max_usage, Some(150));
    }

    #[test]
    fn cgroup_v2_keys_map_to_rss_and_cache() {
        let mut current = sample(0, 0);
        current.memory_stats = BTreeMap::from([("anon".to_string(), 7), ("file".to_string(), 9)]);
        current.memory_max_usage = None;
        let usage = usage(&current, None, 0.0);
        assert_eq!(
            (usage.memory.rss, usage.memory.cache, usage.memory.swap),
            (Some(7), Some(9), None)
        );
        assert_eq!(usage.memory.max_usage, None);
        assert_eq!(usage.cpu.total_ticks, None);
        assert_eq!(usage.cpu.percent, Some(0.0));
    }

    #[test]
    fn cpuinfo_parsing() {
        let text = "processor: 0\ncpu MHz\t\t: 2000.5\nprocessor: 1\ncpu MHz : 1999.5\n";
        assert!((parse_cpuinfo_mhz(text) - 4000.0).abs() < 1e-9);
    }

    proptest! {
        #[test]
        fn percent_is_finite_and_non_negative(a in any::<u64>(), b in any::<u64>(), c in any::<u64>(), d in any::<u64>()) {
            let usage = usage(&sample(a, b), Some(&sample(c, d)), 1000.0);
            let p = usage.cpu.percent.unwrap();
            prop_assert!(p.is_finite() && p >= 0.0);
        }
    }
}
