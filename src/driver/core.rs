//! The policy both backends share, written once: the per-worker protocol
//! state, the accept-error policy and back-off, the drain state machine and
//! its sweep cadence, the close decision, and taking in what is queued on
//! the listener when draining starts. A backend keeps only how it submits
//! work and learns of readiness; what it does about a connection or the
//! listener, and when, is decided here.
//!
//! # The drain state machine
//!
//! ```text
//!   serving ──(SIGTERM, lifeline hang-up, unusable listener)──► draining
//!   draining ──(no connection left, listener closed)──► done: Ok, or the
//!                                                       listener's error
//!   draining ──(drain timeout)──► done (connections left are closed)
//! ```
//!
//! Entering the drain stops accepting; once the backend has no accept left
//! in the kernel it hands the listener to [`Core::close_listener`], which
//! takes in what is queued and closes it. Idle connections expire after
//! [`DRAIN_IDLE_GRACE_MS`]; the sweep runs every [`DRAIN_SWEEP_MS`] while
//! draining (and every [`Core::sweep_interval_ms`] otherwise), so a
//! deadline is enforced at most that late on either backend.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::Arc;
use std::time::Instant;

use super::{timers, Link};
use crate::config::Config;
use crate::http::{Completion, Completions, Conn, Shared, UpgradeFn, Upgraded, DRAIN_IDLE_GRACE_MS};
use crate::sys::context;

/// How a closing connection keeps discarding input after its last
/// response, so that the client reads that response instead of a reset.
pub(crate) const LINGER_MS: u64 = 2_000;

/// How long accepting pauses after the process or system ran out of
/// descriptors or memory: the backlog keeps the clients meanwhile.
pub(crate) const ACCEPT_BACKOFF_MS: u64 = 100;

/// Most connections one sweep closes for their deadline. When a thousand
/// slow clients time out together, closing them all in one turn holds
/// every other connection's requests for the whole batch; in slices of
/// this many the loop serves between them.
pub(crate) const SWEEP_CLOSE_BUDGET: usize = 64;

/// Slab slots one millisecond between two sweeps pays for. A sweep comes
/// when the earliest deadline falls due (see [`Core::sweep_finished`]), but
/// never sooner than a millisecond plus one per this many slots after the
/// last one: a sweep is a pass over the slab, so even while deadlines fall
/// due every millisecond the loop passes over at most this many slots a
/// millisecond (with a thousand connections a sweep then comes at most
/// 5 ms after a deadline, with ten thousand at most 40 ms).
pub(crate) const SWEEP_SLOTS_PER_MS: u64 = 256;

/// The sweep period while draining: a quarter of the idle grace, so idle
/// connections leave within a quarter grace of it.
pub(crate) const DRAIN_SWEEP_MS: u64 = if DRAIN_IDLE_GRACE_MS / 4 > 5 { DRAIN_IDLE_GRACE_MS / 4 } else { 5 };

/// What to do after an accept failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AcceptError {
    /// Only the connection being accepted was affected (it died in the
    /// backlog, or accept passed on a network error): go on at once.
    Transient,
    /// Out of descriptors or memory: accepting pauses for
    /// [`ACCEPT_BACKOFF_MS`] (see [`Core::may_accept`]).
    Pause,
    /// The listener itself is unusable: the worker drains and then exits
    /// with the error.
    Unusable,
}

/// Sorts an accept error (an errno).
pub(crate) fn classify_accept_error(errno: i32) -> AcceptError {
    match errno {
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
        | libc::EPERM => AcceptError::Transient,
        libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EFAULT => AcceptError::Unusable,
        // EMFILE, ENFILE, ENOBUFS, ENOMEM and anything unknown: retrying at
        // once would spin.
        _ => AcceptError::Pause,
    }
}

/// What a connection needs once its output is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum After {
    /// Keep serving it.
    Keep,
    /// Lingering close: shut down the write side, discard input until the
    /// peer closes or [`LINGER_MS`] pass.
    Linger,
    /// Close it now.
    Close,
}

/// The close decision. A connection the core marked closing is closed once
/// its output is out: at once when the peer has already closed its side or
/// when it closes right after a complete request with nothing after it
/// (nothing unread can be there, as nginx decides too); with a lingering
/// close when input may remain unread (a refused request, bytes after the
/// last answered one), since closing with unread input sends a reset, which
/// can destroy the last response in the peer's receive buffer.
pub(crate) fn after_output(conn: &Conn, output_pending: bool, peer_closed: bool) -> After {
    if !conn.is_closing() || output_pending {
        After::Keep
    } else if peer_closed || !conn.may_have_unread_input() {
        After::Close
    } else {
        After::Linger
    }
}

/// Whether the output framed now is all the connection sends before it
/// closes at once (no stream or file follows it, and no lingering). Its
/// last send then holds its final bytes back (`MSG_MORE`) for the close:
/// the FIN leaves in the same segment as they do, not in one of its own
/// (a connection-per-request exchange takes 8 segments instead of 10).
pub(crate) fn last_output(conn: &Conn, peer_closed: bool) -> bool {
    !conn.is_streaming() && !conn.has_file() && after_output(conn, false, peer_closed) == After::Close
}

/// Starts a lingering close of `fd`: shuts down its write side and returns
/// when the lingering ends (in [`Shared::now_ms`] time).
pub(crate) fn linger(fd: RawFd, sh: &Shared) -> io::Result<u64> {
    // Plain integer arguments on a socket the connection owns.
    syscall!(shutdown(fd, libc::SHUT_WR))?;
    Ok(sh.now_ms() + LINGER_MS)
}

/// Hands an upgraded connection over to what the handler gave
/// ([`crate::Response::upgrade`]), on the loop: the socket switched to
/// blocking mode, with the bytes already received after the request head.
/// The backend calls it once nothing of its own is in flight on `fd`, and
/// has already forgotten the connection.
pub(crate) fn hand_over(fd: OwnedFd, take: UpgradeFn, read: Vec<u8>) {
    if let Err(e) = crate::sys::set_blocking(fd.as_raw_fd()) {
        log::warn!("upgrade: {e}; closing the connection");
        return;
    }
    let up = Upgraded::new(fd, read);
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| take(up))).is_err() {
        log::error!("the taker of an upgraded connection panicked");
    }
}

/// Where a worker's loop is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Accepting and serving.
    Serving,
    /// Not accepting; serving what is left until `until` (in
    /// [`Shared::now_ms`] time).
    Draining {
        /// When the drain gives up on the connections left.
        until: u64,
    },
}

/// The state and policy shared by both backends.
pub(crate) struct Core<'a> {
    /// Limits, timeouts, the connection cap and the backlog.
    pub(crate) config: &'a Config,
    /// The drain flag, the wake-up eventfd and the messages from the master.
    pub(crate) link: &'a Link,
    /// Per-worker protocol state shared by every connection.
    pub(crate) sh: Shared,
    /// The worker's copy of the listening socket, until draining closes it.
    pub(crate) listener: Option<OwnedFd>,
    /// Serving or draining.
    state: State,
    /// No accept before this time (after running out of resources).
    accept_paused_until: u64,
    /// The last accept failed for lack of resources (logged once per run).
    accept_failing: bool,
    /// The error the worker exits with once drained (an unusable listener).
    failure: Option<io::Error>,
    /// When the next deadline sweep is due.
    next_sweep: u64,
    /// The sweep period while serving.
    sweep_ms: u64,
    /// Completed deferred responses taken this turn (kept empty between
    /// turns, for its capacity).
    pub(crate) batch: Vec<Completion>,
}

impl<'a> Core<'a> {
    /// The shared state of a loop that serves `listener`.
    pub(crate) fn new(config: &'a Config, link: &'a Link, listener: OwnedFd) -> Core<'a> {
        let mut sh = Shared::new(config.limits, config.timeouts);
        if let Some(c) = link.counters() {
            sh.set_counters(c);
        }
        if let Some(log) = link.take_access_log() {
            sh.set_access_log(log);
        }
        // Responders, on any thread, wake the loop through its eventfd.
        sh.set_completions(Arc::new(Completions::new(super::link::wake_loop)));
        sh.tick();
        let sweep_ms = sweep_interval_ms(config);
        let next_sweep = sh.now_ms() + sweep_ms;
        Core {
            config,
            link,
            sh,
            listener: Some(listener),
            state: State::Serving,
            accept_paused_until: 0,
            accept_failing: false,
            failure: None,
            next_sweep,
            sweep_ms,
            batch: Vec::new(),
        }
    }

    /// The current sweep period: [`DRAIN_SWEEP_MS`] while draining, a
    /// tenth of the shortest timeout (5 to 250 ms) otherwise.
    pub(crate) fn sweep_interval_ms(&self) -> u64 {
        match self.state {
            State::Serving => self.sweep_ms,
            State::Draining { .. } => DRAIN_SWEEP_MS.min(self.sweep_ms),
        }
    }

    /// Whether a sweep is due now; if so, the next one is scheduled.
    pub(crate) fn sweep_due(&mut self) -> bool {
        let now = self.sh.now_ms();
        if now < self.next_sweep {
            return false;
        }
        self.next_sweep = now + self.sweep_interval_ms();
        true
    }

    /// A sweep stopped at [`SWEEP_CLOSE_BUDGET`] closes: the next turn
    /// sweeps again, at once.
    pub(crate) fn sweep_unfinished(&mut self) {
        self.next_sweep = self.sh.now_ms();
    }

    /// A sweep went over `slots` slab slots and found `next_expiry` the
    /// earliest deadline still ahead: the next sweep comes then, so that a
    /// connection is closed when its time is up rather than up to a sweep
    /// period late, but no sooner than [`SWEEP_SLOTS_PER_MS`] allows and no
    /// later than the sweep period.
    pub(crate) fn sweep_finished(&mut self, next_expiry: u64, slots: u32) {
        let now = self.sh.now_ms();
        if self.next_sweep <= now {
            return; // unfinished: at once
        }
        let floor = now + 1 + u64::from(slots) / SWEEP_SLOTS_PER_MS;
        self.next_sweep = self.next_sweep.min(next_expiry.max(floor));
    }

    /// The next time the loop must wake up by itself: the next sweep, the
    /// end of an accept pause, the end of the drain, or the next worker
    /// timer.
    pub(crate) fn next_wake(&self) -> u64 {
        let mut t = self.next_sweep;
        if let Some(due) = timers::next_due() {
            // Rounded up: waking a millisecond early would find it not due.
            let wait = due.saturating_duration_since(Instant::now());
            t = t.min(self.sh.now_ms() + wait.as_micros().div_ceil(1000) as u64);
        }
        if let State::Draining { until } = self.state {
            t = t.min(until);
        }
        if self.accept_paused_until > self.sh.now_ms() {
            t = t.min(self.accept_paused_until);
        }
        t
    }

    /// Runs the worker timers that are due; the loop calls it once a turn.
    pub(crate) fn run_timers(&self) {
        if timers::next_due().is_some_and(|due| due <= Instant::now()) {
            timers::run_due(Instant::now());
        }
    }

    /// Whether the loop may accept with `live` connections open.
    pub(crate) fn may_accept(&self, live: usize) -> bool {
        self.state == State::Serving
            && self.listener.is_some()
            && live < self.config.max_connections.max(1)
            && self.sh.now_ms() >= self.accept_paused_until
    }

    /// Applies the accept-error policy to `errno` and says what it chose.
    /// On [`AcceptError::Unusable`] the backend starts the drain (which
    /// closes the listener); the drain then ends with the error.
    pub(crate) fn on_accept_error(&mut self, errno: i32) -> AcceptError {
        let e = io::Error::from_raw_os_error(errno);
        let verdict = classify_accept_error(errno);
        match verdict {
            AcceptError::Transient => log::debug!("accept: {e}"),
            AcceptError::Pause => {
                if !self.accept_failing {
                    log::warn!("accept: {e}; retrying every {ACCEPT_BACKOFF_MS} ms");
                    self.accept_failing = true;
                } else {
                    log::debug!("accept: {e}");
                }
                self.accept_paused_until = self.sh.now_ms() + ACCEPT_BACKOFF_MS;
            }
            AcceptError::Unusable => {
                if self.failure.is_none() {
                    log::error!("accept: listener unusable ({e}); draining");
                    self.failure = Some(context(e, "accept: listener unusable"));
                }
            }
        }
        verdict
    }

    /// Pauses accepting for [`ACCEPT_BACKOFF_MS`] after a connection could
    /// not be taken in (say, `epoll_ctl` ran out of memory).
    pub(crate) fn pause_accept(&mut self) {
        self.accept_paused_until = self.sh.now_ms() + ACCEPT_BACKOFF_MS;
    }

    /// Notes an accept that worked: a later resource error is logged again.
    pub(crate) fn on_accepted(&mut self) {
        self.accept_failing = false;
    }

    /// Whether the loop is draining.
    pub(crate) fn draining(&self) -> bool {
        matches!(self.state, State::Draining { .. })
    }

    /// Enters the drain (once), with `live` connections open: stops
    /// accepting, marks the protocol state as draining, and moves the sweep
    /// to [`DRAIN_SWEEP_MS`]. Returns false when already draining; when it
    /// returns true the backend takes its listener out of its readiness
    /// set, serves what [`Core::close_listener`] returns, and calls
    /// [`Conn::start_drain`] on every connection.
    pub(crate) fn begin_drain(&mut self, live: usize) -> bool {
        if self.draining() {
            return false;
        }
        log::info!("draining: {live} connections open");
        let now = self.sh.now_ms();
        self.state = State::Draining { until: now.saturating_add(self.config.timeouts.drain.as_millis() as u64) };
        self.sh.set_draining();
        self.next_sweep = self.next_sweep.min(now + self.sweep_interval_ms());
        true
    }

    /// Whether the drain is over with `live` connections left: `None`
    /// while it goes on, else what the loop returns.
    pub(crate) fn drain_result(&mut self, live: usize) -> Option<io::Result<()>> {
        let State::Draining { until } = self.state else { return None };
        if live == 0 && self.listener.is_none() {
            log::info!("drained");
        } else if self.sh.now_ms() >= until {
            log::warn!("drain timeout: closing {live} connections");
        } else {
            return None;
        }
        Some(self.failure.take().map_or(Ok(()), Err))
    }

    /// Once draining, with no accept of the backend's left in the kernel:
    /// takes every connection queued on the listener and closes it. The
    /// backend serves what is returned like its other connections.
    pub(crate) fn close_listener(&mut self) -> Vec<OwnedFd> {
        debug_assert!(self.draining());
        match self.listener.take() {
            Some(listener) => drain_listener(self.config.backlog, listener),
            None => Vec::new(),
        }
    }
}

/// The longest time between two sweeps for expired deadlines while
/// serving: a tenth of the shortest timeout, between 5 ms and 250 ms. A
/// sweep also comes sooner, when the earliest deadline falls due (see
/// [`Core::sweep_finished`]). A sweep is a pass over the slab. The sweep
/// also wakes an idle loop, whose turn is its heartbeat: with a worker
/// timeout, at least four beats fall within it.
pub(crate) fn sweep_interval_ms(config: &Config) -> u64 {
    let t = config.timeouts.header.min(config.timeouts.idle).as_millis() as u64;
    let every = (t / 10).clamp(5, 250);
    match config.worker_timeout {
        Some(w) => every.min((w.as_millis() as u64 / 4).max(5)),
        None => every,
    }
}

/// Accepts every connection queued on `listener` and closes it; returns
/// the connections.
///
/// Connections that arrive while this runs are accepted too, up to twice
/// `backlog` in all (what can be queued at the start, and as much
/// again), so that a flood cannot keep the listener open for ever; what is
/// still queued after that, or after the process runs out of descriptors,
/// is reset by the close. The connection cap is not applied: the
/// connections are drained like the others, so they do not stay long.
fn drain_listener(backlog: i32, listener: OwnedFd) -> Vec<OwnedFd> {
    let mut accepted = Vec::new();
    // A blocking listener (one inherited from a service manager) would
    // stall the loop once the queue is empty.
    if let Err(e) = crate::sys::set_nonblocking(listener.as_raw_fd()) {
        drop(listener);
        log::warn!("{e}; closed the listener");
        return accepted;
    }
    let limit = (backlog.max(1) as usize).saturating_mul(2);
    // Between the last accept and the close, connections that complete
    // their handshake on this socket are lost: the socket is closed before
    // anything is logged.
    for _ in 0..limit {
        match accept(listener.as_raw_fd()) {
            Ok(fd) => accepted.push(fd),
            Err(e) => match e.raw_os_error().map(classify_accept_error) {
                _ if e.kind() == io::ErrorKind::WouldBlock => {
                    drop(listener);
                    log::debug!("listener closed after {} queued connections", accepted.len());
                    return accepted;
                }
                // A connection that died in the queue, or a network error
                // passed on by accept: the next one is unaffected.
                Some(AcceptError::Transient) => {}
                // Out of descriptors, or the listener itself is unusable:
                // waiting would hold up the drain.
                _ => {
                    drop(listener);
                    log::warn!(
                        "{}; closed the listener after {} queued connections",
                        context(e, "accept4"),
                        accepted.len()
                    );
                    return accepted;
                }
            },
        }
    }
    drop(listener);
    log::warn!("closed the listener after {} queued connections: more kept arriving", accepted.len());
    accepted
}

/// One `accept4` of a non-blocking, close-on-exec connection.
pub(crate) fn accept(listener: RawFd) -> io::Result<OwnedFd> {
    // Null address pointers: the peer's address is not wanted.
    let raw = syscall!(accept4(listener, ptr::null_mut(), ptr::null_mut(), libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC))?;
    // SAFETY: accept4 just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn accept_errors_are_sorted_once_for_both_backends() {
        assert_eq!(classify_accept_error(libc::ECONNABORTED), AcceptError::Transient);
        assert_eq!(classify_accept_error(libc::EMFILE), AcceptError::Pause);
        assert_eq!(classify_accept_error(libc::ENOBUFS), AcceptError::Pause);
        for e in [libc::EBADF, libc::EINVAL, libc::ENOTSOCK, libc::EFAULT] {
            assert_eq!(classify_accept_error(e), AcceptError::Unusable);
        }
    }

    #[test]
    fn sweep_cadence_follows_the_timeouts_and_the_drain() {
        let mut config = Config::default();
        assert_eq!(sweep_interval_ms(&config), 250);
        config.timeouts.header = Duration::from_millis(400);
        assert_eq!(sweep_interval_ms(&config), 40);
        config.timeouts.idle = Duration::from_millis(20);
        assert_eq!(sweep_interval_ms(&config), 5);
        assert_eq!(DRAIN_SWEEP_MS, 50);
    }
}
