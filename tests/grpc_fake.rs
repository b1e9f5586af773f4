//! Every RPC through the real tonic server on a temp unix socket, over the scriptable fake engine.
//! Fast and deterministic; the same paths run against real Docker in `docker_lifecycle.rs`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use polydev::assembly::Wiring;
use polydev::driver::{PolydevDriver, status::recoverable_detail};
use polydev::engine::fake::{FakeCall, FakeEngine, FakeExecResult, FakeOp, SignalTarget};
use polydev::engine::{EngineError, LogStream, StatsSample};
use polydev::pb::hashicorp::nomad::plugins::base::proto::{
    ConfigSchemaRequest, PluginInfoRequest, PluginType, base_plugin_client::BasePluginClient,
};
use polydev::pb::hashicorp::nomad::plugins::drivers::proto::{
    self as nomad, driver_client::DriverClient,
};
use support::logmon::Logmon;
use support::{TaskOptions, connect, duration, plugin_config, task_config};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

const IMAGE: &str = "polydev-test-runtime:latest";
const KEY: &str = "sk-fake-0123456789abcdef";
const SENTINEL: &str = "polydev-entrypoint: launch\n";

struct Harness {
    fake: FakeEngine,
    base: BasePluginClient<Channel>,
    driver: DriverClient<Channel>,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    /// Logmon stand-ins of every alloc dir made, by FIFO path.
    logmons: parking_lot::Mutex<std::collections::HashMap<std::path::PathBuf, Logmon>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn serve(
    fake: &FakeEngine,
    dir: &std::path::Path,
    name: &str,
) -> (
    BasePluginClient<Channel>,
    DriverClient<Channel>,
    CancellationToken,
) {
    let wiring = Wiring::in_process(
        Arc::new(fake.clone()),
        vec![("OPENAI_API_KEY".into(), KEY.into())],
    );
    let shutdown = CancellationToken::new();
    let routes = PolydevDriver::new(wiring, shutdown.clone()).routes();
    let socket = dir.join(name);
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let token = shutdown.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                token.cancelled_owned(),
            )
            .await
            .unwrap();
    });
    let (base, driver) = connect(&socket).await;
    (base, driver, shutdown)
}

async fn harness() -> Harness {
    harness_with(|data| plugin_config(IMAGE, data)).await
}

/// A harness configured with the plugin config `config(data_dir)`.
async fn harness_with(config: impl FnOnce(&std::path::Path) -> Vec<u8>) -> Harness {
    let fake = FakeEngine::new();
    fake.add_image(IMAGE);
    fake.set_version("20.10.24-fake");
    let dir = tempfile::tempdir().unwrap();
    let (mut base, driver, shutdown) = serve(&fake, dir.path(), "plugin.sock").await;
    let config = config(&dir.path().join("data"));
    base.set_config(support::set_config_request(config, false))
        .await
        .unwrap();
    Harness {
        fake,
        base,
        driver,
        dir,
        shutdown,
        logmons: Default::default(),
    }
}

impl Harness {
    /// An alloc dir laid out as Nomad does (task `t`), its FIFOs read by logmon stand-ins.
    fn alloc_dir(&self, name: &str) -> std::path::PathBuf {
        let dir = self.dir.path().join(name);
        for sub in ["alloc/logs", "t/local", "t/secrets"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let mut logmons = self.logmons.lock();
        for stream in ["stdout", "stderr"] {
            let path = dir.join(format!("alloc/logs/.t.{stream}.fifo"));
            if !logmons.contains_key(&path) {
                logmons.insert(path.clone(), Logmon::start(&path));
            }
        }
        dir
    }

    async fn start(
        &mut self,
        id: &str,
        options: &TaskOptions,
    ) -> Result<nomad::StartTaskResponse, tonic::Status> {
        let alloc = self.alloc_dir(id.split('/').next().unwrap());
        self.driver
            .start_task(nomad::StartTaskRequest {
                task: Some(task_config(id, Some(&alloc), options)),
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn container_of(&mut self, id: &str) -> String {
        let inspected = self
            .driver
            .inspect_task(nomad::InspectTaskRequest { task_id: id.into() })
            .await
            .unwrap()
            .into_inner();
        inspected.driver.unwrap().attributes["container_id"].clone()
    }

    async fn wait(&mut self, id: &str) -> nomad::WaitTaskResponse {
        self.driver
            .wait_task(nomad::WaitTaskRequest { task_id: id.into() })
            .await
            .unwrap()
            .into_inner()
    }

    /// What the task's `stream` FIFO has received so far.
    fn log_file(&self, id: &str, stream: &str) -> Vec<u8> {
        let alloc = id.split('/').next().unwrap();
        let name = id.split('/').nth(1).unwrap();
        let path = self
            .dir
            .path()
            .join(format!("{alloc}/alloc/logs/.{name}.{stream}.fifo"));
        self.logmons
            .lock()
            .get(&path)
            .map(Logmon::received)
            .unwrap_or_default()
    }
}

fn sh(args: &[&str]) -> TaskOptions {
    TaskOptions::new("openai", "sh", args)
}

#[tokio::test]
async fn plugin_info_schemas_and_capabilities() {
    let mut h = harness().await;
    let info = h
        .base
        .plugin_info(PluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.r#type, PluginType::Driver as i32);
    assert_eq!(info.name, "polydev");
    assert_eq!(info.plugin_api_versions, vec!["0.1.0".to_string()]);
    assert_eq!(info.plugin_version, env!("CARGO_PKG_VERSION"));
    assert!(
        h.base
            .config_schema(ConfigSchemaRequest {})
            .await
            .unwrap()
            .into_inner()
            .spec
            .is_some()
    );
    let schema = h
        .driver
        .task_config_schema(nomad::TaskConfigSchemaRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(schema.spec.is_some());
    let caps = h
        .driver
        .capabilities(nomad::CapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .unwrap();
    assert!(caps.send_signals && caps.exec);
    assert_eq!(
        caps.fs_isolation,
        nomad::driver_capabilities::FsIsolation::Image as i32
    );
    h.driver.init(nomad::InitRequest {}).await.unwrap();
    h.driver.shutdown(nomad::ShutdownRequest {}).await.unwrap();
}

#[tokio::test]
async fn task_rpcs_before_set_config_fail_clearly_and_set_config_is_idempotent() {
    let fake = FakeEngine::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut base, mut driver, shutdown) = serve(&fake, dir.path(), "p.sock").await;
    let err = driver
        .start_task(nomad::StartTaskRequest {
            task: Some(task_config("a/t/1", None, &sh(&["-c", "true"]))),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("SetConfig"), "{}", err.message());
    let request =
        support::set_config_request(plugin_config(IMAGE, &dir.path().join("data")), false);
    base.set_config(request.clone()).await.unwrap();
    base.set_config(request).await.unwrap();
    // A config that is not valid msgpack is refused with a message, not a panic.
    let err = base
        .set_config(support::set_config_request(vec![0xc1, 0x00], false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    shutdown.cancel();
}

/// One HTTP/1.1 request to `port` on the host's loopback; the answer's status line, or the
/// connection error.
async fn http_status(port: u16, request: &str) -> Result<String, std::io::Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("the broker answers")?;
    Ok(String::from_utf8_lossy(&answer[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

#[tokio::test]
async fn a_broker_mode_task_gets_a_placeholder_no_network_and_a_broker_until_it_exits() {
    let mut h = harness_with(|data| {
        support::plugin_config_for(
            IMAGE,
            data,
            &support::PoolOptions::target(0),
            &Default::default(),
        )
    })
    .await;
    let started = h.start("b1/t/1", &sh(&["-c", "sleep 60"])).await.unwrap();
    let handle = started.handle.unwrap();
    let state = polydev::core::DriverState::decode(&handle.driver_state).unwrap();
    let port = state
        .broker_port
        .expect("a broker port in the driver state");
    let container = h.container_of("b1/t/1").await;
    let created = h.fake.spec(&container).unwrap();
    assert_eq!(created.network_mode.as_deref(), Some("none"));
    let spec = String::from_utf8(h.fake.launch_spec(&container).unwrap()).unwrap();
    use base64::Engine;
    let encoded_key = base64::engine::general_purpose::STANDARD.encode(KEY);
    assert!(!spec.contains(KEY) && !spec.contains(&encoded_key));
    let env: Vec<String> = spec
        .lines()
        .filter_map(|l| l.strip_prefix("env "))
        .map(|b| String::from_utf8(base64_decode(b)).unwrap())
        .collect();
    let placeholder = polydev::core::cli_launch::PLACEHOLDER;
    assert!(
        env.contains(&format!("OPENAI_API_KEY={placeholder}")),
        "{env:?}"
    );
    assert!(env.iter().all(|entry| !entry.contains(KEY)), "{env:?}");
    let files: Vec<&str> = spec.lines().filter(|l| l.starts_with("file ")).collect();
    assert_eq!(files.len(), 1, "codex's config file: {spec}");

    // The broker serves (here on the host's loopback: the fake has no network namespaces) and
    // refuses a proxy request for another host.
    let status = http_status(
        port,
        "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(status.contains(" 400 "), "{status}");

    h.fake.exit(&container, 0, false).unwrap();
    h.wait("b1/t/1").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while http_status(port, "GET / HTTP/1.1\r\n\r\n").await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the broker still answers after the exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn start_runs_a_task_and_wait_reports_its_exit_to_every_waiter() {
    let mut h = harness().await;
    let options = sh(&["-c", "echo hi"]);
    let started = h.start("a1/t/1", &options).await.unwrap();
    let handle = started.handle.unwrap();
    assert!(handle.version >= 1);
    let config = handle.config.unwrap();
    assert_eq!(config.id, "a1/t/1");
    assert_eq!(config.msgpack_driver_config, options.msgpack());
    assert!(!String::from_utf8_lossy(&handle.driver_state).contains(KEY));

    let container = h.container_of("a1/t/1").await;
    // The credential reached the container only through the launch spec.
    let spec = h.fake.launch_spec(&container).unwrap();
    let created = h.fake.spec(&container).unwrap();
    assert!(!format!("{created:?}").contains(KEY));
    let spec_text = String::from_utf8(spec).unwrap();
    assert!(spec_text.starts_with("polydev-launch-v2\n") && spec_text.ends_with("end\n"));
    let decoded: Vec<String> = spec_text
        .lines()
        .filter_map(|l| l.strip_prefix("env "))
        .map(|b| String::from_utf8(base64_decode(b)).unwrap())
        .collect();
    assert!(decoded.contains(&format!("OPENAI_API_KEY={KEY}")));
    assert!(decoded.contains(&"PROVIDER=openai".to_string()));
    assert_eq!(created.user, "2100000000:2100000000");
    assert_eq!(created.limits.memory_bytes, 128 << 20);

    let mut waiters = Vec::new();
    for _ in 0..3 {
        let mut client = h.driver.clone();
        waiters.push(tokio::spawn(async move {
            client
                .wait_task(nomad::WaitTaskRequest {
                    task_id: "a1/t/1".into(),
                })
                .await
                .unwrap()
                .into_inner()
        }));
    }
    h.fake
        .emit(&container, LogStream::Stderr, "banner\n")
        .unwrap();
    h.fake
        .emit(&container, LogStream::Stderr, SENTINEL)
        .unwrap();
    h.fake.emit(&container, LogStream::Stdout, "out\n").unwrap();
    h.fake
        .emit(&container, LogStream::Stderr, format!("key is {KEY}\n"))
        .unwrap();
    h.fake.exit(&container, 3, false).unwrap();
    for waiter in waiters {
        let result = waiter.await.unwrap();
        assert_eq!(result.result.unwrap().exit_code, 3);
        assert!(result.err.contains('3'));
    }
    // After the exit, WaitTask answers at once; the logs are complete and redacted.
    let again = h.wait("a1/t/1").await;
    assert_eq!(again.result.unwrap().exit_code, 3);
    assert_eq!(h.log_file("a1/t/1", "stdout"), b"out\n");
    assert_eq!(h.log_file("a1/t/1", "stderr"), b"key is [REDACTED]\n");

    let inspected = h
        .driver
        .inspect_task(nomad::InspectTaskRequest {
            task_id: "a1/t/1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let status = inspected.task.unwrap();
    assert_eq!(status.state, nomad::TaskState::Exited as i32);
    assert!(status.started_at.is_some() && status.completed_at.is_some());

    h.driver
        .destroy_task(nomad::DestroyTaskRequest {
            task_id: "a1/t/1".into(),
            force: false,
        })
        .await
        .unwrap();
    assert!(h.fake.container_ids().is_empty());
    h.driver
        .destroy_task(nomad::DestroyTaskRequest {
            task_id: "a1/t/1".into(),
            force: true,
        })
        .await
        .unwrap();
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

#[tokio::test]
async fn unknown_tasks_stop_and_destroy_ok_other_rpcs_not_found() {
    let mut h = harness().await;
    let id = "nope/t/1".to_string();
    h.driver
        .stop_task(nomad::StopTaskRequest {
            task_id: id.clone(),
            timeout: None,
            signal: String::new(),
        })
        .await
        .unwrap();
    h.driver
        .destroy_task(nomad::DestroyTaskRequest {
            task_id: id.clone(),
            force: true,
        })
        .await
        .unwrap();
    let codes = [
        h.driver
            .wait_task(nomad::WaitTaskRequest {
                task_id: id.clone(),
            })
            .await
            .unwrap_err()
            .code(),
        h.driver
            .inspect_task(nomad::InspectTaskRequest {
                task_id: id.clone(),
            })
            .await
            .unwrap_err()
            .code(),
        h.driver
            .signal_task(nomad::SignalTaskRequest {
                task_id: id.clone(),
                signal: "SIGHUP".into(),
            })
            .await
            .unwrap_err()
            .code(),
        h.driver
            .task_stats(nomad::TaskStatsRequest {
                task_id: id.clone(),
                collection_interval: None,
            })
            .await
            .err()
            .unwrap()
            .code(),
    ];
    assert_eq!(codes, [Code::NotFound; 4]);
}

#[tokio::test]
async fn double_start_is_refused_and_bad_task_configs_name_the_field() {
    let mut h = harness().await;
    h.start("d/t/1", &sh(&["-c", "sleep 1"])).await.unwrap();
    let err = h.start("d/t/1", &sh(&["-c", "sleep 1"])).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let err = h
        .start("d/t/2", &TaskOptions::new("opnai", "sh", &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("provider"), "{}", err.message());
    let mut bad_user = sh(&[]);
    bad_user.user_id = Some("../etc".into());
    let err = h.start("d/t/3", &bad_user).await.unwrap_err();
    assert!(err.message().contains("user_id"), "{}", err.message());
    // Neither failure created a container.
    assert_eq!(h.fake.container_ids().len(), 1);
}

#[tokio::test]
async fn missing_credential_fails_without_a_container_and_names_the_variable() {
    let mut h = harness().await;
    let err = h
        .start(
            "m/t/1",
            &TaskOptions::new("anthropic", "claude", &["--version"]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("ANTHROPIC_API_KEY"),
        "{}",
        err.message()
    );
    assert_eq!(recoverable_detail(&err), None);
    assert!(h.fake.container_ids().is_empty());
}

#[tokio::test]
async fn engine_outage_is_retryable_and_leaks_nothing() {
    let mut h = harness().await;
    h.fake.fail_next(
        FakeOp::Create,
        EngineError::Unavailable("daemon down".into()),
    );
    let err = h.start("o/t/1", &sh(&[])).await.unwrap_err();
    assert_eq!(recoverable_detail(&err), Some(true));
    assert_ne!(err.code(), Code::Unavailable);

    h.fake.fail_next(
        FakeOp::SendLaunchSpec,
        EngineError::Unavailable("attach broke".into()),
    );
    let err = h.start("o/t/2", &sh(&[])).await.unwrap_err();
    assert_eq!(recoverable_detail(&err), Some(true));
    assert!(
        h.fake.container_ids().is_empty(),
        "the half-started container was removed"
    );

    h.fake.fail_next(
        FakeOp::Start,
        EngineError::Unavailable("start failed".into()),
    );
    h.start("o/t/3", &sh(&[])).await.unwrap_err();
    assert!(h.fake.container_ids().is_empty());

    h.fake.remove_image(IMAGE);
    let err = h.start("o/t/4", &sh(&[])).await.unwrap_err();
    assert!(err.message().contains(IMAGE), "{}", err.message());
    assert_eq!(recoverable_detail(&err), None);
}

#[tokio::test]
async fn stop_sends_the_signal_then_sigkill_after_the_timeout() {
    let mut h = harness().await;
    h.start("s/t/1", &sh(&[])).await.unwrap();
    let container = h.container_of("s/t/1").await;
    let mut events = support::task_events(&h.driver).await;
    h.driver
        .stop_task(nomad::StopTaskRequest {
            task_id: "s/t/1".into(),
            timeout: Some(duration(Duration::from_millis(300))),
            signal: "SIGINT".into(),
        })
        .await
        .unwrap();
    let kills: Vec<String> = h
        .fake
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            FakeCall::Kill { id, signal } if id == container => Some(signal),
            _ => None,
        })
        .collect();
    assert_eq!(kills, vec!["SIGINT".to_string(), "SIGKILL".to_string()]);
    assert_eq!(h.wait("s/t/1").await.result.unwrap().exit_code, 137);
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(event.message.contains("SIGKILL"), "{}", event.message);
    assert_eq!(event.alloc_id, "s");
    assert!(event.timestamp.is_some());

    // A task that honours SIGTERM is not killed.
    h.fake.exit_on_signal(SignalTarget::All, "SIGTERM", 143);
    h.start("s/t/2", &sh(&[])).await.unwrap();
    h.fake.clear_calls();
    h.driver
        .stop_task(nomad::StopTaskRequest {
            task_id: "s/t/2".into(),
            timeout: Some(duration(Duration::from_secs(5))),
            signal: String::new(),
        })
        .await
        .unwrap();
    assert!(
        !h.fake
            .calls()
            .iter()
            .any(|c| matches!(c, FakeCall::Kill { signal, .. } if signal == "SIGKILL"))
    );
    assert_eq!(h.wait("s/t/2").await.result.unwrap().exit_code, 143);
    // Stopping an exited task is fine.
    h.driver
        .stop_task(nomad::StopTaskRequest {
            task_id: "s/t/2".into(),
            timeout: None,
            signal: String::new(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn destroy_refuses_a_running_task_without_force() {
    let mut h = harness().await;
    h.start("x/t/1", &sh(&[])).await.unwrap();
    let err = h
        .driver
        .destroy_task(nomad::DestroyTaskRequest {
            task_id: "x/t/1".into(),
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let waiter = {
        let mut client = h.driver.clone();
        tokio::spawn(async move {
            client
                .wait_task(nomad::WaitTaskRequest {
                    task_id: "x/t/1".into(),
                })
                .await
        })
    };
    h.driver
        .destroy_task(nomad::DestroyTaskRequest {
            task_id: "x/t/1".into(),
            force: true,
        })
        .await
        .unwrap();
    assert!(h.fake.container_ids().is_empty());
    // A WaitTask that was blocked returns instead of hanging.
    let result = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .into_inner();
    assert!(result.result.is_some());
}

#[tokio::test]
async fn signal_task_delivers_named_signals_and_rejects_unknown_ones() {
    let mut h = harness().await;
    h.start("g/t/1", &sh(&[])).await.unwrap();
    let container = h.container_of("g/t/1").await;
    h.driver
        .signal_task(nomad::SignalTaskRequest {
            task_id: "g/t/1".into(),
            signal: "hup".into(),
        })
        .await
        .unwrap();
    assert!(h.fake.calls().contains(&FakeCall::Kill {
        id: container,
        signal: "SIGHUP".into()
    }));
    let err = h
        .driver
        .signal_task(nomad::SignalTaskRequest {
            task_id: "g/t/1".into(),
            signal: "SIGBOGUS".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// A task still running from a release that gave it a writable `/alloc/logs` (its handle has no
/// `alloc_logs_read_only`) is not adopted: its container is removed and RecoverTask fails, so
/// Nomad starts it again in a container whose logs dir is read-only.
#[tokio::test]
async fn a_running_task_from_a_release_with_writable_logs_is_replaced_not_recovered() {
    let mut h = harness().await;
    let started = h.start("o/t/1", &sh(&[])).await.unwrap();
    let container = h.container_of("o/t/1").await;
    let mut handle = started.handle.unwrap();
    let mut state = polydev::core::DriverState::decode(&handle.driver_state).unwrap();
    assert_eq!(
        state.alloc_logs_read_only,
        Some(true),
        "this release says so"
    );
    state.alloc_logs_read_only = None;
    handle.driver_state = state.encode();
    h.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (mut base, mut driver, _shutdown) = serve(&h.fake, h.dir.path(), "second.sock").await;
    let config = plugin_config(IMAGE, &h.dir.path().join("data"));
    base.set_config(support::set_config_request(config, false))
        .await
        .unwrap();
    let err = driver
        .recover_task(support::recover_after_agent_restart(handle))
        .await
        .unwrap_err();
    assert!(
        err.message().contains("left its /alloc/logs writable"),
        "{err:?}"
    );
    assert!(
        !h.fake.container_ids().contains(&container),
        "the old container is gone"
    );
}

#[tokio::test]
async fn recover_in_a_new_plugin_process_resumes_wait_and_logs() {
    let mut h = harness().await;
    let started = h.start("r/t/1", &sh(&[])).await.unwrap();
    let container = h.container_of("r/t/1").await;
    h.fake
        .emit(&container, LogStream::Stderr, SENTINEL)
        .unwrap();
    h.fake
        .emit(&container, LogStream::Stdout, "before\n")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The old plugin process goes away; its tasks keep running.
    h.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.fake
        .emit(&container, LogStream::Stdout, "while away\n")
        .unwrap();

    let (mut base, mut driver, shutdown) = serve(&h.fake, h.dir.path(), "second.sock").await;
    let config = plugin_config(IMAGE, &h.dir.path().join("data"));
    base.set_config(support::set_config_request(config, false))
        .await
        .unwrap();
    let started_state = started.handle.as_ref().unwrap().driver_state.clone();
    let recover = support::recover_after_agent_restart(started.handle.unwrap());
    driver.recover_task(recover.clone()).await.unwrap();
    driver.recover_task(recover).await.unwrap();
    h.fake
        .emit(&container, LogStream::Stdout, "after\n")
        .unwrap();
    h.fake.exit(&container, 0, false).unwrap();
    let result = driver
        .wait_task(nomad::WaitTaskRequest {
            task_id: "r/t/1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(result.result.unwrap().exit_code, 0);
    assert_eq!(result.err, "");
    assert_eq!(
        h.log_file("r/t/1", "stdout"),
        b"before\nwhile away\nafter\n"
    );

    // A handle whose container is gone cannot be recovered.
    driver
        .destroy_task(nomad::DestroyTaskRequest {
            task_id: "r/t/1".into(),
            force: true,
        })
        .await
        .unwrap();
    let err = driver
        .recover_task(nomad::RecoverTaskRequest {
            task_id: String::new(),
            handle: Some(nomad::TaskHandle {
                version: 1,
                config: Some(task_config("r/t/3", None, &sh(&[]))),
                state: 1,
                driver_state: polydev::core::DriverState {
                    container_id: "fake-999".into(),
                    provider: "openai".into(),
                    namespace: "default".into(),
                    user_id: None,
                    started_at_unix_nanos: 0,
                    logs: None,
                    redacted_variables: vec![],
                    slot: None,
                    broker_port: None,
                    alloc_logs_read_only: Some(false),
                }
                .encode(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = driver
        .recover_task(nomad::RecoverTaskRequest {
            task_id: String::new(),
            handle: Some(nomad::TaskHandle {
                version: 1,
                config: Some(task_config("r/t/4", None, &sh(&[]))),
                state: 1,
                driver_state: vec![1, 2, 3],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // A handle written by a newer polydev (a downgrade) is refused, not guessed at.
    let newer = driver
        .recover_task(nomad::RecoverTaskRequest {
            task_id: String::new(),
            handle: Some(nomad::TaskHandle {
                version: polydev::core::HANDLE_VERSION + 1,
                config: Some(task_config("r/t/5", None, &sh(&[]))),
                state: 1,
                driver_state: started_state,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(newer.code(), Code::FailedPrecondition);
    assert!(newer.message().contains("newer polydev"), "{newer:?}");
    shutdown.cancel();
}

#[tokio::test]
async fn stats_stream_one_sample_per_interval_until_exit() {
    let mut h = harness().await;
    h.fake.set_stats(StatsSample {
        cpu_total_ns: 1_000,
        system_cpu_ns: 10_000,
        online_cpus: 2,
        memory_usage: 4096,
        memory_stats: [("rss".to_string(), 1024), ("cache".to_string(), 2048)].into(),
        ..Default::default()
    });
    h.start("t/t/1", &sh(&[])).await.unwrap();
    let container = h.container_of("t/t/1").await;
    let mut stats = h
        .driver
        .task_stats(nomad::TaskStatsRequest {
            task_id: "t/t/1".into(),
            collection_interval: Some(duration(Duration::from_millis(100))),
        })
        .await
        .unwrap()
        .into_inner();
    for _ in 0..2 {
        let sample = stats.next().await.unwrap().unwrap().stats.unwrap();
        assert!(sample.timestamp.is_some());
        let usage = sample.agg_resource_usage.unwrap();
        let memory = usage.memory.unwrap();
        assert_eq!((memory.rss, memory.cache, memory.usage), (1024, 2048, 4096));
        assert!(
            usage
                .cpu
                .unwrap()
                .measured_fields
                .contains(&(nomad::cpu_usage::Fields::Percent as i32))
        );
    }
    h.fake.exit(&container, 0, false).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while stats.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stats stream ends when the task exits");
    // Nomad's stats hook calls again after a stream ends; for an exited task the stream ends
    // at once and cleanly (an error status is logged at ERROR by the client).
    let mut again = h
        .driver
        .task_stats(nomad::TaskStatsRequest {
            task_id: "t/t/1".into(),
            collection_interval: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.message().await.unwrap().is_none());
}

#[tokio::test]
async fn exec_task_returns_output_and_exit_code() {
    let mut h = harness().await;
    h.fake
        .set_exec_handler(Arc::new(|_, argv: &[String]| FakeExecResult {
            stdout: argv.join(" ").into_bytes(),
            stderr: b"err".to_vec(),
            exit_code: 7,
        }));
    h.start("e/t/1", &sh(&[])).await.unwrap();
    let response = h
        .driver
        .exec_task(nomad::ExecTaskRequest {
            task_id: "e/t/1".into(),
            command: vec!["echo".into(), "x".into()],
            timeout: Some(duration(Duration::from_secs(5))),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.stdout, b"echo x");
    assert_eq!(response.stderr, b"err");
    assert_eq!(response.result.unwrap().exit_code, 7);
    let err = h
        .driver
        .exec_task(nomad::ExecTaskRequest {
            task_id: "e/t/1".into(),
            command: vec![],
            timeout: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn dev_null_log_paths_run_without_log_forwarding() {
    let mut h = harness().await;
    // `logs { disabled = true }` gives /dev/null for both paths.
    let task = task_config("n/t/1", None, &sh(&["-c", "true"]));
    assert_eq!(task.stdout_path, "/dev/null");
    h.driver
        .start_task(nomad::StartTaskRequest { task: Some(task) })
        .await
        .unwrap();
    let container = h.container_of("n/t/1").await;
    h.fake
        .emit(&container, LogStream::Stdout, "ignored\n")
        .unwrap();
    h.fake.exit(&container, 0, false).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), h.wait("n/t/1"))
        .await
        .unwrap();
    assert_eq!(result.result.unwrap().exit_code, 0);
    assert!(
        !h.fake
            .calls()
            .iter()
            .any(|c| matches!(c, FakeCall::Logs { .. })),
        "no pump ran"
    );
}

#[tokio::test]
async fn exec_streaming_sends_output_then_closes_then_the_exit_code() {
    let mut h = harness().await;
    h.fake
        .set_exec_handler(Arc::new(|_, argv: &[String]| FakeExecResult {
            stdout: format!("ran {}", argv.join(" ")).into_bytes(),
            stderr: b"warn".to_vec(),
            exit_code: 3,
        }));
    h.start("x/t/9", &sh(&[])).await.unwrap();
    let setup = nomad::ExecTaskStreamingRequest {
        setup: Some(nomad::exec_task_streaming_request::Setup {
            task_id: "x/t/9".into(),
            command: vec!["ls".into()],
            tty: false,
        }),
        tty_size: None,
        stdin: None,
    };
    let heartbeat = nomad::ExecTaskStreamingRequest::default();
    let requests = futures::stream::iter(vec![setup, heartbeat]).chain(futures::stream::pending());
    let mut responses = h
        .driver
        .exec_task_streaming(requests)
        .await
        .unwrap()
        .into_inner();
    let (mut stdout, mut stderr, mut closed, mut exit) = (Vec::new(), Vec::new(), 0, None);
    while let Some(message) = tokio::time::timeout(Duration::from_secs(5), responses.next())
        .await
        .unwrap()
    {
        let message = message.unwrap();
        for (io, sink) in [(message.stdout, &mut stdout), (message.stderr, &mut stderr)] {
            if let Some(io) = io {
                sink.extend_from_slice(&io.data);
                closed += usize::from(io.close);
            }
        }
        if message.exited {
            exit = message.result.map(|r| r.exit_code);
            break;
        }
    }
    assert_eq!(
        (stdout.as_slice(), stderr.as_slice()),
        (&b"ran ls"[..], &b"warn"[..])
    );
    assert_eq!(closed, 2, "both streams are closed before the exit frame");
    assert_eq!(exit, Some(3));
}

#[tokio::test]
async fn fingerprint_reports_health_and_attributes_then_follows_the_engine() {
    let mut h = harness().await;
    let mut fingerprints = h
        .driver
        .fingerprint(nomad::FingerprintRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = fingerprints.next().await.unwrap().unwrap();
    assert_eq!(
        first.health,
        nomad::fingerprint_response::HealthState::Healthy as i32
    );
    assert_eq!(first.health_description, "Healthy");
    let attr = |fp: &nomad::FingerprintResponse, key: &str| {
        fp.attributes.get(key).and_then(|a| a.value.clone())
    };
    use polydev::pb::hashicorp::nomad::plugins::shared::structs::attribute::Value;
    assert_eq!(
        attr(&first, "driver.polydev.docker.version"),
        Some(Value::StringVal("20.10.24-fake".into()))
    );
    assert_eq!(
        attr(&first, "driver.polydev.provider.openai.image_present"),
        Some(Value::BoolVal(true))
    );
    assert!(attr(&first, "driver.polydev.version").is_some());
    assert_eq!(
        attr(&first, "driver.polydev.pool.openai.target"),
        Some(Value::IntVal(0))
    );
    assert_eq!(
        attr(&first, "driver.polydev.pool.openai.idle"),
        Some(Value::IntVal(0))
    );
    h.fake.set_unavailable(true);
    let next = tokio::time::timeout(Duration::from_secs(15), fingerprints.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        next.health,
        nomad::fingerprint_response::HealthState::Unhealthy as i32
    );
    for needed in [
        "cannot reach the Docker engine at unix:///var/run/docker.sock",
        "docker_endpoint",
    ] {
        assert!(
            next.health_description.contains(needed),
            "{}",
            next.health_description
        );
    }
    // Back by itself once the engine answers again.
    h.fake.set_unavailable(false);
    let back = tokio::time::timeout(Duration::from_secs(15), fingerprints.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        back.health,
        nomad::fingerprint_response::HealthState::Healthy as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_starts_beyond_cold_start_parallelism_wait_their_turn_and_all_start() {
    let h = harness_with(|data| {
        support::with_field(
            &plugin_config(IMAGE, data),
            "cold_start_parallelism",
            rmpv::Value::from(2),
        )
    })
    .await;
    // Each start takes a while, as a real engine's does, so six StartTasks overlap.
    h.fake.set_start_delay(Duration::from_millis(100));
    let mut events = support::task_events(&h.driver).await;
    let mut starts = tokio::task::JoinSet::new();
    for i in 0..6 {
        let id = format!("q{i}/t/1");
        let task = task_config(&id, Some(&h.alloc_dir(&format!("q{i}"))), &sh(&[]));
        let mut driver = h.driver.clone();
        starts.spawn(async move {
            driver
                .start_task(nomad::StartTaskRequest { task: Some(task) })
                .await
        });
    }
    while let Some(started) = starts.join_next().await {
        started.unwrap().expect("every queued cold start starts");
    }
    assert_eq!(
        h.fake.peak_concurrent_starts(),
        2,
        "two container starts at a time, never more"
    );
    let mut waited = 0;
    while let Ok(Some(Ok(event))) =
        tokio::time::timeout(Duration::from_millis(500), events.next()).await
    {
        if event.message.contains("waiting to start") {
            assert!(
                event.message.contains("cold_start_parallelism"),
                "{}",
                event.message
            );
            waited += 1;
        }
    }
    assert!(
        waited >= 1,
        "a StartTask that waited for its turn says so in a task event"
    );
}
