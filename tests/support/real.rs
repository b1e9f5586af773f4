//! Helpers for tests against the real binary and a real Docker engine.
#![allow(dead_code)]

use parking_lot::Mutex;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use polydev::pb::hashicorp::nomad::plugins::base::proto::base_plugin_client::BasePluginClient;
use polydev::pb::hashicorp::nomad::plugins::drivers::proto::driver_client::DriverClient;
use tonic::transport::Channel;

pub const COOKIE: &str = "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255";
pub const TEST_IMAGE: &str = "polydev-test-runtime:latest";

/// Build the tiny test image once per test binary (the script skips it when unchanged).
pub fn ensure_test_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("containers/build-images.sh");
        let status = Command::new("bash")
            .arg(script)
            .arg("--test-only")
            .status()
            .expect("run containers/build-images.sh");
        assert!(status.success(), "building the test image failed");
    });
}

/// `docker` CLI output (stdout) of a command, for checks from outside polydev.
pub fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// Whether a container with this id still exists.
pub fn container_exists(id: &str) -> bool {
    Command::new("docker")
        .args(["inspect", "--type", "container", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The plugin binary, started the way Nomad's go-plugin client starts it.
pub struct Plugin {
    child: Child,
    pub socket: PathBuf,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
}

impl Plugin {
    pub fn spawn(env: &[(&str, &str)]) -> Plugin {
        let mut child = Command::new(env!("CARGO_BIN_EXE_polydev"))
            .env("NOMAD_PLUGIN_MAGIC_COOKIE", COOKIE)
            .env("PLUGIN_PROTOCOL_VERSIONS", "2")
            .env("PLUGIN_MIN_PORT", "10000")
            .env("PLUGIN_MAX_PORT", "25000")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the polydev binary");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        let stderr_thread = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = sink.lock();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the handshake line");
        // go-plugin keeps draining stdout; so do we.
        std::thread::spawn(move || {
            let mut rest = Vec::new();
            let _ = stdout.read_to_end(&mut rest);
        });
        let fields: Vec<&str> = line.trim().split('|').collect();
        assert!(fields.len() >= 5, "bad handshake line {line:?}");
        assert_eq!(&fields[..3], &["1", "2", "unix"], "handshake {line:?}");
        Plugin {
            child,
            socket: PathBuf::from(fields[3]),
            stderr,
            stderr_thread: Some(stderr_thread),
        }
    }

    pub async fn clients(&self) -> (BasePluginClient<Channel>, DriverClient<Channel>) {
        super::connect(&self.socket).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, as systemd sends it to every process of the agent's unit when it stops.
    pub fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).expect("a pid fits i32"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("send SIGTERM");
    }

    /// `kill -9`, as an OOM killer or a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the plugin wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().clone()
    }

    /// Wait for the process to exit (after Shutdown); returns its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                if let Some(thread) = self.stderr_thread.take() {
                    let _ = thread.join();
                }
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Nomad allocation directory with logmon-like FIFO readers.
pub struct AllocDir {
    pub root: tempfile::TempDir,
    pub task: String,
}

impl AllocDir {
    pub fn new(task: &str) -> AllocDir {
        AllocDir::new_in(task, &std::env::temp_dir())
    }

    /// [`AllocDir::new`] inside `parent` (a mount of the test's choice).
    pub fn new_in(task: &str, parent: &Path) -> AllocDir {
        let root = tempfile::Builder::new()
            .prefix("polydev-alloc")
            .tempdir_in(parent)
            .unwrap();
        for dir in [
            "alloc/logs",
            &format!("{task}/local"),
            &format!("{task}/secrets"),
        ] {
            let path = root.path().join(dir);
            std::fs::create_dir_all(&path).unwrap();
            set_mode(&path, 0o777);
        }
        set_mode(&root.path().join("alloc"), 0o777);
        AllocDir {
            root,
            task: task.to_string(),
        }
    }

    pub fn fifo(&self, stream: &str) -> PathBuf {
        self.root
            .path()
            .join(format!("alloc/logs/.{}.{stream}.fifo", self.task))
    }

    /// Create both FIFOs and start readers that behave like logmon: open once, read to EOF.
    pub fn start_readers(&self) -> (FifoReader, FifoReader) {
        (
            FifoReader::start(&self.fifo("stdout")),
            FifoReader::start(&self.fifo("stderr")),
        )
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Reads one FIFO until EOF on a thread, as Nomad's logmon does; what has arrived so far can be
/// awaited while the task runs.
pub struct FifoReader {
    path: PathBuf,
    received: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl FifoReader {
    pub fn start(path: &Path) -> FifoReader {
        if let Err(errno) =
            nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        {
            panic!("mkfifo {}: {errno}", path.display());
        }
        Self::reopen(path)
    }

    /// Read the FIFO already at `path` again, as logmon does for a restarted task.
    pub fn reopen(path: &Path) -> FifoReader {
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let opened = path.to_path_buf();
        let thread = std::thread::spawn(move || {
            let mut file = std::fs::File::open(&opened).expect("open FIFO for reading");
            let mut chunk = [0u8; 64 * 1024];
            loop {
                let n = file.read(&mut chunk).expect("read FIFO");
                if n == 0 {
                    return;
                }
                sink.lock().extend_from_slice(&chunk[..n]);
            }
        });
        FifoReader {
            path: path.to_path_buf(),
            received,
            thread: Some(thread),
        }
    }

    /// Wait (up to `limit`) until `needle` has arrived; the task says it is ready this way.
    pub async fn wait_for(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let text = String::from_utf8_lossy(&self.received.lock()).into_owned();
            if text.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} never arrived; got {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait for EOF (the writer closed) and return everything read.
    pub fn finish(mut self) -> Vec<u8> {
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.received.lock())
    }

    /// [`FifoReader::finish`], waiting at most `limit` for the writer to close; `None` if it did
    /// not. A reader still blocked in `open(2)` (no writer ever came) is released by a writer
    /// opened and closed here, so its thread ends instead of holding up the process's exit.
    pub fn finish_within(mut self, limit: Duration) -> Option<Vec<u8>> {
        let thread = self.thread.take().unwrap();
        let deadline = Instant::now() + limit;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let in_time = thread.is_finished();
        if in_time {
            let _ = thread.join();
            return Some(std::mem::take(&mut *self.received.lock()));
        }
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&self.path);
        // A writer that still holds the FIFO keeps the thread in read(2): leave it detached.
        for _ in 0..50 {
            if thread.is_finished() {
                let _ = thread.join();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Run `polydev credentials ARGS --data-dir DIR` (and the test's `--key-file` where the command
/// takes one) with `stdin`; returns (exit code, stdout, stderr).
pub fn credentials_cli(args: &[&str], data_dir: &Path, stdin: &str) -> (i32, String, String) {
    credentials_cli_with_env(args, data_dir, &[], stdin)
}

/// [`credentials_cli`] with `env` added to its environment.
pub fn credentials_cli_with_env(
    args: &[&str],
    data_dir: &Path,
    env: &[(&str, &str)],
    stdin: &str,
) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_polydev"));
    command
        .arg("credentials")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir);
    if matches!(args.first(), Some(&"set" | &"rm")) {
        command.arg("--key-file").arg(super::key_file(data_dir));
    }
    let mut child = command
        .envs(env.iter().copied())
        .env_remove("NOMAD_PLUGIN_MAGIC_COOKIE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run polydev credentials");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
