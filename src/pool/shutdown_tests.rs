//! The pool at shutdown, over the fake engine: creations under way when the shutdown token is
//! cancelled remove the containers they created and did not start (with their slots), starts
//! already sent are finished, and idle containers that are ready stay for the next plugin
//! process, which adopts them.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use super::WarmPool;
use super::growth_tests::{
    GIB_KB, GateAt, GatedCreates, Harness, PROVIDER, fake_with_image, harness_behind, pool_config,
    settings, until,
};
use crate::config::PoolConfig;
use crate::engine::ContainerEngine;
use crate::engine::fake::FakeEngine;
use crate::pool_port::WarmPoolPort;

/// A pool of three, all made at once.
fn three_at_once() -> PoolConfig {
    PoolConfig {
        refill_parallelism: 3,
        ..settings(3, 16, Duration::from_secs(300))
    }
}

fn harness(engine: GatedCreates) -> Harness {
    harness_behind(
        engine,
        three_at_once(),
        Arc::new(AtomicU64::new(64 * GIB_KB)),
    )
}

/// Cancel the harness's shutdown token and wait (bounded) until the pool has wound down.
async fn shut_down(h: &Harness) {
    h.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), h.pool.stopped())
        .await
        .expect("the pool winds down once its engine calls return");
}

/// Wait (bounded) until the fake engine holds `count` containers.
async fn until_engine_holds(fake: &FakeEngine, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.container_ids().len() != count {
        assert!(
            Instant::now() < deadline,
            "the engine never held {count} containers: {:?}",
            fake.container_ids()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_created_but_not_started_at_shutdown_are_removed() {
    let fake = fake_with_image();
    // The engine makes each container, and its answer is held back: the create calls are under
    // way when the stop comes.
    let h = harness(GatedCreates::closed(fake.clone(), GateAt::AfterCreate));
    until_engine_holds(&fake, 3).await;
    assert_eq!(h.pool.slots().list().len(), 3);

    h.shutdown.cancel();
    // The answers come back after the stop.
    h.engine.open();
    shut_down(&h).await;
    assert_eq!(
        fake.container_ids(),
        Vec::<String>::new(),
        "what the creations made and never started is removed"
    );
    assert_eq!(
        h.pool.slots().list(),
        Vec::<String>::new(),
        "their slots too"
    );
    assert!(
        fake.calls()
            .iter()
            .all(|call| !matches!(call, crate::engine::fake::FakeCall::Start { .. })),
        "nothing was started after the stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_under_way_at_shutdown_is_finished_and_its_container_kept() {
    let fake = fake_with_image();
    fake.set_start_delay(Duration::from_millis(300));
    let h = harness(GatedCreates::closed(fake.clone(), GateAt::BeforeCreate));
    h.engine.open();
    until_engine_holds(&fake, 3).await;
    // Give the creations time to send their starts (each start then takes 300 ms).
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.peak_concurrent_starts() < 3 {
        assert!(Instant::now() < deadline, "the starts never went out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shut_down(&h).await;
    let ids = fake.container_ids();
    assert_eq!(ids.len(), 3, "{ids:?}");
    for id in &ids {
        assert!(fake.inspect(id).await.unwrap().running, "{id} runs");
    }
    assert_eq!(h.pool.slots().list().len(), 3, "their slots stay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_containers_ready_at_shutdown_stay_and_the_next_plugin_adopts_them() {
    let fake = fake_with_image();
    let h = harness(GatedCreates::closed(fake.clone(), GateAt::BeforeCreate));
    h.engine.open();
    until(&h.pool, "filled", |s| s.idle == 3).await;
    shut_down(&h).await;
    assert_eq!(fake.container_ids().len(), 3, "the idle containers stay");

    // The next plugin process, on the same data dir and engine.
    let engine: Arc<dyn ContainerEngine> = fake.clone();
    let next = WarmPool::new(
        engine,
        &pool_config(h.data_dir.path(), three_at_once()),
        "node-1",
    );
    let report = next.reconcile().await.unwrap();
    assert_eq!((report.adopted, report.removed), (3, 0), "{report:?}");
    assert_eq!(next.status()[PROVIDER].idle, 3);
}
