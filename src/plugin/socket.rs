//! Binding the plugin's unix socket, and removing it again.
//!
//! Job: create a uniquely named socket (`plugin` + 6 random characters, as go-plugin's
//! `os.CreateTemp(dir, "plugin")` does) in the chosen directory, give it to the group named by
//! `PLUGIN_UNIX_SOCKET_GROUP` if any, and clean up after serving.
//!
//! Invariants:
//! - The listener is bound before anyone learns the path, so the handshake line never names a
//!   path that does not accept connections yet.
//! - The socket path is checked against `sun_path`'s limit before `bind(2)` is tried.
//! - [`SocketCleanup::close`] (or drop) removes the socket file and, if the directory was a
//!   private one, the directory; a configured directory is never removed.
//! - With a group set, the socket becomes `0660` and group-owned by it, as go-plugin's
//!   `setGroupWritable` does; a private directory additionally becomes `0710` and group-owned
//!   so that group members can reach the socket.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempPath;
use tokio::net::UnixListener;

use super::handshake::{HandshakeError, SocketDir, check_socket_path_len, choose_socket_dir};

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The path would be unusable (too long for `sun_path`).
    #[error(transparent)]
    Path(#[from] HandshakeError),
    /// The private socket directory could not be created.
    #[error("could not create a private directory for the plugin socket: {0}")]
    Dir(#[source] io::Error),
    /// `bind(2)` failed.
    #[error("could not bind the plugin socket in {dir:?}: {source}")]
    Bind {
        /// The directory the socket was to be created in.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `PLUGIN_UNIX_SOCKET_GROUP` names no group.
    #[error("PLUGIN_UNIX_SOCKET_GROUP={group:?} is neither a gid nor a known group name")]
    UnknownGroup {
        /// The value given.
        group: String,
    },
    /// Changing the socket's group or mode failed.
    #[error("could not give {path:?} to group {group:?}: {source}")]
    Group {
        /// The socket or directory path.
        path: PathBuf,
        /// The value given.
        group: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A bound plugin socket and the files to remove when done.
#[derive(Debug)]
pub struct PluginSocket {
    listener: UnixListener,
    cleanup: SocketCleanup,
}

/// The socket file and (if private) its directory, removed on [`SocketCleanup::close`] or drop.
#[derive(Debug)]
pub struct SocketCleanup {
    // Drop order matters: the socket file goes before its directory.
    path: TempPath,
    dir: SocketDir,
}

/// Length of the random part of the socket's file name.
const RANDOM_LEN: usize = 6;
const PREFIX: &str = "plugin";

impl PluginSocket {
    /// Creates the directory if needed and binds a new socket in it. Must run inside a tokio
    /// runtime.
    ///
    /// # Errors
    /// See [`SocketError`].
    pub fn bind(configured_dir: Option<&Path>, group: Option<&str>) -> Result<Self, SocketError> {
        let gid = group.map(resolve_group).transpose()?;
        let dir = choose_socket_dir(configured_dir).map_err(SocketError::Dir)?;
        // The name's length is fixed, so the limit can be checked before any bind.
        let probe = dir
            .path()
            .join(format!("{PREFIX}{}", "X".repeat(RANDOM_LEN)));
        let probe = std::path::absolute(&probe).unwrap_or(probe);
        check_socket_path_len(&probe)?;
        let named = tempfile::Builder::new()
            .prefix(PREFIX)
            .rand_bytes(RANDOM_LEN)
            .make_in(dir.path(), |path| {
                let std_listener = std::os::unix::net::UnixListener::bind(path)?;
                std_listener.set_nonblocking(true)?;
                UnixListener::from_std(std_listener)
            })
            .map_err(|source| SocketError::Bind {
                dir: dir.path().to_path_buf(),
                source,
            })?;
        let (listener, path) = named.into_parts();
        let cleanup = SocketCleanup { path, dir };
        if let (Some(group), Some(gid)) = (group, gid) {
            cleanup.give_to_group(group, gid)?;
        }
        Ok(Self { listener, cleanup })
    }

    /// The socket's absolute path.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.cleanup.path()
    }

    /// Splits into the listener, for the server, and the cleanup guard.
    #[must_use]
    pub fn split(self) -> (UnixListener, SocketCleanup) {
        (self.listener, self.cleanup)
    }
}

impl SocketCleanup {
    /// The socket's absolute path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file, then the directory if it is private.
    ///
    /// # Errors
    /// A removal failed; both are still attempted.
    pub fn close(self) -> io::Result<()> {
        let file = self.path.close();
        let dir = self.dir.close();
        file.and(dir)
    }

    fn give_to_group(&self, group: &str, gid: u32) -> Result<(), SocketError> {
        let fail = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SocketError::Group {
                path,
                group: group.to_owned(),
                source,
            }
        };
        std::os::unix::fs::chown(&self.path, None, Some(gid)).map_err(fail(&self.path))?;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o660))
            .map_err(fail(&self.path))?;
        if let SocketDir::Private(d) = &self.dir {
            std::os::unix::fs::chown(d.path(), None, Some(gid)).map_err(fail(d.path()))?;
            std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o710))
                .map_err(fail(d.path()))?;
        }
        Ok(())
    }
}

/// Resolves a group given as a numeric gid or a name (numeric first, like go-plugin).
///
/// # Errors
/// [`SocketError::UnknownGroup`] when it is neither.
pub fn resolve_group(group: &str) -> Result<u32, SocketError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    lookup_group_name(group).ok_or_else(|| SocketError::UnknownGroup {
        group: group.to_owned(),
    })
}

/// The gid of the group called `name` (`getgrnam_r(3)`; nix grows the buffer on `ERANGE`). A name
/// with a NUL byte, an unknown name and a failed lookup all give `None`.
fn lookup_group_name(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|group| group.gid.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    #[test]
    fn group_numeric_or_name() {
        assert_eq!(resolve_group("0").unwrap(), 0);
        assert_eq!(resolve_group("4242").unwrap(), 4242);
        assert_eq!(resolve_group("root").unwrap(), 0);
        let err = resolve_group("no-such-group-polydev").unwrap_err();
        assert!(matches!(err, SocketError::UnknownGroup { .. }));
        assert!(err.to_string().contains("no-such-group-polydev"));
        assert!(resolve_group("nul\0byte").is_err());
    }

    #[tokio::test]
    async fn private_dir_socket_is_bound_and_cleaned_up() {
        let socket = PluginSocket::bind(None, None).unwrap();
        let path = socket.path().to_path_buf();
        let dir = path.parent().unwrap().to_path_buf();
        assert!(path.is_absolute());
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("plugin") && name.len() == 12, "{name}");
        assert!(std::fs::metadata(&path).unwrap().file_type().is_socket());
        // Accepts connections before anything is printed.
        let (listener, cleanup) = socket.split();
        let _client = tokio::net::UnixStream::connect(&path).await.unwrap();
        listener.accept().await.unwrap();
        drop(listener);
        cleanup.close().unwrap();
        assert!(!path.exists());
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn configured_dir_is_kept_and_group_applied() {
        let dir = tempfile::tempdir().unwrap();
        let gid = nix::unistd::getegid().as_raw();
        let socket = PluginSocket::bind(Some(dir.path()), Some(&gid.to_string())).unwrap();
        let path = socket.path().to_path_buf();
        assert_eq!(path.parent().unwrap(), dir.path());
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.gid(), gid);
        assert_eq!(meta.mode() & 0o777, 0o660);
        socket.split().1.close().unwrap();
        assert!(!path.exists());
        assert!(dir.path().exists());
    }

    #[tokio::test]
    async fn too_long_dir_is_refused_before_bind() {
        let base = tempfile::tempdir().unwrap();
        let long = base.path().join("d".repeat(100));
        std::fs::create_dir(&long).unwrap();
        let err = PluginSocket::bind(Some(&long), None).unwrap_err();
        assert!(
            matches!(
                err,
                SocketError::Path(HandshakeError::SocketPathTooLong { .. })
            ),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&long).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn unknown_group_fails_before_creating_anything() {
        let dir = tempfile::tempdir().unwrap();
        let err = PluginSocket::bind(Some(dir.path()), Some("no-such-group-polydev")).unwrap_err();
        assert!(matches!(err, SocketError::UnknownGroup { .. }));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
