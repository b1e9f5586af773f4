//! Runs the real `polydev` binary the way Nomad's go-plugin client does (cookie and protocol
//! variables in the environment, stdin null, stdout and stderr piped) and checks the handshake,
//! the go-plugin services over the unix socket, shutdown, signals and cleanup.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use polydev::pb::plugin::Empty;
use polydev::pb::plugin::grpc_controller_client::GrpcControllerClient;
use polydev::pb::plugin::grpc_stdio_client::GrpcStdioClient;
use polydev::plugin::handshake::{
    CLIENT_CERT_KEY, HandshakeLine, MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE, Network,
    PROTOCOL_VERSIONS_KEY, SOCKET_DIR_KEY, SOCKET_GROUP_KEY,
};
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// go-plugin's grace period between `GRPCController/Shutdown` and SIGKILL.
const GO_PLUGIN_KILL_GRACE: Duration = Duration::from_secs(2);

/// The environment go-plugin gives a Nomad plugin, minus anything inherited that would change
/// behaviour, plus `extra`.
fn plugin_command(extra: &[(&str, &str)]) -> Command {
    plugin_command_via(&[], extra)
}

/// [`plugin_command`] run through `wrapper` (a program and its arguments that end by exec'ing
/// the plugin, given as the last argument), e.g. a shell that changes a limit first.
fn plugin_command_via(wrapper: &[&str], extra: &[(&str, &str)]) -> Command {
    let plugin = env!("CARGO_BIN_EXE_polydev");
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(plugin);
            cmd
        }
        None => Command::new(plugin),
    };
    for key in [
        SOCKET_DIR_KEY,
        SOCKET_GROUP_KEY,
        CLIENT_CERT_KEY,
        "POLYDEV_LOG",
        "PLUGIN_MULTIPLEX_GRPC",
    ] {
        cmd.env_remove(key);
    }
    cmd.env(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)
        .env(PROTOCOL_VERSIONS_KEY, "2")
        .env("PLUGIN_MIN_PORT", "10000")
        .env("PLUGIN_MAX_PORT", "25000");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A running plugin process whose handshake line has been read.
struct Plugin {
    child: Child,
    line: HandshakeLine,
    /// Everything on stdout after the handshake line, once stdout closes.
    stdout_rest: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

fn read_all(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

impl Plugin {
    fn start(extra: &[(&str, &str)]) -> Self {
        Self::start_with(extra, true)
    }

    /// Starts the plugin; with `keep_stderr` false the read end of stderr is closed right after
    /// the handshake, as after an agent crash.
    fn start_with(extra: &[(&str, &str)], keep_stderr: bool) -> Self {
        Self::start_command(plugin_command(extra), keep_stderr)
    }

    fn start_command(mut command: Command, keep_stderr: bool) -> Self {
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout_rest = thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let _ = tx.send(first);
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            rest
        });
        let stderr = child.stderr.take().unwrap();
        let first = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let stderr = if keep_stderr {
            Some(read_all(stderr))
        } else {
            drop(stderr);
            None
        };
        assert!(
            first.ends_with('\n'),
            "handshake line not newline-terminated: {first:?}"
        );
        let line = HandshakeLine::parse(&first).unwrap();
        Self {
            child,
            line,
            stdout_rest: Some(stdout_rest),
            stderr,
        }
    }

    fn socket(&self) -> PathBuf {
        PathBuf::from(&self.line.address)
    }

    async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("unix://{}", self.line.address))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A signal to the plugin: our own child, not yet reaped, so its pid cannot be reused.
    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the exit, polling every millisecond; returns the status and the time waited.
    async fn wait_exit(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                panic!("plugin still running {within:?} after being told to stop");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// After exit: what came after the handshake on stdout, and stderr's lines.
    fn outputs(mut self) -> (Vec<u8>, Vec<String>) {
        let rest = self.stdout_rest.take().unwrap().join().unwrap();
        let stderr = self
            .stderr
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default();
        let stderr = String::from_utf8(stderr).unwrap();
        (rest, stderr.lines().map(str::to_owned).collect())
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn health(channel: Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status())
}

/// Every line is an hclog JSON object go-plugin can parse: string `@level` (known level),
/// string `@message`, `@timestamp` with exactly 6 fractional digits and `Z`.
fn assert_hclog_lines(lines: &[String]) {
    for line in lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let level = v["@level"]
            .as_str()
            .unwrap_or_else(|| panic!("@level: {line}"));
        assert!(
            ["trace", "debug", "info", "warn", "error"].contains(&level),
            "{line}"
        );
        assert!(v["@message"].is_string(), "{line}");
        let ts = v["@timestamp"].as_str().unwrap_or_else(|| panic!("{line}"));
        let (date_time, fraction) = ts.split_once('.').unwrap();
        assert_eq!(date_time.len(), "2026-01-02T03:04:05".len(), "{line}");
        assert_eq!(fraction.len(), 7, "{line}");
        assert!(fraction[..6].bytes().all(|b| b.is_ascii_digit()), "{line}");
        assert!(fraction.ends_with('Z'), "{line}");
    }
}

fn is_socket(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

#[tokio::test]
async fn handshake_health_stdio_and_shutdown() {
    let mut plugin = Plugin::start(&[]);
    let line = plugin.line.clone();
    assert_eq!(
        (
            line.core_version,
            line.app_version,
            line.network,
            line.protocol.as_str()
        ),
        (1, 2, Network::Unix, "grpc")
    );
    assert_eq!(line.server_cert, None);
    let socket = plugin.socket();
    assert!(is_socket(&socket), "{socket:?}");
    let private_dir = socket.parent().unwrap().to_path_buf();
    assert_eq!(
        std::fs::metadata(&private_dir).unwrap().mode() & 0o777,
        0o700
    );

    // Health: "plugin" is SERVING; an unknown name is NotFound (the name really is checked).
    let first = plugin.channel().await;
    assert_eq!(
        health(first.clone(), "plugin").await.unwrap(),
        ServingStatus::Serving
    );
    let err = health(
        first.clone(),
        "hashicorp.nomad.plugins.drivers.proto.Driver",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // A client closing its connection does not stop the plugin.
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(plugin.is_running());
    let channel = plugin.channel().await;
    assert_eq!(
        health(channel.clone(), "plugin").await.unwrap(),
        ServingStatus::Serving
    );

    // StreamStdio stays open and silent, as go-plugin's client expects.
    let mut stdio = GrpcStdioClient::new(channel.clone())
        .stream_stdio(())
        .await
        .unwrap()
        .into_inner();
    let silent = tokio::time::timeout(Duration::from_millis(200), stdio.message()).await;
    assert!(
        silent.is_err(),
        "StreamStdio sent or ended early: {silent:?}"
    );

    // Shutdown → exit 0, well within go-plugin's 2 s.
    let sent = Instant::now();
    GrpcControllerClient::new(channel)
        .shutdown(Empty {})
        .await
        .unwrap();
    let (status, _) = plugin.wait_exit(GO_PLUGIN_KILL_GRACE).await;
    let latency = sent.elapsed();
    println!("Shutdown→exit latency: {latency:?}");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(latency < GO_PLUGIN_KILL_GRACE, "{latency:?}");
    // The stdio stream ended cleanly when shutdown began.
    let ended = tokio::time::timeout(Duration::from_secs(1), stdio.message())
        .await
        .expect("stdio stream still open after exit");
    assert!(matches!(ended, Ok(None) | Err(_)), "{ended:?}");

    assert!(!socket.exists(), "socket left behind");
    assert!(!private_dir.exists(), "private dir left behind");
    let (rest, stderr) = plugin.outputs();
    assert!(
        rest.is_empty(),
        "stdout after the handshake: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(!stderr.is_empty());
    // The default filter keeps per-frame HTTP/2 logging out of the agent's log.
    assert!(
        !stderr.iter().any(|l| l.contains("\"@module\":\"h2::")),
        "{stderr:#?}"
    );
    assert_hclog_lines(&stderr);
    assert!(
        stderr.iter().any(|l| l.contains("GRPCController.Shutdown")),
        "{stderr:#?}"
    );
}

/// The soft and hard "Max open files" of process `pid`.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[tokio::test]
async fn the_plugin_raises_its_open_file_limit_to_the_hard_limit_and_says_so() {
    let (_, hard) = open_file_limits(std::process::id());
    assert!(
        hard > 256,
        "this test needs a hard open file limit above 256, not {hard}"
    );
    // Started with a soft limit of 256, as a service manager might leave it.
    let mut plugin = Plugin::start_command(
        plugin_command_via(&["sh", "-c", "ulimit -Sn 256 && exec \"$0\""], &[]),
        true,
    );
    let (soft_now, hard_now) = open_file_limits(plugin.child.id());
    assert_eq!((soft_now, hard_now), (hard, hard));
    plugin.signal(Signal::SIGTERM);
    let (status, _) = plugin.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    let (_, stderr) = plugin.outputs();
    let said = format!("raised from 256 to {hard}");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("open file limit") && l.contains(&said)),
        "{stderr:#?}"
    );
}

#[tokio::test]
async fn socket_dir_is_honoured_and_left_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut plugin = Plugin::start(&[
        (SOCKET_DIR_KEY, dir.path().to_str().unwrap()),
        // AutoMTLS is unsupported: the plugin warns and serves plaintext.
        (CLIENT_CERT_KEY, "-----BEGIN CERTIFICATE-----"),
    ]);
    let socket = plugin.socket();
    assert_eq!(socket.parent().unwrap(), dir.path());
    assert!(is_socket(&socket));
    assert_eq!(
        health(plugin.channel().await, "plugin").await.unwrap(),
        ServingStatus::Serving
    );
    plugin.signal(Signal::SIGTERM);
    let (status, _) = plugin.wait_exit(GO_PLUGIN_KILL_GRACE).await;
    assert_eq!(status.code(), Some(0));
    assert!(!socket.exists());
    assert!(dir.path().is_dir(), "a configured dir must not be removed");
    let (_, stderr) = plugin.outputs();
    assert_hclog_lines(&stderr);
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("\"@level\":\"warn\"") && l.contains("PLUGIN_CLIENT_CERT")),
        "{stderr:#?}"
    );
}

/// The name of this process's effective group, from /etc/group.
fn own_group() -> (u32, Option<String>) {
    let gid = nix::unistd::getegid().as_raw();
    let name = std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|groups| {
            groups.lines().find_map(|l| {
                let mut parts = l.split(':');
                let name = parts.next()?;
                (parts.nth(1)? == gid.to_string()).then(|| name.to_owned())
            })
        });
    (gid, name)
}

#[tokio::test]
async fn socket_group_by_name_or_gid() {
    let (gid, name) = own_group();
    let mut specs = vec![gid.to_string()];
    specs.extend(name);
    for spec in specs {
        let mut plugin = Plugin::start(&[(SOCKET_GROUP_KEY, &spec)]);
        let meta = std::fs::metadata(plugin.socket()).unwrap();
        assert_eq!(meta.gid(), gid, "{spec}");
        assert_eq!(meta.mode() & 0o777, 0o660, "{spec}");
        let dir_meta = std::fs::metadata(plugin.socket().parent().unwrap()).unwrap();
        assert_eq!((dir_meta.gid(), dir_meta.mode() & 0o777), (gid, 0o710));
        plugin.signal(Signal::SIGTERM);
        assert_eq!(
            plugin.wait_exit(GO_PLUGIN_KILL_GRACE).await.0.code(),
            Some(0)
        );
    }
}

/// Runs the binary to completion with `extra` env and returns (status, stdout, stderr).
fn run_to_exit(extra: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let out = plugin_command(extra).output().unwrap();
    (
        out.status,
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn protocol_version_1_is_refused_with_a_clear_message() {
    let (status, stdout, stderr) = run_to_exit(&[(PROTOCOL_VERSIONS_KEY, "1")]);
    assert_eq!(status.code(), Some(1));
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("PLUGIN_PROTOCOL_VERSIONS=\"1\""),
        "{stderr}"
    );
    assert!(stderr.contains("version 2"), "{stderr}");
}

#[test]
fn wrong_cookie_is_refused_with_a_human_message() {
    let (status, stdout, stderr) = run_to_exit(&[(MAGIC_COOKIE_KEY, "not-the-cookie")]);
    assert_eq!(status.code(), Some(1));
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("These are not meant to be executed directly"),
        "{stderr}"
    );
}

#[test]
fn overlong_socket_dir_is_refused_before_announcing() {
    let base = tempfile::tempdir().unwrap();
    let long = base.path().join("d".repeat(100));
    std::fs::create_dir(&long).unwrap();
    let (status, stdout, stderr) = run_to_exit(&[(SOCKET_DIR_KEY, long.to_str().unwrap())]);
    assert_eq!(status.code(), Some(1));
    assert_eq!(stdout, "");
    assert!(stderr.contains("unix socket path limit"), "{stderr}");
}

#[test]
fn unknown_socket_group_is_refused_before_announcing() {
    let (status, stdout, stderr) = run_to_exit(&[(SOCKET_GROUP_KEY, "no-such-group-polydev")]);
    assert_eq!(status.code(), Some(1));
    assert_eq!(stdout, "");
    assert!(stderr.contains("no-such-group-polydev"), "{stderr}");
}

#[test]
fn without_the_cookie_it_prints_help_and_exits_2() {
    // A usage error: the help goes to stderr (stdout stays clean for scripts) with exit 2.
    let out = Command::new(env!("CARGO_BIN_EXE_polydev"))
        .env_remove(MAGIC_COOKIE_KEY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(MAGIC_COOKIE_KEY), "{stderr}");
}

#[tokio::test]
async fn sigint_is_ignored_and_sigterm_stops_gracefully() {
    let mut plugin = Plugin::start(&[]);
    let socket = plugin.socket();
    plugin.signal(Signal::SIGINT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(plugin.is_running(), "SIGINT stopped the plugin");
    assert_eq!(
        health(plugin.channel().await, "plugin").await.unwrap(),
        ServingStatus::Serving
    );
    let sent = Instant::now();
    plugin.signal(Signal::SIGTERM);
    let (status, _) = plugin.wait_exit(GO_PLUGIN_KILL_GRACE).await;
    println!("SIGTERM→exit latency: {:?}", sent.elapsed());
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(!socket.exists());
    let (rest, stderr) = plugin.outputs();
    assert!(rest.is_empty());
    assert_hclog_lines(&stderr);
    assert!(
        stderr.iter().any(|l| l.contains("ignoring SIGINT")),
        "{stderr:#?}"
    );
}

#[tokio::test]
async fn a_broken_stderr_pipe_does_not_kill_the_plugin() {
    // As after an agent crash: nobody reads stderr any more, so every log write gets EPIPE.
    let mut plugin = Plugin::start_with(&[], false);
    plugin.signal(Signal::SIGINT); // logs at debug → EPIPE
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(plugin.is_running());
    let channel = plugin.channel().await;
    assert_eq!(
        health(channel.clone(), "plugin").await.unwrap(),
        ServingStatus::Serving
    );
    GrpcControllerClient::new(channel)
        .shutdown(Empty {})
        .await
        .unwrap();
    let (status, _) = plugin.wait_exit(GO_PLUGIN_KILL_GRACE).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
}
