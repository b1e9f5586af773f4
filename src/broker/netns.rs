//! Binding a loopback listener inside a container's network namespace.
//!
//! A task container in broker mode has no network (`network_mode = none`): only its own `lo`.
//! The broker's listener is created *inside* that namespace — a dedicated OS thread enters it
//! with `setns(2)` on `/proc/<pid>/ns/net`, binds `127.0.0.1:<port>`, and hands the socket
//! back — while every other thread of the process stays in the host's namespace. The socket
//! keeps the namespace it was created in, so the broker accepts the container's connections
//! and dials the provider's API from the host.
//!
//! Invariants:
//! - Only a short-lived thread of our own ever changes namespace, and it ends right after the
//!   bind: no tokio worker or blocking-pool thread is ever moved into a container's namespace.
//! - The namespace is checked to belong to the container: after opening `/proc/<pid>/ns/net`,
//!   `/proc/<pid>/cgroup` must name the container id, so a recycled PID cannot make us bind in
//!   some other process's namespace.
//! - Entering a namespace needs `CAP_SYS_ADMIN` (the plugin runs as root); without it the error
//!   says so and how to fix it.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};

use nix::sched::{CloneFlags, setns};

/// Where a task's broker listener is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerSite {
    /// Inside the network namespace of `pid`, which must be a process of container
    /// `container_id` (its init process).
    Container { pid: u32, container_id: String },
    /// On the host's own loopback: for tests of the broker's HTTP handling only, where no
    /// container exists (never chosen for a real task).
    HostLoopback,
}

/// Why a listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "cannot enter the network namespace of container {container_id} (pid {pid}): {source}; \
         entering it needs root (CAP_SYS_ADMIN): run the plugin (or `polydev run`) as root, or \
         set credential_mode = \"env\" for this provider"
    )]
    Enter {
        pid: u32,
        container_id: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "process {pid} is not container {container_id}'s any more (it exited): the container \
         stopped before its credential broker could start"
    )]
    NotTheContainer { pid: u32, container_id: String },
    #[error("cannot bind the credential broker to 127.0.0.1:{port} in the container: {source}")]
    Bind {
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("the thread binding the credential broker failed: {0}")]
    Thread(String),
}

/// Bind `127.0.0.1:<port>` (`0`: any free port) at `site`; the listener is non-blocking.
/// Entering a namespace happens on a thread of its own, which reports back through a channel,
/// so the async runtime is never blocked.
pub async fn bind_loopback(site: ListenerSite, port: u16) -> Result<TcpListener, BindError> {
    let listener = match site {
        ListenerSite::HostLoopback => bind(port)?,
        ListenerSite::Container { pid, container_id } => {
            let namespace = open_namespace(pid, &container_id)?;
            let (done, result) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("polydev-netns".into())
                .spawn(move || {
                    // The thread ends right after: its namespace never matters again.
                    let bound = setns(&namespace, CloneFlags::CLONE_NEWNET)
                        .map_err(|errno| BindError::Enter {
                            pid,
                            container_id,
                            source: errno.into(),
                        })
                        .and_then(|()| bind(port));
                    let _ = done.send(bound);
                })
                .map_err(|e| BindError::Thread(e.to_string()))?;
            result
                .await
                .map_err(|_| BindError::Thread("it ended without an answer".into()))??
        }
    };
    listener
        .set_nonblocking(true)
        .map_err(|source| BindError::Bind { port, source })?;
    Ok(listener)
}

/// Open `pid`'s network namespace and check that `pid` still belongs to the container.
fn open_namespace(pid: u32, container_id: &str) -> Result<File, BindError> {
    let enter_error = |source: io::Error| BindError::Enter {
        pid,
        container_id: container_id.to_string(),
        source,
    };
    let namespace = match File::open(format!("/proc/{pid}/ns/net")) {
        Ok(file) => file,
        // The process is gone: so is the container it was init of.
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(BindError::NotTheContainer {
                pid,
                container_id: container_id.to_string(),
            });
        }
        Err(err) => return Err(enter_error(err)),
    };
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    if container_id.is_empty() || !cgroups.contains(container_id) {
        return Err(BindError::NotTheContainer {
            pid,
            container_id: container_id.to_string(),
        });
    }
    Ok(namespace)
}

fn bind(port: u16) -> Result<TcpListener, BindError> {
    let address = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    // std sets SO_REUSEADDR on Unix listeners, so a restarted plugin can re-bind the port of
    // a broker whose connections still linger in TIME_WAIT.
    TcpListener::bind(address).map_err(|source| BindError::Bind { port, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn host_loopback_binds_a_free_port() {
        let listener = bind_loopback(ListenerSite::HostLoopback, 0).await.unwrap();
        let address = listener.local_addr().unwrap();
        assert!(address.ip().is_loopback());
        assert_ne!(address.port(), 0);
    }

    #[tokio::test]
    async fn a_pid_of_another_container_is_refused() {
        // Our own process is in no container named like this.
        let site = ListenerSite::Container {
            pid: std::process::id(),
            container_id: "0123456789abcdef0123456789abcdef".into(),
        };
        let err = bind_loopback(site, 0).await.unwrap_err();
        assert!(matches!(err, BindError::NotTheContainer { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_missing_process_is_a_container_gone() {
        let site = ListenerSite::Container {
            pid: u32::MAX - 1,
            container_id: "abc".into(),
        };
        let err = bind_loopback(site, 0).await.unwrap_err();
        assert!(matches!(err, BindError::NotTheContainer { .. }), "{err}");
    }
}
