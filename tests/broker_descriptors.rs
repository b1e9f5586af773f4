//! The descriptor exhaustion of issue 13, in small: under a low open file limit, one task
//! opening CONNECT tunnels as fast as it can used to take every descriptor of the process, and
//! every other task's broker then failed with "Too many open files".
//!
//! This binary lowers its own soft `RLIMIT_NOFILE` to [`LIMIT`] — the broker in it, its clients
//! and the destination share that table, as the plugin's tasks do — so it holds this one test
//! and nothing else runs under the lowered limit.

mod support;

use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use rmpv::Value;
use support::broker_fixture::{
    BrokerFixture, Echo, ask_for_tunnel, plugin_config, read_head, timed_api_call,
};
use support::upstream::{Reply, StandIn};

/// The soft open file limit of this test process.
const LIMIT: u64 = 384;
/// Tunnels the attacker asks for: at 4 descriptors each in this process (its socket, the
/// broker's two, the destination's), more than [`LIMIT`] allows; few enough that every
/// connection fits in the listener's backlog (128).
const ATTEMPTS: usize = 120;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|entries| entries.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn one_tasks_tunnels_cannot_exhaust_the_descriptors_the_other_task_needs() {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, LIMIT, hard).unwrap();

    let api = StandIn::start(|_| Reply::json("{}")).await;
    let echo = Echo::start().await;
    let limits = vec![("max_connections", Value::from(16))];
    // The budget is sized from the lowered limit: 384 - 96 kept for the plugin = 288, and a
    // task with max_connections = 16 reserves 8 + 3 × 16 = 56.
    let f = BrokerFixture::new(&plugin_config(
        &api.origin(),
        &api.ca_path(),
        limits,
        &[&echo.target()],
    ));
    let attacker = f.open("alloc/attacker/agent").await;
    let victim = f.open("alloc/victim/agent").await;

    let mut asked = Vec::new();
    let mut failed_attempts = 0;
    for _ in 0..ATTEMPTS {
        match ask_for_tunnel(attacker.port(), &echo.target(), Duration::from_secs(1)).await {
            Ok(stream) => asked.push(stream),
            Err(_) => failed_attempts += 1,
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut tunnels = 0;
    for stream in asked.iter_mut() {
        if read_head(stream, Duration::from_millis(5))
            .await
            .is_ok_and(|head| head.starts_with("HTTP/1.1 200"))
        {
            tunnels += 1;
        }
    }
    eprintln!(
        "attacker: {tunnels} tunnels of {ATTEMPTS} attempts ({failed_attempts} could not even \
         connect); {} descriptors open of {LIMIT}",
        open_descriptors()
    );

    let started = Instant::now();
    let mut latencies = Vec::new();
    for _ in 0..5 {
        latencies.push(timed_api_call(victim.port(), Duration::from_secs(5)).await);
    }
    eprintln!(
        "victim: API calls {latencies:?} ({:?} in all)",
        started.elapsed()
    );
    for took in &latencies {
        let took = took.as_ref().expect("the victim's API call");
        assert!(*took < Duration::from_secs(2), "{latencies:?}");
    }
    assert_eq!(tunnels, 16, "the attacker holds max_connections tunnels");
    assert_eq!(failed_attempts, 0);
}
