//! A small, strict HTTP/1.1 response reader over a blocking `TcpStream`,
//! and the classification of what can go wrong with a request.
//!
//! It reads exactly one response (the head, then a `Content-Length` or
//! chunked body, or a body up to the close), keeps any further bytes for the
//! next call, and says precisely how a failed read failed: that is what the
//! scenarios count.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Longest time one response may take in all, however it trickles in (each
/// single read is bounded by the stream's own timeout).
const RESPONSE_LIMIT: Duration = Duration::from_secs(30);

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header fields, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Whether the server said it closes the connection after this response.
    pub fn says_close(&self) -> bool {
        self.header("connection").is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
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

/// Why reading a response failed, with the bytes of it that did arrive.
#[derive(Debug)]
pub struct ReadError {
    /// The kind of failure.
    pub fail: Fail,
    /// Bytes of the response received before it.
    pub got: usize,
    /// Detail for `Malformed`.
    pub detail: String,
}

/// Reads one response from `stream`. `buf` carries bytes already received
/// (pipelining) in and the bytes after this response out. `head` says the
/// request was a HEAD (no body follows). The stream's read timeout bounds
/// every wait.
pub fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>, head: bool) -> Result<Response, ReadError> {
    let deadline = Instant::now() + RESPONSE_LIMIT;
    let mut stream = Limited { stream, deadline };
    let stream = &mut stream;
    let start_len = buf.len();
    let err = |fail: Fail, buf: &Vec<u8>, detail: String| ReadError { fail, got: buf.len() - start_len, detail };
    // The head.
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(err(Fail::Malformed, buf, "response head over 64 KiB".into()));
        }
        match fill(stream, buf) {
            Ok(0) => return Err(err(Fail::Eof, buf, String::new())),
            Ok(_) => {}
            Err(e) => return Err(err(classify(&e), buf, e.to_string())),
        }
    };
    let text = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status = parts.next().and_then(|s| if s.len() == 3 { s.parse::<u16>().ok() } else { None });
    let Some(status) = status.filter(|_| version.starts_with("HTTP/1.")) else {
        return Err(err(Fail::Malformed, buf, format!("status line {status_line:?}")));
    };
    let mut headers = Vec::new();
    for l in lines {
        let Some((n, v)) = l.split_once(':') else {
            return Err(err(Fail::Malformed, buf, format!("header line {l:?}")));
        };
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let mut resp = Response { status, headers, body: Vec::new() };
    let no_body = head || status / 100 == 1 || status == 204 || status == 304;
    let chunked = resp.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = match resp.header("content-length") {
        Some(v) => match v.parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => return Err(err(Fail::Malformed, buf, format!("Content-Length {v:?}"))),
        },
        None => None,
    };
    buf.drain(..head_end);
    if no_body {
        return Ok(resp);
    }
    if chunked {
        let body_start = buf.len();
        match read_chunked(stream, buf) {
            Ok(body) => resp.body = body,
            Err((fail, detail)) => {
                return Err(ReadError { fail, got: head_end + buf.len().saturating_sub(body_start), detail })
            }
        }
        return Ok(resp);
    }
    match length {
        Some(n) => {
            while buf.len() < n {
                match fill(stream, buf) {
                    Ok(0) => {
                        return Err(ReadError { fail: Fail::Eof, got: head_end + buf.len(), detail: String::new() })
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(ReadError { fail: classify(&e), got: head_end + buf.len(), detail: e.to_string() })
                    }
                }
            }
            resp.body = buf.drain(..n).collect();
        }
        None => {
            // The body runs to the close.
            loop {
                match fill(stream, buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        return Err(ReadError { fail: classify(&e), got: head_end + buf.len(), detail: e.to_string() })
                    }
                }
            }
            resp.body = std::mem::take(buf);
        }
    }
    Ok(resp)
}

/// Reads a chunked body (and its trailer) from `buf` plus the stream.
fn read_chunked(stream: &mut Limited<'_>, buf: &mut Vec<u8>) -> Result<Vec<u8>, (Fail, String)> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            more(stream, buf)?;
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| (Fail::Malformed, format!("chunk size {line:?}")))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailer fields up to the empty line.
            loop {
                let end = loop {
                    if let Some(i) = find(buf, b"\r\n") {
                        break i;
                    }
                    more(stream, buf)?;
                };
                buf.drain(..end + 2);
                if end == 0 {
                    return Ok(body);
                }
            }
        }
        while buf.len() < size + 2 {
            more(stream, buf)?;
        }
        body.extend_from_slice(&buf[..size]);
        if &buf[size..size + 2] != b"\r\n" {
            return Err((Fail::Malformed, "chunk data not followed by CRLF".into()));
        }
        buf.drain(..size + 2);
    }
}

fn more(stream: &mut Limited<'_>, buf: &mut Vec<u8>) -> Result<(), (Fail, String)> {
    match fill(stream, buf) {
        Ok(0) => Err((Fail::Eof, String::new())),
        Ok(_) => Ok(()),
        Err(e) => Err((classify(&e), e.to_string())),
    }
}

/// A stream with a deadline for the whole response.
struct Limited<'a> {
    stream: &'a mut TcpStream,
    deadline: Instant,
}

/// One read appended to `buf`; a timeout once past the deadline.
fn fill(s: &mut Limited<'_>, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if Instant::now() >= s.deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "response took too long in all"));
        }
        match s.stream.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Printable form of bytes for reports, cut at `max` bytes.
pub fn show(bytes: &[u8], max: usize) -> String {
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
