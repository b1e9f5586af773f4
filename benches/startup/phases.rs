//! The measured phases after the floors: sequential StartTasks (pool off, then on) with time to
//! first byte, bursts of concurrent StartTasks, and the plugin's memory with many tasks running.

use super::*;

/// Sequential StartTasks of `sh -c 'sleep 30'` (each destroyed, untimed, before the next), then
/// `ttfb_n` runs of `codex --version` timed to their first stdout byte.
pub(super) async fn startup_series(
    run: &Run,
    name: &str,
    pool: Pool,
    tasks: usize,
    ttfb_n: usize,
) -> Result<Series> {
    let mut session = Session::open(run, name, &run.openai, pool).await?;
    let target = pool.target as usize;
    let fill = if target > 0 {
        Some(session.initial_fill(target).await?)
    } else {
        None
    };
    let seen = fill.as_ref().is_some_and(|f| f.seen);
    let mut waits = Waits::default();
    let mut series = Series {
        latencies: Vec::new(),
        hit_latencies: Vec::new(),
        hits: Hits::default(),
        ttfb: Vec::new(),
        ttfb_hits: Hits::default(),
        fill: None,
        waits: Waits::default(),
        fingerprint_idle: None,
        codex_output: String::new(),
    };
    let mut started = Vec::new();
    // Two discarded warm-up starts, then the measured ones.
    for i in 0..tasks + 2 {
        if target > 0 {
            session.wait_refill(target, seen, &mut waits).await?;
        } else {
            tokio::time::sleep(SETTLE).await;
        }
        let prepared = session.prepare(run, name, &sleep_task(), false);
        let task = session.start(prepared).await?;
        let prestarted = session.prestarted(&task).await;
        if i >= 2 {
            series.latencies.push(task.latency);
            if prestarted == Some(true) {
                series.hit_latencies.push(task.latency);
            }
            started.push((task.id.clone(), prestarted));
        }
        session.destroy(task).await?;
    }

    let mut ttfb_started = Vec::new();
    for _ in 0..ttfb_n {
        if target > 0 {
            session.wait_refill(target, seen, &mut waits).await?;
        } else {
            tokio::time::sleep(SETTLE).await;
        }
        let mut options = TaskOptions::new(PROVIDER, "codex", &["--version"]);
        options.work_dir = Some("/local".into());
        let prepared = session.prepare(run, name, &options, true);
        let mut task = session.start(prepared).await?;
        let prestarted = session.prestarted(&task).await;
        let first = tokio::time::timeout(
            Duration::from_secs(120),
            task.first_byte.take().context("no first-byte receiver")?,
        )
        .await
        .context("codex --version printed nothing within 120 s")?
        .context("the stdout FIFO closed without output")?;
        series.ttfb.push(first - task.sent);
        let code = session.wait_exit(&task.id).await?;
        let id = task.id.clone();
        let stdout = std::mem::replace(&mut task.stdout, TimedFifo::noop());
        session.destroy(task).await?;
        let output = stdout
            .finish(Duration::from_secs(10))
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&output).trim().to_string();
        if code != 0 || !text.contains("codex") {
            bail!("codex --version exited {code} with output {text:?}");
        }
        series.codex_output = text;
        ttfb_started.push((id, prestarted));
    }

    // Events may trail the responses by a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (id, prestarted) in started {
        series.hits.add(session.event_kind(&id), prestarted);
    }
    for (id, prestarted) in ttfb_started {
        series.ttfb_hits.add(session.event_kind(&id), prestarted);
    }
    series.fill = fill;
    series.waits = waits;
    series.fingerprint_idle = session.fingerprint.lock().idle;
    session.close();
    Ok(series)
}

/// `n` StartTasks sent at once on one connection (as Nomad's client multiplexes them).
pub(super) async fn burst(run: &Run, name: &str, pool: Pool, n: usize) -> Result<Burst> {
    let mut session = Session::open(run, name, &run.openai, pool).await?;
    let fill = session.initial_fill(pool.target as usize).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let prepared: Vec<Prepared> = (0..n)
        .map(|_| session.prepare(run, name, &sleep_task(), false))
        .collect();
    let results = futures::future::join_all(prepared.into_iter().map(|p| session.start(p))).await;
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let mut running = Vec::new();
    for result in results {
        match result {
            Ok(task) => {
                latencies.push(task.latency);
                running.push(task);
            }
            Err(err) => failures.push(format!("{err:#}")),
        }
    }
    let mut prestarted = Vec::new();
    for task in &running {
        prestarted.push((task.id.clone(), session.prestarted(task).await));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut hits = Hits::default();
    for (id, pre) in prestarted {
        hits.add(session.event_kind(&id), pre);
    }
    session.destroy_all(running).await?;
    session.close();
    Ok(Burst {
        pool: pool.target,
        latencies,
        failures,
        hits,
        fill,
    })
}

/// `VmRSS`, `RssAnon` and `VmHWM` of a process, in kB.
fn memory_kb(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"), field("VmHWM:"))
}

pub(super) async fn rss(run: &Run, tasks: usize) -> Result<Rss> {
    let pool = Pool::on(polydev::config::pool::DEFAULT_TARGET, tasks as u32 + 32);
    let mut session = Session::open(run, "rss", &run.test, pool).await?;
    let fill = session.initial_fill(pool.target as usize).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_kb, _, _) = memory_kb(session.pid);

    let mut options = TaskOptions::new(PROVIDER, "sh", &["-c", "sleep 300"]);
    options.work_dir = Some("/local".into());
    let starts = futures::stream::iter((0..tasks).map(|_| {
        let prepared = session.prepare(run, "rss", &options, false);
        session.start(prepared)
    }))
    .buffer_unordered(4)
    .collect::<Vec<_>>()
    .await;
    let mut running = Vec::new();
    for start in starts {
        running.push(start?);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (loaded_kb, _, peak_kb) = memory_kb(session.pid);
    let pids = forwarders(&session.data_dir);
    let (mut forwarders_rss_kb, mut forwarders_anon_kb) = (0, 0);
    for (pid, _) in &pids {
        let (rss, anon, _) = memory_kb(*pid);
        forwarders_rss_kb += rss;
        forwarders_anon_kb += anon;
    }
    session.destroy_all(running).await?;
    session.close();
    Ok(Rss {
        idle_kb,
        loaded_kb,
        peak_kb,
        tasks,
        forwarders: pids.len(),
        forwarders_rss_kb,
        forwarders_anon_kb,
        fill,
    })
}
