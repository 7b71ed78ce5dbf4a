//! Worker timers: closures that run on the worker's event loop after a
//! delay or every period, for periodic work that must not block the loop
//! nor need a thread (refresh a cache every second, expire entries).
//!
//! Timers live with the loop's thread (a thread-local table): they are set
//! from the loop, that is from the handler factory, a handler, `on_message`
//! or another timer. Each loop turn runs what is due, and the loop's sleep
//! never outlasts the next one ([`next_due`]). A timer that panics is
//! logged and dropped; the loop and the other timers go on.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// What a timer runs.
enum Job {
    /// Once, after its delay.
    Once(Box<dyn FnOnce()>),
    /// Every `period`, until cancelled.
    Every(Duration, Box<dyn FnMut()>),
}

/// The timers of one loop thread.
#[derive(Default)]
struct Table {
    /// When each timer is due, earliest first; entries whose id is gone
    /// (cancelled, or rescheduled under a new due time) are skipped.
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The timers that exist, by id.
    jobs: HashMap<u64, (Instant, Job)>,
    /// The id of the next timer.
    next_id: u64,
    /// The timer running now (out of `jobs` while it runs), and whether it
    /// cancelled itself.
    running: Option<(u64, bool)>,
}

thread_local! {
    static TABLE: RefCell<Table> = RefCell::new(Table::default());
    /// Timers this thread has (a cheap check for the loop's every turn).
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    COUNT.with(|c| c.set(c.get().wrapping_add_signed(delta)));
}

fn none() -> bool {
    COUNT.with(|c| c.get() == 0)
}

/// Adds a timer due at `at`; returns its id.
fn add(at: Instant, job: Job) -> u64 {
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let id = t.next_id;
        t.next_id += 1;
        t.due.push(Reverse((at, id)));
        t.jobs.insert(id, (at, job));
        count(1);
        id
    })
}

/// Runs `f` once, `delay` from now; returns the timer's id.
pub(crate) fn after(delay: Duration, f: impl FnOnce() + 'static) -> u64 {
    add(Instant::now() + delay, Job::Once(Box::new(f)))
}

/// Runs `f` every `period` (at least 1 ms), the first time one period from
/// now; returns the timer's id.
pub(crate) fn every(period: Duration, f: impl FnMut() + 'static) -> u64 {
    let period = period.max(Duration::from_millis(1));
    add(Instant::now() + period, Job::Every(period, Box::new(f)))
}

/// Cancels timer `id`; false when it is gone already (a one-shot timer
/// that ran, or one cancelled before).
pub(crate) fn cancel(id: u64) -> bool {
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        if t.jobs.remove(&id).is_some() {
            count(-1);
            return true;
        }
        match &mut t.running {
            Some((running, cancelled)) if *running == id && !*cancelled => {
                *cancelled = true;
                true
            }
            _ => false,
        }
    })
}

/// When the earliest timer of this thread is due.
pub(crate) fn next_due() -> Option<Instant> {
    if none() {
        return None;
    }
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        // Drop the heap entries of timers that are gone or were moved.
        while let Some(&Reverse((at, id))) = t.due.peek() {
            match t.jobs.get(&id) {
                Some((due, _)) if *due == at => return Some(at),
                _ => {
                    t.due.pop();
                }
            }
        }
        None
    })
}

/// Runs every timer of this thread due at `now`; returns how many ran. A
/// timer set by a running one that is due already waits for the next turn,
/// so a timer of zero delay cannot hold the loop.
pub(crate) fn run_due(now: Instant) -> usize {
    let mut ran = 0;
    // The ids due now, taken before any runs.
    let due: Vec<u64> = TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let mut ids = Vec::new();
        while let Some(&Reverse((at, id))) = t.due.peek() {
            if at > now {
                break;
            }
            t.due.pop();
            if t.jobs.get(&id).is_some_and(|(d, _)| *d == at) {
                ids.push(id);
            }
        }
        ids
    });
    for id in due {
        // Out of the table while it runs: it may add or cancel timers.
        let Some((_, job)) = TABLE.with(|t| {
            let mut t = t.borrow_mut();
            t.running = Some((id, false));
            let job = t.jobs.remove(&id);
            if job.is_some() {
                count(-1);
            }
            job
        }) else {
            continue;
        };
        ran += 1;
        match job {
            Job::Once(f) => {
                if catch_unwind(AssertUnwindSafe(f)).is_err() {
                    log::error!("a worker timer panicked");
                }
                TABLE.with(|t| t.borrow_mut().running = None);
            }
            Job::Every(period, mut f) => {
                let ok = catch_unwind(AssertUnwindSafe(&mut f)).is_ok();
                if !ok {
                    log::error!("a periodic worker timer panicked; it is dropped");
                }
                // Next due one period after this one was due, but never in
                // the past (a loop held up does not run it in a burst).
                let at = (now + period).max(Instant::now());
                TABLE.with(|t| {
                    let mut t = t.borrow_mut();
                    let cancelled = t.running.take().is_some_and(|(_, c)| c);
                    if ok && !cancelled {
                        t.due.push(Reverse((at, id)));
                        t.jobs.insert(id, (at, Job::Every(period, f)));
                        count(1);
                    }
                });
            }
        }
    }
    ran
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn timers_run_in_order_repeat_and_cancel() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        after(Duration::from_millis(20), move || l.borrow_mut().push("once"));
        let l = log.clone();
        let tick = every(Duration::from_millis(10), move || l.borrow_mut().push("tick"));
        let l = log.clone();
        let gone = after(Duration::from_millis(5), move || l.borrow_mut().push("cancelled"));
        // Every timer above was set before this instant.
        let t0 = Instant::now();
        assert!(cancel(gone));
        assert!(!cancel(gone));
        assert_eq!(run_due(t0), 0);
        assert!(next_due().is_some_and(|d| d <= t0 + Duration::from_millis(10)));
        assert_eq!(run_due(t0 + Duration::from_millis(10)), 1);
        assert_eq!(run_due(t0 + Duration::from_secs(1)), 2);
        assert_eq!(*log.borrow(), ["tick", "once", "tick"]);
        assert!(cancel(tick));
        assert_eq!(next_due(), None);
        // A periodic timer may cancel itself.
        let me = Rc::new(RefCell::new(None));
        let m = me.clone();
        let l = log.clone();
        let id = every(Duration::from_millis(1), move || {
            l.borrow_mut().push("last");
            assert!(cancel(m.borrow().unwrap()));
        });
        *me.borrow_mut() = Some(id);
        assert_eq!(run_due(Instant::now() + Duration::from_millis(2)), 1);
        assert_eq!(next_due(), None);
        assert_eq!(run_due(Instant::now() + Duration::from_secs(10)), 0);
    }

    #[test]
    fn a_panicking_timer_is_dropped_and_the_others_run() {
        let ran = Rc::new(RefCell::new(0));
        every(Duration::from_millis(1), || panic!("a deliberate panic in a timer"));
        let r = ran.clone();
        every(Duration::from_millis(1), move || *r.borrow_mut() += 1);
        let t0 = Instant::now();
        run_due(t0 + Duration::from_millis(5));
        run_due(Instant::now() + Duration::from_millis(5));
        assert_eq!(*ran.borrow(), 2);
    }
}
