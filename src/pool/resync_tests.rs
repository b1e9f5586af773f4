//! The resync after an engine outage, over the fake engine: it removes what is left of the
//! pool's containers, and never the pool's own creations under way (a container between its
//! create and its start is `created`, which is what a leftover looks like too).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::growth_tests::{
    GIB_KB, GateAt, GatedCreates, fake_with_image, harness_behind, settings, until,
};
use crate::config::PoolConfig;
use crate::engine::ContainerEngine;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_leaves_the_creations_under_way_alone() {
    let fake = fake_with_image();
    let three_at_once = PoolConfig {
        refill_parallelism: 3,
        ..settings(3, 16, Duration::from_secs(300))
    };
    // Each creation is held between its create and its start.
    let h = harness_behind(
        GatedCreates::closed(fake.clone(), GateAt::AfterCreate),
        three_at_once,
        Arc::new(AtomicU64::new(64 * GIB_KB)),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fake.container_ids().len() != 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "three creations never reached the engine"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let created = fake.container_ids();
    for id in &created {
        let state = fake.inspect(id).await.expect("inspect");
        assert!(!state.running, "{id} is created, not started");
    }

    h.pool.resync().await;
    // A removal the resync ordered runs in the background: give it the time to happen.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.container_ids(),
        created,
        "the resync removed creations under way"
    );

    h.engine.open();
    let ready = until(&h.pool, "the three creations become idle", |s| s.idle == 3).await;
    assert_eq!(ready.last_error, None, "no creation failed");
    assert_eq!(
        fake.container_ids(),
        created,
        "the idle ones are the first three"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_removes_a_stopped_pool_container_nobody_makes_or_claimed() {
    let fake = fake_with_image();
    let h = harness_behind(
        GatedCreates::closed(fake.clone(), GateAt::BeforeCreate),
        settings(1, 4, Duration::from_secs(300)),
        Arc::new(AtomicU64::new(64 * GIB_KB)),
    );
    h.engine.open();
    until(&h.pool, "the pool fills", |s| s.idle == 1).await;
    let idle = fake.container_ids();
    // The engine lost it during an outage: it is stopped now, and still listed.
    fake.kill(&idle[0], "SIGKILL").await.expect("kill");

    h.pool.resync().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fake.container_ids().contains(&idle[0]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead idle container was never removed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    until(&h.pool, "the pool refills", |s| s.idle == 1).await;
}
