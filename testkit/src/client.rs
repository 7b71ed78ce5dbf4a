//! A raw-socket HTTP/1.1 test client on one connection, which panics with
//! a readable message instead of returning errors.
//!
//! Responses are read, and closes awaited, by [`crate::http`]; this module
//! only sends requests and holds the bytes received that no response has
//! consumed yet. Every wait is bounded by [`IO_TIMEOUT`] or by the limit the
//! caller gives.
//!
//! Where it stops: what a response must say is the test's business; the
//! client checks only that a response is one (and, for the plain readers,
//! that it is framed by `Content-Length`, as the demo server frames every
//! whole response).

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::Duration;

use crate::http::{self as kit_http, show, CloseOutcome, Framing, ReadError, Response};

/// Default bound on any single client-side wait (one response, one close).
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A raw-socket HTTP/1.1 client on one connection.
pub struct Client {
    /// The connection (tests may write to it or clone it directly).
    pub stream: TcpStream,
    /// Bytes received and not yet consumed by a parsed response.
    buf: Vec<u8>,
}

impl Client {
    /// Connects (bounded by [`IO_TIMEOUT`]) with `TCP_NODELAY` and read and
    /// write timeouts set.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Client::from_stream(stream)
    }

    /// Wraps a connected stream, setting `TCP_NODELAY` and timeouts.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Client { stream, buf: Vec::new() }
    }

    /// Sends all of `bytes`; panics on error.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("send {} bytes: {e}", bytes.len()));
    }

    /// Sends all of `bytes`.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends `bytes` one at a time, pausing `pause` between them.
    pub fn send_bytewise(&mut self, bytes: &[u8], pause: Duration) {
        for b in bytes {
            self.send(std::slice::from_ref(b));
            thread::sleep(pause);
        }
    }

    /// Reads one response (`head_request` when it answers a HEAD: no body)
    /// within [`IO_TIMEOUT`]. Errors: `UnexpectedEof` if the connection ends
    /// first, `TimedOut` after the timeout, `InvalidData` if the bytes are
    /// not HTTP or the body is not framed by exactly one `Content-Length`
    /// (the server never chunks a response nor ends one by closing).
    pub fn try_response(&mut self, head_request: bool) -> io::Result<Response> {
        self.try_response_within(head_request, IO_TIMEOUT)
    }

    /// [`Client::try_response`] within `timeout` instead of [`IO_TIMEOUT`].
    pub fn try_response_within(&mut self, head_request: bool, timeout: Duration) -> io::Result<Response> {
        self.stream.set_read_timeout(Some(timeout))?;
        let res = kit_http::read_response(&mut self.stream, &mut self.buf, head_request, timeout)?;
        match res.framing {
            Framing::None | Framing::Length(_) => Ok(res),
            Framing::Chunked => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the server sent a chunked response; this client expects Content-Length",
            )),
            Framing::ToClose => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("response has no Content-Length field (body {})", show(&res.body)),
            )),
        }
    }

    /// Reads one response framed any way HTTP/1.1 allows (`Content-Length`,
    /// chunked, or to the close: a streamed body) within `timeout`; panics
    /// on any error.
    pub fn response_any(&mut self, head_request: bool, timeout: Duration) -> Response {
        self.try_response_any(head_request, timeout).unwrap_or_else(|e| panic!("reading a response: {e}"))
    }

    /// [`Client::response_any`], saying how the read failed instead of
    /// panicking.
    pub fn try_response_any(&mut self, head_request: bool, timeout: Duration) -> Result<Response, ReadError> {
        self.stream.set_read_timeout(Some(timeout.min(IO_TIMEOUT))).unwrap();
        kit_http::read_response(&mut self.stream, &mut self.buf, head_request, timeout)
    }

    /// Reads one response to a non-HEAD request; panics on any error.
    pub fn response(&mut self) -> Response {
        self.try_response(false).unwrap_or_else(|e| panic!("reading a response: {e}"))
    }

    /// Reads one response to a HEAD request; panics on any error.
    pub fn head_response(&mut self) -> Response {
        self.try_response(true).unwrap_or_else(|e| panic!("reading a HEAD response: {e}"))
    }

    /// Sends `GET path` and reads the response.
    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.response()
    }

    /// Sends `POST path` with a `Content-Length` body and reads the
    /// response.
    pub fn post(&mut self, path: &str, content_type: &str, body: &[u8]) -> Response {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.send(&req);
        self.response()
    }

    /// Waits at most `timeout` for the server to close the connection
    /// (end of stream or reset), collecting any bytes that arrive first.
    pub fn wait_close(&mut self, timeout: Duration) -> CloseOutcome {
        let pending = std::mem::take(&mut self.buf);
        kit_http::wait_close(&mut self.stream, pending, timeout).unwrap_or_else(|e| panic!("waiting for close: {e}"))
    }

    /// Asserts that the server closes the connection within [`IO_TIMEOUT`]
    /// without sending anything more.
    pub fn expect_close(&mut self) {
        match self.wait_close(IO_TIMEOUT) {
            CloseOutcome::Closed { extra } if extra.is_empty() => {}
            CloseOutcome::Closed { extra } => {
                panic!("bytes after the last response: {:?}", String::from_utf8_lossy(&extra))
            }
            CloseOutcome::Open { extra } => {
                panic!("connection still open after {IO_TIMEOUT:?} (received {:?})", String::from_utf8_lossy(&extra))
            }
        }
    }

    /// Closes abruptly: `SO_LINGER` 0, then close, so the kernel sends a
    /// reset instead of a FIN.
    pub fn reset(self) {
        set_linger_zero(&self.stream);
        drop(self.stream);
    }

    /// Shrinks this socket's receive buffer (the kernel may round it).
    pub fn set_recv_buffer(&self, bytes: i32) {
        set_int_opt(&self.stream, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes);
    }
}

/// Sets `SO_LINGER` to {on, 0 s}: the next close sends a reset.
pub fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket this test owns, with a pointer to a
    // local `linger` and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

fn set_int_opt(stream: &TcpStream, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: setsockopt on a socket this test owns, with a pointer to a
    // local int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt({level}, {name}): {}", io::Error::last_os_error());
}
