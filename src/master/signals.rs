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
