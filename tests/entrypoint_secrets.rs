//! The entrypoint's handling of what must not leak or be misplaced, against real Docker: no
//! launch-spec value ever appears in any process's argv (which every user of the host can
//! read in `/proc/*/cmdline`), and v2's `file` lines land where they should, or are refused.

#[path = "entrypoint/harness.rs"]
mod harness;

use harness::*;

/// The host PID of a running container's PID 1 (bounded wait).
fn init_pid(name: &str) -> u32 {
    for _ in 0..200 {
        let out = std::process::Command::new(docker_cli())
            .args(["inspect", "-f", "{{.State.Pid}}", name])
            .output()
            .expect("docker inspect");
        if let Ok(pid) = String::from_utf8_lossy(&out.stdout).trim().parse::<u32>()
            && pid > 0
        {
            return pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("container {name} never started");
}

/// Every `execve` the entrypoint makes, traced from the host with strace while it reads a
/// spec whose values must stay out of every argv: the trace holds the commands it ran (so
/// tracing worked) and none of the values. In the busybox test image and in a provider image
/// (bash and coreutils: there the old `exec env NAME=VALUE …` showed every value).
#[test]
fn no_spec_value_is_ever_in_a_process_argv() {
    check_argv_stays_clean(test_image());
}

#[test]
fn provider_image_anthropic_no_spec_value_is_ever_in_a_process_argv() {
    check_argv_stays_clean(&provider_image("anthropic"));
}

fn check_argv_stays_clean(image: &str) {
    const VALUE: &str = "sk-argv-probe-7f3a9c1e5d";
    let spec = Spec::new()
        // The check names only a prefix of the value: the command's own argv is traced too.
        .args([
            "sh",
            "-c",
            "case $KEY in sk-argv-probe-*) echo got-it ;; esac",
        ])
        .env("KEY", VALUE)
        .env("OTHER", format!("x{VALUE}x"))
        // What a provider image itself requires (a broker placeholder in real use).
        .env("ANTHROPIC_API_KEY", "placeholder")
        .require("KEY");
    let mut running = start(image, &[], &[]);
    let pid = init_pid(&running.name.0);
    let trace = tempfile::NamedTempFile::new().unwrap();
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-qq", "-s", "4096", "-e", "trace=execve", "-o"])
        .arg(trace.path())
        .args(["-p", &pid.to_string()])
        .spawn()
        .expect("strace (tests/run.sh installs it)");
    // strace prints nothing when attached; give it a moment before the spec arrives.
    std::thread::sleep(std::time::Duration::from_millis(500));
    running.send(&spec.bytes(), true);
    let out = running.wait();
    let _ = strace.wait();
    out.assert_code(0);
    assert_eq!(out.stdout_str(), "got-it\n");
    let traced = std::fs::read_to_string(trace.path()).unwrap();
    assert!(
        traced.contains("[\"sh\", \"-c\", \"case $KEY"),
        "the trace missed the command: {traced}"
    );
    assert!(
        traced.contains("[\"base64\", \"-d\"]"),
        "the trace missed the decoding: {traced}"
    );
    assert!(
        !traced.contains(VALUE),
        "a spec value was in an argv: {traced}"
    );
}

#[test]
fn files_are_written_under_home_before_the_command_runs() {
    let spec = sh("cat $HOME/.tool/config.toml; echo; stat -c '%a %u' $HOME/.tool/config.toml $HOME/.tool; cat /tmp/h/x")
        .file(".tool/config.toml", "a = \"b c\"\nd = 1\n")
        .file("x", "in the spec's HOME\n")
        .env("HOME", "/tmp/h");
    // The spec's HOME is where files go; this one must exist for the command's `cat`.
    let out = run_spec(&["--tmpfs", "/tmp/h:uid=1000,gid=1000,mode=0700"], &spec);
    out.assert_code(0);
    let stdout = out.stdout_str();
    assert!(stdout.starts_with("a = \"b c\"\nd = 1\n\n"), "{stdout}");
    assert!(stdout.contains("600 1000\n700 1000\n"), "{stdout}");
    assert!(stdout.ends_with("in the spec's HOME\n"), "{stdout}");
}

#[test]
fn bad_file_lines_exit_65_without_echoing_values() {
    let secret = b64(SECRET.as_bytes());
    let cases: Vec<(&str, Spec)> = vec![
        (
            "absolute path",
            Spec::new().arg("true").file("/etc/passwd", "x"),
        ),
        (
            "dot-dot",
            Spec::new().arg("true").file(".tool/../../x", "x"),
        ),
        ("dot", Spec::new().arg("true").file("./x", "x")),
        ("trailing slash", Spec::new().arg("true").file("dir/", "x")),
        ("odd characters", Spec::new().arg("true").file("a b", "x")),
        (
            "one value",
            Spec::new().arg("true").raw(&format!("file {secret}")),
        ),
        (
            "bad base64",
            Spec::new()
                .arg("true")
                .raw(&format!("file {SECRET}! {secret}")),
        ),
    ];
    for (what, spec) in cases {
        let out = run_spec(&[], &spec);
        assert_eq!(out.code, 65, "{what}: stderr={}", out.stderr);
        assert!(
            out.stderr.contains("malformed launch spec"),
            "{what}: {}",
            out.stderr
        );
        out.assert_not_leaked(SECRET);
    }
    // An unwritable home fails the launch with the path, not silently.
    let out = run_spec(
        &["--read-only"],
        &Spec::new().arg("true").file(".tool/c", "x"),
    );
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert!(
        out.user_stderr().contains("/home/runtime/.tool"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_v1_spec_is_still_understood() {
    let spec = format!("polydev-launch-v1\narg {}\nend\n", b64(b"true"));
    let out = run_spec_on(test_image(), &[], spec.as_bytes());
    out.assert_code(0);
}

/// The spec is complete at `end`: the entrypoint neither waits for stdin to close (a
/// live-restored engine never closes it) nor hands it to the command, and ignores what follows.
#[test]
fn the_command_starts_at_end_with_stdin_from_dev_null() {
    let mut running = start(test_image(), &[], &[]);
    let mut spec = sh("cat; echo started").bytes();
    spec.extend_from_slice(b"arg dHJ1ZQ==\nwhatever follows\n");
    running.send(&spec, false);
    let out = running.wait();
    out.assert_code(0);
    assert_eq!(out.stdout_str(), "started\n");
}
