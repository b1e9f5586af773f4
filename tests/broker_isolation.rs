//! One task cannot starve another task's credential broker: two tasks (two leases of one real
//! broker, on the host's loopback), an attacker that takes all it can — CONNECT tunnels,
//! trickling request bodies — and a victim whose API calls must still succeed on time.
//!
//! Every test prints what it measured (`cargo test --test broker_isolation -- --nocapture`).

mod support;

use std::time::{Duration, Instant};

use rmpv::Value;
use support::broker_fixture::{
    BrokerFixture, Echo, ask_for_tunnel, open_tunnel, plugin_config, read_head, timed_api_call,
};
use support::h2_upstream::H2StandIn;
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

/// Send a POST whose body (`length` bytes) trickles one byte every `every`, at most `bytes`
/// bytes; returns the broker's answer and when it came, or what failed.
async fn trickling_post(
    port: u16,
    length: usize,
    every: Duration,
    bytes: usize,
    limit: Duration,
) -> Result<(String, Duration), String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {length}\r\n\r\n{{"
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let (mut read, mut write) = stream.into_split();
    let trickle = async move {
        for _ in 0..bytes {
            tokio::time::sleep(every).await;
            if write.write_all(b" ").await.is_err() {
                break;
            }
        }
        // Then silence, holding the connection open.
        std::future::pending::<()>().await;
    };
    let answer = async {
        let mut answer = Vec::new();
        let _ = read.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    tokio::time::timeout(limit, async {
        tokio::select! {
            _ = trickle => unreachable!(),
            answer = answer => (answer, started.elapsed()),
        }
    })
    .await
    .map_err(|_| format!("no answer within {limit:?}"))
}

#[tokio::test]
async fn a_trickling_request_body_is_cut_after_request_body_timeout() {
    let api = StandIn::start(|_| Reply::json("{}")).await;
    let limits = vec![("request_body_timeout", Value::from("2s"))];
    let f = BrokerFixture::new(&plugin_config(&api.origin(), &api.ca_path(), limits, &[]));
    let lease = f.open("alloc/slow/agent").await;
    // A byte every 500 ms: no single pause is long, the total wait is.
    let (answer, after) = trickling_post(
        lease.port(),
        1000,
        Duration::from_millis(500),
        40,
        Duration::from_secs(10),
    )
    .await
    .expect("an answer to a trickling body");
    eprintln!(
        "trickling body answered after {after:?}: {}",
        answer.lines().next().unwrap_or("")
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_body_timeout"), "{answer}");
    assert!(
        after >= Duration::from_secs(2) && after < Duration::from_secs(5),
        "{after:?}"
    );
    // Nothing incomplete reached the API as a whole request.
    assert!(api.requests().iter().all(|r| r.body.len() < 1000));
}

#[tokio::test]
async fn one_tasks_trickling_bodies_do_not_hold_the_other_tasks_http2_streams() {
    // An API front end allowing 4 concurrent streams per connection.
    let api = H2StandIn::start(4).await;
    let limits = vec![("request_body_timeout", Value::from("3s"))];
    let f = BrokerFixture::new(&plugin_config(&api.origin(), &api.ca_path(), limits, &[]));
    let attacker = f.open("alloc/attacker/agent").await;
    let victim = f.open("alloc/victim/agent").await;

    // The attacker's 4 POSTs trickle a byte every 200 ms (50 bytes at most, then silence).
    let trickles: Vec<_> = (0..4)
        .map(|_| {
            let port = attacker.port();
            tokio::spawn(async move {
                trickling_post(
                    port,
                    1000,
                    Duration::from_millis(200),
                    50,
                    Duration::from_secs(20),
                )
                .await
            })
        })
        .collect();
    api.wait_in_flight(|n| n >= 4, Duration::from_secs(5)).await;
    let held = api.in_flight();

    // Meanwhile the victim's calls go through on time.
    let mut latencies = Vec::new();
    for _ in 0..3 {
        let took = timed_api_call(victim.port(), Duration::from_secs(8)).await;
        latencies.push(took);
    }
    eprintln!("victim: API calls took {latencies:?} while the attacker held {held} streams");
    for took in &latencies {
        let took = took.as_ref().expect("the victim's API call");
        assert!(*took < ON_TIME, "{latencies:?}");
    }

    // The attacker's trickles were cut after request_body_timeout.
    for trickle in trickles {
        let (answer, after) = trickle.await.unwrap().expect("an answer to the attacker");
        eprintln!(
            "attacker: trickling POST answered after {after:?}: {}",
            answer.lines().next().unwrap_or("")
        );
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(after < Duration::from_secs(6), "{after:?}");
    }
    // The API's streams were given back.
    api.wait_in_flight(|n| n == 0, Duration::from_secs(2)).await;
}
