//! A connection as the io_uring loop keeps it: its socket, its protocol
//! state, and which of its operations are in the kernel (the multishot
//! recv, the one send, the file body's splices, the ring's close), which
//! decides when its slot may be freed. Where it stops: what to submit next
//! is [`super::reconcile`]'s; what a completion changes is
//! [`super::complete`]'s.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::submit::Multishot;
use crate::driver::core::{self, Phase};
use crate::http::Conn;

/// The pipe size asked for a connection sending a file.
const PIPE_SIZE: i32 = 256 * 1024;

/// One connection: its socket, protocol state and operations in flight.
#[derive(Debug)]
pub(super) struct Connection {
    /// The accepted socket; closed when the slot is freed.
    pub(super) fd: OwnedFd,
    /// The protocol state machine.
    pub(super) http: Conn,
    /// The multishot recv.
    pub(super) recv: Multishot,
    /// Output taken for sending, until all of it is sent.
    pub(super) out: Option<Outgoing>,
    /// A send of `out` is in the kernel.
    pub(super) sending: bool,
    /// Phase of life.
    pub(super) phase: Phase,
    /// The peer has shut down its side (or the connection failed).
    pub(super) peer_eof: bool,
    /// The protocol state has been told of the EOF (`Conn::on_eof`).
    pub(super) eof_seen: bool,
    /// In the loop's dirty list.
    pub(super) queued: bool,
    /// Who closes `fd`.
    pub(super) fd_close: FdClose,
    /// The pipe of a file body, made at the first file it sends (boxed:
    /// most connections never send one).
    pub(super) pipe: Option<Box<Pipe>>,
    /// The file body's splices in the kernel.
    pub(super) splice: Splice,
}

/// Output handed to the kernel: the bytes stay in `buf`, which does not move
/// or change while a send is in flight.
#[derive(Debug)]
pub(super) struct Outgoing {
    /// Every response taken from the `Conn` for this send.
    pub(super) buf: Vec<u8>,
    /// Bytes of `buf` the kernel has sent.
    pub(super) written: usize,
}

impl Outgoing {
    /// Bytes of `buf` not sent yet.
    pub(super) fn remaining(&self) -> usize {
        self.buf.len() - self.written
    }
}

/// Who closes a connection's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FdClose {
    /// The loop, when the slot is freed.
    Loop,
    /// A close was submitted; its completion has not arrived.
    Ring,
    /// The ring closed it: freeing the slot must not close it again.
    Closed,
}

/// Where a connection's file body is between the file and the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Splice {
    /// Nothing in the kernel.
    Off,
    /// File to pipe in the kernel.
    In,
    /// Poll for room, then pipe to socket, in the kernel (linked).
    Out,
}

/// The pipe a connection's file body passes through: file pages go in by
/// reference and out to the socket the same way, never through user
/// space. Its capacity bounds the file bytes in flight.
#[derive(Debug)]
pub(super) struct Pipe {
    /// The read end (spliced to the socket).
    pub(super) read: OwnedFd,
    /// The write end (spliced from the file).
    pub(super) write: OwnedFd,
    /// Its capacity in bytes.
    pub(super) capacity: u32,
    /// Bytes in it, read from the file and not yet in the socket.
    pub(super) filled: u32,
}

impl Pipe {
    /// A pipe made as large as the system allows, up to [`PIPE_SIZE`].
    pub(super) fn new() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // A bigger pipe moves a file in fewer round trips; the default
        // (16 pages) is kept where the system refuses.
        let capacity = match nix::fcntl::fcntl(write.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
            Ok(n) if n > 0 => n as u32,
            _ => 64 * 1024,
        };
        Ok(Pipe { read, write, capacity, filled: 0 })
    }
}

impl Connection {
    /// A connection just accepted, with nothing in the kernel yet.
    pub(super) fn new(fd: OwnedFd, http: Conn) -> Connection {
        Connection {
            fd,
            http,
            recv: Multishot::Off,
            out: None,
            sending: false,
            phase: Phase::Open,
            peer_eof: false,
            eof_seen: false,
            queued: false,
            fd_close: FdClose::Loop,
            pipe: None,
            splice: Splice::Off,
        }
    }

    /// Whether an operation of this connection is in the kernel.
    pub(super) fn busy(&self) -> bool {
        self.recv != Multishot::Off || self.sending || self.fd_close == FdClose::Ring || self.splice != Splice::Off
    }

    /// File bytes read into the pipe and not yet in the socket.
    fn piped(&self) -> u32 {
        self.pipe.as_ref().map_or(0, |p| p.filled)
    }

    /// Output bytes not yet sent, taken or not.
    pub(super) fn unsent(&self) -> usize {
        self.http.output_len() + self.out.as_ref().map_or(0, Outgoing::remaining) + self.piped() as usize
    }
}

impl core::Connection for Connection {
    #[inline]
    fn phase(&self) -> Phase {
        self.phase
    }

    #[inline]
    fn http(&self) -> &Conn {
        &self.http
    }

    #[inline]
    fn http_mut(&mut self) -> &mut Conn {
        &mut self.http
    }

    #[inline]
    fn socket(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A send of output taken from the protocol state has not finished.
    #[inline]
    fn output_taken(&self) -> bool {
        self.out.is_some()
    }
}
