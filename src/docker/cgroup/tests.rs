use super::*;

const ID: &str = "c07b51b388b859d6f89a49da775fa62218d48e0417acbbc554f1d55acb67a709";

fn membership(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|l| l.replace("{ID}", ID))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Separate `cpu` and `cpuacct` hierarchies plus an empty cgroup2 (this development machine).
const V1_SPLIT_MOUNTS: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

#[test]
fn v1_hierarchies_win_over_an_empty_cgroup2() {
    let lines = membership(&[
        "9:name=systemd:/docker/{ID}",
        "4:memory:/docker/{ID}",
        "3:cpuset:/docker/{ID}",
        "2:cpuacct:/docker/{ID}",
        "1:cpu:/docker/{ID}",
        "0::/docker/{ID}",
    ]);
    let found = Cgroups::locate(&lines, &mountinfo::parse(V1_SPLIT_MOUNTS), ID).unwrap();
    let dir = |c: &str| PathBuf::from(format!("/sys/fs/cgroup/{c}/docker/{ID}"));
    assert_eq!(
        found,
        Cgroups::V1 {
            memory: dir("memory"),
            cpu: dir("cpu"),
            cpuset: dir("cpuset"),
        }
    );
}

#[test]
fn v1_with_joined_cpu_cpuacct() {
    let mounts = "\
25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw shared:7 - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 / /sys/fs/cgroup/memory rw shared:8 - cgroup cgroup rw,memory
27 24 0:24 / /sys/fs/cgroup/cpuset rw shared:9 - cgroup cgroup rw,cpuset";
    let lines = membership(&[
        "5:cpuset:/docker/{ID}",
        "4:memory:/docker/{ID}",
        "2:cpu,cpuacct:/docker/{ID}",
    ]);
    let Cgroups::V1 { cpu, .. } = Cgroups::locate(&lines, &mountinfo::parse(mounts), ID).unwrap()
    else {
        panic!("expected v1");
    };
    assert_eq!(
        cpu,
        PathBuf::from(format!("/sys/fs/cgroup/cpu,cpuacct/docker/{ID}"))
    );
}

const V2_MOUNT: &str = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw";

#[test]
fn v2_with_the_cgroupfs_driver() {
    let lines = membership(&["0::/docker/{ID}"]);
    assert_eq!(
        Cgroups::locate(&lines, &mountinfo::parse(V2_MOUNT), ID).unwrap(),
        Cgroups::V2(PathBuf::from(format!("/sys/fs/cgroup/docker/{ID}")))
    );
}

#[test]
fn systemd_scopes_child_cgroups_and_foreign_views_are_left_to_docker() {
    for path in [
        // systemd would restore the unit's idle limits on the next daemon-reload.
        "0::/system.slice/docker-{ID}.scope",
        // A cgroup below the container's.
        "0::/docker/{ID}/init",
        // Seen from another cgroup namespace.
        "0::/../../docker/{ID}",
    ] {
        let lines = membership(&[path]);
        let found = Cgroups::locate(&lines, &mountinfo::parse(V2_MOUNT), ID);
        assert!(found.is_err(), "{path}: {found:?}");
    }
}

#[test]
fn a_mount_of_a_subtree_is_resolved_against_its_root() {
    // The plugin itself in a container that sees only its parent's subtree.
    let mounts = "30 23 0:26 /nomad /sys/fs/cgroup rw - cgroup2 cgroup2 rw";
    let lines = membership(&["0::/nomad/docker/{ID}"]);
    assert_eq!(
        Cgroups::locate(&lines, &mountinfo::parse(mounts), ID).unwrap(),
        Cgroups::V2(PathBuf::from(format!("/sys/fs/cgroup/docker/{ID}")))
    );
}

#[test]
fn a_cgroup_not_naming_the_container_is_never_used() {
    // A recycled PID: the process now lives elsewhere.
    let lines = "4:memory:/user.slice\n3:cpuset:/\n1:cpu:/\n0::/user.slice";
    let err = Cgroups::locate(lines, &mountinfo::parse(V1_SPLIT_MOUNTS), ID).unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::NotFound {
                controller: "memory",
                ..
            }
        ),
        "{err}"
    );
    // No cgroup filesystem mounted at all.
    let lines = membership(&["0::/docker/{ID}"]);
    assert!(Cgroups::locate(&lines, &[], ID).is_err());
}

fn limits(memory: i64) -> ContainerUpdateBody {
    ContainerUpdateBody {
        memory: Some(memory),
        memory_swap: Some(memory),
        memory_reservation: Some(memory / 2),
        cpu_shares: Some(1024),
        nano_cpus: Some(1_000_000_000),
        cpuset_cpus: Some("0-1".into()),
        ..Default::default()
    }
}

/// A v1 layout in a temp dir, the memory limit currently `current`.
fn fake_v1(current: i64) -> (tempfile::TempDir, Cgroups) {
    let dir = tempfile::tempdir().unwrap();
    let sub = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    };
    let cgroups = Cgroups::V1 {
        memory: sub("memory"),
        cpu: sub("cpu"),
        cpuset: sub("cpuset"),
    };
    std::fs::write(
        dir.path().join("memory/memory.limit_in_bytes"),
        format!("{current}\n"),
    )
    .unwrap();
    (dir, cgroups)
}

fn names(writes: &[(PathBuf, String)]) -> Vec<String> {
    writes
        .iter()
        .map(|(p, v)| format!("{}={v}", p.file_name().unwrap().to_string_lossy()))
        .collect()
}

#[test]
fn v1_raises_memsw_before_memory_and_lowers_memory_first() {
    let (_dir, cgroups) = fake_v1(256 << 20);
    let raise = names(&cgroups.writes(&limits(512 << 20)).unwrap());
    assert_eq!(
        raise,
        [
            "memory.memsw.limit_in_bytes=536870912",
            "memory.limit_in_bytes=536870912",
            "memory.soft_limit_in_bytes=268435456",
            "cpu.shares=1024",
            "cpu.cfs_period_us=100000",
            "cpu.cfs_quota_us=100000",
            "cpuset.cpus=0-1",
        ]
    );
    let lower = names(&cgroups.writes(&limits(64 << 20)).unwrap());
    assert_eq!(lower[0], "memory.limit_in_bytes=67108864");
    assert_eq!(lower[1], "memory.memsw.limit_in_bytes=67108864");
}

#[test]
fn v2_values_are_converted_as_runc_does() {
    let cgroups = Cgroups::V2(PathBuf::from("/x"));
    let writes = names(&cgroups.writes(&limits(128 << 20)).unwrap());
    assert_eq!(
        writes,
        [
            "memory.max=134217728",
            "memory.swap.max=0",
            "memory.low=67108864",
            "cpu.max=100000 100000",
            "cpuset.cpus=0-1",
        ]
    );
    let unlimited_swap = ContainerUpdateBody {
        memory_swap: Some(-1),
        ..limits(128 << 20)
    };
    let writes = names(&cgroups.writes(&unlimited_swap).unwrap());
    assert_eq!(writes[1], "memory.swap.max=max");
}

#[test]
fn what_docker_would_refuse_is_left_to_docker() {
    let cgroups = Cgroups::V2(PathBuf::from("/x"));
    let refused = [
        ContainerUpdateBody {
            nano_cpus: Some(1_000_000),
            ..Default::default()
        },
        ContainerUpdateBody {
            nano_cpus: Some(100_000 * 1_000_000_000),
            ..Default::default()
        },
        ContainerUpdateBody {
            memory: Some(1 << 20),
            ..Default::default()
        },
        ContainerUpdateBody {
            memory_reservation: Some(512 << 20),
            ..limits(256 << 20)
        },
        ContainerUpdateBody {
            memory_swap: Some(64 << 20),
            ..limits(256 << 20)
        },
    ];
    for update in refused {
        let result = cgroups.writes(&update);
        assert!(
            matches!(result, Err(CgroupError::LeftToDocker(_))),
            "{update:?}: {result:?}"
        );
    }
}

#[test]
fn apply_writes_the_files_and_skips_absent_swap_accounting() {
    let (dir, cgroups) = fake_v1(256 << 20);
    let only_memory = ContainerUpdateBody {
        memory: Some(512 << 20),
        memory_swap: Some(512 << 20),
        ..Default::default()
    };
    cgroups.apply(&only_memory).unwrap();
    let limit = std::fs::read_to_string(dir.path().join("memory/memory.limit_in_bytes")).unwrap();
    assert_eq!(limit, (512u64 << 20).to_string());
    assert!(
        !dir.path()
            .join("memory/memory.memsw.limit_in_bytes")
            .exists()
    );
    // A required file that cannot be written is an error (the caller falls back to Docker).
    std::fs::remove_dir_all(dir.path().join("cpu")).unwrap();
    let cpu = ContainerUpdateBody {
        cpu_shares: Some(512),
        ..Default::default()
    };
    assert!(matches!(
        cgroups.apply(&cpu),
        Err(CgroupError::Write { .. })
    ));
}
