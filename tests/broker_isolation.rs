//! One task cannot starve another task's credential broker: two tasks (two leases of one real
//! broker, on the host's loopback), an attacker that takes all it can — CONNECT tunnels —
//! and a victim whose API calls must still succeed on time.
//!
//! Every test prints what it measured (`cargo test --test broker_isolation -- --nocapture`).

mod support;

use std::time::{Duration, Instant};

use rmpv::Value;
use support::broker_fixture::{
    BrokerFixture, Echo, ask_for_tunnel, open_tunnel, plugin_config, read_head, timed_api_call,
};
use support::upstream::{Reply, StandIn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a victim's API call may take while the attacker does its worst (an unloaded call
/// takes a few milliseconds; the first pays a TLS handshake, slow in a debug build on a busy
/// machine).
const ON_TIME: Duration = Duration::from_secs(2);

/// Wait (bounded) until `stream` is closed by the other side.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut sink = [0u8; 256];
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    false
}

/// The first of `waiting` that got an answer within `limit` (polling each briefly), and the
/// answer's head.
async fn first_answered(waiting: &mut [TcpStream], limit: Duration) -> Option<(usize, String)> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        for (i, stream) in waiting.iter_mut().enumerate() {
            if let Ok(head) = read_head(stream, Duration::from_millis(20)).await {
                return Some((i, head));
            }
        }
    }
    None
}

#[tokio::test]
async fn tunnels_count_against_max_connections_and_the_other_task_is_served() {
    let api = StandIn::start(|_| Reply::json("{}")).await;
    let echo = Echo::start().await;
    let limits = vec![("max_connections", Value::from(4))];
    let f = BrokerFixture::new(&plugin_config(
        &api.origin(),
        &api.ca_path(),
        limits,
        &[&echo.target()],
    ));
    let attacker = f.open("alloc/attacker/agent").await;
    let victim = f.open("alloc/victim/agent").await;

    // The attacker asks for 40 tunnels at once and keeps every connection.
    const ATTEMPTS: usize = 40;
    let mut asked = Vec::new();
    for _ in 0..ATTEMPTS {
        asked.push(
            ask_for_tunnel(attacker.port(), &echo.target(), Duration::from_secs(2))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut tunnels, mut waiting) = (Vec::new(), Vec::new());
    for mut stream in asked {
        match read_head(&mut stream, Duration::from_millis(20)).await {
            Ok(head) if head.starts_with("HTTP/1.1 200") => tunnels.push(stream),
            Ok(head) => panic!("unexpected answer to CONNECT: {head}"),
            // Not answered: the connection waits in the listener's backlog.
            Err(_) => waiting.push(stream),
        }
    }
    eprintln!(
        "attacker: {} tunnels of {ATTEMPTS} attempts (max_connections = 4), {} waiting",
        tunnels.len(),
        waiting.len()
    );
    assert_eq!(
        tunnels.len(),
        4,
        "a task's tunnels must count against its max_connections"
    );
    // The tunnels work.
    tunnels[0].write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    tunnels[0].read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"ping");

    // The victim's calls are served on time, and it gets a tunnel of its own.
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let took = timed_api_call(victim.port(), Duration::from_secs(5))
            .await
            .expect("the victim's API call");
        latencies.push(took);
    }
    eprintln!("victim: API calls took {latencies:?}");
    assert!(latencies.iter().all(|t| *t < ON_TIME), "{latencies:?}");
    let (_own, head) = open_tunnel(victim.port(), &echo.target(), Duration::from_secs(2))
        .await
        .expect("the victim's tunnel");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // An attacker tunnel that ends gives its place to one waiting connection, and only one.
    drop(tunnels.remove(0));
    let (served, head) = first_answered(&mut waiting, Duration::from_secs(3))
        .await
        .expect("the freed place goes to a waiting connection");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tunnels.push(waiting.remove(served));
    assert!(
        first_answered(&mut waiting, Duration::from_millis(300))
            .await
            .is_none(),
        "more connections than max_connections were served"
    );

    // Closing the attacker's lease ends every tunnel of it, and only its.
    attacker.close();
    for tunnel in tunnels.iter_mut() {
        assert!(
            closed_within(tunnel, Duration::from_secs(2)).await,
            "a tunnel outlived its lease"
        );
    }
    let took = timed_api_call(victim.port(), Duration::from_secs(5))
        .await
        .expect("the victim's API call after the attacker stopped");
    assert!(took < ON_TIME, "{took:?}");
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_and_gives_its_place_back() {
    let api = StandIn::start(|_| Reply::json("{}")).await;
    let echo = Echo::start().await;
    let limits = vec![
        ("max_connections", Value::from(1)),
        ("tunnel_idle_timeout", Value::from("1s")),
    ];
    let f = BrokerFixture::new(&plugin_config(
        &api.origin(),
        &api.ca_path(),
        limits,
        &[&echo.target()],
    ));
    let lease = f.open("alloc/idle/agent").await;
    let (mut tunnel, head) = open_tunnel(lease.port(), &echo.target(), Duration::from_secs(2))
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Traffic keeps it open past the timeout.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        tunnel.write_all(b"x").await.unwrap();
        let mut echoed = [0u8; 1];
        tunnel.read_exact(&mut echoed).await.unwrap();
    }
    let quiet = Instant::now();
    assert!(
        closed_within(&mut tunnel, Duration::from_secs(5)).await,
        "an idle tunnel stayed open"
    );
    let closed_after = quiet.elapsed();
    eprintln!("idle tunnel closed {closed_after:?} after its last byte (timeout 1s)");
    assert!(
        closed_after >= Duration::from_millis(900),
        "{closed_after:?}"
    );
    // Its place is free: with max_connections = 1, another tunnel opens.
    let (_next, head) = open_tunnel(lease.port(), &echo.target(), Duration::from_secs(2))
        .await
        .expect("the idle tunnel's place is free again");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn a_lease_beyond_the_descriptor_budget_is_refused_with_the_fix() {
    let api = StandIn::start(|_| Reply::json("{}")).await;
    let limits = vec![("max_connections", Value::from(64))];
    // A process allowed 1024 descriptors keeps 256 for itself; a task reserves 8 + 3 × 64.
    let f = BrokerFixture::with_descriptor_limit(
        &plugin_config(&api.origin(), &api.ca_path(), limits, &[]),
        1024,
    );
    let mut leases = Vec::new();
    for i in 0..3 {
        leases.push(f.open(&format!("alloc/{i}/agent")).await);
    }
    let err = f.try_open("alloc/3/agent").await.unwrap_err().to_string();
    for needed in [
        "descriptor budget",
        "600 of 768",
        "max_connections",
        "LimitNOFILE",
    ] {
        assert!(err.contains(needed), "{needed}: {err}");
    }
    // Each admitted task is served; when one ends, its share is free again.
    for lease in &leases {
        timed_api_call(lease.port(), Duration::from_secs(5))
            .await
            .unwrap();
    }
    drop(leases.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again = f.open("alloc/3/agent").await;
    timed_api_call(again.port(), Duration::from_secs(5))
        .await
        .unwrap();
}
