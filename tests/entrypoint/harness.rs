//! The harness of the entrypoint tests: images, launch specs built line by line, and
//! `docker run -i --rm` with collected output and a guard that removes the container.
#![allow(dead_code)]

use parking_lot::Mutex;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) const TEST_IMAGE: &str = "polydev-test-runtime:latest";
pub(crate) const LAUNCH_LINE: &str = "polydev-entrypoint: launch";
/// A value that must never show up in any output of the entrypoint itself.
pub(crate) const SECRET: &str = "sk-very-secret-value-0123456789";
/// Upper bound for any single container run; reaching it fails the test.
pub(crate) const RUN_DEADLINE: Duration = Duration::from_secs(120);

// ------------------------------------------------------------------ images

pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn docker_cli() -> String {
    std::env::var("POLYDEV_TEST_DOCKER").unwrap_or_else(|_| "docker".to_string())
}

pub(crate) fn run_build_script(args: &[&str]) -> Result<(), String> {
    let script = repo_root().join("containers/build-images.sh");
    let out = Command::new(&script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {} failed ({}):\n{}\n{}",
            script.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Builds the busybox test image once per test process.
pub(crate) fn test_image() -> &'static str {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = BUILT.get_or_init(|| run_build_script(&["--test-only"])) {
        panic!("{e}");
    }
    TEST_IMAGE
}

/// Builds one provider image (once per test process). Provider builds share the base image,
/// so they run one at a time.
pub(crate) fn provider_image(provider: &'static str) -> String {
    static SERIAL: Mutex<()> = Mutex::new(());
    static BUILT: [OnceLock<Result<(), String>>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let slot = match provider {
        "openai" => 0,
        "anthropic" => 1,
        "google" => 2,
        other => panic!("unknown provider {other}"),
    };
    let result = BUILT[slot].get_or_init(|| {
        let _serial = SERIAL.lock();
        run_build_script(&["--provider", provider])
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    format!("polydev-{provider}-runtime:latest")
}

pub(crate) fn image_id(image: &str) -> String {
    let out = Command::new(docker_cli())
        .args(["image", "inspect", "-f", "{{.Id}}", image])
        .output()
        .expect("docker image inspect");
    assert!(out.status.success(), "no image {image}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

// ------------------------------------------------------------------ launch specs

pub(crate) fn b64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A `polydev-launch-v2` spec, built line by line.
#[derive(Default, Clone)]
pub(crate) struct Spec {
    lines: Vec<String>,
}

impl Spec {
    pub(crate) fn new() -> Self {
        Self::default()
    }
    pub(crate) fn arg(mut self, a: impl AsRef<[u8]>) -> Self {
        self.lines.push(format!("arg {}", b64(a.as_ref())));
        self
    }
    pub(crate) fn args<I: IntoIterator<Item = S>, S: AsRef<[u8]>>(self, args: I) -> Self {
        args.into_iter().fold(self, Spec::arg)
    }
    pub(crate) fn env(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let mut kv = format!("{name}=").into_bytes();
        kv.extend_from_slice(value.as_ref());
        self.lines.push(format!("env {}", b64(&kv)));
        self
    }
    pub(crate) fn cwd(mut self, dir: &str) -> Self {
        self.lines.push(format!("cwd {}", b64(dir.as_bytes())));
        self
    }
    pub(crate) fn require(mut self, name: &str) -> Self {
        self.lines.push(format!("require {}", b64(name.as_bytes())));
        self
    }
    /// A `file` line: `path` relative to `$HOME`, with `content`.
    pub(crate) fn file(mut self, path: &str, content: impl AsRef<[u8]>) -> Self {
        self.lines.push(format!(
            "file {} {}",
            b64(path.as_bytes()),
            b64(content.as_ref())
        ));
        self
    }
    pub(crate) fn raw(mut self, line: &str) -> Self {
        self.lines.push(line.to_string());
        self
    }
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut s = String::from("polydev-launch-v2\n");
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("end\n");
        s.into_bytes()
    }
}

// ------------------------------------------------------------------ running containers

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A unique container name, removed (`docker rm -f`) when dropped — also on panic.
pub(crate) struct ContainerName(pub(crate) String);

impl ContainerName {
    pub(crate) fn new() -> Self {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Self(format!(
            "polydev-entrypoint-test-{}-{n}-{nanos:x}",
            std::process::id()
        ))
    }
}

impl Drop for ContainerName {
    fn drop(&mut self) {
        let _ = Command::new(docker_cli())
            .args(["rm", "-f", &self.0])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub(crate) struct Output {
    pub(crate) code: i32,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: String,
}

impl Output {
    pub(crate) fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// stderr after the launch line: what the driver forwards to the user.
    pub(crate) fn user_stderr(&self) -> &str {
        let marker = format!("{LAUNCH_LINE}\n");
        match self.stderr.find(&marker) {
            Some(i) => &self.stderr[i + marker.len()..],
            None => "",
        }
    }
    pub(crate) fn assert_code(&self, want: i32) {
        assert_eq!(
            self.code,
            want,
            "exit code; stdout={:?} stderr={:?}",
            self.stdout_str(),
            self.stderr
        );
    }
    pub(crate) fn assert_not_leaked(&self, secret: &str) {
        assert!(
            !self.stderr.contains(secret) && !self.stdout_str().contains(secret),
            "secret leaked: stdout={:?} stderr={:?}",
            self.stdout_str(),
            self.stderr
        );
        let encoded = b64(secret.as_bytes());
        assert!(
            !self.stderr.contains(&encoded),
            "encoded secret leaked: {:?}",
            self.stderr
        );
    }
}

/// A `docker run -i --rm` in progress, with its output collected by threads.
pub(crate) struct Running {
    pub(crate) name: ContainerName,
    child: Child,
    stdin: Option<ChildStdin>,
    out: JoinHandle<Vec<u8>>,
    err: JoinHandle<Vec<u8>>,
}

pub(crate) fn start(image: &str, docker_args: &[&str], cmd: &[&str]) -> Running {
    let name = ContainerName::new();
    let mut child = Command::new(docker_cli())
        .args(["run", "-i", "--rm", "--name", &name.0])
        .args(docker_args)
        .arg(image)
        .args(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn docker run");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let stdin = child.stdin.take();
    Running {
        name,
        child,
        stdin,
        out,
        err,
    }
}

impl Running {
    /// Writes to the container's stdin; `close` then sends EOF.
    pub(crate) fn send(&mut self, data: &[u8], close: bool) {
        if let Some(stdin) = self.stdin.as_mut() {
            // The container may exit before reading everything (a malformed first line).
            let _ = stdin.write_all(data).and_then(|()| stdin.flush());
        }
        if close {
            self.stdin = None;
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        let out = Command::new(docker_cli())
            .args(["inspect", "-f", "{{.State.Running}}", &self.name.0])
            .output()
            .expect("docker inspect");
        String::from_utf8_lossy(&out.stdout).trim() == "true"
    }

    /// `docker exec` into the container; `None` if it failed (e.g. not started yet).
    pub(crate) fn try_exec(&self, cmd: &[&str]) -> Option<String> {
        let out = Command::new(docker_cli())
            .args(["exec", &self.name.0])
            .args(cmd)
            .output()
            .expect("docker exec");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub(crate) fn exec(&self, cmd: &[&str]) -> String {
        self.try_exec(cmd)
            .unwrap_or_else(|| panic!("docker exec {cmd:?} failed in {}", self.name.0))
    }

    pub(crate) fn wait(mut self) -> Output {
        let deadline = Instant::now() + RUN_DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for docker run") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "container {} still running after {RUN_DEADLINE:?}",
                    self.name.0
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.stdin = None;
        let stdout = self.out.join().unwrap();
        let stderr = String::from_utf8_lossy(&self.err.join().unwrap()).into_owned();
        Output {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        }
    }
}

/// Runs `image` with `spec` on stdin (then EOF).
pub(crate) fn run_spec_on(image: &str, docker_args: &[&str], spec: &[u8]) -> Output {
    let mut r = start(image, docker_args, &[]);
    r.send(spec, true);
    r.wait()
}

pub(crate) fn run_spec(docker_args: &[&str], spec: &Spec) -> Output {
    run_spec_on(test_image(), docker_args, &spec.bytes())
}

/// `sh -c SCRIPT` as a spec.
pub(crate) fn sh(script: &str) -> Spec {
    Spec::new().args(["sh", "-c", script])
}

pub(crate) fn nul_joined<S: AsRef<[u8]>>(items: &[S]) -> Vec<u8> {
    let mut v = Vec::new();
    for i in items {
        v.extend_from_slice(i.as_ref());
        v.push(0);
    }
    v
}

/// Arguments that break naive quoting or decoding.
pub(crate) fn tricky_args() -> Vec<&'static str> {
    vec![
        "plain",
        "",
        "with space",
        "  leading and trailing  ",
        "'single' \"double\" `back`",
        "$HOME ${PATH} $(id) $$",
        "* ? [a-z] ~",
        "line1\nline2",
        "trailing newlines\n\n",
        "\n",
        "tab\there",
        "back\\slash \\n",
        "=",
        "a=b",
        "-n",
        "--",
        "unicode: héllo wörld ✓ 日本",
        "",
    ]
}
