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
//! Two gauges in the worker's counters follow the pool: jobs queued and
//! not yet taken by a thread (`PoolQueued`), and threads running a job
//! (`PoolBusy`). Both are changed from several threads (the loop queues,
//! pool threads take and finish), so with locked adds only.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use crossbeam_channel::{Sender, TrySendError};

use crate::http::Job;
use crate::ipc::{Counter, Counters};

/// Threads the pool starts (set from the configuration at worker start).
static SIZE: AtomicUsize = AtomicUsize::new(64);
/// Jobs the queue holds beyond those running; 0: as many as `SIZE`.
static QUEUE_CAP: AtomicUsize = AtomicUsize::new(0);
/// The queue to the pool's threads, once they run.
static QUEUE: OnceLock<Sender<Job>> = OnceLock::new();
/// Most jobs queued or running at once: threads + queue (set when the
/// threads start).
static LIMIT: AtomicUsize = AtomicUsize::new(0);
/// Jobs queued or running now.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// The worker's counters, for the pool's gauges (none outside a cluster).
static COUNTERS: OnceLock<&'static Counters> = OnceLock::new();

/// Sets how many threads the pool starts (at least one) and how many jobs
/// its queue holds (at least one; `None`: as many as it has threads).
pub(crate) fn configure(threads: usize, queue: Option<usize>) {
    SIZE.store(threads.max(1), Ordering::Relaxed);
    QUEUE_CAP.store(queue.map_or(0, |q| q.max(1)), Ordering::Relaxed);
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
/// busy and its queue ([`crate::Config::pool_queue`]) is full. The job was
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
/// already, `f` is not queued: the call returns [`PoolFull`] at once and
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
    match queue.try_send(job) {
        Ok(()) => Ok(()),
        Err(e) => {
            IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
            gauge(Counter::PoolQueued, u64::MAX);
            let job = match e {
                TrySendError::Full(job) => job,
                TrySendError::Disconnected(job) => {
                    log::error!("blocking pool: no thread runs; the job is refused");
                    job
                }
            };
            Err(job)
        }
    }
}

/// Starts the pool's threads; returns the sending end of their queue.
fn start() -> Sender<Job> {
    let n = SIZE.load(Ordering::Relaxed);
    let cap = match QUEUE_CAP.load(Ordering::Relaxed) {
        0 => n,
        cap => cap,
    };
    // Room for every job the count admits: a send never finds it full.
    let limit = n.saturating_add(cap);
    LIMIT.store(limit, Ordering::Relaxed);
    let (tx, rx) = crossbeam_channel::bounded::<Job>(limit);
    for i in 0..n {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new().name(format!("forkring-pool-{i}")).spawn(move || {
            for job in rx {
                gauge(Counter::PoolQueued, u64::MAX);
                gauge(Counter::PoolBusy, 1);
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    log::error!("a blocking job panicked");
                }
                gauge(Counter::PoolBusy, u64::MAX);
                // `Release`: see `submit`.
                IN_FLIGHT.fetch_sub(1, Ordering::Release);
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
        // queue.
        configure(1, Some(1));
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
