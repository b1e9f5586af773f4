//! Raising a claimed warm container's limits by writing its cgroup files directly.
//!
//! Why not only `POST /containers/{id}/update`: on Docker 20.10 every update spawns `runc
//! update` through the container's shim, 14–20 ms per call on the development machine, spent
//! across dockerd, containerd, the shim and runc. On a 2-core node a burst of 20 claims queued
//! for 300–470 ms behind those processes, while the same limits written by the plugin (root on
//! the host, like runc) take microseconds. So a claim writes the files runc would write, with the values Docker would
//! compute, and the adapter then records the limits in Docker in the background, so `docker
//! inspect` agrees moments later (that update writes the same values again). Containers of
//! other OCI runtimes (gVisor, VMs) never get here: their limits do not live in the init
//! process's host cgroup, so the adapter reports no cgroup PID for them.
//!
//! Invariants:
//! - Only Docker's `cgroupfs` driver layout is written: a directory named exactly the container
//!   id, inside the cgroup mount. Under the systemd driver the limits are also properties of a
//!   `docker-<id>.scope` unit, which a `systemctl daemon-reload` would put back, so those go
//!   through Docker. A recycled PID's cgroup never names the container, so it is never touched.
//! - Only what Docker itself would accept is written (no quota under 0.01 CPU or above the
//!   host's CPUs, no reservation above the limit); anything else goes to Docker, which refuses
//!   it with its own message.
//! - Any failure (not root, cgroupfs read-only or absent, an unknown layout) is returned to the
//!   caller, which falls back to Docker's update; nothing is half-applied without that fallback.
//! - cgroup v1 memory follows runc: memory+swap may never fall below memory, so when the new
//!   swap limit is above the current memory limit memsw goes first, else memory goes first.
//! - `cpu.weight` (v2) is left to Docker's record: runc's shares-to-weight formula changed
//!   between versions, and a task's weight matters only under contention.

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

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
    #[error("left to Docker: {0}")]
    LeftToDocker(&'static str),
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
        if container_id.len() < 12 || !container_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CgroupError::LeftToDocker("not a full container id"));
        }
        let membership = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
        Cgroups::locate(&membership, cgroup_mounts_of_self(), container_id)
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
            // cgroupfs layout only: `…/<id>`, no `..` (another cgroup namespace's view).
            let path = Path::new(path);
            let named = path.file_name().and_then(|n| n.to_str()) == Some(container_id);
            let plain = path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
            if !named || !plain {
                return Err(not_found());
            }
            let relative = path
                .strip_prefix(&mount.mount.root)
                .map_err(|_| not_found())?;
            Ok(Path::new(&mount.mount.mount_point).join(relative))
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
        check_docker_accepts(update)?;
        let mut writes = Vec::new();
        let quota = update
            .nano_cpus
            .map(|nano| nano * CFS_PERIOD_US / 1_000_000_000);
        match self {
            Cgroups::V1 {
                memory,
                cpu,
                cpuset,
            } => {
                if let Some(limit) = update.memory {
                    let memory_write = (memory.join("memory.limit_in_bytes"), limit.to_string());
                    match update.memory_swap {
                        Some(swap) => {
                            let current = read(&memory.join("memory.limit_in_bytes"))?;
                            let swap_first = swap == -1
                                || current.trim().parse::<i64>().map_or(true, |c| c < swap);
                            let swap_write =
                                (memory.join("memory.memsw.limit_in_bytes"), swap.to_string());
                            if swap_first {
                                writes.extend([swap_write, memory_write]);
                            } else {
                                writes.extend([memory_write, swap_write]);
                            }
                        }
                        None => writes.push(memory_write),
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
                    if let Some(swap) = update.memory_swap {
                        let swap_max = match swap {
                            -1 => "max".to_string(),
                            swap => (swap - limit).max(0).to_string(),
                        };
                        writes.push((dir.join("memory.swap.max"), swap_max));
                    }
                }
                if let Some(reservation) = update.memory_reservation {
                    writes.push((dir.join("memory.low"), reservation.to_string()));
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

/// This process's cgroup mounts, read once: claims are a hot path, and the hierarchies are
/// mounted at boot.
fn cgroup_mounts_of_self() -> &'static [Mount] {
    static MOUNTS: OnceLock<Vec<Mount>> = OnceLock::new();
    MOUNTS.get_or_init(|| {
        mountinfo::of_self()
            .into_iter()
            .filter(|m| matches!(m.fstype.as_str(), "cgroup" | "cgroup2"))
            .collect()
    })
}

/// Files a kernel may lack (no swap accounting): skipped when absent.
fn optional(path: &Path) -> bool {
    matches!(
        path.file_name().and_then(|n| n.to_str()),
        Some("memory.memsw.limit_in_bytes" | "memory.swap.max")
    )
}

/// Docker's own checks on an update that could otherwise pass a cgroup write unnoticed.
fn check_docker_accepts(update: &ContainerUpdateBody) -> Result<(), CgroupError> {
    let host_nano_cpus =
        std::thread::available_parallelism().map_or(1, |n| n.get()) as i64 * 1_000_000_000;
    if let Some(nano) = update.nano_cpus
        && !(10_000_000..=host_nano_cpus).contains(&nano)
    {
        return Err(CgroupError::LeftToDocker(
            "CPU quota outside 0.01 to the host's CPUs",
        ));
    }
    if let Some(memory) = update.memory
        && memory < 6 << 20
    {
        return Err(CgroupError::LeftToDocker(
            "memory limit under Docker's 6 MB minimum",
        ));
    }
    if let (Some(reservation), Some(memory)) = (update.memory_reservation, update.memory)
        && reservation > memory
    {
        return Err(CgroupError::LeftToDocker(
            "memory reservation above the limit",
        ));
    }
    if let (Some(swap), Some(memory)) = (update.memory_swap, update.memory)
        && swap != -1
        && swap < memory
    {
        return Err(CgroupError::LeftToDocker(
            "memory+swap under the memory limit",
        ));
    }
    Ok(())
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

/// Write an existing cgroup file (never create one: a path off cgroupfs fails instead).
fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut file| file.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write {
            path: path.to_path_buf(),
            value: value.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests;
