//! Signals to the master, read as data: they are blocked and read from a
//! signalfd by the loop, so no work ever happens in a signal handler.
//!
//! TERM and INT: graceful shutdown; QUIT: immediate stop; HUP: rolling
//! reload; TTIN and TTOU: one worker more or fewer; USR2: binary upgrade;
//! CHLD: ignored here
//! (exits arrive through pidfds).

use std::io;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::{Command, Master};
use crate::sys::context;

/// The signals the master takes through its signalfd.
pub(crate) fn mask() -> SigSet {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        mask.add(s);
    }
    mask
}

/// Starts a thread in the master process with the master's signals
/// blocked in it (TERM, INT, HUP, QUIT, CHLD, TTIN, TTOU, USR1, USR2), so
/// that they reach the master loop, which reads them from a signalfd.
///
/// The loop blocks them only in its own thread; a thread started before
/// [`crate::Server::serve`] with `std::thread::spawn` leaves them
/// unblocked, and the kernel may then deliver, say, a SIGTERM to that
/// thread, where its default action ends the whole process at once instead
/// of draining it. Threads started from a callback on the loop inherit its
/// mask and need none of this. A master with threads forks its workers
/// only with [`crate::Server::reexec`].
pub fn spawn_master_thread<F, T>(f: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let mut old = SigSet::empty();
    let blocked = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask()), Some(&mut old)).is_ok();
    // The new thread inherits this thread's mask as it is now.
    let thread = std::thread::spawn(f);
    if blocked {
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    thread
}

/// Blocks the master's signals and opens the signalfd that reads them.
pub(super) fn block() -> io::Result<(SigSet, SignalFd)> {
    let mask = mask();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| context(e.into(), "sigprocmask"))?;
    let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| context(e.into(), "signalfd"))?;
    Ok((mask, fd))
}

/// Unblocks what [`block`] blocked.
pub(crate) fn unblock(mask: &SigSet) {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(mask), None);
}

impl Master<'_> {
    /// Turns every pending signal into its command.
    pub(super) fn read_signals(&mut self) {
        while let Ok(Some(info)) = self.sigfd.read_signal() {
            let cmd = match info.ssi_signo as i32 {
                libc::SIGTERM | libc::SIGINT => Command::Shutdown,
                libc::SIGQUIT => Command::Quit,
                libc::SIGHUP => Command::Reload,
                libc::SIGTTIN => Command::ScaleUp,
                libc::SIGTTOU => Command::ScaleDown,
                libc::SIGUSR1 => Command::ReopenLogs,
                libc::SIGUSR2 => Command::Upgrade,
                _ => continue, // SIGCHLD: exits arrive through pidfds.
            };
            self.command(cmd);
        }
    }
}
