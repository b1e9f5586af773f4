//! `terminate`: the SIGTERM for a leftover forwarder reaches it, and only if it still is one.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use super::*;

/// A process whose `/proc/<pid>/cmdline` reads `<exe> forward-logs <container>` and that waits
/// until signalled: GNU tail permutes its options, so `-F` may come last, and it retries the
/// missing files forever.
fn fake_forwarder(dir: &Path, container_id: &str) -> std::process::Child {
    std::process::Command::new("tail")
        .args([FORWARD_SUBCOMMAND, container_id, "-F"])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_for(pid: u32, container_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !is_forwarder_of(pid, container_id) {
        assert!(
            Instant::now() < deadline,
            "the stand-in never looked like a forwarder"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn terminate_signals_the_forwarder_it_checked_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = fake_forwarder(dir.path(), "c1");
    let pid = child.id();
    wait_for(pid, "c1");

    // Another container's forwarder is not this one: no signal.
    terminate(pid, "c2");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        child.try_wait().unwrap().is_none(),
        "signalled the wrong forwarder"
    );

    terminate(pid, "c1");
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");

    // Reaped and gone: nothing to signal, and no error either.
    terminate(pid, "c1");
}

#[test]
fn a_forwarder_process_outcome_says_what_went_wrong_and_where_to_look() {
    let dir = tempfile::tempdir().unwrap();
    let forwarder = ProcessForwarder::new("polydev".into(), String::new(), dir.path().into());
    let err = forwarder.outcome("c1").unwrap_err();
    let log = dir.path().join("c1.forwarder.log");
    assert_eq!(
        err.to_string(),
        format!(
            "the log forwarder exited without a result; see {}",
            log.display()
        )
    );
    std::fs::write(dir.path().join("c1.done"), "no reader opened log FIFO x\n").unwrap();
    let err = forwarder.outcome("c1").unwrap_err();
    assert_eq!(err.to_string(), "no reader opened log FIFO x");
    std::fs::write(dir.path().join("c1.done"), "ok").unwrap();
    assert_eq!(forwarder.outcome("c1").unwrap(), ForwardEnd::Completed);
}
