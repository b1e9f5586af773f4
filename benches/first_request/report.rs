//! The benchmark's printed tables and its two charts: time to the first model request and to the
//! reply (bars, log scale, targets dashed), and the pool's idle count over the bursts (a line).

use std::fmt::Write;
use std::time::Duration;

use super::burst::Burst;
use super::stats::{Summary, ms};
use super::svg::{Row, Section, Target};
use super::{CliSeries, runs::Timing};

pub struct Report {
    pub series: Vec<CliSeries>,
    pub bursts: Vec<Burst>,
    pub timeline: Vec<(Duration, i64)>,
    pub marks: Vec<(Duration, String)>,
    pub burst_cli: &'static str,
    pub took: Duration,
}

/// The issue's targets: StartTask → first model request, warm, p50; and the ratio against the
/// baseline.
fn target(command: &str) -> (Duration, f64) {
    match command {
        "codex" => (Duration::from_millis(200), 3.0),
        "claude" => (Duration::from_millis(550), 2.0),
        _ => (Duration::from_millis(900), 3.0),
    }
}

fn summary(samples: impl Iterator<Item = Duration>) -> Summary {
    Summary::of(&samples.collect::<Vec<_>>()).unwrap_or_default()
}

fn first_request(runs: &[Timing]) -> Summary {
    summary(runs.iter().map(|t| t.first_request))
}

fn reply(runs: &[Timing]) -> Summary {
    summary(runs.iter().map(|t| t.reply_on_stdout))
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n## Time to the first model request (p50 / p90 ms; n per cell in brackets)\n"
        );
        let _ = writeln!(
            out,
            "| CLI | start | StartTask → first request | → reply on stdout | StartTask returned | warm | first endpoint |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for s in &self.series {
            for (mode, runs) in [
                ("polydev warm", &s.warm),
                ("polydev cold", &s.cold),
                ("docker run (baseline)", &s.baseline),
            ] {
                let (fr, rp) = (first_request(runs), reply(runs));
                let started = summary(runs.iter().filter_map(|t| t.started));
                let warm = runs.iter().filter(|t| t.warm).count();
                let _ = writeln!(
                    out,
                    "| {} {} | {mode} | {} / {} ({}) | {} / {} | {} | {warm}/{} | {} |",
                    s.cli.command,
                    s.version,
                    ms(fr.p50),
                    ms(fr.p90),
                    fr.n,
                    ms(rp.p50),
                    ms(rp.p90),
                    if started.n > 0 {
                        format!("{} / {}", ms(started.p50), ms(started.p90))
                    } else {
                        "–".into()
                    },
                    runs.len(),
                    runs.first().map(|t| t.first_path.as_str()).unwrap_or("–"),
                );
            }
        }
        let _ = writeln!(out, "\n## Against the targets (warm p50)\n");
        let _ = writeln!(
            out,
            "| CLI | warm p50 | target | baseline p50 | ratio | target ratio |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for s in &self.series {
            let (at, ratio_target) = target(s.cli.command);
            let (warm, base) = (first_request(&s.warm).p50, first_request(&s.baseline).p50);
            let ratio = base.as_secs_f64() / warm.as_secs_f64().max(1e-6);
            let _ = writeln!(
                out,
                "| {} | {} ms | ≤ {} ms {} | {} ms | {ratio:.1}× | ≥ {ratio_target}× {} |",
                s.cli.command,
                ms(warm),
                at.as_millis(),
                if warm <= at { "met" } else { "missed" },
                ms(base),
                if ratio >= ratio_target {
                    "met"
                } else {
                    "missed"
                },
            );
        }
        let _ = writeln!(
            out,
            "\n## Bursts of `{} --version`, pool target 2 (ms)\n",
            self.burst_cli
        );
        let _ = writeln!(
            out,
            "| burst | n | StartTask p50 | p90 | p99 | max | → exit p50 | p90 | max | warm |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
        for b in &self.bursts {
            let s = summary(b.starts.iter().copied());
            let done = summary(b.exited.iter().copied());
            let warm = if b.label.starts_with("docker") {
                "–".to_string()
            } else {
                format!(
                    "{} ({:.0} %)",
                    b.warm,
                    100.0 * b.warm as f64 / b.starts.len().max(1) as f64
                )
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {warm} |",
                b.label,
                s.n,
                ms(s.p50),
                ms(s.p90),
                ms(s.p99),
                ms(s.max),
                ms(done.p50),
                ms(done.p90),
                ms(done.max)
            );
        }
        let peak = self
            .timeline
            .iter()
            .map(|(_, idle)| *idle)
            .max()
            .unwrap_or(0);
        let last = self.timeline.last().map(|(_, idle)| *idle).unwrap_or(0);
        let _ = writeln!(
            out,
            "\npool idle count: peak {peak}, at the end {last} ({} samples)",
            self.timeline.len()
        );
        let _ = writeln!(out, "benchmark took {:.0} s", self.took.as_secs_f64());
        out
    }

    pub fn chart(&self) -> String {
        let mut sections = Vec::new();
        let row = |label: String, s: Summary| Row {
            label,
            p50: s.p50,
            p99: s.p99,
            n: s.n,
        };
        for (title, pick) in [
            (
                "StartTask → the CLI's first model request",
                first_request as fn(&[Timing]) -> Summary,
            ),
            ("StartTask → the reply on the task's stdout", reply),
        ] {
            let mut rows = Vec::new();
            for s in &self.series {
                rows.push(row(
                    format!("{} warm (polydev)", s.cli.command),
                    pick(&s.warm),
                ));
                rows.push(row(
                    format!("{} cold (polydev)", s.cli.command),
                    pick(&s.cold),
                ));
                rows.push(row(
                    format!("{} docker run (baseline)", s.cli.command),
                    pick(&s.baseline),
                ));
            }
            sections.push(Section {
                title: title.into(),
                rows,
            });
        }
        if !self.bursts.is_empty() {
            sections.push(Section {
                title: format!(
                    "Bursts of {} --version, pool target 2: StartTask",
                    self.burst_cli
                ),
                rows: self
                    .bursts
                    .iter()
                    .map(|b| row(b.label.clone(), summary(b.starts.iter().copied())))
                    .collect(),
            });
        }
        let targets: Vec<Target> = self
            .series
            .iter()
            .map(|s| Target {
                at: target(s.cli.command).0,
                label: format!("{} target", s.cli.command),
            })
            .collect();
        let versions: Vec<String> = self
            .series
            .iter()
            .map(|s| format!("{} {}", s.cli.command, s.version))
            .collect();
        super::svg::render(
            "What a user waits for: polydev against docker run",
            &[
                format!("{}; stand-in HTTPS APIs on loopback; one run, this machine", versions.join(", ")),
                "baseline: docker run of Debian's Node 20 + the npm package, key in env, host network".into(),
            ],
            &sections,
            &targets,
        )
    }

    /// The pool's idle count over time, with the bursts marked.
    pub fn pool_chart(&self) -> String {
        const W: f64 = 1000.0;
        const H: f64 = 320.0;
        const LEFT: f64 = 60.0;
        const TOP: f64 = 50.0;
        const PLOT_W: f64 = 900.0;
        const PLOT_H: f64 = 220.0;
        let end = self
            .timeline
            .last()
            .map(|(t, _)| t.as_secs_f64())
            .unwrap_or(1.0)
            .max(1.0);
        let peak = self
            .timeline
            .iter()
            .map(|(_, i)| *i)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let x = |t: f64| LEFT + t / end * PLOT_W;
        let y = |idle: f64| TOP + PLOT_H - idle / peak * PLOT_H;
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            out,
            r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
        );
        let _ = writeln!(
            out,
            r##"<text x="16" y="24" font-size="16" font-weight="bold" fill="#222">Idle warm {} containers during the bursts (target 2)</text>"##,
            self.burst_cli
        );
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="#999"/>"##,
            TOP + PLOT_H,
            LEFT + PLOT_W,
            TOP + PLOT_H
        );
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="#999"/>"##,
            TOP + PLOT_H
        );
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#666">{peak:.0}</text>"##,
            LEFT - 6.0,
            TOP + 4.0
        );
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#666">0</text>"##,
            LEFT - 6.0,
            TOP + PLOT_H + 4.0
        );
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#666">{end:.0} s</text>"##,
            LEFT + PLOT_W,
            TOP + PLOT_H + 18.0
        );
        for (at, label) in &self.marks {
            let mx = x(at.as_secs_f64());
            let _ = writeln!(
                out,
                r##"<line x1="{mx:.1}" y1="{TOP}" x2="{mx:.1}" y2="{}" stroke="#d6604d" stroke-dasharray="4,3"/>"##,
                TOP + PLOT_H
            );
            let _ = writeln!(
                out,
                r##"<text x="{mx:.1}" y="{}" fill="#d6604d" font-size="10" transform="rotate(-30 {mx:.1} {})">{}</text>"##,
                TOP - 4.0,
                TOP - 4.0,
                label.replace('&', "&amp;").replace('<', "&lt;")
            );
        }
        let points: Vec<String> = self
            .timeline
            .iter()
            .map(|(t, idle)| format!("{:.1},{:.1}", x(t.as_secs_f64()), y(*idle as f64)))
            .collect();
        let _ = writeln!(
            out,
            r##"<polyline fill="none" stroke="#2166ac" stroke-width="2" points="{}"/>"##,
            points.join(" ")
        );
        let _ = writeln!(
            out,
            r##"<text x="{LEFT}" y="{}" fill="#333">idle containers, as reported to Nomad every 250 ms; dashed: a burst begins</text>"##,
            H - 14.0
        );
        out.push_str("</svg>\n");
        out
    }
}
