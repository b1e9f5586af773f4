//! `cargo bench --bench credentials`: warm StartTask latency by credential source, in one run —
//! this node's encrypted store, Vault with its cache warm, Vault with every read going to the
//! server (cache cold).
//!
//! Real things only: the real plugin binary over its unix socket, real Docker (the busybox test
//! image as the `openai` provider, a warm pool of one, broker mode against the local HTTPS
//! stand-in API), and a real OpenBao dev server (TLS) on loopback — `bao` from `$POLYDEV_BAO` or
//! `PATH` (`tests/run.sh` installs it into `target/openbao-2.7.2/bin`). Each start is a warm
//! claim: the harness waits for the refill before the next one. Latency is StartTask request →
//! response. Prints a markdown table and writes `benches/credentials.svg`; no timing asserts.
//! Samples per series: `BENCH_CRED_TASKS` (default 30).

#[path = "../tests/support/mod.rs"]
mod support;

#[allow(dead_code)]
#[path = "startup/stats.rs"]
mod stats;
#[path = "startup/svg.rs"]
mod svg;

use std::time::{Duration, Instant};

use polydev::pb::hashicorp::nomad::plugins::drivers::proto as nomad;
use rmpv::Value;
use support::openbao::OpenBao;
use support::real::{AllocDir, Plugin, TEST_IMAGE, credentials_cli, ensure_test_image};
use support::tasks::{remove_containers_of, unique_id, wait, wait_for_reported_idle};
use support::upstream::{Reply, StandIn};
use support::{PoolOptions, ProviderOptions, TaskOptions, cty_object, task_config};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

/// Where a series' key comes from.
#[derive(Clone, Copy)]
enum Source {
    Store,
    VaultWarm,
    VaultCold,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Store => "local store",
            Source::VaultWarm => "Vault, cache warm",
            Source::VaultCold => "Vault, cache cold",
        }
    }
}

async fn bench() {
    let n: usize = std::env::var("BENCH_CRED_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    ensure_test_image();
    let bao = OpenBao::start();
    let api = StandIn::start(|_| Reply::json("{}")).await;
    let mut results = Vec::new();
    for source in [Source::Store, Source::VaultWarm, Source::VaultCold] {
        eprintln!("{}: {n} warm StartTasks", source.label());
        results.push((source, series(source, n, &bao, &api).await));
    }
    println!("{}", table(&results, n));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/credentials.svg");
    std::fs::write(&path, chart(&results)).expect("write the chart");
    println!("chart: {}", path.display());
}

/// `n` warm StartTask latencies of a user whose key comes from `source`.
async fn series(source: Source, n: usize, bao: &OpenBao, api: &StandIn) -> Vec<Duration> {
    let data_dir = tempfile::tempdir().unwrap();
    let user = format!("bench-{}", support::tasks::rand_suffix());
    let key = "sk-bench-0123456789abcdef";
    let providers = ProviderOptions {
        credential_mode: None,
        api_upstream: Some(api.origin()),
        upstream_ca_file: Some(api.ca_path()),
    };
    let mut config = support::plugin_config_for(
        TEST_IMAGE,
        data_dir.path(),
        &PoolOptions::target(1),
        &providers,
    );
    match source {
        Source::Store => {
            let args = [
                "set",
                "--namespace",
                "default",
                "--user",
                &user,
                "--provider",
                "openai",
            ];
            let (code, _, err) = credentials_cli(&args, data_dir.path(), key);
            assert_eq!(code, 0, "{err}");
        }
        Source::VaultWarm | Source::VaultCold => {
            bao.put(
                &format!("polydev/default/{user}/openai"),
                &[("OPENAI_API_KEY", key)],
            );
            let token_file = data_dir.path().join("vault-token");
            std::fs::write(&token_file, &bao.root_token).unwrap();
            let ttl = if matches!(source, Source::VaultWarm) {
                "10m"
            } else {
                "1ms"
            };
            let vault = cty_object(vec![
                ("address", Value::from(bao.address.as_str())),
                ("token_file", Value::from(token_file.to_str().unwrap())),
                ("ca_file", Value::from(bao.ca_file.to_str().unwrap())),
                ("cache_ttl", Value::from(ttl)),
            ]);
            config = support::with_field(&config, "vault", vault);
        }
    }
    let plugin = Plugin::spawn(&[]);
    let (mut base, mut driver) = plugin.clients().await;
    base.set_config(support::set_config_request(config, true))
        .await
        .expect("SetConfig");
    let mut samples = Vec::with_capacity(n);
    // One start more than measured: the first fills the warm cache (and warms connections).
    for i in 0..=n {
        wait_for_reported_idle(&driver, "openai", 1).await;
        let alloc = AllocDir::new("bench");
        let (stdout, stderr) = alloc.start_readers();
        let mut options = TaskOptions::new("openai", "true", &[]);
        options.user_id = Some(user.clone());
        let id = unique_id("bench");
        let mut task = task_config(&id, Some(alloc.root.path()), &options);
        task.name = "bench".into();
        support::set_memory_mb(&mut task, 64);
        let began = Instant::now();
        driver
            .start_task(nomad::StartTaskRequest { task: Some(task) })
            .await
            .expect("StartTask");
        let took = began.elapsed();
        if i > 0 {
            samples.push(took);
        }
        wait(&mut driver, &id).await;
        // The streams end with the task; read them to the end as logmon would, then destroy.
        let streams = async {
            support::tasks::finish(stdout).await;
            support::tasks::finish(stderr).await;
        };
        if tokio::time::timeout(Duration::from_secs(20), streams)
            .await
            .is_err()
        {
            let log = plugin.stderr();
            panic!(
                "the task's streams did not end within 20 s; the plugin's log ends with: {}",
                &log[log.len().saturating_sub(4000)..]
            );
        }
        let _ = driver
            .destroy_task(nomad::DestroyTaskRequest {
                task_id: id,
                force: true,
            })
            .await;
    }
    drop(plugin);
    remove_containers_of(&data_dir.path().to_string_lossy());
    let _ = std::process::Command::new("umount")
        .args(["-R", "-l"])
        .arg(data_dir.path().join("slots"))
        .output();
    samples
}

fn table(results: &[(Source, Vec<Duration>)], n: usize) -> String {
    let mut out = format!(
        "Warm StartTask by credential source ({n} starts each, {} CPUs)\n\n\
         | Source | n | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    for (source, samples) in results {
        let s = stats::Summary::of(samples).expect("samples");
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            source.label(),
            s.n,
            stats::ms(s.p50),
            stats::ms(s.p90),
            stats::ms(s.p99),
            stats::ms(s.max)
        ));
    }
    out
}

fn chart(results: &[(Source, Vec<Duration>)]) -> String {
    let rows = results
        .iter()
        .map(|(source, samples)| {
            let s = stats::Summary::of(samples).expect("samples");
            svg::Row {
                label: source.label().to_string(),
                p50: s.p50,
                p99: s.p99,
                n: s.n,
            }
        })
        .collect();
    svg::render(
        "polydev: warm StartTask by credential source (dark p50, light p99)",
        &[
            "real plugin binary, real Docker (test image), real OpenBao over TLS on loopback"
                .into(),
        ],
        &[svg::Section {
            title: "StartTask request → response".into(),
            rows,
        }],
        &[],
    )
}
