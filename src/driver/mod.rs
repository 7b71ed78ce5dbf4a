//! Event-loop drivers: the only code that touches connections.
//!
//! Every driver provides the same contract:
//!
//! - it serves the (non-blocking) `listener` until the worker is drained
//!   ([`Control::draining`]) and every connection is closed, or the drain
//!   timeout passes, and then returns `Ok(())`;
//! - each accepted connection gets one [`http::Conn`]; received bytes go to
//!   [`http::Conn::on_read`], and [`http::Conn::output`] goes back out in as
//!   few sends as possible (every pipelined response of one read in one
//!   send);
//! - a connection whose [`http::Conn::deadline`] has passed is closed; the
//!   clock and the `Date` header are refreshed once per loop turn by
//!   [`http::Shared::tick`];
//! - a connection with more than [`http::OUTPUT_HIGH_WATER`] bytes of output
//!   not yet sent is not read from until it drops below;
//! - a connection that [`http::Conn::is_closing`] is closed once its output
//!   is sent, with a lingering close (shutdown of the write side, input
//!   discarded for a short while) so the client reads the final response;
//! - draining stops accepting and calls [`http::Conn::start_drain`] on every
//!   connection: idle ones then expire after a short grace (a request
//!   already on the wire is answered rather than cut off), busy ones finish
//!   their current request, answered with `Connection: close`; the driver
//!   returns when no connection is left;
//! - the driver owns the worker's copy of the listener, and when draining
//!   starts it takes every connection queued on it ([`drain_listener`], past
//!   `max_connections` if need be) and closes it at once. A socket of a
//!   SO_REUSEPORT group that closes resets what is queued on it, and while it
//!   stays open the kernel keeps sending it new connections; closed early, it
//!   leaves the group, and the other members take the new ones. (The master
//!   holds its own copy while the slot exists, so a worker closing its copy
//!   during a reload or shutdown changes nothing.)
//!
//! The backend is chosen in exactly one place: [`run`].

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::http::Handler;
use crate::ipc::{Counter, Counters};
use crate::server::{Backend, Config};
use crate::sys::context;
use crate::worker::Inbox;

pub(crate) mod epoll;
pub(crate) mod uring;

/// Whether an accept error concerns only the connection being accepted (it
/// died in the backlog, or accept passed on a network error), so the next
/// accept may go on at once. Anything else (EMFILE, ENFILE, ENOBUFS, ENOMEM,
/// a broken listener) would make an immediate retry spin.
pub(crate) fn accept_error_is_transient(errno: i32) -> bool {
    matches!(
        errno,
        libc::EINTR
            | libc::EAGAIN
            | libc::ECONNABORTED
            | libc::EPROTO
            | libc::ENOPROTOOPT
            | libc::ENETDOWN
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::EHOSTUNREACH
            | libc::ENONET
            | libc::EOPNOTSUPP
            | libc::EPERM
    )
}

/// Most messages from the master a worker handles per loop turn.
pub(crate) const MESSAGES_PER_TURN: usize = 256;

/// How long a closing connection keeps discarding input after its last
/// response, so that the client reads that response instead of a reset.
pub(crate) const LINGER_MS: u64 = 2_000;

/// Runs the event loop chosen by `config.backend` on `listener` (the
/// worker's own copy, closed when draining starts) and returns the backend
/// that actually ran.
pub(crate) fn run<H: Handler>(
    config: &Config,
    listener: OwnedFd,
    handler: &mut H,
    ctl: &Control,
) -> io::Result<Backend> {
    match config.backend {
        Backend::Epoll => {
            log::info!("backend: epoll (configured)");
            epoll::run(config, listener, handler, ctl).map(|()| Backend::Epoll)
        }
        Backend::Uring => {
            let ring = uring::setup(config)?;
            log::info!("backend: io_uring ({})", ring.describe());
            ring.run(config, listener, handler, ctl).map(|()| Backend::Uring)
        }
        Backend::Auto => match uring::setup(config) {
            Ok(ring) => {
                log::info!("backend: io_uring ({})", ring.describe());
                ring.run(config, listener, handler, ctl).map(|()| Backend::Uring)
            }
            Err(e) if uring::is_refusal(&e) => {
                log::info!("backend: epoll (io_uring refused: {e})");
                epoll::run(config, listener, handler, ctl).map(|()| Backend::Epoll)
            }
            Err(e) => Err(e),
        },
    }
}

/// Set by SIGTERM/SIGINT; read by the loop after its wake-up fd fires.
static DRAIN: AtomicBool = AtomicBool::new(false);
/// The eventfd that the signal handler writes to wake the loop; -1 if none.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_drain_signal(_sig: libc::c_int) {
    // Only async-signal-safe work here: an atomic store and one write(2).
    DRAIN.store(true, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        crate::sys::eventfd_wake(fd);
    }
}

/// The master channel whose hang-up means the master is gone; -1 if none.
static LIFELINE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigio(_sig: libc::c_int) {
    // poll(2) with a zero timeout is async-signal-safe; it tells a hang-up
    // (master gone) from a mere message.
    let fd = LIFELINE_FD.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let mut p = libc::pollfd { fd, events: libc::POLLRDHUP, revents: 0 };
    // SAFETY: one valid pollfd on the stack, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    if n == 1 && p.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0 {
        on_drain_signal(libc::SIGIO);
    }
}

/// The worker's control channel: a drain flag and the eventfd that wakes the
/// event loop when it changes. Drivers keep a read on [`Control::wake_fd`]
/// in flight (io_uring) or registered (epoll).
#[derive(Debug)]
pub(crate) struct Control {
    wake: OwnedFd,
    /// The ring from the master, when the worker is part of a cluster.
    inbox: Option<RefCell<Inbox>>,
}

impl Control {
    /// Creates the wake-up eventfd and routes SIGTERM and SIGINT to a drain.
    /// SIGPIPE is ignored: sends use `MSG_NOSIGNAL`, and a closed peer must
    /// never kill the worker.
    pub(crate) fn install() -> io::Result<Control> {
        let wake = crate::sys::eventfd()?;
        WAKE_FD.store(wake.as_raw_fd(), Ordering::SeqCst);
        DRAIN.store(false, Ordering::SeqCst);
        // SAFETY: the handler only touches atomics and calls write(2), both
        // async-signal-safe; SIG_IGN for SIGPIPE is always valid.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_drain_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            for sig in [libc::SIGTERM, libc::SIGINT] {
                if libc::sigaction(sig, &sa, std::ptr::null_mut()) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        Ok(Control { wake, inbox: None })
    }

    /// Drains the worker when `fd` (its end of the master channel) hangs
    /// up: the kernel raises SIGIO on the hang-up (`O_ASYNC`), and the
    /// handler checks it is one. Together with `PR_SET_PDEATHSIG` this makes
    /// a worker whose master died finish its work and exit.
    pub(crate) fn watch_lifeline(&self, fd: RawFd) -> io::Result<()> {
        LIFELINE_FD.store(fd, Ordering::SeqCst);
        // SAFETY: the handler only calls poll(2), touches atomics and
        // write(2); the fcntl calls take a descriptor this process owns.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigio as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(libc::SIGIO, &sa, std::ptr::null_mut()) == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        syscall!(fcntl(fd, libc::F_SETOWN, std::process::id() as libc::c_int))?;
        let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
        syscall!(fcntl(fd, libc::F_SETFL, flags | libc::O_ASYNC | libc::O_NONBLOCK))?;
        // The master may already be gone.
        on_sigio(libc::SIGIO);
        Ok(())
    }

    /// The eventfd that becomes readable when the control state changes.
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

    /// Asks the loop to drain (as SIGTERM does).
    #[allow(dead_code)]
    pub(crate) fn request_drain(&self) {
        DRAIN.store(true, Ordering::SeqCst);
        crate::sys::eventfd_wake(self.wake.as_raw_fd());
    }
}

impl Control {
    /// Attaches the worker's ring from the master.
    pub(crate) fn set_inbox(&mut self, inbox: Inbox) {
        self.inbox = Some(RefCell::new(inbox));
    }

    /// The worker's counters in shared memory, if it has any.
    pub(crate) fn counters(&self) -> Option<&'static Counters> {
        self.inbox.as_ref().map(|i| i.borrow().counters)
    }

    /// The eventfd that becomes readable when the master wrote to a
    /// sleeping worker's ring. Drivers keep a read on it in flight (or have
    /// it registered) and call [`Control::deliver`] when it fires.
    pub(crate) fn inbox_fd(&self) -> Option<RawFd> {
        let inbox = self.inbox.as_ref()?.borrow();
        inbox.consumer.notifier().map(|n| n.fd().as_raw_fd())
    }

    /// Hands the messages waiting in the ring from the master to the
    /// handler; drivers call it once per loop turn. Returns how many.
    pub(crate) fn deliver<H: Handler>(&self, handler: &mut H) -> usize {
        let Some(inbox) = &self.inbox else { return 0 };
        let mut inbox = inbox.borrow_mut();
        let inbox = &mut *inbox;
        inbox.consumer.after_wake();
        // A bounded batch per turn: a flooding master cannot hold up the
        // connections; what is left keeps the loop from sleeping.
        match inbox.consumer.recv_up_to(MESSAGES_PER_TURN, |msg| handler.on_message(msg)) {
            Ok(n) => {
                if n > 0 {
                    inbox.counters.add(Counter::RingReceived, n as u64);
                }
                n
            }
            Err(e) => {
                log::error!("ring from the master is unreadable ({e:?}); its messages are lost");
                0
            }
        }
    }

    /// Says the loop is about to block: false when a message is already
    /// waiting (then it must not block). While the loop is busy, the
    /// master's sends cost it no wake-up.
    pub(crate) fn may_sleep(&self) -> bool {
        match &self.inbox {
            Some(inbox) => inbox.borrow_mut().consumer.prepare_sleep(),
            None => true,
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = WAKE_FD.compare_exchange(self.wake.as_raw_fd(), -1, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// How often a driver sweeps its connections for expired deadlines: a
/// tenth of the shortest timeout, between 5 ms and 250 ms, so a timeout is
/// enforced at most 10% (or 250 ms) late. A sweep is a pass over the slab:
/// ten thousand connections cost a few microseconds.
pub(crate) fn sweep_interval_ms(config: &Config) -> u64 {
    let t = config.timeouts.header.min(config.timeouts.idle).as_millis() as u64;
    (t / 10).clamp(5, 250)
}

/// Accepts every connection queued on `listener`, hands each to `add`, and
/// closes the listener; returns how many were accepted.
///
/// Connections that arrive while this runs are accepted too, up to twice
/// `config.backlog` in all (what can be queued at the start, and as much
/// again), so that a flood cannot keep the listener open for ever; what is
/// still queued after that, or after the process runs out of descriptors,
/// is reset by the close. The connection cap is not applied: the
/// connections are drained like the others, so they do not stay long.
pub(crate) fn drain_listener(config: &Config, listener: OwnedFd, mut add: impl FnMut(OwnedFd)) -> usize {
    // A blocking listener (one inherited from a service manager) would
    // stall the loop once the queue is empty.
    match syscall!(fcntl(listener.as_raw_fd(), libc::F_GETFL)) {
        Ok(flags) if flags & libc::O_NONBLOCK != 0 => {}
        Ok(flags) => {
            if let Err(e) = syscall!(fcntl(listener.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK)) {
                drop(listener);
                log::warn!("{}; closed the listener", context(e, "fcntl(listener, O_NONBLOCK)"));
                return 0;
            }
        }
        Err(e) => {
            drop(listener);
            log::warn!("{}; closed the listener", context(e, "fcntl(listener)"));
            return 0;
        }
    }
    let limit = (config.backlog.max(1) as usize).saturating_mul(2);
    let mut accepted = 0;
    // Between the last accept and the close, connections that complete
    // their handshake on this socket are lost: the socket is closed before
    // anything is logged.
    for _ in 0..limit {
        // Null address pointers: the peer's address is not wanted.
        let res = syscall!(accept4(
            listener.as_raw_fd(),
            ptr::null_mut(),
            ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        ));
        match res {
            Ok(raw) => {
                // SAFETY: accept4 just returned this descriptor and nothing
                // else owns it.
                add(unsafe { OwnedFd::from_raw_fd(raw) });
                accepted += 1;
            }
            Err(e) => match e.raw_os_error().unwrap_or(0) {
                libc::EAGAIN => {
                    drop(listener);
                    log::debug!("listener closed after {accepted} queued connections");
                    return accepted;
                }
                // A connection that died in the queue, or a network error
                // passed on by accept: the next one is unaffected.
                errno if accept_error_is_transient(errno) => {}
                // EMFILE, ENFILE, ENOBUFS, ENOMEM, or the listener itself
                // is unusable: waiting would hold up the drain.
                _ => {
                    drop(listener);
                    log::warn!("{}; closed the listener after {accepted} queued connections", context(e, "accept4"));
                    return accepted;
                }
            },
        }
    }
    drop(listener);
    log::warn!("closed the listener after {accepted} queued connections: more kept arriving");
    accepted
}
