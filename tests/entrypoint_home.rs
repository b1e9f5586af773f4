//! The entrypoint's home skeleton (`POLYDEV_HOME_SKEL`, see "Home skeleton" in
//! `containers/entrypoint.sh`), against real Docker with the busybox test image and a skeleton
//! bind-mounted where the provider images keep theirs: a warm pool container copies it into the
//! task's tmpfs home while idle, before any spec arrives; a cold one at launch. Either way the
//! copies belong to the task's uid with private modes, and the spec's files win over them.
//! `provider_image_openai_…` checks the same on the real codex image with its own skeleton.

#[path = "entrypoint/harness.rs"]
mod harness;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use harness::*;

const SKEL: &str = "/usr/local/share/polydev/home-skel";
const TASK_UID: &str = "2100000000";
const HOME: &str = "/home/runtime";

/// A root-owned skeleton on the host, world-readable like the images' own.
fn skeleton() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join(".tool");
    std::fs::create_dir_all(tool.join("state")).unwrap();
    std::fs::write(tool.join("state/seeded.db"), "seeded state\n").unwrap();
    std::fs::write(tool.join("config.toml"), "from = \"the skeleton\"\n").unwrap();
    for (path, mode) in [
        (dir.path().to_path_buf(), 0o755),
        (tool.clone(), 0o755),
        (tool.join("state"), 0o755),
        (tool.join("state/seeded.db"), 0o644),
        (tool.join("config.toml"), 0o644),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    dir
}

/// `docker run` options of a task container: the task uid, a read-only root, a tmpfs home of
/// its own, and `skel` mounted read-only as the image's skeleton.
fn task_options(skel: &Path) -> Vec<String> {
    vec![
        "--user".into(),
        format!("{TASK_UID}:{TASK_UID}"),
        "--read-only".into(),
        "--tmpfs".into(),
        "/tmp:mode=1777".into(),
        "--tmpfs".into(),
        format!("{HOME}:uid={TASK_UID},gid={TASK_UID},mode=0700"),
        "-v".into(),
        format!("{}:{SKEL}:ro", skel.display()),
    ]
}

/// What the launched command prints: each file's mode, owner and content.
fn report_spec() -> Spec {
    sh(
        "cd $HOME && for f in .tool .tool/state .tool/state/seeded.db .tool/config.toml; do \
        stat -c '%a %u %n' $f; done; cat .tool/state/seeded.db .tool/config.toml",
    )
    .file(".tool/config.toml", "from = \"the launch spec\"\n")
}

fn check_report(out: &Output) {
    out.assert_code(0);
    let stdout = out.stdout_str();
    let want = format!(
        "700 {TASK_UID} .tool\n700 {TASK_UID} .tool/state\n600 {TASK_UID} .tool/state/seeded.db\n\
         600 {TASK_UID} .tool/config.toml\nseeded state\nfrom = \"the launch spec\"\n"
    );
    assert_eq!(stdout, want, "stderr: {}", out.stderr);
}

#[test]
fn a_warm_container_seeds_the_home_while_idle_and_the_spec_files_win() {
    let skel = skeleton();
    let options = task_options(skel.path());
    let mut args: Vec<&str> = options.iter().map(String::as_str).collect();
    args.extend(["-e", "WARM_POOL=true"]);
    let mut r = start(test_image(), &args, &[]);
    // Before any spec: the seeded file appears in the idle container's home.
    let seeded = format!("{HOME}/.tool/state/seeded.db");
    let deadline = Instant::now() + Duration::from_secs(30);
    while r.try_exec(&["cat", &seeded]).as_deref() != Some("seeded state\n") {
        assert!(
            Instant::now() < deadline,
            "the idle warm container never seeded its home (running: {})",
            r.is_running()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    r.send(&report_spec().bytes(), true);
    check_report(&r.wait());
}

#[test]
fn a_cold_launch_seeds_the_home_before_the_spec_files() {
    let skel = skeleton();
    let options = task_options(skel.path());
    let args: Vec<&str> = options.iter().map(String::as_str).collect();
    check_report(&run_spec(&args, &report_spec()));
}

#[test]
fn a_spec_that_moves_home_gets_the_skeleton_there() {
    let skel = skeleton();
    let mut options = task_options(skel.path());
    options.extend([
        "-e".into(),
        "WARM_POOL=true".into(),
        "--tmpfs".into(),
        format!("/tmp/h:uid={TASK_UID},gid={TASK_UID},mode=0700"),
    ]);
    let args: Vec<&str> = options.iter().map(String::as_str).collect();
    let out = run_spec(&args, &report_spec().env("HOME", "/tmp/h"));
    check_report(&out);
}

#[test]
fn an_unwritable_home_is_reported_and_the_launch_goes_on() {
    let skel = skeleton();
    let out = run_spec(
        &[
            "--user",
            &format!("{TASK_UID}:{TASK_UID}"),
            "--read-only",
            "-v",
            &format!("{}:{SKEL}:ro", skel.path().display()),
        ],
        &sh("echo ran"),
    );
    out.assert_code(0);
    assert_eq!(out.stdout_str(), "ran\n");
    assert!(
        out.stderr.contains("could not copy the home skeleton"),
        "{}",
        out.stderr
    );
}

#[test]
fn without_a_skeleton_the_home_stays_empty() {
    let out = run_spec(
        &[
            "--tmpfs",
            &format!("{HOME}:uid=1000,gid=1000,mode=0700"),
            "-e",
            "WARM_POOL=true",
        ],
        &sh("ls -A $HOME; echo end"),
    );
    out.assert_code(0);
    assert_eq!(out.stdout_str(), "end\n", "{}", out.stderr);
    assert!(!out.stderr.contains("skeleton"), "{}", out.stderr);
}

/// The codex image's own skeleton, in a warm task container: seeded before the spec, owned by
/// the task uid, and the driver's `~/.codex/config.toml` is the spec's, not the build's.
#[test]
fn provider_image_openai_warm_task_home_holds_codex_state_and_the_launch_config() {
    let image = provider_image("openai");
    let dir = tempfile::tempdir().unwrap();
    let options = task_options(dir.path());
    // The image's own skeleton: drop the bind mount of the host one.
    let mut args: Vec<&str> = options[..options.len() - 2]
        .iter()
        .map(String::as_str)
        .collect();
    args.extend(["-e", "WARM_POOL=true"]);
    let mut r = start(&image, &args, &[]);
    let id_file = format!("{HOME}/.codex/installation_id");
    let deadline = Instant::now() + Duration::from_secs(30);
    while r.try_exec(&["test", "-s", &id_file]).is_none() {
        assert!(
            Instant::now() < deadline,
            "the idle codex container never seeded its home (running: {})",
            r.is_running()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let spec = sh(
        "cd $HOME/.codex && stat -c '%a %u %n' installation_id state_5.sqlite skills \
         && cat config.toml && ls",
    )
    .env("OPENAI_API_KEY", "sk-home-test")
    .file(".codex/config.toml", "# from the launch spec\n");
    r.send(&spec.bytes(), true);
    let out = r.wait();
    out.assert_code(0);
    let stdout = out.stdout_str();
    assert!(
        stdout.starts_with(&format!(
            "600 {TASK_UID} installation_id\n600 {TASK_UID} state_5.sqlite\n700 {TASK_UID} skills\n\
             # from the launch spec\n"
        )),
        "{stdout} {}",
        out.stderr
    );
    for absent in ["sessions", "logs_2.sqlite", "state_5.sqlite-wal", "tmp"] {
        assert!(
            !stdout.lines().any(|line| line == absent),
            "{absent} came from the skeleton: {stdout}"
        );
    }
}
