//! The `Driver` service: each RPC decodes, calls the core, encodes.

use std::time::Duration;

use futures::StreamExt;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::{PolydevDriver, convert, status};
use crate::config;
use crate::core::{HANDLE_VERSION, RecoverRequest};
use crate::pb::hashicorp::nomad::plugins::drivers::proto::{self as nomad, driver_server::Driver};

/// How often the engine is probed for the fingerprint.
const PROBE_PERIOD: Duration = Duration::from_secs(5);
/// Nomad's built-in drivers re-send their fingerprint this often even without a change.
const FINGERPRINT_PERIOD: Duration = Duration::from_secs(30);

fn duration(proto: Option<prost_types::Duration>, default: Duration) -> Duration {
    proto
        .and_then(|d| Duration::try_from(d).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(default)
}

#[tonic::async_trait]
impl Driver for PolydevDriver {
    async fn init(
        &self,
        _: Request<nomad::InitRequest>,
    ) -> Result<Response<nomad::InitResponse>, Status> {
        Ok(Response::new(nomad::InitResponse {}))
    }

    async fn task_config_schema(
        &self,
        _: Request<nomad::TaskConfigSchemaRequest>,
    ) -> Result<Response<nomad::TaskConfigSchemaResponse>, Status> {
        Ok(Response::new(nomad::TaskConfigSchemaResponse {
            spec: Some(config::task_config_schema()),
        }))
    }

    async fn capabilities(
        &self,
        _: Request<nomad::CapabilitiesRequest>,
    ) -> Result<Response<nomad::CapabilitiesResponse>, Status> {
        use nomad::driver_capabilities::{FsIsolation, MountConfigs};
        use nomad::network_isolation_spec::NetworkIsolationMode;
        let disable_log_collection = self
            .core()
            .map(|core| core.config().disable_log_collection)
            .unwrap_or(false);
        Ok(Response::new(nomad::CapabilitiesResponse {
            capabilities: Some(nomad::DriverCapabilities {
                send_signals: true,
                exec: true,
                fs_isolation: FsIsolation::Image as i32,
                network_isolation_modes: vec![NetworkIsolationMode::Host as i32],
                must_create_network: false,
                mount_configs: MountConfigs::NoMounts as i32,
                disable_log_collection,
                dynamic_workload_users: false,
            }),
        }))
    }

    async fn fingerprint(
        &self,
        _: Request<nomad::FingerprintRequest>,
    ) -> Result<Response<BoxStream<nomad::FingerprintResponse>>, Status> {
        let core = self.core()?;
        core.start_background();
        let shutdown = self.inner.shutdown.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let mut last_sent: Option<(nomad::FingerprintResponse, tokio::time::Instant)> = None;
            let mut idle = convert::StableIdle::default();
            loop {
                let health = core.probe_health().await;
                let mut response = convert::fingerprint(&health, idle.observe(&health.pools));
                convert::add_string_attributes(&mut response, core.credential_attributes());
                let due = match &last_sent {
                    None => true,
                    Some((previous, at)) => {
                        *previous != response || at.elapsed() >= FINGERPRINT_PERIOD
                    }
                };
                if due {
                    if tx.send(Ok(response.clone())).await.is_err() {
                        return;
                    }
                    last_sent = Some((response, tokio::time::Instant::now()));
                }
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_PERIOD) => {}
                    _ = tx.closed() => return,
                    _ = shutdown.cancelled() => return,
                }
            }
        });
        Ok(Response::new(
            tokio_stream::wrappers::ReceiverStream::new(rx).boxed(),
        ))
    }

    async fn recover_task(
        &self,
        request: Request<nomad::RecoverTaskRequest>,
    ) -> Result<Response<nomad::RecoverTaskResponse>, Status> {
        let request = request.into_inner();
        let handle = request
            .handle
            .ok_or_else(|| Status::invalid_argument("RecoverTask needs a task handle"))?;
        if handle.version > HANDLE_VERSION {
            // Nomad then destroys the task and starts it anew; its container becomes an orphan
            // that the sweep removes after orphan_grace.
            return Err(Status::failed_precondition(format!(
                "task handle version {} was written by a newer polydev (this one reads versions up \
                 to {HANDLE_VERSION}); downgrading polydev under running tasks is not supported: \
                 install the newer binary again, or let Nomad restart the task",
                handle.version
            )));
        }
        let task = handle.config.ok_or_else(|| {
            Status::invalid_argument("RecoverTask needs the handle's task config")
        })?;
        let task_id = if task.id.is_empty() {
            request.task_id
        } else {
            task.id
        };
        self.core()?
            .recover_task(RecoverRequest {
                task_id,
                task_name: task.name,
                alloc_id: task.alloc_id,
                driver_state: handle.driver_state,
            })
            .await
            .map_err(status::from_core)?;
        Ok(Response::new(nomad::RecoverTaskResponse {}))
    }

    async fn start_task(
        &self,
        request: Request<nomad::StartTaskRequest>,
    ) -> Result<Response<nomad::StartTaskResponse>, Status> {
        let task = request
            .into_inner()
            .task
            .ok_or_else(|| Status::invalid_argument("StartTask needs a task config"))?;
        let core = self.core()?;
        let task_config = config::decode_task_config(&task.msgpack_driver_config, core.config())
            .map_err(status::from_config)?;
        let spec = convert::task_spec(&task, task_config, core.config())
            .map_err(Status::invalid_argument)?;
        let started = core.start_task(spec).await.map_err(status::from_core)?;
        Ok(Response::new(nomad::StartTaskResponse {
            result: nomad::start_task_response::Result::Success as i32,
            driver_error_msg: String::new(),
            handle: Some(nomad::TaskHandle {
                version: HANDLE_VERSION,
                config: Some(task),
                state: nomad::TaskState::Running as i32,
                driver_state: started.driver_state.encode(),
            }),
            network_override: None,
        }))
    }

    async fn wait_task(
        &self,
        request: Request<nomad::WaitTaskRequest>,
    ) -> Result<Response<nomad::WaitTaskResponse>, Status> {
        let id = request.into_inner().task_id;
        let outcome = self
            .core()?
            .wait_task(&id)
            .await
            .map_err(status::from_core)?;
        Ok(Response::new(nomad::WaitTaskResponse {
            result: Some(convert::exit_result(&outcome)),
            err: outcome.err.unwrap_or_default(),
        }))
    }

    async fn stop_task(
        &self,
        request: Request<nomad::StopTaskRequest>,
    ) -> Result<Response<nomad::StopTaskResponse>, Status> {
        let request = request.into_inner();
        // Nomad's default kill_timeout is 5 s.
        let timeout = duration(request.timeout, Duration::from_secs(5));
        self.core()?
            .stop_task(&request.task_id, timeout, &request.signal)
            .await
            .map_err(status::from_core)?;
        Ok(Response::new(nomad::StopTaskResponse {}))
    }

    async fn destroy_task(
        &self,
        request: Request<nomad::DestroyTaskRequest>,
    ) -> Result<Response<nomad::DestroyTaskResponse>, Status> {
        let request = request.into_inner();
        self.core()?
            .destroy_task(&request.task_id, request.force)
            .await
            .map_err(status::from_core)?;
        Ok(Response::new(nomad::DestroyTaskResponse {}))
    }

    async fn inspect_task(
        &self,
        request: Request<nomad::InspectTaskRequest>,
    ) -> Result<Response<nomad::InspectTaskResponse>, Status> {
        let id = request.into_inner().task_id;
        let view = self.core()?.inspect_task(&id).map_err(status::from_core)?;
        let state = if view.exit.is_some() {
            nomad::TaskState::Exited
        } else {
            nomad::TaskState::Running
        };
        Ok(Response::new(nomad::InspectTaskResponse {
            task: Some(nomad::TaskStatus {
                id: view.id,
                name: view.name,
                state: state as i32,
                started_at: Some(convert::timestamp(view.started_at)),
                completed_at: Some(
                    view.completed_at
                        .map(convert::timestamp)
                        .unwrap_or_else(convert::zero_timestamp),
                ),
                result: view.exit.as_ref().map(convert::exit_result),
            }),
            driver: Some(nomad::TaskDriverStatus {
                attributes: [("container_id".to_string(), view.container_id)].into(),
            }),
            network_override: None,
        }))
    }

    async fn task_stats(
        &self,
        request: Request<nomad::TaskStatsRequest>,
    ) -> Result<Response<BoxStream<nomad::TaskStatsResponse>>, Status> {
        let request = request.into_inner();
        let interval = duration(request.collection_interval, Duration::from_secs(1));
        let id = request.task_id;
        let samples = self
            .core()?
            .stats_stream(&id, interval)
            .map_err(status::from_core)?;
        Ok(Response::new(
            samples
                .map(move |usage| Ok(convert::task_stats(&id, &usage)))
                .boxed(),
        ))
    }

    async fn task_events(
        &self,
        _: Request<nomad::TaskEventsRequest>,
    ) -> Result<Response<BoxStream<nomad::DriverTaskEvent>>, Status> {
        let events = tokio_stream::wrappers::BroadcastStream::new(self.inner.events.subscribe());
        let stream = events
            .filter_map(|received| async move {
                match received {
                    Ok(event) => Some(Ok(convert::task_event(event))),
                    Err(BroadcastStreamRecvError::Lagged(skipped)) => {
                        tracing::warn!(skipped, "task events subscriber lagged; events dropped");
                        None
                    }
                }
            })
            .take_until(self.inner.shutdown.clone().cancelled_owned())
            .boxed();
        Ok(Response::new(stream))
    }

    async fn shutdown(
        &self,
        _: Request<nomad::ShutdownRequest>,
    ) -> Result<Response<nomad::ShutdownResponse>, Status> {
        // Tasks outlive the plugin: nothing to stop here. The process exits on the go-plugin
        // controller's Shutdown, which follows.
        Ok(Response::new(nomad::ShutdownResponse {}))
    }

    async fn signal_task(
        &self,
        request: Request<nomad::SignalTaskRequest>,
    ) -> Result<Response<nomad::SignalTaskResponse>, Status> {
        let request = request.into_inner();
        self.core()?
            .signal_task(&request.task_id, &request.signal)
            .await
            .map_err(status::from_core)?;
        Ok(Response::new(nomad::SignalTaskResponse {}))
    }

    async fn exec_task(
        &self,
        request: Request<nomad::ExecTaskRequest>,
    ) -> Result<Response<nomad::ExecTaskResponse>, Status> {
        let request = request.into_inner();
        if request.command.is_empty() {
            return Err(Status::invalid_argument("ExecTask needs a command"));
        }
        let timeout = duration(request.timeout, Duration::from_secs(60));
        let result = self
            .core()?
            .exec_collect(&request.task_id, request.command, timeout)
            .await
            .map_err(status::from_core)?;
        Ok(Response::new(nomad::ExecTaskResponse {
            stdout: result.stdout,
            stderr: result.stderr,
            result: Some(nomad::ExitResult {
                exit_code: i32::try_from(result.exit_code).unwrap_or(-1),
                signal: 0,
                oom_killed: false,
            }),
        }))
    }

    async fn exec_task_streaming(
        &self,
        request: Request<Streaming<nomad::ExecTaskStreamingRequest>>,
    ) -> Result<Response<BoxStream<nomad::ExecTaskStreamingResponse>>, Status> {
        let core = self.core()?;
        let stream = super::exec::bridge(core, request.into_inner()).await?;
        Ok(Response::new(stream))
    }
}
