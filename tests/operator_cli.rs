//! The operator CLI as a Unix tool, through the real binary and real Docker: output through the
//! inherited descriptors (a file that already has content keeps it, in order), signals stop the
//! task and remove its container, a `kill -9`ed run's container goes once its expiry has passed,
//! `--help` on every command, and `pool drain`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::real::{TEST_IMAGE, docker, ensure_test_image};
use support::tasks::{containers_of, script, setup_with_pool, start, test_key};

fn polydev() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_polydev"));
    command.env_remove("NOMAD_PLUGIN_MAGIC_COOKIE");
    command
}

/// `polydev run` of the test image (env mode: no broker needed for these checks).
fn run_args(extra: &[&str], command: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--provider",
        "openai",
        "--image",
        TEST_IMAGE,
        "--credential-mode",
        "env",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["--", "sh", "-c", command].iter().map(|s| s.to_string()));
    args
}

/// Containers `polydev run` made for process `pid` (their name carries its pid in hex).
fn run_containers_of(pid: u32) -> Vec<String> {
    docker(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        "label=io.polydev.expires-at",
    ])
    .lines()
    .filter(|name| name.contains(&format!("{pid:08x}")))
    .map(str::to_string)
    .collect()
}

#[test]
fn output_goes_through_the_inherited_descriptors_in_order() {
    ensure_test_image();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out");
    let binary = env!("CARGO_BIN_EXE_polydev");
    let args = run_args(&[], "echo hello; echo to-stderr >&2")
        .into_iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(echo before; '{binary}' {args}; echo after) > '{}' 2>&1",
            file.display()
        ))
        .env("OPENAI_API_KEY", test_key())
        .env_remove("NOMAD_PLUGIN_MAGIC_COOKIE")
        .status()
        .unwrap();
    assert!(status.success());
    let written = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.first(), Some(&"before"), "{written:?}");
    assert_eq!(lines.last(), Some(&"after"), "{written:?}");
    assert!(
        lines.contains(&"hello") && lines.contains(&"to-stderr"),
        "{written:?}"
    );
}

#[test]
fn sigterm_stops_the_task_removes_its_container_and_exits_143() {
    ensure_test_image();
    let mut child = polydev()
        .args(run_args(&["--kill-timeout", "2s"], "echo ready; sleep 300"))
        .env("OPENAI_API_KEY", test_key())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    assert_eq!(run_containers_of(pid).len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "polydev run did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(143));
    assert!(
        run_containers_of(pid).is_empty(),
        "the container is still there"
    );
}

#[test]
fn a_killed_runs_container_goes_once_its_expiry_has_passed() {
    ensure_test_image();
    let mut child = polydev()
        .args(run_args(&["--timeout", "3s"], "echo ready; sleep 300"))
        .env("OPENAI_API_KEY", test_key())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        run_containers_of(pid).len(),
        1,
        "kill -9 leaves the container"
    );
    std::thread::sleep(Duration::from_secs(4));
    // The next run sweeps what has expired.
    let next = polydev()
        .args(run_args(&[], "true"))
        .env("OPENAI_API_KEY", test_key())
        .output()
        .unwrap();
    assert!(
        next.status.success(),
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
    assert!(
        run_containers_of(pid).is_empty(),
        "the expired container is still there"
    );
}

#[test]
fn every_command_has_help() {
    for command in [
        "help",
        "run --help",
        "credentials --help",
        "credentials set --help",
        "credentials list --help",
        "credentials rm -h",
        "pool --help",
        "pool status --help",
        "pool drain --help",
    ] {
        let output = polydev().args(command.split(' ')).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{command}: {stdout}");
        assert!(stdout.contains("polydev"), "{command}: {stdout}");
    }
    let unknown = polydev()
        .args(["pool", "status", "--frob=1"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("--frob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_drain_removes_idle_containers_and_leaves_running_tasks() {
    let mut s = setup_with_pool(&support::PoolOptions::target(2)).await;
    support::tasks::wait_for_reported_idle(&s.driver, "openai", 2).await;
    let task = start(&mut s.driver, "stays", script("sleep 300"), 64).await;
    support::tasks::wait_for_reported_idle(&s.driver, "openai", 2).await;
    // The agent is gone for good: its plugin too.
    s.plugin.kill9();
    let before = containers_of(s.data_dir.path());
    assert_eq!(before.len(), 3, "{before:?}");
    let output = polydev()
        .args(["pool", "drain", "--data-dir"])
        .arg(s.data_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("2 pool containers removed") && stdout.contains("1 task containers left"),
        "{stdout}"
    );
    let after = containers_of(s.data_dir.path());
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].0, task.container);
}
