//! Order statistics of latency samples (nearest-rank percentiles, no interpolation).

use std::time::Duration;

/// Summary of one series of samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub n: usize,
    pub min: Duration,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    /// `None` for an empty series.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort();
        Some(Summary {
            n: sorted.len(),
            min: sorted[0],
            p50: rank(&sorted, 50.0),
            p90: rank(&sorted, 90.0),
            p99: rank(&sorted, 99.0),
            max: sorted[sorted.len() - 1],
        })
    }
}

/// Nearest-rank percentile of a sorted, non-empty slice: the smallest sample with at least `p`%
/// of the samples at or below it. With 50 samples p99 is the maximum; that is stated, not hidden.
fn rank(sorted: &[Duration], p: f64) -> Duration {
    let index = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[index.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with a precision that suits the magnitude.
pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}
