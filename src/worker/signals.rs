//! The worker's own signals: SIGTERM and SIGINT ask the loop to drain,
//! SIGIO on the lifeline tells a master that is gone (a drain) from a
//! record to read (a descriptor: the loop reads it),
//! and SIGPIPE is ignored (sends use `MSG_NOSIGNAL`; a closed peer must
//! never kill the worker). The handlers only set a flag and write an
//! eventfd ([`crate::driver::drain_from_signal`]).

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{sigaction, signal, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::sys::context;

extern "C" fn on_drain_signal(_sig: libc::c_int) {
    crate::driver::drain_from_signal();
}

/// The lifeline whose hang-up means the master is gone; -1 if none.
static LIFELINE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigio(_sig: libc::c_int) {
    // poll(2) with a zero timeout is async-signal-safe; it tells a hang-up
    // (master gone) from a record to read.
    let fd = LIFELINE_FD.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let mut p = libc::pollfd { fd, events: libc::POLLIN | libc::POLLRDHUP, revents: 0 };
    // SAFETY: one valid pollfd on the stack, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    if n == 1 && p.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0 {
        crate::driver::drain_from_signal();
    } else if n == 1 && p.revents & libc::POLLIN != 0 {
        crate::driver::lifeline_from_signal();
    }
}

/// SIGUSR1, forwarded by the master: the access log is reopened before its
/// next write.
extern "C" fn on_reopen_signal(_: libc::c_int) {
    crate::http::reopen_access_log();
}

/// Routes SIGTERM and SIGINT to a drain, SIGUSR1 to a reopen of the access
/// log, and ignores SIGPIPE.
pub(super) fn install() -> io::Result<()> {
    let drain = SigAction::new(SigHandler::Handler(on_drain_signal), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only touches atomics and calls write(2), both
        // async-signal-safe.
        unsafe { sigaction(sig, &drain) }.map_err(|e| context(e.into(), "sigaction"))?;
    }
    let reopen = SigAction::new(SigHandler::Handler(on_reopen_signal), SaFlags::SA_RESTART, SigSet::empty());
    // SAFETY: the handler stores to an atomic, which is async-signal-safe.
    unsafe { sigaction(Signal::SIGUSR1, &reopen) }.map_err(|e| context(e.into(), "sigaction(SIGUSR1)"))?;
    // SAFETY: ignoring a signal installs no code.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }.map_err(|e| context(e.into(), "signal(SIGPIPE)"))?;
    Ok(())
}

/// Drains the worker when `fd` (its end of the lifeline) hangs up: the
/// kernel raises SIGIO on the hang-up (`O_ASYNC`), and the handler checks
/// it is one. Together with `PR_SET_PDEATHSIG` this makes a worker whose
/// master died finish its work and exit.
pub(super) fn watch_lifeline(fd: RawFd) -> io::Result<()> {
    LIFELINE_FD.store(fd, Ordering::SeqCst);
    let action = SigAction::new(SigHandler::Handler(on_sigio), SaFlags::SA_RESTART, SigSet::empty());
    // SAFETY: the handler only calls poll(2), touches atomics and write(2).
    unsafe { sigaction(Signal::SIGIO, &action) }.map_err(|e| context(e.into(), "sigaction(SIGIO)"))?;
    // F_SETOWN has no nix wrapper; plain integer arguments on a descriptor
    // this process owns.
    syscall!(fcntl(fd, libc::F_SETOWN, std::process::id() as libc::c_int))?;
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL).map_err(|e| context(e.into(), "fcntl"))?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_ASYNC | OFlag::O_NONBLOCK)).map_err(|e| context(e.into(), "fcntl"))?;
    // The master may already be gone.
    on_sigio(libc::SIGIO);
    Ok(())
}
