//! Turning a task into a container: names, labels, mounts, limits, and the launch spec.
//!
//! Invariants:
//! - Labels live in polydev's own namespace (`io.polydev.*`) — never `com.hashicorp.nomad.*`,
//!   which Nomad's docker driver garbage-collects — and never carry a user id or a secret.
//! - The container runs as uid 1000 with every capability dropped and `no-new-privileges`.
//! - A container of a broker-mode provider has no network (`none`): it reaches polydev's
//!   credential broker on its own loopback and nothing else. `security.network_mode` applies
//!   to env-mode providers only.
//! - Nomad's alloc layout is bound at the container paths Nomad's env advertises under
//!   IMAGE isolation: `/alloc`, `/local`, `/secrets`.

use std::collections::BTreeMap;

use crate::config::{NetworkMode, PluginConfig, SecurityConfig};
use crate::runtime::{BindMount, ContainerSpec, SecurityOptions};

use super::task::TaskSpec;

/// Label marking every container polydev manages.
pub const LABEL_MANAGED: &str = "io.polydev.managed";
/// Label naming the provider a container was made for.
pub const LABEL_PROVIDER: &str = "io.polydev.provider";
/// Label with the Nomad node (or host) that owns the container.
pub const LABEL_NODE: &str = "io.polydev.node";
/// Label with the owning plugin's `data_dir`: with the node, it says which plugin instance
/// manages the container (reconciliation and the orphan sweep touch only their own).
pub const LABEL_DATA_DIR: &str = "io.polydev.data-dir";
/// Label with the Unix time after which the container may be removed by any polydev sweep
/// (set by `polydev run` only).
pub const LABEL_EXPIRES_AT: &str = "io.polydev.expires-at";
/// uid:gid every task runs as (user `runtime` in the images).
pub const TASK_USER: &str = "1000:1000";

/// Container name for a task: readable in `docker ps`, unique per (re)start.
pub fn container_name(task: &TaskSpec) -> String {
    // Nomad's id is `<alloc>/<task>/<8 random chars>`; the random part keeps restarts distinct.
    let suffix = task.id.rsplit('/').next().unwrap_or_default();
    let alloc_prefix: String = task.alloc_id.chars().take(8).collect();
    let raw = format!("polydev-{}-{}-{}", task.name, alloc_prefix, suffix);
    sanitize_name(&raw)
}

/// Docker accepts `[a-zA-Z0-9][a-zA-Z0-9_.-]*`; replace anything else.
fn sanitize_name(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    cleaned
        .trim_end_matches(['-', '_', '.'])
        .chars()
        .take(200)
        .collect()
}

/// The labels every polydev container carries, plus the task's own extra labels.
pub fn labels(task: &TaskSpec, node: &str, data_dir: &str) -> BTreeMap<String, String> {
    let mut labels = task.config.labels.clone();
    labels.insert(LABEL_MANAGED.into(), "true".into());
    labels.insert(LABEL_PROVIDER.into(), task.config.provider.clone());
    labels.insert(LABEL_NODE.into(), node.to_string());
    labels.insert(LABEL_DATA_DIR.into(), data_dir.to_string());
    labels
}

/// Bind mounts of Nomad's alloc layout (none outside Nomad).
pub fn alloc_mounts(task: &TaskSpec) -> Vec<BindMount> {
    let Some(alloc_dir) = task.alloc_dir.as_deref() else {
        return Vec::new();
    };
    let task_dir = format!("{alloc_dir}/{}", task.name);
    vec![
        BindMount {
            host_path: format!("{alloc_dir}/alloc"),
            container_path: "/alloc".into(),
            read_only: false,
            receives_host_mounts: false,
        },
        BindMount {
            host_path: format!("{task_dir}/local"),
            container_path: "/local".into(),
            read_only: false,
            receives_host_mounts: false,
        },
        BindMount {
            host_path: format!("{task_dir}/secrets"),
            container_path: "/secrets".into(),
            read_only: false,
            receives_host_mounts: false,
        },
    ]
}

/// The hardening every polydev container gets (task or warm pool): all capabilities dropped, no
/// new privileges, and the operator's `security` settings.
pub fn security_options(security: &SecurityConfig) -> SecurityOptions {
    SecurityOptions {
        cap_drop_all: true,
        no_new_privileges: true,
        pids_limit: security.pids_limit,
        read_only_rootfs: security.read_only_rootfs,
        oci_runtime: security.runtime.clone(),
    }
}

/// The Docker network mode of `provider`'s containers: none in broker mode, else the
/// operator's `security.network_mode` (`None`: Docker's default bridge).
pub fn network_mode_for(plugin: &PluginConfig, provider: &str) -> Option<String> {
    let brokered = plugin
        .providers
        .get(provider)
        .is_some_and(|p| p.credential_mode.route().is_some());
    if brokered {
        return Some(NetworkMode::None.as_str().to_string());
    }
    plugin
        .security
        .network_mode
        .map(|mode| mode.as_str().to_string())
}

/// The full container spec of a cold-started task; `expires_after` sets [`LABEL_EXPIRES_AT`].
pub fn task_container(
    task: &TaskSpec,
    plugin: &PluginConfig,
    node: &str,
    expires_after: Option<std::time::Duration>,
) -> ContainerSpec {
    let security = &plugin.security;
    let mut labels = labels(task, node, &plugin.data_dir.to_string_lossy());
    if let Some(after) = expires_after {
        let at = std::time::SystemTime::now() + after;
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        labels.insert(LABEL_EXPIRES_AT.into(), secs.to_string());
    }
    ContainerSpec {
        name: container_name(task),
        image: task.config.image.clone(),
        user: TASK_USER.into(),
        env: Vec::new(),
        labels,
        limits: task.limits.clone(),
        mounts: alloc_mounts(task),
        security: security_options(security),
        work_dir: None,
        network_mode: network_mode_for(plugin, &task.config.provider),
        log_max_size: plugin.container_log.max_size.clone(),
        log_max_files: plugin.container_log.max_files,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_docker_safe() {
        assert_eq!(sanitize_name("polydev-my task/ü-1"), "polydev-my_task__-1");
        assert_eq!(sanitize_name("polydev-x--"), "polydev-x");
    }
}
