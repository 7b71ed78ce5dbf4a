//! A connection as the epoll loop keeps it, and the moving of its bytes:
//! its socket, its protocol state and readiness bits, reading into the
//! worker-wide buffer, sending what the protocol state framed (and a file
//! body by `sendfile`), and the lingering close's discarding. Where it
//! stops: what to do with a connection once it has moved what it could
//! ([`Step`]) is the loop's; when to close or linger is the core's
//! ([`core::after_output`]).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::sendfile::sendfile64;

use crate::driver::core::{self, After, Phase};
use crate::http::{Conn, Handler, WorkerState, OUTPUT_HIGH_WATER};

/// Most bytes of a file body one `sendfile` call is asked to move; the
/// socket's send buffer bounds what is actually in flight.
const FILE_CHUNK: usize = 1 << 20;

/// What a connection needs next.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Keep it and wait for its next event.
    Keep,
    /// Close it now.
    Close,
    /// Its `101` is sent: hand it over to what the handler gave.
    Upgrade,
}

/// One accepted connection.
pub(super) struct Connection {
    /// The socket; closing it also removes it from the epoll set.
    pub(super) fd: OwnedFd,
    /// Protocol state.
    pub(super) http: Conn,
    /// Input may be waiting: set by an event, cleared when a read says
    /// `WouldBlock` or comes back short.
    pub(super) readable: bool,
    /// The peer half-closed or the socket failed: read until the kernel
    /// reports the end, even after a short read.
    pub(super) read_ends: bool,
    /// The send buffer has room: set by an event, cleared when a send says
    /// `WouldBlock` or comes back short.
    pub(super) writable: bool,
    /// A read returned end of input: the peer has shut down its side.
    peer_eof: bool,
    /// Open, or lingering ([`Phase::Closing`] is never used here: a
    /// connection is closed at once).
    phase: Phase,
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

    /// Output is sent from the protocol state's own buffer, never taken.
    #[inline]
    fn output_taken(&self) -> bool {
        false
    }

    /// Always: a lingering connection is handed its completions too, and
    /// what they frame goes unsent, since lingering only discards input.
    #[inline]
    fn takes_completions(&self) -> bool {
        true
    }
}

impl Connection {
    /// A connection just accepted: writable, nothing read yet.
    pub(super) fn new(fd: OwnedFd, http: Conn) -> Connection {
        Connection { fd, http, readable: false, read_ends: false, writable: true, peer_eof: false, phase: Phase::Open }
    }

    /// Moves bytes both ways until neither direction can progress:
    /// reads while output stays under the high-water mark, then sends
    /// everything framed in one call; repeats while a complete send leaves
    /// input to read.
    pub(super) fn drive<H: Handler>(&mut self, sh: &mut WorkerState, buf: &mut [u8], handler: &mut H) -> Step {
        if let Phase::Linger { .. } = self.phase {
            return self.discard(buf);
        }
        loop {
            while self.readable
                && !self.http.is_closing()
                && self.http.output_len() < OUTPUT_HIGH_WATER
                && self.http.wants_input(sh)
            {
                match recv(self.fd.as_raw_fd(), buf) {
                    Ok(0) => {
                        self.readable = false;
                        self.peer_eof = true;
                        self.http.on_eof(sh);
                    }
                    Ok(n) => {
                        // Edge-triggered: a short read emptied the socket,
                        // and new data will raise a new edge. After a FIN
                        // or error no edge follows, so read on to the end.
                        if n < buf.len() && !self.read_ends {
                            self.readable = false;
                        }
                        sh.count_bytes(n, 0);
                        self.http.on_read(&buf[..n], sh, handler);
                    }
                    Err(e) => match e.kind() {
                        io::ErrorKind::WouldBlock => self.readable = false,
                        io::ErrorKind::Interrupted => {}
                        _ => return quiet_close("recv", &e),
                    },
                }
            }
            if self.writable && !self.http.has_output() {
                if let Some((file, offset, remaining)) = self.http.file_chunk() {
                    // The file part, once every byte before it is out:
                    // straight from the page cache to the socket.
                    let want = remaining.min(FILE_CHUNK as u64) as usize;
                    let mut off = offset as libc::off64_t;
                    // A short transfer is no sign of a full socket here (a
                    // signal, or the page cache, can end a sendfile early,
                    // and then no edge would come): only `EAGAIN` clears
                    // `writable`.
                    match sendfile64(self.fd.as_fd(), file, Some(&mut off), want) {
                        Ok(0) => {
                            log::warn!("a file body ended early (the file shrank); closing the connection");
                            self.http.file_failed(sh);
                        }
                        Ok(n) => {
                            // A short count does not say the socket is
                            // full: a signal (the SIGTERM that asks for a
                            // drain) stops sendfile after a part too, and
                            // then no edge would ever come to go on. The
                            // next call says EAGAIN if it is full.
                            sh.count_bytes(0, n);
                            self.http.file_sent(n as u64, sh);
                            self.http.resume(sh, handler);
                        }
                        Err(Errno::EAGAIN) => self.writable = false,
                        Err(Errno::EINTR) => {}
                        Err(e) => return quiet_close("sendfile", &io::Error::from(e)),
                    }
                    continue;
                }
            }
            if !self.http.has_output() || !self.writable {
                break;
            }
            // A file body follows the head: hold the head back for it,
            // so that both leave in one segment; and the last output
            // before a close, for the close's FIN (`core::last_output`).
            let last = self.http.has_file() || core::last_output(&self.http, self.peer_eof);
            let more = if last { libc::MSG_MORE } else { 0 };
            let out = self.http.output();
            let total = out.len();
            match send(self.fd.as_raw_fd(), out, more) {
                Ok(written) => {
                    sh.count_bytes(0, written);
                    self.http.consume_output(written, sh);
                    if written < total {
                        self.writable = false;
                    }
                    // Requests held back by the high-water mark may go on.
                    self.http.resume(sh, handler);
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => self.writable = false,
                    io::ErrorKind::Interrupted => continue,
                    _ => return quiet_close("send", &e),
                },
            }
            // The read loop above stopped because the socket was empty,
            // the connection is closing, or the output was above the
            // high-water mark; only the last can change with a send, which
            // may also have let held-back requests add output.
            let more_input = self.readable
                && !self.http.is_closing()
                && self.http.output_len() < OUTPUT_HIGH_WATER
                && self.http.wants_input(sh);
            let more_output = self.writable && (self.http.has_output() || self.http.has_file());
            if !more_input && !more_output {
                break;
            }
        }
        if self.http.upgrade_ready() {
            return Step::Upgrade;
        }
        match core::after_output(&self.http, self.http.has_output() || self.http.has_file(), self.peer_eof) {
            After::Keep => Step::Keep,
            After::Close => Step::Close,
            After::Linger => self.linger(sh, buf),
        }
    }

    /// Starts a lingering close: the peer gets our FIN after the last
    /// response, and what it still sends is read and dropped (closing with
    /// unread input would send a reset, which can destroy that response in
    /// the peer's receive buffer).
    fn linger(&mut self, sh: &WorkerState, buf: &mut [u8]) -> Step {
        match core::linger(self.fd.as_raw_fd(), sh) {
            Ok(until) => self.phase = Phase::Linger { until },
            Err(e) => return quiet_close("shutdown", &e),
        }
        // Input may have been left unread when the protocol state stopped
        // taking it.
        self.readable = true;
        self.discard(buf)
    }

    /// Reads and drops input until the socket is empty; closes on end of
    /// input or error.
    fn discard(&mut self, buf: &mut [u8]) -> Step {
        while self.readable {
            match recv(self.fd.as_raw_fd(), buf) {
                Ok(0) => return Step::Close,
                Ok(n) => {
                    if n < buf.len() && !self.read_ends {
                        self.readable = false;
                    }
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => self.readable = false,
                    io::ErrorKind::Interrupted => {}
                    _ => return Step::Close,
                },
            }
        }
        Step::Keep
    }
}

/// Closing after a socket error: resets and broken pipes are what peers do,
/// anything else is worth a debug line.
fn quiet_close(op: &str, e: &io::Error) -> Step {
    match e.raw_os_error() {
        Some(libc::ECONNRESET | libc::EPIPE | libc::ETIMEDOUT) => {}
        _ => log::debug!("{op}: {e}; closing connection"),
    }
    Step::Close
}

fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // `buf` is a live, writable slice of `buf.len()` bytes the kernel may
    // fill.
    syscall!(recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0)).map(|n| n as usize)
}

fn send(fd: RawFd, buf: &[u8], flags: i32) -> io::Result<usize> {
    // `buf` is a live slice of `buf.len()` bytes; MSG_NOSIGNAL turns a
    // closed peer into EPIPE instead of SIGPIPE.
    syscall!(send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL | flags)).map(|n| n as usize)
}
