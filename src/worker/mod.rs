//! The worker's side of the cluster: its process entry, its identity, and
//! messages to the master from anywhere in a worker (a handler, a thread of
//! the user's).
//!
//! Messages travel through the worker's shared-memory ring; the master
//! receives them as [`crate::Event::Message`]. Messages from the master
//! reach the worker's [`crate::Handler::on_message`] on its event loop, and
//! descriptors it hands over ([`crate::Ctl::send_fd`]) its
//! [`crate::Handler::on_descriptor`].
//!
//! Also here: timers on the worker's loop ([`every`], [`after`]) and its
//! pool for blocking work ([`spawn_blocking`]). All of it is called from
//! inside a worker: the handler factory, a handler, a timer, a pool job.
//!
//! ```no_run
//! use std::{cell::Cell, rc::Rc, time::Duration};
//! use forkring::{Request, Response, Server};
//!
//! fn main() -> std::io::Result<()> {
//!     Server::builder().serve(|| {
//!         // The factory runs in the worker: say hello to the master.
//!         let me = forkring::worker::id().expect("in a worker");
//!         let _ = forkring::worker::send(format!("worker {me} up").as_bytes());
//!         // Per-worker state refreshed by a timer on the loop: no lock.
//!         let now = Rc::new(Cell::new(0u64));
//!         let tick = now.clone();
//!         forkring::worker::every(Duration::from_secs(1), move || tick.set(tick.get() + 1));
//!         move |_: &Request<'_>, res: &mut Response| {
//!             res.body(format!("worker {me}, up {} s\n", now.get()));
//!         }
//!     })
//! }
//! ```

mod entry;
mod limit;
mod pool;
mod signals;

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

pub(crate) use entry::{exec_env, is_exec_env, reexec_worker, run_forked, serve, CannotStart, Credentials, Start};
pub use pool::{spawn_blocking, PoolFull};

use crate::driver::Inbox;
use crate::ipc::{Counter, Counters, Producer, SendError, WorkerEnd};

/// A worker: its slot (stable across respawns) and generation (one more at
/// every fork into the slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WorkerId {
    /// Slot index, `0..workers`.
    pub slot: usize,
    /// Forks into this slot before this one.
    pub generation: u64,
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.slot, self.generation)
    }
}

/// The exit code of a worker that cannot start for a reason that will not
/// change by trying again (say, `--backend uring` where the kernel refuses
/// io_uring): the master stops the cluster at once with that reason in the
/// worker's log, instead of respawning it. It counts only before the worker
/// said it was ready (`EX_CONFIG` of sysexits.h). A shortage (memory,
/// descriptors) is not such a reason: it may be over by the next try.
pub(crate) const EXIT_CANNOT_START: i32 = 78;

/// The worker this process is; set once, right after fork or re-exec.
static SELF_ID: OnceLock<WorkerId> = OnceLock::new();

/// The worker this process is, or `None` in the master (or outside a
/// cluster).
pub fn id() -> Option<WorkerId> {
    SELF_ID.get().copied()
}

/// Whether this process is a worker (Node's `cluster.isWorker`): forked,
/// or re-executed before or after it reached [`crate::Server::serve`].
pub fn is_worker() -> bool {
    id().is_some() || entry::is_reexec_worker()
}

/// Records the worker this process is (once; a second call is ignored).
fn set_id(id: WorkerId) {
    let _ = SELF_ID.set(id);
}

/// A timer on this worker's event loop, made by [`after`] or [`every`].
///
/// It belongs to the loop's thread (it is neither `Send` nor `Sync`);
/// dropping it leaves the timer running, [`Timer::cancel`] stops it.
#[derive(Debug)]
pub struct Timer {
    /// The timer's id in the loop's table.
    id: u64,
    /// Ties the handle to the thread whose table holds the timer.
    _thread: PhantomData<std::rc::Rc<()>>,
}

impl Timer {
    /// Stops the timer; false when it had already run (a one-shot timer)
    /// or been cancelled.
    pub fn cancel(self) -> bool {
        crate::driver::timers::cancel(self.id)
    }
}

/// Runs `f` once on the worker's event loop, `delay` from now, between
/// requests. Call it from the loop: the handler factory, a handler,
/// `on_message` or another timer (a timer set on another thread never
/// runs). `f` must not block: it runs on the loop that serves every
/// connection of the worker.
///
/// ```no_run
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use std::time::Duration;
/// use forkring::{Request, Response, Server};
///
/// Server::builder().serve(|| {
///     // Refreshed every second on the loop; read by the handler.
///     let ticks = Rc::new(Cell::new(0u64));
///     let t = ticks.clone();
///     forkring::worker::every(Duration::from_secs(1), move || t.set(t.get() + 1));
///     move |_: &Request<'_>, res: &mut Response| {
///         res.body(format!("{} s up\n", ticks.get()));
///     }
/// })
/// # ;
/// ```
pub fn after(delay: Duration, f: impl FnOnce() + 'static) -> Timer {
    Timer { id: crate::driver::timers::after(delay, f), _thread: PhantomData }
}

/// Runs `f` on the worker's event loop every `period` (at least 1 ms),
/// the first time one period from now, until the returned [`Timer`] is
/// cancelled. A run that comes late is not made up for: the next one is a
/// period after it was due, never in a burst. See [`after`].
pub fn every(period: Duration, f: impl FnMut() + 'static) -> Timer {
    Timer { id: crate::driver::timers::every(period, f), _thread: PhantomData }
}

/// The producer half of this worker's ring to the master, behind a spin
/// lock: a worker is single-threaded as far as forkring goes, but a user
/// thread in the worker must not make the ring's producer two.
struct Outbox {
    /// Held while a thread uses `producer`.
    locked: AtomicBool,
    /// The ring's producer, reached only with `locked` held.
    producer: UnsafeCell<&'static mut Producer>,
    /// The worker's counters, for `RingSent` and `RingFull`.
    counters: &'static Counters,
}

// SAFETY: the producer is only reached with `locked` held (Acquire on
// taking it, Release on giving it back), so one thread at a time uses it.
unsafe impl Sync for Outbox {}
// SAFETY: as above; the referenced ring lives in a mapping that outlives
// the process's use of it (leaked on install).
unsafe impl Send for Outbox {}

static OUTBOX: OnceLock<Outbox> = OnceLock::new();

/// Sends `msg` to the master. `Full` when the ring to the master is full
/// (nothing is queued: retry later or drop it knowingly), `TooLarge` past
/// its largest message, `Closed` outside a worker or once the master closed
/// the channel.
pub fn send(msg: &[u8]) -> Result<(), SendError> {
    let Some(out) = OUTBOX.get() else { return Err(SendError::Closed) };
    while out.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        std::hint::spin_loop();
    }
    // SAFETY: `locked` is held: no other reference to the producer exists.
    let producer = unsafe { &mut *out.producer.get() };
    let r = producer.send(msg);
    out.locked.store(false, Ordering::Release);
    match r {
        Ok(()) => out.counters.add_shared(Counter::RingSent, 1),
        Err(SendError::Full) => out.counters.add_shared(Counter::RingFull, 1),
        Err(_) => {}
    }
    r
}

/// Installs this worker's channel: the producer half for [`send`], the
/// consumer half for the event loop. The channel lives for the rest of the
/// process.
fn install(end: WorkerEnd) -> Inbox {
    let end: &'static mut WorkerEnd = Box::leak(Box::new(end));
    let counters: *const Counters = end.counters();
    // SAFETY: the counters live in the shared mapping, which the leaked
    // end keeps mapped for the life of the process; `split` borrows the
    // rings' halves, not the counters.
    let counters: &'static Counters = unsafe { &*counters };
    pool::set_counters(counters);
    let (producer, consumer) = end.split();
    // A second install (never done) would keep the first outbox.
    let _ = OUTBOX.set(Outbox { locked: AtomicBool::new(false), producer: UnsafeCell::new(producer), counters });
    Inbox { consumer, counters, broken: false }
}
