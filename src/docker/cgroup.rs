//! Raising a claimed warm container's limits by writing its cgroup files directly.
//!
//! Why not only `POST /containers/{id}/update`: on Docker 20.10 every update spawns `runc
//! update` through the container's shim, about 20 ms of CPU across dockerd, containerd, the shim
//! and runc. On a 2-core node a burst of 20 claims therefore queues for 200–400 ms behind those
//! processes, while the same limits written by the plugin (root on the host, like runc) take
//! microseconds. So a claim writes the files runc would write, with the values Docker would
//! compute, and the adapter then records the limits in Docker in the background, so `docker
//! inspect` agrees moments later (that update writes the same values again).
//!
//! Invariants:
//! - Only a cgroup whose path names the container id is ever written, so a recycled PID can
//!   never make us touch another process's limits.
//! - Any failure (not root, cgroupfs read-only or absent, an unknown layout) is returned to the
//!   caller, which falls back to Docker's update; nothing is half-applied without that fallback.
//! - cgroup v1 memory: the memory+swap limit may never fall below the memory limit, so when
//!   raising, memsw goes first; when lowering, memory goes first.

use std::path::{Path, PathBuf};

use bollard::models::ContainerUpdateBody;

use crate::mountinfo::{self, Mount};

/// Docker's CFS period (µs) when a container's CPU limit is given as `NanoCpus`.
const CFS_PERIOD_US: i64 = 100_000;

/// Why the limits could not be written directly.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("no {controller} cgroup of container {container_id} is mounted on this host")]
    NotFound {
        controller: &'static str,
        container_id: String,
    },
}

/// Where a container's cgroup directories are: one per v1 controller, or the v2 directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    V1 {
        memory: PathBuf,
        cpu: PathBuf,
        cpuset: PathBuf,
    },
    V2(PathBuf),
}

impl Cgroups {
    /// The cgroup directories of process `pid`, which must be container `container_id`'s.
    pub fn of_process(pid: u32, container_id: &str) -> Result<Cgroups, CgroupError> {
        let membership = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
        Cgroups::locate(&membership, &mountinfo::of_self(), container_id)
    }

    /// Resolve `/proc/<pid>/cgroup` lines against `/proc/self/mountinfo`.
    fn locate(membership: &str, mounts: &[Mount], container_id: &str) -> Result<Self, CgroupError> {
        let mounts = cgroup_mounts(mounts);
        let dir_of = |controller: &'static str| -> Result<PathBuf, CgroupError> {
            let not_found = || CgroupError::NotFound {
                controller,
                container_id: container_id.to_string(),
            };
            let (mount, path) = membership
                .lines()
                .filter_map(|line| {
                    let mut fields = line.splitn(3, ':');
                    let (_, list, path) = (fields.next()?, fields.next()?, fields.next()?);
                    let mount = mounts.iter().find(|m| match &m.controllers {
                        Some(controllers) => {
                            list.split(',').any(|c| c == controller)
                                && controllers.contains(&controller)
                        }
                        None => list.is_empty(),
                    })?;
                    Some((mount, path))
                })
                // A v1 hierarchy holding the controller wins over the (then empty) v2 one.
                .min_by_key(|(mount, _)| mount.controllers.is_none())
                .ok_or_else(not_found)?;
            if !path.contains(container_id) {
                return Err(not_found());
            }
            let root = mount.mount.root.as_str();
            let relative = if root == "/" {
                path
            } else {
                path.strip_prefix(root).ok_or_else(not_found)?
            };
            Ok(Path::new(&mount.mount.mount_point).join(relative.trim_start_matches('/')))
        };
        let memory = dir_of("memory")?;
        let v1 = mounts.iter().any(|m| {
            m.controllers
                .as_ref()
                .is_some_and(|c| c.contains(&"memory"))
        });
        if v1 {
            Ok(Cgroups::V1 {
                memory,
                cpu: dir_of("cpu")?,
                cpuset: dir_of("cpuset")?,
            })
        } else {
            Ok(Cgroups::V2(memory))
        }
    }

    /// Write `update`'s limits, in an order the kernel accepts from any previous limits.
    pub fn apply(&self, update: &ContainerUpdateBody) -> Result<(), CgroupError> {
        for (path, value) in self.writes(update)? {
            if path.exists() || !optional(&path) {
                write(&path, &value)?;
            }
        }
        Ok(())
    }

    /// The (file, value) writes for `update`, in order.
    fn writes(&self, update: &ContainerUpdateBody) -> Result<Vec<(PathBuf, String)>, CgroupError> {
        let mut writes = Vec::new();
        let quota = update
            .nano_cpus
            .map(|nano| (nano * CFS_PERIOD_US / 1_000_000_000).max(1000));
        match self {
            Cgroups::V1 {
                memory,
                cpu,
                cpuset,
            } => {
                if let Some(limit) = update.memory {
                    let swap = update.memory_swap.unwrap_or(limit).to_string();
                    let current = read(&memory.join("memory.limit_in_bytes"))?;
                    let raising = current.trim().parse::<i64>().map_or(true, |c| limit > c);
                    let memory_write = (memory.join("memory.limit_in_bytes"), limit.to_string());
                    let swap_write = (memory.join("memory.memsw.limit_in_bytes"), swap);
                    if raising {
                        writes.extend([swap_write, memory_write]);
                    } else {
                        writes.extend([memory_write, swap_write]);
                    }
                }
                if let Some(reservation) = update.memory_reservation {
                    writes.push((
                        memory.join("memory.soft_limit_in_bytes"),
                        reservation.to_string(),
                    ));
                }
                if let Some(shares) = update.cpu_shares {
                    writes.push((cpu.join("cpu.shares"), shares.to_string()));
                }
                if let Some(quota) = quota {
                    writes.push((cpu.join("cpu.cfs_period_us"), CFS_PERIOD_US.to_string()));
                    writes.push((cpu.join("cpu.cfs_quota_us"), quota.to_string()));
                }
                if let Some(cpus) = &update.cpuset_cpus {
                    writes.push((cpuset.join("cpuset.cpus"), cpus.clone()));
                }
            }
            Cgroups::V2(dir) => {
                if let Some(limit) = update.memory {
                    writes.push((dir.join("memory.max"), limit.to_string()));
                    let swap = update.memory_swap.unwrap_or(limit).saturating_sub(limit);
                    writes.push((dir.join("memory.swap.max"), swap.max(0).to_string()));
                }
                if let Some(reservation) = update.memory_reservation {
                    writes.push((dir.join("memory.low"), reservation.to_string()));
                }
                if let Some(shares) = update.cpu_shares {
                    writes.push((dir.join("cpu.weight"), shares_to_weight(shares).to_string()));
                }
                if let Some(quota) = quota {
                    writes.push((dir.join("cpu.max"), format!("{quota} {CFS_PERIOD_US}")));
                }
                if let Some(cpus) = &update.cpuset_cpus {
                    writes.push((dir.join("cpuset.cpus"), cpus.clone()));
                }
            }
        }
        Ok(writes)
    }
}

/// Files a kernel may lack (no swap accounting): skipped when absent.
fn optional(path: &Path) -> bool {
    matches!(
        path.file_name().and_then(|n| n.to_str()),
        Some("memory.memsw.limit_in_bytes" | "memory.swap.max")
    )
}

/// cgroup v1 `cpu.shares` (2..=262144) to v2 `cpu.weight` (1..=10000), as runc converts them.
fn shares_to_weight(shares: i64) -> i64 {
    let shares = shares.clamp(2, 262_144);
    1 + (shares - 2) * 9999 / 262_142
}

/// One mounted cgroup hierarchy.
struct CgroupMount<'a> {
    mount: &'a Mount,
    /// `None` for cgroup2, else the v1 controllers of this hierarchy.
    controllers: Option<Vec<&'a str>>,
}

/// The cgroup filesystems among `mounts`.
fn cgroup_mounts(mounts: &[Mount]) -> Vec<CgroupMount<'_>> {
    mounts
        .iter()
        .filter_map(|mount| {
            let controllers = match mount.fstype.as_str() {
                "cgroup2" => None,
                "cgroup" => Some(
                    mount
                        .super_options
                        .iter()
                        .map(String::as_str)
                        .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                        .collect(),
                ),
                _ => return None,
            };
            Some(CgroupMount { mount, controllers })
        })
        .collect()
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests;
