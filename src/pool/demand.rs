//! How many idle containers a pool wants: its demand estimate.
//!
//! The estimate is the **largest burst that ran the pool dry lately**: when a claim finds the pool
//! empty or takes its last idle container — claims arrive faster than the pool refills — the
//! claims of the last [`BURST_WINDOW`] (10 s), warm and cold alike, are that burst's size, and the
//! largest such size of the last `scale_down_after` is the estimate. A pool that holds that many
//! idle containers serves the same burst again entirely warm.
//!
//! - A steady stream of claims that the refill keeps up with never runs the pool dry, however
//!   many claims it adds up to: the pool stays at its `target`.
//! - A burst of 20 StartTasks within a second or two on a pool of 2 runs it dry at its second
//!   claim and counts 20: the pool grows towards 20 idle containers.
//! - A second burst of 20 a minute later takes all 20 and runs the pool dry again (at its last
//!   claim), so the size is renewed while bursts keep coming, and forgotten `scale_down_after`
//!   after the last one.
//!
//! The pool turns the estimate into a size in [`super::sizing`]: never below `target`, never more
//! containers than `max`.
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

    /// A claim arrived at `now`; `ran_dry`: it found the pool empty or took its last idle
    /// container, which makes the claims of the last [`BURST_WINDOW`] a burst to remember.
    pub fn record(&mut self, now: Instant, ran_dry: bool) {
        self.forget_before(now);
        if self.recent.len() == self.cap {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        if !ran_dry {
            return;
        }
        let count = self.recent.len();
        while self.peaks.back().is_some_and(|(_, c)| *c <= count) {
            self.peaks.pop_back();
        }
        self.peaks.push_back((now, count));
    }

    /// The largest burst (claims within one [`BURST_WINDOW`]) that ran the pool dry during the
    /// last `memory`; 0 when none did.
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
        // A pool of 2: the second claim takes the last idle container, the rest find none.
        for i in 0..20 {
            demand.record(at(start, i * 50), i >= 1);
        }
        assert_eq!(demand.peak(at(start, 1_000)), 20);
        // A minute later, nothing new: the burst still sizes the pool.
        assert_eq!(demand.peak(at(start, 60_000)), 20);
        // Five minutes after its last claim, it is forgotten.
        assert_eq!(demand.peak(at(start, 950 + 300_000)), 0);
    }

    #[test]
    fn claims_the_refill_keeps_up_with_never_grow_the_pool() {
        let start = Instant::now();
        let mut demand = DemandWindow::new(FIVE_MINUTES, 32);
        // Three claims a second for a minute, every one of them warm with more left.
        for i in 0..180 {
            demand.record(at(start, i * 333), false);
        }
        assert_eq!(demand.peak(at(start, 60_000)), 0);
        // Once the refill falls behind, the claims of the last 10 s are the burst.
        demand.record(at(start, 60_100), true);
        assert_eq!(
            demand.peak(at(start, 60_200)),
            30,
            "29 in (50.1 s, 60.1 s], and this one"
        );
    }

    #[test]
    fn bursts_served_warm_renew_the_size_when_they_empty_the_pool() {
        let start = Instant::now();
        let mut demand = DemandWindow::new(FIVE_MINUTES, 64);
        for minute in 0..8u64 {
            // 20 claims, the last taking the last of 20 idle containers (after the first burst).
            for i in 0..20 {
                demand.record(at(start, minute * 60_000 + i * 50), i == 19);
            }
        }
        assert_eq!(demand.peak(at(start, 8 * 60_000)), 20);
        assert_eq!(demand.peak(at(start, 7 * 60_000 + 950 + 300_000)), 0);
    }

    #[test]
    fn a_smaller_later_burst_takes_over_when_the_larger_is_forgotten() {
        let start = Instant::now();
        let mut demand = DemandWindow::new(Duration::from_secs(60), 32);
        for i in 0..12 {
            demand.record(at(start, i * 10), true);
        }
        for i in 0..5 {
            demand.record(at(start, 30_000 + i * 10), true);
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
            demand.record(at(start, i), true);
        }
        assert_eq!(demand.peak(at(start, 1_000)), 4);
        assert!(demand.recent.len() <= 4 && demand.peaks.len() <= 4);
    }
}
