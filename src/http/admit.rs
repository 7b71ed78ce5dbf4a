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
//! [`Costs`], beside it: what each path's handler costs the loop, so that
//! a loop that sheds refuses only requests whose handler costs more than
//! their refusal.
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

/// How long the handlers of the paths a loop serves run, so that a loop
/// that sheds refuses only requests whose handler costs more than their
/// refusal would: refusing a cheap request saves nothing, and the fast
/// routes beside a saturated heavy one stay answered. A direct-mapped
/// table of [`Costs::SLOTS`] paths by hash, each with a moving average of
/// its handler's time (an eighth a sample); a path that lost its slot to
/// another, or was never seen, is not known cheap.
#[derive(Debug)]
pub(crate) struct Costs {
    /// Each slot's path hash (0: empty).
    tags: [u64; Costs::SLOTS],
    /// Each slot's average handler time, microseconds.
    micros: [u32; Costs::SLOTS],
}

impl Costs {
    const SLOTS: usize = 64;
    /// A handler under this is cheap: its refusal (reading, parsing and
    /// framing a `503`, sending it) costs the loop about as much.
    const CHEAP_US: u32 = 50;

    pub(crate) fn new() -> Costs {
        Costs { tags: [0; Costs::SLOTS], micros: [0; Costs::SLOTS] }
    }

    /// The path's hash (FNV-1a, never 0) and its slot.
    fn key(path: &str) -> (u64, usize) {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in path.as_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let h = h | 1;
        (h, (h >> 32) as usize % Costs::SLOTS)
    }

    /// Whether the path's handler is known to be cheap.
    pub(crate) fn cheap(&self, path: &str) -> bool {
        let (tag, i) = Costs::key(path);
        self.tags[i] == tag && self.micros[i] < Costs::CHEAP_US
    }

    /// What the path's handler costs (µs), if it is known not to be cheap.
    pub(crate) fn heavy(&self, path: &str) -> Option<u32> {
        let (tag, i) = Costs::key(path);
        (self.tags[i] == tag && self.micros[i] >= Costs::CHEAP_US).then_some(self.micros[i])
    }

    /// The path's handler ran `us` microseconds.
    pub(crate) fn record(&mut self, path: &str, us: u64) {
        let (tag, i) = Costs::key(path);
        let us = us.min(u64::from(u32::MAX)) as u32;
        if self.tags[i] == tag {
            let avg = self.micros[i];
            self.micros[i] = avg - avg / 8 + us / 8;
        } else {
            self.tags[i] = tag;
            self.micros[i] = us;
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

    #[test]
    fn a_path_is_cheap_once_timed_under_the_line_and_not_after_it_slows_or_loses_its_slot() {
        let mut c = Costs::new();
        assert!(!c.cheap("/"), "never seen: not known cheap");
        c.record("/", 3);
        assert!(c.cheap("/"));
        // One slow run moves the average by an eighth: 3 - 0 + 1000 / 8.
        c.record("/", 1000);
        assert!(!c.cheap("/"), "{}", c.micros[Costs::key("/").1]);
        // Quick again, it comes back under the line within a few runs.
        let runs = (0..64).take_while(|_| {
            c.record("/", 3);
            !c.cheap("/")
        });
        assert!(runs.count() < 32);
        // A path that takes the slot makes the other unknown, never cheap
        // by the other's average.
        let (_, slot) = Costs::key("/");
        let other = (0..10_000)
            .map(|i| format!("/p{i}"))
            .find(|p| Costs::key(p).1 == slot && p != "/")
            .expect("a path in the same slot");
        c.record(&other, 5000);
        assert!(!c.cheap("/") && !c.cheap(&other));
        c.record("/", 3);
        assert!(c.cheap("/") && !c.cheap(&other));
    }
}
