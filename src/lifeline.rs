//! The lifeline: one `SOCK_SEQPACKET` socket pair between the master and
//! each worker process, used by both sides.
//!
//! The worker reports its progress on it with one-byte messages, in this
//! order: [`Msg::Online`] (the process runs), [`Msg::Listening`] (it holds
//! its listener), [`Msg::Ready`] (its handler exists and its loop serves).
//! The master learns that the worker's end closed (a hang-up) when the
//! worker exits, and the worker learns that the master is gone when the
//! master's end closes. Messages between the user's code on both sides go
//! through the shared-memory rings (`crate::ipc`), never through here.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use crate::sys::context;

/// A message on the lifeline, worker to master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Msg {
    /// The worker process runs.
    Online = 1,
    /// The worker holds its listener.
    Listening = 2,
    /// The worker's handler exists and it serves.
    Ready = 3,
}

impl Msg {
    /// The message a byte on the wire stands for, if any.
    pub(crate) fn decode(byte: u8) -> Option<Msg> {
        match byte {
            1 => Some(Msg::Online),
            2 => Some(Msg::Listening),
            3 => Some(Msg::Ready),
            _ => None,
        }
    }
}

/// A new lifeline: `(master's end, worker's end)`, both close-on-exec.
pub(crate) fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| context(e.into(), "socketpair"))
}

/// Sends `msg` from the worker's end. A failure means the master is gone,
/// which the worker learns from the hang-up; there is nothing to do here.
pub(crate) fn send(fd: BorrowedFd<'_>, msg: Msg) {
    let byte = msg as u8;
    // SAFETY: sends one byte from a live local; MSG_NOSIGNAL turns a closed
    // peer into EPIPE instead of SIGPIPE.
    unsafe { libc::send(fd.as_raw_fd(), (&byte as *const u8).cast(), 1, libc::MSG_NOSIGNAL) };
}

/// What one non-blocking read of the master's end found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// One message byte (possibly unknown: see [`Msg::decode`]).
    Byte(u8),
    /// Nothing to read now.
    Empty,
    /// The worker's end closed.
    HangUp,
}

/// Reads one message from the master's end without blocking.
pub(crate) fn recv(fd: BorrowedFd<'_>) -> Read {
    let mut buf = [0u8; 16];
    // SAFETY: reads at most 16 bytes into a live local buffer.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    match n {
        0 => Read::HangUp,
        n if n > 0 => Read::Byte(buf[0]),
        _ => Read::Empty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn messages_round_trip() {
        let (master, worker) = pair().unwrap();
        assert_eq!(recv(master.as_fd()), Read::Empty);
        for m in [Msg::Online, Msg::Listening, Msg::Ready] {
            send(worker.as_fd(), m);
            assert_eq!(recv(master.as_fd()), Read::Byte(m as u8));
            assert_eq!(Msg::decode(m as u8), Some(m));
        }
        assert_eq!(Msg::decode(0), None);
        drop(worker);
        assert_eq!(recv(master.as_fd()), Read::HangUp);
    }
}
