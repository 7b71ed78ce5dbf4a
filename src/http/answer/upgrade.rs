//! Connections handed over after `101 Switching Protocols`: what a handler
//! that answers with [`super::Response::upgrade`] gets once the `101` is
//! sent (an [`Upgraded`] holding the socket and the bytes the client sent
//! after the request head), and the cap on how many one worker holds.
//!
//! An upgraded connection leaves the driver (and `max_connections`), so it
//! counts against a cap of its own, [`crate::Limits::max_upgraded`] per
//! worker. Its place ([`UpgradePermit`]) is taken when the `101` is framed,
//! so that upgrades answered in the same turn cannot overshoot the cap;
//! past it the request is answered `503` with `Connection: close`. The
//! place goes with the connection: back when the connection closes before
//! its hand-over, else inside the [`Upgraded`] and then the
//! [`UpgradedStream`] the user keeps, back when that is dropped (the
//! socket closes with it). The worker cannot see a socket close once the
//! descriptor is the user's, so the count follows the value that owns it.
//! Where it stops: when a connection is handed over is the driver's.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::ipc::{Counter, Counters};

/// What [`super::Response::upgrade`] hands over.
pub(crate) type UpgradeFn = Box<dyn FnOnce(Upgraded) + Send>;

/// An upgraded connection's place under [`crate::Limits::max_upgraded`],
/// given back when dropped.
pub struct UpgradePermit {
    /// The worker's count of places taken.
    count: Arc<AtomicUsize>,
    /// The worker's counters, whose gauge mirrors `count`.
    counters: Option<&'static Counters>,
}

impl fmt::Debug for UpgradePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpgradePermit").field("taken", &self.count.load(Ordering::Relaxed)).finish()
    }
}

impl UpgradePermit {
    /// Takes a place in `count` if fewer than `max` are taken. Only the
    /// worker's loop takes places; any thread gives one back, which can
    /// only make room, so the check and the add need not be one step.
    pub(crate) fn take(count: &Arc<AtomicUsize>, max: usize, counters: Option<&'static Counters>) -> Option<Self> {
        // `Relaxed`: the count publishes no other memory.
        if count.load(Ordering::Relaxed) >= max {
            return None;
        }
        count.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = counters {
            // Given back from other threads: the locked add, both ways.
            c.add_shared(Counter::UpgradedConnections, 1);
        }
        Some(UpgradePermit { count: count.clone(), counters })
    }
}

impl Drop for UpgradePermit {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        if let Some(c) = self.counters {
            c.add_shared(Counter::UpgradedConnections, u64::MAX); // wrapping: minus one
        }
    }
}

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
/// dropped, and the connection closed with it), say as an
/// [`UpgradedStream<TcpStream>`](UpgradedStream) (or `<UnixStream>` for a
/// Unix listener). A connection holds its thread for its whole life: size
/// [`crate::Config::pool`] for them. To use it from an event loop of your
/// own, set it non-blocking again.
///
/// The connection counts against the worker's
/// [`crate::Limits::max_upgraded`] until this value, or the
/// [`UpgradedStream`] made of it, is dropped.
pub struct Upgraded {
    /// The socket.
    fd: OwnedFd,
    /// Bytes received after the request head.
    read: Vec<u8>,
    /// The connection's place under the cap.
    permit: UpgradePermit,
}

impl fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgraded").field("fd", &self.fd).field("read", &self.read.len()).finish()
    }
}

impl Upgraded {
    pub(crate) fn new(fd: OwnedFd, read: Vec<u8>, permit: UpgradePermit) -> Upgraded {
        Upgraded { fd, read, permit }
    }

    /// The bytes already received after the request's head (often none).
    pub fn read_bytes(&self) -> &[u8] {
        &self.read
    }

    /// The socket as a stream of type `S` (`TcpStream`, `UnixStream`, or
    /// the `OwnedFd` itself), and the bytes already received:
    ///
    /// ```no_run
    /// fn take(conn: forkring::Upgraded) {
    ///     let (stream, read) = conn.into_parts::<std::net::TcpStream>();
    ///     # drop((stream, read));
    /// }
    /// ```
    pub fn into_parts<S: From<OwnedFd>>(self) -> (UpgradedStream<S>, Vec<u8>) {
        (UpgradedStream { stream: S::from(self.fd), permit: self.permit }, self.read)
    }
}

/// An upgraded connection's socket as a stream `S`, from
/// [`Upgraded::into_parts`]: it reads and writes as `S` does, and
/// dereferences to `S` for the rest (timeouts, shutdown, addresses).
///
/// While it lives, the connection counts against its worker's
/// [`crate::Limits::max_upgraded`]; dropping it closes the socket and
/// gives the place back. A clone of the socket (`try_clone`) is not
/// counted: keep this value for as long as the connection is open.
pub struct UpgradedStream<S> {
    /// The stream.
    stream: S,
    /// The connection's place under the cap.
    permit: UpgradePermit,
}

impl<S: fmt::Debug> fmt::Debug for UpgradedStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UpgradedStream").field(&self.stream).finish()
    }
}

impl<S> UpgradedStream<S> {
    /// The stream alone. The worker no longer counts the connection: it
    /// cannot tell when a stream it does not hold closes.
    pub fn into_inner(self) -> S {
        let UpgradedStream { stream, permit } = self;
        drop(permit);
        stream
    }
}

impl<S> Deref for UpgradedStream<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.stream
    }
}

impl<S> DerefMut for UpgradedStream<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}

impl<S: Read> Read for UpgradedStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.stream.read_vectored(bufs)
    }
}

impl<S: Write> Write for UpgradedStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.stream.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl<S: AsFd> AsFd for UpgradedStream<S> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl<S: AsRawFd> AsRawFd for UpgradedStream<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_taken_up_to_the_cap_and_given_back_on_drop() {
        let counters: &'static Counters = Box::leak(Box::default());
        let count = Arc::new(AtomicUsize::new(0));
        let a = UpgradePermit::take(&count, 2, Some(counters)).unwrap();
        let b = UpgradePermit::take(&count, 2, Some(counters)).unwrap();
        assert!(UpgradePermit::take(&count, 2, Some(counters)).is_none());
        assert_eq!(counters.get(Counter::UpgradedConnections), 2);
        // Given back from another thread, as a pool thread drops its socket.
        std::thread::spawn(move || drop(a)).join().unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 1);
        assert_eq!(counters.get(Counter::UpgradedConnections), 1);
        let (ours, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let up = Upgraded::new(ours.into(), b"x".to_vec(), UpgradePermit::take(&count, 2, None).unwrap());
        assert!(UpgradePermit::take(&count, 2, None).is_none());
        let (stream, read) = up.into_parts::<std::os::unix::net::UnixStream>();
        assert_eq!(read, b"x");
        assert_eq!(count.load(Ordering::Relaxed), 2, "the stream holds the place");
        let inner = stream.into_inner();
        assert_eq!(count.load(Ordering::Relaxed), 1, "a stream taken out is no longer counted");
        drop((inner, b));
        assert_eq!(count.load(Ordering::Relaxed), 0);
        assert_eq!(counters.get(Counter::UpgradedConnections), 0);
    }
}
