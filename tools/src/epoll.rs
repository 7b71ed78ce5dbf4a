//! A minimal epoll instance for the harness's single-threaded clients (the
//! paced client, the slowloris attacker, `sseload`): many sockets, one
//! thread, no thread per connection on this side either.
//!
//! Where it stops: registration and waiting only; what to read and when is
//! the caller's. Tokens are the caller's indices.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Readable.
pub const IN: u32 = libc::EPOLLIN as u32;
/// The peer closed its side (or the connection).
pub const RDHUP: u32 = libc::EPOLLRDHUP as u32;

/// One ready descriptor: the token it was registered with.
pub type Event = libc::epoll_event;

/// An event buffer of `n` entries for [`Epoll::wait`].
pub fn events(n: usize) -> Vec<Event> {
    vec![libc::epoll_event { events: 0, u64: 0 }; n]
}

/// The token of a ready event.
pub fn token(ev: &Event) -> usize {
    ev.u64 as usize
}

/// An epoll instance, closed on drop.
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// A new instance (close-on-exec).
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is new and owned by nothing else.
        Ok(Epoll { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Watches `fd` for `interest` ([`IN`], [`RDHUP`]), reporting `token`.
    pub fn add(&self, fd: RawFd, interest: u32, token: usize) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: interest, u64: token as u64 };
        // SAFETY: registers a descriptor the caller holds open; `ev` is a
        // local the kernel only reads.
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops watching `fd` (closing it does so too).
    pub fn remove(&self, fd: RawFd) {
        // SAFETY: deregisters a descriptor; a null event is allowed for DEL.
        unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
    }

    /// Waits at most `timeout_ms` (0: not at all, -1: for ever) for ready
    /// descriptors; how many of `events` were filled. An interrupted wait
    /// is retried.
    pub fn wait(&self, events: &mut [Event], timeout_ms: i32) -> io::Result<usize> {
        let room = i32::try_from(events.len()).unwrap_or(i32::MAX);
        loop {
            // SAFETY: `events` has room for `room` entries.
            let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), room, timeout_ms) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}
