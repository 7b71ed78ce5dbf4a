//! The worker's blocking-work pool: threads of this worker process that run
//! what must not run on the event loop (a blocking database client, a file
//! compressed on the fly), usually ending in a [`crate::Responder::send`].
//!
//! The threads start in the worker, on the first job, never in the master
//! (which stays single-threaded, so its plain `fork` stays safe); a
//! re-executed worker starts its own the same way. Work goes to them
//! through one `crossbeam-channel` queue, and is admitted only while fewer
//! than threads + [`crate::Config::pool_queue`] jobs are queued or running;
//! past that a job is refused at once ([`PoolFull`]), so that a flood of
//! requests costs `503`s and not an ever longer wait for the requests
//! admitted after it. The count, not the channel's capacity, is the bound:
//! a channel's slot is freed only once a thread has woken up to take its
//! job, so a burst that arrives within one turn of the loop would find
//! room for the queue alone, though every thread was idle.
//!
//! The loop reaches the pool through [`submit`], which the worker hands to
//! its event loop at start (the HTTP layer names no worker code:
//! [`crate::Response::blocking`] calls it through a function pointer).
//!
//! Below the cap, admission is by queueing time ([`crate::Admission`]):
//! each job carries the time it was queued, the thread that takes it
//! shows its wait to a CoDel state machine ([`crate::http::Codel`]), and
//! while that says the queue stands (and for an interval after), the pool
//! admits only as many jobs as would start within the target at the
//! jobs' measured pace: every thread busy plus threads x target / service
//! time queued. The rest are refused as if the pool were full. So under a
//! standing overload the pool runs full with a queue shorter than the
//! target, and the work it admits waits less than the target; once the
//! overload ends, the first job that starts within the target, or a
//! thread going idle, ends the shedding. Three clock reads a job (queued,
//! started, finished), only with admission on: a job is blocking work,
//! which costs far more. With [`Admission::adaptive_pool`], the jobs in
//! flight are also held under an adaptive limit that falls when the jobs
//! run longer than they used to (`super::limit`).
//!
//! Gauges in the worker's counters follow the pool: jobs queued and not
//! yet taken by a thread (`PoolQueued`), threads running a job
//! (`PoolBusy`), the shortest wait of the last interval (`PoolWaitUs`),
//! whether it sheds (`Shedding`) and its cap (`PoolLimit`). They are
//! changed from several threads (the loop queues, pool threads take and
//! finish), so with locked adds, or by one thread under the admission
//! lock.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};

use crate::config::Admission;
use crate::http::{Codel, Job};
use crate::ipc::{Counter, Counters, SHEDDING_POOL};

use super::limit::Gradient;

/// Threads the pool starts (set from the configuration at worker start).
static SIZE: AtomicUsize = AtomicUsize::new(64);
/// Jobs the queue holds beyond those running; 0: as many as `SIZE`.
static QUEUE_CAP: AtomicUsize = AtomicUsize::new(0);
/// The queue to the pool's threads, once they run: each job with the time
/// it was queued.
static QUEUE: OnceLock<Sender<(Job, Instant)>> = OnceLock::new();
/// The pool's admission state, when admission is on (set at configure).
static ADMISSION: OnceLock<Mutex<Codel>> = OnceLock::new();
/// Until when (microseconds since [`EPOCH`]) the pool admits a job only
/// if it would wait less than the target ([`Codel::limited_until`]): while
/// it sheds, and an interval after. Read without the lock by every
/// submit; written under it.
static LIMITED_UNTIL: AtomicU64 = AtomicU64::new(0);
/// [`Admission::pool_target`] in microseconds.
static TARGET_US: AtomicU64 = AtomicU64::new(0);
/// [`Admission::interval`] in microseconds.
static INTERVAL_US: AtomicU64 = AtomicU64::new(0);
/// How long a job runs, in microseconds: a moving average over the last
/// jobs (threads update it without a lock; a lost update only delays it).
static SERVICE_US: AtomicU64 = AtomicU64::new(0);
/// The adaptive limit ([`Admission::adaptive_pool`]), when on: made when
/// the threads start (it needs their number), fed each job's run time.
static ADAPTIVE: OnceLock<Mutex<Gradient>> = OnceLock::new();
/// Whether [`ADAPTIVE`] is wanted (set at configure).
static ADAPTIVE_ON: AtomicBool = AtomicBool::new(false);
/// The adaptive limit now (`usize::MAX` while there is none).
static ADAPTIVE_LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The origin of the admission state's times.
static EPOCH: OnceLock<Instant> = OnceLock::new();
/// Most jobs queued or running at once: threads + queue (set when the
/// threads start).
static LIMIT: AtomicUsize = AtomicUsize::new(0);
/// Jobs queued or running now.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// The worker's counters, for the pool's gauges (none outside a cluster).
static COUNTERS: OnceLock<&'static Counters> = OnceLock::new();

/// Sets how many threads the pool starts (at least one), how many jobs
/// its queue holds (at least one; `None`: as many as it has threads) and
/// how it admits them.
pub(crate) fn configure(threads: usize, queue: Option<usize>, admission: &Admission) {
    SIZE.store(threads.max(1), Ordering::Relaxed);
    QUEUE_CAP.store(queue.map_or(0, |q| q.max(1)), Ordering::Relaxed);
    if admission.enabled {
        TARGET_US.store(admission.pool_target.as_micros().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
        INTERVAL_US.store(admission.interval.as_micros().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
        let _ = ADMISSION.set(Mutex::new(Codel::new(admission.pool_target, admission.interval)));
        ADAPTIVE_ON.store(admission.adaptive_pool, Ordering::Relaxed);
    }
}

/// Shows the limit in force in the `PoolLimit` gauge: the cap, the burst
/// limit, the short limit while the queue is kept short, or the adaptive
/// limit, the lowest of them.
fn publish_limit() {
    let cap = LIMIT.load(Ordering::Relaxed);
    let until = LIMITED_UNTIL.load(Ordering::Relaxed);
    let short = if until == 0 || micros(Instant::now()) >= until { burst_limit() } else { short_limit() };
    let limit = cap.min(short).min(ADAPTIVE_LIMIT.load(Ordering::Relaxed));
    if let Some(counters) = COUNTERS.get() {
        counters.set(Counter::PoolLimit, limit as u64);
    }
}

/// Microseconds since the pool's epoch.
fn micros(t: Instant) -> u64 {
    t.saturating_duration_since(*EPOCH.get_or_init(Instant::now)).as_micros() as u64
}

/// Updates the pool's admission state under its lock with `f`, and what
/// shows it (the flag, the gauges) when it changed.
fn admit_update(f: impl FnOnce(&mut Codel)) {
    let Some(lock) = ADMISSION.get() else { return };
    // A panic under this lock is impossible (no user code runs here); a
    // poisoned lock is still a valid state.
    let mut codel = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let before = (codel.shedding(), codel.min_wait_us());
    f(&mut codel);
    let (shedding, min) = (codel.shedding(), codel.min_wait_us());
    let until = codel.limited_until();
    if until != LIMITED_UNTIL.swap(until, Ordering::Relaxed) {
        publish_limit();
    }
    if shedding != before.0 {
        // A bit of its own in the gauge, changed by adds only at a change
        // (the loop changes its own bit the same way).
        gauge(Counter::Shedding, if shedding { SHEDDING_POOL } else { SHEDDING_POOL.wrapping_neg() });
        if shedding {
            log::debug!("blocking pool: a standing queue; shedding new work");
        }
    }
    if min != before.1 {
        if let Some(counters) = COUNTERS.get() {
            counters.set(Counter::PoolWaitUs, min);
        }
    }
}

/// How many jobs may be in flight while the queue is kept short: every
/// thread busy, and as many queued as would start within the target at
/// the jobs' measured pace (threads x target / service time). The queue
/// allowance of a concurrency limiter, from CoDel's target.
fn short_limit() -> usize {
    limit_within(TARGET_US.load(Ordering::Relaxed))
}

/// How many jobs may be in flight at any time: as many as would start
/// within an interval at the jobs' measured pace. CoDel tolerates a burst
/// that drains within an interval; a job queued behind more than that
/// waits longer than the interval CoDel takes to see a standing queue, so
/// at the onset of an overload the queue would build for a whole interval
/// at the overload's rate (at 4x, three intervals of work) and every job
/// in it would wait for all of it. Before a job was measured there is no
/// limit.
fn burst_limit() -> usize {
    limit_within(INTERVAL_US.load(Ordering::Relaxed))
}

/// Every thread busy, and as many queued as start within `wait_us` at the
/// jobs' measured pace (threads x wait / service time).
fn limit_within(wait_us: u64) -> usize {
    let threads = SIZE.load(Ordering::Relaxed);
    let service = SERVICE_US.load(Ordering::Relaxed);
    if service == 0 {
        return usize::MAX;
    }
    let allowance = (threads as u64).saturating_mul(wait_us) / service;
    threads.saturating_add(allowance.min(usize::MAX as u64) as usize)
}

/// Whether a job queued at `now` is refused: while the pool sheds, and for
/// an interval after, only as many jobs are admitted as would start within
/// the target ([`short_limit`]), so that a standing queue does not build
/// again; a thread going idle ends the shedding itself (see `start`).
fn shed(now: Instant) -> bool {
    if IN_FLIGHT.load(Ordering::Relaxed) >= ADAPTIVE_LIMIT.load(Ordering::Relaxed) {
        gauge(Counter::ShedPool, 1);
        return true;
    }
    let until = LIMITED_UNTIL.load(Ordering::Relaxed);
    let in_flight = IN_FLIGHT.load(Ordering::Relaxed);
    if until == 0 || micros(now) >= until {
        if in_flight < burst_limit() {
            return false;
        }
        gauge(Counter::ShedPool, 1);
        return true;
    }
    if in_flight < short_limit() {
        return false;
    }
    gauge(Counter::ShedPool, 1);
    // The overload goes on: the queue stays short for an interval more.
    let at = micros(now);
    admit_update(|c| c.refused(at));
    true
}

/// Makes the pool keep its gauges in `counters` (the worker's page).
pub(crate) fn set_counters(counters: &'static Counters) {
    let _ = COUNTERS.set(counters);
}

/// Adds `n` (wrapping: `u64::MAX` is minus one) to one of the pool's
/// gauges.
fn gauge(c: Counter, n: u64) {
    if let Some(counters) = COUNTERS.get() {
        counters.add_shared(c, n);
    }
}

/// Why [`spawn_blocking`] did not take a job: every thread of the pool is
/// busy and its queue ([`crate::Config::pool_queue`]) is full, or jobs
/// have waited too long for a thread ([`crate::Admission::pool_target`])
/// and the pool sheds new work, or this one would wait longer than an
/// admission interval ([`crate::Admission::interval`]). The job was
/// dropped, and with it what it captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolFull;

impl fmt::Display for PoolFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the worker's blocking pool is full")
    }
}

impl std::error::Error for PoolFull {}

/// Runs `f` on one of this worker's pool threads ([`crate::Config::pool`]
/// of them, started on the first call). The loop goes on at once; `f` may
/// block. A panic in `f` is logged and ends only that piece of work (a
/// [`crate::Responder`] it held is dropped, which answers `500`).
///
/// When every thread is busy and [`crate::Config::pool_queue`] jobs wait
/// already, or while the pool sheds or `f` would wait longer than an
/// admission interval at the jobs' measured pace ([`crate::Admission`]),
/// `f` is not queued: the call returns [`PoolFull`] at once and
/// `f` is dropped with what it captured (a [`crate::Responder`] among them
/// answers `500`). A handler that answers from the pool is better written
/// with [`crate::Response::blocking`], which answers `503` then, skips the
/// work of a client that has gone, and sends what `f` returns:
///
/// ```no_run
/// use std::time::Duration;
/// use forkring::{Request, Response, Server};
///
/// Server::builder().serve(|| |_: &Request<'_>, res: &mut Response| {
///     res.blocking(|| {
///         std::thread::sleep(Duration::from_millis(10)); // a blocking call
///         let mut res = Response::new();
///         res.body("done\n");
///         res
///     });
/// })
/// # ;
/// ```
///
/// Work that answers no request (a cache refreshed in the background)
/// goes here directly; what to do when the pool is full is the caller's:
///
/// ```no_run
/// if forkring::worker::spawn_blocking(|| { /* refresh a cache */ }).is_err() {
///     log::warn!("pool full: the cache stays as it is until the next try");
/// }
/// ```
#[must_use = "a full pool refuses the job: the error says so"]
pub fn spawn_blocking(f: impl FnOnce() + Send + 'static) -> Result<(), PoolFull> {
    submit(Box::new(f)).map_err(|_| PoolFull)
}

/// Queues `job` for the pool, or hands it back when the pool is full (or no
/// thread could be started). The loop calls it through a function pointer
/// ([`crate::http::Spawner`]).
pub(crate) fn submit(job: Job) -> Result<(), Job> {
    let queue = QUEUE.get_or_init(start);
    // One clock read a job, only with admission on (a pool job is
    // blocking work, which costs far more).
    let queued_at = if ADMISSION.get().is_some() { Instant::now() } else { *EPOCH.get_or_init(Instant::now) };
    if ADMISSION.get().is_some() && shed(queued_at) {
        return Err(job);
    }
    // `AcqRel`, pairing with the `Release` decrement of the thread that
    // finished a job: the slot it freed in the channel (before its
    // decrement) is then seen free by the `try_send` below, which can only
    // find the channel full if the count is wrong.
    if IN_FLIGHT.fetch_add(1, Ordering::AcqRel) >= LIMIT.load(Ordering::Relaxed) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        return Err(job);
    }
    // Counted before it is queued: a thread that takes it at once then
    // never counts it out before it was counted in (the gauge may read one
    // high for that moment, never wrap below zero).
    gauge(Counter::PoolQueued, 1);
    match queue.try_send((job, queued_at)) {
        Ok(()) => Ok(()),
        Err(e) => {
            IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
            gauge(Counter::PoolQueued, u64::MAX);
            let job = match e {
                TrySendError::Full((job, _)) => job,
                TrySendError::Disconnected((job, _)) => {
                    log::error!("blocking pool: no thread runs; the job is refused");
                    job
                }
            };
            Err(job)
        }
    }
}

/// Starts the pool's threads; returns the sending end of their queue.
fn start() -> Sender<(Job, Instant)> {
    let n = SIZE.load(Ordering::Relaxed);
    let cap = match QUEUE_CAP.load(Ordering::Relaxed) {
        0 => n,
        cap => cap,
    };
    // Room for every job the count admits: a send never finds it full.
    let limit = n.saturating_add(cap);
    LIMIT.store(limit, Ordering::Relaxed);
    if let Some(counters) = COUNTERS.get() {
        counters.set(Counter::PoolLimit, limit as u64);
    }
    let admitting = ADMISSION.get().is_some();
    if admitting && ADAPTIVE_ON.load(Ordering::Relaxed) {
        let _ = ADAPTIVE.set(Mutex::new(Gradient::new(1, limit)));
        ADAPTIVE_LIMIT.store(limit, Ordering::Relaxed);
    }
    let (tx, rx) = crossbeam_channel::bounded::<(Job, Instant)>(limit);
    for i in 0..n {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new().name(format!("forkring-pool-{i}")).spawn(move || {
            for (job, queued_at) in rx {
                let started = admitting.then(|| {
                    let now = Instant::now();
                    let wait = now.saturating_duration_since(queued_at).as_micros() as u64;
                    let at = micros(now);
                    admit_update(|c| {
                        c.sample(at, wait);
                    });
                    now
                });
                gauge(Counter::PoolQueued, u64::MAX);
                gauge(Counter::PoolBusy, 1);
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    log::error!("a blocking job panicked");
                }
                gauge(Counter::PoolBusy, u64::MAX);
                if let Some(started) = started {
                    // A moving average of an eighth: a slower dependency
                    // shows within a few jobs.
                    let ran = started.elapsed().as_micros() as u64;
                    let avg = SERVICE_US.load(Ordering::Relaxed);
                    let avg = if avg == 0 { ran } else { avg - avg / 8 + ran / 8 };
                    SERVICE_US.store(avg, Ordering::Relaxed);
                    // The limits follow the pace (a store to the gauge).
                    publish_limit();
                    if let Some(adaptive) = ADAPTIVE.get() {
                        let mut g = adaptive.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        let limit = g.sample(ran);
                        if limit != ADAPTIVE_LIMIT.swap(limit, Ordering::Relaxed) {
                            publish_limit();
                        }
                    }
                }
                // `Release`: see `submit`.
                let left = IN_FLIGHT.fetch_sub(1, Ordering::Release) - 1;
                // This thread goes idle: no job waits, so no queue stands
                // (CoDel leaves its dropping state on an empty queue).
                if admitting && left < n && LIMITED_UNTIL.load(Ordering::Relaxed) == u64::MAX {
                    let now = micros(Instant::now());
                    admit_update(|c| c.idle(now));
                }
            }
        });
        if let Err(e) = spawned {
            log::error!("blocking pool: thread {i} of {n}: {e}");
        }
    }
    // When no thread started, every receiver is gone with the closures
    // that held them, and every send fails: no job waits forever.
    tx
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_full_pool_refuses_at_once_and_takes_work_again_once_it_drains() {
        // This test owns the process's pool: one thread, one place in the
        // queue, admission by queueing time off (the waits here are the
        // test's own).
        configure(1, Some(1), &Admission::OFF);
        let (started_tx, started) = mpsc::channel();
        let (release_tx, release) = mpsc::channel::<()>();
        spawn_blocking(move || {
            started_tx.send(()).unwrap();
            release.recv().unwrap();
        })
        .unwrap();
        started.recv_timeout(Duration::from_secs(10)).unwrap();
        let (ran_tx, ran) = mpsc::channel();
        let queued = ran_tx.clone();
        spawn_blocking(move || queued.send("queued").unwrap()).expect("one place in the queue");
        assert_eq!(spawn_blocking(|| unreachable!("refused")), Err(PoolFull));
        assert_eq!(PoolFull.to_string(), "the worker's blocking pool is full");
        release_tx.send(()).unwrap();
        assert_eq!(ran.recv_timeout(Duration::from_secs(10)).unwrap(), "queued");
        // Room again once the thread took the queued job and finished it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let again = ran_tx.clone();
            if spawn_blocking(move || again.send("again").unwrap()).is_ok() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the pool stayed full");
            std::thread::yield_now();
        }
        assert_eq!(ran.recv_timeout(Duration::from_secs(10)).unwrap(), "again");
    }
}
