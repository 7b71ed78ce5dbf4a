//! The worker's blocking-work pool: threads of this worker process that run
//! what must not run on the event loop (a blocking database client, a file
//! compressed on the fly), usually ending in a [`crate::Responder::send`].
//!
//! The threads start in the worker, on the first [`spawn_blocking`], never
//! in the master (which stays single-threaded, so its plain `fork` stays
//! safe); a re-executed worker starts its own the same way. Work goes to
//! them through one `crossbeam-channel` queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use crossbeam_channel::Sender;

/// A piece of blocking work.
type Job = Box<dyn FnOnce() + Send>;

/// Threads the pool starts (set from the configuration at worker start).
static SIZE: AtomicUsize = AtomicUsize::new(64);
/// The queue to the pool's threads, once they run.
static QUEUE: OnceLock<Sender<Job>> = OnceLock::new();

/// Sets how many threads the pool starts (at least one).
pub(crate) fn set_size(n: usize) {
    SIZE.store(n.max(1), Ordering::Relaxed);
}

/// Runs `f` on one of this worker's pool threads ([`crate::Config::pool`]
/// of them, started on the first call). The loop goes on at once; `f` may
/// block. A panic in `f` is logged and ends only that piece of work (a
/// [`crate::Responder`] it held is dropped, which answers `500`).
///
/// ```no_run
/// use std::time::Duration;
/// use forkring::{Request, Response, Server};
///
/// Server::builder().serve(|| |_: &Request<'_>, res: &mut Response| {
///     let responder = res.defer();
///     forkring::worker::spawn_blocking(move || {
///         std::thread::sleep(Duration::from_millis(10)); // a blocking call
///         let mut res = Response::new();
///         res.body("done\n");
///         responder.send(res);
///     });
/// })
/// # ;
/// ```
pub fn spawn_blocking(f: impl FnOnce() + Send + 'static) {
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let n = SIZE.load(Ordering::Relaxed);
        for i in 0..n {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("forkring-pool-{i}")).spawn(move || {
                for job in rx {
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                        log::error!("a blocking job panicked");
                    }
                }
            });
            if let Err(e) = spawned {
                log::error!("blocking pool: thread {i} of {n}: {e}");
            }
        }
        tx
    });
    // The receivers live in threads that never end, so the send cannot fail
    // unless no thread could be started at all.
    if queue.send(Box::new(f)).is_err() {
        log::error!("blocking pool: no thread runs; the job is dropped");
    }
}
