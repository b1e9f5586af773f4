//! Turning a task into a container: names, labels, mounts, limits, and the launch spec.
//!
//! What every polydev container shares with the warm pool's (labels, user, hardening, network
//! mode) comes from [`crate::container_parts`]; this file adds what only a task has.
//!
//! Invariants:
//! - A task's own labels never override polydev's ([`crate::container_parts::managed_labels`]).
//! - Nomad's alloc layout is bound at the container paths Nomad's env advertises under
//!   IMAGE isolation: `/alloc`, `/local`, `/secrets`, with `/alloc/logs` read-only
//!   ([`crate::container_parts::task_dirs`]); a bind's source is checked not to be a symlink
//!   before the container is created ([`check_alloc_dirs`]).

use std::collections::BTreeMap;

use crate::config::PluginConfig;
use crate::container_parts::{
    LABEL_EXPIRES_AT, managed_labels, network_mode_for, security_options, task_dirs, task_user,
};
use crate::engine::{BindMount, ContainerSpec};

use super::task::TaskSpec;

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
    labels.extend(managed_labels(task.config.provider.name(), node, data_dir));
    labels
}

/// Bind mounts of Nomad's alloc layout (none outside Nomad), from
/// [`crate::container_parts::task_dirs`]: `/alloc/logs` is read-only.
pub fn alloc_mounts(task: &TaskSpec) -> Vec<BindMount> {
    let Some(alloc_dir) = task.alloc_dir.as_deref() else {
        return Vec::new();
    };
    task_dirs(std::path::Path::new(alloc_dir), &task.name)
        .into_iter()
        .map(|dir| BindMount {
            host_path: dir.host_path.to_string_lossy().into_owned(),
            container_path: dir.container_path.into(),
            read_only: dir.read_only,
            receives_host_mounts: false,
        })
        .collect()
}

/// Checks that each of the task's directories is a real directory, not a symlink: Docker
/// follows a symlink in a bind's source, and a name the task could write may be one.
pub fn check_alloc_dirs(task: &TaskSpec) -> Result<(), crate::safe_open::UnsafePath> {
    let Some(alloc_dir) = task.alloc_dir.as_deref() else {
        return Ok(());
    };
    for dir in task_dirs(std::path::Path::new(alloc_dir), &task.name) {
        crate::safe_open::DirHandle::open(&dir.host_path)?;
    }
    Ok(())
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
        user: task_user(security),
        env: Vec::new(),
        labels,
        limits: task.limits.clone(),
        mounts: alloc_mounts(task),
        security: security_options(security),
        work_dir: None,
        network_mode: network_mode_for(security, task.config.provider.settings()),
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
