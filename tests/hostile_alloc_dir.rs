//! A hostile task against its own alloc dir, through the real plugin and real Docker.
//!
//! Nomad makes the alloc's `logs/` directory writable by everyone, and root processes (Nomad's
//! logmon, polydev's log forwarder) open the task's FIFOs in it. A task that could delete its
//! stdout FIFO and put a symlink there would, at its next run with the same paths, have root read
//! or append to any host file. Here the task tries exactly that and exits non-zero, and the same
//! paths are used again, on a cold start and on a warm claim:
//! - the task sees `/alloc/logs` read-only (its swap and any new file there fail), while the rest
//!   of `/alloc` stays writable;
//! - the FIFOs are still the FIFOs Nomad made, the second run's output reaches them, and the host
//!   file the symlink would have pointed at is neither read into the log nor written.
//!
//! And, as if the swap had been made anyway (by something else that can write there): a symlink
//! or a regular file where the FIFO should be is refused by the forwarder, not followed.

mod support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use polydev::core::DriverState;
use polydev::pb::hashicorp::nomad::plugins::drivers::proto as nomad;
use support::real::{AllocDir, FifoReader};
use support::tasks::{
    ContainerGuard, Setup, destroy, finish, script, setup_with_pool, setup_with_pool_in, unique_id,
    wait, wait_for_reported_idle,
};
use support::{PoolOptions, task_config};

const TASK: &str = "hostile";

/// A root-only host file standing for the store's key, `/etc/shadow` or a cron file.
struct Victim {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    modified: std::time::SystemTime,
}

const VICTIM_TEXT: &str = "root-only: sk-victim-key-0123456789\n";

impl Victim {
    fn new() -> Victim {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.key");
        std::fs::write(&path, VICTIM_TEXT).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        Victim {
            _dir: dir,
            path,
            modified,
        }
    }

    fn assert_untouched(&self) {
        assert_eq!(std::fs::read_to_string(&self.path).unwrap(), VICTIM_TEXT);
        assert_eq!(
            std::fs::metadata(&self.path).unwrap().modified().unwrap(),
            self.modified
        );
    }
}

/// One run of the task in `alloc` (the same paths every time), its FIFOs read by `readers`.
async fn run(
    setup: &mut Setup,
    alloc: &AllocDir,
    readers: (FifoReader, FifoReader),
    body: &str,
    warm: bool,
) -> (i32, String, String) {
    if warm {
        wait_for_reported_idle(&setup.driver, "openai", 1).await;
    }
    // `warm`: the task must be given a warm container, else it must start cold.
    let id = unique_id(TASK);
    let mut config = task_config(&id, Some(alloc.root.path()), &script(body));
    config.name = TASK.to_string();
    let handle = setup
        .driver
        .start_task(nomad::StartTaskRequest { task: Some(config) })
        .await
        .expect("StartTask")
        .into_inner()
        .handle
        .unwrap();
    let state = DriverState::decode(&handle.driver_state).unwrap();
    let _guard = ContainerGuard::new(&state.container_id);
    assert_eq!(state.slot.is_some(), warm, "warm claim as asked");
    let exit = wait(&mut setup.driver, &id).await;
    let code = exit.result.map(|r| r.exit_code).unwrap_or(-1);
    let stdout = String::from_utf8(finish(readers.0).await).unwrap();
    let stderr = String::from_utf8(finish(readers.1).await).unwrap();
    destroy(&mut setup.driver, &id, &state.container_id).await;
    (code, stdout, stderr)
}

/// Nothing polydev mounted for the task is left in the host's view of the alloc dir: Nomad's
/// own `alloc/logs` is still a plain directory it can write its rotated logs into.
fn assert_no_mount_in(alloc: &AllocDir) {
    let root = std::fs::canonicalize(alloc.root.path()).unwrap();
    let leaked: Vec<String> = polydev::mountinfo::of_self()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|point| std::path::Path::new(point).starts_with(&root))
        .collect();
    assert!(
        leaked.is_empty(),
        "mounts leaked onto the host's alloc dir: {leaked:?}"
    );
}

fn assert_still_fifos(alloc: &AllocDir) {
    for stream in ["stdout", "stderr"] {
        let meta = std::fs::symlink_metadata(alloc.fifo(stream)).unwrap();
        assert!(meta.file_type().is_fifo(), "{stream} is no longer a FIFO");
    }
}

async fn the_task_cannot_swap_its_fifo(warm: bool) {
    the_task_cannot_swap_its_fifo_in(warm, &std::env::temp_dir()).await;
}

/// The attack with the plugin's data dir and the alloc dir both inside `parent`.
async fn the_task_cannot_swap_its_fifo_in(warm: bool, parent: &std::path::Path) {
    let mut setup = setup_with_pool_in(&PoolOptions::target(u32::from(warm)), parent).await;
    let victim = Victim::new();
    let alloc = AllocDir::new_in(TASK, parent);
    let fifo = format!("/alloc/logs/.{TASK}.stdout.fifo");
    let attack = format!(
        "if rm -f {fifo} 2>/dev/null && ln -s {victim} {fifo} 2>/dev/null; \
           then echo SWAPPED; else echo SWAP-DENIED; fi; \
         if touch /alloc/logs/planted 2>/dev/null; then echo PLANTED; else echo PLANT-DENIED; fi; \
         if mv /alloc/logs /alloc/moved 2>/dev/null; then echo MOVED; else echo MOVE-DENIED; fi; \
         touch /alloc/data-ok && echo ALLOC-WRITABLE; \
         exit 1",
        victim = victim.path.display()
    );
    let (code, stdout, _) = run(&mut setup, &alloc, alloc.start_readers(), &attack, warm).await;
    assert_eq!(code, 1, "{stdout}");
    for line in [
        "SWAP-DENIED",
        "PLANT-DENIED",
        "MOVE-DENIED",
        "ALLOC-WRITABLE",
    ] {
        assert!(stdout.contains(line), "missing {line} in {stdout:?}");
    }
    assert_still_fifos(&alloc);
    assert_no_mount_in(&alloc);
    assert!(alloc.root.path().join("alloc/data-ok").exists());

    // Nomad restarts the task with the same FIFO paths.
    let readers = (
        FifoReader::reopen(&alloc.fifo("stdout")),
        FifoReader::reopen(&alloc.fifo("stderr")),
    );
    let (code, stdout, _) = run(&mut setup, &alloc, readers, "echo second-run", warm).await;
    assert_eq!(code, 0);
    assert_eq!(stdout, "second-run\n");
    assert!(
        !stdout.contains("sk-victim-key"),
        "a host file reached the log"
    );
    victim.assert_untouched();
    assert_still_fifos(&alloc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_task_cannot_swap_its_log_fifo() {
    the_task_cannot_swap_its_fifo(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_task_cannot_swap_its_log_fifo() {
    the_task_cannot_swap_its_fifo(true).await;
}

/// A directory that is a mount point of its own with shared propagation, as every mount is on a
/// systemd host (systemd makes `/` and all mounts below it `shared` at boot; this machine's `/`
/// is private, which hides the difference). Unmounted when dropped.
struct SharedMount {
    dir: tempfile::TempDir,
}

impl SharedMount {
    fn new() -> SharedMount {
        let dir = tempfile::Builder::new()
            .prefix("polydev-shared")
            .tempdir()
            .unwrap();
        let path = dir.path().to_str().unwrap();
        for args in [vec!["--bind", path, path], vec!["--make-shared", path]] {
            let out = std::process::Command::new("mount")
                .args(&args)
                .output()
                .unwrap();
            assert!(out.status.success(), "mount {args:?}: {out:?}");
        }
        SharedMount { dir }
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-R", "-l"])
            .arg(self.dir.path())
            .output();
    }
}

/// The warm claim on a host whose mounts are shared (systemd's default), with Nomad's alloc dir
/// and polydev's data dir on the same mount. Every bind the claim makes is then a peer of that
/// mount, the read-only `alloc/logs` is a peer of the staging mount, and detaching the staging
/// point detaches `alloc/logs` too: the task gets the writable logs dir back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cannot_swap_its_log_fifo_when_mounts_are_shared() {
    let shared = SharedMount::new();
    the_task_cannot_swap_its_fifo_in(true, shared.dir.path()).await;
    the_task_cannot_swap_its_fifo_in(false, shared.dir.path()).await;
}

/// A warm container whose slot no longer propagates (here: its slots root was unmounted under
/// it) would run the task without its directories. The claim checks that the read-only logs dir
/// reached the container, and otherwise removes it and starts the task cold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_container_the_mounts_do_not_reach_is_replaced_by_a_cold_start() {
    let mut setup = setup_with_pool(&PoolOptions::target(1)).await;
    wait_for_reported_idle(&setup.driver, "openai", 1).await;
    let slots = setup.data_dir.path().join("slots");
    let out = std::process::Command::new("umount")
        .args(["-l"])
        .arg(&slots)
        .output()
        .unwrap();
    assert!(out.status.success(), "umount: {out:?}");

    let alloc = AllocDir::new(TASK);
    let body = "if touch /alloc/logs/x 2>/dev/null; then echo LOGS-WRITABLE; fi; \
                test -p /alloc/logs/.hostile.stdout.fifo && echo FIFO-SEEN";
    // Asked as a cold start: the claim must have fallen back to one.
    let (_, stdout, _) = run(&mut setup, &alloc, alloc.start_readers(), body, false).await;
    assert_eq!(stdout, "FIFO-SEEN\n");
    assert!(
        setup.forwarder_logs().contains("did not reach")
            || setup.plugin.stderr().contains("did not reach"),
        "the replacement is logged"
    );
}

/// What the forwarder does when the FIFO path is already not a FIFO: a symlink to a root-only
/// file, or a regular file. It refuses; the target is neither read nor appended to, and the
/// task's output goes nowhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarder_refuses_a_symlink_or_a_file_where_the_fifo_was() {
    let mut setup = setup_with_pool(&PoolOptions::target(0)).await;
    let victim = Victim::new();
    let alloc = AllocDir::new(TASK);
    let stdout_path = alloc.fifo("stdout");
    std::os::unix::fs::symlink(&victim.path, &stdout_path).unwrap();
    let planted = alloc.fifo("stderr");
    std::fs::write(&planted, "").unwrap();

    let id = unique_id(TASK);
    let mut config = task_config(&id, Some(alloc.root.path()), &script("echo LEAKED; exit 0"));
    config.name = TASK.to_string();
    let started = setup
        .driver
        .start_task(nomad::StartTaskRequest { task: Some(config) })
        .await;
    let container = started.as_ref().ok().and_then(|r| {
        let handle = r.get_ref().handle.as_ref()?;
        Some(DriverState::decode(&handle.driver_state).ok()?.container_id)
    });
    let _guard = container.as_deref().map(ContainerGuard::new);
    if started.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(60), wait(&mut setup.driver, &id)).await;
    }
    // Give a (wrong) forwarder time to write what it would have written.
    tokio::time::sleep(Duration::from_millis(500)).await;
    victim.assert_untouched();
    assert_eq!(
        std::fs::read(&planted).unwrap(),
        b"",
        "the planted file was written"
    );
    assert!(
        std::fs::symlink_metadata(&stdout_path)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let logs = setup.forwarder_logs() + &setup.plugin.stderr();
    assert!(
        logs.contains("is a symlink") || logs.contains("is a regular file, not a FIFO"),
        "the refusal is said: {logs}"
    );
    assert!(!logs.contains("sk-victim-key"));
    if let Some(container) = container {
        destroy(&mut setup.driver, &id, &container).await;
    }
}
