//! Faults in the middle of a burst of 20 StartTasks, against an engine of the test's own
//! (`support::engine`): the plugin is `kill -9`ed, or the engine restarts. Afterwards every task
//! either succeeded or failed with a message naming the cause, and nothing is leaked: no
//! polydev container but the warm pool's idle ones, no slot mount but theirs, no log forwarder.
//! Each case is bounded in time and stops by itself.

mod support;

use std::time::{Duration, Instant};

use polydev::pb::hashicorp::nomad::plugins::drivers::proto::driver_client::DriverClient;
use support::engine::{OwnEngine, bounded_wait, plugin_on};
use support::real::Plugin;
use support::tasks::{Setup, Started, script, try_start};
use support::{PoolOptions, recover_after_agent_restart};
use tonic::transport::Channel;

const BURST: usize = 20;

/// The burst's tasks: a second of work, then a word.
fn work() -> support::TaskOptions {
    script("sleep 1; echo finished")
}

fn pool() -> PoolOptions {
    // The burst runs the pool dry and it grows; scale_down_after brings it back to its target
    // of 4 within seconds, which is what the leak checks wait for.
    PoolOptions {
        orphan_grace: Some("2s"),
        scale_down_after: "2s",
        ..PoolOptions::target(4)
    }
}

/// Start the burst; `fault` runs once `after` StartTasks have returned (what it returns is
/// handed back).
async fn burst<T: Send + 'static>(
    driver: &DriverClient<Channel>,
    after: usize,
    fault: impl FnOnce() -> T + Send + 'static,
) -> (Vec<Result<Started, tonic::Status>>, T) {
    let (returned, mut seen) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut starts = tokio::task::JoinSet::new();
    for i in 0..BURST {
        let (mut driver, returned) = (driver.clone(), returned.clone());
        starts.spawn(async move {
            let started = try_start(&mut driver, &format!("b{i}"), work(), 64).await;
            let _ = returned.send(());
            started
        });
    }
    drop(returned);
    let trigger = tokio::spawn(async move {
        for _ in 0..after {
            if seen.recv().await.is_none() {
                break;
            }
        }
        tokio::task::spawn_blocking(fault).await.unwrap()
    });
    let mut results = Vec::new();
    while let Some(done) = starts.join_next().await {
        results.push(done.unwrap());
    }
    (results, trigger.await.unwrap())
}

/// What must hold once the dust settled: in the engine only running containers, as many as the
/// plugin reports idle in its pool; no slot mount (claimed slots are the only host mounts); no
/// forwarder of this plugin.
async fn assert_nothing_leaked(engine: &OwnEngine, s: &Setup) {
    let data_dir = s.data_dir.path().to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let containers = engine.polydev_containers();
        let idle = support::tasks::reported_idle(&s.driver, "openai")
            .await
            .unwrap_or(-1);
        let all_running = containers.iter().all(|(_, state)| state == "running");
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let slot_mounts = mounts
            .lines()
            .filter(|line| line.contains(&format!("{data_dir}/slots/")))
            .count();
        let forwarders = forwarders_of(&data_dir);
        if all_running && containers.len() as i64 == idle && slot_mounts == 0 && forwarders == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "leaked: containers {containers:?} with {idle} idle, {slot_mounts} slot mounts, \
             {forwarders} forwarders"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn forwarders_of(data_dir: &str) -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|argv| String::from_utf8_lossy(&argv).replace('\0', " "))
        .filter(|argv| argv.contains("forward-logs") && argv.contains(data_dir))
        .count()
}

/// End every task: wait for it (bounded), check how it ended, destroy it.
async fn finish_all(
    driver: &mut DriverClient<Channel>,
    started: Vec<Started>,
    causes: &[&str],
) -> (usize, usize) {
    let (mut succeeded, mut failed) = (0, 0);
    for task in started {
        let result = bounded_wait(driver, &task.id).await;
        let code = result.result.map(|r| r.exit_code).unwrap_or(-1);
        if code == 0 && result.err.is_empty() {
            succeeded += 1;
        } else {
            failed += 1;
            assert!(
                causes.iter().any(|cause| result.err.contains(cause)),
                "task {} failed without naming the cause: {result:?}",
                task.id
            );
        }
        support::tasks::destroy(driver, &task.id, &task.container).await;
    }
    (succeeded, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_kill_9_in_the_middle_of_a_burst_loses_no_task_silently_and_leaks_nothing() {
    let engine = OwnEngine::start(false);
    let mut s = plugin_on(&engine, &pool()).await;
    support::tasks::wait_for_reported_idle(&s.driver, "openai", 4).await;
    let pid = s.plugin.pid();
    let (results, ()) = burst(&s.driver, 6, move || {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    })
    .await;
    s.plugin.kill9();
    let (started, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    // A StartTask the dead plugin never answered fails at the transport: Nomad sees the
    // plugin gone and starts the task again on the new one.
    for refusal in &refused {
        let status = refusal.as_ref().err().unwrap();
        assert!(
            matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
                    | tonic::Code::Internal
            ),
            "{status:?}"
        );
    }
    let started: Vec<Started> = started.into_iter().map(Result::unwrap).collect();

    // Nomad's client relaunches the plugin and recovers every task it had started.
    let plugin = Plugin::spawn(&[("OPENAI_API_KEY", s.key.as_str())]);
    let (mut base, mut driver) = plugin.clients().await;
    let config = support::plugin_config_for(
        support::real::TEST_IMAGE,
        s.data_dir.path(),
        &pool(),
        &Default::default(),
    );
    let config = support::with_field(
        &config,
        "docker_endpoint",
        rmpv::Value::from(engine.endpoint()),
    );
    base.set_config(support::set_config_request(config, true))
        .await
        .unwrap();
    for task in &started {
        driver
            .recover_task(recover_after_agent_restart(task.handle.clone()))
            .await
            .unwrap_or_else(|status| panic!("RecoverTask {}: {status:?}", task.id));
    }
    s.plugin = plugin;
    s.driver = driver.clone();
    let (succeeded, failed) = finish_all(&mut driver, started, &[]).await;
    eprintln!(
        "kill -9 mid-burst: {succeeded} tasks recovered and succeeded, {failed} failed, {} StartTasks cut off",
        refused.len()
    );
    assert!(succeeded > 0, "no task got through");
    // Containers the dead plugin made for StartTasks that never returned go with the orphan
    // sweep (orphan_grace 2s); claimed slots with them.
    assert_nothing_leaked(&engine, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_restart_in_the_middle_of_a_burst_fails_tasks_only_with_the_cause_and_leaks_nothing()
 {
    let mut engine = OwnEngine::start(false);
    let mut s = plugin_on(&engine, &pool()).await;
    support::tasks::wait_for_reported_idle(&s.driver, "openai", 4).await;
    let (results, engine) = burst(&s.driver, 6, move || {
        engine.restart();
        engine
    })
    .await;
    let (started, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    for refusal in &refused {
        let status = refusal.as_ref().err().unwrap();
        assert!(
            status.message().contains("engine") || status.message().contains("container"),
            "a StartTask failed without naming the cause: {status:?}"
        );
        assert_eq!(
            polydev::driver::status::recoverable_detail(status),
            Some(true),
            "an engine outage is worth retrying: {status:?}"
        );
    }
    let started: Vec<Started> = started.into_iter().map(Result::unwrap).collect();
    let (succeeded, failed) = finish_all(
        &mut s.driver,
        started,
        &["the Docker engine stopped or restarted", "container"],
    )
    .await;
    eprintln!(
        "engine restart mid-burst: {succeeded} succeeded, {failed} failed with the engine's message, {} StartTasks refused (retryable)",
        refused.len()
    );
    support::tasks::wait_for_reported_idle(&s.driver, "openai", 4).await;
    assert_nothing_leaked(&engine, &s).await;
}
