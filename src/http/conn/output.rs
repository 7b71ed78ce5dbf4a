//! A connection's output: framed response bytes not yet sent, the one path
//! that frames a response into them ([`Output::emit`]), and the two ways a
//! driver takes them.
//!
//! # The output protocols
//!
//! A driver sends a connection's output in one of two ways, and keeps to
//! it for the connection's life:
//!
//! - **borrowed** (epoll): it writes straight from [`Conn::output`] and
//!   reports what the kernel took with [`Conn::consume_output`], which
//!   frees the buffer once all of it is sent, restarts the connection's
//!   wait and takes more of a streamed body;
//! - **owned** (io_uring): the kernel reads the bytes after the call that
//!   submitted them returns, so they must not move: the driver takes them
//!   with [`Conn::take_output`] and keeps them until the send completes,
//!   reports progress with [`Conn::on_sent`], gives the buffer back with
//!   [`crate::http::WorkerState::recycle`], and, with no send in flight, calls
//!   [`Conn::refill`] to take more of a streamed body.
//!
//! Either way a file body goes after every byte of the output:
//! [`Conn::file_chunk`] names the file, the offset and the bytes left once
//! the output is empty, and the driver reports [`Conn::file_sent`] or
//! [`Conn::file_failed`]. Requests held back by a full output are
//! answered through [`Conn::resume`] once it has drained
//! ([`OUTPUT_HIGH_WATER`]).
//!
//! [`Conn::output`]: super::Conn::output
//! [`Conn::consume_output`]: super::Conn::consume_output
//! [`Conn::take_output`]: super::Conn::take_output
//! [`Conn::on_sent`]: super::Conn::on_sent
//! [`Conn::refill`]: super::Conn::refill
//! [`Conn::file_chunk`]: super::Conn::file_chunk
//! [`Conn::file_sent`]: super::Conn::file_sent
//! [`Conn::file_failed`]: super::Conn::file_failed
//! [`Conn::resume`]: super::Conn::resume

use std::mem;

use crate::http::answer::Response;
use crate::http::worker_state::WorkerState;

/// Output not yet sent beyond which a driver stops reading from the
/// connection: a client that does not read its responses stops being read.
pub const OUTPUT_HIGH_WATER: usize = 256 * 1024;

/// How one response is framed: what its request asked for and whether the
/// connection stays open after it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Frame {
    /// HEAD: the body is measured, not sent.
    pub(super) head_only: bool,
    /// `Connection: close`: the connection closes after it.
    pub(super) close: bool,
    /// `Connection: keep-alive`, for an HTTP/1.0 client that asked for it.
    pub(super) keep_alive_10: bool,
}

/// What goes out with a response's head.
#[derive(Clone, Copy, Debug)]
pub(super) enum Body {
    /// The response's own bytes, with their `Content-Length`.
    Whole,
    /// Nothing yet: the body follows from elsewhere (a stream, a file),
    /// with this length, or chunked, or (neither) until the close.
    Later {
        /// The body's length, when known.
        length: Option<u64>,
        /// Framed as chunks.
        chunked: bool,
    },
    /// The head of a `101`: what follows is another protocol's.
    Switch,
}

/// Framed responses not yet sent.
#[derive(Debug, Default)]
pub(super) struct Output {
    /// The bytes; the first `sent` of them are sent.
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already sent.
    sent: usize,
}

impl Output {
    /// The bytes waiting to be sent.
    pub(super) fn pending(&self) -> &[u8] {
        &self.buf[self.sent..]
    }

    /// How many bytes wait.
    pub(super) fn len(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Whether no byte waits.
    pub(super) fn is_empty(&self) -> bool {
        self.buf.len() <= self.sent
    }

    /// Marks `n` bytes as sent; the buffer goes back to the pool once all
    /// of it is.
    pub(super) fn consume(&mut self, n: usize, sh: &mut WorkerState) {
        self.sent += n;
        debug_assert!(self.sent <= self.buf.len());
        if self.sent >= self.buf.len() {
            self.sent = 0;
            sh.recycle(mem::take(&mut self.buf));
        }
    }

    /// Moves the waiting bytes out.
    pub(super) fn take(&mut self) -> Vec<u8> {
        let mut out = mem::take(&mut self.buf);
        if self.sent > 0 {
            out.drain(..self.sent);
            self.sent = 0;
        }
        out
    }

    /// The buffer to append to, taken from the pool if there is none.
    pub(super) fn buf(&mut self, sh: &mut WorkerState) -> &mut Vec<u8> {
        if self.buf.capacity() == 0 {
            self.buf = sh.buffer();
        }
        &mut self.buf
    }

    /// Frames `res` (its status counted) as `frame` says, with `body`
    /// after its head. Returns whether the status carries no body at all
    /// (meaningful for [`Body::Later`]). An invalid response becomes a
    /// `500` here. Every response a connection sends goes through this.
    #[inline]
    pub(super) fn emit(&mut self, res: &mut Response, frame: Frame, body: Body, sh: &mut WorkerState) -> bool {
        if let Some(c) = sh.counters {
            c.response(res.status_code());
        }
        if self.buf.capacity() == 0 {
            self.buf = sh.buffer();
        }
        match body {
            Body::Whole => {
                res.write_to(&mut self.buf, &sh.date, &mut sh.heads, frame.head_only, frame.close, frame.keep_alive_10);
                false
            }
            Body::Later { length, chunked } => {
                res.write_head(&mut self.buf, sh.date.get(), length, chunked, frame.close, frame.keep_alive_10)
            }
            Body::Switch => {
                res.write_upgrade(&mut self.buf, sh.date.get());
                false
            }
        }
    }

    /// Gives the buffer back to the pool.
    pub(super) fn release(self, sh: &mut WorkerState) {
        sh.recycle(self.buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Limits, Timeouts};

    const OPEN: Frame = Frame { head_only: false, close: false, keep_alive_10: false };

    fn emitted(res: &mut Response, frame: Frame, body: Body) -> (String, bool) {
        let mut sh = WorkerState::new(Limits::default(), Timeouts::default());
        let mut out = Output::default();
        let bodyless = out.emit(res, frame, body, &mut sh);
        let text = String::from_utf8(out.take()).unwrap();
        // The date is the one part that changes.
        let date = std::str::from_utf8(sh.date.get()).unwrap().to_owned();
        (text.replace(&date, "DATE"), bodyless)
    }

    fn hello() -> Response {
        let mut res = Response::new();
        res.header("X-A", "1").body("hello");
        res
    }

    #[test]
    fn a_whole_response_is_framed_as_its_request_asked() {
        let (t, _) = emitted(&mut hello(), OPEN, Body::Whole);
        assert_eq!(t, "HTTP/1.1 200 OK\r\nDate: DATE\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello");
        let head = Frame { head_only: true, close: true, keep_alive_10: false };
        let (t, _) = emitted(&mut hello(), head, Body::Whole);
        assert_eq!(t, "HTTP/1.1 200 OK\r\nDate: DATE\r\nContent-Length: 5\r\nConnection: close\r\nX-A: 1\r\n\r\n");
        let ten = Frame { keep_alive_10: true, ..OPEN };
        assert!(emitted(&mut hello(), ten, Body::Whole).0.contains("\r\nConnection: keep-alive\r\n"));
        let mut bad = hello();
        bad.status(700);
        assert!(emitted(&mut bad, OPEN, Body::Whole).0.starts_with("HTTP/1.1 500 "), "an invalid status");
    }

    #[test]
    fn a_head_alone_says_how_its_body_follows() {
        let later = |length, chunked| Body::Later { length, chunked };
        let (t, bodyless) = emitted(&mut hello(), OPEN, later(None, true));
        assert!(t.ends_with("Transfer-Encoding: chunked\r\nX-A: 1\r\n\r\n") && !bodyless, "{t}");
        let (t, _) = emitted(&mut hello(), OPEN, later(Some(9), false));
        assert!(t.ends_with("Content-Length: 9\r\nX-A: 1\r\n\r\n"), "{t}");
        let (t, _) = emitted(&mut hello(), Frame { close: true, ..OPEN }, later(None, false));
        assert!(t.ends_with("Date: DATE\r\nConnection: close\r\nX-A: 1\r\n\r\n"), "until the close: {t}");
        let mut none = hello();
        none.status(304);
        let (t, bodyless) = emitted(&mut none, OPEN, later(Some(9), false));
        assert!(bodyless && !t.contains("Content-Length"), "{t}");
    }

    #[test]
    fn an_upgrade_switches_protocols() {
        let mut res = Response::new();
        res.header("Upgrade", "websocket");
        let (t, _) = emitted(&mut res, OPEN, Body::Switch);
        assert_eq!(
            t,
            "HTTP/1.1 101 Switching Protocols\r\nDate: DATE\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        );
    }

    #[test]
    fn sent_bytes_leave_the_front_and_an_empty_output_frees_its_buffer() {
        let mut sh = WorkerState::new(Limits::default(), Timeouts::default());
        let mut out = Output::default();
        out.buf(&mut sh).extend_from_slice(b"abcdef");
        out.consume(2, &mut sh);
        assert_eq!(out.pending(), b"cdef");
        assert_eq!(out.len(), 4);
        assert_eq!(out.take(), b"cdef", "taken without what was sent");
        assert!(out.is_empty());
        out.buf(&mut sh).extend_from_slice(b"xy");
        out.consume(2, &mut sh);
        assert!(out.is_empty() && out.buf.capacity() == 0, "back in the pool");
        assert!(sh.buffer().capacity() > 0, "and reused from there");
    }
}
