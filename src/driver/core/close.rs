//! The end of a connection, decided once for both backends: whether it
//! closes at once, lingers or stays once its output is sent, whether its
//! last send can carry the close's FIN, the lingering close itself, and
//! the hand-over of an upgraded connection. Where it stops: cancelling
//! what is in flight and freeing the slot is the backend's.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::http::{Conn, UpgradeFn, UpgradePermit, Upgraded, WorkerState};

/// How a closing connection keeps discarding input after its last
/// response, so that the client reads that response instead of a reset.
pub(crate) const LINGER_MS: u64 = 2_000;

/// What a connection needs once its output is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum After {
    /// Keep serving it.
    Keep,
    /// Lingering close: shut down the write side, discard input until the
    /// peer closes or [`LINGER_MS`] pass.
    Linger,
    /// Close it now.
    Close,
}

/// The close decision. A connection the core marked closing is closed once
/// its output is out: at once when the peer has already closed its side or
/// when it closes right after a complete request with nothing after it
/// (nothing unread can be there, as nginx decides too); with a lingering
/// close when input may remain unread (a refused request, bytes after the
/// last answered one), since closing with unread input sends a reset, which
/// can destroy the last response in the peer's receive buffer.
pub(crate) fn after_output(http: &Conn, output_pending: bool, peer_eof: bool) -> After {
    if !http.is_closing() || output_pending {
        After::Keep
    } else if peer_eof || !http.may_have_unread_input() {
        After::Close
    } else {
        After::Linger
    }
}

/// Whether the output framed now is all the connection sends before it
/// closes at once (no stream or file follows it, and no lingering). Its
/// last send then holds its final bytes back (`MSG_MORE`) for the close:
/// the FIN leaves in the same segment as they do, not in one of its own
/// (a connection-per-request exchange takes 8 segments instead of 10).
pub(crate) fn last_output(http: &Conn, peer_eof: bool) -> bool {
    !http.is_streaming() && !http.has_file() && after_output(http, false, peer_eof) == After::Close
}

/// Starts a lingering close of `fd`: shuts down its write side and returns
/// when the lingering ends (in [`WorkerState::now_ms`] time).
pub(crate) fn linger(fd: RawFd, sh: &WorkerState) -> io::Result<u64> {
    // Plain integer arguments on a socket the connection owns.
    syscall!(shutdown(fd, libc::SHUT_WR))?;
    Ok(sh.now_ms() + LINGER_MS)
}

/// Hands an upgraded connection over to what the handler gave
/// ([`crate::Response::upgrade`]), on the loop: the socket switched to
/// blocking mode, with the bytes already received after the request head
/// and the connection's place under [`crate::Limits::max_upgraded`], which
/// goes back when the user's side drops the socket (or here, if the hand-
/// over fails). The backend calls it once nothing of its own is in flight
/// on `fd`, and has already forgotten the connection.
pub(crate) fn hand_over(fd: OwnedFd, take: UpgradeFn, read: Vec<u8>, permit: UpgradePermit) {
    if let Err(e) = crate::sys::set_blocking(fd.as_raw_fd()) {
        log::warn!("upgrade: {e}; closing the connection");
        return;
    }
    let up = Upgraded::new(fd, read, permit);
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| take(up))).is_err() {
        log::error!("the taker of an upgraded connection panicked");
    }
}
