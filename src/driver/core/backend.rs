//! What the core's shared steps ([`super::sweep()`],
//! [`super::complete_deferred`]) see of a backend: a connection's phase and
//! protocol state ([`Connection`]), and the table, the handler and what
//! the backend does to a connection a step is done with ([`Backend`]).
//! Both are implemented once per backend and called monomorphically: no
//! dynamic dispatch on the loop.

use std::os::fd::RawFd;

use super::Core;
use crate::driver::slab::{Key, Slab};
use crate::http::{Conn, Handler};

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Serving requests.
    Open,
    /// The last response is out and the write side shut down; input is
    /// read and dropped until the peer's EOF or `until` (in
    /// [`crate::http::WorkerState::now_ms`] time), so that the client reads
    /// that response instead of a reset ([`super::linger`]).
    Linger {
        /// When the lingering ends.
        until: u64,
    },
    /// Its operations are being cancelled; the slot is freed when none is
    /// left in the kernel. (Only the io_uring loop has operations to wait
    /// for: the epoll loop closes a connection at once.)
    Closing,
}

/// A backend's connection, as the shared steps see it.
pub(crate) trait Connection {
    /// Where the connection is in its life.
    fn phase(&self) -> Phase;

    /// Its protocol state.
    fn http(&self) -> &Conn;

    /// Its protocol state, to change.
    fn http_mut(&mut self) -> &mut Conn;

    /// Its socket.
    fn socket(&self) -> RawFd;

    /// Whether output the backend took out of the protocol state is not all
    /// sent yet (the io_uring loop's send in the kernel; the epoll loop
    /// sends from the protocol state's own buffer and never takes any).
    fn output_taken(&self) -> bool;

    /// Whether a completed deferred answer (or a stream's or a body's
    /// wake-up) is handed to the protocol state: by default only while the
    /// connection is [`Phase::Open`], since a lingering or closing one
    /// sends nothing more.
    #[inline]
    fn takes_completions(&self) -> bool {
        self.phase() == Phase::Open
    }
}

/// A backend's loop, as the shared steps see it.
pub(crate) trait Backend<'a> {
    /// Its connection.
    type Conn: Connection;
    /// The user's handler.
    type Handler: Handler;

    /// The core, the connection table and the handler, borrowed together.
    fn parts(&mut self) -> (&mut Core<'a>, &mut Slab<Self::Conn>, &mut Self::Handler);

    /// Connection `key` has output again (a deferred answer, a `504`):
    /// the backend sends it, now or before the loop next waits. Returns
    /// whether that closed the connection.
    fn serve(&mut self, key: Key) -> bool;

    /// Closes connection `key`, whose time is up.
    fn close(&mut self, key: Key);

    /// A heavy handler is about to run: what is framed so far leaves
    /// first, not after it (the epoll loop sends as it frames; the
    /// io_uring loop submits its sends).
    fn send_framed(&mut self);
}
