//! The event loop's link to the rest of its worker: the drain flag and the
//! eventfd that wakes the loop when it is set (from a signal handler, or
//! when the master's end of the lifeline hangs up), the ring of messages
//! from the master, and the descriptors the master hands over on the
//! lifeline (a flag the worker's SIGIO handler sets, read the same way).

use crate::http::AccessLog;
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::http::{Handler, Spawner};
use crate::ipc::{Consumer, Counter, Counters};
use crate::lifeline::{self, FdRead};

/// Most messages from the master a worker handles per loop turn.
pub(crate) const MESSAGES_PER_TURN: usize = 256;
/// Most records (descriptors) read from the lifeline per loop turn.
const DESCRIPTORS_PER_TURN: usize = 8;

/// Set when the lifeline may hold a record (a descriptor from the master);
/// cleared by the loop before it reads.
static LIFELINE_READABLE: AtomicBool = AtomicBool::new(false);

/// Says the lifeline has something to read and wakes the loop.
/// Async-signal-safe (an atomic store and one `write`): the worker's SIGIO
/// handler calls it.
pub(crate) fn lifeline_from_signal() {
    LIFELINE_READABLE.store(true, Ordering::SeqCst);
    wake_loop();
}

/// Set when the worker is asked to drain; read by the loop after its
/// wake-up fd fires.
static DRAIN: AtomicBool = AtomicBool::new(false);
/// The eventfd that [`drain_from_signal`] writes to wake the loop; -1 if
/// none.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// Wakes the loop, from any thread (a completed deferred response). Once
/// the loop's [`Link`] is gone it does nothing: the descriptor number is
/// never written after it may have been reused.
pub(crate) fn wake_loop() {
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        crate::sys::eventfd_wake(fd);
    }
}

/// Asks the loop to drain. Async-signal-safe (an atomic store and one
/// `write`): the worker's signal handlers call it.
pub(crate) fn drain_from_signal() {
    DRAIN.store(true, Ordering::SeqCst);
    wake_loop();
}

/// What the event loop needs of the worker's channel from the master.
#[derive(Debug)]
pub(crate) struct Inbox {
    /// The consumer half of the ring from the master.
    pub(crate) consumer: &'static mut Consumer,
    /// The worker's counters in shared memory.
    pub(crate) counters: &'static Counters,
    /// The ring was found damaged: it is not read again (the master
    /// replaces the worker soon), and that is logged once.
    pub(crate) broken: bool,
}

/// The loop's link to its worker. Drivers keep a read on
/// [`Link::wake_fd`] in flight (io_uring) or registered (epoll), and on
/// [`Link::inbox_fd`] when there is one.
#[derive(Debug)]
pub(crate) struct Link {
    /// Becomes readable when a drain is asked for.
    wake: OwnedFd,
    /// The ring from the master, when the worker is part of a cluster.
    inbox: Option<RefCell<Inbox>>,
    /// The worker's access log, opened before the loop starts, until the
    /// loop's core takes it.
    access_log: RefCell<Option<AccessLog>>,
    /// The worker's blocking pool, for `Response::blocking`; `None`: no
    /// pool (those requests are answered `503`).
    spawner: Option<Spawner>,
    /// The worker's end of its lifeline (owned by the worker's entry,
    /// which outlives the loop); -1 if none.
    lifeline: RawFd,
}

impl Link {
    /// Creates the wake-up eventfd and clears the drain flag.
    pub(crate) fn new() -> io::Result<Link> {
        let wake = crate::sys::eventfd()?;
        WAKE_FD.store(wake.as_raw_fd(), Ordering::SeqCst);
        DRAIN.store(false, Ordering::SeqCst);
        LIFELINE_READABLE.store(false, Ordering::SeqCst);
        Ok(Link { wake, inbox: None, access_log: RefCell::new(None), spawner: None, lifeline: -1 })
    }

    /// The eventfd that becomes readable when a drain is asked for.
    pub(crate) fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Resets the eventfd after a wake-up.
    pub(crate) fn ack(&self) {
        let _ = crate::sys::eventfd_drain(self.wake.as_raw_fd());
    }

    /// True once the worker has been asked to drain.
    pub(crate) fn draining(&self) -> bool {
        DRAIN.load(Ordering::SeqCst)
    }

    /// Attaches the worker's ring from the master.
    pub(crate) fn set_inbox(&mut self, inbox: Inbox) {
        self.inbox = Some(RefCell::new(inbox));
    }

    /// The worker's end of its lifeline, where descriptors from the master
    /// arrive. It must stay open for as long as this link exists.
    pub(crate) fn set_lifeline(&mut self, fd: RawFd) {
        self.lifeline = fd;
    }

    /// Hands the loop the worker's blocking pool.
    pub(crate) fn set_spawner(&mut self, spawner: Spawner) {
        self.spawner = Some(spawner);
    }

    /// The worker's blocking pool, if it has one.
    pub(crate) fn spawner(&self) -> Option<Spawner> {
        self.spawner
    }

    /// Hands the loop the worker's access log.
    pub(crate) fn set_access_log(&self, log: AccessLog) {
        *self.access_log.borrow_mut() = Some(log);
    }

    /// The access log, once (the loop's core keeps it).
    pub(crate) fn take_access_log(&self) -> Option<AccessLog> {
        self.access_log.borrow_mut().take()
    }

    /// The worker's counters in shared memory, if it has any.
    pub(crate) fn counters(&self) -> Option<&'static Counters> {
        self.inbox.as_ref().map(|i| i.borrow().counters)
    }

    /// The eventfd that becomes readable when the master wrote to a
    /// sleeping worker's ring. Drivers keep a read on it in flight (or have
    /// it registered) and call [`Link::deliver`] every turn.
    pub(crate) fn inbox_fd(&self) -> Option<RawFd> {
        let inbox = self.inbox.as_ref()?.borrow();
        inbox.consumer.wake_fd().map(|n| n.fd().as_raw_fd())
    }

    /// Resets the inbox eventfd after it fired.
    pub(crate) fn ack_inbox(&self) {
        if let Some(fd) = self.inbox_fd() {
            let _ = crate::sys::eventfd_drain(fd);
        }
    }

    /// Hands the messages waiting in the ring from the master to the
    /// handler; drivers call it once per loop turn. Returns how many.
    pub(crate) fn deliver<H: Handler>(&self, handler: &mut H) -> usize {
        self.deliver_descriptors(handler) + self.deliver_messages(handler)
    }

    /// Hands the descriptors waiting on the lifeline to the handler, at
    /// most [`DESCRIPTORS_PER_TURN`]; what is left keeps the flag set (and
    /// the loop awake). A record that is not one descriptor with its tag is
    /// dropped with what came with it, and logged.
    fn deliver_descriptors<H: Handler>(&self, handler: &mut H) -> usize {
        if self.lifeline < 0 || !LIFELINE_READABLE.swap(false, Ordering::SeqCst) {
            return 0;
        }
        // SAFETY: the worker's entry keeps the lifeline open for as long as
        // this link exists (`set_lifeline`).
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.lifeline) };
        let mut n = 0;
        while n < DESCRIPTORS_PER_TURN {
            match lifeline::recv_fd(fd) {
                FdRead::Fd(passed, tag) => {
                    n += 1;
                    let r =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.on_descriptor(passed, &tag)));
                    if r.is_err() {
                        log::error!("on_descriptor panicked; the descriptor is closed");
                    }
                }
                FdRead::Malformed(what) => log::error!("lifeline: the master sent {what}; dropped"),
                // A hang-up is the SIGIO handler's (a drain).
                FdRead::Empty | FdRead::HangUp => return n,
            }
        }
        // More may wait: look again next turn.
        LIFELINE_READABLE.store(true, Ordering::SeqCst);
        n
    }

    /// Hands the messages waiting in the ring from the master to the
    /// handler.
    fn deliver_messages<H: Handler>(&self, handler: &mut H) -> usize {
        let Some(inbox) = &self.inbox else { return 0 };
        let mut inbox = inbox.borrow_mut();
        let inbox = &mut *inbox;
        if inbox.broken {
            return 0;
        }
        inbox.consumer.after_wake();
        // A bounded batch per turn: a flooding master cannot hold up the
        // connections; what is left keeps the loop from sleeping.
        // A panic in the user's `on_message` is caught like one in `handle`:
        // that message is lost, the worker and its connections are not.
        let on_message = |msg: &[u8]| {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.on_message(msg)));
            if r.is_err() {
                log::error!("on_message panicked; the message ({} bytes) is dropped", msg.len());
            }
        };
        match inbox.consumer.recv_up_to(MESSAGES_PER_TURN, on_message) {
            Ok(n) => {
                if n > 0 {
                    inbox.counters.add(Counter::RingReceived, n as u64);
                }
                n
            }
            Err(e) => {
                log::error!("ring from the master is unreadable ({e}); no more messages are read from it");
                inbox.broken = true;
                0
            }
        }
    }

    /// Whether a message from the master waits (one word read; no side
    /// effect).
    pub(crate) fn has_messages(&self) -> bool {
        LIFELINE_READABLE.load(Ordering::SeqCst)
            || self.inbox.as_ref().is_some_and(|inbox| {
                let inbox = inbox.borrow();
                !inbox.broken && !inbox.consumer.is_empty()
            })
    }

    /// Says the loop is about to block: false when a message is already
    /// waiting (then it must not block). While the loop is busy, the
    /// master's sends cost it no wake-up.
    pub(crate) fn may_sleep(&self) -> bool {
        if LIFELINE_READABLE.load(Ordering::SeqCst) {
            return false;
        }
        match &self.inbox {
            Some(inbox) => {
                let mut inbox = inbox.borrow_mut();
                inbox.broken || inbox.consumer.prepare_sleep()
            }
            None => true,
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = WAKE_FD.compare_exchange(self.wake.as_raw_fd(), -1, Ordering::SeqCst, Ordering::SeqCst);
    }
}
