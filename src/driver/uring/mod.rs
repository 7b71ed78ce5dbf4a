//! The io_uring driver: one ring per worker, every socket operation a
//! submission, one `io_uring_enter` per loop turn.
//!
//! What runs on the ring:
//!
//! - one multishot accept on the listener, cancelled while the worker is at
//!   `max_connections`, backing off after errors such as `EMFILE`, and
//!   cancelled for good when draining: once its last completion is in (the
//!   connections it still brings are served), what is queued on the
//!   listener is accepted directly and the listener closed;
//! - per connection, one multishot recv drawing from a provided-buffer ring
//!   (so an idle connection holds no receive buffer), and at most one send
//!   covering every response framed so far;
//! - a multishot poll on the control eventfd, and a timer that wakes the
//!   sweep for expired deadlines.
//!
//! Every submission carries a [`Token`] in its user data: the operation, and
//! for connection operations the slab slot and that slot's generation, so a
//! completion that arrives for an earlier occupant of a slot is recognised.
//! A slot is freed only when its connection has no recv and no send left in
//! the kernel; a connection being closed first has its operations cancelled.
//!
//! Where this module stops: HTTP is `http::Conn`'s business; what to do
//! about the listener, accept errors, the drain, deadlines and closing is
//! [`super::core`]'s. This module submits operations and reads their
//! completions. Its parts: [`setup`] (flags and probes), [`bufring`] (the
//! provided buffers, all of its raw memory), [`token`] (user data), and the
//! loop here.

mod bufring;
mod setup;
mod token;

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::ptr;
use std::time::{Duration, Instant};

use io_uring::cqueue;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types::{self, CancelBuilder, SubmitArgs, Timespec};
use io_uring::{CompletionQueue, SubmissionQueue, Submitter};

pub(crate) use setup::{is_refusal, setup, Ring};

use super::core::{self, AcceptError, After, Backend, Core, Phase};
use super::link::Link;
use super::slab::{Key, Slab};
use crate::config::Config;
use crate::http::{Conn, Handler, OUTPUT_HIGH_WATER};
use bufring::BufRing;
use setup::{errno, BUF_GROUP};
use token::{Op, Token};

/// Below this many free connection slots, connections are accepted one
/// submission at a time: a multishot accept takes every connection queued
/// in the backlog at once, which could overshoot `max_connections`.
const ACCEPT_MULTISHOT_HEADROOM: usize = 256;
/// How long the worker waits for cancelled operations when it exits.
const EXIT_WAIT: Duration = Duration::from_secs(2);

impl Ring {
    /// Serves `listener` until the worker has drained.
    pub(crate) fn run<H: Handler>(
        mut self,
        config: &Config,
        listener: OwnedFd,
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
        let mut driver = Driver::new(config, listener, handler, link, io);
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

/// The state of a connection's multishot recv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recv {
    /// Not in the kernel.
    Off,
    /// In the kernel, delivering data.
    Armed,
    /// A cancel was submitted; the final completion has not arrived.
    Cancelling,
}

/// Output handed to the kernel: the bytes stay in `buf`, which does not move
/// or change while a send is in flight.
#[derive(Debug)]
struct Outgoing {
    /// Every response taken from the `Conn` for this send.
    buf: Vec<u8>,
    /// Bytes of `buf` the kernel has sent.
    written: usize,
}

impl Outgoing {
    fn remaining(&self) -> usize {
        self.buf.len() - self.written
    }
}

/// Where a connection's file body is between the file and the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Splice {
    /// Nothing in the kernel.
    Off,
    /// File to pipe in the kernel.
    In,
    /// Poll for room, then pipe to socket, in the kernel (linked).
    Out,
}

/// The pipe a connection's file body passes through: file pages go in by
/// reference and out to the socket the same way, never through user
/// space. Its capacity bounds the file bytes in flight.
#[derive(Debug)]
struct Pipe {
    /// The read end (spliced to the socket).
    read: OwnedFd,
    /// The write end (spliced from the file).
    write: OwnedFd,
    /// Its capacity in bytes.
    capacity: u32,
    /// Bytes in it, read from the file and not yet in the socket.
    filled: u32,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // A bigger pipe moves a file in fewer round trips; the default
        // (16 pages) is kept where the system refuses.
        let capacity = match nix::fcntl::fcntl(write.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
            Ok(n) if n > 0 => n as u32,
            _ => 64 * 1024,
        };
        Ok(Pipe { read, write, capacity, filled: 0 })
    }
}

/// The pipe size asked for a connection sending a file.
const PIPE_SIZE: i32 = 256 * 1024;

/// One connection: its socket, protocol state and operations in flight.
#[derive(Debug)]
struct Connection {
    /// The accepted socket; closed when the slot is freed.
    fd: OwnedFd,
    /// The protocol state machine.
    http: Conn,
    /// The multishot recv.
    recv: Recv,
    /// Output taken for sending, until all of it is sent.
    out: Option<Outgoing>,
    /// A send of `out` is in the kernel.
    sending: bool,
    /// Phase of life.
    phase: Phase,
    /// The peer has shut down its side (or the connection failed).
    peer_eof: bool,
    /// The protocol state has been told of the EOF (`Conn::on_eof`).
    eof_seen: bool,
    /// In the loop's dirty list.
    queued: bool,
    /// Who closes `fd`.
    fd_close: FdClose,
    /// The pipe of a file body, made at the first file it sends (boxed:
    /// most connections never send one).
    pipe: Option<Box<Pipe>>,
    /// The file body's splices in the kernel.
    splice: Splice,
}

/// Who closes a connection's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FdClose {
    /// The loop, when the slot is freed.
    Loop,
    /// A close was submitted; its completion has not arrived.
    Ring,
    /// The ring closed it: freeing the slot must not close it again.
    Closed,
}

impl core::Connection for Connection {
    #[inline]
    fn phase(&self) -> Phase {
        self.phase
    }

    #[inline]
    fn http(&self) -> &Conn {
        &self.http
    }

    #[inline]
    fn http_mut(&mut self) -> &mut Conn {
        &mut self.http
    }

    /// A send of output taken from the protocol state has not finished.
    #[inline]
    fn output_taken(&self) -> bool {
        self.out.is_some()
    }
}

impl Connection {
    /// Whether an operation of this connection is in the kernel.
    fn busy(&self) -> bool {
        self.recv != Recv::Off || self.sending || self.fd_close == FdClose::Ring || self.splice != Splice::Off
    }

    /// File bytes read into the pipe and not yet in the socket.
    fn piped(&self) -> u32 {
        self.pipe.as_ref().map_or(0, |p| p.filled)
    }

    /// Output bytes not yet sent, taken or not.
    fn unsent(&self) -> usize {
        self.http.output_len() + self.out.as_ref().map_or(0, Outgoing::remaining) + self.piped() as usize
    }
}

/// The submission side of the ring, and the count of operations whose final
/// completion has not arrived.
struct Io<'r> {
    /// Enters the kernel.
    submitter: Submitter<'r>,
    /// The submission queue.
    sq: SubmissionQueue<'r>,
    /// The receive buffers.
    bufs: &'r mut BufRing,
    /// Submissions whose last completion (one without `F_MORE`) is pending.
    inflight: usize,
}

impl Io<'_> {
    /// Queues `entry`, flushing the queue to the kernel if it is full, and
    /// counts it in `inflight`.
    ///
    /// # Safety
    ///
    /// Any memory `entry` points to must stay valid and unmoved until the
    /// operation's final completion has been reaped.
    unsafe fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.queue(&entry) }?;
        self.inflight += 1;
        Ok(())
    }

    /// Asks the kernel to cancel the operation submitted as `target`. A
    /// cancel that succeeds posts no completion (`CQE_SKIP_SUCCESS`); one
    /// that fails because the target already ended posts one that the loop
    /// ignores. Cancels are not counted in `inflight`: they refer to no
    /// memory.
    fn cancel(&mut self, target: Token) -> io::Result<()> {
        let entry = opcode::AsyncCancel::new(target.0)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(Token::new(Op::Cancel, target.key()).0);
        // SAFETY: a cancel refers to no memory.
        unsafe { self.queue(&entry) }
    }

    /// # Safety
    ///
    /// As for [`Io::push`].
    unsafe fn queue(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        for _ in 0..8 {
            // SAFETY: forwarded from this function's contract.
            if unsafe { self.sq.push(entry) }.is_ok() {
                return Ok(());
            }
            self.flush()?;
        }
        Err(io::Error::other("io_uring submission queue stays full"))
    }

    /// Hands queued submissions (and returned buffers) to the kernel now.
    fn flush(&mut self) -> io::Result<()> {
        self.bufs.publish();
        self.sq.sync();
        let r = self.submitter.submit();
        self.sq.sync();
        entered(r)
    }
}

/// The result of an `io_uring_enter`: interrupted, busy (completions to
/// reap first) or out of resources for now is no error, the next turn
/// enters again.
fn entered(r: io::Result<usize>) -> io::Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// State of the multishot accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Accept {
    /// Not in the kernel.
    Off,
    /// In the kernel.
    Armed,
    /// A cancel was submitted; the final completion has not arrived.
    Cancelling,
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
    /// The multishot accept.
    accept: Accept,
    /// The multishot poll on the link's wake-up eventfd is in the kernel.
    wake_armed: bool,
    /// The poll on the ring-from-master eventfd is in the kernel.
    inbox_armed: bool,
    /// A timeout is in the kernel, due at `timer_due`.
    timer_armed: bool,
    /// When the armed timeout fires (in `Shared::now_ms` time).
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
    fn new(config: &'a Config, listener: OwnedFd, handler: &'a mut H, link: &'a Link, io: Io<'r>) -> Self {
        Driver {
            io,
            core: Core::new(config, link, listener),
            handler,
            conns: Slab::default(),
            dirty: Vec::new(),
            accept: Accept::Off,
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
            if self.core.draining() && self.accept == Accept::Off {
                for fd in self.core.close_listener() {
                    self.add(fd);
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
            let want = usize::from(self.core.link.may_sleep());
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
        }
    }

    /// Keeps the link's polls and a timeout for the core's next wake-up in
    /// the kernel.
    fn arm_background(&mut self) {
        let link = self.core.link;
        if !self.wake_armed {
            let poll = opcode::PollAdd::new(types::Fd(link.wake_fd()), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(Token::of(Op::Wake).0);
            // SAFETY: a poll refers to no memory.
            let r = unsafe { self.io.push(poll) };
            self.check(r);
            self.wake_armed = true;
        }
        if let (false, Some(fd)) = (self.inbox_armed, link.inbox_fd()) {
            let poll = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(Token::of(Op::Inbox).0);
            // SAFETY: a poll refers to no memory.
            let r = unsafe { self.io.push(poll) };
            self.check(r);
            self.inbox_armed = true;
        }
        let due = self.core.next_wake();
        if self.timer_armed {
            // The core wants to wake earlier (the drain began, accepting
            // paused): the timeout ends, and is armed again when its
            // completion is in.
            if due < self.timer_due && !self.timer_cancelling {
                let r = self.io.cancel(Token::of(Op::Timer));
                self.check(r);
                self.timer_cancelling = true;
            }
            return;
        }
        let after = due.saturating_sub(self.core.sh.now_ms()).max(1);
        *self.timer_ts = Timespec::from(Duration::from_millis(after));
        let timer = opcode::Timeout::new(&*self.timer_ts as *const Timespec).build().user_data(Token::of(Op::Timer).0);
        // SAFETY: the timespec is boxed and lives as long as the driver,
        // which outlives every submission (see `finish`); the kernel copies
        // it at submission.
        let r = unsafe { self.io.push(timer) };
        self.check(r);
        self.timer_armed = true;
        self.timer_due = due;
    }

    /// Records the error of a submission that could not be queued.
    fn check(&mut self, r: io::Result<()>) {
        if let Err(e) = r {
            self.fatal.get_or_insert(e);
        }
    }

    fn complete(&mut self, cqe: cqueue::Entry) {
        let (res, flags, token) = (cqe.result(), cqe.flags(), Token(cqe.user_data()));
        if !cqueue::more(flags) && token.op() != Some(Op::Cancel) {
            self.io.inflight = self.io.inflight.saturating_sub(1);
        }
        match token.op() {
            Some(Op::Recv) => self.on_recv(token.key(), res, flags),
            Some(Op::Send) => self.on_send(token.key(), res),
            Some(Op::Accept) => self.on_accept(res, flags),
            Some(Op::Wake) => self.on_wake(res, flags),
            Some(Op::Timer) => self.on_timer(res),
            Some(Op::Inbox) => {
                if !cqueue::more(flags) {
                    self.inbox_armed = false;
                }
                // The eventfd is level-triggered for poll: reset it; the
                // messages are delivered once per loop turn.
                self.core.link.ack_inbox();
            }
            Some(Op::Close) => self.on_close(token.key(), res),
            Some(Op::SpliceIn) => self.on_splice_in(token.key(), res),
            Some(Op::SpliceOut) => self.on_splice_out(token.key(), res),
            Some(Op::Cancel | Op::Probe | Op::PollOut) | None => {}
        }
    }

    /// The ring's close of a connection's socket completed.
    fn on_close(&mut self, key: Key, res: i32) {
        let Some(c) = self.conns.get_mut(key) else {
            debug_assert!(false, "close completion for a freed slot");
            return;
        };
        // A close that was never carried out leaves the descriptor to the
        // loop; otherwise it is released, as close(2) releases it even when
        // it reports an error.
        c.fd_close = if res == -libc::ECANCELED || res == -libc::EBADF { FdClose::Loop } else { FdClose::Closed };
        if res < 0 && c.fd_close == FdClose::Closed {
            log::debug!("close: {}", errno(-res));
        }
        self.mark(key);
    }

    /// File bytes reached the pipe: they go on to the socket next.
    fn on_splice_in(&mut self, key: Key, res: i32) {
        let Some(c) = self.conns.get_mut(key) else { return };
        c.splice = Splice::Off;
        match res {
            n if n > 0 => {
                if let Some(p) = &mut c.pipe {
                    p.filled = n as u32;
                }
            }
            0 => {
                log::warn!("a file body ended early (the file shrank); closing the connection");
                c.http.file_failed(&mut self.core.sh);
            }
            e if e == -libc::ECANCELED => {}
            e => {
                log::warn!("splice from a file: {}; closing the connection", errno(-e));
                c.http.file_failed(&mut self.core.sh);
                self.close(key);
                return;
            }
        }
        self.mark(key);
    }

    /// Piped file bytes reached the socket.
    fn on_splice_out(&mut self, key: Key, res: i32) {
        let Some(c) = self.conns.get_mut(key) else { return };
        c.splice = Splice::Off;
        if res > 0 {
            if let Some(p) = &mut c.pipe {
                p.filled = p.filled.saturating_sub(res as u32);
            }
            self.core.sh.count_bytes(0, res as usize);
            c.http.file_sent(res as u64, &mut self.core.sh);
            self.mark(key);
            return;
        }
        if res == -libc::EAGAIN || res == -libc::EINTR {
            self.mark(key);
            return;
        }
        if res != -libc::ECANCELED || c.phase == Phase::Open {
            log::debug!("splice to a socket: {}", errno(-res));
        }
        self.close(key);
    }

    fn on_recv(&mut self, key: Key, res: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        let more_in_buf = cqueue::buffer_more(flags);
        let Some(c) = self.conns.get_mut(key) else {
            if let Some(bid) = bid {
                // SAFETY: this completion's own buffer, length and flag.
                let _ = unsafe { self.io.bufs.received(bid, res.max(0) as usize, more_in_buf) };
            }
            return;
        };
        if !cqueue::more(flags) {
            c.recv = Recv::Off;
        }
        if res > 0 {
            self.core.sh.count_bytes(res as usize, 0);
            if let Some(bid) = bid {
                // SAFETY: the kernel delivered `res` bytes into buffer `bid`
                // with this completion; they stay untouched until the ring
                // is published, after they are parsed.
                let data = unsafe { self.io.bufs.received(bid, res as usize, more_in_buf) };
                if c.phase == Phase::Open {
                    c.http.on_read(data, &mut self.core.sh, &mut *self.handler);
                }
            }
        } else {
            if let Some(bid) = bid {
                self.io.bufs.returned(bid, more_in_buf);
            }
            match -res {
                // The EOF is handed to the protocol state by `reconcile`,
                // after the requests it holds back.
                0 => c.peer_eof = true,
                // Every buffer was in use: they are back now, and the
                // reconcile below re-arms the recv.
                libc::ENOBUFS | libc::ECANCELED => {}
                e => {
                    log::debug!("recv: {}", errno(e));
                    c.peer_eof = true;
                    self.mark(key);
                    self.close(key);
                    return;
                }
            }
        }
        self.mark(key);
    }

    fn on_send(&mut self, key: Key, res: i32) {
        let Some(c) = self.conns.get_mut(key) else {
            debug_assert!(false, "send completion for a freed slot");
            return;
        };
        c.sending = false;
        let Some(out) = c.out.as_mut() else {
            return;
        };
        let sh = &mut self.core.sh;
        let mut failed = false;
        if res > 0 {
            sh.count_bytes(0, res as usize);
            out.written += res as usize;
            c.http.on_sent(sh);
            if out.remaining() == 0 {
                let done = c.out.take().map(|o| o.buf).unwrap_or_default();
                sh.recycle(done);
            }
        } else {
            if let Some(o) = c.out.take() {
                sh.recycle(o.buf);
            }
            // A send of a non-empty buffer that moves nothing is a failure
            // too: retrying it would spin.
            if res != -libc::ECANCELED {
                log::debug!("send: {}", errno(-res));
                failed = true;
            }
        }
        self.mark(key);
        if failed {
            self.close(key);
        }
    }

    fn on_accept(&mut self, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.accept = Accept::Off;
        }
        if res >= 0 {
            self.core.on_accepted();
            // SAFETY: the kernel just installed this descriptor for us and
            // nothing else owns it.
            self.add(unsafe { OwnedFd::from_raw_fd(res) });
            return;
        }
        if -res == libc::ECANCELED {
            return;
        }
        if self.core.on_accept_error(-res) == AcceptError::Unusable {
            self.start_drain();
        }
    }

    /// Takes in a connection just accepted (a draining worker drains it at
    /// once).
    fn add(&mut self, fd: OwnedFd) {
        self.core.sh.count_accept();
        let mut http = Conn::new(&self.core.sh);
        if self.core.draining() {
            http.start_drain(&self.core.sh);
        }
        let key = self.conns.insert(Connection {
            fd,
            http,
            recv: Recv::Off,
            out: None,
            sending: false,
            phase: Phase::Open,
            peer_eof: false,
            eof_seen: false,
            queued: false,
            fd_close: FdClose::Loop,
            pipe: None,
            splice: Splice::Off,
        });
        if let Some(c) = self.conns.get_mut(key) {
            c.http.set_token(key.pack());
            c.http.set_socket(c.fd.as_raw_fd());
        }
        self.mark(key);
    }

    fn on_wake(&mut self, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.wake_armed = false;
        }
        if res < 0 && res != -libc::ECANCELED {
            self.fatal.get_or_insert(io::Error::other(format!("poll on the control eventfd: {}", errno(-res))));
            return;
        }
        self.core.link.ack();
        if self.core.link.draining() {
            self.start_drain();
        }
    }

    fn on_timer(&mut self, res: i32) {
        self.timer_armed = false;
        self.timer_cancelling = false;
        if res < 0 && res != -libc::ETIME && res != -libc::ECANCELED {
            self.fatal.get_or_insert(io::Error::other(format!("sweep timer: {}", errno(-res))));
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

    /// Queues connection `key` for reconciling before the next submit.
    fn mark(&mut self, key: Key) {
        if let Some(c) = self.conns.get_mut(key) {
            if !c.queued {
                c.queued = true;
                self.dirty.push(key);
            }
        }
    }

    fn reconcile_all(&mut self) {
        let mut dirty = mem::take(&mut self.dirty);
        for &key in &dirty {
            self.reconcile(key);
        }
        dirty.clear();
        // Reconciling queues nothing, so this keeps the list's allocation.
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Brings one connection's operations in line with its state: send what
    /// is framed, close what is finished, read while output is below the
    /// high-water mark.
    fn reconcile(&mut self, key: Key) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.queued = false;
        if c.phase == Phase::Closing {
            if !c.busy() {
                self.free(key);
            }
            return;
        }
        let sh = &mut self.core.sh;
        if c.phase == Phase::Open {
            if !c.sending && c.out.is_none() && c.http.is_streaming() {
                // The last send is done: take more of the stream.
                c.http.refill(sh);
            }
            if !c.sending && c.out.is_none() && c.http.has_output() {
                c.out = Some(Outgoing { buf: c.http.take_output(), written: 0 });
            }
            if c.http.has_pending_input() {
                // Requests the protocol state held back for lack of output
                // room are answered once the output has been taken (a no-op
                // when all it holds is an incomplete head).
                c.http.resume(sh, &mut *self.handler);
                if !c.sending && c.out.is_none() && c.http.has_output() {
                    c.out = Some(Outgoing { buf: c.http.take_output(), written: 0 });
                }
            }
            if c.peer_eof && !c.eof_seen && (!c.http.has_pending_input() || c.http.output_len() < OUTPUT_HIGH_WATER) {
                // The peer's EOF reaches the protocol state only once every
                // complete request it sent has been answered: what is left
                // in it then is at most an incomplete head.
                c.eof_seen = true;
                c.http.on_eof(sh);
            }
            if !c.sending {
                if let Some(out) = &c.out {
                    let rest = &out.buf[out.written..];
                    let send = opcode::Send::new(
                        types::Fd(c.fd.as_raw_fd()),
                        rest.as_ptr(),
                        rest.len().min(u32::MAX as usize) as u32,
                    )
                    // A file body follows the head: hold the head back for
                    // it, so that both leave in one segment; and the last
                    // output before a close, for the close's FIN.
                    .flags(
                        libc::MSG_NOSIGNAL | if c.http.has_file() || Self::last_send(c) { libc::MSG_MORE } else { 0 },
                    )
                    .build()
                    .user_data(Token::new(Op::Send, key).0);
                    // SAFETY: `out.buf` is owned by this connection, is not
                    // touched until the send's completion, and the slot is
                    // not freed while `sending` is set.
                    let r = unsafe { self.io.push(send) };
                    if let Err(e) = r {
                        self.fatal.get_or_insert(e);
                        return;
                    }
                    c.sending = true;
                }
            }
            if !c.sending && c.out.is_none() && c.splice == Splice::Off {
                if let Err(e) = Self::splice_file(&mut self.io, key, c) {
                    log::warn!("file body: {e}; closing the connection");
                    self.close(key);
                    return;
                }
            }
            let pending = c.out.is_some() || c.http.has_output() || c.http.has_file() || c.splice != Splice::Off;
            match core::after_output(&c.http, pending, c.peer_eof) {
                After::Keep => {}
                After::Close => {
                    self.close_now(key);
                    return;
                }
                After::Linger => match core::linger(c.fd.as_raw_fd(), sh) {
                    Ok(until) => c.phase = Phase::Linger { until },
                    Err(_) => {
                        self.close(key);
                        return;
                    }
                },
            }
        }
        let want_recv = match c.phase {
            Phase::Open => !c.peer_eof && c.unsent() <= OUTPUT_HIGH_WATER && c.http.wants_input(sh),
            Phase::Linger { .. } => !c.peer_eof,
            Phase::Closing => false,
        };
        if let Phase::Linger { .. } = c.phase {
            if c.peer_eof {
                self.close(key);
                return;
            }
        }
        match (want_recv, c.recv) {
            (true, Recv::Off) => {
                let recv = opcode::RecvMulti::new(types::Fd(c.fd.as_raw_fd()), BUF_GROUP)
                    .build()
                    .user_data(Token::new(Op::Recv, key).0);
                // SAFETY: the recv writes only into provided buffers, which
                // stay mapped as long as the ring.
                match unsafe { self.io.push(recv) } {
                    Ok(()) => c.recv = Recv::Armed,
                    Err(e) => {
                        self.fatal.get_or_insert(e);
                    }
                }
            }
            (false, Recv::Armed) => match self.io.cancel(Token::new(Op::Recv, key)) {
                Ok(()) => c.recv = Recv::Cancelling,
                Err(e) => {
                    self.fatal.get_or_insert(e);
                }
            },
            _ => {}
        }
        // An upgraded connection (its `101` framed, so no recv is wanted)
        // is handed over once the `101` is sent and its recv's last
        // completion is in: nothing of the loop's is then in flight on the
        // socket, and the bytes that recv brought were copied out of the
        // provided buffers into the protocol state's input.
        if c.phase == Phase::Open && c.http.upgrade_ready() && c.out.is_none() && !c.busy() {
            self.upgrade(key);
        }
    }

    /// Hands connection `key` over after its `101`: out of the slab, its
    /// socket (left open) to the handler's taker.
    fn upgrade(&mut self, key: Key) {
        let Some(mut c) = self.conns.remove(key) else {
            return;
        };
        debug_assert!(!c.busy());
        let taken = c.http.take_upgrade();
        c.http.release(&mut self.core.sh);
        self.core.sh.count_close();
        if let Some((take, read)) = taken {
            core::hand_over(c.fd, take, read);
        }
    }

    /// Moves a connection's file body on by one step: file to pipe when
    /// the pipe is empty, else a poll for room in the socket linked to a
    /// splice of the pipe into it. The pipe's capacity bounds the bytes in
    /// flight; splices run in the kernel's workers, never on the loop.
    fn splice_file(io: &mut Io<'_>, key: Key, c: &mut Connection) -> io::Result<()> {
        let Some((file, offset, remaining)) = c.http.file_chunk() else { return Ok(()) };
        let file = file.as_raw_fd();
        if c.pipe.is_none() {
            c.pipe = Some(Box::new(Pipe::new()?));
        }
        let pipe = c.pipe.as_ref().expect("made above");
        if pipe.filled == 0 {
            let len = remaining.min(u64::from(pipe.capacity)) as u32;
            let splice =
                opcode::Splice::new(types::Fd(file), offset as i64, types::Fd(pipe.write.as_raw_fd()), -1, len)
                    .build()
                    .user_data(Token::new(Op::SpliceIn, key).0);
            // SAFETY: a splice refers to no user memory; the file and the
            // pipe stay open while it is in the kernel (the slot is not
            // freed while `splice` is set).
            unsafe { io.push(splice) }?;
        } else {
            // Both entries must reach the kernel in one submission for the
            // link to hold.
            if io.sq.capacity() - io.sq.len() < 2 {
                io.flush()?;
            }
            let poll = opcode::PollAdd::new(types::Fd(c.fd.as_raw_fd()), libc::POLLOUT as u32)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(Token::new(Op::PollOut, key).0);
            let splice =
                opcode::Splice::new(types::Fd(pipe.read.as_raw_fd()), -1, types::Fd(c.fd.as_raw_fd()), -1, pipe.filled)
                    .build()
                    .user_data(Token::new(Op::SpliceOut, key).0);
            // SAFETY: a poll and a splice refer to no user memory; the
            // socket and the pipe stay open while they are in the kernel.
            unsafe {
                io.push(poll)?;
                io.push(splice)?;
            }
        }
        c.splice = if pipe.filled == 0 { Splice::In } else { Splice::Out };
        Ok(())
    }

    /// Starts closing connection `key`: its operations are cancelled, and
    /// the slot is freed once none is left in the kernel.
    fn close(&mut self, key: Key) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.phase == Phase::Closing {
            return;
        }
        c.phase = Phase::Closing;
        let mut cancels = [None, None, None, None];
        if c.recv == Recv::Armed {
            c.recv = Recv::Cancelling;
            cancels[0] = Some(Token::new(Op::Recv, key));
        }
        if c.sending {
            cancels[1] = Some(Token::new(Op::Send, key));
        }
        match c.splice {
            Splice::In => cancels[2] = Some(Token::new(Op::SpliceIn, key)),
            Splice::Out => {
                cancels[2] = Some(Token::new(Op::PollOut, key));
                cancels[3] = Some(Token::new(Op::SpliceOut, key));
            }
            Splice::Off => {}
        }
        let busy = c.busy();
        for target in cancels.into_iter().flatten() {
            let r = self.io.cancel(target);
            self.check(r);
        }
        if busy {
            self.mark(key);
        } else {
            self.free(key);
        }
    }

    /// Whether the send about to be made of `c.out` is the connection's
    /// last ([`core::last_output`]): once it is done, [`Driver::close_now`]
    /// closes the socket.
    fn last_send(c: &Connection) -> bool {
        !c.http.has_output() && c.splice == Splice::Off && core::last_output(&c.http, c.peer_eof)
    }

    /// Closes connection `key`, whose output is all sent, at once: while its
    /// recv is in the kernel, a cancel of the recv and a close of the socket
    /// go in one submission (the socket is released when the recv lets go
    /// of it), with no system call of their own. Both run inline; a
    /// shutdown through the ring would not (the kernel always hands it to
    /// an io-wq worker thread, a thread switch per connection).
    fn close_now(&mut self, key: Key) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.phase == Phase::Closing || c.recv != Recv::Armed || c.sending || c.splice != Splice::Off {
            self.close(key);
            return;
        }
        let close = opcode::Close::new(types::Fd(c.fd.as_raw_fd())).build().user_data(Token::new(Op::Close, key).0);
        let r = self.io.cancel(Token::new(Op::Recv, key));
        // SAFETY: a close refers to no memory.
        let r = r.and_then(|()| unsafe { self.io.push(close) });
        if let Err(e) = r {
            self.fatal.get_or_insert(e);
            return;
        }
        c.recv = Recv::Cancelling;
        c.phase = Phase::Closing;
        c.fd_close = FdClose::Ring;
        self.mark(key);
    }

    /// Frees connection `key`: nothing of it may be in the kernel any more.
    fn free(&mut self, key: Key) {
        let Some(c) = self.conns.remove(key) else {
            return;
        };
        debug_assert!(!c.busy());
        if let Some(out) = c.out {
            self.core.sh.recycle(out.buf);
        }
        c.http.release(&mut self.core.sh);
        self.core.sh.count_close();
        if c.fd_close == FdClose::Closed {
            // The ring closed the descriptor; its number may already be
            // another socket's.
            let _ = c.fd.into_raw_fd();
        } else {
            drop(c.fd);
        }
    }

    fn reconcile_accept(&mut self) {
        let live = self.conns.len();
        let want = self.core.may_accept(live);
        let token = Token::of(Op::Accept);
        match (want, self.accept) {
            (true, Accept::Off) => {
                let Some(listener) = &self.core.listener else { return };
                let fd = types::Fd(listener.as_raw_fd());
                let headroom = self.core.config.max_connections.saturating_sub(live);
                let accept = if headroom > ACCEPT_MULTISHOT_HEADROOM {
                    opcode::AcceptMulti::new(fd).flags(libc::SOCK_CLOEXEC).build()
                } else {
                    opcode::Accept::new(fd, ptr::null_mut(), ptr::null_mut()).flags(libc::SOCK_CLOEXEC).build()
                };
                // SAFETY: an accept that asks for no peer address refers to
                // no memory.
                let r = unsafe { self.io.push(accept.user_data(token.0)) };
                if r.is_ok() {
                    self.accept = Accept::Armed;
                }
                self.check(r);
            }
            (false, Accept::Armed) => {
                let r = self.io.cancel(token);
                if r.is_ok() {
                    self.accept = Accept::Cancelling;
                }
                self.check(r);
            }
            _ => {}
        }
    }

    /// Cancels whatever is still in the kernel, waits (boundedly) for it to
    /// finish, and closes every connection left. If the kernel does not
    /// confirm, the memory it could still touch is leaked rather than freed.
    fn finish(&mut self, cq: &mut CompletionQueue<'_>) {
        if self.io.inflight > 0 {
            let _ = self.io.flush();
            if let Err(e) = self.io.submitter.register_sync_cancel(Some(Timespec::new().sec(1)), CancelBuilder::any()) {
                if e.raw_os_error() != Some(libc::ENOENT) {
                    log::debug!("io_uring: cancel on exit: {e}");
                }
            }
            let start = Instant::now();
            let wait = Timespec::new().nsec(10_000_000);
            while self.io.inflight > 0 && start.elapsed() < EXIT_WAIT {
                let args = SubmitArgs::new().timespec(&wait);
                match self.io.submitter.submit_with_args(1, &args) {
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
                    Err(_) => break,
                }
                cq.sync();
                for cqe in cq.by_ref() {
                    let token = Token(cqe.user_data());
                    if !cqueue::more(cqe.flags()) && token.op() != Some(Op::Cancel) {
                        self.io.inflight = self.io.inflight.saturating_sub(1);
                    }
                    if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
                        // SAFETY: this completion's own buffer, length and
                        // flag; the bytes are not looked at.
                        let _ = unsafe {
                            self.io.bufs.received(bid, cqe.result().max(0) as usize, cqueue::buffer_more(cqe.flags()))
                        };
                    }
                    if token.op() == Some(Op::Send) {
                        if let Some(c) = self.conns.get_mut(token.key()) {
                            c.sending = false;
                        }
                    }
                }
                cq.sync();
            }
        }
        let leak = self.io.inflight > 0;
        if leak {
            log::warn!("io_uring: {} operations still in the kernel at exit", self.io.inflight);
            self.io.bufs.leak = true;
        }
        let keys: Vec<Key> = self.conns.iter_mut().map(|(k, _)| k).collect();
        for key in keys {
            let Some(c) = self.conns.remove(key) else {
                continue;
            };
            match c.out {
                Some(out) if c.sending => mem::forget(out.buf),
                Some(out) => self.core.sh.recycle(out.buf),
                None => {}
            }
            c.http.release(&mut self.core.sh);
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
}
