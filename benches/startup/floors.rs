//! The raw floors every StartTask is measured against, taken the same run: Docker's create +
//! start and exec of the provider image, the claim through Docker's own API (update + stdin
//! attach), and polydev's claim-time limits write.

use super::*;

fn task_limits() -> ResourceLimits {
    // What `support::task_config` asks for: 128 MB, 100 CPU shares.
    ResourceLimits {
        memory_bytes: 128 << 20,
        memory_reservation_bytes: 0,
        cpu_shares: 100,
        nano_cpus: 0,
        cpuset_cpus: String::new(),
    }
}

/// `task_limits()` as Docker's update API takes them (no quota: every host CPU, as polydev sends).
fn docker_update_body() -> bollard::models::ContainerUpdateBody {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    bollard::models::ContainerUpdateBody {
        memory: Some(128 << 20),
        memory_swap: Some(128 << 20),
        cpu_shares: Some(100),
        nano_cpus: Some(cpus * 1_000_000_000),
        ..Default::default()
    }
}

fn idle_limits() -> ResourceLimits {
    // The pool's defaults: 0.1 CPU, 256 MB.
    ResourceLimits {
        memory_bytes: 256 << 20,
        memory_reservation_bytes: 0,
        cpu_shares: 0,
        nano_cpus: 100_000_000,
        cpuset_cpus: String::new(),
    }
}

/// A container like a task's (hardened, the default task user and its home, local log driver),
/// without alloc mounts.
fn floor_spec(run: &Run, name: &str, warm: bool, limits: ResourceLimits) -> ContainerSpec {
    ContainerSpec {
        name: format!("polydev-bench-{}-{name}", run.id),
        image: run.openai.clone(),
        user: task_user(&SecurityConfig::default()),
        env: if warm {
            vec!["WARM_POOL=true".into()]
        } else {
            Vec::new()
        },
        labels: BTreeMap::from([("io.polydev.bench".to_string(), run.id.clone())]),
        limits,
        mounts: Vec::new(),
        security: security_options(&SecurityConfig::default()),
        work_dir: None,
        network_mode: None,
        log_max_size: "100m".into(),
        log_max_files: 3,
    }
}

pub(super) async fn measure(run: &Run, n: usize) -> Result<Floors> {
    let docker = DockerEngine::connect(DOCKER_ENDPOINT)?;
    docker.version().await?;

    // create + start; the first sample warms caches and is discarded.
    let mut create_start = Vec::new();
    for i in 0..=n {
        let spec = floor_spec(run, &format!("cold-{i}"), false, task_limits());
        let t0 = Instant::now();
        let id = docker.create(&spec).await?;
        docker.start(&id).await?;
        let took = t0.elapsed();
        docker.remove(&id).await?;
        if i > 0 {
            create_start.push(took);
        }
    }

    // exec into one running container.
    let spec = floor_spec(run, "exec", true, task_limits());
    let id = docker.create(&spec).await?;
    docker.start(&id).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut exec_first, mut exec_exit) = (Vec::new(), Vec::new());
    for i in 0..=n {
        let t0 = Instant::now();
        let session = docker
            .exec(
                &id,
                &task_user(&SecurityConfig::default()),
                vec!["echo".into(), "x".into()],
                false,
            )
            .await?;
        drop(session.input);
        let mut output = session.output;
        let mut first = None;
        while let Some(item) = output.next().await {
            if first.is_none() && matches!(item?, ExecOutput::Stdout(_)) {
                first = Some(t0.elapsed());
            }
        }
        let code = session.exit_code.await?;
        let exit = t0.elapsed();
        if code != 0 {
            bail!("exec echo exited {code}");
        }
        if i > 0 {
            exec_first.push(first.context("exec produced no output")?);
            exec_exit.push(exit);
        }
    }
    docker.remove(&id).await?;

    // claim: idle, started WARM_POOL containers, then Docker's own update + send_launch_spec;
    // polydev's direct cgroup write of the same limits is timed on the running task after it.
    let engine =
        bollard::Docker::connect_with_unix(DOCKER_ENDPOINT, 120, bollard::API_DEFAULT_VERSION)?
            .negotiate_version()
            .await?;
    let mut idle = Vec::new();
    for i in 0..=n {
        let spec = floor_spec(run, &format!("idle-{i}"), true, idle_limits());
        let id = docker.create(&spec).await?;
        docker.start(&id).await?;
        idle.push(id);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut claim, mut update, mut launch) = (Vec::new(), Vec::new(), Vec::new());
    let mut limits_write = Vec::new();
    for (i, id) in idle.iter().enumerate() {
        let spec = LaunchSpec {
            argv: vec!["sh".into(), "-c".into(), "sleep 30".into()],
            env: vec![("PROVIDER".into(), PROVIDER.into())],
            secret_env: vec![("OPENAI_API_KEY".into(), SecretString::from(run.key.clone()))],
            work_dir: Some("/tmp".into()),
            required: vec!["OPENAI_API_KEY".into()],
            files: vec![],
        }
        .encode();
        let pid = docker.inspect(id).await?.cgroup_pid;
        let t0 = Instant::now();
        engine.update_container(id, docker_update_body()).await?;
        let t1 = Instant::now();
        docker.send_launch_spec(id, &spec).await?;
        let t2 = Instant::now();
        docker.update_limits(id, pid, &task_limits()).await?;
        if i > 0 {
            claim.push(t2 - t0);
            update.push(t1 - t0);
            launch.push(t2 - t1);
            limits_write.push(t2.elapsed());
        }
        // Let the update Docker records in the background finish before the next sample.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let nano_cpus_after_claim = Command::new("docker")
        .args(["inspect", "--format", "{{.HostConfig.NanoCpus}}", &idle[0]])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    // The claimed containers really run the task (checked once, untimed).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let state = docker.inspect(&idle[n]).await?;
    if !state.running {
        bail!("a claimed floor container is not running the task: {state:?}");
    }
    for id in &idle {
        docker.remove(id).await?;
    }
    Ok(Floors {
        create_start,
        exec_first,
        exec_exit,
        claim,
        update,
        launch,
        limits_write,
        nano_cpus_after_claim,
    })
}
