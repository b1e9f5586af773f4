//! A measurement, not a test (ignored by default; it prints numbers and asserts none): a burst
//! of 20 StartTasks with pool target 2 against real Docker, next to 20 concurrent `docker run -d`
//! of the same image in the same run, and where the cold starts' time went (the plugin's
//! `start timings` debug lines).
//!
//! ```sh
//! cargo test --test pool measure_a_burst -- --ignored --nocapture
//! ```
//!
//! Knobs (environment): `BURST_RUNS` (3), `BURST_TASKS` (20), `BURST_TARGET` (2), `BURST_IMAGE`
//! (the test image; e.g. `polydev-openai-runtime:latest`), `BURST_MODE` (`broker`, the built-ins'
//! default, or `env`), `BURST_SECOND_AFTER` (seconds after the first burst that a second one
//! comes, to see the grown pool serve it; 0, the default, for none), `BURST_COLD_PARALLELISM`
//! (the plugin's `cold_start_parallelism`; 0, the default, for four per CPU).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::support::real::{Plugin, TEST_IMAGE, docker, ensure_test_image};
use super::support::tasks::{Setup, Started, destroy, script, start, test_key};
use super::support::{
    PoolOptions, ProviderOptions, plugin_config_for, set_config_request, with_field,
};

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "p50 {:>6.0} p90 {:>6.0} max {:>6.0} ms",
        percentile(&values, 50.0),
        percentile(&values, 90.0),
        values.last().copied().unwrap_or(f64::NAN)
    )
}

/// The `*_ms` fields of the plugin's log events (hclog-shaped JSON lines) whose message is
/// `message` and, when given, whose `warm` field is `warm`.
fn timings(stderr: &str, message: &str, warm: Option<bool>) -> BTreeMap<String, Vec<f64>> {
    let mut fields: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for event in stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["@message"] == message)
        .filter(|event| warm.is_none_or(|warm| event["warm"] == warm))
    {
        for (name, value) in event.as_object().into_iter().flatten() {
            if let (true, Some(value)) = (name.ends_with("_ms"), value.as_f64()) {
                fields.entry(name.clone()).or_default().push(value);
            }
        }
    }
    fields
}

fn phases_line(phases: BTreeMap<String, Vec<f64>>) -> String {
    phases
        .into_iter()
        .map(|(field, mut values)| {
            values.sort_by(f64::total_cmp);
            format!(
                "{}={:.0}/{:.0}",
                field.trim_end_matches("_ms"),
                percentile(&values, 50.0),
                percentile(&values, 90.0)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn plugin(image: &str, broker: bool, target: u32) -> Setup {
    let key = test_key();
    let data_dir = tempfile::tempdir().unwrap();
    let plugin = Plugin::spawn(&[("OPENAI_API_KEY", key.as_str()), ("POLYDEV_LOG", "debug")]);
    let (mut base, driver) = plugin.clients().await;
    let providers = if broker {
        ProviderOptions::default()
    } else {
        ProviderOptions::env_mode()
    };
    let config = plugin_config_for(
        image,
        data_dir.path(),
        &PoolOptions::target(target),
        &providers,
    );
    let parallelism: u32 = knob("BURST_COLD_PARALLELISM", 0);
    let config = with_field(
        &config,
        "cold_start_parallelism",
        rmpv::Value::from(parallelism),
    );
    base.set_config(set_config_request(config, true))
        .await
        .expect("SetConfig");
    Setup {
        plugin,
        driver,
        data_dir,
        key,
    }
}

/// `count` concurrent `docker run -d` of `image`, each timed; removed afterwards.
fn docker_run_burst(image: &str, count: usize, label: &str) -> Vec<f64> {
    let runs: Vec<_> = (0..count)
        .map(|_| {
            let (image, label) = (image.to_string(), label.to_string());
            std::thread::spawn(move || {
                let began = Instant::now();
                let out = std::process::Command::new("docker")
                    .args(["run", "-d", "--label", &label, "--entrypoint", "/bin/sh"])
                    .arg(&image)
                    .args(["-c", "sleep 30"])
                    .output()
                    .expect("docker run");
                assert!(out.status.success(), "{out:?}");
                began.elapsed().as_secs_f64() * 1e3
            })
        })
        .collect();
    let times = runs.into_iter().map(|r| r.join().unwrap()).collect();
    let ids = docker(&["ps", "-aq", "--filter", &format!("label={label}")]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        docker(&args);
    }
    times
}

/// `count` concurrent create + start through the engine's API (what Nomad's docker driver does,
/// without a CLI process per container), each timed; removed afterwards.
async fn api_burst(image: &str, count: usize, label: &str) -> Vec<f64> {
    use polydev::engine::{ContainerEngine, ContainerSpec, ResourceLimits, SecurityOptions};
    let docker = std::sync::Arc::new(
        polydev::docker::DockerEngine::connect("unix:///var/run/docker.sock").unwrap(),
    );
    let (key, value) = label.split_once('=').unwrap();
    let runs = (0..count).map(|i| {
        let docker = docker.clone();
        let spec = ContainerSpec {
            name: format!("polydev-measure-{}-{i}", value.replace('.', "-")),
            image: image.to_string(),
            user: "2100000000:2100000000".into(),
            env: vec!["WARM_POOL=true".into()],
            labels: BTreeMap::from([(key.to_string(), value.to_string())]),
            limits: ResourceLimits {
                memory_bytes: 64 << 20,
                ..Default::default()
            },
            mounts: vec![],
            security: SecurityOptions {
                cap_drop_all: true,
                no_new_privileges: true,
                pids_limit: 512,
                read_only_rootfs: false,
                oci_runtime: None,
                scratch: vec![],
            },
            work_dir: None,
            network_mode: Some("none".into()),
            log_max_size: "10m".into(),
            log_max_files: 3,
        };
        async move {
            let began = Instant::now();
            let id = docker.create(&spec).await.map_err(|e| (None, e))?;
            match docker.start(&id).await {
                Ok(()) => Ok((began.elapsed().as_secs_f64() * 1e3, id)),
                Err(e) => Err((Some(id), e)),
            }
        }
    });
    let done = futures::future::join_all(runs).await;
    // Remove every container made, started or not, before any failure is reported.
    for id in done.iter().filter_map(|r| match r {
        Ok((_, id)) | Err((Some(id), _)) => Some(id),
        Err((None, _)) => None,
    }) {
        let _ = docker.remove(id).await;
    }
    done.into_iter()
        .map(|r| {
            r.map(|(ms, _)| ms)
                .unwrap_or_else(|(_, e)| panic!("create+start: {e}"))
        })
        .collect()
}

/// `tasks` concurrent StartTasks on `s`, each timed, then destroyed; returns the times and how
/// long the whole burst took to start.
async fn polydev_burst(s: &Setup, tasks: usize, name: &str) -> (Vec<f64>, f64) {
    let began = Instant::now();
    let started: Vec<(f64, Started)> = futures::future::join_all((0..tasks).map(|i| {
        let mut driver = s.driver.clone();
        async move {
            let began = Instant::now();
            let task = start(&mut driver, &format!("{name}{i}"), script("sleep 30"), 64).await;
            (began.elapsed().as_secs_f64() * 1e3, task)
        }
    }))
    .await;
    let burst_ms = began.elapsed().as_secs_f64() * 1e3;
    let mut driver = s.driver.clone();
    for (_, task) in &started {
        destroy(&mut driver, &task.id, &task.container).await;
    }
    (started.iter().map(|(ms, _)| *ms).collect(), burst_ms)
}

fn print_phases(stderr: &str) {
    for (warm, name) in [(false, "cold"), (true, "warm")] {
        let phases = timings(stderr, "start timings", Some(warm));
        let count = phases.get("total_ms").map_or(0, Vec::len);
        println!("    {count} {name}, p50/p90 ms: {}", phases_line(phases));
    }
    let refill = timings(stderr, "warm container ready", None);
    println!(
        "    warm containers made, p50/p90 ms: {}",
        phases_line(refill)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: prints numbers, asserts none"]
async fn measure_a_burst_against_docker_run() {
    ensure_test_image();
    let runs: usize = knob("BURST_RUNS", 3);
    let tasks: usize = knob("BURST_TASKS", 20);
    let target: u32 = knob("BURST_TARGET", 2);
    let image: String = knob("BURST_IMAGE", TEST_IMAGE.to_string());
    let broker = knob("BURST_MODE", "broker".to_string()) != "env";
    // Seconds after the first burst's tasks are gone that a second burst comes (0: none).
    let second_after: u64 = knob("BURST_SECOND_AFTER", 0);
    println!("burst of {tasks}, pool target {target}, image {image}, broker mode {broker}");
    for run in 0..runs {
        let s = plugin(&image, broker, target).await;
        super::wait_for_idle(&s.driver, &s, target as usize).await;
        let (polydev, burst_ms) = polydev_burst(&s, tasks, "m").await;
        let stderr = s.plugin.stderr();
        let refills = stderr.matches("warm container ready").count();
        let second = if second_after > 0 {
            tokio::time::sleep(Duration::from_secs(second_after)).await;
            let idle = super::support::tasks::reported_idle(&s.driver, "openai").await;
            let (times, _) = polydev_burst(&s, tasks, "n").await;
            Some((idle, times, s.plugin.stderr()[stderr.len()..].to_string()))
        } else {
            None
        };
        drop(s);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let label = format!("io.polydev.measure={}-{run}", std::process::id());
        let baseline = tokio::task::spawn_blocking({
            let (image, label) = (image.clone(), label.clone());
            move || docker_run_burst(&image, tasks, &label)
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let api = api_burst(&image, tasks, &format!("{label}-api")).await;
        println!(
            "run {run}: polydev StartTask {} (whole burst {burst_ms:.0} ms; {refills} warm \
             containers made by the time its tasks were destroyed)\n    docker run -d {}\n    API create+start {}",
            summary(polydev),
            summary(baseline),
            summary(api)
        );
        print_phases(&stderr);
        if let Some((idle, times, stderr)) = second {
            println!(
                "  second burst {second_after} s later, {idle:?} idle before it: polydev \
                 StartTask {}",
                summary(times)
            );
            print_phases(&stderr);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
