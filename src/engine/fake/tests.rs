//! Tests of the fake engine itself: the core's tests are only as good as the fake's fidelity.

use std::time::Duration;

use futures::StreamExt;

use super::*;

/// An engine that has the image `spec()` uses.
fn fake_with_image() -> FakeEngine {
    let fake = FakeEngine::new();
    fake.add_image("polydev/test:1");
    fake
}

fn spec(name: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.to_string(),
        image: "polydev/test:1".to_string(),
        user: "1000:1000".to_string(),
        env: vec!["WARM_POOL=true".to_string()],
        labels: BTreeMap::from([("io.polydev.pool".to_string(), "openai".to_string())]),
        limits: ResourceLimits {
            memory_bytes: 256 << 20,
            ..Default::default()
        },
        mounts: Vec::new(),
        security: Default::default(),
        work_dir: None,
        network_mode: None,
        log_max_size: "10m".to_string(),
        log_max_files: 2,
    }
}

async fn started(fake: &FakeEngine, name: &str) -> String {
    let id = fake.create(&spec(name)).await.unwrap();
    fake.start(&id).await.unwrap();
    id
}

#[tokio::test]
async fn create_start_inspect_and_call_log() {
    let fake = fake_with_image();
    let a = fake.create(&spec("a")).await.unwrap();
    let b = fake.create(&spec("b")).await.unwrap();
    assert_eq!((a.as_str(), b.as_str()), ("fake-1", "fake-2"));
    let state = fake.inspect(&a).await.unwrap();
    assert!(!state.running && state.started_at.is_none() && state.exit.is_none());
    fake.start(&a).await.unwrap();
    let state = fake.inspect(&a).await.unwrap();
    assert!(state.running && state.started_at.is_some());
    assert_eq!(
        state.labels.get("io.polydev.pool").map(String::as_str),
        Some("openai")
    );
    let calls = fake.calls();
    assert_eq!(calls.len(), 5);
    assert!(matches!(&calls[0], FakeCall::Create { spec } if spec.name == "a"));
    assert_eq!(calls[3], FakeCall::Start { id: a.clone() });
    // Names are unique, as in Docker.
    assert!(matches!(
        fake.create(&spec("a")).await,
        Err(EngineError::Rejected(_))
    ));
}

#[tokio::test]
async fn launch_spec_is_stored_once_and_logged_by_length_only() {
    let fake = fake_with_image();
    let id = fake.create(&spec("a")).await.unwrap();
    let err = fake.send_launch_spec(&id, b"x").await.unwrap_err();
    assert!(
        matches!(err, EngineError::NotRunning(_)),
        "stdin needs a started container"
    );
    fake.start(&id).await.unwrap();
    fake.send_launch_spec(&id, b"{\"argv\":[\"codex\"]}")
        .await
        .unwrap();
    assert_eq!(fake.launch_spec(&id).unwrap(), b"{\"argv\":[\"codex\"]}");
    assert!(fake.calls().contains(&FakeCall::SendLaunchSpec {
        id: id.clone(),
        len: 18
    }));
    assert!(fake.send_launch_spec(&id, b"again").await.is_err());
    assert!(
        fake.inspect(&id).await.unwrap().running,
        "the spec alone does not end the container"
    );
}

#[tokio::test]
async fn wait_resolves_before_and_after_exit_for_many_callers() {
    let fake = fake_with_image();
    let id = started(&fake, "a").await;
    let early: Vec<_> = (0..3)
        .map(|_| {
            let (fake, id) = (fake.clone(), id.clone());
            tokio::spawn(async move { fake.wait(&id).await })
        })
        .collect();
    tokio::task::yield_now().await;
    fake.exit(&id, 3, true).unwrap();
    let want = ContainerExit {
        exit_code: 3,
        oom_killed: true,
    };
    for handle in early {
        assert_eq!(handle.await.unwrap().unwrap(), want);
    }
    assert_eq!(fake.wait(&id).await.unwrap(), want);
    let state = fake.inspect(&id).await.unwrap();
    assert!(!state.running && state.finished_at.is_some());
    assert_eq!(state.exit, Some(want));
}

#[tokio::test]
async fn sigkill_exits_137_other_signals_only_when_scripted() {
    let fake = fake_with_image();
    let a = started(&fake, "a").await;
    let b = started(&fake, "b").await;
    fake.kill(&a, "SIGTERM").await.unwrap();
    assert!(
        fake.inspect(&a).await.unwrap().running,
        "an unscripted SIGTERM is only recorded"
    );
    fake.exit_on_signal(SignalTarget::All, "TERM", 143);
    fake.exit_on_signal(SignalTarget::Container(b.clone()), "SIGTERM", 0);
    fake.kill(&a, "SIGTERM").await.unwrap();
    fake.kill(&b, "sigterm").await.unwrap();
    assert_eq!(fake.wait(&a).await.unwrap().exit_code, 143);
    assert_eq!(
        fake.wait(&b).await.unwrap().exit_code,
        0,
        "the container rule wins"
    );
    assert!(matches!(
        fake.kill(&a, "SIGKILL").await,
        Err(EngineError::NotRunning(_))
    ));

    let c = started(&fake, "c").await;
    fake.kill(&c, "9").await.unwrap();
    assert_eq!(
        fake.wait(&c).await.unwrap(),
        ContainerExit {
            exit_code: 137,
            oom_killed: false
        }
    );
    let kills = fake
        .calls()
        .into_iter()
        .filter(|c| matches!(c, FakeCall::Kill { .. }))
        .count();
    assert_eq!(kills, 5);
}

#[tokio::test]
async fn logs_replay_since_then_follow_until_exit() {
    let fake = fake_with_image();
    fake.set_clock_step(Duration::from_millis(600));
    let id = started(&fake, "a").await;
    let t1 = fake.emit(&id, LogStream::Stdout, "one\n").unwrap();
    let t2 = fake.emit(&id, LogStream::Stderr, "two\n").unwrap();
    let t3 = fake.emit(&id, LogStream::Stdout, "three\n").unwrap();
    assert!(t1 < t2 && t2 < t3);

    let since = (t3 / 1_000_000_000) as i64;
    let mut follow = fake.logs(&id, since);
    // t1 = +0.6 s, t2 = +1.2 s, t3 = +1.8 s: `since` = floor(t3) keeps t2 and drops t1.
    let first = follow.next().await.unwrap().unwrap();
    assert_eq!(
        first.timestamp_nanos, t2,
        "records before `since` are not replayed"
    );
    assert_eq!(follow.next().await.unwrap().unwrap().timestamp_nanos, t3);

    let live = {
        let fake = fake.clone();
        let id = id.clone();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            fake.emit(&id, LogStream::Stderr, "four\n").unwrap();
            fake.emit(&id, LogStream::Stdout, "five").unwrap();
            fake.exit(&id, 0, false).unwrap();
        })
    };
    let rest: Vec<_> = follow.map(|r| r.unwrap()).collect().await;
    live.await.unwrap();
    let bytes: Vec<_> = rest.iter().map(|r| (r.stream, r.bytes.clone())).collect();
    assert_eq!(
        bytes,
        vec![
            (LogStream::Stderr, Bytes::from("four\n")),
            (LogStream::Stdout, Bytes::from("five"))
        ]
    );

    // After exit the stream replays everything and ends.
    let all: Vec<_> = fake.logs(&id, 0).map(|r| r.unwrap().bytes).collect().await;
    assert_eq!(all, vec!["one\n", "two\n", "three\n", "four\n", "five"]);
}

#[tokio::test]
async fn forced_timestamps_may_repeat_and_the_clock_moves_past_them() {
    let fake = fake_with_image();
    let id = started(&fake, "a").await;
    let t = FAKE_EPOCH_NANOS + 5_000_000_000;
    fake.emit_at(&id, LogStream::Stdout, "a", t).unwrap();
    fake.emit_at(&id, LogStream::Stdout, "b", t).unwrap();
    let next = fake.emit(&id, LogStream::Stdout, "c").unwrap();
    assert!(next > t);
    let ts: Vec<_> = fake
        .records(&id)
        .iter()
        .map(|r| r.timestamp_nanos)
        .collect();
    assert_eq!(ts, vec![t, t, next]);
}

#[tokio::test]
async fn emit_needs_a_running_container() {
    let fake = fake_with_image();
    let id = fake.create(&spec("a")).await.unwrap();
    assert!(matches!(
        fake.emit(&id, LogStream::Stdout, "x"),
        Err(EngineError::NotRunning(_))
    ));
    assert!(
        fake.emit("fake-99", LogStream::Stdout, "x")
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn interrupt_logs_fails_open_streams_only() {
    let fake = fake_with_image();
    let id = started(&fake, "a").await;
    fake.emit(&id, LogStream::Stdout, "before\n").unwrap();
    let mut open = fake.logs(&id, 0);
    assert_eq!(open.next().await.unwrap().unwrap().bytes, "before\n");
    fake.interrupt_logs(&id).unwrap();
    assert!(open.next().await.unwrap().unwrap_err().is_retryable());
    assert!(open.next().await.is_none());
    let mut fresh = fake.logs(&id, 0);
    assert_eq!(fresh.next().await.unwrap().unwrap().bytes, "before\n");
}

#[tokio::test]
async fn remove_makes_everything_not_found_and_wakes_followers() {
    let fake = fake_with_image();
    let id = started(&fake, "a").await;
    let waiter = {
        let (fake, id) = (fake.clone(), id.clone());
        tokio::spawn(async move { fake.wait(&id).await })
    };
    let mut follow = fake.logs(&id, 0);
    tokio::task::yield_now().await;
    fake.remove(&id).await.unwrap();
    // The waiter either saw the forced exit or the removal, both before the container vanished.
    match waiter.await.unwrap() {
        Ok(exit) => assert_eq!(exit.exit_code, 137),
        Err(err) => assert!(err.is_not_found()),
    }
    match follow.next().await {
        None => {}
        Some(Err(err)) => assert!(err.is_not_found()),
        Some(Ok(r)) => panic!("unexpected record {r:?}"),
    }
    assert!(fake.inspect(&id).await.unwrap_err().is_not_found());
    assert!(fake.remove(&id).await.unwrap_err().is_not_found());
    assert!(fake.wait(&id).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn list_by_label_with_state_words() {
    let fake = fake_with_image();
    let a = started(&fake, "a").await;
    let _b = fake.create(&spec("b")).await.unwrap();
    let mut other = spec("c");
    other
        .labels
        .insert("io.polydev.pool".to_string(), "google".to_string());
    fake.create(&other).await.unwrap();
    fake.exit(&a, 0, false).unwrap();
    let listed = fake.list("io.polydev.pool", "openai").await.unwrap();
    let got: Vec<_> = listed
        .iter()
        .map(|s| (s.name.as_str(), s.state.as_str()))
        .collect();
    assert_eq!(got, vec![("a", "exited"), ("b", "created")]);
}

#[tokio::test]
async fn images_version_stats_and_limits_are_configurable() {
    let fake = fake_with_image();
    fake.set_version("99.0");
    assert_eq!(fake.version().await.unwrap(), "99.0");
    assert_eq!(fake.image_id("img:1").await.unwrap(), None);
    fake.add_image("img:1");
    assert!(fake.image_id("img:1").await.unwrap().is_some());
    let id = started(&fake, "a").await;
    fake.set_stats(StatsSample {
        memory_usage: 42,
        ..Default::default()
    });
    let sample = fake.stats(&id).await.unwrap();
    assert_eq!(sample.memory_usage, 42);
    assert!(sample.read_at.is_some());
    let limits = ResourceLimits {
        memory_bytes: 512 << 20,
        nano_cpus: 500_000_000,
        ..Default::default()
    };
    fake.update_limits(&id, None, &limits).await.unwrap();
    assert_eq!(fake.limits(&id).unwrap(), limits);
    assert!(
        fake.calls()
            .contains(&FakeCall::UpdateLimits { id, limits })
    );
}

#[tokio::test]
async fn fault_injection_once_per_queued_error_and_global_outage() {
    let fake = fake_with_image();
    fake.fail_next(FakeOp::Create, EngineError::Unavailable("boom".to_string()));
    fake.fail_next(FakeOp::Create, EngineError::Rejected("bad".to_string()));
    assert!(fake.create(&spec("a")).await.unwrap_err().is_retryable());
    assert!(matches!(
        fake.create(&spec("a")).await,
        Err(EngineError::Rejected(_))
    ));
    let id = fake.create(&spec("a")).await.unwrap();
    assert_eq!(fake.calls().len(), 3, "failed attempts are logged too");

    fake.fail_next(
        FakeOp::Logs,
        EngineError::Unavailable("conn reset".to_string()),
    );
    let first: Vec<_> = fake.logs(&id, 0).collect().await;
    assert!(matches!(
        first.as_slice(),
        [Err(EngineError::Unavailable(_))]
    ));

    fake.set_unavailable(true);
    assert!(fake.version().await.unwrap_err().is_retryable());
    assert!(fake.start(&id).await.unwrap_err().is_retryable());
    fake.set_unavailable(false);
    fake.start(&id).await.unwrap();
}

#[tokio::test]
async fn exec_is_rejected_unless_scripted() {
    let fake = fake_with_image();
    let id = started(&fake, "a").await;
    let argv = vec!["sh".to_string(), "-c".to_string(), "id".to_string()];
    let err = fake
        .exec(&id, "1000", argv.clone(), false)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, EngineError::Rejected(_)));
    fake.set_exec_handler(Arc::new(|_, argv: &[String]| FakeExecResult {
        stdout: argv.join(" ").into_bytes(),
        stderr: b"warn".to_vec(),
        exit_code: 7,
    }));
    let session = fake.exec(&id, "1000", argv, false).await.unwrap();
    assert!(
        session.input.send(ExecInput::CloseStdin).await.is_ok(),
        "stdin stays open while output runs"
    );
    let output: Vec<_> = session.output.map(|o| o.unwrap()).collect().await;
    assert_eq!(
        output,
        vec![
            ExecOutput::Stdout(Bytes::from("sh -c id")),
            ExecOutput::Stderr(Bytes::from("warn"))
        ]
    );
    assert_eq!(session.exit_code.await.unwrap(), 7);
}
