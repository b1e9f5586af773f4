//! Translations between Nomad's protobuf messages and the core's domain types.
//!
//! Pure functions, and one small filter that keeps state between fingerprints ([`StableIdle`]);
//! every rule Nomad imposes on a message (timestamps always set, measured fields listed,
//! attribute keys and units) lives here and is unit-tested.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{PluginConfig, TaskConfig as PolydevTaskConfig};
use crate::core::{ExitOutcome, Health, HealthState, LogPaths, TaskEvent, TaskSpec, TaskUsage};
use crate::engine::ResourceLimits;
use crate::pb::hashicorp::nomad::plugins::drivers::proto as nomad;
use crate::pb::hashicorp::nomad::plugins::shared::structs::{Attribute, attribute};
use crate::pool_port::PoolStatus;

/// Go's zero time, which Nomad's client accepts where a timestamp is "unset".
const GO_ZERO_TIME_SECS: i64 = -62_135_596_800;

const MIB: i64 = 1024 * 1024;
/// Largest memory a task may be given, in MB (16 TiB; more is a unit mistake, and would overflow
/// into "unlimited" in bytes).
const MAX_MEMORY_MB: i64 = 1 << 24;
/// Docker's largest CPU weight.
const MAX_CPU_SHARES: i64 = 262_144;

/// Build the core's task from Nomad's TaskConfig and the decoded driver config; an error names
/// the resource that is out of range.
pub fn task_spec(
    task: &nomad::TaskConfig,
    config: PolydevTaskConfig,
    plugin: &PluginConfig,
) -> Result<TaskSpec, String> {
    let logs = (!plugin.disable_log_collection)
        .then(|| LogPaths {
            stdout: task.stdout_path.clone(),
            stderr: task.stderr_path.clone(),
        })
        .filter(|paths| {
            let unset = |p: &str| p.is_empty() || p == "/dev/null";
            !(unset(&paths.stdout) && unset(&paths.stderr))
        });
    Ok(TaskSpec {
        id: task.id.clone(),
        name: task.name.clone(),
        alloc_id: task.alloc_id.clone(),
        job_name: task.job_name.clone(),
        namespace: if task.namespace.is_empty() {
            "default".to_string()
        } else {
            task.namespace.clone()
        },
        env: task
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        limits: limits(task.resources.as_ref())?,
        alloc_dir: (!task.alloc_dir.is_empty()).then(|| task.alloc_dir.clone()),
        logs,
        config,
    })
}

/// Nomad's allocated resources as cgroup limits: `memory_max` (when set) is the hard limit and
/// `memory` the soft reservation, as in Nomad's docker driver.
pub fn limits(resources: Option<&nomad::Resources>) -> Result<ResourceLimits, String> {
    let mut limits = ResourceLimits::default();
    let Some(resources) = resources else {
        return Ok(limits);
    };
    let mb = |value: i64, what: &str| -> Result<i64, String> {
        if (0..=MAX_MEMORY_MB).contains(&value) {
            Ok(value * MIB)
        } else {
            Err(format!(
                "task resources: {what} = {value} MB is out of range; give 0 to {MAX_MEMORY_MB} MB"
            ))
        }
    };
    if let Some(linux) = &resources.linux_resources {
        if !(0..=MAX_MEMORY_MB * MIB).contains(&linux.memory_limit_bytes) {
            return Err(format!(
                "task resources: a memory limit of {} bytes is out of range",
                linux.memory_limit_bytes
            ));
        }
        limits.memory_bytes = linux.memory_limit_bytes;
        limits.cpu_shares = linux.cpu_shares;
        limits.cpuset_cpus = linux.cpuset_cpus.clone();
    }
    if let Some(allocated) = &resources.allocated_resources {
        if let Some(memory) = &allocated.memory {
            let (soft, hard) = (
                mb(memory.memory_mb, "memory")?,
                mb(memory.memory_max_mb, "memory_max")?,
            );
            if hard > 0 {
                limits.memory_bytes = hard;
                limits.memory_reservation_bytes = soft;
            } else if soft > 0 {
                limits.memory_bytes = soft;
            }
        }
        if let Some(cpu) = &allocated.cpu
            && limits.cpu_shares == 0
        {
            limits.cpu_shares = cpu.cpu_shares;
        }
    }
    if !(0..=MAX_CPU_SHARES).contains(&limits.cpu_shares) {
        return Err(format!(
            "task resources: cpu = {} is out of range; give 0 to {MAX_CPU_SHARES}",
            limits.cpu_shares
        ));
    }
    Ok(limits)
}

pub fn exit_result(outcome: &ExitOutcome) -> nomad::ExitResult {
    nomad::ExitResult {
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        oom_killed: outcome.oom_killed,
    }
}

pub fn timestamp(at: SystemTime) -> prost_types::Timestamp {
    match at.duration_since(UNIX_EPOCH) {
        Ok(since) => prost_types::Timestamp {
            seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
        },
        Err(_) => zero_timestamp(),
    }
}

pub fn zero_timestamp() -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: GO_ZERO_TIME_SECS,
        nanos: 0,
    }
}

pub fn task_stats(id: &str, usage: &TaskUsage) -> nomad::TaskStatsResponse {
    use nomad::cpu_usage::Fields as CpuField;
    use nomad::memory_usage::Fields as MemField;
    let cpu = &usage.cpu;
    let mut cpu_fields = Vec::new();
    let mut measured_f64 =
        |value: Option<f64>, field: CpuField| value.inspect(|_| cpu_fields.push(field as i32));
    let percent = measured_f64(cpu.percent, CpuField::Percent).unwrap_or(0.0);
    let system_mode = measured_f64(cpu.system_mode, CpuField::SystemMode).unwrap_or(0.0);
    let user_mode = measured_f64(cpu.user_mode, CpuField::UserMode).unwrap_or(0.0);
    let total_ticks = measured_f64(cpu.total_ticks, CpuField::TotalTicks).unwrap_or(0.0);
    if cpu.throttled_periods.is_some() {
        cpu_fields.push(CpuField::ThrottledPeriods as i32);
    }
    if cpu.throttled_time.is_some() {
        cpu_fields.push(CpuField::ThrottledTime as i32);
    }
    let memory = &usage.memory;
    let mut memory_fields = Vec::new();
    let mut measured_u64 =
        |value: Option<u64>, field: MemField| value.inspect(|_| memory_fields.push(field as i32));
    let memory = nomad::MemoryUsage {
        rss: measured_u64(memory.rss, MemField::Rss).unwrap_or(0),
        cache: measured_u64(memory.cache, MemField::Cache).unwrap_or(0),
        swap: measured_u64(memory.swap, MemField::Swap).unwrap_or(0),
        usage: measured_u64(memory.usage, MemField::Usage).unwrap_or(0),
        max_usage: measured_u64(memory.max_usage, MemField::MaxUsage).unwrap_or(0),
        kernel_usage: 0,
        kernel_max_usage: 0,
        measured_fields: memory_fields,
    };
    nomad::TaskStatsResponse {
        stats: Some(nomad::TaskStats {
            id: id.to_string(),
            timestamp: Some(timestamp(usage.timestamp)),
            agg_resource_usage: Some(nomad::TaskResourceUsage {
                cpu: Some(nomad::CpuUsage {
                    system_mode,
                    user_mode,
                    total_ticks,
                    throttled_periods: cpu.throttled_periods.unwrap_or(0),
                    throttled_time: cpu.throttled_time.unwrap_or(0),
                    percent,
                    measured_fields: cpu_fields,
                }),
                memory: Some(memory),
            }),
            resource_usage_by_pid: HashMap::new(),
        }),
    }
}

pub fn task_event(event: TaskEvent) -> nomad::DriverTaskEvent {
    nomad::DriverTaskEvent {
        task_id: event.task_id,
        alloc_id: event.alloc_id,
        task_name: event.task_name,
        timestamp: Some(timestamp(event.timestamp)),
        message: event.message,
        annotations: event.annotations.into_iter().collect(),
    }
}

/// Extra string attributes (the credential sources') on a fingerprint.
pub fn add_string_attributes(
    response: &mut nomad::FingerprintResponse,
    attributes: Vec<(String, String)>,
) {
    for (name, value) in attributes {
        response.attributes.insert(name, string_attr(value));
    }
}

fn string_attr(value: impl Into<String>) -> Attribute {
    Attribute {
        unit: String::new(),
        value: Some(attribute::Value::StringVal(value.into())),
    }
}

fn bool_attr(value: bool) -> Attribute {
    Attribute {
        unit: String::new(),
        value: Some(attribute::Value::BoolVal(value)),
    }
}

/// Idle counts as the fingerprint reports them: a provider's count changes only once two probes
/// in a row agree, so a claim followed by its refill between probes sends no node update.
#[derive(Debug, Default)]
pub struct StableIdle {
    last_probe: BTreeMap<String, usize>,
    reported: BTreeMap<String, usize>,
}

impl StableIdle {
    pub fn observe(&mut self, pools: &BTreeMap<String, PoolStatus>) -> BTreeMap<String, usize> {
        for (provider, status) in pools {
            let agreed = self.last_probe.get(provider) == Some(&status.idle);
            if agreed || !self.reported.contains_key(provider) {
                self.reported.insert(provider.clone(), status.idle);
            }
            self.last_probe.insert(provider.clone(), status.idle);
        }
        self.reported.clone()
    }
}

fn int_attr(value: i64) -> Attribute {
    Attribute {
        unit: String::new(),
        value: Some(attribute::Value::IntVal(value)),
    }
}

/// Fingerprint of one health observation: `driver.polydev.*` attributes and the health state.
pub fn fingerprint(health: &Health, idle: BTreeMap<String, usize>) -> nomad::FingerprintResponse {
    use nomad::fingerprint_response::HealthState as Proto;
    let mut attributes = HashMap::new();
    attributes.insert(
        "driver.polydev.version".to_string(),
        string_attr(env!("CARGO_PKG_VERSION")),
    );
    if let Some(version) = &health.docker_version {
        attributes.insert(
            "driver.polydev.docker.version".to_string(),
            string_attr(version),
        );
    }
    for (provider, present) in &health.images_present {
        attributes.insert(
            format!("driver.polydev.provider.{provider}.image_present"),
            bool_attr(*present),
        );
    }
    for (provider, status) in &health.pools {
        let key = |suffix: &str| format!("driver.polydev.pool.{provider}.{suffix}");
        let reported = idle.get(provider).copied().unwrap_or(status.idle);
        attributes.insert(key("idle"), int_attr(reported as i64));
        attributes.insert(key("target"), int_attr(i64::from(status.target)));
        attributes.insert(key("max"), int_attr(i64::from(status.max)));
        attributes.insert(key("desired"), int_attr(status.desired as i64));
        // An empty value deletes the attribute from the node once the error is gone.
        attributes.insert(
            key("error"),
            string_attr(status.last_error.clone().unwrap_or_default()),
        );
        attributes.insert(
            key("growth_limit"),
            string_attr(status.growth_limit.clone().unwrap_or_default()),
        );
    }
    let health_state = match health.state {
        HealthState::Undetected => Proto::Undetected,
        HealthState::Unhealthy => Proto::Unhealthy,
        HealthState::Healthy => Proto::Healthy,
    };
    nomad::FingerprintResponse {
        attributes,
        health: health_state as i32,
        health_description: health.description.clone(),
        err: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_max_becomes_the_hard_limit() {
        let resources = nomad::Resources {
            allocated_resources: Some(nomad::AllocatedTaskResources {
                cpu: Some(nomad::AllocatedCpuResources { cpu_shares: 500 }),
                memory: Some(nomad::AllocatedMemoryResources {
                    memory_mb: 256,
                    memory_max_mb: 1024,
                }),
                networks: vec![],
            }),
            linux_resources: Some(nomad::LinuxResources {
                memory_limit_bytes: 1024 * MIB,
                cpu_shares: 500,
                cpuset_cpus: "0,1".into(),
                ..Default::default()
            }),
            ports: vec![],
        };
        let limits = limits(Some(&resources)).unwrap();
        assert_eq!(limits.memory_bytes, 1024 * MIB);
        assert_eq!(limits.memory_reservation_bytes, 256 * MIB);
        assert_eq!(limits.cpu_shares, 500);
        assert_eq!(limits.cpuset_cpus, "0,1");
    }

    #[test]
    fn out_of_range_resources_are_refused_not_wrapped() {
        let memory = |memory_mb, memory_max_mb| nomad::Resources {
            allocated_resources: Some(nomad::AllocatedTaskResources {
                memory: Some(nomad::AllocatedMemoryResources {
                    memory_mb,
                    memory_max_mb,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        // 2^43 MB would be 2^63 bytes: an overflow into "unlimited".
        for (mb, max) in [(8_796_093_022_208, 0), (-5, 0), (256, i64::MAX)] {
            let err = limits(Some(&memory(mb, max))).unwrap_err();
            assert!(err.contains("out of range") && err.contains("MB"), "{err}");
        }
        let cpu = nomad::Resources {
            allocated_resources: Some(nomad::AllocatedTaskResources {
                cpu: Some(nomad::AllocatedCpuResources {
                    cpu_shares: 1 << 40,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(limits(Some(&cpu)).unwrap_err().contains("cpu"));
    }

    #[test]
    fn idle_counts_change_only_when_two_probes_agree() {
        let status = |idle| {
            BTreeMap::from([(
                "openai".to_string(),
                PoolStatus {
                    idle,
                    target: 2,
                    ..Default::default()
                },
            )])
        };
        let mut stable = StableIdle::default();
        assert_eq!(stable.observe(&status(2))["openai"], 2);
        // A claim seen by one probe, refilled before the next: nothing changes.
        assert_eq!(stable.observe(&status(1))["openai"], 2);
        assert_eq!(stable.observe(&status(2))["openai"], 2);
        // A lasting change is reported on its second sighting.
        assert_eq!(stable.observe(&status(0))["openai"], 2);
        assert_eq!(stable.observe(&status(0))["openai"], 0);
    }

    #[test]
    fn pool_attributes_carry_the_desired_size_and_what_holds_growth_back() {
        let pools = BTreeMap::from([(
            "openai".to_string(),
            PoolStatus {
                idle: 3,
                target: 2,
                max: 8,
                desired: 8,
                growth_limit: Some("held at max: 20 idle containers wanted".into()),
                ..Default::default()
            },
        )]);
        let health = Health {
            state: HealthState::Healthy,
            description: "Healthy".into(),
            docker_version: None,
            images_present: BTreeMap::new(),
            pools,
        };
        let response = fingerprint(&health, BTreeMap::new());
        let attr = |suffix: &str| {
            response.attributes[&format!("driver.polydev.pool.openai.{suffix}")]
                .value
                .clone()
        };
        assert_eq!(attr("idle"), Some(attribute::Value::IntVal(3)));
        assert_eq!(attr("desired"), Some(attribute::Value::IntVal(8)));
        assert_eq!(attr("max"), Some(attribute::Value::IntVal(8)));
        assert_eq!(
            attr("growth_limit"),
            Some(attribute::Value::StringVal(
                "held at max: 20 idle containers wanted".into()
            ))
        );
        // Sent empty (removed from the node) when nothing holds the pool back.
        assert_eq!(
            attr("error"),
            Some(attribute::Value::StringVal(String::new()))
        );
    }

    /// The shipped jobspecs' affinity names the attribute the fingerprint publishes for their
    /// provider, and the operator compares it as Nomad does (as strings: "1" and above).
    #[test]
    fn shipped_jobspecs_prefer_nodes_by_the_published_idle_attribute() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("nomad");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if !path.to_string_lossy().ends_with(".nomad.hcl") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let setting = |name: &str| {
                text.lines()
                    .map(str::trim)
                    .find_map(|line| line.strip_prefix(name)?.trim_start().strip_prefix('='))
                    .map(|value| value.trim().trim_matches('"').to_string())
                    .unwrap_or_else(|| panic!("{} has no {name}", path.display()))
            };
            let provider = setting("provider");
            let health = Health {
                state: HealthState::Healthy,
                description: String::new(),
                docker_version: None,
                images_present: BTreeMap::new(),
                pools: BTreeMap::from([(provider.clone(), PoolStatus::default())]),
            };
            let published = fingerprint(&health, BTreeMap::new());
            let attribute = setting("attribute");
            let name = attribute
                .strip_prefix("${attr.")
                .and_then(|rest| rest.strip_suffix('}'))
                .unwrap_or_else(|| panic!("{}: {attribute}", path.display()));
            assert_eq!(name, format!("driver.polydev.pool.{provider}.idle"));
            assert!(published.attributes.contains_key(name), "{name}");
            assert_eq!(
                (setting("operator"), setting("value")),
                (">=".into(), "1".into())
            );
            checked += 1;
        }
        assert_eq!(checked, 3, "codex, claude and gemini");
    }

    #[test]
    fn unset_times_are_go_zero_time() {
        assert_eq!(zero_timestamp().seconds, GO_ZERO_TIME_SECS);
        assert_eq!(timestamp(UNIX_EPOCH).seconds, 0);
    }

    #[test]
    fn stats_always_have_timestamp_and_aggregate_usage() {
        let usage = TaskUsage {
            timestamp: SystemTime::now(),
            cpu: Default::default(),
            memory: Default::default(),
        };
        let stats = task_stats("t", &usage).stats.unwrap();
        assert!(stats.timestamp.is_some());
        let agg = stats.agg_resource_usage.unwrap();
        assert!(agg.cpu.is_some() && agg.memory.is_some());
    }
}
