//! The go-plugin server loop: validate, bind, announce, serve, drain, clean up.
//!
//! Job: run the caller's gRPC routes (Nomad's BasePlugin and Driver, provided by the driver
//! layer) next to go-plugin's own services on a unix socket, the way go-plugin's `Serve` does,
//! until the shutdown token is cancelled.
//!
//! Invariants:
//! - The environment is validated, signal handlers are installed and the socket is bound
//!   **before** the handshake line is written; then exactly one line is written, and flushed.
//!   Nothing else is ever written to the handshake output.
//! - Serving stops only when `shutdown` is cancelled (by `GRPCController/Shutdown`, SIGTERM, or
//!   the caller). A client closing its connection never stops it.
//! - After cancellation, in-flight calls get at most [`DRAIN_TIMEOUT`] to finish; then the
//!   server returns anyway, so the process can exit well inside go-plugin's 2 s grace period.
//! - On every return path after binding, the token is cancelled (so the driver's child tokens
//!   see it) and the socket file and its private directory are removed.
//! - This module names no Nomad type: the driver's services arrive as opaque [`Routes`].

use std::io::{self, Write};
use std::time::Duration;

use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;

use super::handshake::{HandshakeError, HandshakeLine, PluginEnv};
use super::services::{Controller, Stdio, health_server};
use super::signals;
use super::socket::{PluginSocket, SocketError};

/// How long in-flight calls may run on after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_millis(800);

/// Why the plugin server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The environment does not let this process run as a plugin (cookie, protocol version,
    /// socket path).
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The socket could not be set up.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The signal handlers could not be installed.
    #[error("could not install signal handlers: {0}")]
    Signals(#[source] io::Error),
    /// The handshake line could not be written.
    #[error("could not write the handshake line to stdout: {0}")]
    Announce(#[source] io::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Serves `driver_routes` plus go-plugin's services as a go-plugin (Nomad) plugin, reading the
/// environment and announcing on stdout. Returns `Ok` after a graceful shutdown, which begins
/// when `shutdown` is cancelled.
///
/// # Errors
/// See [`PluginError`]; nothing has been written to stdout when it is an environment or socket
/// error.
pub async fn serve(driver_routes: Routes, shutdown: CancellationToken) -> Result<(), PluginError> {
    let env = PluginEnv::from_env();
    let env = match env {
        Ok(env) => env,
        Err(e) => {
            shutdown.cancel();
            return Err(e.into());
        }
    };
    serve_with(env, driver_routes, shutdown, io::stdout()).await
}

/// [`serve`] with the environment already read and the handshake line going to `announce`.
///
/// # Errors
/// See [`serve`].
pub async fn serve_with<W: Write + Send>(
    env: PluginEnv,
    driver_routes: Routes,
    shutdown: CancellationToken,
    announce: W,
) -> Result<(), PluginError> {
    let result = run(env, driver_routes, shutdown.clone(), announce).await;
    shutdown.cancel();
    result
}

async fn run<W: Write + Send>(
    env: PluginEnv,
    driver_routes: Routes,
    shutdown: CancellationToken,
    mut announce: W,
) -> Result<(), PluginError> {
    if env.client_cert_requested {
        tracing::warn!(
            "PLUGIN_CLIENT_CERT is set but AutoMTLS is not supported; serving plaintext gRPC \
             (Nomad never enables AutoMTLS, so the client that started us is not Nomad's)"
        );
    }
    let signal_task = signals::install(shutdown.clone()).map_err(PluginError::Signals)?;
    let socket = PluginSocket::bind(env.socket_dir.as_deref(), env.socket_group.as_deref())?;
    let (listener, cleanup) = socket.split();
    let result = async {
        let line = HandshakeLine::unix(cleanup.path())?;
        // Nomad's client keeps a WaitTask and a TaskStats stream open per task on this one
        // connection; HTTP/2's default of 200 concurrent streams would stall every other RPC
        // past ~100 tasks. grpc-go's own servers allow unlimited streams; so do we.
        let router = Server::builder()
            .max_concurrent_streams(u32::MAX)
            .add_routes(driver_routes)
            .add_service(health_server().await)
            .add_service(Controller::server(shutdown.clone()))
            .add_service(Stdio::server(shutdown.clone()));
        writeln!(announce, "{line}")
            .and_then(|()| announce.flush())
            .map_err(PluginError::Announce)?;
        drop(announce);
        tracing::info!(address = %line.address, "plugin serving");

        let serving = router.serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            shutdown.clone().cancelled_owned(),
        );
        tokio::pin!(serving);
        let drain_deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        };
        tokio::select! {
            result = &mut serving => result.map_err(PluginError::from),
            () = drain_deadline => {
                tracing::warn!(timeout = ?DRAIN_TIMEOUT,
                               "in-flight calls did not finish in time; closing them");
                Ok(())
            }
        }
    }
    .await;
    shutdown.cancel();
    signal_task.abort();
    let path = cleanup.path().to_path_buf();
    if let Err(e) = cleanup.close() {
        tracing::warn!(path = %path.display(), error = %e, "could not remove the plugin socket");
    }
    tracing::info!("plugin stopped");
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::hashicorp::nomad::plugins::base::proto as base;
    use base::base_plugin_client::BasePluginClient;
    use base::base_plugin_server::{BasePlugin, BasePluginServer};
    use parking_lot::Mutex;
    use std::sync::Arc;
    use std::time::Instant;

    /// A handshake sink the test can read while the server runs.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A stand-in for the driver layer's services: BasePlugin with one method.
    struct FakeBase;
    #[tonic::async_trait]
    impl BasePlugin for FakeBase {
        async fn plugin_info(
            &self,
            _: tonic::Request<base::PluginInfoRequest>,
        ) -> Result<tonic::Response<base::PluginInfoResponse>, tonic::Status> {
            Ok(tonic::Response::new(base::PluginInfoResponse {
                name: "fake".into(),
                ..Default::default()
            }))
        }
    }

    fn env() -> PluginEnv {
        PluginEnv {
            socket_dir: None,
            socket_group: None,
            client_cert_requested: false,
        }
    }

    async fn wait_for_line(sink: &Sink) -> HandshakeLine {
        for _ in 0..500 {
            let text = String::from_utf8(sink.0.lock().clone()).unwrap();
            if text.ends_with('\n') {
                assert_eq!(text.matches('\n').count(), 1, "{text:?}");
                return HandshakeLine::parse(&text).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no handshake line");
    }

    #[tokio::test]
    async fn driver_routes_are_served_beside_go_plugin_services() {
        let sink = Sink::default();
        let shutdown = CancellationToken::new();
        let routes = Routes::new(BasePluginServer::new(FakeBase));
        let server = tokio::spawn(serve_with(env(), routes, shutdown.clone(), sink.clone()));
        let line = wait_for_line(&sink).await;
        let channel = tonic::transport::Endpoint::from_shared(format!("unix://{}", line.address))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let info = BasePluginClient::new(channel.clone())
            .plugin_info(base::PluginInfoRequest {})
            .await
            .unwrap();
        assert_eq!(info.into_inner().name, "fake");
        // The default stub of a route the driver did not implement is still routed to it.
        let status = BasePluginClient::new(channel)
            .config_schema(base::ConfigSchemaRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);

        shutdown.cancel();
        server.await.unwrap().unwrap();
        assert!(!std::path::Path::new(&line.address).exists());
    }

    #[tokio::test]
    async fn drain_is_bounded_when_a_call_never_ends() {
        struct Stuck;
        #[tonic::async_trait]
        impl BasePlugin for Stuck {
            async fn plugin_info(
                &self,
                _: tonic::Request<base::PluginInfoRequest>,
            ) -> Result<tonic::Response<base::PluginInfoResponse>, tonic::Status> {
                std::future::pending().await
            }
        }
        let sink = Sink::default();
        let shutdown = CancellationToken::new();
        let routes = Routes::new(BasePluginServer::new(Stuck));
        let server = tokio::spawn(serve_with(env(), routes, shutdown.clone(), sink.clone()));
        let line = wait_for_line(&sink).await;
        let channel = tonic::transport::Endpoint::from_shared(format!("unix://{}", line.address))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let call = tokio::spawn(async move {
            BasePluginClient::new(channel)
                .plugin_info(base::PluginInfoRequest {})
                .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        shutdown.cancel();
        server.await.unwrap().unwrap();
        let took = started.elapsed();
        assert!(took >= DRAIN_TIMEOUT, "{took:?}");
        assert!(
            took < DRAIN_TIMEOUT + Duration::from_millis(500),
            "{took:?}"
        );
        call.abort();
    }

    #[tokio::test]
    async fn announce_failure_is_an_error_and_cleans_up() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let env = PluginEnv {
            socket_dir: Some(dir.path().to_path_buf()),
            ..env()
        };
        let shutdown = CancellationToken::new();
        let err = serve_with(env, Routes::default(), shutdown.clone(), Broken)
            .await
            .unwrap_err();
        assert!(matches!(err, PluginError::Announce(_)), "{err}");
        assert!(shutdown.is_cancelled());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
