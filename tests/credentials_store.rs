//! Per-user credentials end to end, against a real Docker engine and the real binary: the
//! operator registers a key with `polydev credentials set` (value on stdin), the plugin — spoken
//! to over its socket as Nomad does — injects it into a task of the user's namespace only, and
//! the key appears nowhere else: not in `docker inspect`, `driver_state`, task events, the
//! plugin's log, any file of the data dir but the encrypted entry (and not in plaintext there),
//! nor in the task's log output (`[REDACTED]`).

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use polydev::pb::hashicorp::nomad::plugins::drivers::proto::{
    self as nomad, driver_client::DriverClient,
};
use rmpv::Value;
use support::real::{
    AllocDir, FifoReader, Plugin, TEST_IMAGE, credentials_cli, docker, ensure_test_image,
};
use support::{TaskOptions, cty_object, encode, str_list, task_config};
use tonic::transport::Channel;

/// A value unique to this run, so a search for it cannot hit anything else.
fn unique(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    format!("{prefix}-{}-{:016x}", std::process::id(), hasher.finish())
}

/// The plugin config: every provider on the test image with the key in the CLI's environment
/// (env mode: the task itself shows which key it got; `broker_docker.rs` covers the store in
/// broker mode), the store and the env both on, and every warm pool off.
fn plugin_config(data_dir: &Path) -> Vec<u8> {
    let provider = |credentials: &[&str]| {
        cty_object(vec![
            ("command", Value::Nil),
            ("credential_mode", Value::from("env")),
            ("credentials", str_list(credentials)),
            ("image", Value::from(TEST_IMAGE)),
            ("optional_credentials", Value::Nil),
        ])
    };
    let no_pool = || {
        cty_object(vec![
            ("target", Value::from(0)),
            ("max", Value::Nil),
            ("max_idle_age", Value::Nil),
            ("refill_parallelism", Value::Nil),
            ("idle_cpus", Value::Nil),
            ("idle_memory", Value::Nil),
            ("when_empty", Value::Nil),
            ("wait_timeout", Value::Nil),
        ])
    };
    encode(&cty_object(vec![
        ("container_log", Value::Nil),
        ("credentials_from_env", Value::Boolean(true)),
        ("credentials_from_store", Value::Boolean(true)),
        (
            "credentials_key_file",
            Value::from(support::key_file(data_dir).to_str().unwrap()),
        ),
        ("data_dir", Value::from(data_dir.to_str().unwrap())),
        ("disable_log_collection", Value::Nil),
        ("docker_endpoint", Value::Nil),
        (
            "pool",
            Value::Map(
                ["anthropic", "google", "openai"]
                    .into_iter()
                    .map(|name| (Value::from(name), no_pool()))
                    .collect(),
            ),
        ),
        (
            "provider",
            Value::Map(vec![
                (Value::from("anthropic"), provider(&["ANTHROPIC_API_KEY"])),
                (Value::from("google"), provider(&["GOOGLE_API_KEY"])),
                (Value::from("openai"), provider(&["OPENAI_API_KEY"])),
            ]),
        ),
        ("security", Value::Nil),
    ]))
}

/// `sha256sum` of `text`, as the task prints it.
fn sha256_line(text: &str) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}

/// Removes a task's container when the test ends, so a failing test leaks nothing.
struct ContainerGuard(String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

struct Task {
    id: String,
    handle: nomad::TaskHandle,
    container: String,
    stdout: Option<FifoReader>,
    _stderr: FifoReader,
    _alloc: AllocDir,
    _guard: ContainerGuard,
}

fn task_request(
    name: &str,
    namespace: &str,
    user: Option<&str>,
    body: &str,
    alloc: &AllocDir,
) -> nomad::StartTaskRequest {
    let mut options = TaskOptions::new("openai", "sh", &["-c", body]);
    options.user_id = user.map(String::from);
    options.work_dir = Some("/local".into());
    let id = format!("{}/{name}/{}", unique("alloc"), unique("t"));
    let mut config = task_config(&id, Some(alloc.root.path()), &options);
    config.name = name.to_string();
    config.namespace = namespace.to_string();
    nomad::StartTaskRequest { task: Some(config) }
}

async fn start(
    driver: &mut DriverClient<Channel>,
    name: &str,
    namespace: &str,
    user: Option<&str>,
    body: &str,
) -> Task {
    let alloc = AllocDir::new(name);
    let (stdout, stderr) = alloc.start_readers();
    let request = task_request(name, namespace, user, body, &alloc);
    let id = request.task.as_ref().unwrap().id.clone();
    let handle = driver
        .start_task(request)
        .await
        .unwrap_or_else(|status| panic!("StartTask {name}: {}", status.message()))
        .into_inner()
        .handle
        .unwrap();
    let state = polydev::core::DriverState::decode(&handle.driver_state).unwrap();
    Task {
        id,
        handle,
        _guard: ContainerGuard(state.container_id.clone()),
        container: state.container_id,
        stdout: Some(stdout),
        _stderr: stderr,
        _alloc: alloc,
    }
}

/// Wait for the task's exit (code 0) and return its stdout.
async fn finish(driver: &mut DriverClient<Channel>, task: &mut Task) -> String {
    let result = driver
        .wait_task(nomad::WaitTaskRequest {
            task_id: task.id.clone(),
        })
        .await
        .expect("WaitTask")
        .into_inner();
    assert_eq!(result.result.unwrap().exit_code, 0, "{}", result.err);
    let stdout = task.stdout.take().expect("finished once");
    let bytes = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || stdout.finish()),
    )
    .await
    .expect("the FIFO was closed at task end")
    .unwrap();
    String::from_utf8(bytes).unwrap()
}

async fn destroy(driver: &mut DriverClient<Channel>, task: &Task) {
    driver
        .destroy_task(nomad::DestroyTaskRequest {
            task_id: task.id.clone(),
            force: true,
        })
        .await
        .expect("DestroyTask");
}

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            files.extend(files_under(&path));
        } else if kind.is_file() {
            files.push(path);
        }
    }
    files
}

/// Assert that no file under `data_dir` holds `key` in plaintext, and that only the entry file
/// holds the entry; returns how many files under `<data_dir>/logs` were searched.
fn search_data_dir(data_dir: &Path, key: &str) -> usize {
    let entry = data_dir.join("credentials/ns-a/user1/openai.cred");
    let files = files_under(data_dir);
    assert!(files.contains(&entry), "{files:?}");
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(key),
            "{} holds the key in plaintext",
            file.display()
        );
        if *file != entry {
            assert!(
                !text.contains("polydev-credentials v1"),
                "{} looks like a copy of the entry",
                file.display()
            );
        }
    }
    files
        .iter()
        .filter(|f| f.starts_with(data_dir.join("logs")))
        .count()
}

fn containers_named(prefix: &str) -> String {
    docker(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("name={prefix}"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_key_reaches_only_its_users_tasks_in_its_namespace_and_nowhere_else() {
    ensure_test_image();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("polydev");
    let user_key = unique("sk-user1-registered");
    let shared_key = unique("sk-shared-env");

    // The operator registers user1's key in namespace ns-a, on stdin.
    let (code, stdout, stderr) = credentials_cli(
        &[
            "set",
            "--namespace",
            "ns-a",
            "--user",
            "user1",
            "--provider",
            "openai",
        ],
        &data_dir,
        &format!("{user_key}\n"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("stored OPENAI_API_KEY"), "{stdout}");
    let (code, listed, _) = credentials_cli(&["list"], &data_dir, "");
    assert_eq!(code, 0);
    assert!(
        listed.contains("ns-a") && listed.contains("user1") && listed.contains("OPENAI_API_KEY"),
        "{listed}"
    );
    assert!(!listed.contains(&user_key));

    let plugin = Plugin::spawn(&[
        ("OPENAI_API_KEY", shared_key.as_str()),
        ("POLYDEV_LOG", "debug"),
    ]);
    let (mut base, mut driver) = plugin.clients().await;
    base.set_config(support::set_config_request(plugin_config(&data_dir), false))
        .await
        .expect("SetConfig");
    let mut events = support::task_events(&driver).await;

    // user1's task in ns-a sees exactly the registered key (not the shared one).
    let mut hashed = start(
        &mut driver,
        "hashed",
        "ns-a",
        Some("user1"),
        "printf %s \"$OPENAI_API_KEY\" | sha256sum",
    )
    .await;
    let inspect = docker(&["inspect", &hashed.container]);
    assert!(inspect.contains(&hashed.container), "docker inspect works");
    let output = finish(&mut driver, &mut hashed).await;
    assert_eq!(output, sha256_line(&user_key), "the task got user1's key");
    assert_ne!(output, sha256_line(&shared_key));

    // A task that prints the key gets it redacted on its way to Nomad.
    let mut printer = start(
        &mut driver,
        "printer",
        "ns-a",
        Some("user1"),
        "echo \"key=$OPENAI_API_KEY\"",
    )
    .await;
    let inspect_printer = docker(&["inspect", &printer.container]);
    let output = finish(&mut driver, &mut printer).await;
    assert_eq!(output, "key=[REDACTED]\n");

    // A task without a user gets the node's shared key from the environment.
    let mut shared = start(
        &mut driver,
        "shared",
        "ns-a",
        None,
        "printf %s \"$OPENAI_API_KEY\" | sha256sum",
    )
    .await;
    let output = finish(&mut driver, &mut shared).await;
    assert_eq!(output, sha256_line(&shared_key));

    // A job in namespace ns-b naming user1 fails clearly, and no container is created.
    let name = format!("nsb{}", std::process::id());
    let alloc = AllocDir::new(&name);
    let err = driver
        .start_task(task_request(
            &name,
            "ns-b",
            Some("user1"),
            "echo should-not-run",
            &alloc,
        ))
        .await
        .unwrap_err();
    let message = err.message().to_string();
    for part in [
        "OPENAI_API_KEY",
        "namespace \"ns-b\"",
        "user \"user1\"",
        "provider \"openai\"",
        "polydev credentials set --namespace ns-b --user user1 --provider openai",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert!(!message.contains(&user_key) && !message.contains(&shared_key));
    let left = containers_named(&format!("polydev-{name}-"));
    assert!(
        left.trim().is_empty(),
        "a refused start left a container: {left}"
    );

    // `rm` takes effect at the next StartTask, without restarting the plugin.
    let (code, _, stderr) = credentials_cli(
        &[
            "rm",
            "--namespace",
            "ns-a",
            "--user",
            "user1",
            "--provider",
            "openai",
        ],
        &data_dir,
        "",
    );
    assert_eq!(code, 0, "{stderr}");
    let gone = AllocDir::new("gone");
    let err = driver
        .start_task(task_request("gone", "ns-a", Some("user1"), "true", &gone))
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("no credential OPENAI_API_KEY is registered"),
        "{}",
        err.message()
    );
    // ... and so does a new `set`, encrypted again (so the entry file is back for the search).
    let (code, _, stderr) = credentials_cli(
        &[
            "set",
            "--namespace",
            "ns-a",
            "--user",
            "user1",
            "--provider",
            "openai",
        ],
        &data_dir,
        &user_key,
    );
    assert_eq!(code, 0, "{stderr}");
    let mut again = start(
        &mut driver,
        "again",
        "ns-a",
        Some("user1"),
        "printf %s \"$OPENAI_API_KEY\" | sha256sum",
    )
    .await;
    let output = finish(&mut driver, &mut again).await;
    assert_eq!(output, sha256_line(&user_key));

    // The key is found nowhere it should not be.
    for (what, text) in [
        ("docker inspect", inspect),
        ("docker inspect", inspect_printer),
        (
            "driver_state",
            String::from_utf8_lossy(&hashed.handle.driver_state).into_owned(),
        ),
        (
            "driver_state",
            String::from_utf8_lossy(&printer.handle.driver_state).into_owned(),
        ),
    ] {
        assert!(!text.contains(&user_key), "the key is in {what}");
    }
    let mut seen_events = String::new();
    while let Ok(Some(Ok(event))) =
        tokio::time::timeout(Duration::from_millis(300), events.next()).await
    {
        seen_events.push_str(&format!("{event:?}"));
    }
    assert!(
        !seen_events.contains(&user_key),
        "the key is in a task event"
    );
    // The data dir, while the tasks' log forwarder files still exist, and after DestroyTask.
    let logs_before = search_data_dir(&data_dir, &user_key);
    assert!(logs_before > 0, "the forwarders' files are searched too");
    for task in [&hashed, &printer, &shared, &again] {
        destroy(&mut driver, task).await;
    }
    search_data_dir(&data_dir, &user_key);
    assert!(
        !plugin.stderr().contains(&user_key),
        "the plugin's log holds the key"
    );
    assert!(
        plugin.stderr().contains("DEBUG") || plugin.stderr().contains("debug"),
        "the plugin logged at debug level, so the search above means something"
    );
}
