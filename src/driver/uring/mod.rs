//! The io_uring driver: one ring per worker, every socket operation a
//! submission, one `io_uring_enter` per loop turn.
//!
//! What runs on the ring:
//!
//! - one multishot accept on each listener (its index in the user data),
//!   cancelled while the worker is at `max_connections`, backing off after
//!   errors such as `EMFILE`, and cancelled for good when draining: once
//!   its last completion is in (the connections it still brings are
//!   served), what is queued on that listener is accepted directly and the
//!   listener closed;
//! - per connection, one multishot recv drawing from a provided-buffer ring
//!   (so an idle connection holds no receive buffer), and at most one send
//!   covering every response framed so far;
//! - a multishot poll on the control eventfd, and a timer that wakes the
//!   sweep for expired deadlines.
//!
//! Every submission carries a [`Token`](token::Token) in its user data: the
//! operation, and for connection operations the slab slot and that slot's
//! generation, so a completion that arrives for an earlier occupant of a
//! slot is recognised. A slot is freed only when its connection has no
//! recv and no send left in the kernel; a connection being closed first
//! has its operations cancelled.
//!
//! # A turn of the loop
//!
//! ```text
//!   reconcile the connections the last turn touched, and the accept
//!   keep the eventfd polls and the timeout armed
//!   submit everything and wait (one io_uring_enter)
//!   handle the completions: they change state and mark connections
//!   deliver the master's messages, run the timers, complete deferred
//!   answers, and sweep when due (the core's shared steps)
//! ```
//!
//! A completion changes its connection's state and marks it (one that
//! closes the connection cancels what it has in the kernel at once);
//! reconciling, in one place, then decides what to submit for it.
//!
//! Where this module stops: HTTP is `http::Conn`'s business; what to do
//! about the listener, accept errors, the drain, deadlines and closing is
//! [`super::core`]'s, which also runs the sweep and the deferred hand-off
//! over this loop's [`Backend`] side. This module submits operations and
//! reads their completions. Its rooms:
//!
//! | file | job |
//! |---|---|
//! | [`setup`](mod@setup) | the ring's flags and probes |
//! | [`bufring`] | the provided receive buffers, all of its raw memory |
//! | [`token`] | the user data of a submission |
//! | [`sqe`] | each entry the loop submits, built in one place |
//! | [`submit`] | queueing entries, cancelling, counting what is in flight |
//! | [`conn`] | a connection's state and operations in flight |
//! | [`complete`] | what a connection's recv, send or close completion changes |
//! | [`reconcile`] | what to submit for a connection next |
//! | [`file`](mod@file) | file bodies, through a pipe |
//! | [`accept`] | taking connections in |
//! | [`close`] | letting them go, and the upgrade hand-over |
//! | [`wake`] | the loop's own eventfd polls and timeout |
//! | [`exit`] | leaving the ring clean |
//! | this file | the loop |

mod accept;
mod bufring;
mod close;
mod complete;
mod conn;
mod exit;
mod file;
mod reconcile;
mod setup;
mod sqe;
mod submit;
mod token;
mod wake;

use std::io;
use std::os::fd::OwnedFd;

use io_uring::types::Timespec;
use io_uring::CompletionQueue;

pub(crate) use setup::{is_refusal, setup, Ring};

use super::core::{self, Backend, Core};
use super::link::Link;
use super::slab::{Key, Slab};
use crate::config::Config;
use crate::http::Handler;
use conn::Connection;
use submit::{entered, Io, Multishot};

impl Ring {
    /// Serves `listeners` until the worker has drained.
    pub(crate) fn run<H: Handler>(
        mut self,
        config: &Config,
        listeners: Vec<OwnedFd>,
        handler: &mut H,
        link: &Link,
        ready: impl FnOnce(),
    ) -> io::Result<()> {
        let Ring { uring, bufs, .. } = &mut self;
        let (mut submitter, sq, mut cq) = uring.split();
        // Saves a descriptor lookup per enter (Linux 5.18); optional.
        if let Err(e) = submitter.register_ring_fd() {
            log::debug!("io_uring: ring fd not registered: {e}");
        }
        let io = Io { submitter, sq, bufs, inflight: 0 };
        let mut driver = Driver::new(config, listeners, handler, link, io);
        ready();
        // A panic out of the loop (a handler's `on_message`, a bug) must not
        // unwind past the ring while the kernel may still write into the
        // receive buffers or read the send buffers: finish first (cancel,
        // wait, or leak what the kernel keeps), then go on unwinding.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| driver.serve(&mut cq)));
        driver.finish(&mut cq);
        match result {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
        // `self` drops here: the ring first, then the buffer memory.
    }
}

/// The loop's state.
struct Driver<'r, 'a, H> {
    /// Submissions and the buffers.
    io: Io<'r>,
    /// What both backends share: protocol state, listener, drain, policy.
    /// While an accept is in the kernel it holds the listener open, so the
    /// drain closes the listener only after the accept's last completion.
    core: Core<'a>,
    /// The user's handler.
    handler: &'a mut H,
    /// Open connections.
    conns: Slab<Connection>,
    /// Connections touched by this turn's completions, to reconcile before
    /// the next submit.
    dirty: Vec<Key>,
    /// The multishot accept of each listener, by index.
    accept: Vec<Multishot>,
    /// The multishot poll on the link's wake-up eventfd is in the kernel.
    wake_armed: bool,
    /// The poll on the ring-from-master eventfd is in the kernel.
    inbox_armed: bool,
    /// A timeout is in the kernel, due at `timer_due`.
    timer_armed: bool,
    /// When the armed timeout fires (in `WorkerState::now_ms` time).
    timer_due: u64,
    /// A cancel of the armed timeout was submitted.
    timer_cancelling: bool,
    /// The timeout's duration, boxed so its address stays put. The kernel
    /// copies it when it takes the submission (no SQPOLL here), so changing
    /// it affects only timeouts submitted later.
    timer_ts: Box<Timespec>,
    /// An error that ends the loop.
    fatal: Option<io::Error>,
}

impl<'r, 'a, H: Handler> Driver<'r, 'a, H> {
    fn new(config: &'a Config, listeners: Vec<OwnedFd>, handler: &'a mut H, link: &'a Link, io: Io<'r>) -> Self {
        let accept = vec![Multishot::Off; listeners.len()];
        Driver {
            io,
            core: Core::new(config, link, listeners),
            handler,
            conns: Slab::default(),
            dirty: Vec::new(),
            accept,
            wake_armed: false,
            inbox_armed: false,
            timer_armed: false,
            timer_due: 0,
            timer_cancelling: false,
            timer_ts: Box::new(Timespec::new()),
            fatal: None,
        }
    }

    fn serve(&mut self, cq: &mut CompletionQueue<'_>) -> io::Result<()> {
        if self.core.link.draining() {
            self.start_drain();
        }
        loop {
            if self.core.draining() {
                for index in 0..self.accept.len() {
                    if self.accept[index] == Multishot::Off {
                        for fd in self.core.close_listener(index) {
                            self.add(fd);
                        }
                    }
                }
            }
            self.reconcile_all();
            self.reconcile_accept();
            if let Some(e) = self.fatal.take() {
                return Err(e);
            }
            if let Some(result) = self.core.drain_result(self.conns.len()) {
                return result;
            }
            self.arm_background();
            self.io.bufs.publish();
            self.io.sq.sync();
            self.core.sh.end_turn();
            // A message from the master already waiting means no sleep; one
            // that comes while the loop sleeps fires the inbox poll.
            // Nor while heavy requests wait in the loop's queue.
            let want = usize::from(self.core.link.may_sleep() && !self.core.sh.has_parked());
            // Completions posted since the turn took them, or held by the
            // kernel as task work (`taskrun_flag`, where the ring has it),
            // are input that waited for this turn.
            cq.sync();
            let pending = want == 0 || !CompletionQueue::is_empty(cq) || self.io.sq.taskrun();
            self.core.sh.input_pending(pending);
            entered(self.io.submitter.submit_and_wait(want))?;
            self.io.sq.sync();
            self.core.sh.tick();
            cq.sync();
            for cqe in cq.by_ref() {
                self.complete(cqe);
            }
            if self.core.link.has_messages() {
                // The answers this turn made go to the kernel before the
                // master's messages are handled, not after: a flood of
                // messages then costs the connections a submission, not
                // a batch of handler calls each.
                self.reconcile_all();
                self.io.flush()?;
            }
            self.core.link.deliver(&mut *self.handler);
            self.core.run_timers();
            core::complete_deferred(self);
            if self.core.sweep_due() {
                core::sweep(self);
            }
            // Heavy requests last, the turn's answers submitted before
            // each handler runs.
            core::resume_parked(self);
        }
    }

    /// Records the error of a submission that could not be queued.
    fn check(&mut self, r: io::Result<()>) {
        if let Err(e) = r {
            self.fatal.get_or_insert(e);
        }
    }

    /// Enters the drain: the accept is cancelled by `reconcile_accept`, the
    /// listener closed once it is out of the kernel, and every connection
    /// finishes (idle ones after a short grace).
    fn start_drain(&mut self) {
        if !self.core.start_drain(self.conns.len()) {
            return;
        }
        for (_, c) in self.conns.iter_mut() {
            c.http.start_drain(&self.core.sh);
        }
    }
}

impl<'a, H: Handler> Backend<'a> for Driver<'_, 'a, H> {
    type Conn = Connection;
    type Handler = H;

    #[inline]
    fn parts(&mut self) -> (&mut Core<'a>, &mut Slab<Connection>, &mut H) {
        (&mut self.core, &mut self.conns, &mut *self.handler)
    }

    /// Queues the connection for the next reconcile, which sends what it
    /// has: never closes it here.
    fn serve(&mut self, key: Key) -> bool {
        self.mark(key);
        false
    }

    fn close(&mut self, key: Key) {
        Driver::close(self, key);
    }

    fn send_framed(&mut self) {
        self.reconcile_all();
        if self.io.sq.is_empty() {
            return;
        }
        if let Err(e) = self.io.flush() {
            self.fatal.get_or_insert(e);
        }
    }
}
