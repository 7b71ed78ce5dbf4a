//! The epoll event loop: the driver for kernels and sandboxes that refuse
//! io_uring. It keeps the contract in [`super`] with the same observable
//! behaviour as the io_uring loop.
//!
//! How it works:
//!
//! - Connections are registered edge-triggered for input, output and peer
//!   hang-up. Each keeps two readiness bits, `readable` and `writable`, that
//!   an event sets and a `WouldBlock` (or a short read or send, never a
//!   short `sendfile`) clears, so the loop knows without a system call
//!   whether trying again can make progress, and an edge is never lost when
//!   the loop stops early on purpose (output above
//!   [`crate::http::OUTPUT_HIGH_WATER`]).
//! - Every connection reads into one worker-wide buffer; the protocol state
//!   copies only the incomplete tail of a read, so an idle connection holds
//!   no buffer.
//! - All reads of a turn are followed by one send of everything the
//!   protocol state framed, so pipelined responses leave together.
//! - The listeners (one per address served, each registered under its own
//!   token) are edge-triggered too, and accepting happens once per turn,
//!   after the events: a slab slot freed and reused within one turn can never
//!   receive an event that was meant for its previous owner.
//! - Draining takes the listeners out of the set, accepts what is queued on
//!   them and closes them, all before the next wait.
//!
//! Where it stops: HTTP belongs to [`Conn`]; what to do about the listener,
//! accept errors, the drain, deadlines and closing belongs to
//! [`super::core`], which also runs the sweep and the deferred hand-off
//! over this loop's [`Backend`] side; this module moves bytes and learns
//! readiness. Its rooms: [`conn`] (a connection, and the moving of its
//! bytes), [`poller`] (the epoll instance), and the loop here.

mod conn;
mod poller;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::core::{self, AcceptError, Backend, Core};
use super::link::Link;
use super::slab::{Key, Slab};
use crate::config::Config;
use crate::http::{Conn, Handler};
use crate::sys::context;
use conn::{Connection, Step};
use poller::{Epoll, Token, INBOX, WAKE};

/// The worker-wide receive buffer.
const READ_BUF: usize = 64 * 1024;
/// Events taken from the kernel per wait.
const EVENTS: usize = 1024;
/// Most connections accepted per loop turn, so that a connection storm does
/// not starve the connections already open; the rest wait for the next turn.
const ACCEPT_BATCH: usize = 1024;

/// Interest for a connection: edge-triggered input, output and peer
/// half-close.
const CONN_INTEREST: u32 = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
/// Events after which a read can make progress (data, end of input, error).
const READ_READY: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
/// Events after which the input ends in a FIN or an error: read until the
/// kernel says so, a short read does not mean that nothing is left.
const READ_ENDS: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
/// Events after which a send can make progress (or report the error).
const WRITE_READY: u32 = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// Serves `listeners` until the worker is drained; see the contract in
/// [`super`].
pub(crate) fn run<H: Handler>(
    config: &Config,
    listeners: Vec<OwnedFd>,
    handler: &mut H,
    link: &Link,
    ready: impl FnOnce(),
) -> io::Result<()> {
    let mut driver = Driver::new(config, listeners, handler, link)?;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    ready();
    driver.serve(&mut events)
}

/// The loop's state: everything but the event buffer.
struct Driver<'a, H> {
    /// What both backends share: protocol state, listener, drain, policy.
    core: Core<'a>,
    /// The user's handler.
    handler: &'a mut H,
    /// The epoll instance.
    epoll: Epoll,
    /// Open connections.
    conns: Slab<Connection>,
    /// The receive buffer every connection reads into.
    buf: Box<[u8]>,
    /// Connections may be waiting in each listener's backlog: set by an
    /// event, cleared when `accept4` says `WouldBlock`.
    accept_ready: Vec<bool>,
}

impl<'a, H: Handler> Driver<'a, H> {
    fn new(
        config: &'a Config,
        listeners: Vec<OwnedFd>,
        handler: &'a mut H,
        link: &'a Link,
    ) -> io::Result<Driver<'a, H>> {
        if listeners.len() > poller::MAX_LISTENERS {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} listeners", listeners.len())));
        }
        let epoll = Epoll::new().map_err(|e| context(e, "epoll_create1"))?;
        epoll.add(link.wake_fd(), libc::EPOLLIN as u32, WAKE).map_err(|e| context(e, "epoll_ctl(wake fd)"))?;
        if let Some(fd) = link.inbox_fd() {
            epoll.add(fd, libc::EPOLLIN as u32, INBOX).map_err(|e| context(e, "epoll_ctl(ring eventfd)"))?;
        }
        // EPOLLEXCLUSIVE wakes one waiter, not all, when several workers
        // share one listening socket; kernels before 4.5 refuse it.
        let interest = (libc::EPOLLIN | libc::EPOLLET) as u32;
        for (i, listener) in listeners.iter().enumerate() {
            let fd = listener.as_raw_fd();
            crate::sys::set_nonblocking(fd).map_err(|e| context(e, "listener"))?;
            epoll
                .add(fd, interest | libc::EPOLLEXCLUSIVE as u32, Token::listener(i))
                .or_else(|e| match e.raw_os_error() {
                    Some(libc::EINVAL) => epoll.add(fd, interest, Token::listener(i)),
                    _ => Err(e),
                })
                .map_err(|e| context(e, "epoll_ctl(listener)"))?;
        }
        Ok(Driver {
            accept_ready: vec![true; listeners.len()],
            core: Core::new(config, link, listeners),
            handler,
            epoll,
            conns: Slab::default(),
            buf: vec![0u8; READ_BUF].into_boxed_slice(),
        })
    }

    fn serve(&mut self, events: &mut [libc::epoll_event]) -> io::Result<()> {
        if self.core.link.draining() {
            self.start_drain();
        }
        // The listener may have had a backlog before it was registered.
        self.accept_pending();
        loop {
            if let Some(result) = self.core.drain_result(self.conns.len()) {
                return result;
            }
            self.core.sh.end_turn();
            // The ring from the master wakes a sleeping loop only if it
            // said it sleeps; a message already there means no sleep.
            // Nor while heavy requests wait in the loop's queue.
            let sleep = self.core.link.may_sleep() && !self.core.sh.has_parked();
            let timeout = if sleep { self.timeout_ms() } else { 0 };
            let n = match self.epoll.wait(events, timeout) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => return Err(context(e, "epoll_wait")),
            };
            self.core.sh.tick();
            let mut woken = false;
            for ev in &events[..n] {
                // Copies out of the (packed, on x86-64) event.
                let (bits, token) = (ev.events, Token(ev.u64));
                match token {
                    WAKE => woken = true,
                    INBOX => self.core.link.ack_inbox(),
                    t => match t.listener_index() {
                        Some(i) => self.accept_ready[i] = true,
                        None => self.on_event(Key::unpack(t.0), bits),
                    },
                }
            }
            self.core.link.deliver(&mut *self.handler);
            self.core.run_timers();
            core::complete_deferred(self);
            if woken {
                self.core.link.ack();
                if self.core.link.draining() {
                    self.start_drain();
                }
            }
            if self.core.sweep_due() {
                core::sweep(self);
            }
            // The turn's cheap answers are sent: the heavy handlers parked
            // behind them run now.
            core::resume_parked(self);
            self.accept_pending();
        }
    }

    /// How long the next wait may block: until the core's next wake-up
    /// (sweep, end of an accept pause, end of the drain); not at all if
    /// connections are known to wait in the backlog.
    fn timeout_ms(&self) -> i32 {
        if self.accept_ready.contains(&true) && self.core.may_accept(self.conns.len()) {
            return 0;
        }
        self.core.next_wake().saturating_sub(self.core.sh.now_ms()).min(i32::MAX as u64) as i32
    }

    fn on_event(&mut self, key: Key, bits: u32) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if bits & READ_READY != 0 {
            c.readable = true;
        }
        if bits & READ_ENDS != 0 {
            c.read_ends = true;
        }
        if bits & WRITE_READY != 0 {
            c.writable = true;
        }
        let step = c.drive(&mut self.core.sh, &mut self.buf, &mut *self.handler);
        self.after(key, step);
    }

    /// Does what `step` says of connection `key`.
    fn after(&mut self, key: Key, step: Step) {
        match step {
            Step::Keep => {}
            Step::Close => self.close(key),
            Step::Upgrade => self.upgrade(key),
        }
    }

    /// Hands connection `key` over after its `101`: out of the epoll set
    /// and the slab, its socket to the handler's taker.
    fn upgrade(&mut self, key: Key) {
        let Some(mut c) = self.conns.remove(key) else { return };
        if let Err(e) = self.epoll.delete(c.fd.as_raw_fd()) {
            log::debug!("epoll_ctl(delete upgraded connection): {e}");
        }
        let taken = c.http.take_upgrade();
        c.http.release(&mut self.core.sh);
        self.core.sh.count_close();
        if let Some((take, read, permit)) = taken {
            core::hand_over(c.fd, take, read, permit);
        }
    }

    /// Accepts what waits in the backlogs, up to the connection cap and
    /// [`ACCEPT_BATCH`] per listener.
    fn accept_pending(&mut self) {
        for index in 0..self.accept_ready.len() {
            self.accept_pending_on(index);
        }
    }

    /// Accepts what waits in listener `index`'s backlog, up to the
    /// connection cap and [`ACCEPT_BATCH`].
    fn accept_pending_on(&mut self, index: usize) {
        for _ in 0..ACCEPT_BATCH {
            if !self.accept_ready[index] || !self.core.may_accept(self.conns.len()) {
                return;
            }
            let Some(Some(listener)) = self.core.listeners.get(index) else { return };
            let fd = match core::accept(listener.as_raw_fd()) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_ready[index] = false;
                    return;
                }
                Err(e) => match self.core.on_accept_error(e.raw_os_error().unwrap_or(0)) {
                    AcceptError::Transient => continue,
                    AcceptError::Pause => return,
                    AcceptError::Unusable => {
                        self.start_drain();
                        return;
                    }
                },
            };
            self.core.on_accepted();
            if let Err(e) = self.add(fd) {
                log::warn!("epoll_ctl(add connection): {e}; not accepting for {} ms", core::ACCEPT_BACKOFF_MS);
                self.core.pause_accept();
                return;
            }
        }
    }

    /// Registers a connection just accepted; on failure it is closed.
    fn add(&mut self, fd: OwnedFd) -> io::Result<Key> {
        let raw = fd.as_raw_fd();
        let mut http = Conn::new(&self.core.sh);
        if self.core.draining() {
            http.start_drain(&self.core.sh);
        }
        let Some(key) = self.conns.insert(Connection::new(fd, http)) else {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "connection table full"));
        };
        if let Some(c) = self.conns.get_mut(key) {
            c.http.set_token(key.pack());
            c.http.set_socket(raw);
        }
        self.core.sh.count_accept();
        if let Err(e) = self.epoll.add(raw, CONN_INTEREST, Token(key.pack())) {
            self.close(key);
            return Err(e);
        }
        Ok(key)
    }

    /// Stops accepting, takes in what is queued on the listener and closes
    /// it, and lets every connection finish (idle ones after a short grace,
    /// so that a request already on the wire is answered, with
    /// `Connection: close`, instead of cut off).
    fn start_drain(&mut self) {
        if !self.core.start_drain(self.conns.len()) {
            return;
        }
        for listener in self.core.listeners.iter().flatten() {
            if let Err(e) = self.epoll.delete(listener.as_raw_fd()) {
                log::warn!("epoll_ctl(delete listener): {e}");
            }
        }
        for index in 0..self.accept_ready.len() {
            self.accept_ready[index] = false;
            for fd in self.core.close_listener(index) {
                if let Err(e) = self.add(fd) {
                    log::warn!("epoll_ctl(add connection): {e}; closing it");
                }
            }
        }
        for (_, c) in self.conns.iter_mut() {
            c.http.start_drain(&self.core.sh);
        }
    }

    fn close(&mut self, key: Key) {
        if let Some(c) = self.conns.remove(key) {
            // Dropping the descriptor closes it, which also takes it out of
            // the epoll set.
            c.http.release(&mut self.core.sh);
            self.core.sh.count_close();
        }
    }
}

impl<'a, H: Handler> Backend<'a> for Driver<'a, H> {
    type Conn = Connection;
    type Handler = H;

    #[inline]
    fn parts(&mut self) -> (&mut Core<'a>, &mut Slab<Connection>, &mut H) {
        (&mut self.core, &mut self.conns, &mut *self.handler)
    }

    /// Moves the connection's bytes at once, and closes or hands it over
    /// if that finished it.
    fn serve(&mut self, key: Key) -> bool {
        let Some(c) = self.conns.get_mut(key) else { return false };
        let step = c.drive(&mut self.core.sh, &mut self.buf, &mut *self.handler);
        self.after(key, step);
        step == Step::Close
    }

    fn close(&mut self, key: Key) {
        Driver::close(self, key);
    }

    /// Sent already: each connection sends as it frames.
    fn send_framed(&mut self) {}
}
