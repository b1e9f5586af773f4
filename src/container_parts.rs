//! What every polydev container is made with, task or warm: its labels, the user it runs as, its
//! hardening and its network mode.
//!
//! The task lifecycle (`core`) builds task containers and the warm pool
//! (`pool`) builds idle ones from these same parts, so an idle container is exactly what
//! a cold start creates, minus the task. This module names neither of them: it depends only on
//! the configuration and the container-engine port.
//!
//! Invariants:
//! - Labels live in polydev's own namespace (`io.polydev.*`) — never `com.hashicorp.nomad.*`,
//!   which Nomad's docker driver garbage-collects — and never carry a user id or a secret.
//! - [`LABEL_NODE`] and [`LABEL_DATA_DIR`] together say which plugin instance manages a
//!   container; reconciliation and sweeps touch only their own ([`belongs_to`]).
//! - Every container runs as the operator's `security.task_uid:task_gid` ([`task_user`]; by
//!   default 2100000000, an id no host account has, checked at start by [`crate::task_user`])
//!   with every capability dropped and `no-new-privileges` ([`security_options`]).
//! - The task user's home, [`TASK_HOME`], is always an empty tmpfs owned by that uid and gid:
//!   writable whatever uid the image's own user has, and whether or not the root is read-only.
//!   A read-only root also gets a tmpfs `/tmp` (mode 1777).
//! - A task sees Nomad's directories at `/alloc`, `/local` and `/secrets` ([`task_dirs`]), and
//!   `/alloc/logs` read-only: Nomad makes that directory writable by everyone, and root processes
//!   (Nomad's logmon, polydev's log forwarder) open the FIFOs in it, so a task that could replace
//!   them could point those processes at any host file.
//! - A container of a broker-mode provider has no network (`none`): it reaches polydev's
//!   credential broker on its own loopback and nothing else. `security.network_mode` applies
//!   to env-mode providers only ([`network_mode_for`]).

use std::collections::BTreeMap;

use crate::config::{NetworkMode, ProviderConfig, SecurityConfig};
use crate::engine::{ScratchMount, SecurityOptions};

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
/// Label carrying a pool container's slot id (see `pool::slots`).
pub const LABEL_SLOT: &str = "io.polydev.slot";
/// Label carrying the pool key a pool container was made for.
pub const LABEL_POOL_KEY: &str = "io.polydev.pool-key";
/// The task user's home in polydev's images (`HOME`), where the CLIs keep their state and the
/// launch spec's files go.
pub const TASK_HOME: &str = "/home/runtime";

/// The `uid:gid` every task container (and every command exec'd in one) runs as.
pub fn task_user(security: &SecurityConfig) -> String {
    format!("{}:{}", security.task_uid, security.task_gid)
}

/// One of Nomad's task directories as a polydev container gets it: a bind of `host_path` at
/// `container_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDir {
    pub host_path: std::path::PathBuf,
    pub container_path: &'static str,
    pub read_only: bool,
}

/// Nomad's directories of task `task_name` in the alloc dir `alloc_dir`, as every polydev task
/// container gets them (IMAGE isolation), parents before what is mounted inside them:
/// `/alloc` (the alloc's shared dir), `/alloc/logs` read-only over it, `/local` and `/secrets`.
pub fn task_dirs(alloc_dir: &std::path::Path, task_name: &str) -> [TaskDir; 4] {
    let task_dir = alloc_dir.join(task_name);
    [
        TaskDir {
            host_path: alloc_dir.join("alloc"),
            container_path: "/alloc",
            read_only: false,
        },
        TaskDir {
            host_path: alloc_dir.join("alloc/logs"),
            container_path: "/alloc/logs",
            read_only: true,
        },
        TaskDir {
            host_path: task_dir.join("local"),
            container_path: "/local",
            read_only: false,
        },
        TaskDir {
            host_path: task_dir.join("secrets"),
            container_path: "/secrets",
            read_only: false,
        },
    ]
}

/// The labels every polydev container of `provider` carries, made by the plugin instance of
/// `node` and `data_dir`.
pub fn managed_labels(provider: &str, node: &str, data_dir: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_PROVIDER.to_string(), provider.to_string()),
        (LABEL_NODE.to_string(), node.to_string()),
        (LABEL_DATA_DIR.to_string(), data_dir.to_string()),
    ])
}

/// Whether a container with these labels belongs to the plugin instance of `node` and
/// `data_dir`.
pub fn belongs_to(labels: &BTreeMap<String, String>, node: &str, data_dir: &str) -> bool {
    labels.get(LABEL_NODE).map(String::as_str) == Some(node)
        && labels.get(LABEL_DATA_DIR).map(String::as_str) == Some(data_dir)
}

/// The hardening every polydev container gets (task or warm pool): all capabilities dropped, no
/// new privileges, the operator's `security` settings, and the scratch space the task user can
/// write.
pub fn security_options(security: &SecurityConfig) -> SecurityOptions {
    SecurityOptions {
        cap_drop_all: true,
        no_new_privileges: true,
        pids_limit: security.pids_limit,
        read_only_rootfs: security.read_only_rootfs,
        oci_runtime: security.runtime.clone(),
        scratch: scratch_mounts(security),
    }
}

/// The tmpfs mounts of a container: the task user's home (its own, mode 0700; programs may run
/// from it unless the root is read-only, as they could from the image's home before), and with
/// a read-only root, `/tmp`.
fn scratch_mounts(security: &SecurityConfig) -> Vec<ScratchMount> {
    let home = ScratchMount {
        container_path: TASK_HOME.to_string(),
        owner: Some((security.task_uid, security.task_gid)),
        mode: 0o700,
        exec: !security.read_only_rootfs,
    };
    if !security.read_only_rootfs {
        return vec![home];
    }
    let tmp = ScratchMount {
        container_path: "/tmp".to_string(),
        owner: None,
        mode: 0o1777,
        exec: false,
    };
    vec![tmp, home]
}

/// The Docker network mode of `provider`'s containers: none in broker mode, else the
/// operator's `security.network_mode` (`None`: Docker's default bridge).
pub fn network_mode_for(security: &SecurityConfig, provider: &ProviderConfig) -> Option<String> {
    if provider.route().is_some() {
        return Some(NetworkMode::None.as_str().to_string());
    }
    security.network_mode.map(|mode| mode.as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logs_dir_is_read_only_and_mounted_after_its_parent() {
        let dirs = task_dirs(std::path::Path::new("/nomad/alloc/a1"), "web");
        let paths: Vec<_> = dirs.iter().map(|d| d.container_path).collect();
        assert_eq!(paths, ["/alloc", "/alloc/logs", "/local", "/secrets"]);
        let logs = &dirs[1];
        assert!(logs.read_only);
        assert_eq!(
            logs.host_path,
            std::path::Path::new("/nomad/alloc/a1/alloc/logs")
        );
        assert_eq!(dirs.iter().filter(|d| d.read_only).count(), 1);
        assert_eq!(
            dirs[3].host_path,
            std::path::Path::new("/nomad/alloc/a1/web/secrets")
        );
    }

    #[test]
    fn managed_labels_name_the_owner_and_stay_in_polydevs_namespace() {
        let labels = managed_labels("openai", "node-1", "/var/lib/polydev");
        assert!(labels.keys().all(|k| k.starts_with("io.polydev.")));
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[LABEL_PROVIDER], "openai");
        assert!(belongs_to(&labels, "node-1", "/var/lib/polydev"));
        assert!(!belongs_to(&labels, "node-2", "/var/lib/polydev"));
        assert!(!belongs_to(&labels, "node-1", "/srv/polydev"));
        assert!(!belongs_to(&BTreeMap::new(), "node-1", "/var/lib/polydev"));
    }

    #[test]
    fn containers_run_as_the_configured_ids_with_a_home_they_own() {
        let security = SecurityConfig {
            task_uid: 2_100_000_007,
            task_gid: 2_100_000_009,
            ..SecurityConfig::default()
        };
        assert_eq!(task_user(&security), "2100000007:2100000009");
        assert_eq!(
            task_user(&SecurityConfig::default()),
            "2100000000:2100000000"
        );
        let options = security_options(&security);
        assert_eq!(
            options.scratch,
            vec![ScratchMount {
                container_path: "/home/runtime".into(),
                owner: Some((2_100_000_007, 2_100_000_009)),
                mode: 0o700,
                exec: true,
            }]
        );
        let read_only = security_options(&SecurityConfig {
            read_only_rootfs: true,
            ..security
        });
        let paths: Vec<_> = read_only
            .scratch
            .iter()
            .map(|m| (m.container_path.as_str(), m.owner, m.exec))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("/tmp", None, false),
                ("/home/runtime", Some((2_100_000_007, 2_100_000_009)), false),
            ]
        );
    }
}
