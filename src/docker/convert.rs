//! Pure translations between the runtime port's types and Docker Engine API shapes.
//!
//! Nothing here performs I/O, so every rule (limits, security options, log timestamps, stats keys)
//! is unit-tested without a daemon.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::{
    ContainerCreateBody, ContainerStatsResponse, ContainerUpdateBody, HostConfig,
    HostConfigLogConfig,
};
use bytes::Bytes;

use crate::engine::{
    ContainerEvent, ContainerEventKind, ContainerSpec, ResourceLimits, ScratchMount, StatsSample,
};

/// The log driver of task containers: `local` stores raw bytes (json-file would replace invalid
/// UTF-8), keeps partial-line metadata, and supports reading back with `docker logs`.
pub const LOG_DRIVER: &str = "local";

/// A container event of interest, from Docker's `/events` message.
pub fn container_event(message: &bollard::models::EventMessage) -> Option<ContainerEvent> {
    let actor = message.actor.as_ref()?;
    let id = actor.id.clone()?;
    let kind = match message.action.as_deref()? {
        "start" => ContainerEventKind::Start,
        "die" => ContainerEventKind::Die {
            exit_code: actor
                .attributes
                .as_ref()
                .and_then(|a| a.get("exitCode"))
                .and_then(|code| code.parse().ok()),
        },
        "oom" => ContainerEventKind::Oom,
        "destroy" => ContainerEventKind::Destroy,
        _ => return None,
    };
    Some(ContainerEvent { id, kind })
}

/// Build the `POST /containers/create` body. The container keeps stdin open for exactly one
/// attach (the launch spec) and never gets a TTY, so stdout and stderr stay apart.
pub fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let security = &spec.security;
    let mut security_opt = Vec::new();
    if security.no_new_privileges {
        security_opt.push("no-new-privileges".to_string());
    }
    let binds = spec
        .mounts
        .iter()
        .map(|m| {
            let mode = if m.read_only { "ro" } else { "rw" };
            let propagation = if m.receives_host_mounts {
                ",rslave"
            } else {
                ""
            };
            format!("{}:{}:{mode}{propagation}", m.host_path, m.container_path)
        })
        .collect::<Vec<_>>();
    let limits = &spec.limits;
    let host_config = HostConfig {
        binds: (!binds.is_empty()).then_some(binds),
        cap_drop: security.cap_drop_all.then(|| vec!["ALL".to_string()]),
        security_opt: (!security_opt.is_empty()).then_some(security_opt),
        pids_limit: (security.pids_limit > 0).then_some(security.pids_limit),
        readonly_rootfs: Some(security.read_only_rootfs),
        tmpfs: (!security.scratch.is_empty()).then(|| {
            security
                .scratch
                .iter()
                .map(|m| (m.container_path.clone(), tmpfs_options(m)))
                .collect()
        }),
        runtime: security.oci_runtime.clone(),
        privileged: Some(false),
        network_mode: spec.network_mode.clone(),
        log_config: Some(HostConfigLogConfig {
            typ: Some(LOG_DRIVER.to_string()),
            config: Some(HashMap::from([
                ("max-size".to_string(), spec.log_max_size.clone()),
                ("max-file".to_string(), spec.log_max_files.to_string()),
            ])),
        }),
        memory: positive(limits.memory_bytes),
        memory_swap: positive(limits.memory_bytes),
        memory_reservation: positive(limits.memory_reservation_bytes),
        cpu_shares: positive(limits.cpu_shares),
        nano_cpus: positive(limits.nano_cpus),
        cpuset_cpus: (!limits.cpuset_cpus.is_empty()).then(|| limits.cpuset_cpus.clone()),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        user: Some(spec.user.clone()),
        env: Some(spec.env.clone()),
        labels: Some(spec.labels.clone().into_iter().collect()),
        working_dir: spec.work_dir.clone(),
        attach_stdin: Some(true),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Docker's `HostConfig.Tmpfs` options of a scratch mount. Docker adds `noexec` unless told
/// `exec`; `uid`, `gid` and `mode` go to the kernel's tmpfs as they are.
fn tmpfs_options(mount: &ScratchMount) -> String {
    let mut options = String::from("rw,nosuid,nodev");
    if mount.exec {
        options.push_str(",exec");
    }
    if let Some((uid, gid)) = mount.owner {
        options.push_str(&format!(",uid={uid},gid={gid}"));
    }
    options.push_str(&format!(",mode={:04o}", mount.mode));
    options
}

/// Whether Docker's `/info` `SecurityOptions` (`name=seccomp,profile=default`, `name=userns`,
/// ...) say that every container runs in a user namespace of its own: `userns-remap`, or a
/// rootless engine.
pub fn remaps_users(security_options: &[String]) -> bool {
    security_options.iter().any(|option| {
        option
            .split(',')
            .any(|pair| matches!(pair, "name=userns" | "name=rootless"))
    })
}

/// Build the `POST /containers/{id}/update` body: only the fields that change (each costs the
/// engine a cgroup write). Swap is pinned to the memory limit (no swap) so raising the limit
/// never trips cgroup v1's "memory must be below memoryswap" rule. Docker 20.10 ignores
/// `NanoCpus = 0`, so lifting an idle container's CPU quota means setting it to every CPU of
/// the host, which is no limit at all.
pub fn update_body(limits: &ResourceLimits, host_cpus: i64) -> ContainerUpdateBody {
    let nano_cpus = if limits.nano_cpus > 0 {
        limits.nano_cpus
    } else {
        host_cpus.max(1) * 1_000_000_000
    };
    ContainerUpdateBody {
        memory: positive(limits.memory_bytes),
        memory_swap: positive(limits.memory_bytes),
        memory_reservation: positive(limits.memory_reservation_bytes),
        cpu_shares: positive(limits.cpu_shares),
        nano_cpus: Some(nano_cpus),
        cpuset_cpus: (!limits.cpuset_cpus.is_empty()).then(|| limits.cpuset_cpus.clone()),
        ..Default::default()
    }
}

fn positive(value: i64) -> Option<i64> {
    (value > 0).then_some(value)
}

/// Split a `docker logs --timestamps` frame into its timestamp (ns since the epoch) and payload.
///
/// Docker prefixes every frame with an RFC 3339 timestamp with nanoseconds and one space; the
/// payload after it is returned untouched. `None` when the prefix is missing or unparsable.
pub fn split_log_timestamp(frame: &Bytes) -> Option<(i128, Bytes)> {
    let space = frame.iter().take(64).position(|b| *b == b' ')?;
    let text = std::str::from_utf8(&frame[..space]).ok()?;
    let nanos = parse_rfc3339_nanos(text)?;
    Some((nanos, frame.slice(space + 1..)))
}

/// Parse Docker's RFC 3339 timestamps (`2026-11-27T14:37:54.123456789Z`) into ns since the epoch.
pub fn parse_rfc3339_nanos(text: &str) -> Option<i128> {
    let parsed =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(parsed.unix_timestamp_nanos())
}

/// Docker reports "never" as the Go zero time (`0001-01-01T00:00:00Z`); map that to `None`.
pub fn parse_docker_time(text: Option<&str>) -> Option<SystemTime> {
    let nanos = parse_rfc3339_nanos(text?)?;
    if nanos <= 0 {
        return None;
    }
    let nanos = u64::try_from(nanos).ok()?;
    Some(UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// Flatten a stats response into the port's counters (cgroup v1 and v2 alike).
pub fn stats_sample(stats: &ContainerStatsResponse) -> StatsSample {
    let cpu = stats.cpu_stats.as_ref();
    let usage = cpu.and_then(|c| c.cpu_usage.as_ref());
    let throttling = cpu.and_then(|c| c.throttling_data.as_ref());
    let memory = stats.memory_stats.as_ref();
    let online_cpus = cpu
        .and_then(|c| c.online_cpus)
        .filter(|n| *n > 0)
        .or_else(|| {
            usage
                .and_then(|u| u.percpu_usage.as_ref())
                .map(|per_cpu| per_cpu.len() as u32)
        })
        .unwrap_or(1);
    StatsSample {
        read_at: stats
            .read
            .as_deref()
            .and_then(|t| parse_docker_time(Some(t))),
        cpu_total_ns: usage.and_then(|u| u.total_usage).unwrap_or(0),
        cpu_user_ns: usage.and_then(|u| u.usage_in_usermode).unwrap_or(0),
        cpu_kernel_ns: usage.and_then(|u| u.usage_in_kernelmode).unwrap_or(0),
        system_cpu_ns: cpu.and_then(|c| c.system_cpu_usage).unwrap_or(0),
        online_cpus,
        throttled_periods: throttling.and_then(|t| t.throttled_periods).unwrap_or(0),
        throttled_time_ns: throttling.and_then(|t| t.throttled_time).unwrap_or(0),
        memory_usage: memory.and_then(|m| m.usage).unwrap_or(0),
        memory_max_usage: memory.and_then(|m| m.max_usage).filter(|v| *v > 0),
        memory_stats: memory
            .and_then(|m| m.stats.as_ref())
            .map(|s| s.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{BindMount, SecurityOptions};

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "t".into(),
            image: "img".into(),
            user: "1000:1000".into(),
            env: vec!["A=b".into()],
            labels: std::collections::BTreeMap::from([(
                "io.polydev.managed".into(),
                "true".into(),
            )]),
            limits: ResourceLimits {
                memory_bytes: 512 << 20,
                memory_reservation_bytes: 0,
                cpu_shares: 500,
                nano_cpus: 0,
                cpuset_cpus: String::new(),
            },
            mounts: vec![BindMount {
                host_path: "/h".into(),
                container_path: "/c".into(),
                read_only: true,
                receives_host_mounts: false,
            }],
            security: SecurityOptions::default(),
            work_dir: Some("/local".into()),
            network_mode: None,
            log_max_size: "100m".into(),
            log_max_files: 3,
        }
    }

    #[test]
    fn create_body_is_hardened_and_keeps_stdin_for_one_attach() {
        let body = create_body(&spec());
        let host = body.host_config.unwrap();
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_string()])
        );
        assert_eq!(host.pids_limit, Some(512));
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.memory, Some(512 << 20));
        assert_eq!(host.memory_swap, Some(512 << 20));
        assert_eq!(host.memory_reservation, None);
        assert_eq!(host.binds, Some(vec!["/h:/c:ro".to_string()]));
        assert_eq!(host.log_config.unwrap().typ.as_deref(), Some("local"));
        assert_eq!(body.open_stdin, Some(true));
        assert_eq!(body.stdin_once, Some(true));
        assert_eq!(body.tty, Some(false));
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
    }

    #[test]
    fn scratch_mounts_become_tmpfs_options() {
        assert_eq!(create_body(&spec()).host_config.unwrap().tmpfs, None);
        let mut scratch = spec();
        scratch.security.scratch = vec![
            ScratchMount {
                container_path: "/tmp".into(),
                owner: None,
                mode: 0o1777,
                exec: false,
            },
            ScratchMount {
                container_path: "/home/runtime".into(),
                owner: Some((2_100_000_000, 2_100_000_001)),
                mode: 0o700,
                exec: true,
            },
        ];
        let tmpfs = create_body(&scratch).host_config.unwrap().tmpfs.unwrap();
        assert_eq!(tmpfs["/tmp"], "rw,nosuid,nodev,mode=1777");
        assert_eq!(
            tmpfs["/home/runtime"],
            "rw,nosuid,nodev,exec,uid=2100000000,gid=2100000001,mode=0700"
        );
    }

    #[test]
    fn user_namespaces_are_read_from_the_security_options() {
        let options = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!remaps_users(&options(&["name=seccomp,profile=default"])));
        assert!(!remaps_users(&[]));
        assert!(remaps_users(&options(&[
            "name=seccomp,profile=default",
            "name=userns"
        ])));
        assert!(remaps_users(&options(&[
            "name=seccomp,profile=default",
            "name=rootless"
        ])));
        assert!(!remaps_users(&options(&["name=usernsX"])));
    }

    #[test]
    fn updates_lift_the_idle_cpu_quota_and_send_only_what_changes() {
        let limits = ResourceLimits {
            memory_bytes: 512 << 20,
            cpu_shares: 500,
            ..Default::default()
        };
        let body = update_body(&limits, 4);
        assert_eq!(body.nano_cpus, Some(4_000_000_000));
        assert_eq!(body.memory_swap, Some(512 << 20));
        assert_eq!((body.memory_reservation, body.cpuset_cpus), (None, None));
        let capped = ResourceLimits {
            nano_cpus: 500_000_000,
            ..limits
        };
        assert_eq!(update_body(&capped, 4).nano_cpus, Some(500_000_000));
    }

    #[test]
    fn timestamps_split_off_exactly() {
        let frame = Bytes::from_static(b"2026-11-27T14:37:54.123456789Z  two spaces\n");
        let (nanos, payload) = split_log_timestamp(&frame).unwrap();
        assert_eq!(payload, Bytes::from_static(b" two spaces\n"));
        assert_eq!(nanos % 1_000_000_000, 123_456_789);
        assert!(split_log_timestamp(&Bytes::from_static(b"garbage")).is_none());
    }

    #[test]
    fn go_zero_time_is_none() {
        assert_eq!(parse_docker_time(Some("0001-01-01T00:00:00Z")), None);
        assert!(parse_docker_time(Some("2026-11-27T14:37:54.1Z")).is_some());
    }
}
