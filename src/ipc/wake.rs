//! The eventfd a ring's consumer sleeps on.
//!
//! The protocol that decides *when* it is written lives with the ring's
//! `waiting` word ([`super::Producer::should_wake`],
//! [`super::Consumer::prepare_sleep`]); this type only owns the descriptor.
//! The master makes it before fork; the worker keeps a read on it in its
//! io_uring loop (or registers it with epoll), the master in its own loop.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// An eventfd (non-blocking, close-on-exec) used as a wake-up signal.
pub struct WakeFd {
    /// The eventfd.
    fd: OwnedFd,
}

impl WakeFd {
    /// Creates an eventfd.
    pub fn new() -> io::Result<WakeFd> {
        Ok(WakeFd { fd: crate::sys::eventfd()? })
    }

    /// Wraps an eventfd received from elsewhere (a re-executed worker's
    /// inherited descriptor). It should be non-blocking: [`WakeFd::drain`]
    /// reads it when it may not be signalled.
    pub fn from_fd(fd: OwnedFd) -> WakeFd {
        WakeFd { fd }
    }

    /// The descriptor, to register with epoll or read from io_uring. It
    /// becomes readable when the producer wakes its consumer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Signals the eventfd (one `write`; async-signal-safe).
    pub fn wake(&self) {
        crate::sys::eventfd_wake(self.fd.as_raw_fd());
    }

    /// Reads and resets the counter; 0 if it was not signalled. An event loop
    /// whose io_uring read already consumed the counter does not call this.
    pub fn drain(&self) -> io::Result<u64> {
        crate::sys::eventfd_drain(self.fd.as_raw_fd())
    }

    /// Blocks until the eventfd is signalled or `timeout` passes (`None`:
    /// no limit), then drains it. Returns false on timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let timeout = match timeout {
            None => PollTimeout::NONE,
            Some(t) => PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX),
        };
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        loop {
            match poll(&mut fds, timeout) {
                Ok(0) => return Ok(false),
                Ok(_) => {
                    self.drain()?;
                    return Ok(true);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl fmt::Debug for WakeFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WakeFd").field("fd", &self.fd.as_raw_fd()).finish()
    }
}
