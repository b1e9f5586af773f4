//! The credential broker with real containers: the real plugin binary over its gRPC socket,
//! real Docker, the busybox test image as the `anthropic` provider's image, and the stand-in
//! API of `support::upstream` as its upstream (the real APIs are unreachable here). All
//! traffic stays on this machine's own addresses.
//!
//! What is shown here: a broker-mode task has no network but its loopback; it reaches its
//! API only through the broker, which presents the real key; the key is in no process,
//! `docker inspect`, Docker's log, driver state, task event, plugin log or data file; a second
//! task cannot reach the first one's broker; the broker stops answering at StopTask; a rotated
//! key reaches the next request and a removed one gets a 401; after a plugin `kill -9`,
//! RecoverTask brings the broker back and the client's retry succeeds; the egress allowlist
//! tunnels what it allows and refuses the rest; `polydev run` uses the same broker.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::StreamExt;
use polydev::pb::hashicorp::nomad::plugins::drivers::proto as nomad;
use support::real::{Plugin, TEST_IMAGE, credentials_cli, docker, ensure_test_image};
use support::tasks::{Setup, Started, destroy, finish, start, test_key, wait};
use support::upstream::{Reply, StandIn};
use support::{PoolOptions, ProviderOptions, TaskOptions};

/// The stand-in's canned JSON answer.
const CANNED: &str = "{\"content\":[{\"type\":\"text\",\"text\":\"canned-from-the-api\"}]}";

/// A plugin whose `anthropic` (and `openai`) provider runs the test image in broker mode
/// against `api`, with `key` as the node's shared key; `egress` is the allowlist.
async fn setup(api: &StandIn, egress: &[String], pool: &PoolOptions) -> Setup {
    ensure_test_image();
    let key = test_key();
    let data_dir = tempfile::tempdir().unwrap();
    let plugin = Plugin::spawn(&[
        ("ANTHROPIC_API_KEY", key.as_str()),
        ("OPENAI_API_KEY", key.as_str()),
        ("POLYDEV_LOG", "debug"),
    ]);
    let (mut base, driver) = plugin.clients().await;
    let config = config(api, data_dir.path(), egress, pool);
    base.set_config(support::set_config_request(config, true))
        .await
        .expect("SetConfig");
    Setup {
        plugin,
        driver,
        data_dir,
        key,
    }
}

fn config(
    api: &StandIn,
    data_dir: &std::path::Path,
    egress: &[String],
    pool: &PoolOptions,
) -> Vec<u8> {
    let providers = ProviderOptions {
        credential_mode: None,
        api_upstream: Some(api.origin()),
        upstream_ca_file: Some(api.ca_path()),
    };
    let base = support::plugin_config_for(TEST_IMAGE, data_dir, pool, &providers);
    let allow: Vec<&str> = egress.iter().map(String::as_str).collect();
    let egress = support::cty_object(vec![("allow", support::str_list(&allow))]);
    support::with_field(&base, "egress", egress)
}

/// `config` with `security { read_only_rootfs = true }`.
fn read_only_config(api: &StandIn, data_dir: &std::path::Path) -> Vec<u8> {
    let base = config(api, data_dir, &[], &PoolOptions::target(0));
    let security = support::cty_object(vec![("read_only_rootfs", rmpv::Value::Boolean(true))]);
    support::with_field(&base, "security", security)
}

/// `sh -c SCRIPT` as an `anthropic` task (its CLI setting is `ANTHROPIC_BASE_URL`).
fn anthropic_script(body: &str) -> TaskOptions {
    let mut options = TaskOptions::new("anthropic", "sh", &["-c", body]);
    options.work_dir = Some("/local".into());
    options
}

/// A request to the broker from inside the container, as a CLI would make it.
const ASK_API: &str = "wget -q -O- --header \"x-api-key: $ANTHROPIC_API_KEY\" --post-data '{}' \"$ANTHROPIC_BASE_URL/v1/messages\"";

/// This host's address on docker0 and its primary address.
fn host_addresses() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("ip addr");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next().map(str::to_string)
        })
        .collect()
}

/// PIDs of every process in the container, as the host sees them.
fn container_pids(container: &str) -> Vec<u32> {
    docker(&["top", container, "-eo", "pid"])
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// Every place the key must not be while a broker-mode task runs; returns the places that
/// hold it.
fn places_holding(needle: &str, setup: &Setup, task: &Started, events: &str) -> Vec<String> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(needle);
    let holds = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        text.contains(needle) || text.contains(&encoded)
    };
    let mut found = Vec::new();
    let pids = container_pids(&task.container);
    assert!(!pids.is_empty(), "no process found in {}", task.container);
    for pid in pids {
        for file in ["environ", "cmdline"] {
            let bytes = std::fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default();
            if holds(&bytes) {
                found.push(format!("/proc/{pid}/{file}"));
            }
        }
    }
    if holds(docker(&["inspect", &task.container]).as_bytes()) {
        found.push("docker inspect".into());
    }
    let engine_dir = format!("/var/lib/docker/containers/{}", task.container);
    for file in files_under(std::path::Path::new(&engine_dir)) {
        if holds(&std::fs::read(&file).unwrap_or_default()) {
            found.push(file.display().to_string());
        }
    }
    if holds(&task.handle.driver_state) {
        found.push("driver_state".into());
    }
    if holds(events.as_bytes()) {
        found.push("task events".into());
    }
    if holds(setup.plugin.stderr().as_bytes()) {
        found.push("the plugin's stderr".into());
    }
    for file in files_under(setup.data_dir.path()) {
        if holds(&std::fs::read(&file).unwrap_or_default()) {
            found.push(file.display().to_string());
        }
    }
    found
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => todo.push(path),
                Ok(t) if t.is_file() => files.push(path),
                _ => {}
            }
        }
    }
    files
}

/// Collect the plugin's task events in the background.
fn collect_events(setup: &Setup) -> Arc<parking_lot::Mutex<String>> {
    let events = Arc::new(parking_lot::Mutex::new(String::new()));
    let sink = events.clone();
    let driver = setup.driver.clone();
    tokio::spawn(async move {
        let mut stream = support::task_events(&driver).await;
        while let Some(Ok(event)) = stream.next().await {
            let mut all = sink.lock();
            all.push_str(&format!("{:?}\n", event));
        }
    });
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_mode_task_reaches_only_its_api_and_the_key_is_nowhere_in_its_reach() {
    let api = StandIn::start(|_| Reply::json(CANNED)).await;
    let mut s = setup(&api, &[], &PoolOptions::target(0)).await;
    let events = collect_events(&s);
    // A service listening on every host address: the container must not reach it.
    let service = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let service_port = service.local_addr().unwrap().port();
    let mut targets: Vec<String> = host_addresses()
        .into_iter()
        .map(|ip| format!("{ip} {service_port}"))
        .collect();
    targets.push(format!("127.0.0.1 {service_port}"));
    assert!(
        targets.len() >= 2,
        "expected docker0 and a primary address: {targets:?}"
    );
    let probes: String = targets
        .iter()
        .map(|t| format!("if nc -w 2 {t} </dev/null; then echo \"reached {t}\"; else echo \"blocked {t}\"; fi; "))
        .collect();
    let body = format!(
        "echo interfaces; tail -n +3 /proc/net/dev | cut -d: -f1; echo routes; tail -n +2 /proc/net/route; \
         echo end-routes; {ASK_API} && echo; {probes} echo ready; sleep 60"
    );
    let task = start(&mut s.driver, "iso", anthropic_script(&body), 64).await;
    task.stdout.wait_for("ready", Duration::from_secs(60)).await;

    let holding = places_holding(&s.key, &s, &task, &events.lock());
    assert!(holding.is_empty(), "the key was found in {holding:?}");
    let requests = api.wait_for_requests(1, Duration::from_secs(10)).await;
    assert_eq!(requests[0].path, "/v1/messages");
    assert_eq!(requests[0].header("x-api-key"), Some(s.key.as_str()));
    assert!(
        !requests[0]
            .text()
            .contains(polydev::core::cli_launch::PLACEHOLDER)
    );

    destroy(&mut s.driver, &task.id, &task.container).await;
    let stdout = String::from_utf8_lossy(&finish(task.stdout).await).into_owned();
    let interfaces: Vec<&str> = stdout
        .split("interfaces\n")
        .nth(1)
        .and_then(|rest| rest.split("\nroutes\n").next())
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, vec!["lo"], "{stdout}");
    let routes = stdout.split("\nroutes\n").nth(1).unwrap_or_default();
    assert!(
        routes.starts_with("end-routes"),
        "the container has routes: {stdout}"
    );
    assert!(stdout.contains("canned-from-the-api"), "{stdout}");
    for target in &targets {
        assert!(
            stdout.contains(&format!("blocked {target}")),
            "{target}: {stdout}"
        );
    }
    drop(service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_task_cannot_reach_a_broker_and_it_stops_answering_at_stop() {
    let api = StandIn::start(|_| Reply::json(CANNED)).await;
    let mut s = setup(&api, &[], &PoolOptions::target(0)).await;
    // Task A keeps asking its broker, through SIGTERM, and says what it got.
    let probe = format!(
        "trap 'echo got-term' TERM; echo ready; i=0; while [ $i -lt 100 ]; do \
         if {ASK_API} >/dev/null 2>&1; then echo answered; else echo refused; fi; \
         i=$((i+1)); sleep 0.1; done"
    );
    let a = start(&mut s.driver, "a", anthropic_script(&probe), 64).await;
    a.stdout.wait_for("answered", Duration::from_secs(60)).await;
    let port = polydev::core::DriverState::decode(&a.handle.driver_state)
        .unwrap()
        .broker_port
        .unwrap();
    // Task B, in its own container, tries A's port on its loopback: that is its own namespace.
    let b_body = format!(
        "if wget -q -O- --post-data '{{}}' http://127.0.0.1:{port}/v1/messages?from=b; then echo b-reached; \
         else echo b-refused; fi; echo b-done"
    );
    let b = start(&mut s.driver, "b", anthropic_script(&b_body), 64).await;
    b.stdout.wait_for("b-done", Duration::from_secs(60)).await;
    let b_broker = polydev::core::DriverState::decode(&b.handle.driver_state)
        .unwrap()
        .broker_port
        .unwrap();
    let from_b: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("from=b"))
        .collect();
    // Only if B's own broker happens to have the same port number does B reach a broker —
    // its own, presenting its own key (the node's shared key here).
    assert!(
        from_b.is_empty() || b_broker == port,
        "task B reached task A's broker: {from_b:?}"
    );

    s.driver
        .stop_task(nomad::StopTaskRequest {
            task_id: a.id.clone(),
            timeout: Some(support::duration(Duration::from_secs(3))),
            signal: "SIGTERM".into(),
        })
        .await
        .unwrap();
    wait(&mut s.driver, &a.id).await;
    let stdout = String::from_utf8_lossy(&finish(a.stdout).await).into_owned();
    let after_term = stdout.split("got-term").nth(1).unwrap_or_default();
    assert!(after_term.contains("refused"), "{stdout}");
    assert!(
        !after_term.contains("answered"),
        "the broker answered after StopTask: {stdout}"
    );
    destroy(&mut s.driver, &a.id, &a.container).await;
    destroy(&mut s.driver, &b.id, &b.container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_in_the_store_reaches_the_next_request_and_a_removed_one_gets_a_401() {
    let api = StandIn::start(|_| Reply::json(CANNED)).await;
    let mut s = setup(&api, &[], &PoolOptions::target(0)).await;
    // `polydev credentials set|rm` for user u1's anthropic entry in namespace default.
    let store = |verb: &str, value: &str| {
        let entry = [
            "--namespace",
            "default",
            "--user",
            "u1",
            "--provider",
            "anthropic",
        ];
        let args: Vec<&str> = std::iter::once(verb).chain(entry).collect();
        let (code, _, stderr) = credentials_cli(&args, s.data_dir.path(), value);
        assert_eq!(code, 0, "{stderr}");
    };
    let (first, second) = (test_key(), format!("{}-rotated", test_key()));
    store("set", &first);
    // The task asks its API each time the test drops a go<N> file into its local dir.
    let body = "for n in 1 2 3; do i=0; while [ ! -e /local/go$n ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; \
         (printf 'POST /v1/messages HTTP/1.1\\r\\nHost: api\\r\\nx-api-key: %s\\r\\nContent-Length: 2\\r\\n\\r\\n{}' \"$ANTHROPIC_API_KEY\"; \
         sleep 1) | nc -w 3 127.0.0.1 ${ANTHROPIC_BASE_URL##*:}; echo; echo asked-$n; done";
    let mut options = anthropic_script(body);
    options.user_id = Some("u1".into());
    let task = start(&mut s.driver, "rotate", options, 64).await;
    let local = task._alloc.root.path().join("rotate/local");
    let go = |n: u32| std::fs::write(local.join(format!("go{n}")), "").unwrap();
    go(1);
    task.stdout
        .wait_for("asked-1", Duration::from_secs(30))
        .await;
    store("set", &second);
    go(2);
    task.stdout
        .wait_for("asked-2", Duration::from_secs(30))
        .await;
    store("rm", "");
    go(3);
    wait(&mut s.driver, &task.id).await;
    let stdout = String::from_utf8_lossy(&finish(task.stdout).await).into_owned();
    let keys: Vec<String> = api
        .requests()
        .iter()
        .map(|r| r.header("x-api-key").unwrap_or_default().to_string())
        .collect();
    assert_eq!(keys, vec![first.clone(), second.clone()], "{stdout}");
    let third = stdout.split("asked-2").nth(1).unwrap_or_default();
    assert!(third.contains("401"), "{stdout}");
    for needed in [
        "\\\"default\\\"",
        "\\\"u1\\\"",
        "\\\"anthropic\\\"",
        "ANTHROPIC_API_KEY",
        "polydev credentials set",
    ] {
        assert!(
            third.contains(needed),
            "the 401 should name {needed}: {third}"
        );
    }
    assert!(!stdout.contains(&first) && !stdout.contains(&second));
    destroy(&mut s.driver, &task.id, &task.container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_plugin_kill_9_recover_task_brings_the_broker_back_and_the_retry_succeeds() {
    // The first request gets a slow stream (the plugin dies in the middle of it), later ones
    // a short answer.
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let api = StandIn::start(move |_| {
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::Stream {
                chunks: (0..60)
                    .map(|i| format!("data: {{\"slow\":{i}}}\n\n"))
                    .collect(),
                pause: Duration::from_millis(100),
            }
        } else {
            Reply::json(CANNED)
        }
    })
    .await;
    let mut s = setup(&api, &[], &PoolOptions::target(0)).await;
    let retrying = format!(
        "i=0; while [ $i -lt 200 ]; do if {ASK_API} >/local/answer 2>/dev/null; then \
         echo \"complete after $i failures\"; cat /local/answer; echo; exit 0; fi; \
         echo \"failed $i\"; i=$((i+1)); sleep 0.1; done; exit 1"
    );
    let task = start(&mut s.driver, "crash", anthropic_script(&retrying), 64).await;
    api.wait_for_requests(1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.plugin.kill9();
    // The stream is cut; the CLI's retries are refused while no plugin runs.
    task.stdout
        .wait_for("failed 2", Duration::from_secs(30))
        .await;

    let plugin = Plugin::spawn(&[("ANTHROPIC_API_KEY", s.key.as_str())]);
    let (mut base, mut driver) = plugin.clients().await;
    base.set_config(support::set_config_request(
        config(&api, s.data_dir.path(), &[], &PoolOptions::target(0)),
        true,
    ))
    .await
    .unwrap();
    driver
        .recover_task(support::recover_after_agent_restart(task.handle.clone()))
        .await
        .expect("RecoverTask");
    let recovered = Instant::now();
    task.stdout
        .wait_for("complete after", Duration::from_secs(10))
        .await;
    let back_in = recovered.elapsed();
    assert!(back_in < Duration::from_secs(5), "took {back_in:?}");
    s.plugin = plugin;
    s.driver = driver.clone();
    let result = wait(&mut driver, &task.id).await;
    assert_eq!(result.result.unwrap().exit_code, 0);
    let stdout = String::from_utf8_lossy(&finish(task.stdout).await).into_owned();
    assert!(stdout.contains("canned-from-the-api"), "{stdout}");
    let requests = api.requests();
    assert!(requests.len() >= 2);
    assert!(
        requests
            .iter()
            .all(|r| r.header("x-api-key") == Some(s.key.as_str()))
    );
    eprintln!("the broker answered again {back_in:?} after RecoverTask returned");
    destroy(&mut driver, &task.id, &task.container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_egress_allowlist_tunnels_what_it_allows_and_refuses_the_rest() {
    let api = StandIn::start(|_| Reply::json(CANNED)).await;
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_port = service.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut client, _)) = service.accept().await {
            let _ = client.write_all(b"hello-from-allowed-host\n").await;
        }
    });
    let allowed = format!("127.0.0.1:{service_port}");
    let mut s = setup(
        &api,
        std::slice::from_ref(&allowed),
        &PoolOptions::target(0),
    )
    .await;
    let denied = format!("127.0.0.1:{}", api.port);
    let body = format!(
        "port=${{HTTPS_PROXY##*:}}; echo \"proxy=$HTTPS_PROXY no_proxy=$NO_PROXY\"; \
         (printf 'CONNECT {allowed} HTTP/1.1\\r\\nHost: {allowed}\\r\\n\\r\\n'; sleep 1) | nc -w 3 127.0.0.1 $port; \
         (printf 'CONNECT {denied} HTTP/1.1\\r\\nHost: {denied}\\r\\n\\r\\n'; sleep 1) | nc -w 3 127.0.0.1 $port; \
         echo done"
    );
    let task = start(&mut s.driver, "egress", anthropic_script(&body), 64).await;
    let result = wait(&mut s.driver, &task.id).await;
    let stdout = String::from_utf8_lossy(&finish(task.stdout).await).into_owned();
    assert_eq!(result.result.unwrap().exit_code, 0, "{stdout}");
    assert!(stdout.contains("no_proxy=127.0.0.1,localhost"), "{stdout}");
    assert!(stdout.contains("HTTP/1.1 200"), "{stdout}");
    assert!(stdout.contains("hello-from-allowed-host"), "{stdout}");
    assert!(
        stdout.contains("HTTP/1.1 403")
            && stdout.contains(&format!("egress to {denied} is not allowed")),
        "{stdout}"
    );
    destroy(&mut s.driver, &task.id, &task.container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_broker_mode_task_is_served_from_its_first_request() {
    let api = StandIn::start(|_| Reply::json(CANNED)).await;
    let pool = PoolOptions::target(1);
    let mut s = setup(&api, &[], &pool).await;
    support::tasks::wait_for_reported_idle(&s.driver, "openai", 1).await;
    // The openai provider's CLI setting is codex's config file; read the address from it.
    let body = "url=$(sed -n 's/^base_url = \"\\(.*\\)\"$/\\1/p' $HOME/.codex/config.toml); \
                wget -q -O- --header \"Authorization: Bearer $OPENAI_API_KEY\" --post-data '{}' \"$url/responses\"; echo; echo done";
    let mut options = TaskOptions::new("openai", "sh", &["-c", body]);
    options.work_dir = Some("/local".into());
    let task = start(&mut s.driver, "warm", options, 64).await;
    let name = docker(&["inspect", "-f", "{{.Name}}", &task.container]);
    assert!(
        name.contains("polydev-pool-openai-"),
        "not a warm claim: {name}"
    );
    let network = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.NetworkMode}}",
        &task.container,
    ]);
    assert_eq!(network.trim(), "none");
    let result = wait(&mut s.driver, &task.id).await;
    let stdout = String::from_utf8_lossy(&finish(task.stdout).await).into_owned();
    assert_eq!(result.result.unwrap().exit_code, 0, "{stdout}");
    assert!(stdout.contains("canned-from-the-api"), "{stdout}");
    let request = &api.requests()[0];
    assert_eq!(request.path, "/v1/responses");
    assert_eq!(
        request.header("authorization"),
        Some(&format!("Bearer {}", s.key)[..])
    );
    destroy(&mut s.driver, &task.id, &task.container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_root_still_takes_the_clis_settings() {
    let api = StandIn::start(|_| Reply::json(CANNED)).await;
    let mut s = setup(&api, &[], &PoolOptions::target(0)).await;
    let (mut base, _) = s.plugin.clients().await;
    base.set_config(support::set_config_request(
        read_only_config(&api, s.data_dir.path()),
        true,
    ))
    .await
    .expect("SetConfig");
    let body = "grep -c base_url $HOME/.codex/config.toml; touch /etc/x 2>/dev/null && echo root-writable; echo done";
    let mut options = TaskOptions::new("openai", "sh", &["-c", body]);
    options.work_dir = Some("/tmp".into());
    let task = start(&mut s.driver, "ro", options, 64).await;
    let result = wait(&mut s.driver, &task.id).await;
    let stdout = String::from_utf8_lossy(&finish(task.stdout).await).into_owned();
    assert_eq!(result.result.unwrap().exit_code, 0, "{stdout}");
    assert_eq!(stdout, "1\ndone\n");
    destroy(&mut s.driver, &task.id, &task.container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polydev_run_uses_the_same_broker() {
    ensure_test_image();
    let api = StandIn::start(|_| Reply::json(CANNED)).await;
    let key = test_key();
    let output = tokio::task::spawn_blocking({
        let (origin, ca, key) = (api.origin(), api.ca_path(), key.clone());
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_polydev"))
                .args(["run", "--provider", "anthropic", "--image", TEST_IMAGE])
                .args(["--api-upstream", &origin, "--upstream-ca-file", &ca, "--"])
                .args([
                    "sh",
                    "-c",
                    &format!("{ASK_API}; echo; echo \"env-key=$ANTHROPIC_API_KEY\""),
                ])
                .env("ANTHROPIC_API_KEY", &key)
                .env_remove("NOMAD_PLUGIN_MAGIC_COOKIE")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("canned-from-the-api"), "{stdout}\n{stderr}");
    assert!(!stdout.contains(&key) && !stderr.contains(&key));
    assert!(stdout.contains(&format!(
        "env-key={}",
        polydev::core::cli_launch::PLACEHOLDER
    )));
    assert_eq!(api.requests()[0].header("x-api-key"), Some(key.as_str()));
}
