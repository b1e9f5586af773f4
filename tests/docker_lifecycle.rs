//! The whole lifecycle against a real Docker engine, through the real binary spoken to over its
//! unix socket exactly as Nomad does: handshake, SetConfig, StartTask … DestroyTask, plugin
//! `kill -9` and RecoverTask. The task image is the tiny busybox test image with the real
//! entrypoint (`containers/build-images.sh --test-only`).

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use polydev::pb::hashicorp::nomad::plugins::drivers::proto::{self as nomad};
use support::real::{AllocDir, Plugin, TEST_IMAGE, container_exists, docker, ensure_test_image};
use support::tasks::*;
use support::{TaskOptions, duration, task_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_byte_exact_streams() {
    let mut s = setup().await;
    let ok = start(
        &mut s.driver,
        "ok",
        script("printf 'out\\n'; printf 'err\\n' >&2"),
        64,
    )
    .await;
    let result = wait(&mut s.driver, &ok.id).await;
    assert_eq!(result.result.unwrap().exit_code, 0);
    assert_eq!(result.err, "");
    assert_eq!(finish(ok.stdout).await, b"out\n");
    assert_eq!(
        finish(ok.stderr).await,
        b"err\n",
        "the entrypoint banner never reaches the task's stderr"
    );

    // Binary bytes, no trailing newline, and a non-zero exit code.
    let odd = start(
        &mut s.driver,
        "odd",
        script("printf '\\000\\377\\376 no newline'; printf 'e1\\ne2' >&2; exit 7"),
        64,
    )
    .await;
    let result = wait(&mut s.driver, &odd.id).await;
    assert_eq!(result.result.unwrap().exit_code, 7);
    assert!(result.err.contains('7'), "{}", result.err);
    assert_eq!(
        finish(odd.stdout).await,
        b"\x00\xff\xfe no newline",
        "forwarders: {}",
        s.forwarder_logs()
    );
    assert_eq!(finish(odd.stderr).await, b"e1\ne2");
    destroy(&mut s.driver, &ok.id, &ok.container).await;
    destroy(&mut s.driver, &odd.id, &odd.container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_arrive_intact() {
    let mut s = setup().await;
    // 50 MiB on stdout (524,288 numbered 100-byte lines) and 1 MiB on stderr at the same time.
    let body = "awk 'BEGIN { for (i = 0; i < 524288; i++) printf \"%08d %090d\\n\", i, 0 }' & \
                awk 'BEGIN { for (i = 0; i < 10486; i++) printf \"%08d %090d\\n\", i, 1 }' | head -c 1048576 >&2; wait";
    let big = start(&mut s.driver, "big", script(body), 256).await;
    let stdout = tokio::spawn(finish(big.stdout));
    let stderr = tokio::spawn(finish(big.stderr));
    let started = Instant::now();
    let result = wait(&mut s.driver, &big.id).await;
    assert_eq!(result.result.unwrap().exit_code, 0);
    let (stdout, stderr) = (stdout.await.unwrap(), stderr.await.unwrap());
    println!("50 MiB forwarded in {:?}", started.elapsed());
    let line = |i: usize, fill: u8| format!("{i:08} {fill:090}\n");
    let expected: String = (0..524_288).map(|i| line(i, 0)).collect();
    assert_eq!(
        stdout.len(),
        52_428_800,
        "forwarders: {}",
        s.forwarder_logs()
    );
    assert!(
        stdout == expected.as_bytes(),
        "stdout differs from the task's output"
    );
    let expected_err: String = (0..10_486).map(|i| line(i, 1)).collect();
    assert!(
        stderr == expected_err.as_bytes()[..1_048_576],
        "stderr differs"
    );
    destroy(&mut s.driver, &big.id, &big.container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sends_the_signal_then_sigkill_after_the_timeout() {
    let mut s = setup().await;
    // Honours SIGTERM: exits 0 through its trap, well before the timeout.
    let polite = start(
        &mut s.driver,
        "polite",
        script("trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.1; done"),
        64,
    )
    .await;
    // The trap is set once it says so.
    polite
        .stdout
        .wait_for("ready", Duration::from_secs(30))
        .await;
    let begun = Instant::now();
    s.driver
        .stop_task(nomad::StopTaskRequest {
            task_id: polite.id.clone(),
            timeout: Some(duration(Duration::from_secs(10))),
            signal: String::new(),
        })
        .await
        .unwrap();
    assert!(
        begun.elapsed() < Duration::from_secs(8),
        "SIGTERM was honoured, no SIGKILL wait"
    );
    assert_eq!(
        wait(&mut s.driver, &polite.id)
            .await
            .result
            .unwrap()
            .exit_code,
        0
    );
    assert_eq!(finish(polite.stdout).await, b"ready\ngot TERM\n");

    // Ignores SIGTERM: killed after the 1 s timeout.
    let stubborn = start(
        &mut s.driver,
        "stubborn",
        script("trap '' TERM; echo ready; while true; do sleep 0.1; done"),
        64,
    )
    .await;
    stubborn
        .stdout
        .wait_for("ready", Duration::from_secs(30))
        .await;
    let begun = Instant::now();
    s.driver
        .stop_task(nomad::StopTaskRequest {
            task_id: stubborn.id.clone(),
            timeout: Some(duration(Duration::from_secs(1))),
            signal: "SIGTERM".into(),
        })
        .await
        .unwrap();
    let took = begun.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "SIGKILL came only after the timeout ({took:?})"
    );
    let result = wait(&mut s.driver, &stubborn.id).await;
    assert_eq!(result.result.unwrap().exit_code, 137);
    // Stop again is a no-op; destroy removes the container.
    s.driver
        .stop_task(nomad::StopTaskRequest {
            task_id: stubborn.id.clone(),
            timeout: None,
            signal: String::new(),
        })
        .await
        .unwrap();
    destroy(&mut s.driver, &polite.id, &polite.container).await;
    destroy(&mut s.driver, &stubborn.id, &stubborn.container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_is_reported() {
    let mut s = setup().await;
    // `tail` buffers its whole input looking for a newline that /dev/zero never sends.
    let hog = start(&mut s.driver, "hog", script("tail /dev/zero"), 16).await;
    let result = wait(&mut s.driver, &hog.id).await;
    let exit = result.result.unwrap();
    assert!(
        exit.oom_killed,
        "expected an OOM kill, got {exit:?} / {}",
        result.err
    );
    assert_eq!(result.err, "OOM Killed");
    destroy(&mut s.driver, &hog.id, &hog.container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_exec_inspect_and_stats_on_a_running_task() {
    let mut s = setup().await;
    let task = start(&mut s.driver, "busy", script("trap 'echo got HUP' HUP; echo ready; i=0; while [ $i -lt 300 ]; do i=$((i+1)); sleep 0.1; done"), 64).await;
    task.stdout.wait_for("ready", Duration::from_secs(30)).await;
    s.driver
        .signal_task(nomad::SignalTaskRequest {
            task_id: task.id.clone(),
            signal: "SIGHUP".into(),
        })
        .await
        .unwrap();
    // The shell runs its trap once its `sleep 0.1` ends.
    task.stdout
        .wait_for("got HUP", Duration::from_secs(10))
        .await;

    let exec = s
        .driver
        .exec_task(nomad::ExecTaskRequest {
            task_id: task.id.clone(),
            command: vec!["id".into(), "-u".into()],
            timeout: Some(duration(Duration::from_secs(10))),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        String::from_utf8_lossy(&exec.stdout).trim(),
        "2100000000",
        "tasks run as the default task uid"
    );
    assert_eq!(exec.result.unwrap().exit_code, 0);

    let inspected = s
        .driver
        .inspect_task(nomad::InspectTaskRequest {
            task_id: task.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let status = inspected.task.unwrap();
    assert_eq!(status.state, nomad::TaskState::Running as i32);
    assert!(status.started_at.unwrap().seconds > 0);
    assert!(status.completed_at.is_some());

    let mut stats = s
        .driver
        .task_stats(nomad::TaskStatsRequest {
            task_id: task.id.clone(),
            collection_interval: Some(duration(Duration::from_millis(500))),
        })
        .await
        .unwrap()
        .into_inner();
    let sample = stats.next().await.unwrap().unwrap().stats.unwrap();
    let memory = sample.agg_resource_usage.unwrap().memory.unwrap();
    assert!(
        memory.usage > 0 && memory.rss > 0,
        "memory figures come from the cgroup: {memory:?}"
    );

    s.driver
        .stop_task(nomad::StopTaskRequest {
            task_id: task.id.clone(),
            timeout: Some(duration(Duration::from_secs(1))),
            signal: "SIGKILL".into(),
        })
        .await
        .unwrap();
    wait(&mut s.driver, &task.id).await;
    let stdout = finish(task.stdout).await;
    assert_eq!(String::from_utf8_lossy(&stdout), "ready\ngot HUP\n");
    destroy(&mut s.driver, &task.id, &task.container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credential_reaches_the_task_and_nowhere_else() {
    let mut s = setup().await;
    let mut events = support::task_events(&s.driver).await;
    let task = start(&mut s.driver, "creds", script("[ -n \"$OPENAI_API_KEY\" ] && echo has-key; echo \"key=$OPENAI_API_KEY\"; echo \"provider=$PROVIDER\""), 64).await;
    let inspect = docker(&["inspect", &task.container]);
    assert!(inspect.contains(&task.container), "docker inspect works");
    assert!(
        !inspect.contains(&s.key),
        "the credential is in docker inspect"
    );
    assert!(!String::from_utf8_lossy(&task.handle.driver_state).contains(&s.key));
    let result = wait(&mut s.driver, &task.id).await;
    assert_eq!(result.result.unwrap().exit_code, 0);
    let stdout = String::from_utf8(finish(task.stdout).await).unwrap();
    assert_eq!(stdout, "has-key\nkey=[REDACTED]\nprovider=openai\n");
    let mut seen_events = String::new();
    while let Ok(Some(Ok(event))) =
        tokio::time::timeout(Duration::from_millis(200), events.next()).await
    {
        seen_events.push_str(&format!("{event:?}"));
    }
    assert!(!seen_events.contains(&s.key));
    destroy(&mut s.driver, &task.id, &task.container).await;
    let logs_dir = s.data_dir.path().join("logs");
    for entry in std::fs::read_dir(&logs_dir).into_iter().flatten().flatten() {
        let content = std::fs::read(entry.path()).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&content).contains(&s.key),
            "{} holds the key",
            entry.path().display()
        );
    }
    assert!(
        !s.plugin.stderr().contains(&s.key),
        "the plugin's log holds the key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_credential_fails_clearly_and_leaks_nothing() {
    let mut s = setup().await;
    let alloc = AllocDir::new("nokey");
    let options = TaskOptions::new("anthropic", "claude", &["--version"]);
    let err = s
        .driver
        .start_task(nomad::StartTaskRequest {
            task: Some(task_config(
                &unique_id("nokey"),
                Some(alloc.root.path()),
                &options,
            )),
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("ANTHROPIC_API_KEY"),
        "{}",
        err.message()
    );
    let left = docker(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        "name=polydev-nokey-",
    ]);
    assert!(
        left.trim().is_empty(),
        "a failed start left a container: {left}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_kill_9_then_recover_loses_and_repeats_no_line() {
    let mut s = setup().await;
    let body = "i=0; while [ $i -lt 300 ]; do echo \"line $i\"; echo \"err $i\" >&2; i=$((i+1)); sleep 0.01; done";
    let task = start(&mut s.driver, "survivor", script(body), 64).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    s.plugin.kill9();
    assert!(
        container_exists(&task.container),
        "the task outlives the plugin"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Nomad relaunches the plugin and recovers the task from the stored handle, which no longer
    // carries the task's msgpack config.
    let plugin = Plugin::spawn(&[("OPENAI_API_KEY", s.key.as_str())]);
    let (mut base, mut driver) = plugin.clients().await;
    configure(&mut base, s.data_dir.path()).await;
    driver
        .recover_task(support::recover_after_agent_restart(task.handle.clone()))
        .await
        .expect("RecoverTask");
    let result = wait(&mut driver, &task.id).await;
    assert_eq!(result.result.unwrap().exit_code, 0);
    let expected: String = (0..300).map(|i| format!("line {i}\n")).collect();
    let expected_err: String = (0..300).map(|i| format!("err {i}\n")).collect();
    assert_eq!(
        String::from_utf8(finish(task.stdout).await).unwrap(),
        expected
    );
    assert_eq!(
        String::from_utf8(finish(task.stderr).await).unwrap(),
        expected_err
    );
    driver
        .destroy_task(nomad::DestroyTaskRequest {
            task_id: task.id.clone(),
            force: true,
        })
        .await
        .unwrap();
    assert!(!container_exists(&task.container));
    drop(plugin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_is_healthy_with_docker_attributes() {
    let mut s = setup().await;
    let mut stream = s
        .driver
        .fingerprint(nomad::FingerprintRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        first.health,
        nomad::fingerprint_response::HealthState::Healthy as i32
    );
    use polydev::pb::hashicorp::nomad::plugins::shared::structs::attribute::Value;
    let version = first
        .attributes
        .get("driver.polydev.docker.version")
        .and_then(|a| a.value.clone());
    assert!(matches!(version, Some(Value::StringVal(v)) if !v.is_empty()));
    let present = first
        .attributes
        .get("driver.polydev.provider.openai.image_present")
        .and_then(|a| a.value.clone());
    assert_eq!(present, Some(Value::BoolVal(true)));
}

#[test]
fn operator_cli_runs_a_task_and_passes_its_exit_code_through() {
    ensure_test_image();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_polydev"))
        .args(["run", "--provider", "openai", "--image", TEST_IMAGE, "--"])
        .args([
            "sh",
            "-c",
            "echo \"hello from $PROVIDER\"; echo oops >&2; exit 3",
        ])
        .env("OPENAI_API_KEY", test_key())
        .env_remove("NOMAD_PLUGIN_MAGIC_COOKIE")
        .output()
        .expect("run polydev run");
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, b"hello from openai\n");
    assert!(String::from_utf8_lossy(&output.stderr).contains("oops"));

    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_polydev"))
        .args([
            "run",
            "--provider",
            "openai",
            "--image",
            TEST_IMAGE,
            "--",
            "true",
        ])
        .env_remove("OPENAI_API_KEY")
        .env_remove("NOMAD_PLUGIN_MAGIC_COOKIE")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("OPENAI_API_KEY"));
}
