//! The provider images as `containers/build-images.sh` builds them from `containers/versions.tsv`:
//! - gemini's V8 compile cache, filled at build time, is what a task's gemini runs from: as the
//!   driver's default task uid (not the image's 1000), on a read-only root with a tmpfs home,
//!   every bundle file it loads is read from the root-owned cache and accepted by V8, and
//!   nothing is written back.
//! - codex is its native binary (no Node launcher), and ripgrep is on PATH in every image.
//! - codex's image holds a home skeleton (its first-run state) that is root's, read-only, and
//!   holds nothing of the build's run: no stand-in address, key, prompt, reply, session, log or
//!   launch file. claude's and gemini's images hold none.
//! - A bad versions table stops the build with a message that says what is wrong: a malformed
//!   row before anything is built, a CLI version the registry does not have, a Node tarball
//!   whose integrity is not the pinned one. Those builds use a throwaway tag, so the images in
//!   use are never replaced.
//!
//! Needs root, Docker and the npm registry (like the image builds themselves).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn build_script() -> PathBuf {
    repo().join("containers/build-images.sh")
}

/// Build (or find up to date) the three provider images once per test binary.
fn ensure_provider_images() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new("bash")
            .arg(build_script())
            .args(["--provider", "openai", "--provider", "anthropic"])
            .args(["--provider", "google"])
            .status()
            .expect("run containers/build-images.sh");
        assert!(status.success(), "building the provider images failed");
    });
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `docker run --rm` of `image` the way the driver runs a task: the default task uid, all
/// capabilities dropped, a read-only root, tmpfs `/tmp` and home, no network.
fn run_as_task(image: &str, env: &[&str], command: &[&str]) -> Output {
    let uid = "2100000000";
    let mut docker = Command::new("docker");
    docker.args(["run", "--rm", "--network", "none", "--cap-drop", "ALL"]);
    docker.args(["--user", &format!("{uid}:{uid}"), "--read-only"]);
    docker.args(["--tmpfs", "/tmp:mode=1777"]);
    docker.args([
        "--tmpfs",
        &format!("/home/runtime:uid={uid},gid={uid},mode=0700"),
    ]);
    for variable in env {
        docker.args(["-e", variable]);
    }
    docker.arg(image).args(command);
    docker.output().expect("run docker")
}

/// The table's row for `role`: (npm package, version, integrity).
fn table_row(role: &str) -> (String, String, String) {
    let table = std::fs::read_to_string(repo().join("containers/versions.tsv")).unwrap();
    table
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.split('\t').map(str::to_string).collect::<Vec<_>>())
        .find(|columns| columns.len() == 4 && columns[0] == role)
        .map(|columns| (columns[1].clone(), columns[2].clone(), columns[3].clone()))
        .unwrap_or_else(|| panic!("containers/versions.tsv has no row for {role}"))
}

#[test]
fn gemini_reads_its_compile_cache_as_the_task_uid_and_writes_nothing() {
    ensure_provider_images();
    let run = run_as_task(
        "polydev-google-runtime:latest",
        &["NODE_DEBUG_NATIVE=COMPILE_CACHE"],
        &["gemini", "--version"],
    );
    let stdout = text(&run.stdout);
    let stderr = text(&run.stderr);
    assert!(run.status.success(), "stdout {stdout:?} stderr {stderr:?}");
    assert!(stdout.contains(&table_row("google").1), "{stdout:?}");
    let cache = "/usr/local/share/polydev/node-compile-cache/";
    let bundle = "file:///usr/local/lib/node_modules/@google/gemini-cli/bundle/";
    let reads: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("[compile cache] reading cache from"))
        .collect();
    let entry_point = format!("{bundle}gemini.js");
    assert!(
        reads.iter().any(|line| line.contains(&entry_point)),
        "gemini's entry point was not looked up in a compile cache: {stderr}"
    );
    for read in &reads {
        assert!(
            read.contains(cache) && read.contains("-2100000000/"),
            "read from elsewhere than the image's cache for uid 2100000000: {read}"
        );
        assert!(
            read.ends_with("success") || read.contains("... success, size="),
            "a miss: {read}"
        );
    }
    let accepted = stderr
        .lines()
        .filter(|line| {
            line.contains(bundle) && line.ends_with("was accepted, keeping the in-memory entry")
        })
        .count();
    assert_eq!(accepted, reads.len(), "V8 rejected cached code: {stderr}");
    for line in stderr
        .lines()
        .filter(|line| line.contains("persist") || line.contains("writing"))
    {
        assert!(
            line.starts_with("[compile cache] skip persisting")
                && line.ends_with("because cache was the same"),
            "gemini wrote to its compile cache at run time: {line}"
        );
    }
}

#[test]
fn codex_is_the_native_binary_and_ripgrep_is_on_path() {
    ensure_provider_images();
    let codex = run_as_task(
        "polydev-openai-runtime:latest",
        &[],
        &[
            "sh",
            "-c",
            "head -c 4 \"$(readlink -f \"$(command -v codex)\")\" | od -An -c",
        ],
    );
    assert_eq!(
        text(&codex.stdout).split_whitespace().collect::<String>(),
        "177ELF",
        "codex on PATH is not a native executable: {}",
        text(&codex.stderr)
    );
    for provider in ["openai", "anthropic", "google"] {
        let image = format!("polydev-{provider}-runtime:latest");
        let rg = run_as_task(&image, &[], &["rg", "--version"]);
        assert!(
            rg.status.success() && text(&rg.stdout).starts_with("ripgrep "),
            "{image}: rg --version gave {:?} {:?}",
            text(&rg.stdout),
            text(&rg.stderr)
        );
        let node = run_as_task(&image, &[], &["node", "--version"]);
        assert_eq!(
            text(&node.stdout).trim(),
            format!("v{}", table_row("node").1),
            "{image} does not run the pinned Node"
        );
    }
}

/// Run the build script for `provider` against `table` (the text of a versions table) under a
/// throwaway tag; the build must fail. Returns its stderr.
fn failing_build(provider: &str, table: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("versions.tsv");
    std::fs::write(&file, table).unwrap();
    let tag = format!("bad-table-{}", std::process::id());
    let output = Command::new("bash")
        .arg(build_script())
        .args(["--provider", provider])
        .env("POLYDEV_VERSIONS_FILE", &file)
        .env("POLYDEV_IMAGE_TAG", &tag)
        .output()
        .expect("run containers/build-images.sh");
    let image = format!("polydev-{provider}-runtime:{tag}");
    let tagged = Command::new("docker")
        .args(["image", "inspect", &image])
        .output()
        .unwrap();
    if tagged.status.success() {
        let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    }
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "the build succeeded: {stderr}");
    assert!(!tagged.status.success(), "a failed build left {image}");
    stderr
}

/// The real table with `role`'s row replaced by `row`.
fn table_with(role: &str, row: &str) -> String {
    let table = std::fs::read_to_string(repo().join("containers/versions.tsv")).unwrap();
    table
        .lines()
        .map(|line| {
            if line.split('\t').next() == Some(role) {
                row.to_string()
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_malformed_table_stops_the_build_before_anything_is_built() {
    let (package, version, _) = table_row("node");
    let cases = [
        (
            table_with("google", "google\t@google/gemini-cli\tlatest\t-"),
            "'latest' is not an exact version",
        ),
        (
            table_with("node", &format!("node\t{package}\t{version}\tsha512-short")),
            "the node row needs the registry's integrity",
        ),
        (
            table_with("openai", "# no openai row"),
            "has no row for 'openai'",
        ),
        (
            table_with("anthropic", "anthropic\t@anthropic-ai/claude-code 2.1.332"),
            "want 4 tab-separated columns",
        ),
    ];
    for (table, message) in cases {
        let stderr = failing_build("google", &table);
        assert!(stderr.contains(message), "want {message:?} in {stderr}");
        assert!(
            !stderr.contains("docker build"),
            "it got as far as a build: {stderr}"
        );
    }
}

#[test]
fn a_cli_version_the_registry_does_not_have_stops_the_build() {
    ensure_provider_images();
    let table = table_with("google", "google\t@google/gemini-cli\t0.0.999999\t-");
    let stderr = failing_build("google", &table);
    assert!(
        stderr.contains("@google/gemini-cli has no version 0.0.999999 on the npm registry"),
        "{stderr}"
    );
}

#[test]
fn a_node_tarball_that_is_not_the_pinned_one_stops_the_build() {
    ensure_provider_images();
    let (package, version, integrity) = table_row("node");
    // Well-formed, but not the tarball's: the last base64 digits changed.
    let wrong = format!("{}AAAA==", &integrity[..integrity.len() - 6]);
    assert_ne!(wrong, integrity);
    let table = table_with("node", &format!("node\t{package}\t{version}\t{wrong}"));
    let stderr = failing_build("google", &table);
    assert!(
        stderr.contains(&format!("integrity mismatch for {package}@{version}"))
            && stderr.contains(&format!("pins {wrong}")),
        "{stderr}"
    );
}

const HOME_SKEL: &str = "/usr/local/share/polydev/home-skel";

#[test]
fn codex_home_skeleton_is_read_only_state_without_anything_of_the_build() {
    ensure_provider_images();
    let image = "polydev-openai-runtime:latest";
    let listing = run_as_task(
        image,
        &[],
        &["find", HOME_SKEL, "-printf", "%u:%g %m %y %P\\n"],
    );
    let listing_text = text(&listing.stdout);
    assert!(listing.status.success(), "{}", text(&listing.stderr));
    let entries: Vec<(&str, &str, &str, &str)> = listing_text
        .lines()
        .map(|line| {
            let mut fields = line.splitn(4, ' ');
            let mut next = || fields.next().unwrap_or_default();
            (next(), next(), next(), next())
        })
        .collect();
    let paths: Vec<&str> = entries.iter().map(|entry| entry.3).collect();
    // What saves codex's first-run work is there.
    for kept in [
        ".codex/installation_id",
        ".codex/state_5.sqlite",
        ".codex/skills",
    ] {
        assert!(paths.contains(&kept), "{kept} missing: {listing_text}");
    }
    for (owner, mode, kind, path) in &entries {
        assert_eq!(*owner, "root:root", "{path} is not root's");
        let want = if *kind == "d" { "755" } else { "644" };
        assert!(
            *mode == want || (*kind == "f" && *mode == "755"),
            "{path} has mode {mode}"
        );
        let name = path.rsplit('/').next().unwrap_or_default();
        assert!(
            !(name.ends_with(".jsonl")
                || name.starts_with("logs_")
                || name.ends_with("-wal")
                || name.ends_with("-shm")
                || name == "config.toml"
                || name == "auth.json"
                || name == "history.jsonl"
                || *path == ".codex/sessions"
                || *path == ".codex/tmp"),
            "the skeleton holds {path}: {listing_text}"
        );
    }
    // Nothing of the build's run: seed-home.sh's stand-in address, key, prompt and reply, or
    // polydev's provider name from the launch config.
    for needle in [
        "127.0.0.1",
        "47112",
        "build-time-no-key",
        "Reply with one word",
        "polydev",
    ] {
        let grep = run_as_task(image, &[], &["grep", "-rlaF", "--", needle, HOME_SKEL]);
        assert_eq!(
            grep.status.code(),
            Some(1),
            "the skeleton holds {needle:?} in {}{}",
            text(&grep.stdout),
            text(&grep.stderr)
        );
    }
    for provider in ["anthropic", "google"] {
        let image = format!("polydev-{provider}-runtime:latest");
        let absent = run_as_task(&image, &[], &["test", "-e", HOME_SKEL]);
        assert_eq!(absent.status.code(), Some(1), "{image} has a home skeleton");
    }
}
