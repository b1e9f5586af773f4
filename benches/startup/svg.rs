//! A hand-written SVG bar chart: one row per series, a dark p50 bar over a light p99 bar, on a
//! logarithmic millisecond axis, with dashed target lines.

use std::fmt::Write;
use std::time::Duration;

/// One bar row.
pub struct Row {
    pub label: String,
    pub p50: Duration,
    pub p99: Duration,
    pub n: usize,
}

/// A titled group of rows.
pub struct Section {
    pub title: String,
    pub rows: Vec<Row>,
}

/// A vertical dashed line at a target value.
pub struct Target {
    pub at: Duration,
    pub label: String,
}

const WIDTH: f64 = 1000.0;
const LABEL_W: f64 = 290.0;
const PLOT_W: f64 = 540.0;
const ROW_H: f64 = 24.0;
const SECTION_H: f64 = 26.0;

pub fn render(
    title: &str,
    subtitle: &[String],
    sections: &[Section],
    targets: &[Target],
) -> String {
    let all = sections
        .iter()
        .flat_map(|s| s.rows.iter())
        .flat_map(|r| [r.p50, r.p99])
        .chain(targets.iter().map(|t| t.at))
        .map(|d| d.as_secs_f64() * 1e3)
        .filter(|v| *v > 0.0);
    let (lo, hi) = all.fold((f64::MAX, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo_exp = if lo == f64::MAX {
        0
    } else {
        lo.log10().floor() as i32
    };
    let hi_exp = (hi.max(10f64.powi(lo_exp + 1)).log10().ceil() as i32).max(lo_exp + 1);
    let x = |d: Duration| -> f64 {
        let ms = (d.as_secs_f64() * 1e3).max(10f64.powi(lo_exp));
        LABEL_W + (ms.log10() - f64::from(lo_exp)) / f64::from(hi_exp - lo_exp) * PLOT_W
    };
    let rows: usize = sections.iter().map(|s| s.rows.len()).sum();
    let plot_h = sections.len() as f64 * SECTION_H + rows as f64 * ROW_H;
    let top = 48.0 + 15.0 * subtitle.len() as f64 + 24.0;
    let height = top + plot_h + 56.0;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        out,
        r##"<text x="16" y="24" font-size="16" font-weight="bold" fill="#222">{}</text>"##,
        esc(title)
    );
    for (i, line) in subtitle.iter().enumerate() {
        let _ = writeln!(
            out,
            r##"<text x="16" y="{}" fill="#555">{}</text>"##,
            42 + i * 15,
            esc(line)
        );
    }

    // Grid: decades and 2x, 5x within them.
    let bottom = top + plot_h;
    for exp in lo_exp..=hi_exp {
        for mult in [1.0, 2.0, 5.0] {
            let ms = mult * 10f64.powi(exp);
            if exp == hi_exp && mult > 1.0 {
                continue;
            }
            let gx = x(Duration::from_secs_f64(ms / 1e3));
            let (stroke, width) = if mult == 1.0 {
                ("#bbb", 1.0)
            } else {
                ("#e4e4e4", 0.8)
            };
            let _ = writeln!(
                out,
                r#"<line x1="{gx:.1}" y1="{top}" x2="{gx:.1}" y2="{bottom}" stroke="{stroke}" stroke-width="{width}"/>"#
            );
            let label = if ms >= 1000.0 {
                format!("{} s", ms / 1000.0)
            } else if ms >= 1.0 {
                format!("{ms} ms")
            } else {
                format!("{} µs", ms * 1000.0)
            };
            let _ = writeln!(
                out,
                r##"<text x="{gx:.1}" y="{}" text-anchor="middle" fill="#666" font-size="10">{}</text>"##,
                bottom + 14.0,
                esc(&label)
            );
        }
    }

    let mut y = top;
    for section in sections {
        let _ = writeln!(
            out,
            r##"<text x="16" y="{}" font-weight="bold" fill="#333">{}</text>"##,
            y + 18.0,
            esc(&section.title)
        );
        y += SECTION_H;
        for row in &section.rows {
            let x0 = LABEL_W;
            let (x50, x99) = (x(row.p50), x(row.p99));
            let _ = writeln!(
                out,
                r##"<text x="{}" y="{}" text-anchor="end" fill="#222">{}</text>"##,
                LABEL_W - 8.0,
                y + 16.0,
                esc(&row.label)
            );
            let _ = writeln!(
                out,
                r##"<rect x="{x0}" y="{}" width="{:.1}" height="{}" fill="#9ecae1"/>"##,
                y + 4.0,
                (x99 - x0).max(1.0),
                ROW_H - 8.0
            );
            let _ = writeln!(
                out,
                r##"<rect x="{x0}" y="{}" width="{:.1}" height="{}" fill="#2166ac"/>"##,
                y + 8.0,
                (x50 - x0).max(1.0),
                ROW_H - 16.0
            );
            let _ = writeln!(
                out,
                r##"<text x="{:.1}" y="{}" fill="#222" font-size="11">p50 {} · p99 {} ms  (n={})</text>"##,
                x99.max(x50) + 6.0,
                y + 16.0,
                super::stats::ms(row.p50),
                super::stats::ms(row.p99),
                row.n
            );
            y += ROW_H;
        }
    }

    for target in targets {
        let tx = x(target.at);
        let _ = writeln!(
            out,
            r##"<line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{bottom}" stroke="#d6604d" stroke-width="1.5" stroke-dasharray="5,4"/>"##,
            top - 4.0
        );
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{}" fill="#d6604d" font-size="10" text-anchor="middle">{}</text>"##,
            tx,
            top - 8.0,
            esc(&target.label)
        );
    }

    let legend_y = bottom + 40.0;
    let _ = writeln!(
        out,
        r##"<rect x="{LABEL_W}" y="{}" width="24" height="8" fill="#2166ac"/><text x="{}" y="{}" fill="#333">p50</text>"##,
        legend_y - 8.0,
        LABEL_W + 30.0,
        legend_y
    );
    let _ = writeln!(
        out,
        r##"<rect x="{}" y="{}" width="24" height="12" fill="#9ecae1"/><text x="{}" y="{}" fill="#333">p99 (nearest rank; = max when n &lt; 100)</text>"##,
        LABEL_W + 70.0,
        legend_y - 10.0,
        LABEL_W + 100.0,
        legend_y
    );
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" fill="#333">log scale</text>"##,
        LABEL_W + PLOT_W - 40.0,
        legend_y
    );
    out.push_str("</svg>\n");
    out
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
