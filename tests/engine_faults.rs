//! Docker engine faults, through the real plugin binary, against an engine of the test's own
//! (`support::engine`): the tests stop and restart it, which the engine the rest of the suite
//! uses must never see. Every wait is bounded; each test removes what it made.
//!
//! - An engine restart without live-restore: the running task ends with the engine's message
//!   (its real exit code and signal); health goes unhealthy, then healthy; the pool refills,
//!   its error clears, no stopped polydev container is left, and the next StartTask succeeds.
//! - With live-restore: the task keeps running, its log loses and repeats no line, and the pool's
//!   idle containers are still usable.
//! - An engine that is not there when the plugin starts: unhealthy with the socket path and the
//!   fix, StartTask fails retryable, and both recover by themselves when the engine appears.

mod support;

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

use polydev::driver::status::recoverable_detail;
use polydev::pb::hashicorp::nomad::plugins::drivers::proto::{
    self as nomad, fingerprint_response::HealthState,
};
use polydev::pb::hashicorp::nomad::plugins::shared::structs::attribute::Value as AttrValue;
use support::engine::{OwnEngine, bounded_wait, collect_fingerprints, plugin_on};
use support::real::AllocDir;
use support::tasks::{destroy, finish, script, start, unique_id};
use support::{PoolOptions, task_config};

fn string_attr(fingerprint: &nomad::FingerprintResponse, key: &str) -> Option<String> {
    match fingerprint.attributes.get(key)?.value.as_ref()? {
        AttrValue::StringVal(s) => Some(s.clone()),
        _ => None,
    }
}

/// Wait (bounded) until `ok` holds for the fingerprints seen so far.
async fn until_fingerprints(
    seen: &Arc<Mutex<Vec<nomad::FingerprintResponse>>>,
    what: &str,
    ok: impl Fn(&[nomad::FingerprintResponse]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if ok(&seen.lock()) {
            return;
        }
        assert!(Instant::now() < deadline, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_restart_ends_tasks_with_its_message_and_the_pool_recovers() {
    let mut engine = OwnEngine::start(false);
    let mut s = plugin_on(&engine, &PoolOptions::target(2)).await;
    let fingerprints = collect_fingerprints(&s.driver);
    until_fingerprints(&fingerprints, "two idle containers", |seen| {
        seen.last()
            .and_then(|f| f.attributes.get("driver.polydev.pool.openai.idle"))
            .is_some_and(|a| a.value == Some(AttrValue::IntVal(2)))
    })
    .await;
    let task = start(&mut s.driver, "victim", script("echo ready; sleep 300"), 64).await;
    task.stdout.wait_for("ready", Duration::from_secs(30)).await;

    engine.restart();
    let result = bounded_wait(&mut s.driver, &task.id).await;
    let exit = result.result.unwrap();
    assert!(
        result
            .err
            .contains("the Docker engine stopped or restarted"),
        "{result:?}"
    );
    assert!(matches!(exit.exit_code, 137 | 143), "{exit:?}");
    assert_eq!(exit.signal, exit.exit_code - 128);

    until_fingerprints(&fingerprints, "unhealthy then healthy", |seen| {
        let unhealthy = seen
            .iter()
            .position(|f| f.health == HealthState::Unhealthy as i32);
        unhealthy.is_some_and(|at| {
            seen[at..]
                .iter()
                .any(|f| f.health == HealthState::Healthy as i32)
        })
    })
    .await;
    until_fingerprints(&fingerprints, "the pool refilled with no error", |seen| {
        seen.last().is_some_and(|f| {
            f.attributes
                .get("driver.polydev.pool.openai.idle")
                .map(|a| &a.value)
                == Some(&Some(AttrValue::IntVal(2)))
                && string_attr(f, "driver.polydev.pool.openai.error")
                    .unwrap_or_default()
                    .is_empty()
        })
    })
    .await;
    destroy(&mut s.driver, &task.id, &task.container).await;
    let left = engine.polydev_containers();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|(_, state)| state == "running"), "{left:?}");

    let next = start(&mut s.driver, "next", script("echo fine"), 64).await;
    assert!(
        left.iter().any(|(id, _)| *id == next.container),
        "not a warm claim"
    );
    let result = bounded_wait(&mut s.driver, &next.id).await;
    assert_eq!(result.result.unwrap().exit_code, 0, "{}", result.err);
    destroy(&mut s.driver, &next.id, &next.container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_live_restore_tasks_keep_running_and_their_logs_lose_and_repeat_nothing() {
    let mut engine = OwnEngine::start(true);
    let mut s = plugin_on(&engine, &PoolOptions::target(1)).await;
    support::tasks::wait_for_reported_idle(&s.driver, "openai", 1).await;
    let lines = 120;
    let body =
        format!("i=1; while [ $i -le {lines} ]; do echo line-$i; i=$((i+1)); sleep 0.05; done");
    let task = start(&mut s.driver, "steady", script(&body), 64).await;
    task.stdout
        .wait_for("line-20\n", Duration::from_secs(30))
        .await;
    engine.restart();
    let result = bounded_wait(&mut s.driver, &task.id).await;
    assert_eq!(result.result.unwrap().exit_code, 0, "{}", result.err);
    let stdout = String::from_utf8_lossy(&finish(task.stdout).await).into_owned();
    let expected: String = (1..=lines).map(|i| format!("line-{i}\n")).collect();
    assert_eq!(stdout, expected, "lines were lost or repeated");
    destroy(&mut s.driver, &task.id, &task.container).await;

    // The idle container made before the restart still takes a task.
    support::tasks::wait_for_reported_idle(&s.driver, "openai", 1).await;
    let next = start(&mut s.driver, "after", script("echo still-usable"), 64).await;
    let result = bounded_wait(&mut s.driver, &next.id).await;
    assert_eq!(result.result.unwrap().exit_code, 0, "{}", result.err);
    let stdout = String::from_utf8_lossy(&finish(next.stdout).await).into_owned();
    assert_eq!(stdout, "still-usable\n");
    destroy(&mut s.driver, &next.id, &next.container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_absent_at_start_is_reported_and_recovers_by_itself() {
    let mut engine = OwnEngine::not_started(false);
    let mut s = plugin_on(&engine, &PoolOptions::target(0)).await;
    let fingerprints = collect_fingerprints(&s.driver);
    until_fingerprints(&fingerprints, "unhealthy with the path", |seen| {
        seen.first().is_some_and(|f| {
            f.health == HealthState::Unhealthy as i32
                && f.health_description.contains(&engine.endpoint())
                && f.health_description.contains("docker_endpoint")
        })
    })
    .await;
    let id = unique_id("early");
    let alloc = AllocDir::new("early");
    let mut config = task_config(&id, Some(alloc.root.path()), &script("true"));
    config.name = "early".into();
    let refused = s
        .driver
        .start_task(nomad::StartTaskRequest { task: Some(config) })
        .await
        .unwrap_err();
    assert_eq!(recoverable_detail(&refused), Some(true), "{refused:?}");

    engine.launch();
    engine.load_test_image();
    until_fingerprints(&fingerprints, "healthy once the engine is there", |seen| {
        seen.last()
            .is_some_and(|f| f.health == HealthState::Healthy as i32)
    })
    .await;
    let task = start(&mut s.driver, "later", script("echo up"), 64).await;
    let result = bounded_wait(&mut s.driver, &task.id).await;
    assert_eq!(result.result.unwrap().exit_code, 0, "{}", result.err);
    destroy(&mut s.driver, &task.id, &task.container).await;
}
