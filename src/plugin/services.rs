//! go-plugin's own gRPC services, which every go-plugin server carries besides the plugin's.
//!
//! Job: `plugin.GRPCController` (the client's "please exit"), `plugin.GRPCStdio` (stdout/stderr
//! mirroring, which Nomad discards) and `grpc.health.v1.Health` for service `"plugin"`.
//!
//! Invariants:
//! - `GRPCController/Shutdown` only cancels the shutdown token and answers at once; the server
//!   loop does the rest (stop accepting, bounded drain, exit).
//! - `GRPCStdio/StreamStdio` never sends a message; each stream ends when shutdown begins, so it
//!   never holds the drain open.
//! - Health reports `"plugin"` as SERVING for as long as the server runs.

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::pb::plugin::grpc_controller_server::{GrpcController, GrpcControllerServer};
use crate::pb::plugin::grpc_stdio_server::{GrpcStdio, GrpcStdioServer};
use crate::pb::plugin::{Empty, StdioData};

/// The health service name go-plugin's client checks (`GRPCServiceName`).
pub const HEALTH_SERVICE_NAME: &str = "plugin";

/// `plugin.GRPCController`.
#[derive(Debug, Clone)]
pub struct Controller {
    shutdown: CancellationToken,
}

impl Controller {
    /// A controller whose `Shutdown` cancels `shutdown`.
    #[must_use]
    pub fn server(shutdown: CancellationToken) -> GrpcControllerServer<Self> {
        GrpcControllerServer::new(Self { shutdown })
    }
}

#[tonic::async_trait]
impl GrpcController for Controller {
    async fn shutdown(&self, _request: Request<Empty>) -> Result<Response<Empty>, Status> {
        tracing::info!("GRPCController.Shutdown received; shutting down");
        self.shutdown.cancel();
        Ok(Response::new(Empty {}))
    }
}

/// `plugin.GRPCStdio`.
#[derive(Debug, Clone)]
pub struct Stdio {
    shutdown: CancellationToken,
}

impl Stdio {
    /// A stdio service whose streams end when `shutdown` is cancelled.
    #[must_use]
    pub fn server(shutdown: CancellationToken) -> GrpcStdioServer<Self> {
        GrpcStdioServer::new(Self { shutdown })
    }
}

#[tonic::async_trait]
impl GrpcStdio for Stdio {
    async fn stream_stdio(
        &self,
        _request: Request<()>,
    ) -> Result<Response<tonic::codegen::BoxStream<StdioData>>, Status> {
        tracing::debug!("GRPCStdio.StreamStdio opened; it stays silent until shutdown");
        let ended = self.shutdown.clone().cancelled_owned();
        let stream = futures::stream::once(ended)
            .filter_map(|()| async { None::<Result<StdioData, Status>> });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// `grpc.health.v1.Health` with [`HEALTH_SERVICE_NAME`] set to SERVING.
pub async fn health_server() -> HealthServer<impl Health> {
    let (reporter, server) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(HEALTH_SERVICE_NAME, ServingStatus::Serving)
        .await;
    server
}
