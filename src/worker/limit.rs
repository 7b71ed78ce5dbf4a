//! An adaptive limit on the blocking pool's jobs in flight, in the spirit
//! of Netflix's `concurrency-limits` gradient limiter: the limit follows
//! how long the jobs take. When they take longer than they used to (a
//! slow dependency: a database that slows down), the limit falls, so
//! fewer jobs are admitted and fewer pile up on the dependency; when they
//! are quick again, it grows back.
//!
//! Each finished job's run time is a sample. Two moving averages follow
//! them: a short one (the last few jobs) and a long one (hundreds of
//! jobs), which stands for the run time without the slowdown. Each
//! sample, the limit becomes `limit x long / short` (the gradient, held
//! between 0.5 and 1: it only shrinks the limit, and at most by half a
//! step) plus a queue allowance of `sqrt(limit)` (so it can grow while the
//! gradient is 1), smoothed, and bounded by `min` and `max`. A sustained
//! slowdown lowers the limit until the long average has caught up with
//! it; the allowance then grows it back slowly.
//!
//! The limiter is fed times, never reads a clock: its tests are
//! deterministic. The pool keeps one under its admission lock
//! (`super::pool`).

/// The limiter's state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Gradient {
    /// The limit now (fractional: it moves by small steps).
    limit: f64,
    /// Bounds of the limit.
    min: f64,
    max: f64,
    /// The short and long moving averages of the run time, µs (0: none
    /// yet).
    short_us: f64,
    long_us: f64,
}

/// Weight of a sample in the short average.
const SHORT: f64 = 0.2;
/// Weight of a sample in the long average.
const LONG: f64 = 0.005;
/// Weight of a new limit against the old one.
const SMOOTHING: f64 = 0.2;

impl Gradient {
    /// A limit between `min` (at least 1) and `max` that starts at `max`.
    pub(crate) fn new(min: usize, max: usize) -> Gradient {
        let max = max.max(1) as f64;
        Gradient { limit: max, min: (min.max(1) as f64).min(max), max, short_us: 0.0, long_us: 0.0 }
    }

    /// A job ran for `run_us` microseconds. Returns the limit.
    pub(crate) fn sample(&mut self, run_us: u64) -> usize {
        let run = run_us.max(1) as f64;
        if self.long_us == 0.0 {
            self.short_us = run;
            self.long_us = run;
        } else {
            self.short_us += (run - self.short_us) * SHORT;
            self.long_us += (run - self.long_us) * LONG;
        }
        let gradient = (self.long_us / self.short_us).clamp(0.5, 1.0);
        let next = self.limit * gradient + self.limit.sqrt();
        self.limit = (self.limit * (1.0 - SMOOTHING) + next * SMOOTHING).clamp(self.min, self.max);
        self.limit()
    }

    /// The limit now: jobs in flight (running or queued) admitted.
    pub(crate) fn limit(&self) -> usize {
        self.limit as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_work_keeps_the_limit_at_its_maximum() {
        let mut g = Gradient::new(1, 64);
        for _ in 0..1000 {
            assert_eq!(g.sample(10_000), 64);
        }
    }

    #[test]
    fn a_slow_dependency_lowers_the_limit_and_its_recovery_raises_it_again() {
        let mut g = Gradient::new(2, 64);
        for _ in 0..500 {
            g.sample(10_000);
        }
        // The jobs take 10x longer: within a few dozen jobs the limit is a
        // fraction of what it was.
        for _ in 0..30 {
            g.sample(100_000);
        }
        let low = g.limit();
        assert!(low <= 16, "the limit fell to {low}");
        assert!(low >= 2, "never under the minimum: {low}");
        // Quick again: back to the maximum.
        for _ in 0..300 {
            g.sample(10_000);
        }
        assert_eq!(g.limit(), 64);
    }

    #[test]
    fn the_limit_stays_within_its_bounds_whatever_the_samples() {
        let mut g = Gradient::new(0, 0);
        assert_eq!(g.sample(0), 1, "at least one");
        let mut g = Gradient::new(3, 8);
        for s in [1, u64::MAX, 0, 5, u64::MAX, u64::MAX, 1, 1] {
            let l = g.sample(s);
            assert!((3..=8).contains(&l), "{l}");
        }
    }
}
