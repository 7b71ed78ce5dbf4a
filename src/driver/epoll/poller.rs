//! The epoll instance: registering a descriptor with the [`Token`] its
//! events carry, removing one, and waiting into the caller's buffer. Where
//! it stops: what an event means is the loop's.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use crate::driver::slab::KEYS_END;

/// What an epoll event refers to, carried in `epoll_event.u64`: a packed
/// slab [`Key`](crate::driver::slab::Key), or one of the reserved values
/// below (every packed key is below [`KEYS_END`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Token(pub(super) u64);

/// The wake-up eventfd of the [`crate::driver::link::Link`].
pub(super) const WAKE: Token = Token(u64::MAX - 1);
/// The eventfd of the ring from the master.
pub(super) const INBOX: Token = Token(u64::MAX - 2);
/// The most listening sockets one worker serves.
pub(crate) const MAX_LISTENERS: usize = 4096;
/// Listener `i` is `LISTENERS_TOP - i`.
const LISTENERS_TOP: u64 = u64::MAX - 3;
const _: () = assert!(LISTENERS_TOP - MAX_LISTENERS as u64 >= KEYS_END);

impl Token {
    /// The token of listening socket `index`.
    pub(super) fn listener(index: usize) -> Token {
        debug_assert!(index < MAX_LISTENERS);
        Token(LISTENERS_TOP - index as u64)
    }

    /// The listener index this token names, if it names one.
    pub(super) fn listener_index(self) -> Option<usize> {
        let i = LISTENERS_TOP.checked_sub(self.0)?;
        (i < MAX_LISTENERS as u64).then_some(i as usize)
    }
}

/// An epoll instance.
pub(super) struct Epoll {
    /// The epoll descriptor.
    fd: OwnedFd,
}

impl Epoll {
    /// A new, empty, close-on-exec epoll instance.
    pub(super) fn new() -> io::Result<Epoll> {
        // A plain flag argument; the descriptor is owned on the next line.
        let raw = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: epoll_create1 just returned this descriptor and nothing
        // else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Epoll { fd })
    }

    /// Registers `fd` for `events`, reported with `token`.
    pub(super) fn add(&self, fd: RawFd, events: u32, token: Token) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token.0 };
        // `ev` is a live local the kernel copies from.
        syscall!(epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev)).map(drop)
    }

    /// Removes `fd` from the set.
    pub(super) fn delete(&self, fd: RawFd) -> io::Result<()> {
        // A null event is allowed for EPOLL_CTL_DEL (since Linux 2.6.9).
        syscall!(epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, ptr::null_mut())).map(drop)
    }

    /// Waits for events into the caller's buffer; returns how many arrived.
    pub(super) fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        let max = events.len().min(i32::MAX as usize) as i32;
        // The kernel writes at most `max` events into `events`, a live,
        // writable slice at least that long.
        syscall!(epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms)).map(|n| n as usize)
    }
}
