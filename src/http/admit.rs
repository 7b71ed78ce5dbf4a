//! CoDel's rule applied to a request queue ([`Codel`]): the state machine
//! that decides, from the waits it is shown, whether a queue holds a
//! standing queue and new work for it should be refused.
//!
//! CoDel (Nichols and Jacobson, "Controlling Queue Delay", 2012) watches
//! the shortest wait over an interval: a burst makes some work wait, but
//! as long as some work in every interval waited less than the target,
//! the queue empties by itself; when even the shortest wait of a whole
//! interval stays above the target, the queue is standing and only
//! refusing work shrinks it. Applied to requests ("fail fast" queueing),
//! a refusal is a fast `503`: the client learns at once, instead of after
//! a wait that makes every request behind it wait too.
//!
//! The machine is fed times, never reads a clock, so its tests are
//! deterministic; the worker's pool and loop feed it their own waits
//! (`crate::worker` and [`super::WorkerState`]).
//!
//! Where it stops: it refuses nothing itself; its owner asks
//! [`Codel::shedding`] before admitting work.

use std::time::Duration;

/// One queue's admission state. Times and waits are in microseconds, on
/// any clock that does not go back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Codel {
    /// The longest the shortest wait may stay above, for a whole interval.
    target_us: u64,
    /// The interval.
    interval_us: u64,
    /// When the waits seen started to be all above the target, plus the
    /// interval: shedding starts at a wait above the target seen then.
    above_until: Option<u64>,
    /// New work is refused.
    shedding: bool,
    /// When shedding last ended: a wait above the target seen within an
    /// interval of it resumes shedding at once (the queue was standing a
    /// moment ago; CoDel resumes its drop rate in the same case).
    left_at: Option<u64>,
    /// The start of the current window of [`Codel::min_wait_us`].
    window_at: u64,
    /// The shortest wait seen in the current window.
    window_min: Option<u64>,
    /// The shortest wait of the last whole window (what the metrics show).
    last_min: u64,
}

impl Codel {
    /// A queue that sheds when its shortest wait stays above `target` for
    /// `interval`.
    pub(crate) fn new(target: Duration, interval: Duration) -> Codel {
        Codel {
            target_us: target.as_micros().min(u128::from(u64::MAX)) as u64,
            interval_us: (interval.as_micros().min(u128::from(u64::MAX)) as u64).max(1),
            above_until: None,
            shedding: false,
            left_at: None,
            window_at: 0,
            window_min: None,
            last_min: 0,
        }
    }

    /// Work that waited `wait_us` started at `now_us`. Returns whether the
    /// queue sheds now.
    pub(crate) fn sample(&mut self, now_us: u64, wait_us: u64) -> bool {
        self.window(now_us, wait_us);
        if wait_us < self.target_us {
            self.above_until = None;
            self.leave(now_us);
            return false;
        }
        if self.shedding {
            return true;
        }
        let recently = self.left_at.is_some_and(|t| now_us.saturating_sub(t) < self.interval_us);
        match self.above_until {
            _ if recently => self.shedding = true,
            None => self.above_until = Some(now_us.saturating_add(self.interval_us)),
            Some(t) if now_us >= t => self.shedding = true,
            Some(_) => {}
        }
        self.shedding
    }

    /// The queue is empty (a pool thread is idle): no work waits, so
    /// nothing stands.
    pub(crate) fn idle(&mut self, now_us: u64) {
        self.above_until = None;
        self.leave(now_us);
    }

    /// Work was refused at `now_us` to keep the queue short (its owner
    /// does so until [`Codel::limited_until`]): the overload goes on, so
    /// the queue is kept short for an interval from now.
    pub(crate) fn refused(&mut self, now_us: u64) {
        if !self.shedding {
            self.left_at = Some(self.left_at.map_or(now_us, |t| t.max(now_us)));
        }
    }

    /// Whether new work is refused.
    pub(crate) fn shedding(&self) -> bool {
        self.shedding
    }

    /// Until when (microseconds) the queue's owner should keep its queue
    /// short: forever while shedding, an interval after shedding ended
    /// (the queue stood a moment ago and would stand again at once), 0
    /// otherwise.
    pub(crate) fn limited_until(&self) -> u64 {
        if self.shedding {
            return u64::MAX;
        }
        self.left_at.map_or(0, |t| t.saturating_add(self.interval_us))
    }

    /// The shortest wait, in microseconds, of the last whole interval in
    /// which work started (0 before one).
    pub(crate) fn min_wait_us(&self) -> u64 {
        self.last_min
    }

    /// Ends shedding, remembering when.
    fn leave(&mut self, now_us: u64) {
        if self.shedding {
            self.shedding = false;
            self.left_at = Some(now_us);
        }
    }

    /// Keeps the shortest wait of each interval.
    fn window(&mut self, now_us: u64, wait_us: u64) {
        if now_us.saturating_sub(self.window_at) >= self.interval_us {
            if let Some(min) = self.window_min {
                self.last_min = min;
            }
            self.window_at = now_us;
            self.window_min = Some(wait_us);
        } else {
            self.window_min = Some(self.window_min.map_or(wait_us, |m| m.min(wait_us)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;

    fn codel() -> Codel {
        Codel::new(Duration::from_millis(5), Duration::from_millis(100))
    }

    #[test]
    fn a_burst_shorter_than_the_interval_sheds_nothing() {
        let mut c = codel();
        // 90 ms of waits above the target, then one under it.
        for t in (0..90).step_by(5) {
            assert!(!c.sample(t * MS, 20 * MS), "at {t} ms");
        }
        assert!(!c.sample(95 * MS, MS));
        // A new burst starts a new interval.
        for t in (100..195).step_by(5) {
            assert!(!c.sample(t * MS, 20 * MS), "at {t} ms");
        }
        assert!(!c.shedding());
    }

    #[test]
    fn a_standing_queue_sheds_after_a_whole_interval_and_stops_at_a_short_wait() {
        let mut c = codel();
        for t in (0..100).step_by(10) {
            assert!(!c.sample(t * MS, 6 * MS), "at {t} ms: not yet a whole interval");
        }
        assert!(c.sample(100 * MS, 6 * MS), "a whole interval above the target");
        assert!(c.sample(150 * MS, 50 * MS));
        assert!(c.shedding());
        assert!(!c.sample(160 * MS, 4 * MS), "a wait under the target ends it");
        assert!(!c.shedding());
    }

    #[test]
    fn a_queue_that_stands_again_soon_after_sheds_again_at_once() {
        let mut c = codel();
        c.sample(0, 10 * MS);
        assert!(c.sample(100 * MS, 10 * MS));
        assert_eq!(c.limited_until(), u64::MAX);
        c.idle(110 * MS);
        assert!(!c.shedding(), "an idle thread ends it");
        assert_eq!(c.limited_until(), 210 * MS, "a short queue for an interval more");
        c.refused(150 * MS);
        assert_eq!(c.limited_until(), 250 * MS, "a refusal: the overload goes on");
        c.refused(120 * MS);
        assert_eq!(c.limited_until(), 250 * MS, "never shortened");
        assert!(c.sample(240 * MS, 10 * MS), "within an interval of the end: at once");
        c.idle(260 * MS);
        // Long after: a whole interval again.
        assert!(!c.sample(400 * MS, 10 * MS));
        assert!(!c.sample(499 * MS, 10 * MS));
        assert!(c.sample(500 * MS, 10 * MS));
    }

    #[test]
    fn the_shortest_wait_of_each_interval_is_kept() {
        let mut c = codel();
        assert_eq!(c.min_wait_us(), 0);
        c.sample(0, 7 * MS);
        c.sample(50 * MS, 3 * MS);
        c.sample(90 * MS, 9 * MS);
        assert_eq!(c.min_wait_us(), 0, "the first window is not over");
        c.sample(100 * MS, 8 * MS);
        assert_eq!(c.min_wait_us(), 3 * MS);
        c.sample(250 * MS, 1);
        assert_eq!(c.min_wait_us(), 8 * MS);
    }

    #[test]
    fn a_zero_target_sheds_on_a_standing_queue_and_huge_values_do_not_overflow() {
        let mut c = Codel::new(Duration::ZERO, Duration::ZERO);
        assert!(!c.sample(0, 0) || c.shedding());
        let mut c = Codel::new(Duration::MAX, Duration::MAX);
        assert!(!c.sample(u64::MAX, u64::MAX - 1));
        assert!(!c.sample(u64::MAX, u64::MAX));
        assert!(!c.shedding());
    }
}
