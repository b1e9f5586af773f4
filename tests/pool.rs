//! The warm pool against real Docker, through the real binary: filling, claiming, refilling,
//! the three empty-pool policies, idle age-out, growth under a burst and scale-down, adoption
//! after `kill -9`, a plugin stopped in the middle of a refill, and no leaks.

mod support;

#[path = "pool/burst_measure.rs"]
mod burst_measure;
#[path = "pool/growth.rs"]
mod growth;
#[path = "pool/shutdown.rs"]
mod shutdown;

use std::time::{Duration, Instant};

use futures::StreamExt;
use polydev::driver::status::recoverable_detail;
use polydev::pb::hashicorp::nomad::plugins::drivers::proto as nomad;
use polydev::pb::hashicorp::nomad::plugins::drivers::proto::driver_client::DriverClient;
use support::PoolOptions;
use support::real::{AllocDir, Plugin, container_exists};
use support::task_config;
use support::tasks::*;
use tonic::transport::Channel;

/// Running pool containers of this plugin (by name; task containers keep the pool name too,
/// so only count before claims or after destroys).
fn pool_containers(setup: &Setup) -> Vec<String> {
    let filter = format!(
        "label=io.polydev.data-dir={}",
        setup.data_dir.path().to_string_lossy()
    );
    support::real::docker(&[
        "ps",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Names}}",
        "--filter",
        &filter,
        "--filter",
        "status=running",
    ])
    .lines()
    .filter_map(|line| line.split_once(' '))
    .filter(|(_, name)| name.starts_with("polydev-pool-openai-"))
    .map(|(id, _)| id.to_string())
    .collect()
}

/// A StartTask that the pool's policy refuses; returns the status.
async fn start_refused(setup: &mut Setup, task: &str) -> tonic::Status {
    let alloc = AllocDir::new(task);
    let config = task_config(&unique_id(task), Some(alloc.root.path()), &script("true"));
    setup
        .driver
        .start_task(nomad::StartTaskRequest { task: Some(config) })
        .await
        .expect_err("the pool's policy refuses the start")
}

/// Wait until the plugin behind `driver` holds exactly `count` running containers, all of them
/// idle in its pool (running is not enough: a container joins the pool only once its start
/// call has returned).
async fn wait_for_idle(driver: &DriverClient<Channel>, setup: &Setup, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = pool_containers(setup);
        if now.len() == count && reported_idle(driver, "openai").await == Some(count as i64) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} idle containers, have {now:?} running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `polydev pool status --data-dir DIR` prints.
fn pool_status(data_dir: &std::path::Path) -> String {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_polydev"))
        .args(["pool", "status", "--data-dir"])
        .arg(data_dir)
        .env_remove("NOMAD_PLUGIN_MAGIC_COOKIE")
        .output()
        .unwrap();
    String::from_utf8_lossy(&status.stdout).into_owned()
}

/// The columns of `provider`'s row in a `pool status` table (empty when it has none).
fn status_row<'a>(table: &'a str, provider: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(provider))
        .unwrap_or_default()
        .split_whitespace()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_claims_with_an_event_refills_and_hands_over_the_task_dirs() {
    let mut s = setup_with_pool(&PoolOptions::target(2)).await;
    let idle = wait_for_idle(&s.driver, &s, 2).await;
    let table = pool_status(s.data_dir.path());
    let openai = status_row(&table, "openai");
    assert_eq!(
        openai.get(1),
        Some(&"2"),
        "polydev pool status shows 2 idle:\n{table}"
    );
    let mut events = support::task_events(&s.driver).await;

    let task = start(
        &mut s.driver,
        "warm",
        script("echo \"hi from $PROVIDER\" > /local/proof; cat /local/proof; id -u"),
        128,
    )
    .await;
    assert!(
        idle.contains(&task.container),
        "the task got one of the idle containers: {}",
        s.plugin
            .stderr()
            .lines()
            .filter(|l| l.contains("pool")
                || l.contains("warm")
                || l.contains("WARN")
                || l.contains("warn"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        event.message.starts_with("claimed warm container "),
        "{}",
        event.message
    );
    assert!(
        task.container
            .starts_with(event.message.trim_start_matches("claimed warm container "))
    );

    let result = wait(&mut s.driver, &task.id).await;
    assert_eq!(result.result.unwrap().exit_code, 0);
    assert_eq!(finish(task.stdout).await, b"hi from openai\n2100000000\n");
    // The file the task wrote through the slot landed in Nomad's task dir on the host.
    let proof = task._alloc.root.path().join("warm/local/proof");
    assert_eq!(std::fs::read_to_string(proof).unwrap(), "hi from openai\n");
    destroy(&mut s.driver, &task.id, &task.container).await;
    // Refilled back to the target, with new containers (one-shot: the claimed one is gone).
    let refilled = wait_for_idle(&s.driver, &s, 2).await;
    assert!(!refilled.contains(&task.container));
}

/// Under Docker's cgroupfs driver (with runc) a claim writes the container's cgroup itself;
/// the plugin logs when it has to take Docker's slower update instead.
fn assert_claims_wrote_cgroups(plugin: &Plugin) {
    let driver = support::real::docker(&["info", "-f", "{{.CgroupDriver}}"]);
    if driver.trim() == "cgroupfs" {
        let stderr = plugin.stderr();
        assert!(
            !stderr.contains("limits go through Docker's update"),
            "a claim fell back to Docker's update: {stderr}"
        );
    }
}

/// What the task sees as its limits, read from its own cgroup (v2, else v1).
fn limits_seen_inside(container: &str) -> (String, String) {
    let read = |v2: &str, v1: &str| {
        let script = format!("cat /sys/fs/cgroup/{v2} 2>/dev/null || cat /sys/fs/cgroup/{v1}");
        support::real::docker(&["exec", container, "sh", "-c", &script])
            .trim()
            .to_string()
    };
    (
        read("memory.max", "memory/memory.limit_in_bytes"),
        read("cpu.max", "cpu/cpu.cfs_quota_us"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_container_has_the_task_limits_when_start_returns() {
    let mut s = setup_with_pool(&PoolOptions::target(1)).await;
    let idle = wait_for_idle(&s.driver, &s, 1).await;
    let (idle_memory, _) = limits_seen_inside(&idle[0]);
    assert_eq!(idle_memory, (256u64 << 20).to_string(), "the idle limit");
    let task = start(&mut s.driver, "limits", script("sleep 30"), 200).await;
    assert_eq!(task.container, idle[0], "a warm claim");
    // In force in the kernel as soon as StartTask has returned ...
    let host_cpus = std::thread::available_parallelism().unwrap().get() as u64;
    let (memory, cpu) = limits_seen_inside(&task.container);
    assert_eq!(memory, (200u64 << 20).to_string());
    assert!(
        cpu == (host_cpus * 100_000).to_string()
            || cpu == format!("{} 100000", host_cpus * 100_000),
        "the idle 0.1-core quota is lifted: {cpu}"
    );
    // ... and recorded in Docker moments later (Docker needs NanoCpus = every host CPU to
    // express "no quota").
    let deadline = Instant::now() + Duration::from_secs(10);
    let inspect = |format: &str| support::real::docker(&["inspect", "-f", format, &task.container]);
    while inspect("{{.HostConfig.Memory}}").trim() != (200u64 << 20).to_string() {
        assert!(
            Instant::now() < deadline,
            "docker inspect never showed the task's limit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        inspect("{{.HostConfig.NanoCpus}}").trim(),
        (host_cpus * 1_000_000_000).to_string()
    );
    assert_claims_wrote_cgroups(&s.plugin);
    destroy(&mut s.driver, &task.id, &task.container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_pool_follows_its_policy() {
    // max = 1: once the one container is claimed nothing refills, so the pool stays empty.
    let cold = PoolOptions {
        max: 1,
        ..PoolOptions::target(1)
    };
    let mut s = setup_with_pool(&cold).await;
    wait_for_idle(&s.driver, &s, 1).await;
    let mut events = support::task_events(&s.driver).await;
    let first = start(&mut s.driver, "first", script("sleep 30"), 64).await;
    let second = start(&mut s.driver, "second", script("sleep 30"), 64).await;
    let mut messages = Vec::new();
    while let Ok(Some(Ok(event))) =
        tokio::time::timeout(Duration::from_secs(2), events.next()).await
    {
        messages.push(event.message);
    }
    assert!(
        messages[0].starts_with("claimed warm container"),
        "{messages:?}"
    );
    assert_eq!(messages[1], "pool empty: cold start", "{messages:?}");
    assert!(container_exists(&second.container));
    destroy(&mut s.driver, &first.id, &first.container).await;
    destroy(&mut s.driver, &second.id, &second.container).await;
    drop(s);

    let fail = PoolOptions {
        max: 1,
        when_empty: "fail",
        ..PoolOptions::target(1)
    };
    let mut s = setup_with_pool(&fail).await;
    wait_for_idle(&s.driver, &s, 1).await;
    let first = start(&mut s.driver, "first", script("sleep 30"), 64).await;
    let err = start_refused(&mut s, "second").await;
    assert_eq!(
        recoverable_detail(&err),
        Some(true),
        "Nomad retries the task: {}",
        err.message()
    );
    assert!(err.message().contains("empty"), "{}", err.message());
    destroy(&mut s.driver, &first.id, &first.container).await;
    drop(s);

    // wait: the second StartTask waits for the refill that the first task's destroy allows.
    let wait_policy = PoolOptions {
        max: 1,
        when_empty: "wait",
        wait_timeout: "20s",
        ..PoolOptions::target(1)
    };
    let mut s = setup_with_pool(&wait_policy).await;
    wait_for_idle(&s.driver, &s, 1).await;
    let first = start(&mut s.driver, "first", script("sleep 30"), 64).await;
    let mut driver = s.driver.clone();
    let (first_id, first_container) = (first.id.clone(), first.container.clone());
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        destroy(&mut driver, &first_id, &first_container).await;
    });
    let began = Instant::now();
    let second = start(&mut s.driver, "second", script("true"), 64).await;
    assert!(
        began.elapsed() >= Duration::from_millis(400),
        "the claim waited for the refill"
    );
    releaser.await.unwrap();
    wait(&mut s.driver, &second.id).await;
    destroy(&mut s.driver, &second.id, &second.container).await;

    // ... and gives up with a retryable error when nothing comes in time.
    drop(s);
    let short = PoolOptions {
        max: 1,
        when_empty: "wait",
        wait_timeout: "300ms",
        ..PoolOptions::target(1)
    };
    let mut s = setup_with_pool(&short).await;
    wait_for_idle(&s.driver, &s, 1).await;
    let first = start(&mut s.driver, "first", script("sleep 30"), 64).await;
    let err = start_refused(&mut s, "late").await;
    assert_eq!(recoverable_detail(&err), Some(true));
    assert!(err.message().contains("wait_timeout"), "{}", err.message());
    destroy(&mut s.driver, &first.id, &first.container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_containers_older_than_the_idle_age_are_replaced() {
    let aging = PoolOptions {
        max_idle_age: "2s",
        ..PoolOptions::target(1)
    };
    let s = setup_with_pool(&aging).await;
    let before = wait_for_idle(&s.driver, &s, 1).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = pool_containers(&s);
        if now.len() == 1 && now != before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the idle container was never replaced"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_restart_adopts_idle_containers_and_leaks_nothing() {
    let mut s = setup_with_pool(&PoolOptions::target(2)).await;
    let idle = wait_for_idle(&s.driver, &s, 2).await;
    s.plugin.kill9();
    // The next plugin process (same data dir) adopts them instead of making new ones.
    let plugin = Plugin::spawn(&[("OPENAI_API_KEY", s.key.as_str())]);
    let (mut base, mut driver) = plugin.clients().await;
    configure_with_pool(&mut base, s.data_dir.path(), &PoolOptions::target(2)).await;
    let mut after = wait_for_idle(&driver, &s, 2).await;
    let mut before = idle.clone();
    after.sort();
    before.sort();
    assert_eq!(
        after, before,
        "the idle containers were adopted, none added or lost"
    );
    let task = start(&mut driver, "adopted", script("true"), 64).await;
    assert!(
        idle.contains(&task.container),
        "an adopted container serves a task"
    );
    assert_claims_wrote_cgroups(&plugin);
    wait(&mut driver, &task.id).await;
    destroy(&mut driver, &task.id, &task.container).await;
    wait_for_idle(&driver, &s, 2).await;
    drop(plugin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tasks_in_a_row_leave_only_the_pool() {
    // Should the refill fall behind and the pool grow, it is back at its target 2 s later.
    let options = PoolOptions {
        scale_down_after: "2s",
        ..PoolOptions::target(2)
    };
    let mut s = setup_with_pool(&options).await;
    wait_for_idle(&s.driver, &s, 2).await;
    let began = Instant::now();
    for i in 0..200 {
        let task = start(&mut s.driver, &format!("t{i}"), script("true"), 64).await;
        let result = wait(&mut s.driver, &task.id).await;
        assert_eq!(result.result.unwrap().exit_code, 0);
        destroy(&mut s.driver, &task.id, &task.container).await;
    }
    println!(
        "200 tasks started, run and destroyed in {:?}",
        began.elapsed()
    );
    // The loop may have run the pool dry, so it may still be making (or removing) containers
    // beyond its target for a moment: what counts is that they settle, not a snapshot.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = wait_for_idle(&s.driver, &s, 2).await;
        let all = containers_of(s.data_dir.path());
        if all.len() == left.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing but the idle pool is left: {all:?} beside the idle {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let slots = std::fs::read_dir(s.data_dir.path().join("slots"))
        .unwrap()
        .count();
    assert_eq!(slots, 2, "one slot directory per idle container, no more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_never_share_a_warm_container() {
    let mut s = setup_with_pool(&PoolOptions::target(4)).await;
    let idle = wait_for_idle(&s.driver, &s, 4).await;
    let mut starts = Vec::new();
    for i in 0..4 {
        let mut driver = s.driver.clone();
        starts.push(tokio::spawn(async move {
            start(&mut driver, &format!("c{i}"), script("true"), 64).await
        }));
    }
    let mut claimed = Vec::new();
    for started in starts {
        claimed.push(started.await.unwrap());
    }
    let mut ids: Vec<&String> = claimed.iter().map(|t| &t.container).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "four tasks, four different containers");
    assert!(ids.iter().all(|id| idle.contains(id)), "all four were warm");
    for task in claimed {
        wait(&mut s.driver, &task.id).await;
        destroy(&mut s.driver, &task.id, &task.container).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_containers_no_task_claims_back_are_removed_after_the_grace() {
    let options = PoolOptions {
        orphan_grace: Some("1s"),
        ..PoolOptions::target(0)
    };
    let mut s = setup_with_pool(&options).await;
    let task = start(&mut s.driver, "orphan", script("sleep 60"), 64).await;
    s.plugin.kill9();
    // The next plugin process is never asked to recover the task (Nomad forgot it).
    let plugin = Plugin::spawn(&[("OPENAI_API_KEY", s.key.as_str())]);
    let (mut base, _driver) = plugin.clients().await;
    configure_with_pool(&mut base, s.data_dir.path(), &options).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while container_exists(&task.container) {
        assert!(
            Instant::now() < deadline,
            "the orphaned task container was never removed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(plugin);
}

/// The load of the benchmark's memory phase: a hundred long-running tasks, the first from the
/// pool and the rest cold, started four at a time, each with the WaitTask and TaskStats streams
/// Nomad keeps open, then destroyed four at a time. Every call must finish (a hung DestroyTask
/// wedges Nomad's task runner), every WaitTask must answer, and only the refilled pool is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_tasks_start_and_are_destroyed_four_at_a_time() {
    const TASKS: usize = 100;
    // The load runs the pool dry, so it grows after the destroys; 2 s later it shrinks back.
    let options = PoolOptions {
        max: 16,
        scale_down_after: "2s",
        ..PoolOptions::target(8)
    };
    let s = setup_with_pool(&options).await;
    wait_for_idle(&s.driver, &s, 8).await;
    let began = Instant::now();
    let started: Vec<Started> = futures::stream::iter((0..TASKS).map(|i| {
        let mut driver = s.driver.clone();
        async move { start(&mut driver, &format!("load{i}"), script("sleep 300"), 32).await }
    }))
    .buffer_unordered(4)
    .collect()
    .await;
    println!("{TASKS} tasks started in {:?}", began.elapsed());
    // Like Nomad's client: a WaitTask and a TaskStats stream held open per task, all on one
    // HTTP/2 connection (200 streams, past HTTP/2's customary limit of 100 to 200).
    let mut waits = Vec::new();
    let mut stats = Vec::new();
    for task in &started {
        let mut driver = s.driver.clone();
        let request = nomad::WaitTaskRequest {
            task_id: task.id.clone(),
        };
        waits.push(tokio::spawn(async move { driver.wait_task(request).await }));
        let request = nomad::TaskStatsRequest {
            task_id: task.id.clone(),
            collection_interval: Some(prost_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
        };
        let stream = s.driver.clone().task_stats(request).await.unwrap();
        stats.push(stream.into_inner());
    }
    let firsts = futures::future::join_all(
        stats
            .iter_mut()
            .map(|stream| tokio::time::timeout(Duration::from_secs(60), stream.next())),
    )
    .await;
    for first in firsts {
        assert!(matches!(first, Ok(Some(Ok(_)))), "no stats: {first:?}");
    }
    // New calls still get through with those streams open.
    for task in &started {
        let request = nomad::InspectTaskRequest {
            task_id: task.id.clone(),
        };
        tokio::time::timeout(
            Duration::from_secs(10),
            s.driver.clone().inspect_task(request),
        )
        .await
        .expect("InspectTask with 200 streams open")
        .expect("InspectTask");
    }
    let began = Instant::now();
    let destroys = futures::stream::iter(started.iter().map(|task| {
        let mut driver = s.driver.clone();
        async move {
            let request = nomad::DestroyTaskRequest {
                task_id: task.id.clone(),
                force: true,
            };
            tokio::time::timeout(Duration::from_secs(60), driver.destroy_task(request))
                .await
                .map_err(|_| format!("DestroyTask of {} hung", task.id))?
                .map_err(|status| format!("DestroyTask of {}: {status}", task.id))?;
            Ok::<_, String>(())
        }
    }))
    .buffer_unordered(4)
    .collect::<Vec<_>>()
    .await;
    println!("{TASKS} tasks destroyed in {:?}", began.elapsed());
    let failures: Vec<String> = destroys.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{failures:?}");
    for wait in waits {
        let answered = tokio::time::timeout(Duration::from_secs(30), wait).await;
        assert!(
            matches!(answered, Ok(Ok(Ok(_)))),
            "a WaitTask never answered: {answered:?}"
        );
    }
    drop(stats);
    for task in &started {
        assert!(
            !container_exists(&task.container),
            "{} left",
            task.container
        );
    }
    wait_for_idle(&s.driver, &s, 8).await;
    assert_eq!(
        containers_of(s.data_dir.path()).len(),
        8,
        "only the pool is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_container_killed_behind_the_plugins_back_is_replaced_at_once() {
    let mut s = setup_with_pool(&PoolOptions::target(2)).await;
    let driver = s.driver.clone();
    let idle = wait_for_idle(&driver, &s, 2).await;
    wait_for_reported_idle(&driver, "openai", 2).await;
    let victim = idle[0].clone();
    support::real::docker(&["kill", &victim]);
    let killed = Instant::now();
    // It leaves the pool (and the engine) within 2 s, and the pool is back at its target.
    while container_exists(&victim) {
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "the killed idle container is still there after {:?}",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = killed.elapsed();
    wait_for_reported_idle(&driver, "openai", 2).await;
    let now_idle = wait_for_idle(&driver, &s, 2).await;
    assert!(!now_idle.contains(&victim));
    // The next task gets a live warm container.
    let task = start(&mut s.driver, "after-kill", script("echo alive"), 64).await;
    assert!(now_idle.contains(&task.container), "not a warm claim");
    let result = wait(&mut s.driver, &task.id).await;
    assert_eq!(result.result.unwrap().exit_code, 0);
    destroy(&mut s.driver, &task.id, &task.container).await;
    eprintln!("the killed idle container was removed {left:?} after the kill");
}
