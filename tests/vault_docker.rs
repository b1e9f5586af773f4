//! The Vault source end to end: two real plugin processes with separate data dirs (two client
//! nodes) reading one real OpenBao, real Docker, the busybox test image as the `anthropic`
//! provider in broker mode, and the stand-in API of `support::upstream` as its upstream.
//!
//! Shown here: a key written once to OpenBao reaches a task on each node through its broker (and
//! an env-mode task in its environment); a
//! rotation reaches the next request of running tasks within `cache_ttl`, a deletion makes it a
//! 401; a job of another namespace naming the user fails with the path it looked at; with
//! OpenBao stopped StartTask fails retryable and the fingerprint's
//! `driver.polydev.credentials.vault` says unhealthy, and once it is back tasks start again with
//! no plugin restart; the key and the token are in neither plugin's log.

mod support;

use std::time::Duration;

use futures::StreamExt;
use polydev::driver::status::recoverable_detail;
use polydev::pb::hashicorp::nomad::plugins::drivers::proto as nomad;
use rmpv::Value;
use support::openbao::OpenBao;
use support::real::{AllocDir, Plugin, TEST_IMAGE, ensure_test_image};
use support::tasks::{Setup, destroy, finish, start, test_key, unique_id, wait};
use support::upstream::{Reply, StandIn};
use support::{PoolOptions, ProviderOptions, TaskOptions, cty_object, task_config};

const CANNED: &str = "{\"content\":[{\"type\":\"text\",\"text\":\"canned-from-the-api\"}]}";
const ENTRY: &str = "polydev/default/u1/anthropic";

/// One "node": a plugin with its own data dir, reading `bao` with a 1 s cache; its providers in
/// broker mode.
async fn node(api: &StandIn, bao: &OpenBao) -> Setup {
    let broker = ProviderOptions {
        credential_mode: None,
        api_upstream: Some(api.origin()),
        upstream_ca_file: Some(api.ca_path()),
    };
    node_with(bao, broker).await
}

/// [`node`] with other provider settings (env mode: the key in the CLI's environment).
async fn node_with(bao: &OpenBao, providers: ProviderOptions) -> Setup {
    let (node, answer) = try_node(bao, providers, &bao.root_token, 0o600).await;
    answer.expect("SetConfig");
    node
}

/// A node whose Vault token is `token`, in a file of mode `mode`, and what its SetConfig
/// answered.
async fn try_node(
    bao: &OpenBao,
    providers: ProviderOptions,
    token: &str,
    mode: u32,
) -> (Setup, Result<(), tonic::Status>) {
    use std::os::unix::fs::PermissionsExt;
    ensure_test_image();
    let data_dir = tempfile::tempdir().unwrap();
    let token_file = data_dir.path().join("vault-token");
    std::fs::write(&token_file, token).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(mode)).unwrap();
    let plugin = Plugin::spawn(&[("POLYDEV_LOG", "debug")]);
    let (mut base, driver) = plugin.clients().await;
    let config = support::plugin_config_for(
        TEST_IMAGE,
        data_dir.path(),
        &PoolOptions::target(0),
        &providers,
    );
    let vault = cty_object(vec![
        ("address", Value::from(bao.address.as_str())),
        ("mount", Value::from("secret")),
        ("path_prefix", Value::from("polydev")),
        ("token_file", Value::from(token_file.to_str().unwrap())),
        ("approle", Value::Nil),
        ("ca_file", Value::from(bao.ca_file.to_str().unwrap())),
        ("namespace", Value::from("")),
        ("cache_ttl", Value::from("1s")),
        ("stale_if_error", Value::from("1s")),
        ("request_timeout", Value::from("3s")),
    ]);
    let config = support::with_field(&config, "vault", vault);
    let answer = base
        .set_config(support::set_config_request(config, true))
        .await
        .map(|_| ());
    let node = Setup {
        plugin,
        driver,
        data_dir,
        key: String::new(),
    };
    (node, answer)
}

/// A task of user `u1` that asks its API each time the test drops a go<N> file (N = 1..3).
fn asking_task() -> TaskOptions {
    let body = "for n in 1 2 3; do i=0; while [ ! -e /local/go$n ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; \
         (printf 'POST /v1/messages HTTP/1.1\\r\\nHost: api\\r\\nx-api-key: %s\\r\\nContent-Length: 2\\r\\n\\r\\n{}' \"$ANTHROPIC_API_KEY\"; \
         sleep 1) | nc -w 3 127.0.0.1 ${ANTHROPIC_BASE_URL##*:}; echo; echo asked-$n; done";
    let mut options = TaskOptions::new("anthropic", "sh", &["-c", body]);
    options.work_dir = Some("/local".into());
    options.user_id = Some("u1".into());
    options
}

/// The fingerprint's `driver.polydev.credentials.vault`, from a fresh stream's first message.
async fn vault_attribute(setup: &Setup) -> String {
    use polydev::pb::hashicorp::nomad::plugins::shared::structs::attribute::Value as Attr;
    let mut stream = setup
        .driver
        .clone()
        .fingerprint(nomad::FingerprintRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    match first
        .attributes
        .get("driver.polydev.credentials.vault")
        .and_then(|a| a.value.clone())
    {
        Some(Attr::StringVal(text)) => text,
        other => panic!("no vault attribute: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_write_reaches_both_nodes_and_rotation_and_deletion_reach_running_tasks() {
    let bao = OpenBao::start();
    let api = StandIn::start(|_| Reply::json(CANNED)).await;
    let (first, second) = (test_key(), format!("{}-rotated", test_key()));
    bao.put(ENTRY, &[("ANTHROPIC_API_KEY", &first)]);
    let mut nodes = vec![node(&api, &bao).await, node(&api, &bao).await];
    let mut tasks = Vec::new();
    for node in &mut nodes {
        tasks.push(start(&mut node.driver, "vault", asking_task(), 64).await);
    }
    let go = |n: u32| {
        for task in &tasks {
            let local = task._alloc.root.path().join("vault/local");
            std::fs::write(local.join(format!("go{n}")), "").unwrap();
        }
    };
    let asked = async |n: u32| {
        for task in &tasks {
            task.stdout
                .wait_for(&format!("asked-{n}"), Duration::from_secs(30))
                .await;
        }
    };
    go(1);
    asked(1).await;
    bao.put(ENTRY, &[("ANTHROPIC_API_KEY", &second)]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    go(2);
    asked(2).await;
    bao.must(&["kv", "metadata", "delete", &format!("secret/{ENTRY}")]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    go(3);
    let mut outputs = Vec::new();
    for (node, task) in nodes.iter_mut().zip(tasks) {
        wait(&mut node.driver, &task.id).await;
        let container = task.container.clone();
        let id = task.id.clone();
        outputs.push(String::from_utf8_lossy(&finish(task.stdout).await).into_owned());
        destroy(&mut node.driver, &id, &container).await;
    }
    let keys: Vec<String> = api
        .requests()
        .iter()
        .map(|r| r.header("x-api-key").unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        keys,
        vec![first.clone(), first.clone(), second.clone(), second.clone()],
        "{outputs:?}"
    );
    for stdout in &outputs {
        let third = stdout.split("asked-2").nth(1).unwrap_or_default();
        assert!(third.contains("401"), "{stdout}");
        assert!(
            third.contains("secret/polydev/default/u1/anthropic"),
            "{third}"
        );
        assert!(!stdout.contains(&first) && !stdout.contains(&second));
    }
    for node in &nodes {
        let log = node.plugin.stderr();
        assert!(
            !log.contains(&first) && !log.contains(&second),
            "a key in the plugin log"
        );
        assert!(
            !log.contains(&bao.root_token),
            "the token in the plugin log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_another_namespace_gets_the_path_it_looked_at() {
    let bao = OpenBao::start();
    let api = StandIn::start(|_| Reply::json(CANNED)).await;
    bao.put(ENTRY, &[("ANTHROPIC_API_KEY", &test_key())]);
    let mut node = node(&api, &bao).await;
    let alloc = AllocDir::new("other-ns");
    let mut config = task_config(&unique_id("ns"), Some(alloc.root.path()), &asking_task());
    config.name = "other-ns".into();
    config.namespace = "team-b".into();
    let err = node
        .driver
        .start_task(nomad::StartTaskRequest { task: Some(config) })
        .await
        .unwrap_err();
    let message = err.message();
    assert!(
        message.contains("secret/polydev/team-b/u1/anthropic"),
        "{message}"
    );
    assert!(message.contains("bao kv put"), "{message}");
    assert_ne!(recoverable_detail(&err), Some(true), "not worth retrying");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_down_is_retryable_and_unhealthy_and_back_without_a_plugin_restart() {
    let mut bao = OpenBao::start();
    let api = StandIn::start(|_| Reply::json(CANNED)).await;
    let mut node = node(&api, &bao).await;
    assert_eq!(vault_attribute(&node).await, "healthy");

    bao.stop();
    let err = support::tasks::try_start(&mut node.driver, "down", asking_task(), 64)
        .await
        .err()
        .expect("StartTask fails while OpenBao is down");
    assert_eq!(recoverable_detail(&err), Some(true), "{err:?}");
    assert!(err.message().contains(&bao.address), "{}", err.message());
    assert!(
        vault_attribute(&node).await.starts_with("unhealthy: "),
        "the fingerprint shows it"
    );

    bao.resume();
    let key = test_key();
    bao.put(ENTRY, &[("ANTHROPIC_API_KEY", &key)]);
    let mut options = asking_task();
    options.args = vec!["-c".into(), "echo started".into()];
    let task = start(&mut node.driver, "back", options, 64).await;
    wait(&mut node.driver, &task.id).await;
    let (id, container) = (task.id.clone(), task.container.clone());
    assert!(String::from_utf8_lossy(&finish(task.stdout).await).contains("started"));
    destroy(&mut node.driver, &id, &container).await;
    // The health probe runs every 5 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while vault_attribute(&node).await != "healthy" {
        assert!(std::time::Instant::now() < deadline, "never healthy again");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!node.plugin.stderr().contains(&key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_env_mode_task_gets_the_key_from_vault_in_its_environment() {
    let bao = OpenBao::start();
    let key = test_key();
    bao.put(ENTRY, &[("ANTHROPIC_API_KEY", &key)]);
    let mut node = node_with(&bao, ProviderOptions::env_mode()).await;
    let mut options = asking_task();
    // The key's length and its last four characters: enough to compare, and not the key, which
    // the forwarder would redact.
    options.args = vec![
        "-c".into(),
        "printf 'len=%s tail=%s\\n' ${#ANTHROPIC_API_KEY} ${ANTHROPIC_API_KEY#${ANTHROPIC_API_KEY%????}}".into(),
    ];
    let task = start(&mut node.driver, "env", options, 64).await;
    wait(&mut node.driver, &task.id).await;
    let (id, container) = (task.id.clone(), task.container.clone());
    let stdout = String::from_utf8_lossy(&finish(task.stdout).await).into_owned();
    destroy(&mut node.driver, &id, &container).await;
    let expected = format!("len={} tail={}", key.len(), &key[key.len() - 4..]);
    assert!(
        stdout.contains(&expected),
        "{stdout:?}, expected {expected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_vault_refuses_fails_set_config_naming_the_file_not_the_token() {
    let bao = OpenBao::start();
    let token = format!("s.refused-{}", test_key());
    let (node, answer) = try_node(&bao, ProviderOptions::env_mode(), &token, 0o600).await;
    let err = answer.expect_err("SetConfig with a token Vault refuses");
    let message = err.message();
    assert!(message.contains("plugin config: vault:"), "{message}");
    assert!(
        message.contains("vault-token"),
        "names the token file: {message}"
    );
    assert!(!message.contains(&token), "{message}");
    assert!(
        !node.plugin.stderr().contains(&token),
        "the token in the plugin log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_others_can_read_fails_set_config_with_the_fix() {
    let bao = OpenBao::start();
    // A token Vault would accept: the file's mode alone is what is wrong.
    let token = bao.root_token.clone();
    let (node, answer) = try_node(&bao, ProviderOptions::env_mode(), &token, 0o644).await;
    let err = answer.expect_err("SetConfig with a token file of mode 0644");
    let message = err.message();
    let path = node.data_dir.path().join("vault-token");
    let path = path.display();
    assert!(
        message.starts_with(&format!(
            "plugin config: vault: vault.token_file: refusing to use {path}: it is owned by uid 0 \
             with mode 0644"
        )),
        "{message}"
    );
    assert!(
        message.ends_with(&format!("fix: chown root: {path} && chmod 0600 {path}")),
        "{message}"
    );
    assert!(!message.contains(&token), "{message}");
}
