//! Thin wrappers over the system calls forkring makes directly.
//!
//! Every wrapper turns `-1` into `io::Error::last_os_error()`, and every new
//! descriptor is wrapped into an `OwnedFd` on the line that creates it.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Calls a libc function and turns a `-1` result into the last OS error.
macro_rules! syscall {
    ($fn: ident ( $($arg: expr),* $(,)* ) ) => {{
        #[allow(unused_unsafe)]
        // SAFETY: the caller passes arguments valid for this libc call; each
        // call site documents what it relies on.
        let res = unsafe { libc::$fn($($arg, )*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// Adds context to an `io::Error` while keeping its kind.
pub(crate) fn context(err: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// Creates a non-blocking, close-on-exec eventfd.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    let fd = syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?;
    // SAFETY: `eventfd` just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter. Async-signal-safe (one `write`).
pub(crate) fn eventfd_wake(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live local; an error (EAGAIN when the
    // counter is saturated) still leaves the fd readable, which is all a
    // wake-up needs.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// Reads and resets an eventfd's counter; `Ok(0)` when it was not signalled.
pub(crate) fn eventfd_drain(fd: RawFd) -> io::Result<u64> {
    let mut v: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live local u64.
    let n = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
    if n == -1 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(v)
}

/// Closes a raw descriptor that this process owns, ignoring errors (a close
/// error on a socket leaves nothing to recover).
pub(crate) fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and does not use it afterwards.
    unsafe { libc::close(fd) };
}
