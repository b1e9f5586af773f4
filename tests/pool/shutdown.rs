//! A plugin stopped while its warm pool refills (issue 15), against real Docker through the real
//! binary: go-plugin's `GRPCController/Shutdown`, or SIGTERM, at once after SetConfig and at
//! points through the refill. Once Docker has settled, no container of the plugin's data dir is
//! left half-made (Docker's `created`, or anything but running), every slot directory left
//! belongs to one of those running idle containers, and the next plugin on that data dir adopts
//! every one of them.

use std::time::{Duration, Instant};

use polydev::pb::plugin::Empty;
use polydev::pb::plugin::grpc_controller_client::GrpcControllerClient;

use polydev::pb::hashicorp::nomad::plugins::base::proto::base_plugin_client::BasePluginClient;
use tonic::transport::Channel;

use super::support::real::{Plugin, TEST_IMAGE, docker, ensure_test_image};
use super::support::tasks::*;
use super::support::{PoolOptions, plugin_config_with_pool, set_config_request};
use super::{pool_containers, wait_for_idle};

/// How long go-plugin's client waits for the process to exit after Shutdown before SIGKILL.
const GO_PLUGIN_KILL_GRACE: Duration = Duration::from_secs(2);

/// When, after SetConfig returned, each round stops the plugin: at once, then at points through
/// the refill of [`TARGET`] containers (creations, starts, the first ones ready).
const STOP_AFTER: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_millis(30),
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(350),
    Duration::from_millis(600),
    Duration::from_millis(900),
    Duration::from_millis(1400),
];

/// Idle containers the pool wants: six, all made at once, as in the issue.
const TARGET: u32 = 6;

#[derive(Clone, Copy, Debug)]
enum Stop {
    /// `GRPCController/Shutdown`, as go-plugin's `Kill` sends it.
    Shutdown,
    /// SIGTERM, as systemd sends it to the agent's whole unit.
    Sigterm,
}

/// A tag of the test image for one test alone. Other worktrees on this machine rebuild
/// `polydev-test-runtime:latest` while tests run, and a rebuilt image rightly makes the next
/// plugin replace idle containers instead of adopting them.
struct PrivateImage(String);

impl PrivateImage {
    fn tag(stop: Stop) -> PrivateImage {
        ensure_test_image();
        let tag = format!(
            "polydev-test-runtime:shutdown-{}-{}",
            format!("{stop:?}").to_lowercase(),
            std::process::id()
        );
        docker(&["tag", TEST_IMAGE, &tag]);
        PrivateImage(tag)
    }
}

impl Drop for PrivateImage {
    fn drop(&mut self) {
        // Removes the tag only: the image stays while `latest` or anything else uses it.
        docker(&["rmi", &self.0]);
    }
}

/// SetConfig as the agent's long-lived instance sends it (so the pool starts), with `image`.
async fn configure(
    base: &mut BasePluginClient<Channel>,
    data_dir: &std::path::Path,
    options: &PoolOptions,
    image: &PrivateImage,
) {
    base.set_config(set_config_request(
        plugin_config_with_pool(&image.0, data_dir, options),
        true,
    ))
    .await
    .expect("SetConfig");
}

/// Every container labelled with `data_dir`, as (id, Docker state).
fn states_of(data_dir: &std::path::Path) -> Vec<(String, String)> {
    let filter = format!("label=io.polydev.data-dir={}", data_dir.to_string_lossy());
    docker(&[
        "ps",
        "-a",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.State}}",
        "--filter",
        &filter,
    ])
    .lines()
    .filter_map(|line| line.split_once(' '))
    .map(|(id, state)| (id.to_string(), state.to_string()))
    .collect()
}

/// How long Docker is watched after the plugin is gone before what it left is judged: dockerd
/// completes a create or a start whose caller has hung up, so a container the plugin left
/// half-made may appear, or change state, only after it exited.
const SETTLE: Duration = Duration::from_secs(2);

/// Watch `data_dir`'s containers for [`SETTLE`]; returns what is there at the end, and how many
/// were seen on the way in another state than running (starts dockerd was still finishing).
async fn settled_states(data_dir: &std::path::Path) -> (Vec<(String, String)>, usize) {
    let until = Instant::now() + SETTLE;
    let mut not_running: Vec<String> = Vec::new();
    loop {
        let now = states_of(data_dir);
        for (id, _) in now.iter().filter(|(_, state)| state != "running") {
            if !not_running.contains(id) {
                not_running.push(id.clone());
            }
        }
        if Instant::now() >= until {
            return (now, not_running.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The slot label of container `id`.
fn slot_of(id: &str) -> String {
    docker(&[
        "inspect",
        "--format",
        "{{index .Config.Labels \"io.polydev.slot\"}}",
        id,
    ])
    .trim()
    .to_string()
}

/// Slot directories under `data_dir`.
fn slot_dirs(data_dir: &std::path::Path) -> Vec<String> {
    let mut slots: Vec<String> = std::fs::read_dir(data_dir.join("slots"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    slots.sort();
    slots
}

/// The plugin's own log lines (not its libraries').
fn polydev_log(plugin: &Plugin) -> String {
    plugin
        .stderr()
        .lines()
        .filter(|line| line.contains("\"@module\":\"polydev"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Stop the plugin the way `stop` says, then do what go-plugin does: wait up to its grace, then
/// SIGKILL. Returns whether it exited by itself, and how long that took.
async fn stop_plugin(plugin: &mut Plugin, stop: Stop) -> (bool, Duration) {
    let sent = Instant::now();
    match stop {
        Stop::Shutdown => {
            let channel = tonic::transport::Endpoint::from_shared(format!(
                "unix://{}",
                plugin.socket.display()
            ))
            .unwrap()
            .connect()
            .await
            .expect("connect to the plugin socket");
            // go-plugin ignores the answer (the process may be gone before it is sent).
            let _ = GrpcControllerClient::new(channel).shutdown(Empty {}).await;
        }
        Stop::Sigterm => plugin.terminate(),
    }
    let exited = tokio::task::block_in_place(|| plugin.wait_exit(GO_PLUGIN_KILL_GRACE));
    let took = sent.elapsed();
    if exited.is_none() {
        plugin.kill9();
    }
    (exited.is_some(), took)
}

/// Round after round, a fresh plugin on a private data dir is configured with a pool of
/// [`TARGET`] and stopped `STOP_AFTER[round]` later; what it leaves must be whole.
async fn stop_during_refill_leaves_nothing_half_made(stop: Stop) {
    let options = PoolOptions {
        refill_parallelism: Some(TARGET),
        ..PoolOptions::target(TARGET)
    };
    let image = PrivateImage::tag(stop);
    for (round, after) in STOP_AFTER.into_iter().enumerate() {
        let key = test_key();
        let plugin = Plugin::spawn(&[("OPENAI_API_KEY", key.as_str()), ("POLYDEV_LOG", "debug")]);
        let (mut base, driver) = plugin.clients().await;
        let data_dir = tempfile::tempdir().unwrap();
        configure(&mut base, data_dir.path(), &options, &image).await;
        // Leaves nothing behind when dropped, whatever happens below.
        let mut s = Setup {
            plugin,
            driver,
            data_dir,
            key,
        };
        tokio::time::sleep(after).await;
        let (graceful, took) = stop_plugin(&mut s.plugin, stop).await;
        let (left, seen_not_running) = settled_states(s.data_dir.path()).await;
        println!(
            "{stop:?} {after:?} after SetConfig: exited {} after {took:?}; left {:?} \
             ({seen_not_running} seen in another state than running on the way)",
            if graceful { "by itself" } else { "on SIGKILL" },
            left.iter()
                .map(|(_, state)| state.as_str())
                .collect::<Vec<_>>()
        );
        let context = format!(
            "round {round}: {stop:?} {after:?} after SetConfig; containers left {left:?}; \
             plugin log:\n{}",
            polydev_log(&s.plugin)
        );
        assert!(
            left.iter().all(|(_, state)| state == "running"),
            "half-made containers were left behind ({context})"
        );
        let mut slots_left: Vec<String> = left.iter().map(|(id, _)| slot_of(id)).collect();
        slots_left.sort();
        assert_eq!(
            slot_dirs(s.data_dir.path()),
            slots_left,
            "slot directories without a container were left behind ({context})"
        );
        if left.is_empty() {
            continue;
        }
        // The running ones are whole idle containers: the next plugin adopts every one of them
        // (with a target of their number, it makes none of its own).
        let next = Plugin::spawn(&[("OPENAI_API_KEY", s.key.as_str())]);
        let (mut base, driver) = next.clients().await;
        let adopt = PoolOptions {
            target: u32::try_from(left.len()).unwrap(),
            ..options.clone()
        };
        configure(&mut base, s.data_dir.path(), &adopt, &image).await;
        let mut adopted = wait_for_idle(&driver, &s, left.len()).await;
        adopted.sort();
        let mut expected: Vec<String> = left.into_iter().map(|(id, _)| id).collect();
        expected.sort();
        assert_eq!(
            adopted,
            expected,
            "the next plugin adopted exactly what was left ({context}\nnext plugin log:\n{})",
            polydev_log(&next)
        );
        assert_eq!(pool_containers(&s).len(), expected.len());
        drop(next);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_refill_leaves_no_half_made_container() {
    stop_during_refill_leaves_nothing_half_made(Stop::Shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_refill_leaves_no_half_made_container() {
    stop_during_refill_leaves_nothing_half_made(Stop::Sigterm).await;
}
