//! Opening paths a task can write, as root, without going where the task points.
//!
//! A task's directories (`/alloc`, `/local`, `/secrets` on the host) are writable by the task, so
//! any name in them may be a symlink, a hard link or a file the task planted in place of what
//! Nomad made. A root process that opens such a name by path reads or writes wherever the task
//! wants: this was shown with the log FIFO swapped for a symlink to the store's key. Everything
//! polydev opens under a task's directories goes through here.
//!
//! Invariants:
//! - The last component is never followed ([`OFlag::O_NOFOLLOW`]); a symlink there is
//!   [`UnsafePath::Symlink`].
//! - What was opened is checked on the descriptor (`fstat`), never by a second lookup of the
//!   path, so nothing can be swapped between the check and the use.
//! - A FIFO is first opened `O_PATH` (which has no side effect on any kind of file), checked to
//!   be a FIFO of the expected owner, and only then reopened for writing through its descriptor
//!   (`/proc/self/fd/N` names the inode already checked). A regular file, a device or a FIFO
//!   with a second name (a hard link to another task's) in its place is refused, never created,
//!   truncated or appended to.
//! - A directory to be bind-mounted is opened `O_PATH | O_DIRECTORY | O_NOFOLLOW` and mounted
//!   from its descriptor ([`DirHandle::proc_path`]), so the mount is of the directory that was
//!   checked.
//!
//! Only the last component is protected this way: the directories above it (Nomad's alloc dir,
//! owned by root) are the caller's to trust, and those the task can write are made read-only or
//! mount points in its container (`container_parts::task_dirs`), which it cannot rename.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, SFlag, fstat};

/// Why a path under a task's directories was not opened.
#[derive(Debug, thiserror::Error)]
pub enum UnsafePath {
    #[error(
        "{} is a symlink; polydev does not follow links a task could have planted \
         (recreate it as Nomad made it, or restart the allocation)",
        path.display()
    )]
    Symlink { path: PathBuf },
    #[error(
        "{} is {found}, not {expected}; polydev refuses to use it (a task may have replaced it)",
        path.display()
    )]
    WrongKind {
        path: PathBuf,
        found: &'static str,
        expected: &'static str,
    },
    #[error(
        "{} is owned by uid {found}, not uid {expected}; polydev refuses to use it (a task may \
         have replaced it)",
        path.display()
    )]
    WrongOwner {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error(
        "{} has {links} hard links, not 1; polydev refuses a FIFO that is also somewhere else",
        path.display()
    )]
    HardLinked { path: PathBuf, links: u64 },
    #[error("cannot open {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl UnsafePath {
    /// The underlying OS error, when the open failed for an ordinary reason (not found, no
    /// reader on a FIFO) rather than a refusal.
    pub fn os_error(&self) -> Option<&std::io::Error> {
        match self {
            UnsafePath::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A directory opened `O_PATH` without following a final symlink.
#[derive(Debug)]
pub struct DirHandle {
    fd: OwnedFd,
}

impl DirHandle {
    /// Opens `path`, which must be a directory and not a symlink.
    pub fn open(path: &Path) -> Result<DirHandle, UnsafePath> {
        let fd = open_path_nofollow(path, OFlag::O_DIRECTORY)?;
        let kind = kind_of(&fd, path)?;
        if kind != SFlag::S_IFDIR {
            return Err(UnsafePath::WrongKind {
                path: path.to_path_buf(),
                found: kind_name(kind),
                expected: "a directory",
            });
        }
        Ok(DirHandle { fd })
    }

    /// A path that names exactly this directory for as long as the handle lives
    /// (`/proc/self/fd/N`): give it to `mount(2)` as the source or the target.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

/// Opens the FIFO at `path` for writing, without blocking: it must be a FIFO (not a symlink, not
/// a regular file, not a device) owned by `owner`. With no reader yet the error is
/// [`UnsafePath::Io`] with `ENXIO`; a missing path is `ENOENT` (see [`UnsafePath::os_error`]).
pub fn open_fifo_for_writing(path: &Path, owner: u32) -> Result<OwnedFd, UnsafePath> {
    let handle = open_path_nofollow(path, OFlag::empty())?;
    let kind = kind_of(&handle, path)?;
    if kind != SFlag::S_IFIFO {
        return Err(UnsafePath::WrongKind {
            path: path.to_path_buf(),
            found: kind_name(kind),
            expected: "a FIFO",
        });
    }
    let stat = fstat(&handle).map_err(|errno| io_error(path, errno))?;
    let found = stat.st_uid;
    if found != owner {
        return Err(UnsafePath::WrongOwner {
            path: path.to_path_buf(),
            found,
            expected: owner,
        });
    }
    // Another FIFO of ours (another task's, say) linked into this name would pass the checks
    // above; Nomad's FIFOs have exactly one name.
    #[allow(clippy::useless_conversion)]
    let links = u64::from(stat.st_nlink);
    if links != 1 {
        return Err(UnsafePath::HardLinked {
            path: path.to_path_buf(),
            links,
        });
    }
    let reopen = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    open(
        &reopen,
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| io_error(path, errno))
}

fn open_path_nofollow(path: &Path, extra: OFlag) -> Result<OwnedFd, UnsafePath> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | extra;
    match open(path, flags, Mode::empty()) {
        Ok(fd) => {
            // O_PATH | O_NOFOLLOW opens a symlink itself rather than failing on it.
            if kind_of(&fd, path)? == SFlag::S_IFLNK {
                return Err(UnsafePath::Symlink {
                    path: path.to_path_buf(),
                });
            }
            Ok(fd)
        }
        // With O_DIRECTORY a final symlink fails with ELOOP (or ENOTDIR on some kernels).
        Err(Errno::ELOOP) => Err(UnsafePath::Symlink {
            path: path.to_path_buf(),
        }),
        Err(Errno::ENOTDIR) if is_symlink(path) => Err(UnsafePath::Symlink {
            path: path.to_path_buf(),
        }),
        Err(errno) => Err(io_error(path, errno)),
    }
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink())
}

fn kind_of(fd: &OwnedFd, path: &Path) -> Result<SFlag, UnsafePath> {
    let stat = fstat(fd).map_err(|errno| io_error(path, errno))?;
    Ok(SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT)
}

fn kind_name(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        _ => "of an unknown kind",
    }
}

fn io_error(path: &Path, errno: Errno) -> UnsafePath {
    UnsafePath::Io {
        path: path.to_path_buf(),
        source: std::io::Error::from(errno),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::{geteuid, mkfifo};

    fn euid() -> u32 {
        geteuid().as_raw()
    }

    #[test]
    fn a_fifo_of_the_owner_opens_once_it_has_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.fifo");
        mkfifo(&path, Mode::from_bits_truncate(0o600)).unwrap();
        let no_reader = open_fifo_for_writing(&path, euid()).unwrap_err();
        assert_eq!(
            no_reader.os_error().and_then(std::io::Error::raw_os_error),
            Some(libc::ENXIO)
        );
        let _reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        open_fifo_for_writing(&path, euid()).unwrap();
    }

    #[test]
    fn a_symlink_to_a_fifo_or_a_file_is_refused_and_the_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "secret").unwrap();
        let link = dir.path().join("out.fifo");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = open_fifo_for_writing(&link, euid()).unwrap_err();
        assert!(matches!(err, UnsafePath::Symlink { .. }), "{err}");
        assert!(err.to_string().contains("is a symlink"), "{err}");

        let fifo = dir.path().join("real.fifo");
        mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let to_fifo = dir.path().join("link.fifo");
        std::os::unix::fs::symlink(&fifo, &to_fifo).unwrap();
        assert!(matches!(
            open_fifo_for_writing(&to_fifo, euid()),
            Err(UnsafePath::Symlink { .. })
        ));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "secret");
    }

    #[test]
    fn a_regular_file_or_a_missing_path_is_never_created_or_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.fifo");
        std::fs::write(&file, "before").unwrap();
        let err = open_fifo_for_writing(&file, euid()).unwrap_err();
        assert!(
            err.to_string().contains("is a regular file, not a FIFO"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "before");

        let missing = dir.path().join("absent.fifo");
        let err = open_fifo_for_writing(&missing, euid()).unwrap_err();
        assert_eq!(
            err.os_error().map(std::io::Error::kind),
            Some(std::io::ErrorKind::NotFound)
        );
        assert!(!missing.exists());
    }

    #[test]
    fn a_fifo_of_another_owner_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.fifo");
        mkfifo(&path, Mode::from_bits_truncate(0o666)).unwrap();
        let err = open_fifo_for_writing(&path, euid().wrapping_add(1)).unwrap_err();
        assert!(matches!(err, UnsafePath::WrongOwner { .. }), "{err}");
    }

    #[test]
    fn a_fifo_with_a_second_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other-task.fifo");
        mkfifo(&other, Mode::from_bits_truncate(0o600)).unwrap();
        let path = dir.path().join("out.fifo");
        std::fs::hard_link(&other, &path).unwrap();
        let err = open_fifo_for_writing(&path, euid()).unwrap_err();
        assert!(
            matches!(err, UnsafePath::HardLinked { links: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn directories_open_without_following_a_final_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("logs");
        std::fs::create_dir(&real).unwrap();
        let handle = DirHandle::open(&real).unwrap();
        assert_eq!(std::fs::canonicalize(handle.proc_path()).unwrap(), real);

        let link = dir.path().join("logs-link");
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        let err = DirHandle::open(&link).unwrap_err();
        assert!(matches!(err, UnsafePath::Symlink { .. }), "{err}");

        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(DirHandle::open(&file).is_err());
    }

    use std::os::unix::fs::OpenOptionsExt;
}
