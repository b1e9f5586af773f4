//! How many idle containers a pool wants: its demand estimate.
//!
//! The estimate is the **largest burst of claims seen lately**: the most claims that arrived
//! within any [`BURST_WINDOW`] (10 s) during the last `scale_down_after`. A pool that holds that
//! many idle containers serves the same burst again entirely warm. A steady trickle of claims
//! (one every few seconds, which the refill keeps up with) never counts more than one or two per
//! window, so it leaves the pool at its `target`; a burst of 20 StartTasks within a second or two
//! counts 20, and the pool grows towards 20 idle containers and stays there for
//! `scale_down_after` after the last claim of that size, so a second burst a minute later finds
//! a warm pool.
//!
//! Every claim counts, warm or not (a claim that found the pool empty is demand the pool did not
//! meet). The pool turns the estimate into a size in [`super::sizing`]: never below `target`,
//! never more containers than `max`.
//!
//! Invariants: memory is bounded by `cap` entries in each of the two queues ([`COUNT_CAP`] in
//! the pool: bursts beyond it are counted as that), and every operation is O(1) amortised.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Claims that arrive within this long of each other count as one burst.
pub const BURST_WINDOW: Duration = Duration::from_secs(10);

/// The largest burst a pool counts (about 64 KiB of timestamps); far above any `max` worth
/// having, so the `max` limit it reports says how many were really wanted.
pub const COUNT_CAP: usize = 4096;

/// Recent claims of one pool, and the peaks of the bursts they formed.
#[derive(Debug)]
pub struct DemandWindow {
    /// How long a burst's size is remembered (`scale_down_after`).
    memory: Duration,
    /// Counts above this are recorded as this.
    cap: usize,
    /// Times of the claims of the last [`BURST_WINDOW`], oldest first.
    recent: VecDeque<Instant>,
    /// Claims-per-window counts, each at the time it was reached, strictly decreasing from the
    /// front: the front is the largest count not yet forgotten (a sliding-window maximum).
    peaks: VecDeque<(Instant, usize)>,
}

impl DemandWindow {
    pub fn new(memory: Duration, cap: usize) -> Self {
        DemandWindow {
            memory,
            cap: cap.max(1),
            recent: VecDeque::new(),
            peaks: VecDeque::new(),
        }
    }

    /// A claim arrived at `now`.
    pub fn record(&mut self, now: Instant) {
        self.forget_before(now);
        if self.recent.len() == self.cap {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let count = self.recent.len();
        while self.peaks.back().is_some_and(|(_, c)| *c <= count) {
            self.peaks.pop_back();
        }
        self.peaks.push_back((now, count));
    }

    /// The largest number of claims within one [`BURST_WINDOW`] during the last `memory`.
    pub fn peak(&mut self, now: Instant) -> usize {
        self.forget_before(now);
        self.peaks.front().map_or(0, |(_, count)| *count)
    }

    fn forget_before(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= BURST_WINDOW)
        {
            self.recent.pop_front();
        }
        while self
            .peaks
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= self.memory)
        {
            self.peaks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    #[test]
    fn a_burst_is_remembered_for_the_memory_then_forgotten() {
        let start = Instant::now();
        let mut demand = DemandWindow::new(FIVE_MINUTES, 32);
        assert_eq!(demand.peak(start), 0);
        for i in 0..20 {
            demand.record(at(start, i * 50));
        }
        assert_eq!(demand.peak(at(start, 1_000)), 20);
        // A minute later, nothing new: the burst still sizes the pool.
        assert_eq!(demand.peak(at(start, 60_000)), 20);
        // Five minutes after its last claim, it is forgotten.
        assert_eq!(demand.peak(at(start, 950 + 300_000)), 0);
    }

    #[test]
    fn a_steady_trickle_counts_as_one_or_two_not_as_its_total() {
        let start = Instant::now();
        let mut demand = DemandWindow::new(FIVE_MINUTES, 32);
        // One claim every 6 s for five minutes: 50 claims, never more than 2 in 10 s.
        for i in 0..50 {
            demand.record(at(start, i * 6_000));
        }
        assert_eq!(demand.peak(at(start, 300_000)), 2);
    }

    #[test]
    fn a_smaller_later_burst_takes_over_when_the_larger_is_forgotten() {
        let start = Instant::now();
        let mut demand = DemandWindow::new(Duration::from_secs(60), 32);
        for i in 0..12 {
            demand.record(at(start, i * 10));
        }
        for i in 0..5 {
            demand.record(at(start, 30_000 + i * 10));
        }
        assert_eq!(demand.peak(at(start, 59_000)), 12);
        assert_eq!(demand.peak(at(start, 61_000)), 5);
        assert_eq!(demand.peak(at(start, 91_000)), 0);
    }

    #[test]
    fn counts_and_memory_are_capped() {
        let start = Instant::now();
        let mut demand = DemandWindow::new(FIVE_MINUTES, 4);
        for i in 0..1_000 {
            demand.record(at(start, i));
        }
        assert_eq!(demand.peak(at(start, 1_000)), 4);
        assert!(demand.recent.len() <= 4 && demand.peaks.len() <= 4);
    }
}
