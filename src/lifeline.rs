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
//!
//! The master also hands descriptors to a worker here ([`send_fd`]): one
//! record of [`FD_RECORD`] then a tag of at most [`MAX_TAG`] bytes, with
//! exactly one descriptor attached (`SCM_RIGHTS`). Descriptors go one way
//! only: the master reads its end without room for control data, so the
//! kernel installs nothing a worker attaches and says so (`MSG_CTRUNC`),
//! which the master takes as a protocol violation ([`Read::Rights`]).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};

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
    /// The worker attached descriptors (or other control data) to a
    /// message. The kernel installed none of them in the master; a worker
    /// never has a reason to send any.
    Rights,
}

/// Reads one message from the master's end without blocking. No room is
/// given for control data: descriptors a worker attaches are never
/// installed in the master.
pub(crate) fn recv(fd: BorrowedFd<'_>) -> Read {
    let mut buf = [0u8; 16];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let got = recvmsg::<()>(fd.as_raw_fd(), &mut iov, None, MsgFlags::MSG_DONTWAIT).map(|m| (m.bytes, m.flags));
    match got {
        Ok((_, flags)) if flags.contains(MsgFlags::MSG_CTRUNC) => Read::Rights,
        Ok((0, _)) => Read::HangUp,
        Ok(_) => Read::Byte(buf[0]),
        Err(_) => Read::Empty,
    }
}

/// The first byte of a record that carries a descriptor, master to worker.
pub(crate) const FD_RECORD: u8 = 0x46;
/// The largest tag a descriptor carries.
pub(crate) const MAX_TAG: usize = 4096;
/// Descriptors a worker makes room for in one record: the master sends
/// one; any more that arrive are closed at once.
const FDS_ROOM: usize = 4;

/// Why [`send_fd`] did not send.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FdSendError {
    /// The socket's buffer is full now.
    Full,
    /// The tag is longer than [`MAX_TAG`].
    TooLarge,
    /// The worker's end is closed.
    Closed,
}

/// Sends `passed` with `tag` from the master's end, without blocking.
pub(crate) fn send_fd(fd: BorrowedFd<'_>, passed: BorrowedFd<'_>, tag: &[u8]) -> Result<(), FdSendError> {
    if tag.len() > MAX_TAG {
        return Err(FdSendError::TooLarge);
    }
    let head = [FD_RECORD];
    let iov = [IoSlice::new(&head), IoSlice::new(tag)];
    let fds = [passed.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    match sendmsg::<()>(fd.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL, None) {
        Ok(_) => Ok(()),
        Err(Errno::EAGAIN | Errno::ENOBUFS | Errno::ENOMEM) => Err(FdSendError::Full),
        Err(Errno::EMSGSIZE) => Err(FdSendError::TooLarge),
        Err(_) => Err(FdSendError::Closed),
    }
}

/// What one non-blocking read of the worker's end found.
#[derive(Debug)]
pub(crate) enum FdRead {
    /// A descriptor and its tag.
    Fd(OwnedFd, Vec<u8>),
    /// A record that is not a descriptor hand-over as this worker knows
    /// it (cut short, no or several descriptors, an unknown kind); what
    /// came with it is closed.
    Malformed(&'static str),
    /// Nothing to read now.
    Empty,
    /// The master's end closed.
    HangUp,
}

/// Reads one record from the worker's end without blocking. Bounded: a
/// tag up to [`MAX_TAG`] bytes, room for a few descriptors (closed unless
/// exactly one came), installed close-on-exec.
pub(crate) fn recv_fd(fd: BorrowedFd<'_>) -> FdRead {
    let mut buf = vec![0u8; 1 + MAX_TAG];
    let mut space = nix::cmsg_space!([RawFd; FDS_ROOM]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let (bytes, msg_flags, mut fds) = match recvmsg::<()>(fd.as_raw_fd(), &mut iov, Some(&mut space), flags) {
        Ok(m) => {
            let mut fds = Vec::new();
            // `cmsgs` refuses a truncated buffer (`MSG_CTRUNC`): the
            // descriptors that fit cannot be reached then. The master, the
            // only sender, sends one; the room is for four.
            if let Ok(cmsgs) = m.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        // SAFETY: the kernel just installed these
                        // descriptors in this process for this message;
                        // nothing else owns them.
                        fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
                    }
                }
            }
            (m.bytes, m.flags, fds)
        }
        Err(Errno::EAGAIN | Errno::EINTR) => return FdRead::Empty,
        Err(_) => return FdRead::HangUp,
    };
    if bytes == 0 && fds.is_empty() {
        return FdRead::HangUp;
    }
    if msg_flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
        return FdRead::Malformed("a record larger than a worker takes");
    }
    if buf[0] != FD_RECORD {
        return FdRead::Malformed("an unknown record");
    }
    if fds.len() != 1 {
        return FdRead::Malformed("a record without exactly one descriptor");
    }
    buf.truncate(bytes);
    buf.remove(0);
    FdRead::Fd(fds.remove(0), buf)
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

    #[test]
    fn a_descriptor_crosses_with_its_tag() {
        let (master, worker) = pair().unwrap();
        let (a, b) = pair().unwrap();
        assert!(matches!(recv_fd(worker.as_fd()), FdRead::Empty));
        send_fd(master.as_fd(), a.as_fd(), b"listener:1").unwrap();
        let FdRead::Fd(got, tag) = recv_fd(worker.as_fd()) else { panic!("no descriptor") };
        assert_eq!(tag, b"listener:1");
        // The received descriptor is the same socket: a byte sent on its
        // peer arrives on it.
        send(b.as_fd(), Msg::Ready);
        assert_eq!(recv(got.as_fd()), Read::Byte(Msg::Ready as u8));
        let big = vec![0u8; MAX_TAG + 1];
        assert_eq!(send_fd(master.as_fd(), a.as_fd(), &big), Err(FdSendError::TooLarge));
        drop(master);
        assert!(matches!(recv_fd(worker.as_fd()), FdRead::HangUp));
    }

    #[test]
    fn a_worker_cannot_hand_the_master_a_descriptor() {
        let (master, worker) = pair().unwrap();
        let (a, _b) = pair().unwrap();
        // The worker's end sends a record with a descriptor attached.
        let fds = [a.as_raw_fd()];
        let iov = [IoSlice::new(&[Msg::Online as u8])];
        sendmsg::<()>(worker.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None).unwrap();
        assert_eq!(recv(master.as_fd()), Read::Rights);
        // A plain record after it reads as usual.
        send(worker.as_fd(), Msg::Online);
        assert_eq!(recv(master.as_fd()), Read::Byte(Msg::Online as u8));
    }

    #[test]
    fn a_worker_refuses_records_it_does_not_know() {
        let (master, worker) = pair().unwrap();
        // A byte without a descriptor, and a descriptor with another kind.
        send(master.as_fd(), Msg::Online);
        assert!(matches!(recv_fd(worker.as_fd()), FdRead::Malformed(_)));
        let (a, _b) = pair().unwrap();
        let fds = [a.as_raw_fd()];
        let iov = [IoSlice::new(&[7u8])];
        sendmsg::<()>(master.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None).unwrap();
        assert!(matches!(recv_fd(worker.as_fd()), FdRead::Malformed(_)));
    }
}
