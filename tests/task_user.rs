//! The task user against a real Docker engine and the real plugin binary: tasks run as
//! `security.task_uid:task_gid` (by default 2100000000, which no account of this host has), cold
//! and warm, with a writable home of their own where the entrypoint writes the CLI's settings;
//! an ordinary host account (uid 1000, the task uid of old) can no longer read a task's
//! environment; and a `task_uid` that a host account has fails SetConfig naming the account.

mod support;

use std::time::Duration;

use rmpv::Value;
use support::real::{Plugin, TEST_IMAGE, docker, ensure_test_image};
use support::tasks::*;
use support::{
    PoolOptions, ProviderOptions, cty_object, plugin_config_for, set_config_request, with_field,
};

/// The default task uid and gid.
const TASK_ID: u32 = 2_100_000_000;

/// The host account with `uid` (libc's `getpwuid`, NSS included).
fn host_account(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .unwrap()
        .map(|user| user.name)
}

/// The host group with `gid`.
fn host_group(gid: u32) -> Option<String> {
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .unwrap()
        .map(|group| group.name)
}

/// A plugin (Nomad's long-lived instance) with `security` and `pool` for `openai`; the key in
/// the CLI's environment.
async fn setup_with(security: Vec<(&str, Value)>, pool: &PoolOptions) -> Setup {
    ensure_test_image();
    let key = test_key();
    let data_dir = tempfile::tempdir().unwrap();
    let plugin = Plugin::spawn(&[("OPENAI_API_KEY", key.as_str()), ("POLYDEV_LOG", "debug")]);
    let (mut base, driver) = plugin.clients().await;
    let config = plugin_config_for(
        TEST_IMAGE,
        data_dir.path(),
        pool,
        &ProviderOptions::env_mode(),
    );
    let config = with_field(&config, "security", cty_object(security));
    base.set_config(set_config_request(config, true))
        .await
        .expect("SetConfig");
    Setup {
        plugin,
        driver,
        data_dir,
        key,
    }
}

/// What a task reports of itself: its ids, its home and the owner of it, the codex settings the
/// entrypoint wrote there from the launch spec's `file` line, and whether it can write its home
/// and /tmp.
const SELF_REPORT: &str = "id -u; id -g; id -G; echo \"home=$HOME\"; stat -c 'owner=%u:%g' \"$HOME\"; \
     head -n 1 \"$HOME/.codex/config.toml\"; stat -c 'settings=%u %a' \"$HOME/.codex/config.toml\"; \
     echo home-ok > \"$HOME/probe\" && cat \"$HOME/probe\"; echo tmp-ok > /tmp/probe && cat /tmp/probe";

fn expected_report(uid: u32, gid: u32) -> String {
    format!(
        "{uid}\n{gid}\n{gid}\nhome=/home/runtime\nowner={uid}:{gid}\n\
         # Written by polydev at launch.\nsettings={uid} 600\nhome-ok\ntmp-ok\n"
    )
}

/// The uid and gid a container's init process has on the host (`/proc/<pid>/status`).
fn host_ids_of(container: &str) -> (String, String) {
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", container]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    (field("Uid:"), field("Gid:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_tasks_run_as_an_id_no_host_account_has_with_a_home_of_their_own() {
    assert_eq!(host_account(TASK_ID), None);
    assert_eq!(host_group(TASK_ID), None);
    let mut s = setup_with(vec![], &PoolOptions::target(0)).await;
    let mut options = script(&format!("{SELF_REPORT}; sleep 30"));
    options.work_dir = Some("/tmp".into());
    let task = start(&mut s.driver, "who", options, 64).await;
    task.stdout
        .wait_for("tmp-ok", Duration::from_secs(30))
        .await;
    let id = TASK_ID.to_string();
    assert_eq!(
        host_ids_of(&task.container),
        (
            format!("{id} {id} {id} {id}"),
            format!("{id} {id} {id} {id}")
        ),
        "real, effective, saved and file-system ids on the host"
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.Config.User}}", &task.container]).trim(),
        format!("{id}:{id}")
    );
    destroy(&mut s.driver, &task.id, &task.container).await;
    assert_eq!(
        String::from_utf8(finish(task.stdout).await).unwrap(),
        expected_report(TASK_ID, TASK_ID)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_tasks_with_a_read_only_root_run_as_the_configured_ids() {
    let (uid, gid) = (2_100_000_123, 2_100_000_456);
    let mut s = setup_with(
        vec![
            ("read_only_rootfs", Value::Boolean(true)),
            ("task_uid", Value::from(uid)),
            ("task_gid", Value::from(gid)),
        ],
        &PoolOptions::target(1),
    )
    .await;
    wait_for_reported_idle(&s.driver, "openai", 1).await;
    let task = start(&mut s.driver, "warm-who", script(SELF_REPORT), 64).await;
    let result = wait(&mut s.driver, &task.id).await;
    assert_eq!(result.result.unwrap().exit_code, 0, "{}", result.err);
    let stdout = String::from_utf8(finish(task.stdout).await).unwrap();
    assert_eq!(stdout, expected_report(uid, gid));
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.HostConfig.ReadonlyRootfs}}",
            &task.container
        ])
        .trim(),
        "true"
    );
    let name = docker(&["inspect", "-f", "{{.Name}}", &task.container]);
    assert!(
        name.trim().starts_with("/polydev-pool-openai-"),
        "the task ran in a warm container: {name}"
    );
    destroy(&mut s.driver, &task.id, &task.container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordinary_host_account_cannot_read_a_tasks_environment() {
    // Before, tasks ran as 1000:1000 — the first regular account of most hosts — which could
    // read an env-mode task's key from /proc/<pid>/environ (and attach a debugger).
    let mut s = setup_with(vec![], &PoolOptions::target(0)).await;
    let task = start(&mut s.driver, "environ", script("echo up; sleep 30"), 64).await;
    task.stdout.wait_for("up", Duration::from_secs(30)).await;
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &task.container]);
    let environ = format!("/proc/{}/environ", pid.trim());
    let as_root = std::fs::read(&environ).unwrap();
    assert!(
        String::from_utf8_lossy(&as_root).contains(&s.key),
        "the env-mode key is in the task's environment (root can read it)"
    );
    let as_uid_1000 = std::process::Command::new("setpriv")
        .args([
            "--reuid=1000",
            "--regid=1000",
            "--clear-groups",
            "--",
            "cat",
            &environ,
        ])
        .output()
        .unwrap();
    assert!(
        !as_uid_1000.status.success(),
        "uid 1000 read the task's environment"
    );
    assert!(!String::from_utf8_lossy(&as_uid_1000.stdout).contains(&s.key));
    assert!(
        String::from_utf8_lossy(&as_uid_1000.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&as_uid_1000.stderr)
    );
    destroy(&mut s.driver, &task.id, &task.container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_uid_a_host_account_has_fails_set_config_naming_it() {
    ensure_test_image();
    // Any account of this host other than root (root's uid 0 is refused by the decoder).
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let (uid, _) = passwd
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            Some((
                fields.get(2)?.parse::<u32>().ok()?,
                fields.first()?.to_string(),
            ))
        })
        .find(|(uid, _)| *uid != 0)
        .expect("an account other than root in /etc/passwd");
    // The name the account database gives first for that uid.
    let account = host_account(uid).unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let plugin = Plugin::spawn(&[]);
    let (mut base, _driver) = plugin.clients().await;
    let config = plugin_config_for(
        TEST_IMAGE,
        data_dir.path(),
        &PoolOptions::target(0),
        &ProviderOptions::env_mode(),
    );
    let config = with_field(
        &config,
        "security",
        cty_object(vec![("task_uid", Value::from(uid))]),
    );
    for as_agent in [false, true] {
        let err = base
            .set_config(set_config_request(config.clone(), as_agent))
            .await
            .expect_err("SetConfig with a host account's uid");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let message = err.message();
        assert!(
            message.starts_with(&format!(
                "plugin config: security: task_uid {uid} is the host account {account:?}, and \
                 the container engine does not remap container users: "
            )),
            "{message}"
        );
        assert!(
            message.contains("set security.task_uid and security.task_gid to ids no host"),
            "{message}"
        );
    }
    assert!(
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.polydev.data-dir={}", data_dir.path().display()),
        ])
        .trim()
        .is_empty(),
        "a refused configuration starts no container"
    );
}
