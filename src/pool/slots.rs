//! Slots: how a container started before its task is known still gets the task's directories.
//!
//! Docker cannot add a bind mount to a running container, yet Nomad's `/alloc`, `/local` and
//! `/secrets` are only known at StartTask. So every pool container is created with three binds
//! from an empty per-container *slot* directory on the host (`<data_dir>/slots/<id>/{alloc,local,
//! secrets}`) with `rslave` propagation. At claim, polydev bind-mounts the task's real
//! directories onto the slot's on the host, and the mounts propagate into the container.
//!
//! For propagation to work the slots root must be a *shared* mount in a peer group of its own:
//! [`SlotRoot::prepare`] bind-mounts it onto itself, and if that mount shares a peer group with
//! another (on systemd hosts every bind joins `/`'s), makes it private and then shared again. It
//! stays so across plugin restarts.
//!
//! Each task directory reaches the slot through a private *staging* copy
//! (`bind_through_staging`), never by a bind of the host directory straight into the slot: on a
//! host whose mounts are shared such a bind would be a peer of the host's own alloc dir, and what
//! polydev mounts or unmounts in the slot would happen there too. The staging copy is also where
//! `/alloc/logs` is made read-only ([`crate::container_parts::task_dirs`]), since a read-only flag
//! set by a remount does not reach the copies a mount propagates to: the copy that reaches the
//! container is cloned from a mount that is already read-only.
//!
//! Invariants:
//! - The slots root and every slot are `0700` root: a slot holds a running task's `/secrets`.
//! - Every directory mounted, as source or as target, is opened without following a final
//!   symlink and mounted through its descriptor ([`crate::safe_open::DirHandle`]): the task's
//!   alloc dir is writable by the alloc's tasks.
//! - A slot's `claimed` marker is written before any task directory is mounted into it, so after
//!   a crash a slot with task data is never mistaken for an idle one.
//! - [`SlotRoot::release`] detaches every mount of a slot before deleting its directory; it never
//!   follows a mount into the task's directories.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::container_parts::task_dirs;
use crate::engine::BindMount;
use crate::safe_open::{DirHandle, UnsafePath};

/// The directories a slot binds into its container, as (slot subdir, container path); what
/// [`task_dirs`] mounts inside them (`/alloc/logs`) arrives with the claim.
const SLOT_DIRS: [(&str, &str); 3] = [
    ("alloc", "/alloc"),
    ("local", "/local"),
    ("secrets", "/secrets"),
];

/// Where a read-only mount is made before it is bound into the slot.
const STAGING: &str = "staging";

/// Mode of the slots root and of every slot directory.
const PRIVATE_DIR: u32 = 0o700;

/// Marker file of a slot whose container belongs to a task.
const CLAIMED: &str = "claimed";

/// Errors preparing or using slots.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("slot directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot {action} {path}: {source} (the plugin must run as root to hand task directories \
         to warm containers)"
    )]
    Mount {
        action: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
    #[error(transparent)]
    Unsafe(#[from] UnsafePath),
}

/// `<data_dir>/slots`.
#[derive(Debug, Clone)]
pub struct SlotRoot {
    root: PathBuf,
}

impl SlotRoot {
    pub fn new(data_dir: &Path) -> Self {
        SlotRoot {
            root: data_dir.join("slots"),
        }
    }

    /// Create the root and make it a shared mount (idempotent).
    pub fn prepare(&self) -> Result<(), SlotError> {
        create_private_dir(&self.root)?;
        let mounts = crate::mountinfo::of_self();
        if !is_mount_point(&mounts, &self.root) {
            remount(
                Some(&self.root),
                &self.root,
                MsFlags::MS_BIND,
                "bind-mount onto itself",
            )?;
        }
        if has_own_peer_group(&crate::mountinfo::of_self(), &self.root) {
            return Ok(());
        }
        // Leave whatever peer group the bind joined (on systemd hosts `/`'s, so mounts made in
        // a slot would reach the host's own directories), then start one of its own.
        remount(None, &self.root, MsFlags::MS_PRIVATE, "make private")?;
        remount(None, &self.root, MsFlags::MS_SHARED, "make shared")
    }

    pub fn path(&self, slot: &str) -> PathBuf {
        self.root.join(slot)
    }

    /// Create an empty slot and return the binds its container is created with.
    pub fn create(&self, slot: &str) -> Result<Vec<BindMount>, SlotError> {
        let dir = self.path(slot);
        create_private_dir(&dir)?;
        let mut binds = Vec::with_capacity(SLOT_DIRS.len());
        for (sub, container_path) in SLOT_DIRS {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(|source| SlotError::Io {
                path: path.clone(),
                source,
            })?;
            binds.push(BindMount {
                host_path: path.to_string_lossy().into_owned(),
                container_path: container_path.to_string(),
                read_only: false,
                receives_host_mounts: true,
            });
        }
        Ok(binds)
    }

    /// Whether the slot holds (or held) a task.
    pub fn is_claimed(&self, slot: &str) -> bool {
        self.path(slot).join(CLAIMED).exists()
    }

    /// Whether the slot's directory exists at all.
    pub fn exists(&self, slot: &str) -> bool {
        self.path(slot).is_dir()
    }

    /// Mark the slot claimed, then mount the task's directories into it: each of
    /// [`task_dirs`] at the slot path of its container path, read-only where it says so.
    pub fn attach(&self, slot: &str, alloc_dir: &str, task_name: &str) -> Result<(), SlotError> {
        let dir = self.path(slot);
        std::fs::write(dir.join(CLAIMED), task_name).map_err(|source| SlotError::Io {
            path: dir.join(CLAIMED),
            source,
        })?;
        for task_dir in task_dirs(Path::new(alloc_dir), task_name) {
            let source = DirHandle::open(&task_dir.host_path)?;
            let target = dir.join(task_dir.container_path.trim_start_matches('/'));
            let staging = dir.join(STAGING);
            let bound = bind_through_staging(&source, &staging, &target, task_dir.read_only);
            detach_all(&staging);
            let _ = std::fs::remove_dir(&staging);
            bound?;
        }
        Ok(())
    }

    /// Whether the container whose init process is `init_pid` sees every read-only task
    /// directory ([`task_dirs`]) mounted read-only: the claim's mounts reached it. A container
    /// whose slot no longer propagates (its slots root was unmounted or remade since it was
    /// created) would otherwise run the task without them.
    pub fn reached_container(init_pid: u32) -> bool {
        let mounts = crate::mountinfo::of_pid(init_pid);
        // Only the container side of task_dirs matters here, which no host path changes.
        task_dirs(Path::new("/"), "")
            .iter()
            .filter(|dir| dir.read_only)
            .all(|dir| {
                mounts
                    .iter()
                    .rev()
                    .find(|m| m.mount_point == dir.container_path)
                    .is_some_and(|m| m.options.iter().any(|o| o == "ro"))
            })
    }

    /// Mark the slot claimed without mounting anything (tasks outside Nomad).
    pub fn mark_claimed(&self, slot: &str) -> Result<(), SlotError> {
        let marker = self.path(slot).join(CLAIMED);
        std::fs::write(&marker, "").map_err(|source| SlotError::Io {
            path: marker,
            source,
        })
    }

    /// Unmount the task's directories (if mounted) and delete the slot. Idempotent.
    pub fn release(&self, slot: &str) {
        let dir = self.path(slot);
        for sub in SLOT_DIRS.map(|(sub, _)| sub).into_iter().chain([STAGING]) {
            let target = dir.join(sub);
            // A detach takes what is mounted inside (`alloc/logs`) with it.
            detach_all(&target);
            let _ = std::fs::remove_dir(&target);
        }
        let _ = std::fs::remove_file(dir.join(CLAIMED));
        if let Err(err) = std::fs::remove_dir(&dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(slot = %dir.display(), error = %err, "cannot remove slot directory");
        }
    }

    /// Every slot id present on disk.
    pub fn list(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// Creates `dir` (and its parents) and makes it `0700`, also when it already existed with a
/// wider mode (slots of earlier versions were `0755`).
fn create_private_dir(dir: &Path) -> Result<(), SlotError> {
    let io = |source| SlotError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
        .map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR)).map_err(io)
}

/// Bind-mounts the directory `source` onto the directory `target` (opened without following).
fn bind(source: &DirHandle, target: &Path) -> Result<(), SlotError> {
    let target_dir = DirHandle::open(target)?;
    mount(
        Some(&source.proc_path()),
        &target_dir.proc_path(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| SlotError::Mount {
        action: "bind-mount the task directory onto",
        path: target.to_path_buf(),
        source,
    })
}

/// Bind-mounts `source` onto `target` through a private copy at `staging`, read-only (and
/// nosuid, nodev, noexec) if asked. The task's directory is on a host mount that may be shared
/// (systemd makes every mount shared), and a plain bind of it would join that mount's peer
/// group: what is later mounted or unmounted in the slot would then also happen in the host's own
/// alloc dir, and unmounting the staging point would take the read-only logs mount with it. The
/// staging copy leaves that group before anything else is done with it, so the mount that reaches
/// the slot (and, propagated, the container) is a copy of a private, already read-only mount.
fn bind_through_staging(
    source: &DirHandle,
    staging: &Path,
    target: &Path,
    read_only: bool,
) -> Result<(), SlotError> {
    create_private_dir(staging)?;
    bind(source, staging)?;
    remount(None, staging, MsFlags::MS_PRIVATE, "make private")?;
    if read_only {
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        remount(None, staging, flags, "make read-only")?;
    }
    bind(&DirHandle::open(staging)?, target)
}

/// `mount(2)` with no file system type and no data, for binds and propagation changes.
fn remount(
    source: Option<&Path>,
    target: &Path,
    flags: MsFlags,
    action: &'static str,
) -> Result<(), SlotError> {
    mount(source, target, None::<&str>, flags, None::<&str>).map_err(|source| SlotError::Mount {
        action,
        path: target.to_path_buf(),
        source,
    })
}

/// Detaches every mount stacked at `path` (bounded: a slot never holds more than a few).
fn detach_all(path: &Path) {
    for _ in 0..16 {
        if umount2(path, MntFlags::MNT_DETACH).is_err() {
            return;
        }
    }
}

/// The topmost mount at `path`, if `path` is a mount point.
fn mount_at<'a>(
    mounts: &'a [crate::mountinfo::Mount],
    path: &Path,
) -> Option<&'a crate::mountinfo::Mount> {
    let canonical = path.canonicalize().ok()?;
    mounts
        .iter()
        .rev()
        .find(|mount| Path::new(&mount.mount_point) == canonical)
}

fn is_mount_point(mounts: &[crate::mountinfo::Mount], path: &Path) -> bool {
    mount_at(mounts, path).is_some()
}

/// Whether the mount at `path` is shared in a peer group no other mount of this namespace is in
/// (its own, not the one of the file system it was bound from).
fn has_own_peer_group(mounts: &[crate::mountinfo::Mount], path: &Path) -> bool {
    let peer_group = |mount: &crate::mountinfo::Mount| {
        mount
            .optional_fields
            .iter()
            .find_map(|f| f.strip_prefix("shared:").map(str::to_string))
    };
    let Some(mine) = mount_at(mounts, path) else {
        return false;
    };
    let Some(group) = peer_group(mine) else {
        return false;
    };
    mounts
        .iter()
        .filter(|other| !std::ptr::eq(*other, mine))
        .all(|other| peer_group(other).as_deref() != Some(group.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_created_marked_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let root = SlotRoot::new(dir.path());
        let binds = root.create("s1").unwrap();
        assert_eq!(binds.len(), 3);
        assert!(binds.iter().all(|b| b.receives_host_mounts && !b.read_only));
        assert_eq!(binds[1].container_path, "/local");
        assert!(!root.is_claimed("s1"));
        root.mark_claimed("s1").unwrap();
        assert!(root.is_claimed("s1"));
        assert_eq!(root.list(), vec!["s1".to_string()]);
        root.release("s1");
        assert!(!root.exists("s1"));
        root.release("s1");
    }
}
