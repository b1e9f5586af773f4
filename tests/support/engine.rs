//! A Docker engine of the test's own, for the fault tests that stop and restart the engine:
//! restarting the engine the rest of the suite uses would kill the other tests' containers.
//!
//! It is a second `dockerd` with its own socket, `--data-root`, `--exec-root`, pidfile,
//! managed containerd and bridge (a `pdt…` bridge the test creates and deletes), and no iptables
//! rules. Not `--bridge none`: a dockerd told that deletes `docker0`, the main engine's bridge. The test image is copied into it from the main
//! engine with `docker save | docker load`. Dropping it stops the engine, removes what it
//! made, and deletes its directories; every wait is bounded.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use std::sync::Arc;

use futures::StreamExt;
use polydev::pb::hashicorp::nomad::plugins::drivers::proto::{
    self as nomad, driver_client::DriverClient,
};
use rmpv::Value;
use tonic::transport::Channel;

use super::real::{Plugin, TEST_IMAGE, ensure_test_image};
use super::tasks::{Setup, test_key, wait};
use super::{PoolOptions, ProviderOptions};

/// How long the engine may take to start or stop.
const ENGINE_DEADLINE: Duration = Duration::from_secs(60);

/// A running `dockerd` of this test.
pub struct OwnEngine {
    dir: tempfile::TempDir,
    live_restore: bool,
    daemon: Option<Child>,
    bridge: String,
}

/// Create a bridge of this test's own for the engine; returns its name.
fn create_bridge() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("pdt{:05x}{n}", std::process::id() & 0xfffff);
    // A private /24 per bridge: 10.213.<n>.0/24 (the engine only needs the address to exist).
    let address = format!(
        "10.213.{}.1/24",
        (std::process::id() as usize + n as usize) % 250
    );
    for args in [
        vec!["link", "add", "name", &name, "type", "bridge"],
        vec!["addr", "add", &address, "dev", &name],
        vec!["link", "set", &name, "up"],
    ] {
        let status = Command::new("ip").args(&args).status().expect("ip");
        assert!(status.success(), "ip {args:?}");
    }
    name
}

impl OwnEngine {
    /// Start an engine (with `live-restore` when asked) and load the test image into it.
    pub fn start(live_restore: bool) -> OwnEngine {
        // Short: the socket path must fit in sun_path (108 bytes).
        let dir = tempfile::Builder::new()
            .prefix("pd-eng-")
            .tempdir_in("/tmp")
            .unwrap();
        let mut engine = OwnEngine {
            dir,
            live_restore,
            daemon: None,
            bridge: create_bridge(),
        };
        engine.launch();
        engine.load_test_image();
        engine
    }

    /// An engine directory whose socket does not exist yet (for "engine not there" tests);
    /// [`OwnEngine::launch`] starts it later.
    pub fn not_started(live_restore: bool) -> OwnEngine {
        let dir = tempfile::Builder::new()
            .prefix("pd-eng-")
            .tempdir_in("/tmp")
            .unwrap();
        OwnEngine {
            dir,
            live_restore,
            daemon: None,
            bridge: create_bridge(),
        }
    }

    /// Copy the test image from the main engine (`docker save | docker load`).
    pub fn load_test_image(&self) {
        let copy = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker save {TEST_IMAGE} | docker -H {} load -q",
                self.endpoint()
            ))
            .output()
            .expect("docker save | docker load");
        assert!(
            copy.status.success(),
            "loading the test image: {}",
            String::from_utf8_lossy(&copy.stderr)
        );
    }

    /// `unix://<socket>`, for the plugin's `docker_endpoint` and `docker -H`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// Start the daemon and wait until it answers.
    pub fn launch(&mut self) {
        let root = self.dir.path();
        let mut command = Command::new("dockerd");
        command
            .arg("--host")
            .arg(self.endpoint())
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .args([
                "--bridge",
                &self.bridge,
                "--iptables=false",
                "--ip-masq=false",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("dockerd.log")).unwrap());
        if self.live_restore {
            command.arg("--live-restore");
        }
        self.daemon = Some(command.spawn().expect("start dockerd"));
        let deadline = Instant::now() + ENGINE_DEADLINE;
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "the test's dockerd did not answer: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop the daemon as `systemctl stop docker` would (SIGTERM), and wait for it to exit.
    pub fn stop(&mut self) {
        let Some(mut daemon) = self.daemon.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(daemon.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + ENGINE_DEADLINE;
        loop {
            if let Ok(Some(_)) = daemon.try_wait() {
                return;
            }
            if Instant::now() > deadline {
                let _ = daemon.kill();
                let _ = daemon.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop, then start again.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn answers(&self) -> bool {
        Command::new("docker")
            .args([
                "-H",
                &self.endpoint(),
                "version",
                "--format",
                "{{.Server.Version}}",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// The `docker` CLI against this engine; stdout and stderr.
    pub fn docker(&self, args: &[&str]) -> String {
        let output = Command::new("docker")
            .args(["-H", &self.endpoint()])
            .args(args)
            .output()
            .expect("run docker");
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    }

    /// `docker ps -a` of polydev's containers here: `(id, state)`.
    pub fn polydev_containers(&self) -> Vec<(String, String)> {
        self.docker(&[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            "label=io.polydev.managed=true",
            "--format",
            "{{.ID}} {{.State}}",
        ])
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(id, state)| (id.to_string(), state.to_string()))
        .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for OwnEngine {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            for (id, _) in self.polydev_containers() {
                let _ = self.docker(&["rm", "-f", &id]);
            }
            self.stop();
        }
        // Whatever the daemon left mounted under its directories goes with them (deepest first).
        let root = self.dir.path().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split_whitespace().nth(1))
            .filter(|point| point.starts_with(&root))
            .collect();
        under.sort_by_key(|point| std::cmp::Reverse(point.len()));
        for point in under {
            let _ = Command::new("umount").args(["-l", point]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .output();
    }
}

/// A plugin on `engine` with warm pool `pool` for `openai` (broker mode: the test
/// engine has no bridge, broker-mode containers need none).
pub async fn plugin_on(engine: &OwnEngine, pool: &PoolOptions) -> Setup {
    ensure_test_image();
    let key = test_key();
    let data_dir = tempfile::tempdir().unwrap();
    let plugin = Plugin::spawn(&[("OPENAI_API_KEY", key.as_str())]);
    let (mut base, driver) = plugin.clients().await;
    let config = super::plugin_config_for(
        TEST_IMAGE,
        data_dir.path(),
        pool,
        &ProviderOptions::default(),
    );
    let config = super::with_field(&config, "docker_endpoint", Value::from(engine.endpoint()));
    base.set_config(super::set_config_request(config, true))
        .await
        .expect("SetConfig");
    Setup {
        plugin,
        driver,
        data_dir,
        key,
    }
}

/// WaitTask, failing the test after 90 s instead of hanging it.
pub async fn bounded_wait(driver: &mut DriverClient<Channel>, id: &str) -> nomad::WaitTaskResponse {
    tokio::time::timeout(Duration::from_secs(90), wait(driver, id))
        .await
        .unwrap_or_else(|_| panic!("WaitTask of {id} did not return within 90 s"))
}

/// Every fingerprint the plugin sends, collected in the background.
pub fn collect_fingerprints(
    driver: &DriverClient<Channel>,
) -> Arc<Mutex<Vec<nomad::FingerprintResponse>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let driver = driver.clone();
    tokio::spawn(async move {
        let mut stream = driver
            .clone()
            .fingerprint(nomad::FingerprintRequest {})
            .await
            .unwrap()
            .into_inner();
        while let Some(Ok(fingerprint)) = stream.next().await {
            sink.lock().push(fingerprint);
        }
    });
    seen
}
