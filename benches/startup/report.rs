//! The benchmark's report: the markdown table with targets and verdicts, the notes that say how
//! each number was obtained, and the sections of the SVG chart.

use super::*;

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

fn fill_text(fill: &Fill) -> String {
    match (fill.seen, fill.reached) {
        (true, true) => format!("pool filled in {:.1} s", fill.took.as_secs_f64()),
        (true, false) => format!(
            "pool seen but NOT filled after {:.0} s",
            fill.took.as_secs_f64()
        ),
        (false, _) => format!(
            "no pool container seen in {:.0} s (pool not in this build?)",
            fill.took.as_secs_f64()
        ),
    }
}

impl Report {
    pub(super) fn table(&self) -> String {
        let mut rows: Vec<[String; 8]> = Vec::new();
        let mut series =
            |name: &str, samples: &[Duration], target: &str, verdict: &str| match Summary::of(
                samples,
            ) {
                Some(s) => rows.push([
                    name.to_string(),
                    s.n.to_string(),
                    ms(s.p50),
                    ms(s.p90),
                    ms(s.p99),
                    ms(s.max),
                    target.to_string(),
                    verdict.to_string(),
                ]),
                None => rows.push([
                    name.to_string(),
                    "0".into(),
                    "—".into(),
                    "—".into(),
                    "—".into(),
                    "—".into(),
                    target.to_string(),
                    "no samples".into(),
                ]),
            };
        let f = &self.floors;
        series(
            "Floor: docker create+start (openai image)",
            &f.create_start,
            "",
            "",
        );
        series(
            "Floor: docker exec `echo` → first output",
            &f.exec_first,
            "",
            "",
        );
        series("Floor: docker exec `echo` → exit", &f.exec_exit, "", "");
        series(
            "Floor: claim through Docker = update + send_launch_spec",
            &f.claim,
            "",
            "",
        );
        series("  … of which Docker's update", &f.update, "", "");
        series(
            "  … of which send_launch_spec (attach + write)",
            &f.launch,
            "",
            "",
        );
        series(
            "polydev's limits write (cgroup files; Docker's record follows)",
            &f.limits_write,
            "",
            "",
        );
        let cold = Summary::of(&self.cold.latencies);
        let warm = Summary::of(&self.warm.latencies);
        series("StartTask cold (pool off)", &self.cold.latencies, "", "");
        let warm_ok = warm.is_some_and(|w| w.p50 <= Duration::from_millis(25));
        series(
            &format!("StartTask warm (pool target {})", self.warm_target),
            &self.warm.latencies,
            "p50 ≤ 25 ms",
            verdict(warm_ok),
        );
        series(
            "StartTask warm, pool hits only",
            &self.warm.hit_latencies,
            "",
            "",
        );
        let b20 = Summary::of(&self.burst20.latencies);
        let b20_ok = b20.is_some_and(|b| b.p99 <= Duration::from_millis(250))
            && self.burst20.failures.is_empty();
        series(
            "Burst 20 concurrent, pool of 20",
            &self.burst20.latencies,
            "p99 ≤ 250 ms",
            verdict(b20_ok),
        );
        series(
            "Burst 20 concurrent, pool of 5",
            &self.burst5.latencies,
            "",
            "",
        );
        series("TTFB `codex --version`, cold", &self.cold.ttfb, "", "");
        series("TTFB `codex --version`, warm", &self.warm.ttfb, "", "");
        let speedup = match (cold, warm) {
            (Some(c), Some(w)) if !w.p50.is_zero() => c.p50.as_secs_f64() / w.p50.as_secs_f64(),
            _ => 0.0,
        };
        let single = |name: &str, value: String, target: &str, verdict: &str| -> [String; 8] {
            [
                name.to_string(),
                String::new(),
                value,
                String::new(),
                String::new(),
                String::new(),
                target.to_string(),
                verdict.to_string(),
            ]
        };
        rows.push(single(
            "Speed-up: cold p50 / warm p50",
            format!("{speedup:.1}×"),
            "≥ 8×",
            verdict(speedup >= 8.0),
        ));
        let r = &self.rss;
        rows.push(single(
            "Plugin VmRSS, idle (configured, pool filled)",
            mb(r.idle_kb),
            "≤ 20 MB",
            verdict(r.idle_kb <= 20 * 1024),
        ));
        rows.push(single(
            &format!("Plugin VmRSS, {} tasks running", r.tasks),
            mb(r.loaded_kb),
            "≤ 60 MB",
            verdict(r.loaded_kb <= 60 * 1024),
        ));
        rows.push(single(
            "Plugin VmHWM (peak RSS) over the RSS phase",
            mb(r.peak_kb),
            "",
            "",
        ));
        rows.push(single(
            &format!("Σ VmRSS of {} `forward-logs` processes", r.forwarders),
            mb(r.forwarders_rss_kb),
            "",
            "",
        ));
        rows.push(single(
            &format!("Σ RssAnon of {} `forward-logs` processes", r.forwarders),
            mb(r.forwarders_anon_kb),
            "",
            "",
        ));

        let mut out = String::new();
        out.push_str(&format!(
            "\n## polydev startup benchmark — commit {}, credential mode {}, docker {}, {} CPUs, run {:.0} s\n\n",
            self.env.commit,
            super::credential_mode(),
            self.env.docker_version,
            self.env.cpus,
            self.took.as_secs_f64()
        ));
        out.push_str(
            "| Measurement | n | p50 ms | p90 ms | p99 ms | max ms | Target | Verdict |\n",
        );
        out.push_str("|---|--:|--:|--:|--:|--:|---|---|\n");
        for row in rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out.push('\n');
        let notes = self.notes();
        for note in notes {
            out.push_str(&format!("- {note}\n"));
        }
        out
    }

    fn notes(&self) -> Vec<String> {
        let w = &self.warm;
        let waits = &w.waits;
        let wait_summary = Summary::of(&waits.filled)
            .map(|s| format!("median {} ms, max {} ms", ms(s.p50), ms(s.max)))
            .unwrap_or_else(|| "none".into());
        vec![
            format!(
                "Image: {OPENAI_IMAGE} (`codex --version` printed {:?}); tasks `sh -c 'sleep 30'`, 128 MB, 100 CPU shares; 2 discarded warm-up starts per series; p99 is nearest-rank (= max for n < 100).",
                w.codex_output
            ),
            format!("Cold series: {}.", self.cold.hits.text()),
            format!(
                "Warm series: {}; {}; fingerprint `{IDLE_ATTR}` last = {}.",
                w.hits.text(),
                w.fill.as_ref().map(fill_text).unwrap_or_default(),
                w.fingerprint_idle
                    .map_or("never reported".to_string(), |v| v.to_string())
            ),
            format!(
                "Warm refill waits before each start: {} until Docker showed {} idle containers ({wait_summary}), {} timed out (30 s), {} plain {} s settles (no pool seen); every sequential start, cold or warm, follows ≥ {} s of quiet.",
                waits.filled.len(),
                self.warm_target,
                waits.timed_out,
                waits.fallback,
                SETTLE.as_secs(),
                SETTLE.as_secs()
            ),
            format!(
                "TTFB of `codex --version` (StartTask sent → first stdout byte in the FIFO): cold {}, {}; warm {}, {}.",
                spread(&self.cold.ttfb),
                self.cold.ttfb_hits.text(),
                spread(&w.ttfb),
                w.ttfb_hits.text()
            ),
            format!(
                "Burst, pool of 20: {}; {}; {} failed{}.",
                self.burst20.hits.text(),
                fill_text(&self.burst20.fill),
                self.burst20.failures.len(),
                first_failure(&self.burst20.failures)
            ),
            format!(
                "Burst, pool of {}: {}; {}; {} failed{}.",
                self.burst5.pool,
                self.burst5.hits.text(),
                fill_text(&self.burst5.fill),
                self.burst5.failures.len(),
                first_failure(&self.burst5.failures)
            ),
            format!(
                "RSS phase: test image, pool target {}; {}; {} forwarders found for {} tasks. VmRSS of forwarders counts the shared binary pages once per process; RssAnon is their private memory.",
                polydev::config::pool::DEFAULT_TARGET,
                fill_text(&self.rss.fill),
                self.rss.forwarders,
                self.rss.tasks
            ),
            format!(
                "Claim floor: after Docker's update with polydev's body (no quota = every host CPU) a claimed container's HostConfig.NanoCpus is {:?}{}.",
                self.floors.nano_cpus_after_claim,
                if self.floors.nano_cpus_after_claim == "100000000" {
                    " — the idle 0.1-CPU quota SURVIVES the claim (the engine ignores 0 on update), so a warm task would stay throttled to 0.1 CPU unless the pool sets an explicit quota"
                } else {
                    " (the idle 0.1-CPU quota was lifted)"
                }
            ),
            format!(
                "Cleanup: the harness removed {} leftover containers (idle pool containers) after the sessions; plugins and forwarders were stopped.",
                self.leftovers
            ),
        ]
    }

    pub(super) fn svg(&self) -> String {
        let row = |label: &str, samples: &[Duration]| {
            Summary::of(samples).map(|s| svg::Row {
                label: label.to_string(),
                p50: s.p50,
                p99: s.p99,
                n: s.n,
            })
        };
        let f = &self.floors;
        let sections = vec![
            svg::Section {
                title: "Floors: Docker's API, and polydev's limits write".into(),
                rows: [
                    row("create + start", &f.create_start),
                    row("exec echo → first output", &f.exec_first),
                    row("claim via Docker: update + launch spec", &f.claim),
                    row("polydev's limits write (cgroup files)", &f.limits_write),
                ]
                .into_iter()
                .flatten()
                .collect(),
            },
            svg::Section {
                title: "StartTask, sequential (request → task running)".into(),
                rows: [
                    row("cold (pool off)", &self.cold.latencies),
                    row(
                        &format!(
                            "warm (target {}, {}/{} hits)",
                            self.warm_target, self.warm.hits.prestarted, self.warm.hits.n
                        ),
                        &self.warm.latencies,
                    ),
                ]
                .into_iter()
                .flatten()
                .collect(),
            },
            svg::Section {
                title: "StartTask, 20 at once".into(),
                rows: [
                    row(
                        &format!(
                            "pool of 20 ({}/{} hits)",
                            self.burst20.hits.prestarted, self.burst20.hits.n
                        ),
                        &self.burst20.latencies,
                    ),
                    row(
                        &format!(
                            "pool of 5 ({}/{} hits)",
                            self.burst5.hits.prestarted, self.burst5.hits.n
                        ),
                        &self.burst5.latencies,
                    ),
                ]
                .into_iter()
                .flatten()
                .collect(),
            },
            svg::Section {
                title: "Time to first byte of `codex --version`".into(),
                rows: [row("cold", &self.cold.ttfb), row("warm", &self.warm.ttfb)]
                    .into_iter()
                    .flatten()
                    .collect(),
            },
        ];
        let subtitle = vec![
            format!(
                "commit {} · docker {} · {} CPUs · image {} · one run, real Docker, real plugin binary over its unix socket",
                self.env.commit, self.env.docker_version, self.env.cpus, OPENAI_IMAGE
            ),
            format!(
                "plugin RSS idle {} · with {} tasks {} · Σ RSS of {} forward-logs {} (private {})",
                mb(self.rss.idle_kb),
                self.rss.tasks,
                mb(self.rss.loaded_kb),
                self.rss.forwarders,
                mb(self.rss.forwarders_rss_kb),
                mb(self.rss.forwarders_anon_kb)
            ),
            format!(
                "pool observed in this build: {} · warm series: {}/{} starts on a pre-started container, {} \"claimed warm container\" events",
                if self.warm.fill.as_ref().is_some_and(|f| f.seen) {
                    "yes"
                } else {
                    "NO — warm = cold here"
                },
                self.warm.hits.prestarted,
                self.warm.hits.n,
                self.warm.hits.events_warm
            ),
        ];
        svg::render(
            "polydev StartTask latency: cold vs warm pool",
            &subtitle,
            &sections,
            &[
                svg::Target {
                    at: Duration::from_millis(25),
                    label: "warm p50 target 25 ms".into(),
                },
                svg::Target {
                    at: Duration::from_millis(250),
                    label: "burst p99 target 250 ms".into(),
                },
            ],
        )
    }
}

/// "median X ms, range A–B ms".
fn spread(samples: &[Duration]) -> String {
    Summary::of(samples)
        .map(|s| {
            format!(
                "median {} ms, range {}–{} ms",
                ms(s.p50),
                ms(s.min),
                ms(s.max)
            )
        })
        .unwrap_or_else(|| "no samples".into())
}

fn first_failure(failures: &[String]) -> String {
    failures
        .first()
        .map(|f| format!(" (first: {f})"))
        .unwrap_or_default()
}
