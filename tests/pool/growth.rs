//! The pool growing under a burst against real Docker, through the real binary: it grows to
//! `max` and says so (fingerprint and `polydev pool status`), and scale-down brings it back to
//! its target with nothing left behind.

use std::time::{Duration, Instant};

use futures::StreamExt;
use polydev::pb::hashicorp::nomad::plugins::drivers::proto as nomad;
use polydev::pb::hashicorp::nomad::plugins::drivers::proto::driver_client::DriverClient;
use polydev::pb::hashicorp::nomad::plugins::shared::structs::attribute::Value;
use tonic::transport::Channel;

use super::pool_containers;
use super::support::PoolOptions;
use super::support::tasks::*;

/// The plugin's `driver.polydev.pool.openai.<suffix>` attribute, from a fresh fingerprint.
async fn pool_attribute(driver: &DriverClient<Channel>, suffix: &str) -> Option<Value> {
    let mut fingerprints = driver
        .clone()
        .fingerprint(nomad::FingerprintRequest {})
        .await
        .ok()?
        .into_inner();
    let first = fingerprints.next().await?.ok()?;
    first
        .attributes
        .get(&format!("driver.polydev.pool.openai.{suffix}"))?
        .value
        .clone()
}

/// Wait (bounded) until the pool holds `idle` idle containers and reports `desired`, checking
/// at every look that it never runs more than `max` containers under its name (idle ones and
/// warm-started tasks).
async fn wait_for_pool_size(s: &Setup, idle: usize, desired: i64, max: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = pool_containers(s);
        assert!(now.len() <= max, "more than max = {max}: {now:?}");
        let reported = pool_attribute(&s.driver, "desired").await;
        if now.len() == idle
            && reported == Some(Value::IntVal(desired))
            && reported_idle(&s.driver, "openai").await == Some(idle as i64)
        {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "expected {idle} idle and desired {desired}; have {} running, desired {reported:?}",
            now.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_grows_the_pool_to_max_and_it_shrinks_back_to_the_target() {
    const MAX: usize = 6;
    // scale_down_after is also how long the burst is remembered: long enough to destroy the
    // burst's tasks and let the pool grow before it forgets.
    let options = PoolOptions {
        max: MAX as u32,
        scale_down_after: "15s",
        ..PoolOptions::target(2)
    };
    let s = setup_with_pool(&options).await;
    let before = wait_for_pool_size(&s, 2, 2, MAX).await;
    assert_eq!(
        pool_attribute(&s.driver, "max").await,
        Some(Value::IntVal(MAX as i64))
    );

    // A burst of 8 StartTasks at once: every one starts (2 warm, the rest cold), none waits
    // for or fails because of the pool's growth.
    let started: Vec<Started> = futures::future::join_all((0..8).map(|i| {
        let mut driver = s.driver.clone();
        async move { start(&mut driver, &format!("burst{i}"), script("sleep 30"), 32).await }
    }))
    .await;
    let warm = started
        .iter()
        .filter(|task| before.contains(&task.container))
        .count();
    assert_eq!(warm, 2, "the two idle containers went to the burst");
    let mut driver = s.driver.clone();
    for task in &started {
        destroy(&mut driver, &task.id, &task.container).await;
    }

    // The burst asked for 8; max = 6 holds the pool at 6 and says so.
    let grown = wait_for_pool_size(&s, MAX, MAX as i64, MAX).await;
    assert!(grown.iter().all(|id| !before.contains(id)), "one-shot");
    let limit = match pool_attribute(&s.driver, "growth_limit").await {
        Some(Value::StringVal(limit)) => limit,
        other => panic!("no growth_limit attribute: {other:?}"),
    };
    assert!(limit.contains("8 idle containers wanted"), "{limit}");
    assert!(limit.contains("max = 6"), "{limit}");
    // polydev pool status shows the same: 6 idle, 6 desired, and why not 8.
    let table = super::pool_status(s.data_dir.path());
    let row = super::status_row(&table, "openai");
    assert_eq!(row.get(1..3), Some(&["6", "6"][..]), "{table}");
    assert!(
        table.contains("openai: held at max: 8 idle containers wanted"),
        "{table}"
    );

    // No claims for scale_down_after: back to the target, the oldest extra ones removed, and
    // the limit cleared (sent empty, which removes it from the node).
    let shrunk = wait_for_pool_size(&s, 2, 2, MAX).await;
    assert!(
        shrunk.iter().all(|id| grown.contains(id)),
        "no new ones made"
    );
    assert_eq!(
        pool_attribute(&s.driver, "growth_limit").await,
        Some(Value::StringVal(String::new()))
    );
    assert_eq!(
        containers_of(s.data_dir.path()).len(),
        2,
        "the removed containers are gone from Docker"
    );
}
