//! Accepting, written once for both backends: what an accept error means
//! and how long accepting pauses after one, the `accept4` the epoll loop
//! and the drain use, and taking in what is queued on the listener when
//! draining starts. Where it stops: when to submit an accept (or wait for
//! the listener's readiness) is the backend's.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use super::Core;
use crate::sys::context;

/// How long accepting pauses after the process or system ran out of
/// descriptors or memory: the backlog keeps the clients meanwhile.
pub(crate) const ACCEPT_BACKOFF_MS: u64 = 100;

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

impl Core<'_> {
    /// Whether the loop may accept with `live` connections open.
    pub(crate) fn may_accept(&self, live: usize) -> bool {
        !self.draining()
            && self.listeners.iter().any(Option::is_some)
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
pub(super) fn drain_listener(backlog: i32, listener: OwnedFd) -> Vec<OwnedFd> {
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

    #[test]
    fn accept_errors_are_sorted_once_for_both_backends() {
        assert_eq!(classify_accept_error(libc::ECONNABORTED), AcceptError::Transient);
        assert_eq!(classify_accept_error(libc::EMFILE), AcceptError::Pause);
        assert_eq!(classify_accept_error(libc::ENOBUFS), AcceptError::Pause);
        for e in [libc::EBADF, libc::EINVAL, libc::ENOTSOCK, libc::EFAULT] {
            assert_eq!(classify_accept_error(e), AcceptError::Unusable);
        }
    }
}
