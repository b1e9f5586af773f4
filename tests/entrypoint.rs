//! The container side of the launch protocol (`containers/entrypoint.sh`), tested against a
//! real Docker engine.
//!
//! Before the first test, `containers/build-images.sh --test-only` builds
//! `polydev-test-runtime:latest` (busybox, seconds; a no-op when unchanged). Every test then runs
//! `docker run -i --rm` with a launch spec on stdin and checks exit codes, stdout and stderr.
//!
//! Tests named `provider_image_<provider>_…` build the real provider images first
//! (`build-images.sh --provider <provider>`: a debootstrap'd Node base, then an npm install — minutes
//! the first time). Filter them in or out by name: `cargo test --test entrypoint provider_image_`.
//!
//! Every container gets a unique name and a guard that `docker rm -f`s it, so a failing test
//! leaks nothing. The docker CLI is `$POLYDEV_TEST_DOCKER`, else `docker` on PATH.

#[path = "entrypoint/harness.rs"]
mod harness;

use std::process::Command;
use std::time::{Duration, Instant};

use harness::*;

#[test]
fn build_script_skips_an_unchanged_image() {
    let before = image_id(test_image());
    run_build_script(&["--test-only"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        image_id(TEST_IMAGE),
        before,
        "rebuilt although nothing changed"
    );
}

// ------------------------------------------------------------------ the spec arrives intact

#[test]
fn args_arrive_byte_exact() {
    let args = tricky_args();
    let spec = sh("printf '%s\\0' \"$@\"").arg("sh").args(&args);
    let out = run_spec(&[], &spec);
    out.assert_code(0);
    assert_eq!(out.stdout, nul_joined(&args), "stderr={}", out.stderr);
}

/// Deterministic pseudo-random byte strings (xorshift), never containing NUL (which no argv
/// or environment string can hold), including invalid UTF-8 and every byte the shell treats
/// specially.
fn random_values(seed: u64, count: usize, max_len: usize) -> Vec<Vec<u8>> {
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|_| {
            let len = (next() % (max_len as u64 + 1)) as usize;
            (0..len).map(|_| (next() % 255 + 1) as u8).collect()
        })
        .collect()
}

/// Many random args and env values through one container: `image`'s shell (busybox ash in the
/// test image, bash in the provider images) must pass every byte through.
fn check_random_bytes_roundtrip(image: &str, extra_env: &[(&str, &str)]) {
    let args = random_values(0x9e37_79b9_7f4a_7c15, 200, 40);
    let values = random_values(0xdead_beef_cafe_f00d, 50, 40);
    let mut spec = Spec::new()
        .args(["sh", "-c", "printf '%s\\0' \"$@\"", "sh"])
        .args(&args);
    for (i, v) in values.iter().enumerate() {
        spec = spec.env(&format!("RND_{i}"), v);
    }
    for (k, v) in extra_env {
        spec = spec.env(k, v);
    }
    let out = run_spec_on(image, &[], &spec.bytes());
    out.assert_code(0);
    assert!(
        out.stdout == nul_joined(&args),
        "random args changed in transit"
    );

    // Read the env values back one by one through `printenv`-like shell expansion.
    let script: String = (0..values.len())
        .map(|i| format!("printf '%s\\0' \"$RND_{i}\";"))
        .collect();
    let mut spec = Spec::new().args(["sh", "-c", &script]);
    for (i, v) in values.iter().enumerate() {
        spec = spec.env(&format!("RND_{i}"), v);
    }
    for (k, v) in extra_env {
        spec = spec.env(k, v);
    }
    let out = run_spec_on(image, &[], &spec.bytes());
    out.assert_code(0);
    assert!(
        out.stdout == nul_joined(&values),
        "random env values changed in transit"
    );
}

#[test]
fn random_bytes_arrive_byte_exact() {
    check_random_bytes_roundtrip(test_image(), &[]);
}

#[test]
fn env_values_arrive_byte_exact() {
    let spec = sh("printf '%s\\0' \"${EMPTY-unset}\" \"$MULTI\" \"$EQ\" \"$UNI\" \"$_pd_line\"")
        .env("EMPTY", "")
        .env("MULTI", "a\nb\n\n")
        .env("EQ", "x=y z '\"$HOME")
        .env("UNI", "ünï ✓")
        // Named like a variable of the script itself: must pass through untouched.
        .env("_pd_line", "mine");
    let out = run_spec(&[], &spec);
    out.assert_code(0);
    assert_eq!(
        out.stdout,
        nul_joined(&["", "a\nb\n\n", "x=y z '\"$HOME", "ünï ✓", "mine"])
    );
}

#[test]
fn later_env_entries_win_and_image_env_is_kept() {
    let spec = sh("printf '%s|%s|%s' \"$X\" \"$POLYDEV_PROVIDER\" \"$HOME\"")
        .env("X", "first")
        .env("X", "second")
        .env("HOME", "/tmp");
    let out = run_spec(&[], &spec);
    out.assert_code(0);
    assert_eq!(out.stdout_str(), "second|test|/tmp");
}

#[test]
fn spec_path_is_used_to_find_the_command() {
    // `env` resolves the command with the spec's PATH, as a shell would.
    let spec = Spec::new().arg("whoami").env("PATH", "/nonexistent");
    let out = run_spec(&[], &spec);
    out.assert_code(127);
    assert!(out.user_stderr().contains("command not found: whoami"));
}

#[test]
fn cwd_is_honoured() {
    let out = run_spec(&[], &sh("pwd").cwd("/tmp"));
    out.assert_code(0);
    assert_eq!(out.stdout_str(), "/tmp\n");

    let out = run_spec(&[], &sh("pwd"));
    out.assert_code(0);
    assert_eq!(
        out.stdout_str(),
        "/home/runtime\n",
        "image WORKDIR without cwd"
    );
}

#[test]
fn missing_cwd_exits_65_naming_it() {
    let out = run_spec(&[], &sh("pwd").cwd("/no/such dir"));
    out.assert_code(65);
    assert!(
        out.user_stderr().contains("/no/such dir"),
        "stderr={}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
}

// ------------------------------------------------------------------ malformed specs

#[test]
fn malformed_specs_exit_65_without_echoing_values() {
    let secret_b64 = b64(SECRET.as_bytes());
    let header_ok = |lines: &[&str]| {
        let mut s = String::from("polydev-launch-v1\n");
        for l in lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    };
    let arg_true = format!("arg {}", b64(b"true"));
    let cases: Vec<(&str, String)> = vec![
        ("missing first line", format!("{arg_true}\nend\n")),
        (
            "wrong first line",
            format!("polydev-launch-v3\n{arg_true}\nend\n"),
        ),
        (
            "secret as first line",
            format!("{SECRET}\n{arg_true}\nend\n"),
        ),
        (
            "unknown keyword",
            header_ok(&[&arg_true, &format!("secret {secret_b64}"), "end"]),
        ),
        ("raw value line", header_ok(&[&arg_true, "hunter", "end"])),
        ("bad base64", header_ok(&[&format!("arg {SECRET}!"), "end"])),
        (
            "bad base64 length",
            header_ok(&[&format!("arg {}", &secret_b64[1..]), "end"]),
        ),
        (
            "bad env name",
            header_ok(&[
                &arg_true,
                &format!("env {}", b64(format!("1BAD={SECRET}").as_bytes())),
                "end",
            ]),
        ),
        (
            "env name with dash",
            header_ok(&[
                &arg_true,
                &format!("env {}", b64(format!("BAD-NAME={SECRET}").as_bytes())),
                "end",
            ]),
        ),
        (
            "env without =",
            header_ok(&[&arg_true, &format!("env {}", b64(SECRET.as_bytes())), "end"]),
        ),
        (
            "no arg",
            header_ok(&[&format!("env {}", b64(b"A=1")), "end"]),
        ),
        (
            "two cwd lines",
            header_ok(&[
                &arg_true,
                &format!("cwd {}", b64(b"/tmp")),
                &format!("cwd {}", b64(b"/")),
                "end",
            ]),
        ),
        (
            "relative cwd",
            header_ok(&[&arg_true, &format!("cwd {}", b64(b"tmp")), "end"]),
        ),
        (
            "bad require name",
            header_ok(&[&arg_true, &format!("require {}", b64(b"A B")), "end"]),
        ),
        (
            "CRLF line ends",
            "polydev-launch-v1\r\narg dHJ1ZQ==\r\nend\r\n".to_string(),
        ),
    ];
    for (what, spec) in cases {
        let out = run_spec_on(test_image(), &[], spec.as_bytes());
        assert_eq!(out.code, 65, "{what}: stderr={}", out.stderr);
        assert!(
            out.stderr
                .contains("polydev-entrypoint: malformed launch spec: "),
            "{what}: stderr={}",
            out.stderr
        );
        assert!(!out.stderr.contains(LAUNCH_LINE), "{what}: launched anyway");
        assert!(out.stdout.is_empty(), "{what}: stdout={:?}", out.stdout);
        out.assert_not_leaked(SECRET);
        assert!(!out.stderr.contains("hunter"), "{what}: {}", out.stderr);
    }
}

// ------------------------------------------------------------------ no spec

#[test]
fn eof_before_any_spec_exits_66() {
    let out = run_spec_on(test_image(), &[], b"");
    out.assert_code(66);
    assert!(
        out.stderr.contains("no launch spec arrived"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn eof_before_end_exits_66() {
    let mut partial = Spec::new().arg("true").bytes();
    partial.truncate(partial.len() - "end\n".len());
    let out = run_spec_on(test_image(), &[], &partial);
    out.assert_code(66);
    assert!(
        out.stderr.contains("no launch spec arrived"),
        "{}",
        out.stderr
    );
}

#[test]
fn no_first_line_within_timeout_exits_66() {
    let started = Instant::now();
    let mut r = start(test_image(), &["-e", "POLYDEV_SPEC_TIMEOUT=1"], &[]);
    // stdin stays open and silent; the entrypoint must give up by itself.
    r.send(b"", false);
    let out = r.wait();
    out.assert_code(66);
    assert!(out.stderr.contains("timed out"), "{}", out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

/// Utime + stime of the container's PID 1, in clock ticks.
fn pid1_cpu_ticks(r: &Running) -> u64 {
    let stat = r.exec(&["cat", "/proc/1/stat"]);
    // Fields after the command name "(...)": state is 3rd, utime 14th, stime 15th.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    assert_eq!(fields[0], "S", "PID 1 should be sleeping in read: {stat}");
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn warm_pool_waits_idle_then_launches() {
    check_warm_then_pid1(test_image(), Spec::new());
}

/// A `WARM_POOL=true` container of `image` idles at ~0 % CPU past the spec timeout, then runs
/// the launched command as PID 1. `base` carries what the image requires (its credential).
fn check_warm_then_pid1(image: &str, base: Spec) {
    let mut r = start(
        image,
        &["-e", "WARM_POOL=true", "-e", "POLYDEV_SPEC_TIMEOUT=1"],
        &[],
    );
    r.send(b"", false);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(r.is_running(), "warm container exited without a spec");
    let before = pid1_cpu_ticks(&r);
    std::thread::sleep(Duration::from_secs(1));
    let after = pid1_cpu_ticks(&r);
    assert!(
        after - before <= 2,
        "idle PID 1 used {} ticks",
        after - before
    );
    r.send(&base.args(["sh", "-c", "echo warm $$"]).bytes(), true);
    let out = r.wait();
    out.assert_code(0);
    assert_eq!(out.stdout_str(), "warm 1\n");
}

#[test]
fn idle_container_stops_promptly_on_sigterm() {
    let mut r = start(test_image(), &["-e", "WARM_POOL=true"], &[]);
    r.send(b"", false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !r.is_running() {
        assert!(Instant::now() < deadline, "container never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let stop = Command::new(docker_cli())
        .args(["stop", "-t", "30", &r.name.0])
        .output()
        .expect("docker stop");
    assert!(stop.status.success(), "{stop:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "PID 1 ignored SIGTERM: stop took {:?}",
        started.elapsed()
    );
    let out = r.wait();
    out.assert_code(143);
    assert!(out.stderr.contains("SIGTERM"), "{}", out.stderr);
}

// ------------------------------------------------------------------ credentials

#[test]
fn required_credential_from_spec_must_be_present() {
    let out = run_spec(&[], &sh("true").require("MY_API_KEY").env("OTHER", SECRET));
    out.assert_code(78);
    assert!(
        out.stderr
            .contains("polydev-entrypoint: missing credential MY_API_KEY for provider test"),
        "{}",
        out.stderr
    );
    out.assert_not_leaked(SECRET);

    let out = run_spec(&[], &sh("true").require("MY_API_KEY").env("MY_API_KEY", ""));
    out.assert_code(78);
    assert!(out.stderr.contains("missing credential MY_API_KEY"));

    let out = run_spec(
        &[],
        &sh("printf %s \"$MY_API_KEY\"")
            .require("MY_API_KEY")
            .env("MY_API_KEY", SECRET),
    );
    out.assert_code(0);
    assert_eq!(out.stdout_str(), SECRET);
    assert!(!out.stderr.contains(SECRET));
}

#[test]
fn the_spec_alone_says_what_is_required_later_empty_entries_count() {
    // An environment variable of the image or container adds nothing to what is required (the
    // images once named their provider's key there, which broke a renamed key).
    let docker_args = ["-e", "POLYDEV_REQUIRED_ENV=FIRST_KEY TEST_API_KEY"];
    let out = run_spec(&docker_args, &sh("echo ok").env("OTHER_KEY", SECRET));
    out.assert_code(0);
    assert_eq!(out.stdout_str(), "ok\n");

    // A later empty entry overrides an earlier value.
    let spec = sh("true")
        .require("TEST_API_KEY")
        .env("TEST_API_KEY", SECRET)
        .env("TEST_API_KEY", "");
    let out = run_spec(&[], &spec);
    out.assert_code(78);
    assert!(out.stderr.contains("polydev driver"), "says how to fix it");
    out.assert_not_leaked(SECRET);
}

// ------------------------------------------------------------------ process and output shape

#[test]
fn command_is_pid_1_and_runs_as_uid_1000() {
    let out = run_spec(&[], &sh("echo $$; id -u; id -g"));
    out.assert_code(0);
    assert_eq!(out.stdout_str(), "1\n1000\n1000\n");
}

#[test]
fn signals_reach_the_command() {
    let mut r = start(test_image(), &[], &[]);
    r.send(
        &sh("trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 1; done").bytes(),
        true,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !r
        .try_exec(&["cat", "/proc/1/cmdline"])
        .is_some_and(|c| c.contains("trap"))
    {
        assert!(Instant::now() < deadline, "command never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new(docker_cli())
        .args(["kill", "-s", "TERM", &r.name.0])
        .output()
        .unwrap();
    assert!(kill.status.success(), "{kill:?}");
    let out = r.wait();
    out.assert_code(7);
    assert_eq!(out.stdout_str(), "ready\ngot TERM\n");
}

#[test]
fn stdout_is_only_the_commands_output() {
    let out = run_spec(&[], &sh("echo out; echo err >&2"));
    out.assert_code(0);
    assert_eq!(out.stdout_str(), "out\n");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let launch = lines
        .iter()
        .position(|l| *l == LAUNCH_LINE)
        .expect("launch line");
    let banner = lines
        .iter()
        .position(|l| l.contains("provider=test") && l.contains("cli=busybox"))
        .expect("banner");
    assert!(banner < launch, "{lines:?}");
    assert!(lines[banner].contains("uid=1000"), "{lines:?}");
    assert_eq!(&lines[launch + 1..], ["err"]);
    assert_eq!(out.user_stderr(), "err\n");
}

#[test]
fn debug_prints_env_names_never_values() {
    let spec = sh("true")
        .env("DEBUG", "true")
        .env("SECRET_TOKEN", SECRET)
        .cwd("/tmp");
    let out = run_spec(&[], &spec);
    out.assert_code(0);
    let user = out.user_stderr();
    assert!(user.contains("SECRET_TOKEN"), "{}", out.stderr);
    assert!(user.contains("/tmp"), "{}", out.stderr);
    assert!(user.contains("argv[0]=sh"), "{}", out.stderr);
    out.assert_not_leaked(SECRET);

    // DEBUG from the container's environment works too.
    let out = run_spec(
        &["-e", "DEBUG=true"],
        &sh("true").env("SECRET_TOKEN", SECRET),
    );
    out.assert_code(0);
    assert!(out.user_stderr().contains("SECRET_TOKEN"), "{}", out.stderr);
    out.assert_not_leaked(SECRET);

    let out = run_spec(&[], &sh("true").env("SECRET_TOKEN", SECRET));
    assert!(
        !out.stderr.contains("SECRET_TOKEN"),
        "no debug output by default"
    );
}

#[test]
fn exec_failures_use_shell_exit_codes() {
    let out = run_spec(&[], &Spec::new().arg("no-such-command"));
    out.assert_code(127);
    assert!(
        out.user_stderr()
            .contains("command not found: no-such-command")
    );

    let out = run_spec(&[], &Spec::new().arg("/etc/passwd"));
    out.assert_code(126);
    assert!(out.user_stderr().contains("cannot execute /etc/passwd"));

    let out = run_spec(&[], &Spec::new().arg("/tmp"));
    out.assert_code(126);
}

#[test]
fn args_mode_execs_directly() {
    let r = start(test_image(), &[], &["echo", "hi", "there"]);
    let out = r.wait();
    out.assert_code(0);
    assert_eq!(out.stdout_str(), "hi there\n");
    assert!(out.stderr.contains("mode=args"), "{}", out.stderr);

    let out = start(test_image(), &[], &["sh", "-c", "echo $$"]).wait();
    out.assert_code(0);
    assert_eq!(
        out.stdout_str(),
        "1\n",
        "the command is PID 1 in args mode too"
    );
}

// ------------------------------------------------------------------ provider images

/// `(cli, required credential)` of a provider image.
fn provider_info(provider: &str) -> (&'static str, &'static str) {
    match provider {
        "openai" => ("codex", "OPENAI_API_KEY"),
        "anthropic" => ("claude", "ANTHROPIC_API_KEY"),
        "google" => ("gemini", "GEMINI_API_KEY"),
        other => panic!("unknown provider {other}"),
    }
}

fn image_env(image: &str, name: &str) -> String {
    let out = Command::new(docker_cli())
        .args(["image", "inspect", "-f", "{{json .Config.Env}}", image])
        .output()
        .expect("docker image inspect");
    let env: Vec<String> = serde_json::from_slice(&out.stdout).expect("env json");
    env.iter()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
        .unwrap_or_default()
}

fn check_cli_version(provider: &'static str) {
    let image = provider_image(provider);
    let (cli, key) = provider_info(provider);
    let version = image_env(&image, "POLYDEV_CLI_VERSION");
    assert!(
        !version.is_empty(),
        "POLYDEV_CLI_VERSION baked into {image}"
    );

    let out = start(&image, &[], &[cli, "--version"]).wait();
    out.assert_code(0);
    assert!(
        out.stdout_str().contains(&version),
        "{cli} --version: {:?} (want {version})",
        out.stdout_str()
    );
    assert!(out.stderr.contains(&format!("cli={cli} version={version}")));

    let spec = Spec::new().args([cli, "--version"]).env(key, SECRET);
    let out = run_spec_on(&image, &[], &spec.bytes());
    out.assert_code(0);
    assert!(
        out.stdout_str().contains(&version),
        "{:?}",
        out.stdout_str()
    );
    assert!(!out.stdout_str().contains("polydev-entrypoint"));
    out.assert_not_leaked(SECRET);
}

fn check_uid_and_bash_path(provider: &'static str) {
    let image = provider_image(provider);
    let (_, key) = provider_info(provider);
    let out = start(&image, &[], &["id", "-u"]).wait();
    out.assert_code(0);
    assert_eq!(out.stdout_str(), "1000\n");

    // The same protocol checks under bash (the provider images' shell).
    let args = tricky_args();
    let spec = Spec::new()
        .args(["sh", "-c", "id -u; echo $$; printf '%s\\0' \"$@\"", "sh"])
        .args(&args)
        .env(key, SECRET)
        .cwd("/tmp");
    let out = run_spec_on(&image, &[], &spec.bytes());
    out.assert_code(0);
    let mut want = b"1000\n1\n".to_vec();
    want.extend(nul_joined(&args));
    assert_eq!(out.stdout, want, "stderr={}", out.stderr);
    out.assert_not_leaked(SECRET);

    check_random_bytes_roundtrip(&image, &[(key, SECRET)]);
}

fn check_missing_credential(provider: &'static str) {
    let image = provider_image(provider);
    let (cli, key) = provider_info(provider);
    let spec = Spec::new()
        .args([cli, "--version"])
        .require(key)
        .env("UNRELATED", SECRET);
    let out = run_spec_on(&image, &[], &spec.bytes());
    out.assert_code(78);
    assert!(
        out.stderr.contains(&format!(
            "polydev-entrypoint: missing credential {key} for provider {provider}"
        )),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
    out.assert_not_leaked(SECRET);

    let out = run_spec_on(&image, &[], &Spec::new().raw("bogus").arg(cli).bytes());
    out.assert_code(65);

    // An operator who renames the provider's key (`provider "…" { credentials = ["MY_KEY"] }`)
    // gets a spec that requires MY_KEY alone: the stock image must not ask for its usual name.
    let spec = Spec::new()
        .args([cli, "--version"])
        .require("MY_KEY")
        .env("MY_KEY", SECRET);
    let out = run_spec_on(&image, &[], &spec.bytes());
    out.assert_code(0);
    assert!(!out.stderr.contains("missing credential"), "{}", out.stderr);
    out.assert_not_leaked(SECRET);
}

fn check_warm_provider(provider: &'static str) {
    let (_, key) = provider_info(provider);
    check_warm_then_pid1(
        &provider_image(provider),
        Spec::new().env(key, "sk-warm-test"),
    );
}

macro_rules! provider_tests {
    ($provider:literal, $version:ident, $uid:ident, $missing:ident, $warm:ident) => {
        #[test]
        fn $warm() {
            check_warm_provider($provider);
        }
        #[test]
        fn $version() {
            check_cli_version($provider);
        }
        #[test]
        fn $uid() {
            check_uid_and_bash_path($provider);
        }
        #[test]
        fn $missing() {
            check_missing_credential($provider);
        }
    };
}

provider_tests!(
    "openai",
    provider_image_openai_cli_version,
    provider_image_openai_uid_1000_and_spec_under_bash,
    provider_image_openai_missing_credential_exits_78,
    provider_image_openai_idles_warm_then_execs_as_pid_1
);
provider_tests!(
    "anthropic",
    provider_image_anthropic_cli_version,
    provider_image_anthropic_uid_1000_and_spec_under_bash,
    provider_image_anthropic_missing_credential_exits_78,
    provider_image_anthropic_idles_warm_then_execs_as_pid_1
);
provider_tests!(
    "google",
    provider_image_google_cli_version,
    provider_image_google_uid_1000_and_spec_under_bash,
    provider_image_google_missing_credential_exits_78,
    provider_image_google_idles_warm_then_execs_as_pid_1
);
