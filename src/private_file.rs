//! Private files and directories: the file-system rules of the credential store (and of the
//! Vault token and AppRole files the plugin reads).
//!
//! "Private" means: owned by the uid this process runs as, no permission bit for group or others,
//! and not a symbolic link. Directories are created 0700 and files 0600 (explicit modes, so the
//! umask can only remove bits); anything found that is not private is refused with the exact
//! `chown`/`chmod` that fixes it, never silently repaired.
//!
//! Invariants:
//! - Files are opened with `O_NOFOLLOW` and checked with `fstat` on the open descriptor, so what
//!   is checked is what is read.
//! - Writes are atomic: a temp file in the same directory, `fsync`, `rename` (or `link` when the
//!   target must not be replaced), then `fsync` of the directory. A reader sees the old content or
//!   the new, never a mix; a crash leaves at most a `.`-prefixed temp file, which readers ignore.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The effective uid of this process: the owner every store file must have.
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Why a private file or directory cannot be used. Messages name the path, and for anything not
/// private, the exact command that fixes it.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error("refusing to use {path}: {problem}; fix: {fix}", path = path.display())]
    Refused {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    #[error(
        "{path} is too large: it is {size} bytes, more than the {limit} allowed",
        path = path.display()
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{action} {path}: {source}", path = path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn refused(path: &Path, problem: String, fix: String) -> PrivateFileError {
    PrivateFileError::Refused {
        path: path.to_path_buf(),
        problem,
        fix,
    }
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> PrivateFileError {
    PrivateFileError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Check that `meta` (of `path`, not followed through a symlink) is a private directory or a
/// private regular file.
pub fn check(path: &Path, meta: &Metadata, directory: bool) -> Result<(), PrivateFileError> {
    let kind = if directory {
        "a directory"
    } else {
        "a regular file"
    };
    if meta.file_type().is_symlink() {
        return Err(refused(
            path,
            "it is a symbolic link".into(),
            format!("replace it with {kind}"),
        ));
    }
    if meta.is_dir() != directory || (!directory && !meta.is_file()) {
        return Err(refused(
            path,
            format!("it is not {kind}"),
            format!("move it away; polydev expects {kind} there"),
        ));
    }
    let me = euid();
    if meta.uid() != me {
        return Err(refused(
            path,
            format!(
                "it is owned by uid {}, not by uid {me} that polydev runs as",
                meta.uid()
            ),
            format!("chown {me} {}", path.display()),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        let want = if directory { "700" } else { "600" };
        return Err(refused(
            path,
            format!("it is accessible by group or others (mode {mode:04o})"),
            format!("chmod {want} {}", path.display()),
        ));
    }
    Ok(())
}

/// Whether the private directory `path` exists (`false` if it does not; an error if it is not
/// private).
pub fn check_dir(path: &Path) -> Result<bool, PrivateFileError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => check(path, &meta, true).map(|()| true),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(io_error("cannot inspect", path, err)),
    }
}

/// Check that the directory `path` (followed if it is a link: the operator's own layout) can be
/// written only by this uid or root, so nobody else can swap what is in it.
pub fn check_only_owner_writes(path: &Path) -> Result<(), PrivateFileError> {
    let meta = std::fs::metadata(path).map_err(|err| io_error("cannot inspect", path, err))?;
    let me = euid();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(refused(
            path,
            format!(
                "the key's directory is owned by uid {}, not by uid {me} or root",
                meta.uid()
            ),
            format!("chown {me} {}", path.display()),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refused(
            path,
            format!("the key's directory is writable by group or others (mode {mode:04o})"),
            format!("chmod go-w {}", path.display()),
        ));
    }
    Ok(())
}

/// Make sure the private directory `path` exists: create it 0700 (its parent must exist), or
/// check the one that is there.
pub fn ensure_dir(path: &Path) -> Result<(), PrivateFileError> {
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => check_dir(path).map(|_| ()),
        Err(err) => Err(io_error("cannot create", path, err)),
    }
}

/// Make sure `path` and its missing parents exist, creating them 0700. Existing ancestors are not
/// checked (the data dir's parents are the operator's business).
pub fn ensure_parents(path: &Path) -> Result<(), PrivateFileError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(path)
        .map_err(|err| io_error("cannot create", path, err))
}

/// Open the private file `path` for reading and return its whole content (at most `limit`
/// bytes), with its metadata; `None` if it does not exist.
pub fn read_file(path: &Path, limit: u64) -> Result<Option<(Vec<u8>, Metadata)>, PrivateFileError> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
            let meta = std::fs::symlink_metadata(path)
                .map_err(|err| io_error("cannot inspect", path, err))?;
            return Err(check(path, &meta, false).err().unwrap_or_else(|| {
                io_error(
                    "cannot open",
                    path,
                    std::io::Error::from_raw_os_error(libc::ELOOP),
                )
            }));
        }
        Err(err) => return Err(io_error("cannot open", path, err)),
    };
    let meta = file
        .metadata()
        .map_err(|err| io_error("cannot inspect", path, err))?;
    check(path, &meta, false)?;
    if meta.len() > limit {
        return Err(PrivateFileError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| io_error("cannot read", path, err))?;
    Ok(Some((bytes, meta)))
}

/// Read a secret the operator hands polydev in a file of their own (a Vault token, an AppRole
/// role or secret id), at most `limit` bytes. The store's rules apply ([`read_file`]:
/// `O_NOFOLLOW`, checked on the open descriptor, owned by this process's euid, no permission bit
/// for group or others), and a file that is missing is an error. A refusal for its owner or mode
/// names both as found, and the one command that fixes both.
pub fn read_operator_secret(path: &Path, limit: u64) -> Result<Vec<u8>, PrivateFileError> {
    match read_file(path, limit) {
        Ok(Some((bytes, _))) => Ok(bytes),
        Ok(None) => Err(io_error(
            "cannot open",
            path,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )),
        Err(refusal @ PrivateFileError::Refused { .. }) => {
            // Stat again only to word the message: the file was refused already.
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.is_file() => Err(owner_and_mode_refusal(path, &meta)),
                _ => Err(refusal),
            }
        }
        Err(other) => Err(other),
    }
}

/// A regular file's refusal that shows its owner and mode and fixes both at once.
fn owner_and_mode_refusal(path: &Path, meta: &Metadata) -> PrivateFileError {
    let me = euid();
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(me))
        .ok()
        .flatten()
        .map_or_else(|| me.to_string(), |user| user.name);
    refused(
        path,
        format!(
            "it is owned by uid {} with mode {:04o}, and must be owned by uid {me} ({name}, \
             which polydev runs as) with no permission for group or others",
            meta.uid(),
            meta.mode() & 0o7777
        ),
        format!(
            "chown {name}: {path} && chmod 0600 {path}",
            path = path.display()
        ),
    )
}

/// A temp file next to `target`, created 0600; its name starts with `.` so readers skip it.
fn temp_file(target: &Path) -> Result<(File, PathBuf), PrivateFileError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp)
        .map_err(|err| io_error("cannot create", &temp, err))?;
    // The mode given to open() is filtered by the umask; make sure no bit was added either.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|err| io_error("cannot chmod", &temp, err))?;
    Ok((file, temp))
}

fn write_temp(target: &Path, bytes: &[u8]) -> Result<PathBuf, PrivateFileError> {
    let (mut file, temp) = temp_file(target)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(io_error("cannot write", &temp, err));
    }
    Ok(temp)
}

fn sync_dir(dir: &Path) -> Result<(), PrivateFileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|err| io_error("cannot sync", dir, err))
}

/// Replace `target` with `bytes` atomically (temp file, fsync, rename, fsync of the directory).
pub fn write_atomic(target: &Path, bytes: &[u8]) -> Result<(), PrivateFileError> {
    let temp = write_temp(target, bytes)?;
    if let Err(err) = std::fs::rename(&temp, target) {
        let _ = std::fs::remove_file(&temp);
        return Err(io_error("cannot replace", target, err));
    }
    sync_dir(target.parent().unwrap_or(Path::new(".")))
}

/// Create `target` with `bytes` atomically unless it exists; `false` if it already existed (its
/// content is then left alone).
pub fn create_once(target: &Path, bytes: &[u8]) -> Result<bool, PrivateFileError> {
    let temp = write_temp(target, bytes)?;
    let linked = std::fs::hard_link(&temp, target);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => sync_dir(target.parent().unwrap_or(Path::new("."))).map(|()| true),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(err) => Err(io_error("cannot create", target, err)),
    }
}

/// An exclusive `flock` on a private lock file, held until dropped. Serialises the store's
/// writers (read-modify-write of an entry file); readers never take it.
pub struct Lock {
    _file: nix::fcntl::Flock<File>,
}

impl Lock {
    pub fn acquire(path: &Path) -> Result<Lock, PrivateFileError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|err| io_error("cannot open", path, err))?;
        let meta = file
            .metadata()
            .map_err(|err| io_error("cannot inspect", path, err))?;
        check(path, &meta, false)?;
        let mut file = file;
        loop {
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive) {
                Ok(locked) => return Ok(Lock { _file: locked }),
                Err((unlocked, nix::errno::Errno::EINTR)) => file = unlocked,
                Err((_, errno)) => return Err(io_error("cannot lock", path, errno.into())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn directories_and_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        ensure_dir(&sub).unwrap();
        assert_eq!(std::fs::metadata(&sub).unwrap().mode() & 0o777, 0o700);
        assert!(check_dir(&sub).unwrap());
        assert!(!check_dir(&dir.path().join("absent")).unwrap());

        set_mode(&sub, 0o750);
        let err = ensure_dir(&sub).unwrap_err().to_string();
        assert!(
            err.contains("mode 0750") && err.contains("chmod 700"),
            "{err}"
        );
        set_mode(&sub, 0o700);

        let file = sub.join("f");
        write_atomic(&file, b"hello").unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert_eq!(read_file(&file, 100).unwrap().unwrap().0, b"hello");
        set_mode(&file, 0o640);
        let err = read_file(&file, 100).unwrap_err().to_string();
        assert!(
            err.contains("mode 0640") && err.contains("chmod 600"),
            "{err}"
        );
        set_mode(&file, 0o600);

        let link = sub.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let err = read_file(&link, 100).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        let dir_link = dir.path().join("dir-link");
        std::os::unix::fs::symlink(&sub, &dir_link).unwrap();
        assert!(
            check_dir(&dir_link)
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );

        let err = read_file(&file, 3).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{} is too large: it is 5 bytes, more than the 3 allowed",
                file.display()
            )
        );
        assert!(read_file(&sub.join("absent"), 100).unwrap().is_none());
    }

    #[test]
    fn files_of_another_owner_are_refused() {
        if euid() != 0 {
            // Only root can give a file away; CI runs as root.
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        write_atomic(&file, b"x").unwrap();
        std::os::unix::fs::chown(&file, Some(4242), None).unwrap();
        let err = read_file(&file, 100).unwrap_err().to_string();
        assert!(
            err.contains("owned by uid 4242") && err.contains("chown 0"),
            "{err}"
        );
        let sub = dir.path().join("d");
        ensure_dir(&sub).unwrap();
        std::os::unix::fs::chown(&sub, Some(4242), None).unwrap();
        assert!(
            check_dir(&sub)
                .unwrap_err()
                .to_string()
                .contains("uid 4242")
        );
    }

    #[test]
    fn operator_secrets_must_be_private_and_a_refusal_fixes_owner_and_mode_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vault-token");
        std::fs::write(&file, "s.token\n").unwrap();
        set_mode(&file, 0o600);
        assert_eq!(read_operator_secret(&file, 100).unwrap(), b"s.token\n");

        let me = euid();
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(me))
            .unwrap()
            .map_or_else(|| me.to_string(), |u| u.name);
        let fix = format!(
            "fix: chown {name}: {path} && chmod 0600 {path}",
            path = file.display()
        );
        for mode in [0o640, 0o604, 0o660, 0o644] {
            set_mode(&file, mode);
            let err = read_operator_secret(&file, 100).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "refusing to use {path}: it is owned by uid {me} with mode {mode:04o}, and \
                     must be owned by uid {me} ({name}, which polydev runs as) with no \
                     permission for group or others; {fix}",
                    path = file.display()
                )
            );
        }
        set_mode(&file, 0o600);
        if me == 0 {
            std::os::unix::fs::chown(&file, Some(4242), None).unwrap();
            let err = read_operator_secret(&file, 100).unwrap_err().to_string();
            assert!(
                err.contains("owned by uid 4242 with mode 0600") && err.ends_with(&fix),
                "{err}"
            );
            std::os::unix::fs::chown(&file, Some(0), None).unwrap();
        }

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let err = read_operator_secret(&link, 100).unwrap_err().to_string();
        assert!(err.contains("it is a symbolic link"), "O_NOFOLLOW: {err}");
        let err = read_operator_secret(&dir.path().join("absent"), 100)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot open "), "{err}");
        assert!(read_operator_secret(&file, 3).is_err(), "too large");
    }

    #[test]
    fn writes_replace_atomically_and_create_once_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        write_atomic(&file, b"one").unwrap();
        write_atomic(&file, b"two").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        let key = dir.path().join("k");
        assert!(create_once(&key, b"first").unwrap());
        assert!(!create_once(&key, b"second").unwrap());
        assert_eq!(std::fs::read(&key).unwrap(), b"first");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "no temp file is left behind: {names:?}");
        let lock = Lock::acquire(&dir.path().join(".lock")).unwrap();
        drop(lock);
    }
}
