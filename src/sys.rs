//! Thin wrappers over the system calls forkring makes directly: `nix`'s
//! safe wrappers where it has them, raw `libc` where it does not or where
//! the call must stay async-signal-safe.
//!
//! Every wrapper turns `-1` into `io::Error::last_os_error()`, and every new
//! descriptor is wrapped into an `OwnedFd` on the line that creates it.

use std::io;
use std::os::fd::{OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::eventfd::{EfdFlags, EventFd};

/// Calls a libc function and turns a `-1` result into the last OS error.
/// Every call site says in a comment what its pointer arguments rely on,
/// or that it passes none.
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

/// The running kernel's release (`uname -r`), for messages that name the
/// kernel a feature needs; "unknown" where `/proc` is not mounted.
pub(crate) fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(|_| "unknown".to_owned(), |r| r.trim().to_owned())
}

/// Adds context to an `io::Error` while keeping its kind.
pub(crate) fn context(err: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// Bytes written to stream socket `fd` that have not reached its peer:
/// not yet acknowledged (TCP) or not yet read (a Unix socket). `SIOCOUTQ`.
pub(crate) fn unacked(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SIOCOUTQ writes one `int`, here a local that outlives the call.
    syscall!(ioctl(fd, libc::TIOCOUTQ, &mut n as *mut libc::c_int))?;
    Ok(n.max(0) as usize)
}

/// Creates a non-blocking, close-on-exec eventfd.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    let fd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
        .map_err(|e| context(e.into(), "eventfd"))?;
    Ok(fd.into())
}

/// Makes `fd` non-blocking (a listener inherited from a service manager
/// may be blocking, and accepting runs until `WouldBlock`).
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL).map_err(|e| context(e.into(), "fcntl(F_GETFL)"))?);
    if !flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map_err(|e| context(e.into(), "fcntl(O_NONBLOCK)"))?;
    }
    Ok(())
}

/// Sets or clears `fd`'s close-on-exec flag.
pub(crate) fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    let mut flags =
        FdFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFD).map_err(|e| context(e.into(), "fcntl(F_GETFD)"))?);
    flags.set(FdFlag::FD_CLOEXEC, on);
    fcntl(fd, FcntlArg::F_SETFD(flags)).map_err(|e| context(e.into(), "fcntl(F_SETFD)"))?;
    Ok(())
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

/// The peer address of socket `fd`, if it is an IP socket that has one.
pub(crate) fn peer_addr(fd: RawFd) -> Option<std::net::SocketAddr> {
    if fd < 0 {
        return None;
    }
    inet(nix::sys::socket::getpeername::<nix::sys::socket::SockaddrStorage>(fd).ok()?)
}

/// The local address of socket `fd`, if it is an IP socket.
pub(crate) fn local_addr(fd: RawFd) -> Option<std::net::SocketAddr> {
    if fd < 0 {
        return None;
    }
    inet(nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(fd).ok()?)
}

fn inet(a: nix::sys::socket::SockaddrStorage) -> Option<std::net::SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(std::net::SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| std::net::SocketAddr::V6((*v6).into()))
}

/// A socket's name, of any family forkring serves.
pub(crate) enum SockName {
    /// IPv4 or IPv6.
    Ip(std::net::SocketAddr),
    /// A Unix domain socket: its path, or `None` when unnamed (or abstract).
    Unix(Option<std::path::PathBuf>),
}

/// The peer's name of socket `fd`, of any family.
pub(crate) fn peer_name(fd: RawFd) -> Option<SockName> {
    if fd < 0 {
        return None;
    }
    sock_name(nix::sys::socket::getpeername::<nix::sys::socket::SockaddrStorage>(fd).ok()?)
}

/// The local name of socket `fd`, of any family.
pub(crate) fn local_name(fd: RawFd) -> Option<SockName> {
    if fd < 0 {
        return None;
    }
    sock_name(nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(fd).ok()?)
}

fn sock_name(a: nix::sys::socket::SockaddrStorage) -> Option<SockName> {
    if let Some(u) = a.as_unix_addr() {
        return Some(SockName::Unix(u.path().map(|p| p.to_path_buf())));
    }
    inet(a).map(SockName::Ip)
}

/// Makes `fd` blocking (a connection handed over after an upgrade).
pub(crate) fn set_blocking(fd: RawFd) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL).map_err(|e| context(e.into(), "fcntl(F_GETFL)"))?);
    if flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK)).map_err(|e| context(e.into(), "fcntl(O_NONBLOCK)"))?;
    }
    Ok(())
}

/// `CLOCK_MONOTONIC` now, in microseconds (what systemd's
/// `MONOTONIC_USEC=` carries).
pub(crate) fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a
    // constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000).saturating_add(ts.tv_nsec as u64 / 1_000)
}
