//! Connections handed over after `101 Switching Protocols`: what a handler
//! that answers with [`super::Response::upgrade`] gets once the `101` is
//! sent.

use std::fmt;
use std::os::fd::OwnedFd;

/// What [`super::Response::upgrade`] hands over.
pub(crate) type UpgradeFn = Box<dyn FnOnce(Upgraded) + Send>;

/// A connection taken over after `101 Switching Protocols`: its socket and
/// the bytes the client sent after the request's head that the runtime had
/// already received (they come first: a WebSocket client may send a frame
/// right behind its handshake).
///
/// The socket is in **blocking** mode and close-on-exec, with nothing of
/// the runtime's in flight on it (on io_uring, the connection's receive was
/// cancelled and its last completion reaped before the hand-over): give it
/// to a blocking protocol library on a pool thread
/// ([`crate::worker::spawn_blocking`]; when the pool is full the job is
/// dropped, and the connection closed with it), say as a
/// `std::net::TcpStream` (or a `UnixStream` for a Unix listener). A
/// connection holds its thread for its whole life: size
/// [`crate::Config::pool`] for them. To use it from an event loop of your
/// own, set it non-blocking again.
pub struct Upgraded {
    /// The socket.
    fd: OwnedFd,
    /// Bytes received after the request head.
    read: Vec<u8>,
}

impl fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgraded").field("fd", &self.fd).field("read", &self.read.len()).finish()
    }
}

impl Upgraded {
    pub(crate) fn new(fd: OwnedFd, read: Vec<u8>) -> Upgraded {
        Upgraded { fd, read }
    }

    /// The bytes already received after the request's head (often none).
    pub fn read_bytes(&self) -> &[u8] {
        &self.read
    }

    /// The socket and the bytes already received.
    pub fn into_parts(self) -> (OwnedFd, Vec<u8>) {
        (self.fd, self.read)
    }
}
