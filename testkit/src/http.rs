//! A small, strict HTTP/1.1 response reader over a blocking `TcpStream`,
//! the wait for the server's close, and how a failed read failed.
//!
//! [`read_response`] reads exactly one response (the head, then a
//! `Content-Length`, chunked, or to-the-close body, or none), keeps any
//! further bytes for the next call, and says precisely how a failed read
//! failed: the stress scenarios count those kinds, the tests print them.
//! Every wait is bounded: each read by the stream's own read timeout, the
//! whole response by the limit the caller gives.
//!
//! Where it stops: it reads what a server wrote and judges only its
//! syntax. Sending requests, and what a response must say, belong to the
//! callers (the test `Client`, the stress load generators and scenarios).

use std::fmt;
use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The longest response head the reader accepts.
pub const HEAD_LIMIT: usize = 64 * 1024;

/// How a response's body was framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body: an answer to HEAD, a 1xx, 204 or 304.
    None,
    /// `Content-Length` with this value.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body ran to the close.
    ToClose,
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// Status code.
    pub status: u16,
    /// Reason phrase (may be empty).
    pub reason: String,
    /// Header fields in order, names as sent, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// How the body was framed.
    pub framing: Framing,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// How many fields named `name` (case-insensitive) the response has.
    pub fn count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count()
    }

    /// Whether the server said it closes the connection after this response.
    pub fn says_close(&self) -> bool {
        self.header("Connection").is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
}

/// How a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fail {
    /// connect() failed (refused, timed out).
    Connect,
    /// The connection was reset (ECONNRESET, EPIPE) before a full response.
    Reset,
    /// The server closed the connection (EOF) before a full response.
    Eof,
    /// No full response within the time limit.
    Timeout,
    /// A response, but not the expected one (status or body).
    Status,
    /// Bytes that are not an HTTP/1.1 response.
    Malformed,
}

impl Fail {
    /// Every kind, in report order.
    pub const ALL: [Fail; 6] = [Fail::Connect, Fail::Reset, Fail::Eof, Fail::Timeout, Fail::Status, Fail::Malformed];

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Fail::Connect => "connect",
            Fail::Reset => "reset",
            Fail::Eof => "eof",
            Fail::Timeout => "timeout",
            Fail::Status => "status",
            Fail::Malformed => "malformed",
        }
    }
}

/// Classifies an I/O error on a connection.
pub fn classify(e: &io::Error) -> Fail {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Fail::Timeout,
        io::ErrorKind::UnexpectedEof => Fail::Eof,
        io::ErrorKind::ConnectionRefused => Fail::Connect,
        _ => Fail::Reset,
    }
}

/// Why reading a response failed, with how much of it did arrive.
#[derive(Debug)]
pub struct ReadError {
    /// The kind of failure.
    pub fail: Fail,
    /// Bytes of the response received before it.
    pub got: usize,
    /// What went wrong, for messages (the malformed line, the I/O error).
    pub detail: String,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} after {} bytes of a response", self.fail.name(), self.got)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for ReadError {}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> io::Error {
        let kind = match e.fail {
            Fail::Eof => io::ErrorKind::UnexpectedEof,
            Fail::Timeout => io::ErrorKind::TimedOut,
            Fail::Connect => io::ErrorKind::ConnectionRefused,
            Fail::Reset => io::ErrorKind::ConnectionReset,
            Fail::Status | Fail::Malformed => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// Reads one response from `stream`. `buf` carries bytes already received
/// (pipelining) in and the bytes after this response out. `head` says the
/// request was a HEAD (no body follows). Each read waits at most the
/// stream's read timeout, the whole response at most `limit`; a read that
/// times out is a [`Fail::Timeout`].
pub fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    head: bool,
    limit: Duration,
) -> Result<Response, ReadError> {
    let mut src = Source::new(stream, limit);
    let start_len = buf.len();
    let err = |fail: Fail, buf: &Vec<u8>, detail: String| ReadError { fail, got: buf.len() - start_len, detail };
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > HEAD_LIMIT {
            return Err(err(Fail::Malformed, buf, format!("response head over {HEAD_LIMIT} bytes")));
        }
        match src.fill(buf) {
            Ok(0) => {
                return Err(err(Fail::Eof, buf, format!("connection ended inside a response head: {}", show(buf))))
            }
            Ok(_) => {}
            Err(e) => return Err(err(classify(&e), buf, e.to_string())),
        }
    };
    let mut resp = parse_head(&buf[..head_end - 4]).map_err(|d| err(Fail::Malformed, buf, d))?;
    let no_body = head || resp.status / 100 == 1 || resp.status == 204 || resp.status == 304;
    let chunked = resp.header("Transfer-Encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = match resp.count("Content-Length") {
        0 => None,
        1 => match resp.header("Content-Length").unwrap_or_default().parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => {
                return Err(err(Fail::Malformed, buf, format!("Content-Length {:?}", resp.header("Content-Length"))))
            }
        },
        n => return Err(err(Fail::Malformed, buf, format!("response has {n} Content-Length fields"))),
    };
    if chunked && length.is_some() {
        return Err(err(Fail::Malformed, buf, "response has both Content-Length and chunked framing".into()));
    }
    buf.drain(..head_end);
    // From here `got` counts the head plus the body bytes buffered so far.
    let body_err = |fail: Fail, buf: &Vec<u8>, detail: String| ReadError { fail, got: head_end + buf.len(), detail };
    if no_body {
        resp.framing = Framing::None;
        return Ok(resp);
    }
    if chunked {
        resp.framing = Framing::Chunked;
        resp.body = read_chunked(&mut src, buf).map_err(|(fail, detail)| body_err(fail, buf, detail))?;
        return Ok(resp);
    }
    match length {
        Some(n) => {
            resp.framing = Framing::Length(n);
            while buf.len() < n {
                match src.fill(buf) {
                    Ok(0) => {
                        let detail = format!("connection ended after {} of {n} body bytes", buf.len());
                        return Err(body_err(Fail::Eof, buf, detail));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(body_err(classify(&e), buf, e.to_string())),
                }
            }
            resp.body = buf.drain(..n).collect();
        }
        None => {
            resp.framing = Framing::ToClose;
            loop {
                match src.fill(buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(body_err(classify(&e), buf, e.to_string())),
                }
            }
            resp.body = std::mem::take(buf);
        }
    }
    Ok(resp)
}

/// Parses a response head (without its final empty line); the error names
/// the offending line.
pub fn parse_head(head: &[u8]) -> Result<Response, String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("").to_owned();
    let status = parts.next().and_then(|s| if s.len() == 3 { s.parse::<u16>().ok() } else { None });
    let reason = parts.next().unwrap_or("").to_owned();
    let Some(status) = status.filter(|_| version == "HTTP/1.1" || version == "HTTP/1.0") else {
        return Err(format!("bad status line {status_line:?}"));
    };
    let mut headers = Vec::new();
    for line in lines {
        let (n, v) = line.split_once(':').ok_or_else(|| format!("bad header line {line:?}"))?;
        if n.is_empty() || n.contains([' ', '\t', '\n', '\r']) || v.contains(['\r', '\n']) {
            return Err(format!("bad header line {line:?}"));
        }
        headers.push((n.to_owned(), v.trim().to_owned()));
    }
    Ok(Response { version, status, reason, headers, body: Vec::new(), framing: Framing::None })
}

/// Reads a chunked body (and its trailer) from `buf` plus the stream.
fn read_chunked(src: &mut Source<'_>, buf: &mut Vec<u8>) -> Result<Vec<u8>, (Fail, String)> {
    let mut body = Vec::new();
    loop {
        let line_end = src.line(buf)?;
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| (Fail::Malformed, format!("chunk size {line:?}")))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailer fields up to the empty line.
            loop {
                let end = src.line(buf)?;
                buf.drain(..end + 2);
                if end == 0 {
                    return Ok(body);
                }
            }
        }
        while buf.len() < size + 2 {
            src.more(buf)?;
        }
        body.extend_from_slice(&buf[..size]);
        if &buf[size..size + 2] != b"\r\n" {
            return Err((Fail::Malformed, "chunk data not followed by CRLF".into()));
        }
        buf.drain(..size + 2);
    }
}

/// The stream a response is read from, with the deadline for the whole
/// response. Each read waits at most the stream's own read timeout, cut
/// short near the deadline; the stream's timeout is put back on drop.
struct Source<'a> {
    /// The connection.
    stream: &'a mut TcpStream,
    /// When the whole response must have arrived.
    deadline: Instant,
    /// The stream's read timeout when reading began (`None`: reads block).
    own_timeout: Option<Duration>,
    /// Whether a read timeout shorter than `own_timeout` is set now.
    cut_short: bool,
}

impl<'a> Source<'a> {
    fn new(stream: &'a mut TcpStream, limit: Duration) -> Source<'a> {
        let own_timeout = stream.read_timeout().ok().flatten();
        Source { stream, deadline: Instant::now() + limit, own_timeout, cut_short: false }
    }

    /// One read appended to `buf`; `Ok(0)` at end of stream, a timeout once
    /// past the deadline.
    fn fill(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "response took too long in all"));
            }
            // A read never outlasts the deadline: set a shorter timeout when
            // the deadline is nearer than the stream's own.
            if self.own_timeout.map_or(true, |t| left < t) {
                self.stream.set_read_timeout(Some(left))?;
                self.cut_short = true;
            }
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// One more read for a body; end of stream is an error here.
    fn more(&mut self, buf: &mut Vec<u8>) -> Result<(), (Fail, String)> {
        match self.fill(buf) {
            Ok(0) => Err((Fail::Eof, "connection ended inside a chunked body".into())),
            Ok(_) => Ok(()),
            Err(e) => Err((classify(&e), e.to_string())),
        }
    }

    /// Reads until `buf` holds a CRLF; its position.
    fn line(&mut self, buf: &mut Vec<u8>) -> Result<usize, (Fail, String)> {
        loop {
            if let Some(i) = find(buf, b"\r\n") {
                return Ok(i);
            }
            self.more(buf)?;
        }
    }
}

impl Drop for Source<'_> {
    fn drop(&mut self) {
        if self.cut_short {
            let _ = self.stream.set_read_timeout(self.own_timeout);
        }
    }
}

/// How a wait for the server to close a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum CloseOutcome {
    /// End of stream or reset; `extra` holds any bytes received first.
    Closed {
        /// Bytes that arrived before the close.
        extra: Vec<u8>,
    },
    /// Still open when the wait ended; `extra` as above.
    Open {
        /// Bytes that arrived during the wait.
        extra: Vec<u8>,
    },
}

/// Waits at most `timeout` for the server to close the connection (end of
/// stream or reset), collecting any bytes that arrive first; `pending` holds
/// bytes already received. Errors other than a reset are returned. The
/// stream's read timeout is put back afterwards.
pub fn wait_close(stream: &mut TcpStream, pending: Vec<u8>, timeout: Duration) -> io::Result<CloseOutcome> {
    let own_timeout = stream.read_timeout()?;
    let deadline = Instant::now() + timeout;
    let mut extra = pending;
    let mut chunk = [0u8; 16 * 1024];
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Ok(CloseOutcome::Open { extra });
        }
        if let Err(e) = stream.set_read_timeout(Some(left)) {
            break Err(e);
        }
        match stream.read(&mut chunk) {
            Ok(0) => break Ok(CloseOutcome::Closed { extra }),
            Ok(n) => extra.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_gone(&e) => break Ok(CloseOutcome::Closed { extra }),
            Err(e) => break Err(e),
        }
    };
    stream.set_read_timeout(own_timeout)?;
    outcome
}

/// Whether `e` is a read timing out.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Whether `e` says the peer is gone (reset, aborted, broken pipe).
pub fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
    )
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Printable form of bytes for messages, cut after 300 bytes.
pub fn show(bytes: &[u8]) -> String {
    show_cut(bytes, 300)
}

/// Printable form of bytes for messages, cut after `max` bytes: CR and LF
/// as `\r` and `\n`, other bytes outside printable ASCII as `\xNN`.
pub fn show_cut(bytes: &[u8], max: usize) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(max) {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > max {
        s.push_str(&format!("...({} bytes)", bytes.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// Serves `wire` on a fresh loopback connection (then closes it unless
    /// `hold`) and reads one response from it.
    fn read(wire: &'static [u8], head: bool, hold: bool) -> (Result<Response, ReadError>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(wire).unwrap();
            if hold {
                std::thread::sleep(Duration::from_millis(400));
            }
        });
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let r = read_response(&mut c, &mut buf, head, Duration::from_millis(200));
        assert_eq!(c.read_timeout().unwrap(), Some(Duration::from_secs(5)), "timeout put back");
        server.join().unwrap();
        (r, buf)
    }

    #[test]
    fn content_length_and_pipelined_rest() {
        let (r, rest) = read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A:  b \r\n\r\nhiHTTP/1.1", false, false);
        let r = r.unwrap();
        assert_eq!((r.status, r.reason.as_str(), r.body.as_slice()), (200, "OK", &b"hi"[..]));
        assert_eq!(r.header("x-a"), Some("b"));
        assert_eq!(r.framing, Framing::Length(2));
        assert_eq!(rest, b"HTTP/1.1");
    }

    #[test]
    fn chunked_head_and_to_close() {
        let (r, _) = read(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x\r\nab\r\n1\r\nc\r\n0\r\nT: 1\r\n\r\n",
            false,
            false,
        );
        let r = r.unwrap();
        assert_eq!((r.body.as_slice(), r.framing), (&b"abc"[..], Framing::Chunked));
        let (r, rest) = read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, false);
        assert_eq!((r.unwrap().framing, rest.len()), (Framing::None, 0));
        let (r, _) = read(b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\nto the end", false, false);
        let r = r.unwrap();
        assert!(r.says_close());
        assert_eq!((r.body.as_slice(), r.framing), (&b"to the end"[..], Framing::ToClose));
    }

    #[test]
    fn failures_are_classified() {
        let fail = |wire: &'static [u8], hold: bool| read(wire, false, hold).0.unwrap_err().fail;
        assert_eq!(fail(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", false), Fail::Eof);
        assert_eq!(fail(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", true), Fail::Timeout);
        assert_eq!(fail(b"HTTP/2 200 OK\r\n\r\n", false), Fail::Malformed);
        assert_eq!(fail(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", false), Fail::Malformed);
        assert_eq!(
            fail(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab", false),
            Fail::Malformed
        );
        assert_eq!(fail(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false), Fail::Malformed);
        assert_eq!(fail(b"HTTP/1.1 200", false), Fail::Eof);
        let e: io::Error = read(b"HTTP/1.1 200", false, false).0.unwrap_err().into();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn show_escapes_and_cuts() {
        assert_eq!(show_cut(b"a\r\n\x00b", 10), "a\\r\\n\\x00b");
        assert_eq!(show_cut(b"abcdef", 3), "abc...(6 bytes)");
    }
}
